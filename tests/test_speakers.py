"""x-vectors: the embedder, the on-disk cache, utterance/average modes and precomputed ARCTIC vectors."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vc.audio import load_audio, write_wav
from vc.data.speakers import (
    PrecomputedXVectors,
    SpeakerEmbedder,
    XVectorCache,
    embeddings_for_pairs,
    fetch_arctic_xvectors,
    l2_normalise,
    load_arctic_xvectors_zip,
    target_embeddings,
)
from vc.errors import ConfigError, MissingModelError

# SpeechBrain's statistics pooling adds random noise (~1e-5) on every call: repeated x-vectors of
# one clip agree to this tolerance, not exactly.
NOISE = 1e-4


@dataclass(frozen=True)
class FakePair:
    utt_id: str
    tgt_path: Path
    tgt_spk: str
    ref_path: Path | None = None


def _voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A harmonic tone plus noise: distinct clips give distinct x-vectors."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    wav = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
    return (0.2 * wav + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def embedder(tiny_models):
    return SpeakerEmbedder(str(tiny_models.xvector))


@pytest.fixture
def corpus(tmp_path):
    """Two target speakers, three utterances each, as 16 kHz WAVs of different lengths."""
    pairs = []
    for s, spk in enumerate(("aaa", "bbb")):
        for k in range(3):
            path = write_wav(
                tmp_path / "wav" / spk / f"u{k}.wav", _voice(0.6 + 0.15 * k, 110 + 60 * s, 10 * s + k)
            )
            pairs.append(FakePair(f"{spk}_u{k}", path, spk))
    return pairs


def test_embedding_is_512d_unit_norm_and_batch_equals_single(embedder):
    wavs = [_voice(0.5, 120, 0), _voice(0.8, 200, 1), _voice(0.5, 300, 2)]
    single = np.stack([embedder.embed(w) for w in wavs])
    calls = embedder.calls
    batch = embedder.embed_batch(wavs)
    assert single.shape == (3, 512) and single.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, single, atol=NOISE)
    assert embedder.calls - calls == 2  # the two clips of equal length share one forward pass


def test_cache_hits_on_second_run_and_writes_whole_files(tmp_path, corpus, tiny_models):
    embedder = SpeakerEmbedder(str(tiny_models.xvector))
    paths = [p.tgt_path for p in corpus]
    first = XVectorCache(tmp_path / "cache", embedder).get_many(paths)
    calls = embedder.calls
    again = XVectorCache(tmp_path / "cache", embedder)
    second = again.get_many(paths)
    np.testing.assert_array_equal(first, second)
    assert embedder.calls == calls and (again.hits, again.misses) == (len(paths), 0)
    files = sorted((tmp_path / "cache").rglob("*"))
    npy = [f for f in files if f.is_file()]
    assert len(npy) == len(paths) and all(f.suffix == ".npy" and not f.name.startswith(".") for f in npy)
    assert all(f.parent.name == f.stem[:2] for f in npy)
    # a fresh embedder is not loaded at all when everything is cached
    cold = SpeakerEmbedder(str(tiny_models.xvector))
    XVectorCache(tmp_path / "cache", cold).get(paths[0])
    assert cold._model is None


def test_cache_key_follows_the_model(tmp_path, corpus, tiny_models):
    import shutil

    copy = shutil.copytree(tiny_models.xvector, tmp_path / "other")
    weights = copy / "embedding_model.ckpt"
    weights.write_bytes(weights.read_bytes() + b"\0")  # "retrained" weights in a new folder
    a = XVectorCache(tmp_path / "cache", SpeakerEmbedder(str(tiny_models.xvector)))
    b = XVectorCache(tmp_path / "cache", SpeakerEmbedder(str(copy)))
    assert a.key(corpus[0].tgt_path) != b.key(corpus[0].tgt_path)
    assert a.key(corpus[0].tgt_path) != a.key(corpus[1].tgt_path)


def test_get_array_caches_by_content(tmp_path, embedder):
    cache = XVectorCache(tmp_path / "cache", embedder)
    wav = _voice(0.5, 150, 7)
    v1 = cache.get_array(wav)
    v2 = cache.get_array(wav.copy())
    np.testing.assert_array_equal(v1, v2)
    assert (cache.hits, cache.misses) == (1, 1)


def test_utterance_mode_gives_each_pair_its_own_vector(tmp_path, corpus, embedder):
    cache = XVectorCache(tmp_path / "cache", embedder)
    vectors = target_embeddings(corpus, cache, "utterance")
    for p in corpus:
        np.testing.assert_allclose(vectors[p.utt_id], embedder.embed(load_audio(p.tgt_path)), atol=NOISE)


def test_average_mode_uses_only_training_utterances(tmp_path, corpus, embedder):
    cache = XVectorCache(tmp_path / "cache", embedder)
    train = {"aaa_u0", "aaa_u1", "bbb_u2"}
    vectors = target_embeddings(corpus, cache, "average", train_ids=train)
    own = {p.utt_id: cache.get(p.tgt_path) for p in corpus}
    expected_a = l2_normalise(own["aaa_u0"] + own["aaa_u1"])
    for utt in ("aaa_u0", "aaa_u1", "aaa_u2"):  # aaa_u2 is not training data: it gets the mean, not itself
        np.testing.assert_allclose(vectors[utt], expected_a, atol=1e-6)
    for utt in ("bbb_u0", "bbb_u1", "bbb_u2"):
        np.testing.assert_allclose(vectors[utt], own["bbb_u2"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors["aaa_u0"]), 1.0, atol=1e-6)


def test_unknown_mode_and_speaker_without_training_data_are_config_errors(tmp_path, corpus, embedder):
    cache = XVectorCache(tmp_path / "cache", embedder)
    with pytest.raises(ConfigError, match="data.speaker.mode"):
        target_embeddings(corpus, cache, "speaker")
    with pytest.raises(ConfigError, match="bbb"):
        target_embeddings(corpus, cache, "average", train_ids={"aaa_u0"})


def _arctic_zip(path: Path, vectors: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, vec in vectors.items():
            buf = io.BytesIO()
            np.save(buf, vec)
            zf.writestr(name, buf.getvalue())
        zf.writestr("spkrec-xvect/README.txt", "not a vector")
    return path


def test_precomputed_zip_is_parsed_and_falls_back_for_missing_ids(tmp_path, corpus, embedder):
    rng = np.random.default_rng(0)
    raw = rng.standard_normal(512).astype(np.float32) * 3
    zip_path = _arctic_zip(
        tmp_path / "spkrec-xvect.zip",
        {
            "spkrec-xvect/cmu_us_aaa_arctic-wav-aaa_u0.npy": raw,
            "cmu_us_bdl_arctic-wav-arctic_a0009.npy": raw[::-1].copy(),
        },
    )
    table = load_arctic_xvectors_zip(zip_path)
    assert set(table) == {("aaa", "aaa_u0"), ("bdl", "arctic_a0009")}
    assert table[("bdl", "arctic_a0009")].shape == (512,)

    cache = XVectorCache(tmp_path / "cache", embedder)
    pre = PrecomputedXVectors(table, cache)
    np.testing.assert_allclose(pre.get("aaa", "aaa_u0", corpus[0].tgt_path), l2_normalise(raw), atol=1e-6)
    fallback = pre.get("aaa", "aaa_u1", corpus[1].tgt_path)
    np.testing.assert_allclose(fallback, embedder.embed(load_audio(corpus[1].tgt_path)), atol=NOISE)
    assert (pre.hits, pre.fallbacks, cache.misses) == (1, 1, 1)

    vectors = target_embeddings(corpus, pre, "utterance")
    np.testing.assert_allclose(vectors["aaa_u0"], l2_normalise(raw), atol=1e-6)
    assert (pre.hits, pre.fallbacks) == (2, 6)
    assert fetch_arctic_xvectors(str(tmp_path)) == zip_path  # a local copy is used as is


def test_precomputed_download_offline_names_the_override(hub_offline, tmp_path):
    with pytest.raises(MissingModelError, match="use_precomputed_xvectors=false"):
        fetch_arctic_xvectors("vc-tests-nobody/no-xvectors", cache_dir=tmp_path)


def test_embeddings_for_pairs_applies_the_speaker_config(tmp_path, corpus, tiny_models):
    cfg = {
        "source": str(tiny_models.xvector),
        "mode": "average",
        "cache_dir": tmp_path / "cache",
        "device": "cpu",
    }
    vectors, hits, computed = embeddings_for_pairs(corpus, {p.utt_id for p in corpus}, **cfg)
    assert set(vectors) == {p.utt_id for p in corpus} and (hits, computed) == (0, len(corpus))
    again, hits, computed = embeddings_for_pairs(corpus, {p.utt_id for p in corpus}, **cfg)
    assert (hits, computed) == (len(corpus), 0)
    np.testing.assert_array_equal(vectors["aaa_u0"], again["aaa_u0"])
