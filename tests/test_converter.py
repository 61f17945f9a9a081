"""VoiceConverter on the tiny bundle: conversion, batching, references, long audio, bad input.

The tiny model is random: at threshold 0.5 it stops after one step (its two stop probabilities
sum to about 1), so the tests that need real generation use threshold 3, which is never reached:
every chunk runs to its length limit, and the converter must report that (stop_reason
"max_length"), which is the runaway check.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vc.converter import VoiceConverter, crossfade_join, split_at_pauses
from vc.errors import AudioError, ConfigError, MissingModelError

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000
HOP = 256
RUNAWAY = {"threshold": 3.0}
# Batched vs one-by-one on the CPU: relative L2 difference of the whole waveforms.
BATCH_TOLERANCE = 1e-5


# one torch thread: the cores may be shared (generation ran ~60x slower with 2 threads on 2 busy cores)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def converter(tiny_bundle) -> VoiceConverter:
    return VoiceConverter.from_pretrained(tiny_bundle, device="cpu", generation=RUNAWAY)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """(T,) float32 at 16 kHz: voiced 'syllables' (harmonic tones of 90-220 Hz, 0.3-1.5 s, Hann
    envelope) separated by 0.1-0.6 s pauses, over a -60 dBFS noise floor."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    pos = 0
    while pos < len(out):
        n = int(rng.uniform(0.3, 1.5) * SR)
        t = np.arange(n) / SR
        f0 = rng.uniform(90, 220)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * np.hanning(n)
        out[pos : pos + n] = 0.2 * tone[: len(out) - pos]
        pos += n + int(rng.uniform(0.1, 0.6) * SR)
    return out + 1e-3 * rng.standard_normal(len(out)).astype(np.float32)


def frame_limit(samples: int, maxlenratio: float = 2.0, r: int = 2) -> int:
    """Frames generate_speech allows a chunk of ``samples``: the encoder downsamples 320x."""
    enc = (samples - 400) // 320 + 1
    return max(1, int(enc * maxlenratio / r)) * r


def test_converts_a_synthetic_file(converter, synthetic_arctic, caplog):
    src = synthetic_arctic / "cmu_us_sya_arctic" / "wav" / "arctic_a0001.wav"
    ref = synthetic_arctic / "cmu_us_syb_arctic" / "wav" / "arctic_a0002.wav"
    samples = sf.info(str(src)).frames
    with caplog.at_level(logging.WARNING, logger="vc.converter"):
        out = converter.convert(src, ref=ref)
    assert out.sample_rate == SR and out.wav.dtype == np.float32 and out.wav.ndim == 1
    assert np.isfinite(out.wav).all()
    meta = out.meta
    assert meta["src_seconds"] == pytest.approx(samples / SR)
    assert meta["frames"] == frame_limit(samples) and len(out.wav) == meta["frames"] * HOP
    assert meta["out_seconds"] == pytest.approx(len(out.wav) / SR)
    assert meta["chunks"] == 1 and meta["chunk_info"][0]["stop_reason"] == "max_length"
    # the runaway is reported, in the result and in the log, naming the input
    assert meta["stop_reason"] == "max_length"
    assert any(str(src) in r.message and "length limit" in r.message for r in caplog.records)
    # the seeded pre-net dropout makes a conversion repeatable
    assert np.array_equal(converter.convert(src, ref=ref).wav, out.wav)


def test_stop_token_is_reported_too(tiny_bundle):
    """At the bundle's threshold 0.5 the random model stops at once: one step, two frames."""
    out = VoiceConverter.from_pretrained(tiny_bundle, device="cpu").convert(speech_like(1.0))
    assert out.meta["stop_reason"] == "stop_token" and out.meta["frames"] == 2


def test_batched_matches_one_by_one(converter):
    """Sources of 0.6-3.5 s (one padded batch) against each converted alone, on the CPU.

    Frame counts and lengths are equal exactly, and so are the waveforms up to float rounding
    (relative L2 under 1e-5, whole waveforms): on a CPU each chunk is encoded and vocoded alone,
    its length limits are its own, and the seed makes the pre-net dropout masks the same either way.
    """
    srcs = [speech_like(s, seed=i) for i, s in enumerate((1.3, 2.7, 0.6, 3.5))]
    batched = converter.convert_many(srcs)
    for src, b in zip(srcs, batched, strict=True):
        alone = converter.convert(src)
        assert b.meta["frames"] == alone.meta["frames"] == frame_limit(len(src))
        assert len(b.wav) == len(alone.wav)
        diff = np.linalg.norm(b.wav - alone.wav) / np.linalg.norm(alone.wav)
        print(f"{len(src) / SR:.1f} s: relative L2 difference {diff:.2e}")
        assert diff < BATCH_TOLERANCE


