"""Read what a run wrote: logged metrics, validation samples per step, an evaluation's report.

A training run folder (``paths.output_dir``) holds the CSV logger's ``csv/metrics.csv`` and/or
TensorBoard event files, and ``val_samples/`` from :class:`vc.callbacks.ValidationAudio`:
``step<N>/<utt>.wav``, ``<utt>_mel.png``, ``<utt>_attention.png`` per validation, and
``truth/<utt>_source.wav`` / ``<utt>_target_vocoded.wav`` once. An evaluation folder holds
``table.md``, ``summary.json`` and PNG plots (in ``plots/``); :func:`find_eval` finds the evaluations of a
training run, :func:`eval_command` says how to make one. ``notebooks/training_review.ipynb`` shows them.
"""

from __future__ import annotations

import csv
import fnmatch
import html
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vc.errors import DataError, path_hint

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
        raise DataError(
            f"run_dir={run_dir}: no such folder{path_hint(run_dir)}. Point it at a training run's output folder."
        )
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
    """The training run to review: ``root`` itself when it is a run folder, else the most recently
    modified run below it (``outputs``, ``outputs/train``, a sweep). A run is a folder with a
    ``metrics.csv`` or TensorBoard events. Raises :class:`DataError` when there is none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder{path_hint(root)}. Set VC_RUN_DIR to a training run's output folder "
            "(outputs/train/runs/<time>)."
        )
    logs = [*root.rglob("metrics.csv"), *root.rglob("events.out.tfevents.*")]
    runs = {_run_of(p) for p in logs}
    if not runs:
        raise DataError(
            f"no training run below {root} (no metrics.csv or TensorBoard events). Train first "
            "(python train.py ...; logger=tensorboard, the default, or logger=csv), or set VC_RUN_DIR to a run folder."
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
    utts = list(dict.fromkeys(utt for step in steps for utt in step.samples))
    if utt_id and utt_id not in utts:
        return (
            f"<p>No validation samples of utterance {html.escape(utt_id)!r} in {_val_root(run_dir)}; "
            f"its validation utterances are {html.escape(', '.join(utts))} (VC_UTT_ID picks one).</p>"
        )
    utt_id = utt_id or utts[0]
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
        raise DataError(
            f"eval_dir={folder}: no such folder{path_hint(folder)}. Point it at an eval.py output folder."
        )
    table = folder / "table.md"
    summary = folder / "summary.json"
    return EvalReport(
        folder,
        table.read_text() if table.is_file() else None,
        json.loads(summary.read_text()) if summary.is_file() else None,
        sorted(folder.rglob("*.png")),
    )


def _is_eval_folder(folder: Path) -> bool:
    return (folder / "summary.json").is_file() or (folder / "table.md").is_file()


def _evaluated_model(summary_path: Path) -> Path | None:
    """The local model file or folder an evaluation scored (summary.json's ``ckpt_path``), None if unknown."""
    try:
        path = json.loads(summary_path.read_text()).get("ckpt_path")
    except (OSError, ValueError, AttributeError):  # a half-written or foreign summary.json
        return None
    return Path(path) if path else None


def eval_runs(root: str | os.PathLike) -> list[Path]:
    """``eval.py`` output folders (they hold ``summary.json``) at or below ``root``, newest first."""
    root = Path(root).expanduser()
    found = {summary.parent for summary in root.rglob("summary.json")} if root.is_dir() else set()
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_eval(run_dir: str | os.PathLike, eval_dir: str | os.PathLike) -> EvalReport | None:
    """The evaluation to show with a training run, or None when there is none yet.

    ``eval_dir`` is an ``eval.py`` output folder (it holds ``summary.json`` or ``table.md``): that one.
    Otherwise it is searched, recursively, for ``eval.py`` outputs whose model lies inside ``run_dir``
    (its bundle or a checkpoint), and the most recent one is read. A missing ``eval_dir`` is no evaluation.
    """
    eval_dir = Path(eval_dir).expanduser()
    if _is_eval_folder(eval_dir):
        return load_eval(eval_dir)
    run = Path(run_dir).expanduser().resolve()
    for folder in eval_runs(eval_dir):
        model = _evaluated_model(folder / "summary.json")
        if model is not None and model.is_relative_to(run):
            return load_eval(folder)
    return None


def run_model(run_dir: str | os.PathLike) -> Path | None:
    """What ``eval.py`` and ``infer.py`` take as ``ckpt`` for a training run: its bundle (the best
    checkpoint, exported when training ends), else ``checkpoints/last.ckpt``, else its newest ``.ckpt``;
    None before the first checkpoint."""
    from vc.model.bundle import is_bundle

    run_dir = Path(run_dir)
    if is_bundle(run_dir / "bundle"):
        return run_dir / "bundle"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return run_dir / "checkpoints" / "last.ckpt"
    ckpts = list(run_dir.rglob("*.ckpt"))
    return max(ckpts, key=lambda p: p.stat().st_mtime) if ckpts else None


# the training settings that decide which pairs make up eval.py's test split
_SPLIT_KEYS = (
    "src_spk",
    "tgt_spk",
    "split.scheme",
    "split.val_ratio",
    "split.test_ratio",
    "split.max_train_pairs",
)
# training overrides that say where the corpus is (data_dir, cache_dir, root_dir; data.corpus.*)
_WHERE = re.compile(r"^(paths\.(root_dir|data_dir|cache_dir)|data\.corpus\.[\w.]+)=")


def _override(key: str, value) -> str:
    """``key=value`` as one shell word that Hydra's grammar accepts (paths with spaces, commas, brackets)."""
    text = "null" if value is None else str(value)
    if re.fullmatch(r"[\w./:+~-]+", text):
        return f"{key}={text}"
    return shlex.quote(f'{key}="{text}"')


def _shown(path: Path, repo: Path) -> str:
    """``path`` relative to ``repo`` (where the command runs) when it lies inside it, else absolute."""
    path, repo = path.resolve(), repo.resolve()
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


def eval_command(run_dir: str | os.PathLike, repo: str | os.PathLike = "..") -> tuple[str | None, list[str]]:
    """The ``eval.py`` command that scores a training run's held-out test pairs, and notes on it.

    Returns ``(command, notes)``; the command is run in ``repo`` (the source checkout) and is None
    before the run has a checkpoint. The data settings (data group, speaker pair, split, seed, where the
    corpus is) come from the run's Hydra record (``.hydra/``), so the test split is the one training held
    out; a run without that record gets a note asking for them.
    """
    run_dir, repo = Path(run_dir).expanduser(), Path(repo)
    model = run_model(run_dir)
    if model is None:
        return None, [
            f"{run_dir} has no bundle or checkpoint yet: evaluate it once training has written its first "
            "checkpoint (after the first validation)."
        ]
    args = ["python", "eval.py", _override("ckpt", _shown(model, repo))]
    notes: list[str] = []
    record = run_dir / ".hydra"
    if not (record / "config.yaml").is_file() or not (record / "hydra.yaml").is_file():
        notes.append(
            f"{run_dir} has no .hydra/ record of its settings: add the data settings it trained with "
            "(data=..., data.src_spk=..., data.tgt_spk=..., data.split.*, seed=...) so that eval.py scores "
            "the pairs it held out."
        )
        return " ".join(args), notes
    config = OmegaConf.load(record / "config.yaml")
    choice = OmegaConf.select(OmegaConf.load(record / "hydra.yaml"), "hydra.runtime.choices.data")
    if choice:
        args.append(_override("data", choice))
    data = OmegaConf.to_container(config.data, resolve=False) if "data" in config else {}
    for key in _SPLIT_KEYS:
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node.get(parent) or {}
        value = node.get(leaf, "???")
        if isinstance(value, str) and (value == "???" or "${" in value):
            continue  # not set, or the same interpolation in eval's config
        if key == "split.test_ratio" and value == 0:
            notes.append(
                "The run held out no test pairs (data.split.test_ratio=0): eval.py's test split "
                "(test_ratio 0.1) then holds pairs it trained on, and eval.py warns about them. Train "
                "with data.split.test_ratio=0.1 to score unseen pairs."
            )
            continue
        args.append(_override(f"data.{key}", value))
    if "seed" in config:
        args.append(_override("seed", config.seed))
    overrides = OmegaConf.load(record / "overrides.yaml") if (record / "overrides.yaml").is_file() else []
    args += [shlex.quote(o) for o in overrides if _WHERE.match(o)]
    return " ".join(args), notes


def eval_note(run_dir: str | os.PathLike, eval_dir: str | os.PathLike, repo: str | os.PathLike = "..") -> str:
    """Markdown for a run without an evaluation: that there is none below ``eval_dir``, and the
    :func:`eval_command` that adds one."""
    eval_dir = Path(eval_dir)
    where = f"`{eval_dir}` does not exist" if not eval_dir.exists() else f"none below `{eval_dir}` scored it"
    command, notes = eval_command(run_dir, repo)
    text = f"**No evaluation of this run yet** ({where})."
    if command:
        text += (
            f" To add one, run this in the repository folder (`{Path(repo).resolve()}`):\n\n"
            f"    {command}\n\n"
            "(`max_utterances=20` for a quick look), then run this section again: it shows the newest "
            f"evaluation of this run below `{eval_dir}` (`VC_EVAL_DIR` names another folder)."
        )
    return "\n\n".join([text, *notes])
