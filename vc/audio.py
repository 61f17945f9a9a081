"""Audio in and out: any file, bytes or array -> mono float32 at 16 kHz; WAV and base64 WAV out.

torchaudio 2.9+ has no I/O of its own, so reading and writing go through soundfile
(WAV, FLAC, OGG, MP3 with libsndfile >= 1.1). Resampling is soxr's band-limited sinc resampler
(:func:`resample`), after any downmix to mono.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr

from vc.errors import AudioError
from vc.tempfiles import temp_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")
# Below this peak a clip carries no usable signal (about -80 dBFS).
SILENCE_PEAK = 1e-4
# libsndfile's log line for a data chunk longer than the file: "data : 74560 (should be 37258)"
# (SSND in AIFF)
_CUT_SHORT = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, "tuple[np.ndarray, int]"]


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Mono float audio (T,) at ``orig_sr`` Hz -> float32 (about T * target_sr / orig_sr,) at ``target_sr`` Hz.

    Every rate change in the package goes through here. soxr filters before it decimates:
    scipy's ``resample_poly`` default filter let an 8.5 kHz tone in 48 kHz audio through as a
    7.5 kHz alias only 14 dB down, inside the model's 80-7600 Hz mel band.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    # "HQ" (20-bit), measured at every common rate: aliases and images >= 130 dB down (past a 16-bit
    # source's 96 dB), tones up to 7.3 kHz within 0.01 dB, -3 dB at 7.6 kHz. "VHQ" was no better at
    # float32's noise floor and no faster, often slower.
    return soxr.resample(wav, int(orig_sr), int(target_sr), quality="HQ")


def _to_mono(data: np.ndarray, channels_first_ok: bool = False) -> np.ndarray:
    """(T,) or (T, C) -> (T,) by averaging channels.

    With ``channels_first_ok`` (arrays from users), a short first axis is taken as channels.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        if channels_first_ok and data.shape[0] < data.shape[1] and data.shape[0] <= 8:
            data = data.T
        data = data.mean(axis=1)
    if data.ndim != 1:
        raise AudioError(f"expected mono or (frames, channels) audio, got an array of shape {data.shape}")
    return data


def describe(src: AudioInput) -> str:
    """A short name for an audio input, for error messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, bytes):
        return f"<{len(src)} bytes>"
    if isinstance(src, tuple):
        return f"<array of {len(src[0])} samples at {src[1]} Hz>"
    return f"<array of shape {getattr(src, 'shape', '?')}>"


def load_audio(
    src: AudioInput,
    sample_rate: int = SAMPLE_RATE,
    *,
    name: str | None = None,
    check: bool = True,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Read ``src`` and return mono float32 samples at ``sample_rate`` Hz, shape (T,).

    ``src`` is a path, the bytes of an audio file, an ``(array, sr)`` tuple, or a bare
    array already at ``sample_rate``. Stereo is averaged to mono; other rates are
    resampled. With ``check``, empty, NaN/Inf, silent audio and audio shorter than
    ``min_seconds`` (or longer than ``max_seconds``) raise :class:`AudioError` naming the input
    (``name`` overrides how it is named).
    """
    label = name or describe(src)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise AudioError(
                f"{label}: no such file. Check the path (relative paths are relative to where you ran the command)."
            )
        if path.is_dir():
            raise AudioError(f"{label}: is a folder, not an audio file.")
        if path.stat().st_size == 0:
            raise AudioError(f"{label}: empty file (0 bytes). Re-export or re-record it.")
        try:
            data, sr = _read(str(path), label)
        except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
            raise AudioError(
                f"{label}: not a readable audio file ({err}). Use WAV, FLAC, OGG or MP3, "
                "or convert it first (e.g. `ffmpeg -i in.m4a out.wav`)."
            ) from None
    elif isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise AudioError(f"{label}: empty audio (0 bytes).")
        try:
            data, sr = _read(io.BytesIO(bytes(src)), label)
        except Exception as err:
            raise AudioError(
                f"{label}: the bytes are not a readable audio file ({err}). Send WAV, FLAC, OGG or MP3."
            ) from None
    elif isinstance(src, tuple):
        data, sr = src
    else:
        data, sr = src, sample_rate
    from_file = isinstance(src, (str, os.PathLike, bytes, bytearray))
    mono = _to_mono(data, channels_first_ok=not from_file)
    if check:
        _check_mix(np.asarray(data), mono, label)
    wav = resample(mono, int(sr), sample_rate)
    if check:
        check_audio(wav, label, sample_rate=sample_rate, min_seconds=min_seconds, max_seconds=max_seconds)
    return np.ascontiguousarray(wav, dtype=np.float32)