def test_references_are_averaged_and_cached(converter, caplog):
    a, b = speech_like(2.0, seed=1), speech_like(2.5, seed=2)
    va, vb = converter.speaker_embedding(a), converter.speaker_embedding(b)
    calls = converter.embedder.calls
    both = converter.speaker_embedding([(a, SR), b])
    assert converter.embedder.calls == calls  # both clips came from the cache
    mean = (va + vb) / np.linalg.norm(va + vb)
    assert both.shape == (512,) and np.linalg.norm(both) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(both, mean, atol=1e-6)
    assert converter.speaker_embedding(None) is converter.default_speaker
    with caplog.at_level(logging.WARNING, logger="vc.converter"):
        converter.speaker_embedding((speech_like(0.5, seed=3), SR))
    assert any("0.50 s is short for a reliable x-vector" in r.message for r in caplog.records)
    with pytest.raises(AudioError, match="too short"):
        converter.speaker_embedding(speech_like(0.1, seed=4))


def test_split_at_pauses_cuts_in_pauses():
    wav = speech_like(95.0, seed=5)
    spans = split_at_pauses(wav, SR, 10.0)
    assert spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(end == start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert all(0.5 * SR <= end - start <= 10 * SR for start, end in spans)
    for cut in (start for start, _ in spans[1:]):
        around = wav[cut - 160 : cut + 160]
        assert np.sqrt(np.mean(around**2)) < 5e-3, f"cut at {cut / SR:.2f} s is not in a pause"
    # no pause at all: still no chunk longer than the limit, and no tiny last chunk
    tone = (0.3 * np.sin(2 * np.pi * 150 * np.arange(int(25.2 * SR)) / SR)).astype(np.float32)
    spans = split_at_pauses(tone, SR, 10.0)
    assert all(0.5 * SR <= end - start <= 10 * SR for start, end in spans) and spans[-1][1] == len(tone)
    assert split_at_pauses(tone[: 8 * SR], SR, 10.0) == [(0, 8 * SR)]


def test_crossfade_join_length_and_continuity():
    a, b = np.ones(1000, np.float32), np.ones(500, np.float32)
    out = crossfade_join([a, b, a], 320)
    assert len(out) == 2500 - 2 * 320 and np.allclose(out, 1.0)


def test_long_input_is_chunked_and_joined(tiny_bundle):
    """A 5-minute input: chunks of at most 10 s, converted in batches, joined with a 20 ms crossfade.
    Its length equals the sum of the chunks converted one by one less the overlaps (tolerance 0)."""
    vc = VoiceConverter.from_pretrained(tiny_bundle, device="cpu", generation={**RUNAWAY, "maxlenratio": 1.0})
    wav = speech_like(300.0, seed=6)
    out = vc.convert(wav)
    spans = split_at_pauses(wav, SR, vc.max_chunk_seconds)
    assert out.meta["chunks"] == len(spans) >= 30
    alone = [vc.convert(wav[start:end]) for start, end in spans]
    assert [c["frames"] for c in out.meta["chunk_info"]] == [a.meta["frames"] for a in alone]
    assert len(out.wav) == sum(len(a.wav) for a in alone) - (len(spans) - 1) * vc.crossfade
    assert out.meta["stop_reason"] == "max_length"
    assert out.meta["src_seconds"] == pytest.approx(300.0)


PROBE = textwrap.dedent(
    """
    import os, sys, threading, time
    import numpy as np, torch
    from tests.test_converter import RUNAWAY, speech_like
    from vc.converter import VoiceConverter
    torch.set_num_threads(1)
    vc = VoiceConverter.from_pretrained(sys.argv[1], device="cpu", generation={**RUNAWAY, "maxlenratio": 1.0})
    vc.convert(speech_like(12.0))  # warm-up: lazy initialisation is not the input's cost
    wav = speech_like(float(sys.argv[2]), seed=7)
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page
    base, peak, done = rss(), [0], threading.Event()
    def sample():  # the current RSS every 2 ms (torch releases the GIL while it computes)
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    out = vc.convert(wav)
    done.set()
    sampler.join()
    print((max(peak[0], rss()) - base) / 2**20, wav.nbytes / 2**20, out.wav.nbytes / 2**20)
    """
)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_peak_memory_stays_flat(tiny_bundle):
    """Peak resident memory while converting 1 and 5 minutes (each in a fresh process, after a
    warm-up), over the memory just before the call. What grows with the input is the audio itself
    (the copy of the input that the checks make, and the output, held twice while the chunks are
    joined); the working memory beyond it stays the same."""
    rows = {}
    for seconds in (60, 300):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(tiny_bundle), str(seconds)],
            capture_output=True,
            text=True,
            check=True,
            # a fixed mmap threshold: glibc's moving one keeps freed blocks in the heap, which
            # made the same run's peak vary by up to 90 MB
            env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"},
            cwd=ROOT,
        )
        peak, src_mb, out_mb = (float(x) for x in done.stdout.split()[-3:])
        rows[seconds] = peak, src_mb, out_mb
        print(f"{seconds // 60} min: peak +{peak:.0f} MB (input {src_mb:.1f} MB, output {out_mb:.1f} MB)")
    (p1, s1, o1), (p5, s5, o5) = rows[60], rows[300]
    working1, working5 = p1 - (s1 + 2 * o1), p5 - (s5 + 2 * o5)
    print(f"beyond the audio arrays: 1 min {working1:.0f} MB, 5 min {working5:.0f} MB")
    assert working5 < working1 + 32


