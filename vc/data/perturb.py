"""Signal-level source versions of a target recording: pitch and formant shift plus a random EQ.

``data=voice`` trains "another voice saying these words" -> "the target saying them". A perturbed
copy of the target's own recording is the cheapest such source: Praat's *Change gender* (through
praat-parselmouth) moves the pitch and scales the formants (a longer or shorter vocal tract)
without changing the timing, and a few random peaking filters change the timbre further. Every
call is deterministic given its seed, so an epoch's sources can be rebuilt exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import sosfilt

# Praat's pitch analysis range for Change gender (Hz): speech of any adult or child voice
PITCH_FLOOR, PITCH_CEILING = 75.0, 600.0


@dataclass(frozen=True)
class PerturbSettings:
    """Ranges of the random perturbation (``data.voice.perturb``).

    ``pitch`` and ``formant``: (low, high) factors, drawn log-uniformly (1.0 = unchanged);
    ``eq_bands``: peaking filters at random centre frequencies (log-uniform, 150-6000 Hz);
    ``eq_gain_db``: their gains are uniform in +-this many dB; ``eq_q``: (low, high) quality factors.
    """

    pitch: Sequence[float] = (0.7, 1.4)
    formant: Sequence[float] = (0.85, 1.2)
    eq_bands: int = 3
    eq_gain_db: float = 6.0
    eq_q: Sequence[float] = (0.7, 2.0)


def change_voice(
    wav: np.ndarray, sample_rate: int, pitch: float, formant: float, seed: int | None = None
) -> np.ndarray:
    """(T,) float audio -> (T,) float32 with the median pitch times ``pitch`` and the formants times
    ``formant``, same duration (Praat's Change gender; pitch range and duration factors 1).

    Audio in which Praat finds no voiced frame keeps its pitch (only the formants move). Praat's
    resynthesis draws random numbers (in unvoiced stretches); ``seed`` seeds them, so the same call
    gives the same samples.
    """
    import parselmouth
    from parselmouth.praat import call

    if seed is not None:
        # Praat's generator is global to the process; each DataLoader worker is its own process
        parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably({int(seed)})\n")
    sound = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=sample_rate)
    f0 = sound.to_pitch(pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING).selected_array["frequency"]
    voiced = f0[f0 > 0]
    new_median = float(np.median(voiced)) * pitch if voiced.size else 0.0
    out = call(sound, "Change gender", PITCH_FLOOR, PITCH_CEILING, formant, new_median, 1.0, 1.0)
    return np.asarray(out.values[0], dtype=np.float32)


def peaking_sos(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One peaking-EQ biquad (RBJ Audio EQ Cookbook) as a (1, 6) scipy second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def perturb(
    wav: np.ndarray, sample_rate: int, rng: np.random.Generator, settings: PerturbSettings
) -> tuple[np.ndarray, dict]:
    """A random source version of (T,) float audio -> ((T,) float32 at the input's peak, its parameters).

    Parameters drawn from ``rng`` within ``settings``: ``pitch``, ``formant`` (factors) and
    ``eq`` (list of (Hz, dB, Q)).
    """
    log_range = lambda lo_hi: float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))  # noqa: E731
    params = {"pitch": log_range(settings.pitch), "formant": log_range(settings.formant), "eq": []}
    out = change_voice(wav, sample_rate, params["pitch"], params["formant"], seed=int(rng.integers(2**31)))
    for _ in range(settings.eq_bands):
        band = (
            log_range((150.0, 6000.0)),
            float(rng.uniform(-1, 1) * settings.eq_gain_db),
            log_range(settings.eq_q),
        )
        params["eq"].append(band)
        out = sosfilt(peaking_sos(*band, sample_rate), out)
    # keep the recording's level: the EQ's gain must not clip or fade the source
    peak_in, peak_out = float(np.abs(wav).max()), float(np.abs(out).max())
    if peak_out > 0:
        out = out * (peak_in / peak_out)
    return np.asarray(out, dtype=np.float32), params


def perturb_rng(seed: int, epoch: int, utt_id: str) -> np.random.Generator:
    """The generator of one source version: the same (seed, epoch, utterance) gives the same source."""
    return np.random.default_rng([int(seed), int(epoch), zlib.crc32(utt_id.encode())])
