"""VCDataModule on the synthetic corpus: caches, bad files, other rates and channels, loaders, summary."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import compose_config
from vc.data.datamodule import VCDataModule
from vc.data.synthetic import SyntheticCorpus
from vc.errors import AudioError

AUDIO = {
    "sample_rate": 16000,
    "num_mel_bins": 80,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "fmin": 80,
    "fmax": 7600,
}


@pytest.fixture
def corpus_root(synthetic_arctic, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(synthetic_arctic, root)
    return root


def _datamodule(root, tmp_path, tiny_models, **kw) -> VCDataModule:
    corpus = SyntheticCorpus(root, "sya", "syb", num_utterances=12)
    defaults = dict(
        corpus=corpus,
        split={"scheme": "random", "seed": 0, "val_ratio": 0.25, "test_ratio": 0.0},
        speaker={
            "source": str(tiny_models.xvector),
            "mode": "average",
            "cache_dir": str(tmp_path / "xv"),
            "device": "cpu",
        },
        audio=AUDIO,
        feature_cache_dir=str(tmp_path / "features"),
        src_spk="sya",
        tgt_spk="syb",
        batch_size=3,
        val_samples=2,
    )
    return VCDataModule(**{**defaults, **kw})


def test_second_run_hits_every_cache(corpus_root, tmp_path, tiny_models):
    first = _datamodule(corpus_root, tmp_path, tiny_models)
    first.prepare_data()
    first.setup("fit")
    assert not first.report.feature_cache_hit and first.report.xvector_misses == 9
    second = _datamodule(corpus_root, tmp_path, tiny_models)
    second.prepare_data()
    second.setup("fit")
    assert second.report.feature_cache_hit
    assert (second.report.xvector_hits, second.report.xvector_misses) == (9, 0)
    summary = str(second.report)
    assert "12 pairs (sya -> syb)" in summary and "train 9, val 3" in summary and "cache hit" in summary
    # average mode: every pair of the target speaker gets the same unit vector
    vectors = {tuple(np.round(second.datasets["train"][i]["speaker_embeddings"], 6)) for i in range(9)}
    assert len(vectors) == 1 and np.isclose(np.linalg.norm(next(iter(vectors))), 1.0, atol=1e-5)
    # a changed file is a new cache entry, not a stale hit
    wav, sr = sf.read(corpus_root / "cmu_us_syb_arctic" / "wav" / "arctic_a0001.wav")
    sf.write(corpus_root / "cmu_us_syb_arctic" / "wav" / "arctic_a0001.wav", wav * 0.5, sr)
    third = _datamodule(corpus_root, tmp_path, tiny_models)
    third.prepare_data()
    assert not third.report.feature_cache_hit


def test_bad_files_are_skipped_counted_and_named(corpus_root, tmp_path, tiny_models):
    wavs = corpus_root / "cmu_us_syb_arctic" / "wav"
    (wavs / "arctic_a0002.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(wavs / "arctic_a0003.wav", np.zeros(16000, np.float32), 16000)
    nan = np.full(16000, np.nan, np.float32)
    sf.write(wavs / "arctic_a0004.wav", nan, 16000, subtype="FLOAT")
    dm = _datamodule(corpus_root, tmp_path, tiny_models)
    dm.setup("fit")
    bad = {b.utt_id: b.reason for b in dm.report.bad_files}
    assert set(bad) == {"arctic_a0002", "arctic_a0003", "arctic_a0004"}
    assert "not a readable audio file" in bad["arctic_a0002"]
    assert "silent" in bad["arctic_a0003"] and "NaN" in bad["arctic_a0004"]
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 9
    assert "3 left out" in str(dm.report) and "arctic_a0002.wav" in str(dm.report)

    strict = _datamodule(
        corpus_root,
        tmp_path / "strict",
        tiny_models,
        on_bad_file="error",
    )
    with pytest.raises(AudioError, match=r"arctic_a0002\.wav.*on_bad_file=skip"):
        strict.setup("fit")


def test_other_rates_and_channels_are_converted(corpus_root, tmp_path, tiny_models):
    path = corpus_root / "cmu_us_syb_arctic" / "wav" / "arctic_a0001.wav"
    mono, sr = sf.read(path, dtype="float32")
    from vc.audio import resample

    up = resample(mono, 16000, 44100)
    sf.write(path, np.stack([up, 0.5 * up], axis=1), 44100)  # stereo 44.1 kHz under the .wav name
    dm = _datamodule(corpus_root, tmp_path, tiny_models)
    dm.setup("fit")
    ds = dm.datasets["train"]
    item = ds[ds.utt_ids.index("arctic_a0001")]
    expected_frames = len(mono) // 256
    assert abs(len(item["labels"]) - expected_frames) <= 4
    assert not dm.report.bad_files


def test_loaders_and_fixed_validation_batch(corpus_root, tmp_path, tiny_models):
    dm = _datamodule(corpus_root, tmp_path, tiny_models)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sorted(u for b in batches for u in b["utt_ids"]) == sorted(dm.datasets["train"].utt_ids)
    b = batches[0]
    assert b["input_values"].shape == b["attention_mask"].shape and b["speaker_embeddings"].shape[1] == 512
    first, again = dm.val_sample_batch(), dm.val_sample_batch()
    assert first["utt_ids"] == again["utt_ids"] and len(first["utt_ids"]) == 2
    assert dm.report.padding["bucketed"] <= dm.report.padding["random"]


def test_prepare_command_prints_the_summary(smoke_root, capsys, tmp_path):
    from tests.conftest import smoke_overrides
    from vc.data.prepare import run

    summary = run(compose_config("train", smoke_overrides(smoke_root, tmp_path)))
    out = capsys.readouterr().out
    for field in ("corpus", "pairs", "splits", "bad files", "features", "x-vectors", "padding"):
        assert field in summary and field in out
    assert "cache hit" in summary and "0 computed" in summary