@pytest.mark.parametrize(
    ("src", "message"),
    [
        (np.zeros(0, np.float32), "empty audio"),
        (np.full(SR, np.nan, np.float32), "NaN or Inf"),
        (np.zeros(SR, np.float32), "silent"),
        ((np.ones(800, np.float32) * 0.1, SR), "too short"),
        (b"not audio at all", "not a readable audio file"),
    ],
    ids=["empty", "nan", "silence", "too-short", "garbage-bytes"],
)
def test_bad_sources_name_the_problem(converter, src, message):
    with pytest.raises(AudioError, match=message):
        converter.convert(src)


def test_missing_file_names_it(converter, tmp_path):
    with pytest.raises(AudioError, match="no_such.wav: no such file"):
        converter.convert(tmp_path / "no_such.wav")


def test_from_pretrained_errors_name_the_input_and_fix(tmp_path, tiny_models, hub_offline):
    with pytest.raises(ConfigError, match=r"ckpt=\./nowhere/bundle: no such bundle"):
        VoiceConverter.from_pretrained("./nowhere/bundle", device="cpu")
    with pytest.raises(ConfigError, match="neither a bundle .* nor a SpeechT5 model"):
        VoiceConverter.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        VoiceConverter.from_pretrained(tmp_path / "last.ckpt", device="cpu")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a complete PyTorch archive .* not a usable checkpoint"):
        VoiceConverter.from_pretrained(tmp_path / "broken.ckpt", device="cpu")
    with pytest.raises(MissingModelError, match="`ckpt=/path/to/no_such_model`"):
        VoiceConverter.from_pretrained("someone/no_such_model", device="cpu")
    with pytest.raises(ConfigError, match="dtype=fp16 needs a GPU"):
        VoiceConverter.from_pretrained(tiny_models.speecht5, device="cpu", dtype="fp16")
    with pytest.raises(ConfigError, match="not a device"):
        VoiceConverter.from_pretrained(tiny_models.speecht5, device="banana")
    # a SpeechT5 folder (like a hub id) has no default speaker: ref is required
    vc = VoiceConverter.from_pretrained(
        tiny_models.speecht5,
        device="cpu",
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
    )
    with pytest.raises(ConfigError, match=r"has no default speaker .* Pass ref="):
        vc.convert(speech_like(1.0))
    with pytest.raises(ConfigError, match="unknown generation setting"):
        vc.convert(speech_like(1.0), ref=speech_like(2.0), temperature=0.7)
    assert vc.convert(speech_like(1.0), ref=speech_like(2.0)).wav.size > 0


def test_lightning_checkpoint_loads_with_its_parts(tiny_bundle, tiny_models, tmp_path):
    """A .ckpt from training: the model from its weights, vocoder and speaker encoder from its hparams."""
    import lightning.pytorch as pl

    from vc.model.module import VCLitModule

    module = VCLitModule(
        pretrained=str(tiny_models.speecht5),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        generation={"threshold": 3.0, "minlenratio": 0.0, "maxlenratio": 2.0},
    )
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    vc = VoiceConverter.from_pretrained(tmp_path / "last.ckpt", device="cpu")
    src = speech_like(1.5)
    out = vc.convert(src, ref=speech_like(2.0, seed=1))
    assert out.meta["stop_reason"] == "max_length" and out.meta["frames"] == frame_limit(len(src))
    assert vc.speaker_encoder == str(tiny_models.xvector)


def test_bf16_runs_and_returns_float32(tiny_bundle):
    vc = VoiceConverter.from_pretrained(tiny_bundle, device="cpu", dtype="bf16", generation=RUNAWAY)
    out = vc.convert(speech_like(1.0))
    assert vc.dtype == torch.bfloat16 and out.wav.dtype == np.float32 and np.isfinite(out.wav).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_by_default_with_auto_dtype(tiny_bundle):
    vc = VoiceConverter.from_pretrained(tiny_bundle, generation=RUNAWAY)
    src = speech_like(2.0)
    out = vc.convert(src)
    assert vc.device.type == "cuda" and vc.dtype == torch.float32
    assert out.wav.dtype == np.float32 and out.meta["frames"] == frame_limit(len(src))
