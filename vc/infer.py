"""run(cfg): convert audio files, folders or globs to the voice of a reference; 16 kHz mono WAVs out.

    python infer.py ckpt=BUNDLE src=speech.flac ref=target.wav out=converted.wav
    python infer.py ckpt=BUNDLE src=recordings/ ref=target.wav out=converted/    # the tree mirrored
    python infer.py ckpt=microsoft/speecht5_vc src="in/**/*.mp3" ref=target.wav
    python infer.py ckpt=BUNDLE mode=serve                                      # the local endpoint
    python infer.py ckpt=BUNDLE mode=demo                                       # the web demo (Gradio)

A bad file, or an output that cannot be written, is reported and skipped; the others are still
converted, and the run ends with an error listing the failures (exit status 2). Outputs never
replace inputs, and earlier outputs below src are never taken as sources.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, ListConfig
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vc.audio import AUDIO_EXTENSIONS, find_audio_files, write_wav
from vc.cli import threads_setting
from vc.errors import AudioError, ConfigError, VCError
from vc.settings import check
from vc.tempfiles import remove_stale

if TYPE_CHECKING:
    from vc.converter import VoiceConverter

log = logging.getLogger(__name__)

OUT_SUBTYPES = {"pcm16": "PCM_16", "float": "FLOAT"}
# failures quoted in the final error message; the log lists them all
QUOTED_FAILURES = 5


@dataclass(frozen=True)
class Job:
    """One source file and the WAV it becomes."""

    src: Path
    out: Path


def expand(spec: str, key: str) -> tuple[list[Path], Path | None]:
    """A file, folder or glob (``key`` names the config key in errors) -> ``(files, base)``.

    ``files`` are sorted audio files (by extension; a single named file is taken as it is);
    ``base`` is the folder the tree is mirrored from, None for a single file.
    """
    path = Path(spec).expanduser()
    # a name with [ ] * ? that exists is that file or folder, not a pattern
    if glob.has_magic(spec) and not path.exists():
        parts = Path(spec).parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        matched = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        files = [p for p in matched if p.suffix.lower() in AUDIO_EXTENSIONS]
        if not files:
            raise AudioError(
                f"{key}={spec}: the pattern matches no audio files ({len(matched)} other files). Audio files end in "
                f"{', '.join(AUDIO_EXTENSIONS)}; quote the pattern so the shell does not expand it."
            )
        return files, Path(*parts[:fixed])
    if path.is_dir():
        files = find_audio_files(path)
        if not files:
            raise AudioError(
                f"{key}={spec}: no audio files in this folder or below it (looked for {', '.join(AUDIO_EXTENSIONS)}). "
                f"Point {key} at a folder with audio, a file or a glob."
            )
        return files, path
    if path.is_file():
        return [path], None
    raise AudioError(
        f"{key}={spec}: no such file or folder. Check the path (relative paths are relative to where you ran "
        "the command)."
    )


def plan(
    src: str,
    out: str | None,
    default_out: Path | None,
    *,
    protected: Sequence[Path] = (),
    outputs_root: Path | None = None,
) -> list[Job]:
    """Pair every source file with its output path; refuse an output that would replace an input.

    A single file goes to ``out`` if that ends in .wav, else into the folder ``out`` (default
    ``default_out``) as ``<stem>.wav``. A folder or glob mirrors its tree under the folder ``out``;
    ``a.flac`` and ``a.wav`` side by side become ``a.wav`` and ``a.flac.wav``. Files below ``out``
    or ``outputs_root`` (the tool's outputs/ folder) are outputs, never sources. A :class:`ConfigError`,
    before any model loads, when an output would be a source, one of ``protected`` (the references)
    or an existing file that is not a folder.
    """
    files, base = expand(src, "src")
    root = Path(out).expanduser() if out is not None else default_out
    if base is None:
        if _same_file(root, files[0]):
            raise ConfigError(
                f"out={out} is the source file itself: the source is never overwritten. Write to another file, "
                f"e.g. out={files[0].with_name(files[0].stem + '_converted.wav')}."
            )
        if root.suffix.lower() != ".wav" and root.is_file():
            raise ConfigError(
                f"out={out} is an existing file that is not a .wav, so it cannot be the output folder. Give a .wav "
                "file name or a folder."
            )
        target = root if root.suffix.lower() == ".wav" else root / f"{files[0].stem}.wav"
        jobs = [Job(files[0], target)]
    else:
        if root.suffix.lower() == ".wav":
            raise ConfigError(
                f"out={out} is a file name, but src={src} holds {len(files)} files: give a folder (the tree is mirrored)."
            )
        if _abs(root) == _abs(base) or _same_file(root, base):
            raise ConfigError(
                f"out={out} is the src folder: outputs would mix with the sources and be taken as sources on the "
                f"next run. Write to another folder, e.g. out={base / 'converted'}."
            )
        files = _leave_out_outputs(files, base, [root, outputs_root])
        jobs, taken = [], set()
        for file in files:
            rel = file.relative_to(base)
            target = root / rel.with_suffix(".wav")
            if target in taken:
                target = root / rel.with_name(rel.name + ".wav")
            taken.add(target)
            jobs.append(Job(file, target))
    inputs = {_identity(p): (key, p) for key, paths in (("ref", protected), ("src", files)) for p in paths}
    for job in jobs:
        if job.out.is_file() and _identity(job.out) in inputs:
            key, path = inputs[_identity(job.out)]
            raise ConfigError(
                f"out={out}: the output {job.out} would replace the {key} file {path}; inputs are never "
                "overwritten. Write to another folder with out=."
            )
    return jobs


def _identity(path: Path):
    """What makes two names one file: device and inode (hard links, case-insensitive file systems)."""
    try:
        st = path.stat()
    except OSError:
        return str(_abs(path))
    return (st.st_dev, st.st_ino)


def _abs(path: Path) -> Path:
    """Absolute, with ``..`` folded but links kept (a linked file is where its link is)."""
    return Path(os.path.abspath(path))


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and _identity(a) == _identity(b)


def _leave_out_outputs(files: list[Path], base: Path, roots: list[Path | None]) -> list[Path]:
    """``files`` without those below an output folder that lies inside ``base`` (earlier outputs;
    with ``src`` pointed at the output folder itself, its files are the sources)."""
    inside = [
        _abs(r)
        for r in roots
        if r is not None and _abs(r).is_relative_to(_abs(base)) and _abs(r) != _abs(base)
    ]
    if not inside:
        return files
    kept = [f for f in files if not any(_abs(f).is_relative_to(r) for r in inside)]
    if len(kept) < len(files):
        log.info(
            "left out %d file(s) below %s: outputs are never taken as sources",
            len(files) - len(kept),
            " and ".join(str(r) for r in inside),
        )
    if not kept:
        raise AudioError(
            f"src={base}: its only audio files are outputs (below {' or '.join(str(r) for r in inside)}). Point src "
            "at the recordings to convert."
        )
    return kept


def references(ref) -> list[Path] | None:
    """``ref`` from the config (None, a file, folder or glob, or a list of files) -> files or None."""
    if ref is None:
        return None
    if isinstance(ref, (list, ListConfig)):
        return [Path(str(r)).expanduser() for r in ref]
    return expand(str(ref), "ref")[0]


def load_converter(cfg: DictConfig) -> VoiceConverter:
    """The :class:`VoiceConverter` the config describes (building the tiny models first if asked).

    ``threads`` (if set) is torch's CPU thread count for the whole process."""
    # torch and the model code load here, after the settings and the files are checked
    import torch

    from vc.converter import VoiceConverter

    threads = threads_setting(cfg.get("threads"))
    if threads is not None:
        torch.set_num_threads(threads)
    if cfg.get("tiny_models"):
        from vc.model.tiny import build_tiny_models

        build_tiny_models(cfg.tiny_models)
    generation = {k: v for k, v in (cfg.get("generation") or {}).items() if v is not None}
    return VoiceConverter.from_pretrained(
        str(cfg.ckpt),
        device=str(cfg.device),
        dtype=str(cfg.dtype),
        quantize=str(cfg.get("quantize", "auto")),
        vocoder=cfg.get("vocoder"),
        speaker_encoder=cfg.get("speaker_encoder"),
        generation=generation,
        batch_size=int(cfg.batch_size),
        max_chunk_seconds=float(cfg.max_chunk_seconds),
        crossfade_ms=float(cfg.crossfade_ms),
        seed=cfg.get("seed"),
    )


def run(cfg: DictConfig) -> dict:
    """Convert ``cfg.src`` to the voice of ``cfg.ref`` as ``conf/infer.yaml`` describes.

    Returns ``{"converted", "skipped", "failed", "audio_seconds", "wall_seconds", "rtf", "outputs"}``
    (``rtf`` None when nothing was converted). Every setting is checked first
    (:func:`vc.settings.check`). Raises :class:`VCError` (exit status 2 from the CLI) after
    converting all it can if any file failed, to read or to write; with ``mode=serve`` it runs
    :func:`vc.serve.run` instead, with ``mode=demo`` :func:`vc.demo.run`.
    """
    check(cfg, "infer")
    if cfg.mode == "serve":
        from vc.serve import run as serve

        return serve(cfg)
    if cfg.mode == "demo":
        from vc.demo import run as demo

        return demo(cfg)
    default_out = None if cfg.out is not None else Path(cfg.paths.output_dir) / "converted"
    refs = references(cfg.ref)
    jobs = plan(
        str(cfg.src),
        None if cfg.out is None else str(cfg.out),
        default_out,
        protected=refs or [],
        outputs_root=Path(cfg.paths.log_dir),
    )
    _remove_stale_temporaries(jobs)
    todo = [job for job in jobs if cfg.overwrite or not job.out.exists()]
    summary = {"converted": 0, "skipped": len(jobs) - len(todo), "failed": 0, "audio_seconds": 0.0}
    summary.update(wall_seconds=0.0, rtf=None, outputs=[])
    if summary["skipped"]:
        log.info(
            "%d of %d outputs exist already and are skipped (overwrite=true converts them again)",
            summary["skipped"],
            len(jobs),
        )
    failures: list[str] = []
    if todo:
        converter = load_converter(cfg)
        # one x-vector for all files, computed up front: a bad reference fails once, before any work
        speaker = converter.speaker_embedding(refs)
        log.info(
            "converting %d file(s) into %s",
            len(todo),
            os.path.commonpath([str(j.out.parent.absolute()) for j in todo]),
        )
        start = time.perf_counter()
        with (
            logging_redirect_tqdm(),
            tqdm(total=len(todo), unit="file", desc="converting", disable=None) as bar,
        ):
            for g in range(0, len(todo), converter.batch_size):
                group = todo[g : g + converter.batch_size]
                failures += _convert_group(converter, group, speaker, OUT_SUBTYPES[cfg.out_format], summary)
                bar.update(len(group))
        summary["wall_seconds"] = time.perf_counter() - start
        if summary["audio_seconds"] > 0:
            summary["rtf"] = summary["wall_seconds"] / summary["audio_seconds"]
    summary["failed"] = len(failures)
    log.info(
        "converted %d files (%.1f s of audio) in %.1f s, real-time factor %s; %d skipped; %d failed",
        summary["converted"],
        summary["audio_seconds"],
        summary["wall_seconds"],
        "n/a" if summary["rtf"] is None else f"{summary['rtf']:.3f}",
        summary["skipped"],
        summary["failed"],
    )
    if failures:
        for reason in failures:
            log.error("failed: %s", reason)
        more = (
            f"; and {len(failures) - QUOTED_FAILURES} more (listed above)"
            if len(failures) > QUOTED_FAILURES
            else ""
        )
        raise VCError(
            f"{len(failures)} of {len(jobs)} file(s) failed: " + "; ".join(failures[:QUOTED_FAILURES]) + more
        )
    return summary


def _remove_stale_temporaries(jobs: list[Job]) -> None:
    """Delete the half-written outputs an interrupted run left (hidden ``.<name>.<pid>.tmp`` files)."""
    removed = [p for folder in sorted({j.out.parent for j in jobs}) for p in remove_stale(folder)]
    if removed:
        log.info("removed %d temporary file(s) an interrupted run left, e.g. %s", len(removed), removed[0])


def _convert_group(
    converter: VoiceConverter, group: list[Job], speaker, subtype: str, summary: dict
) -> list[str]:
    """Convert and write a few files together; returns the failure messages of the bad ones."""
    failures, loaded = [], []
    for job in group:
        try:
            loaded.append((job, converter.load_source(job.src, str(job.src))))
        except AudioError as err:
            log.error("%s", err)
            failures.append(str(err))
    if not loaded:
        return failures
    results = converter.convert_many(
        [wav for _, wav in loaded], speaker=speaker, names=[str(j.src) for j, _ in loaded]
    )
    for (job, _), result in zip(loaded, results, strict=True):
        try:
            write_wav(job.out, result.wav, result.sample_rate, subtype=subtype)
        except OSError as err:
            reason = f"{job.out}: cannot write the output: {_write_problem(err, job.out)}"
            log.error("%s", reason)
            failures.append(reason)
            continue
        summary["converted"] += 1
        summary["audio_seconds"] += result.meta["src_seconds"]
        summary["outputs"].append(str(job.out))
    return failures


def _write_problem(err: OSError, out: Path) -> str:
    """Why an output could not be written, and what to do, from the :class:`OSError`."""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason}. Free some space, or write elsewhere with out=."
    if err.errno == errno.EFBIG:
        return f"{reason} (a file size limit of this file system or process). Write elsewhere with out=."
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason}: the folder {out.parent} is not writable. Write elsewhere with out=."
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in out.parents if p.is_file()), out.parent)
        return (
            f"{reason}: {blocker} is a file where a folder is needed. Move it, or write elsewhere with out=."
        )
    if err.errno == errno.EISDIR:
        return f"{reason}: {out} is a folder. Move it, or write elsewhere with out=."
    return f"{reason}. Write elsewhere with out=."
