"""Training features: source waveform and target log-mel, cached with `datasets`.

Targets are transformers' ``SpeechT5FeatureExtractor`` log-mels (the features the
pretrained model and the HiFiGAN vocoder were trained on). The cache is a `datasets`
folder keyed by the pair list (paths, sizes, modification times) and the audio settings,
so a second run with the same data does no feature work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vc.audio import load_audio
from vc.errors import AudioError, ConfigError, user_error

log = logging.getLogger(__name__)

FEATURES_VERSION = "1"


def make_feature_extractor(audio: Mapping):
    """A ``SpeechT5FeatureExtractor`` for the audio settings (hop and window given in samples)."""
    from transformers import SpeechT5FeatureExtractor

    sr = int(audio["sample_rate"])
    return SpeechT5FeatureExtractor(
        sampling_rate=sr,
        num_mel_bins=int(audio["num_mel_bins"]),
        # the extractor takes milliseconds
        hop_length=int(audio["hop_length"]) * 1000 // sr,
        win_length=int(audio["win_length"]) * 1000 // sr,
        fmin=float(audio["fmin"]),
        fmax=float(audio["fmax"]),
    )


def log_mel(extractor, wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T,) float32 waveform -> (frames, num_mel_bins) float32 log10-mel."""
    out = extractor(audio_target=wav, sampling_rate=sample_rate)["input_values"]
    return np.asarray(out[0], dtype=np.float32)


@dataclass
class BadFile:
    """A pair left out because one of its files could not be used."""

    utt_id: str
    path: str
    reason: str


def _pairs_key(pairs: Iterable, audio: Mapping) -> str:
    h = hashlib.sha256(FEATURES_VERSION.encode())
    h.update(json.dumps({k: audio[k] for k in sorted(audio)}, sort_keys=True).encode())
    for p in pairs:
        for path in (p.src_path, p.tgt_path):
            st = os.stat(path) if os.path.exists(path) else None
            h.update(
                f"{p.utt_id}\0{path}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n".encode()
            )
    return h.hexdigest()[:20]


def build_features(pairs: list, audio: Mapping, cache_dir: str | os.PathLike, on_bad_file: str = "skip"):
    """Compute (or load from cache) the features of ``pairs``.

    Args:
        pairs: objects with ``utt_id``, ``src_path``, ``tgt_path``.
        audio: the ``audio`` config (sample_rate, num_mel_bins, hop_length, win_length, fmin, fmax).
        cache_dir: root of the feature cache; one sub-folder per pair list and settings.
        on_bad_file: ``skip`` leaves out pairs whose audio is unreadable, empty, silent or NaN and
            reports them; ``error`` raises on the first one.

    Returns:
        ``(dataset, bad_files, cache_hit)``: a `datasets.Dataset` with columns ``utt_id``,
        ``input_values`` (T,) float32 16 kHz source, ``labels`` (frames, mels) target log-mel,
        ``src_len`` and ``tgt_len`` (no rows when every pair was bad); the list of :class:`BadFile`;
        whether the cache was used.
    """
    import datasets

    if on_bad_file not in ("skip", "error"):
        raise ConfigError(f"data.on_bad_file={on_bad_file!r}: use 'skip' or 'error'.")
    folder = Path(cache_dir) / _pairs_key(pairs, audio)
    meta_path = folder / "bad_files.json"
    if meta_path.exists():
        bad = [BadFile(**b) for b in json.loads(meta_path.read_text())]
        if bad and on_bad_file == "error":
            raise AudioError(
                f"{bad[0].path}: {bad[0].reason} (set data.on_bad_file=skip to leave such pairs out)"
            )
        return datasets.load_from_disk(str(folder / "dataset")), bad, True

    sr = int(audio["sample_rate"])
    extractor = make_feature_extractor(audio)
    bad: list[BadFile] = []
    # how many records the generator gave, and whether it ran to its end
    given = {"records": 0, "done": False}

    def records():
        for p in tqdm(pairs, desc="features", unit="pair", leave=False):
            wavs = []
            for path in (p.src_path, p.tgt_path):
                try:
                    wavs.append(load_audio(path, sr))
                except AudioError as err:
                    if on_bad_file == "error":
                        raise AudioError(
                            f"{err} (set data.on_bad_file=skip to leave such pairs out)"
                        ) from None
                    bad.append(BadFile(p.utt_id, str(path), str(err)))
                    break
            if len(wavs) < 2:
                continue
            src, tgt = wavs
            mel = log_mel(extractor, tgt, sr)
            given["records"] += 1
            yield {
                "utt_id": p.utt_id,
                "input_values": src,
                "labels": mel,
                "src_len": len(src),
                "tgt_len": len(mel),
            }
        given["done"] = True

    features = datasets.Features(
        {
            "utt_id": datasets.Value("string"),
            "input_values": datasets.Sequence(datasets.Value("float32")),
            "labels": datasets.Array2D(shape=(None, int(audio["num_mel_bins"])), dtype="float32"),
            "src_len": datasets.Value("int32"),
            "tgt_len": datasets.Value("int32"),
        }
    )
    # write under a temporary name and rename, so a killed run never leaves a half cache
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # a fresh generator cache each time: a stale one would skip the generator and lose bad-file reports
    try:
        ds = datasets.Dataset.from_generator(records, features=features, cache_dir=str(tmp / "hf"))
    except Exception as err:
        if not (given["done"] and given["records"] == 0):
            shutil.rmtree(tmp, ignore_errors=True)
            raise user_error(err) or err from None
        # `datasets` refuses a generator that yields nothing: every pair was left out as bad.
        # An empty dataset lets the caller name the split and the files (VCDataModule does).
        ds = datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    if bad:
        log.warning(
            "left out %d pair(s) with unusable audio: %s", len(bad), "; ".join(b.reason for b in bad[:5])
        )
    # `datasets` writes no shard for an empty dataset unless told to, and then cannot load it back
    ds.save_to_disk(str(tmp / "dataset"), num_shards=1 if len(ds) == 0 else None)
    del ds
    shutil.rmtree(tmp / "hf", ignore_errors=True)
    (tmp / "bad_files.json").write_text(json.dumps([b.__dict__ for b in bad], indent=1))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(folder / "dataset")), bad, False
