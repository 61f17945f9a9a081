"""Known-answer tests for vc.metrics on synthetic signals: no files, no network.

The "voice" is a harmonic source (1/k^tilt harmonics, F0 with vibrato) through three formant
resonators, one vowel after another: F0, formant scale and tilt make the "speaker", the vowel
order the "content".
"""

import json
import math
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.spatial.distance import cdist

from vc import metrics
from vc.errors import AudioError, MissingModelError

SR = 16_000
# first three formants (Hz) of a few vowels of an adult male voice
VOWELS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
}


def voice(
    f0: float = 120.0,
    vowels: str = "aiueo",
    seconds: float = 1.0,
    formant_scale: float = 1.0,
    tilt: float = 1.0,
    f0_shift: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A synthetic utterance, float32 (seconds * 16000,), peak 0.5.

    F0 in Hz is ``f0 * (1 + 0.06 sin(2 pi 2.5 t)) + f0_shift``; harmonics up to 4 kHz.
    """
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0_track = f0 * (1 + 0.06 * np.sin(2 * np.pi * 2.5 * t)) + f0_shift
    phase = 2 * np.pi * np.cumsum(f0_track) / SR
    source = sum(np.sin(k * phase) / k**tilt for k in range(1, int(4000 / f0) + 1))
    out = np.zeros(n)
    for idx, vowel in zip(np.array_split(np.arange(n), len(vowels)), vowels, strict=True):
        y = source[idx]
        for fc, bw in zip(VOWELS[vowel], (80, 100, 120), strict=True):
            r, theta = np.exp(-np.pi * bw / SR), 2 * np.pi * fc * formant_scale / SR
            y = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
        out[idx] = y
    # 50 ms fades, and a little noise so that no frame is digitally clean
    out *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    out += np.random.default_rng(seed).normal(scale=1e-3 * np.abs(out).max(), size=n)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    return voice()


# --- DTW ---------------------------------------------------------------------------------------


def test_dtw_of_identical_sequences_is_the_diagonal():
    x = np.random.default_rng(0).normal(size=(40, 24))
    cost, path = metrics.dtw(x, x)
    assert cost == 0.0
    np.testing.assert_array_equal(path, np.stack([np.arange(40)] * 2, axis=1))


@pytest.mark.parametrize("n, m", [(1, 1), (1, 6), (7, 1), (13, 21), (30, 9)])
def test_dtw_matches_brute_force_dynamic_programming(n, m):
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    local = cdist(x, y)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = local[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    cost, path = metrics.dtw(x, y)
    assert cost == pytest.approx(acc[n, m], abs=1e-9)
    assert local[path[:, 0], path[:, 1]].sum() == pytest.approx(cost, abs=1e-9)
    steps = np.diff(path, axis=0)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
    assert np.all((steps >= 0) & (steps <= 1)) and np.all(steps.sum(axis=1) >= 1)


# --- MCD and F0 --------------------------------------------------------------------------------


def test_mcd_of_identical_signals_is_zero(utterance):
    assert metrics.mcd(utterance, utterance) == 0.0


def test_mcd_ignores_level_because_c0_is_excluded(utterance):
    assert metrics.mcd(utterance, 0.25 * utterance) < 1e-6


def test_mcd_grows_as_the_noise_gets_louder(utterance):
    noise = np.random.default_rng(1).normal(size=utterance.size)
    power = np.mean(utterance.astype(np.float64) ** 2)
    values = []
    for snr_db in (40, 20, 10, 0):
        noisy = utterance + noise * np.sqrt(power / 10 ** (snr_db / 10))
        values.append(float(metrics.mcd(utterance, noisy.astype(np.float32))))
        print(f"MCD at {snr_db:>2} dB SNR: {values[-1]:.3f} dB")
    assert 0 < values[0] and np.all(np.diff(values) > 0)


def test_f0_rmse_of_a_copy_20_hz_higher_is_20_hz():
    ref, hyp = voice(), voice(f0_shift=20.0)
    scores = metrics.f0_metrics(ref, hyp)
    assert "mcd" not in scores
    assert scores["f0_rmse_hz"] == pytest.approx(20.0, abs=1.5)
    t = np.arange(SR) / SR
    f0 = 120 * (1 + 0.06 * np.sin(2 * np.pi * 2.5 * t))
    cents = np.sqrt(np.mean((1200 * np.log2((f0 + 20) / f0)) ** 2))
    assert scores["f0_rmse_cent"] == pytest.approx(cents, rel=0.1)
    assert scores["f0_corr"] > 0.95
    assert scores["vuv_error"] < 0.05
    assert scores["duration_ratio"] == pytest.approx(1.0, abs=0.03)


def test_duration_ratio_trims_silence_and_sees_slower_speech(utterance):
    padded = np.concatenate([np.zeros(SR // 2, np.float32), utterance, np.zeros(SR, np.float32)])
    assert metrics.mcd_f0(utterance, padded)["duration_ratio"] == pytest.approx(1.0, abs=0.03)
    slower = metrics.mcd_f0(utterance, voice(seconds=1.5))
    assert slower["duration_ratio"] == pytest.approx(1.5, abs=0.05)
    assert slower["mcd"] < 3.0  # DTW lines up the stretched vowels


def test_mcd_settings_describe_the_analysis():
    s = metrics.MCD_SETTINGS
    assert (s["mcep_order"], s["mcep_alpha"], s["frame_shift_ms"], s["include_c0"]) == (24, 0.41, 5.0, False)
    json.dumps(s)


# --- values that cannot be computed -------------------------------------------------------------

BAD_INPUTS = {
    "nan": (np.full(SR, np.nan, np.float32), "NaN"),
    "short": (voice()[: SR // 20], "shorter"),
    "silent": (np.zeros(SR, np.float32), "silent"),
    "stereo": (np.zeros((2, SR), np.float32), "1-D"),
    "empty": (np.zeros(0, np.float32), "empty"),
    "int16": (np.ones(SR, np.int16), "float"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_audio_gives_nan_with_a_reason(kind, utterance):
    bad, words = BAD_INPUTS[kind]
    results = [
        *metrics.mcd_f0(utterance, bad).values(),
        *metrics.mcd_f0(bad, utterance).values(),
        *metrics.dnsmos(bad).values(),
        # checked before any model loads, so this costs nothing
        metrics.SpeakerSimilarity().score(utterance, bad),
    ]
    for value in results:
        assert math.isnan(value) and words in value.reason, value.reason


def test_unvoiced_hyp_gives_nan_f0_but_a_finite_mcd(utterance):
    noise = (0.1 * np.random.default_rng(2).normal(size=SR)).astype(np.float32)
    scores = metrics.mcd_f0(utterance, noise)
    assert math.isfinite(scores["mcd"]) and scores["mcd"].reason is None
    assert scores["vuv_error"] > 0.5
    assert math.isnan(scores["f0_rmse_hz"]) and "voiced in both" in scores["f0_rmse_hz"].reason


def test_score_behaves_as_a_float_and_keeps_its_reason():
    bad = metrics.Score(math.nan, "hyp: silent")
    assert json.dumps({"mcd": metrics.Score(4.5), "bad": bad}) == '{"mcd": 4.5, "bad": NaN}'
    assert pickle.loads(pickle.dumps(bad)).reason == "hyp: silent"
    assert metrics.Score(2.0) + 1 == 3.0 and metrics.Score(2.0).reason is None


# --- speaker similarity ---------------------------------------------------------------------------


def test_secs_same_speaker_beats_other_speaker():
    sim = metrics.SpeakerSimilarity("resemblyzer")
    low = {"f0": 110.0, "formant_scale": 1.0, "tilt": 1.0}
    high = {"f0": 220.0, "formant_scale": 1.2, "tilt": 1.6}
    clips = {
        (spk, c): voice(vowels=vowels, seconds=2.0, seed=c, **params)
        for spk, params in (("low", low), ("high", high))
        for c, vowels in enumerate(("aiueo", "oeaui"))
    }
    emb = {key: sim.embed(wav) for key, wav in clips.items()}
    assert all(e.shape == (256,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5) for e in emb.values())
    same = [float(emb["low", 0] @ emb["low", 1]), float(emb["high", 0] @ emb["high", 1])]
    cross = [float(emb["low", a] @ emb["high", b]) for a in (0, 1) for b in (0, 1)]
    print(f"SECS same speaker {same}, across speakers {cross}")
    assert min(same) > max(cross) + 0.1
    assert sim.score(clips["low", 0], clips["low", 1]) == pytest.approx(same[0], abs=1e-5)


def test_speechbrain_backend_uses_the_project_embedder(monkeypatch, utterance):
    made = {}

    class FakeEmbedder:
        def __init__(self, source="default-xvector", savedir=None, device="cpu"):
            made.update(source=source, savedir=savedir, device=device)

        def embed(self, wav):
            return np.full(512, float(np.abs(wav).max()))

    monkeypatch.setitem(sys.modules, "vc.data.speakers", types.SimpleNamespace(SpeakerEmbedder=FakeEmbedder))
    sim = metrics.SpeakerSimilarity("speechbrain", savedir="/cache")
    assert sim.score(utterance, 0.5 * utterance) == pytest.approx(1.0)
    assert made == {"source": "default-xvector", "savedir": "/cache", "device": "cpu"}


# --- ASR, CER, WER --------------------------------------------------------------------------------


def test_error_rates_on_known_strings():
    assert metrics.wer("the cat sat", "the cat sit") == pytest.approx(1 / 3)
    assert metrics.cer("the cat sat", "the cat sit") == pytest.approx(1 / 11)
    assert metrics.wer("The cat, sat!", "the  CAT sat") == 0.0
    assert metrics.wer("the cat sat", "") == 1.0
    empty = metrics.wer("...", "the cat")
    assert math.isnan(empty) and "reference text is empty" in empty.reason


def test_normalize_text():
    assert metrics.normalize_text("Hello,  World! It's well-known.") == "hello world its well known"
    assert metrics.normalize_text("Pay 1,000 or 3.5 (twenty).") == "pay 1,000 or 3.5 twenty"


def test_pocketsphinx_runs_offline(utterance):
    asr = metrics.Transcriber("pocketsphinx")
    assert isinstance(asr.transcribe(utterance), str)
    assert asr.transcribe(np.zeros(SR // 2, np.float32)) == ""
    with pytest.raises(AudioError, match="NaN"):
        asr.transcribe(np.full(SR, np.nan, np.float32))


def test_transformers_asr_names_a_missing_model(tmp_path, utterance):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(MissingModelError, match="metrics.asr.model"):
        metrics.Transcriber("whisper", model=missing).transcribe(utterance)


def test_transformers_asr_loads_a_local_model(tmp_path, utterance):
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}))
    Wav2Vec2CTCTokenizer(str(vocab), word_delimiter_token="|").save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, return_attention_mask=True).save_pretrained(tmp_path)
    config = Wav2Vec2Config(
        vocab_size=5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    Wav2Vec2ForCTC(config).save_pretrained(tmp_path)
    assert isinstance(metrics.Transcriber("wav2vec2", model=str(tmp_path)).transcribe(utterance), str)


# --- DNSMOS, versions, confidence intervals ---------------------------------------------------------


def test_dnsmos_gives_finite_scores_on_the_mos_scale(utterance):
    scores = metrics.dnsmos(utterance)
    print(f"DNSMOS {scores}")
    assert set(scores) == {"ovrl", "sig", "bak", "p808"}
    assert all(1.0 <= v <= 5.0 and v.reason is None for v in scores.values())


def test_backend_versions_name_the_installed_packages():
    versions = metrics.backend_versions()
    assert versions["pyworld"] and versions["pysptk"] and versions["jiwer"]
    assert set(versions) >= {"Resemblyzer", "pocketsphinx", "speechmos", "transformers", "speechbrain"}


def test_confidence_interval_uses_the_t_distribution():
    mean, low, high = metrics.confidence_interval([1.0, 2.0, 3.0, math.nan])
    # t(0.975, df=2) = 4.3027; sd = 1; n = 3
    assert mean == 2.0 and high - mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert low == pytest.approx(2 * mean - high)
    one = metrics.confidence_interval([5.0])
    assert one[0] == 5.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in metrics.confidence_interval([math.nan]))


def test_import_is_light():
    heavy = (
        "torch",
        "transformers",
        "resemblyzer",
        "pocketsphinx",
        "speechmos",
        "pyworld",
        "pysptk",
        "jiwer",
    )
    code = f"import sys, vc.metrics; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
