"""The bundle: one folder with everything conversion needs, loadable offline.

    bundle/
      speecht5/         SpeechT5ForSpeechToSpeech (config + safetensors) + feature extractor
      vocoder/          SpeechT5HifiGan
      speaker_encoder/  SpeechBrain x-vector model (hyperparams.yaml + weights)
      default_speaker.npy   the training target speaker's average x-vector (512,), if known
      vc.yaml           audio and generation settings, speaker names, the training config

``infer.py ckpt=BUNDLE``, ``eval.py``, the HTTP endpoint and SageMaker's model.tar.gz use it.
Turn a Lightning checkpoint into a bundle with ``python -m vc.model.bundle CKPT OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from vc.errors import ConfigError, MissingModelError
from vc.tempfiles import remove_stale, temp_path

BUNDLE_FILE = "vc.yaml"
# PyTorch archives up to this size get their checksums read when checked for damage (the
# speaker encoder's few MB); larger ones only their zip directory
SMALL_ARCHIVE_BYTES = 64 << 20


def is_bundle(path: str | os.PathLike) -> bool:
    """True if ``path`` is a bundle folder."""
    return (Path(path) / BUNDLE_FILE).is_file()


def _copy_speaker_encoder(source: str, dest: Path) -> None:
    """Copy a SpeechBrain model folder (local, or the hub snapshot) into the bundle, links resolved."""
    src = Path(source)
    if not src.is_dir():
        try:
            from huggingface_hub import snapshot_download

            src = Path(snapshot_download(source))
        except Exception as err:
            raise MissingModelError("speaker encoder", source, "data.speaker.source", err) from None
    shutil.copytree(src, dest, symlinks=False, ignore=shutil.ignore_patterns(".cache", ".git*"))


def export_bundle(
    module,
    out_dir: str | os.PathLike,
    *,
    speaker_source: str | None = None,
    default_speaker: np.ndarray | None = None,
    src_spk: str | None = None,
    tgt_spk: str | None = None,
    train_config: Mapping | None = None,
) -> Path:
    """Write a bundle for a trained :class:`~vc.model.module.VCLitModule` into ``out_dir``.

    The folder is built under a temporary name and renamed, so a bundle is complete or absent.
    Returns the bundle path. A temporary folder an interrupted export left is removed.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent, out.name)  # what an export killed midway left
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_bundle(module, tmp, speaker_source, default_speaker, src_spk, tgt_spk, train_config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_bundle(module, tmp: Path, speaker_source, default_speaker, src_spk, tgt_spk, train_config) -> None:
    """The bundle's files, into the folder ``tmp``."""
    from vc.data.features import make_feature_extractor
    from vc.model.pretrained import load_vocoder

    hp = module.hparams
    module.model.config.use_cache = True  # generation wants the cache back on
    module.model.save_pretrained(tmp / "speecht5")
    make_feature_extractor(hp.audio).save_pretrained(tmp / "speecht5")
    load_vocoder(hp.vocoder).save_pretrained(tmp / "vocoder")
    _copy_speaker_encoder(speaker_source or hp.speaker_encoder, tmp / "speaker_encoder")
    if default_speaker is not None:
        np.save(tmp / "default_speaker.npy", np.asarray(default_speaker, dtype=np.float32))
    settings = {
        "audio": dict(hp.audio),
        "generation": dict(hp.generation),
        "src_spk": src_spk,
        "tgt_spk": tgt_spk,
        "pretrained": hp.pretrained,
        "vocoder": hp.vocoder,
        "speaker_encoder": speaker_source or hp.speaker_encoder,
        "train_config": dict(train_config) if train_config else None,
    }
    OmegaConf.save(OmegaConf.create(settings), tmp / BUNDLE_FILE)


@dataclass
class Bundle:
    """A loaded bundle: the parts as objects plus its settings."""

    model: object
    feature_extractor: object
    vocoder: object
    speaker_encoder_dir: Path
    default_speaker: np.ndarray | None
    settings: dict
    path: Path


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load every part of a bundle folder offline.

    A part that does not load (a file cut short or overwritten, a damaged config) is a
    :class:`ConfigError` that names the file and says to export the bundle again.
    """
    from vc.model.pretrained import load_feature_extractor, load_speecht5, load_vocoder

    path = Path(path)
    settings = read_settings(path)
    speaker_dir = path / "speaker_encoder"
    # the speaker encoder loads on first use: find a damaged file now, before any work
    _check_files(path, speaker_dir, "speaker encoder")
    default = path / "default_speaker.npy"
    return Bundle(
        model=_load_part(path, "speecht5", "SpeechT5 model", load_speecht5),
        feature_extractor=_load_part(path, "speecht5", "feature extractor", load_feature_extractor),
        vocoder=_load_part(path, "vocoder", "HiFiGAN vocoder", load_vocoder),
        speaker_encoder_dir=speaker_dir,
        default_speaker=_load_part(path, default.name, "default speaker", np.load)
        if default.exists()
        else None,
        settings=settings,
        path=path,
    )


def read_settings(path: str | os.PathLike) -> dict:
    """The bundle's ``vc.yaml`` as a dict; a :class:`ConfigError` if ``path`` is no bundle or the
    file is damaged."""
    path = Path(path)
    if not is_bundle(path):
        raise ConfigError(
            f"{path}: not a bundle folder (no {BUNDLE_FILE}). Export one with `python -m vc.model.bundle CKPT OUT`."
        )
    try:
        settings = OmegaConf.to_container(OmegaConf.load(path / BUNDLE_FILE), resolve=True)
    except Exception as err:  # yaml's and OmegaConf's parse errors
        settings = f"not valid YAML ({first_line(err)})"
    if not isinstance(settings, dict):
        problem = settings if isinstance(settings, str) else "not the bundle's settings"
        raise ConfigError(f"{path / BUNDLE_FILE}: {problem}. {_reexport(path)}")
    return settings


def damaged(file: Path) -> str | None:
    """Why a model file cannot be read (empty, cut short, overwritten), or None if it looks whole.

    Reads headers and sizes (and a small archive's checksums), not the whole model: a
    safetensors header that does not cover the file, a JSON that does not parse, a PyTorch
    archive (.ckpt .bin .pt) without its zip directory or with a bad checksum, an .npy that does
    not load."""
    if file.suffix not in (".safetensors", ".json", ".ckpt", ".bin", ".pt", ".pth", ".npy"):
        return None  # markers, label lists, HyperPyYAML: their loaders' errors say enough
    try:
        if file.stat().st_size == 0:
            return "empty (0 bytes)"
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), "pt"):
                pass
        elif file.suffix == ".json":
            json.loads(file.read_text(encoding="utf-8"))
        elif file.suffix in (".ckpt", ".bin", ".pt", ".pth"):
            if not zipfile.is_zipfile(file):
                return "not a complete PyTorch archive (cut short or overwritten)"
            if file.stat().st_size <= SMALL_ARCHIVE_BYTES:
                with zipfile.ZipFile(file) as archive:
                    if archive.testzip() is not None:
                        return "a PyTorch archive with damaged contents"
        elif file.suffix == ".npy":
            np.load(file)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg}, line {err.lineno}): cut short or edited"
    except Exception:  # safetensors' and numpy's parse errors: their text says no more than this
        kind = {".safetensors": "safetensors file", ".npy": ".npy array"}.get(file.suffix, "file")
        return f"not a complete {kind} (cut short or overwritten)"
    return None


def _load_part(bundle: Path, name: str, what: str, load):
    """``load(bundle / name)``; any failure is a :class:`ConfigError` naming the damaged file."""
    try:
        return load(str(bundle / name))
    except Exception as err:
        _check_files(bundle, bundle / name, what)
        # a MissingModelError's own text is hub advice; what matters here is what is missing
        cause = err.__cause__ if isinstance(err, MissingModelError) and err.__cause__ else err
        raise ConfigError(
            f"{bundle / name}: the bundle's {what} does not load ({first_line(cause)}). {_reexport(bundle)}"
        ) from None


def _check_files(bundle: Path, part: Path, what: str) -> None:
    if not part.exists():
        raise ConfigError(f"{part}: missing, so the bundle has no {what}. {_reexport(bundle)}")
    files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
    for file in files:
        problem = damaged(file)
        if problem:
            raise ConfigError(f"{file}: {problem}; the bundle's {what} cannot load. {_reexport(bundle)}")


def _reexport(bundle: Path) -> str:
    return (
        f"Export the bundle again from its training run: `python -m vc.model.bundle "
        f"outputs/train/runs/<time>/checkpoints/last.ckpt {bundle}` (or copy it again if it was copied)."
    )


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (cut at 160 characters), for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def checkpoint_to_bundle(ckpt: str | os.PathLike, out_dir: str | os.PathLike, **kwargs) -> Path:
    """Load a Lightning ``.ckpt`` (no Hydra needed) and export it as a bundle."""
    from vc.model.module import VCLitModule

    if not Path(ckpt).is_file():
        raise ConfigError(f"{ckpt}: no such checkpoint file.")
    module = VCLitModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    return export_bundle(module, out_dir, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vc.model.bundle",
        description="Turn a Lightning checkpoint (.ckpt) into a bundle folder.",
    )
    parser.add_argument("ckpt", help="the .ckpt file (e.g. outputs/train/runs/<time>/checkpoints/last.ckpt)")
    parser.add_argument("out", help="the bundle folder to write")
    parser.add_argument(
        "--speaker-source", default=None, help="SpeechBrain x-vector model to include (default: as trained)"
    )
    parser.add_argument(
        "--default-speaker", default=None, help=".npy x-vector used when no reference is given"
    )
    args = parser.parse_args(argv)
    from vc.cli import run_command

    return run_command(
        lambda: checkpoint_to_bundle(
            args.ckpt,
            args.out,
            speaker_source=args.speaker_source,
            default_speaker=np.load(args.default_speaker) if args.default_speaker else None,
        ),
        "bundle written to {}",
    )


if __name__ == "__main__":
    sys.exit(main())
