"""Known-answer tests for vc.audio's resampling: tones in files at every common rate, measured by FFT."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.signal.windows import blackmanharris

from vc.audio import SAMPLE_RATE, load_audio

RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
IN_BAND = (440, 1000, 5000, 7000)  # Hz, inside the model's 80-7600 Hz mel band
ABOVE_NYQUIST = (8500, 10000, 15000)  # Hz, above 16 kHz's Nyquist: must not come out at all
AMPLITUDE = 0.5
SECONDS = 2
# Blackman-Harris (sidelobes -92 dB) spreads a tone over +-4 one-hertz bins; this leaves margin
MAIN_LOBE = 8


def spectrum_db(wav: np.ndarray, sr: int) -> np.ndarray:
    """dB re amplitude 1 per 1 Hz bin (index = Hz) of the middle second, away from the resampler's edges."""
    start = (len(wav) - sr) // 2
    window = blackmanharris(sr)
    mag = np.abs(np.fft.rfft(wav[start : start + sr] * window)) / (window.sum() / 2)
    return 20 * np.log10(mag + 1e-30)


def tone_file(tmp_path, sr: int, freq: int):
    """A float WAV holding a tone of AMPLITUDE at ``freq`` Hz sampled at ``sr`` Hz, and its level in dB."""
    wav = (AMPLITUDE * np.sin(2 * np.pi * freq * np.arange(SECONDS * sr) / sr)).astype(np.float32)
    level = spectrum_db(wav, sr)[freq]
    assert level == pytest.approx(20 * np.log10(AMPLITUDE), abs=0.01)  # the measurement itself is exact
    path = tmp_path / f"tone_{freq}_{sr}.wav"
    sf.write(path, wav, sr, subtype="FLOAT")
    return path, level


def cases(freqs):
    return [pytest.param(sr, f, id=f"{f}Hz@{sr}") for sr in RATES for f in freqs if f < sr / 2]


@pytest.mark.parametrize("sr, freq", cases(ABOVE_NYQUIST))
def test_tones_above_8khz_leave_no_alias(tmp_path, sr, freq):
    path, level = tone_file(tmp_path, sr, freq)
    out = load_audio(path, check=False)
    assert out.dtype == np.float32 and len(out) == SECONDS * SAMPLE_RATE
    spec = spectrum_db(out, SAMPLE_RATE)
    loudest = int(np.argmax(spec))
    alias = abs(freq - round(freq / SAMPLE_RATE) * SAMPLE_RATE)  # where resampling folds it
    assert spec.max() <= level - 60, (
        f"strongest output {spec.max() - level:.1f} dB re the input tone at {loudest} Hz "
        f"(alias at {alias} Hz: {spec[alias] - level:.1f} dB)"
    )


@pytest.mark.parametrize("sr, freq", cases(IN_BAND))
def test_in_band_tones_keep_their_level_and_nothing_else(tmp_path, sr, freq):
    path, level = tone_file(tmp_path, sr, freq)
    out = load_audio(path)
    assert out.dtype == np.float32 and len(out) == SECONDS * SAMPLE_RATE
    spec = spectrum_db(out, SAMPLE_RATE)
    assert spec[freq] == pytest.approx(level, abs=0.1)
    # images (upsampling) and aliases land away from the tone: everything else stays 60 dB down
    rest = np.delete(spec, np.arange(freq - MAIN_LOBE, freq + MAIN_LOBE + 1))
    assert rest.max() <= level - 60, f"spurious {rest.max() - level:.1f} dB re the tone"


def test_16khz_passes_through_unchanged(tmp_path):
    path, _ = tone_file(tmp_path, SAMPLE_RATE, 1000)
    assert np.array_equal(load_audio(path), sf.read(path, dtype="float32")[0])


def test_stereo_is_downmixed_then_resampled(tmp_path):
    sr, freq = 44_100, 1000
    mono = np.sin(2 * np.pi * freq * np.arange(SECONDS * sr) / sr).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([0.6 * mono, 0.2 * mono], axis=1), sr, subtype="FLOAT")
    out = load_audio(path)
    assert out.ndim == 1 and out.dtype == np.float32 and len(out) == SECONDS * SAMPLE_RATE
    assert spectrum_db(out, SAMPLE_RATE)[freq] == pytest.approx(20 * np.log10(0.4), abs=0.1)
