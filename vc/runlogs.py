"""Read what a run wrote: logged metrics, validation samples per step, an evaluation's report.

A training run folder (``paths.output_dir``) holds the CSV logger's ``csv/metrics.csv`` and/or
TensorBoard event files, and ``val_samples/`` from :class:`vc.callbacks.ValidationAudio`:
``step<N>/<utt>.wav``, ``<utt>_mel.png``, ``<utt>_attention.png`` per validation, and
``truth/<utt>_source.wav`` / ``<utt>_target_vocoded.wav`` once. An evaluation folder holds
``table.md``, ``summary.json`` and PNG plots (in ``plots/``). ``notebooks/training_review.ipynb`` shows them.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vc.errors import DataError

# metric name -> (steps, values), sorted by step
Curves = dict[str, tuple[list[int], list[float]]]

_STEP_FOLDER = re.compile(r"^step(\d+)$")
_SAMPLE_FILE = re.compile(r"^(?P<utt>.+?)(?:_(?P<kind>mel|attention))?\.(?:wav|png)$")


def _sorted(points: dict[str, list[tuple[int, float]]]) -> Curves:
    return {
        name: ([s for s, _ in pts], [v for _, v in pts])
        for name, pts in ((n, sorted(p, key=lambda sv: sv[0])) for n, p in points.items())
        if pts
    }


def read_csv_metrics(path: str | os.PathLike) -> Curves:
    """Lightning CSVLogger's ``metrics.csv`` -> curves of every metric column (empty cells skipped)."""
    points: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for name, value in row.items():
                if name in ("step", "epoch") or value in ("", None):
                    continue
                points.setdefault(name, []).append((int(float(step)), float(value)))
    return _sorted(points)


def read_tensorboard(folder: str | os.PathLike) -> Curves:
    """Scalars of every TensorBoard event file below ``folder`` -> curves (tags as metric names)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, list[tuple[int, float]]] = {}
    for events in sorted({p.parent for p in Path(folder).rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return _sorted(points)


def load_curves(run_dir: str | os.PathLike) -> Curves:
    """A run folder's logged metrics: ``metrics.csv`` files below it, then TensorBoard events for
    metrics the CSVs lack. Raises :class:`DataError` when the folder has neither."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run_dir={run_dir}: no such folder. Point it at a training run's output folder.")
    curves: Curves = {}
    for path in sorted(run_dir.rglob("metrics.csv")):
        curves.update(read_csv_metrics(path))
    if any(run_dir.rglob("events.out.tfevents.*")):
        for name, curve in read_tensorboard(run_dir).items():
            curves.setdefault(name, curve)
    if not curves:
        raise DataError(
            f"run_dir={run_dir}: no metrics.csv or TensorBoard events below it. Train with logger=csv or "
            "logger=tensorboard (the default)."
        )
    return curves


def select(curves: Curves, *patterns: str) -> Curves:
    """The curves whose names match any of the glob ``patterns`` (``"train/*"``), in pattern order."""
    out: Curves = {}
    for pattern in patterns:
        out.update({name: c for name, c in curves.items() if fnmatch.fnmatchcase(name, pattern)})
    return out


def latest_run(root: str | os.PathLike) -> Path:
    """The most recently modified folder below ``root`` that holds a ``metrics.csv`` or TensorBoard events
    (the training run to review). Raises :class:`DataError` when there is none."""
    logs = [*Path(root).rglob("metrics.csv"), *Path(root).rglob("events.out.tfevents.*")]
    runs = {_run_of(p) for p in logs}
    if not runs:
        raise DataError(
            f"no training run below {root}. Train first (python train.py ...), or set VC_RUN_DIR to a run folder."
        )
    return max(runs, key=lambda p: p.stat().st_mtime)


def _run_of(log_file: Path) -> Path:
    # csv/metrics.csv and tensorboard/events... sit one level below the run folder
    return log_file.parent.parent if log_file.parent.name in ("csv", "tensorboard") else log_file.parent


# ---------------------------------------------------------------------------------------------
# Validation samples


@dataclass(frozen=True)
class ValSample:
    """What one validation wrote for one utterance; None for a file that is not there."""

    utt_id: str
    wav: Path | None = None
    mel: Path | None = None
    attention: Path | None = None


@dataclass(frozen=True)
class ValStep:
    """One validation's folder (``val_samples/step<N>``) and its samples by utterance id."""

    step: int
    folder: Path
    samples: dict[str, ValSample]


def _val_root(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    return run_dir if run_dir.name == "val_samples" else run_dir / "val_samples"


def val_steps(run_dir: str | os.PathLike) -> list[ValStep]:
    """Validation sample folders of a run (or of its ``val_samples`` folder itself), sorted by step."""
    steps = []
    root = _val_root(run_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        match = _STEP_FOLDER.match(folder.name)
        if not match:
            continue
        files: dict[str, dict[str, Path]] = {}
        for path in sorted(folder.iterdir()):
            name = _SAMPLE_FILE.match(path.name)
            if name:
                kind = name["kind"] or "wav"
                files.setdefault(name["utt"], {})[kind] = path
        samples = {utt: ValSample(utt, **kinds) for utt, kinds in files.items()}
        steps.append(ValStep(int(match[1]), folder, samples))
    return sorted(steps, key=lambda s: s.step)


def val_truth(run_dir: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """The ground truth written once per run: utterance id -> {"source": wav, "target_vocoded": wav}."""
    truth: dict[str, dict[str, Path]] = {}
    folder = _val_root(run_dir) / "truth"
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        for role in ("source", "target_vocoded"):
            if path.stem.endswith(f"_{role}"):
                truth.setdefault(path.stem[: -len(role) - 1], {})[role] = path
    return truth


def val_samples_html(run_dir: str | os.PathLike, utt_id: str | None = None) -> str:
    """An HTML table of one utterance across validations: per step a player, the mel and the attention
    picture; the ground-truth players on top. ``utt_id`` None: the first utterance of the first step."""
    from vc.listening import audio_html, image_html

    steps = val_steps(run_dir)
    if not steps:
        return f"<p>No validation samples in {_val_root(run_dir)}.</p>"
    utt_id = utt_id or next(iter(steps[0].samples))
    truth = "".join(audio_html(path, role) for role, path in val_truth(run_dir).get(utt_id, {}).items())
    rows = []
    for step in steps:
        sample = step.samples.get(utt_id)
        if sample is None:
            continue
        cells = [
            audio_html(sample.wav) if sample.wav else "",
            image_html(sample.mel) if sample.mel else "",
            image_html(sample.attention, width=280) if sample.attention else "",
        ]
        rows.append(f"<tr><td>{step.step}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "<tr><th>step</th><th>audio</th><th>mel</th><th>attention</th></tr>"
    return f"<h4>{utt_id}</h4>{truth}<table>{head}{''.join(rows)}</table>"


# ---------------------------------------------------------------------------------------------
# Evaluation output


@dataclass(frozen=True)
class EvalReport:
    """An evaluation folder's ``table.md`` text, ``summary.json`` and PNG plots anywhere below it
    (None / empty if absent)."""

    folder: Path
    table: str | None
    summary: dict | None
    figures: list[Path]


def load_eval(folder: str | os.PathLike) -> EvalReport:
    """Read an ``eval.py`` output folder. Raises :class:`DataError` when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"eval_dir={folder}: no such folder. Point it at an eval.py output folder.")
    table = folder / "table.md"
    summary = folder / "summary.json"
    return EvalReport(
        folder,
        table.read_text() if table.is_file() else None,
        json.loads(summary.read_text()) if summary.is_file() else None,
        sorted(folder.rglob("*.png")),
    )