def _read(source, label: str) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and the rate of a file (path or file object); a file
    whose data is cut short is read as far as it goes, with a warning."""
    with sf.SoundFile(source) as f:
        data = f.read(dtype="float32", always_2d=True)
        sr, log_text = f.samplerate, f.extra_info
    cut = _CUT_SHORT.search(log_text)
    if cut:
        declared, present = int(cut[1]), int(cut[2])
        # a streamed WAV (ffmpeg to a pipe) declares 0 or 0xFFFFFFFF: no length to compare with
        if 0 < present < declared < 0xFFFFFF00:
            seconds = len(data) / sr
            log.warning(
                "%s: the file is shorter than its header says (%.2f s of %.2f s): it was cut short (an "
                "interrupted copy, download or recording?). Using the %.2f s that are there.",
                label,
                seconds,
                seconds * declared / present,
                seconds,
            )
    return data, sr


def _check_mix(data: np.ndarray, mono: np.ndarray, name: str) -> None:
    """Raise :class:`AudioError` when channels with sound cancel out in the mono mix."""
    if data.ndim != 2 or min(data.shape) < 2 or not np.all(np.isfinite(data)) or mono.size == 0:
        return
    if np.abs(mono).max() < SILENCE_PEAK <= np.abs(data).max():
        raise AudioError(
            f"{name}: its {min(data.shape)} channels cancel out when mixed to mono (one is the other with its "
            "polarity inverted, a wiring or export fault), which leaves silence. Keep one channel, e.g. "
            '`ffmpeg -i IN -af "pan=mono|c0=c0" OUT.wav`.'
        )


def check_audio(
    wav: np.ndarray,
    name: str,
    *,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> None:
    """Raise :class:`AudioError` for empty, too short, too long (``max_seconds``; None: no limit),
    NaN/Inf or silent audio."""
    if wav.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples). Record or select a clip with speech in it.")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{name}: contains NaN or Inf samples. Re-export the file; it is corrupt.")
    if wav.size < min_seconds * sample_rate:
        raise AudioError(
            f"{name}: {wav.size / sample_rate:.3f} s is too short; at least {min_seconds:.2f} s is needed."
        )
    if max_seconds is not None and wav.size > max_seconds * sample_rate:
        raise AudioError(
            f"{name}: {wav.size / sample_rate:.1f} s is too long; at most {max_seconds:g} s is accepted here. "
            "Use a shorter clip, or convert long recordings with `python infer.py`, which has no limit."
        )
    if np.abs(wav).max() < SILENCE_PEAK:
        raise AudioError(
            f"{name}: the audio is silent (peak below {SILENCE_PEAK:g}). Use a clip with speech in it."
        )


def write_wav(
    path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16"
) -> Path:
    """Write mono float audio to a WAV file atomically: encoded in memory, written to a temporary
    name, then renamed, so ``path`` is complete or untouched.

    Raises :class:`OSError` (a full disk, a read-only folder, a file where a folder should be)
    with no temporary file left behind.
    """
    path = Path(path)
    data = wav_bytes(wav, sample_rate, subtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        # Python's own file writes, not libsndfile's: they raise OSError with the real reason
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def wav_bytes(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> bytes:
    """Encode mono float audio as the bytes of a WAV file."""
    buf = io.BytesIO()
    sf.write(
        buf, np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sample_rate, subtype=subtype, format="WAV"
    )
    return buf.getvalue()


def wav_to_b64(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """Mono float audio -> base64 text of a 16-bit WAV file (the endpoint's ``wav_b64``)."""
    return base64.b64encode(wav_bytes(wav, sample_rate)).decode("ascii")


def b64_to_bytes(text: str, field: str) -> bytes:
    """Decode base64 text from a request field; a clear :class:`AudioError` if it is not base64.

    Line breaks and spaces are ignored: ``base64 file`` wraps its output at 76 characters.
    """
    if not isinstance(text, str) or not text:
        raise AudioError(f"'{field}' must be a non-empty base64 string of an audio file.")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, TypeError) as err:
        raise AudioError(
            f"'{field}' is not valid base64 ({err}). Encode the audio file's bytes with base64."
        ) from None


def content_hash(data: bytes | np.ndarray, *extra: str) -> str:
    """SHA-256 hex digest of file bytes or an array, plus any settings that change the result."""
    h = hashlib.sha256()
    if isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data)
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    else:
        h.update(data)
    for e in extra:
        h.update(b"\0" + e.encode())
    return h.hexdigest()


def file_hash(path: str | os.PathLike, *extra: str) -> str:
    """SHA-256 of a file's bytes plus settings, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    for e in extra:
        h.update(b"\0" + e.encode())
    return h.hexdigest()


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """All audio files below ``root`` (recursive), sorted; ``root`` itself if it is a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
