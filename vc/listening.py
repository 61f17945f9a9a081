"""Listening tests: find converted samples, blinded MOS and A/B trials, ratings on disk, results with CIs.

What ``notebooks/listening_test.ipynb`` does, as functions that run without a browser:

- :func:`find_items` matches a folder of converted audio (``eval.py``'s ``converted/``, ``infer.py``'s
  output folder) with source, reference and ground-truth target files by utterance id (the file
  name without its extension); :func:`load_systems` does it for several systems at once.
- :func:`ab_pair` picks the A/B test's two systems (or says why there is no A/B test).
- :func:`mos_session` and :func:`ab_session` build one rater's trials in an order shuffled with a
  seed per rater, under opaque trial ids. Which system made each sample (and which side it is on in
  an A/B trial) is kept in the session's ``key``, saved apart from the ratings (:func:`save_key`).
- :class:`RatingStore` appends answers (rater, trial id, question, answer, time) to a CSV that
  names no system.
- :func:`mos_results` and :func:`ab_results` join the answers with the key: MOS means with 95 %
  confidence intervals per system and question, A/B preference with an exact (Clopper-Pearson)
  interval and a two-sided binomial test; :func:`mos_figure` and :func:`ab_figure` plot them.
- :func:`show_item`, :class:`RatingForm` and :func:`simulate_ratings` are the
  notebook's views, thin wrappers over the above. ipywidgets and IPython are imported on first use
  (the ``notebooks`` extra).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from vc import plots
from vc.audio import SAMPLE_RATE, find_audio_files, load_audio, wav_bytes
from vc.errors import ConfigError, DataError, path_hint
from vc.metrics import confidence_interval

QUESTIONS = {
    "naturalness": "How natural does the speech sound?  1 = very unnatural ... 5 = completely natural",
    "similarity": "Could it be the same speaker as the reference?  1 = surely different ... 5 = surely same",
    "preference": "Which sample sounds better (more natural, closer to the reference voice)?",
}
MOS_SCORES = (1, 2, 3, 4, 5)
# "none": no preference; such answers count as ties and stay out of the binomial test
AB_CHOICES = ("A", "B", "none")
RATING_FIELDS = ("rater", "trial_id", "question", "answer", "timestamp")
ROLES = ("source", "reference", "converted", "target")
_RATER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ---------------------------------------------------------------------------------------------
# Items: converted audio matched with source, reference and target by utterance id


@dataclass(frozen=True)
class Item:
    """One utterance: the converted audio and the other files found for the same utterance id."""

    utt_id: str
    converted: Path
    source: Path | None = None
    reference: Path | None = None
    target: Path | None = None

    def files(self) -> dict[str, Path]:
        """Role -> path of the files present, in the order source, reference, converted, target."""
        return {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}


def index_folder(folder: str | os.PathLike, name: str, optional: bool = False) -> dict[str, Path]:
    """Audio files below ``folder`` (recursive) by utterance id (file name without extension).

    ``name`` names the folder in errors; ``optional`` says there that it can be left out. Raises
    :class:`DataError` when the folder does not exist, holds no audio, or two files share an utterance id.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        blank = f", or leave it empty (the items then have no {name} file)" if optional else ""
        raise DataError(
            f"{name}={folder}: no such folder{path_hint(folder)}. Point {name} at a folder of audio files{blank}."
        )
    index: dict[str, Path] = {}
    for path in find_audio_files(folder):
        if path.stem in index:
            raise DataError(
                f"{name}={folder}: two files for utterance {path.stem!r} ({index[path.stem]} and {path}); "
                "utterances are matched by file name, so keep one."
            )
        index[path.stem] = path
    if not index:
        raise DataError(f"{name}={folder}: no audio files in this folder or below it.")
    return index


def find_items(
    converted: str | os.PathLike,
    source: str | os.PathLike | None = None,
    target: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    name: str = "converted",
) -> list[Item]:
    """Every converted file with its source, reference and target, sorted by utterance id.

    ``converted``, ``source`` and ``target`` are folders searched recursively; files are matched by
    utterance id (file name without extension). ``reference`` is one file (the same reference for
    every item) or a folder matched the same way. A role with no match is None in the item.
    ``name`` names the converted folder in errors (a system's name).
    """
    if reference and not Path(reference).expanduser().exists():
        raise DataError(
            f"reference={reference}: no such file or folder{path_hint(reference)}. Point reference at a file or "
            "a folder of audio files, or leave it empty (the target is used)."
        )
    found = index_folder(converted, name)
    sources = index_folder(source, "source", optional=True) if source else {}
    targets = index_folder(target, "target", optional=True) if target else {}
    single_ref = Path(reference).expanduser() if reference and Path(reference).is_file() else None
    references = (
        index_folder(reference, "reference", optional=True) if reference and single_ref is None else {}
    )
    return [
        Item(
            utt_id=utt,
            converted=path,
            source=sources.get(utt),
            reference=single_ref or references.get(utt),
            target=targets.get(utt),
        )
        for utt, path in sorted(found.items())
    ]


def load_systems(
    systems: Mapping[str, str | os.PathLike],
    source: str | os.PathLike | None = None,
    target: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    ground_truth: str | None = "ground truth",
) -> dict[str, list[Item]]:
    """System name -> its items (:func:`find_items` on each system's converted folder).

    With ``target`` and a ``ground_truth`` name, the natural target recordings join as one more
    system (the upper anchor of a MOS test) for the utterances the systems converted.
    """
    out = {name: find_items(folder, source, target, reference, name) for name, folder in systems.items()}
    if target and ground_truth:
        natural = {i.utt_id: i for items in out.values() for i in items if i.target is not None}
        out[ground_truth] = [
            Item(i.utt_id, i.target, i.source, i.reference, i.target) for _, i in sorted(natural.items())
        ]
    return out


def parse_systems(text: str, eval_root: str | os.PathLike | None = None) -> dict[str, str]:
    """``"name=folder,name2=folder2"`` (e.g. an environment variable) -> ``{name: folder}``.

    Empty ``text`` with an ``eval_root``: the ``converted/`` folder of the newest ``eval.py`` run below
    it, as one system named after that run. Raises :class:`ConfigError` for a part that is not
    ``name=folder`` or a name given twice, :class:`DataError` when there is nothing to rate.
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, folder = part.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ConfigError(
                f"systems: {part!r} is not name=folder; write e.g. 'finetuned=../outputs/eval/runs/<time>/converted'."
            )
        if name.strip() in out:
            raise ConfigError(f"systems: two systems named {name.strip()!r}; give each folder its own name.")
        out[name.strip()] = folder.strip()
    if out or eval_root is None:
        return out
    from vc.runlogs import eval_runs

    runs = [run for run in eval_runs(eval_root) if (run / "converted").is_dir()]
    if not runs:
        raise DataError(
            f"systems: none given, and no eval.py output with converted audio below {eval_root}"
            f"{path_hint(eval_root)}. Run `python eval.py ckpt=...` first, or set VC_SYSTEMS to "
            "name=folder pairs of converted audio, e.g. VC_SYSTEMS=finetuned=PATH1,pretrained=PATH2."
        )
    return {runs[0].name: str(runs[0] / "converted")}


@dataclass(frozen=True)
class ABPair:
    """The two systems of the A/B test (``names``; empty when there is no A/B test to run) and a line
    of markdown that says which two, or why there is none and what to set."""

    names: tuple[str, ...]
    note: str


def ab_pair(
    systems: Mapping[str, object], pair: str = "", ground_truth: str | None = "ground truth"
) -> ABPair:
    """Choose the A/B test's systems among ``systems`` (:func:`load_systems`).

    ``pair`` is ``"name1,name2"``; empty: the first two systems other than ``ground_truth``. With fewer
    than two systems, a name that is not one of them, or not exactly two different names, there is no
    A/B test and the note lists the systems there are (the MOS test does not need a pair).
    """
    there = ", ".join(f"`{name}`" for name in systems) or "none"
    names = tuple(filter(None, (n.strip() for n in pair.split(","))))
    if not names:
        names = tuple(name for name in systems if name != ground_truth)[:2]
        if len(names) < 2:
            one = f"there is one (`{names[0]}`)" if names else "there is none"
            return ABPair(
                (),
                f"The A/B test needs two systems and {one}, so it is left out; the MOS test rates what there "
                "is. To compare two, list both in VC_SYSTEMS, e.g. `VC_SYSTEMS=finetuned=PATH1,pretrained=PATH2`.",
            )
        return ABPair(names, f"A/B test: `{names[0]}` against `{names[1]}` (VC_AB_PAIR picks another pair).")
    unknown = [name for name in names if name not in systems]
    if unknown or len(set(names)) != 2 or len(names) != 2:
        why = f"no system {', '.join(map(repr, unknown))}" if unknown else "name two different systems"
        return ABPair(
            (),
            f"VC_AB_PAIR={pair}: {why}; the systems are {there}. The A/B test is left out: set VC_AB_PAIR "
            "to two of them, e.g. `VC_AB_PAIR=name1,name2`, or leave it empty for the first two.",
        )
    return ABPair(names, f"A/B test: `{names[0]}` against `{names[1]}`.")


def describe(systems: Mapping[str, Sequence[Item]]) -> str:
    """A markdown table: per system, how many items and how many of them have each role's file."""
    lines = ["| system | items | " + " | ".join(ROLES) + " |", "|---" * (len(ROLES) + 2) + "|"]
    for name, items in systems.items():
        counts = [sum(getattr(i, role) is not None for i in items) for role in ROLES]
        lines.append(f"| {name} | {len(items)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Sessions: blinded, shuffled trials and the key that unblinds them


@dataclass(frozen=True)
class Trial:
    """One screen as the rater sees it: an opaque id, the audio to play by label, the questions asked.

    Nothing here names a system: labels are ``sample`` and ``reference`` (MOS) or ``A``, ``B`` and
    ``reference`` (A/B). The files are only read to play them; the forms re-encode the audio, so
    neither a path nor a file's metadata reaches the rater.
    """

    trial_id: str
    test: str
    audio: dict[str, Path]
    questions: tuple[str, ...]


@dataclass
class Session:
    """One rater's trials in presentation order, and the ``key``: trial id -> system(s), utterance, files."""

    rater: str
    test: str
    trials: list[Trial]
    key: dict[str, dict] = field(repr=False)


def _check_rater(rater: str) -> None:
    if not _RATER_NAME.match(str(rater)):
        raise ConfigError(f"rater={rater!r}: use letters, digits, '_', '.' or '-' only (it names files).")


def _rng(seed: int, rater: str, test: str) -> random.Random:
    # str seeds are hashed with SHA-512, so the order is the same on every machine and run
    return random.Random(f"{seed}:{rater}:{test}")


def mos_session(
    systems: Mapping[str, Sequence[Item]],
    rater: str,
    seed: int = 0,
    questions: Sequence[str] = ("naturalness", "similarity"),
    max_per_system: int | None = None,
) -> Session:
    """A blinded MOS session: every (system, item) once, in an order shuffled for ``rater``.

    ``systems`` maps a name to its items (:func:`load_systems`). ``max_per_system`` keeps that many
    items per system, drawn for this rater. The similarity question plays the item's reference (its
    target when there is none) and is left out when that is the sample itself. Trial ids are
    ``<rater>-mos-<n>``; the same arguments give the same session.
    """
    _check_rater(rater)
    rng = _rng(seed, rater, "mos")
    pairs = []
    for name, items in systems.items():
        items = list(items)
        if max_per_system is not None and len(items) > max_per_system:
            items = rng.sample(items, max_per_system)
        pairs += [(name, item) for item in items]
    if not pairs:
        raise DataError("mos_session: no items to rate; check the systems' folders.")
    rng.shuffle(pairs)
    trials, key = [], {}
    for n, (name, item) in enumerate(pairs, 1):
        trial_id = f"{rater}-mos-{n:03d}"
        audio = {"sample": item.converted}
        asked = [q for q in questions if q == "naturalness"]
        reference = item.reference or item.target
        if "similarity" in questions and reference is not None and reference != item.converted:
            audio["reference"] = reference
            asked.append("similarity")
        trials.append(Trial(trial_id, "mos", audio, tuple(asked)))
        key[trial_id] = {
            "test": "mos",
            "system": name,
            "utt_id": item.utt_id,
            "audio": {label: str(p) for label, p in audio.items()},
        }
    return Session(rater, "mos", trials, key)


def ab_session(
    systems: Mapping[str, Sequence[Item]], rater: str, seed: int = 0, max_items: int | None = None
) -> Session:
    """A blinded A/B preference session between two systems on the utterances both converted.

    ``systems`` maps exactly two names to their items. Trials come in an order shuffled for
    ``rater`` (``max_items`` keeps that many utterances); each trial puts a random system on side A.
    The key records both sides and the pair in the order given. Trial ids are ``<rater>-ab-<n>``.
    """
    _check_rater(rater)
    if len(systems) != 2:
        raise ConfigError(f"ab_session: an A/B test compares exactly two systems, got {list(systems)}.")
    (name_1, items_1), (name_2, items_2) = systems.items()
    by_utt_2 = {i.utt_id: i for i in items_2}
    common = [(i, by_utt_2[i.utt_id]) for i in items_1 if i.utt_id in by_utt_2]
    if not common:
        raise DataError(f"ab_session: {name_1!r} and {name_2!r} share no utterance id; nothing to compare.")
    rng = _rng(seed, rater, "ab")
    rng.shuffle(common)
    if max_items is not None:
        common = common[:max_items]
    trials, key = [], {}
    for n, (item_1, item_2) in enumerate(common, 1):
        trial_id = f"{rater}-ab-{n:03d}"
        sides = [(name_1, item_1), (name_2, item_2)]
        if rng.random() < 0.5:
            sides.reverse()
        audio = {"A": sides[0][1].converted, "B": sides[1][1].converted}
        reference = item_1.reference or item_1.target
        if reference is not None:
            audio["reference"] = reference
        trials.append(Trial(trial_id, "ab", audio, ("preference",)))
        key[trial_id] = {
            "test": "ab",
            "A": sides[0][0],
            "B": sides[1][0],
            "pair": [name_1, name_2],
            "utt_id": item_1.utt_id,
            "audio": {label: str(p) for label, p in audio.items()},
        }
    return Session(rater, "ab", trials, key)


def reveal(key: Mapping[str, dict], trial_id: str, answer: str) -> str | None:
    """The system an A/B answer chose (None for no preference), or the system a MOS trial played."""
    entry = key[trial_id]
    if entry["test"] == "mos":
        return entry["system"]
    return None if answer == "none" else entry[answer]


def key_path(folder: str | os.PathLike, rater: str, test: str) -> Path:
    """Where a session's key lives: ``folder/key_<rater>_<test>.json``."""
    return Path(folder) / f"key_{rater}_{test}.json"


def ratings_path(folder: str | os.PathLike, rater: str) -> Path:
    """Where a rater's answers live: ``folder/ratings_<rater>.csv`` (one file per rater, one writer each)."""
    return Path(folder) / f"ratings_{rater}.csv"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_key(session: Session, folder: str | os.PathLike) -> Path:
    """Write the session's key to :func:`key_path` and return the path.

    Raises :class:`ConfigError` when a different key is already there: answers given under the old
    key would be unblinded with the wrong systems (the folders changed since the rater started).
    """
    path = key_path(folder, session.rater, session.test)
    if path.exists() and json.loads(path.read_text()) != session.key:
        raise ConfigError(
            f"{path}: a different {session.test} session of rater {session.rater!r} is already stored there "
            "(the systems' files changed?). Use a new rater id or a new ratings folder."
        )
    _write_atomic(path, json.dumps(session.key, indent=1).encode())
    return path


def load_key(folder: str | os.PathLike) -> dict[str, dict]:
    """All keys in ``folder`` (``key_*.json``) merged: trial id -> its key entry."""
    key: dict[str, dict] = {}
    for path in sorted(Path(folder).glob("key_*.json")):
        key.update(json.loads(path.read_text()))
    return key


# ---------------------------------------------------------------------------------------------
# Ratings on disk


class RatingStore:
    """Answers in a CSV with the columns of :data:`RATING_FIELDS`; no system is named in it.

    Each :meth:`add` rewrites the file through a temporary file and a rename, so a reader or a
    crash never sees half a row. One writer per file: give every rater their own
    (:func:`ratings_path`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def add(self, rater: str, trial_id: str, answers: Mapping[str, object]) -> None:
        """Append one row per ``question -> answer`` of a trial, all with the same UTC timestamp."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RATING_FIELDS, lineterminator="\n")
        old = self.path.read_bytes() if self.path.exists() else b""
        if not old:
            writer.writeheader()
        for question, answer in answers.items():
            writer.writerow(
                {
                    "rater": rater,
                    "trial_id": trial_id,
                    "question": question,
                    "answer": answer,
                    "timestamp": stamp,
                }
            )
        _write_atomic(self.path, old + buf.getvalue().encode())

    def rows(self) -> list[dict[str, str]]:
        """Every row in file order (empty when there is no file yet)."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def read_ratings(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    """Rows of ratings CSVs: a folder (its ``ratings_*.csv``), one file, or a list of files.

    When a rater answered the same question of a trial more than once, the last answer counts.
    """
    if isinstance(sources, (str, os.PathLike)):
        path = Path(sources)
        files = sorted(path.glob("ratings_*.csv")) if path.is_dir() else [path]
    else:
        files = [Path(p) for p in sources]
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for path in files:
        for row in RatingStore(path).rows():
            latest[(row["rater"], row["trial_id"], row["question"])] = row
    return list(latest.values())


def answered(session: Session, rows: Iterable[Mapping[str, str]]) -> set[str]:
    """Trial ids of ``session`` whose every question has an answer by the session's rater."""
    given = {(r["trial_id"], r["question"]) for r in rows if r["rater"] == session.rater}
    return {t.trial_id for t in session.trials if all((t.trial_id, q) in given for q in t.questions)}


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class MosResult:
    """Mean opinion score of one system on one question: ``n`` ratings, mean and CI bounds (1-5)."""

    system: str
    question: str
    n: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class ABResult:
    """A/B preference between ``systems`` (in the order the session was given them).

    ``wins`` counts answers for each system, ``ties`` the "no preference" answers. ``preference``
    is the share of decisive answers (wins, ties left out) for ``systems[0]``, with the exact
    Clopper-Pearson interval ``low``-``high`` and the two-sided binomial test's ``p_value`` against
    no preference (0.5). All NaN with no decisive answer.
    """

    systems: tuple[str, str]
    wins: tuple[int, int]
    ties: int
    preference: float
    low: float
    high: float
    p_value: float


def _key_entry(key: Mapping[str, dict], trial_id: str) -> dict:
    if trial_id not in key:
        raise DataError(
            f"trial {trial_id!r} has ratings but no key; load the key files (key_*.json) of the same sessions."
        )
    return key[trial_id]


def mos_results(
    rows: Iterable[Mapping[str, str]],
    key: Mapping[str, dict],
    order: Sequence[str] | None = None,
    level: float = 0.95,
) -> list[MosResult]:
    """MOS per system and question from ratings rows (:func:`read_ratings`) and the key.

    Every rating counts once; the interval is Student's t over them (``vc.metrics.confidence_interval``),
    which ignores that ratings of one rater or one utterance correlate. Systems come in ``order``
    (e.g. the notebook's ``list(systems)``), then any others by name; questions in the order of
    :data:`QUESTIONS`.
    """
    scores: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        entry = _key_entry(key, row["trial_id"])
        if entry["test"] == "mos":
            scores.setdefault((entry["system"], row["question"]), []).append(float(row["answer"]))
    rated = {system for system, _ in scores}
    systems = [s for s in order or () if s in rated] + sorted(rated - set(order or ()))
    out = []
    for system in systems:
        for question in QUESTIONS:
            values = scores.get((system, question))
            if values:
                mean, low, high = confidence_interval(values, level)
                out.append(MosResult(system, question, len(values), mean, low, high))
    return out


def ab_results(
    rows: Iterable[Mapping[str, str]], key: Mapping[str, dict], level: float = 0.95
) -> list[ABResult]:
    """A/B preference per system pair from ratings rows (:func:`read_ratings`) and the key."""
    from scipy.stats import binomtest

    counts: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        entry = _key_entry(key, row["trial_id"])
        if entry["test"] != "ab":
            continue
        pair = tuple(entry["pair"])
        tally = counts.setdefault(pair, [0, 0, 0])
        chosen = reveal(key, row["trial_id"], row["answer"])
        tally[2 if chosen is None else pair.index(chosen)] += 1
    out = []
    for pair, (wins_1, wins_2, ties) in counts.items():
        decisive = wins_1 + wins_2
        if decisive:
            test = binomtest(wins_1, decisive, 0.5)
            ci = test.proportion_ci(confidence_level=level, method="exact")
            stats = (wins_1 / decisive, float(ci.low), float(ci.high), float(test.pvalue))
        else:
            stats = (float("nan"),) * 4
        out.append(ABResult(pair, (wins_1, wins_2), ties, *stats))
    return out


def mos_table(results: Sequence[MosResult]) -> str:
    """A markdown table of MOS results: system, question, n, mean and the CI."""
    lines = ["| system | question | n | MOS | 95% CI |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.system} | {r.question} | {r.n} | {r.mean:.2f} | {r.low:.2f} - {r.high:.2f} |")
    return "\n".join(lines) if results else "No MOS ratings yet."


def ab_table(results: Sequence[ABResult]) -> str:
    """A markdown table of A/B results: answers per system, ties, preference for system 1 with CI, p-value."""
    lines = [
        "| system 1 | system 2 | prefer 1 | prefer 2 | no preference | 1 preferred (95% CI) | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.systems[0]} | {r.systems[1]} | {r.wins[0]} | {r.wins[1]} | {r.ties} | "
            f"{100 * r.preference:.0f}% ({100 * r.low:.0f}-{100 * r.high:.0f}%) | {r.p_value:.3g} |"
        )
    return "\n".join(lines) if results else "No A/B ratings yet."


def mos_figure(results: Sequence[MosResult], title: str = "MOS with 95% confidence intervals"):
    """Grouped bars: one group per system, one bar per question, CI error bars, on the 1-5 scale."""
    fig, ax = plots.plt.subplots(figsize=(6, 3.5))
    systems = list(dict.fromkeys(r.system for r in results))
    questions = list(dict.fromkeys(r.question for r in results))
    width = 0.8 / max(len(questions), 1)
    for q_index, question in enumerate(questions):
        rows = {r.system: r for r in results if r.question == question}
        x = [
            s_index + (q_index - (len(questions) - 1) / 2) * width
            for s_index, s in enumerate(systems)
            if s in rows
        ]
        means = [rows[s].mean for s in systems if s in rows]
        # a single rating has no interval: no error bar rather than a NaN one
        errors = np.nan_to_num(
            [
                [rows[s].mean - rows[s].low for s in systems if s in rows],
                [rows[s].high - rows[s].mean for s in systems if s in rows],
            ]
        )
        ax.bar(x, means, width, yerr=errors, capsize=4, label=question)
    ax.set_xticks(range(len(systems)), systems)
    ax.set_ylim(1, 5)
    ax.set_ylabel("MOS (1-5)")
    ax.grid(axis="y", alpha=0.3)
    if results:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ratings yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def ab_figure(results: Sequence[ABResult], title: str = "A/B preference"):
    """One stacked horizontal bar per pair: % of answers for each system and for no preference,
    annotated with the preference among decisive answers, its CI and the binomial test's p."""
    fig, ax = plots.plt.subplots(figsize=(7, 1.4 + 0.7 * max(len(results), 1)))
    for y, r in enumerate(results):
        total = sum(r.wins) + r.ties
        shares = [100 * r.wins[0] / total, 100 * r.ties / total, 100 * r.wins[1] / total]
        left = 0.0
        for share, colour, label in zip(
            shares, ("tab:blue", "lightgrey", "tab:orange"), (r.systems[0], "no preference", r.systems[1])
        ):
            ax.barh(y, share, left=left, color=colour, label=label if y == 0 else None)
            if share >= 12:
                ax.text(left + share / 2, y, f"{share:.0f}%", ha="center", va="center", fontsize=8)
            left += share
        ax.text(
            101,
            y,
            f"{r.systems[0]} preferred {100 * r.preference:.0f}% "
            f"[{100 * r.low:.0f}, {100 * r.high:.0f}]\np = {r.p_value:.3g}",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(results)), [f"{r.systems[0]} vs {r.systems[1]}" for r in results])
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of answers")
    if results:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no ratings yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, pad=24)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Notebook views


def show_figure(fig) -> None:
    """Display a matplotlib figure in a notebook as a PNG and close it.

    ``vc.plots`` selects the Agg backend, which leaves a bare figure with no inline picture.
    """
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plots.plt.close(fig)
    display(Image(buf.getvalue()))


def audio_html(path: str | os.PathLike, label: str = "") -> str:
    """An HTML ``<audio>`` player with the file's audio embedded (mono 16 kHz WAV), under a label."""
    from IPython.display import Audio

    # float files may overshoot [-1, 1], which Audio refuses without normalising (normalising changes loudness)
    wav = np.clip(load_audio(path, SAMPLE_RATE, check=False), -1.0, 1.0)
    player = Audio(wav, rate=SAMPLE_RATE, normalize=False)._repr_html_()
    return f"<div><b>{label}</b><br>{player}</div>" if label else player


def image_html(path: str | os.PathLike, width: int = 360) -> str:
    """An HTML ``<img>`` with the PNG embedded (so the notebook shows it wherever it is opened)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{width}">'


@lru_cache(maxsize=1)
def _feature_extractor():
    from transformers import SpeechT5FeatureExtractor

    # its defaults are the project's audio settings (conf/audio/speecht5.yaml)
    return SpeechT5FeatureExtractor()


def log_mel(path: str | os.PathLike) -> np.ndarray:
    """An audio file -> its (frames, 80) log10-mel, the features the model predicts."""
    from vc.data.features import log_mel as extract

    return extract(_feature_extractor(), load_audio(path, SAMPLE_RATE, check=False), SAMPLE_RATE)


def item_figure(item: Item):
    """The item's mel spectrograms side by side (source, reference, converted, target) on one colour scale."""
    return plots.mel_figure({role: log_mel(path) for role, path in item.files().items()}, title=item.utt_id)


def show_item(item: Item) -> None:
    """Display an item: its audio players in a row, then :func:`item_figure` (not blinded: for browsing)."""
    from IPython.display import HTML, display

    players = "".join(
        f'<td style="padding-right:1em">{audio_html(path, role)}</td>' for role, path in item.files().items()
    )
    display(HTML(f"<h4>{item.utt_id}</h4><table><tr>{players}</tr></table>"))
    show_figure(item_figure(item))


def answer_options(question: str) -> list[tuple[str, object]]:
    """(button label, stored answer) pairs of a question: 1-5 for MOS, A / B / no preference for A/B."""
    if question == "preference":
        return [("no preference" if choice == "none" else choice, choice) for choice in AB_CHOICES]
    return [(str(score), score) for score in MOS_SCORES]


class RatingForm:
    """A widget form that walks a rater through a session's unanswered trials, one at a time.

    ``widget`` is what the notebook displays: trial counter, audio players (labels only, audio
    re-encoded), one row of toggle buttons per question and a "save and next" button. Saving writes
    the answers to ``store`` and moves on; a session restarted with the same arguments continues at
    the first unanswered trial. :meth:`choose` and :meth:`save` do what clicks do, for scripts.
    """

    def __init__(self, session: Session, store: RatingStore):
        import ipywidgets as widgets

        self.session, self.store = session, store
        self._widgets = widgets
        done = answered(session, store.rows())
        self.pending = [t for t in session.trials if t.trial_id not in done]
        self.header = widgets.HTML()
        self.players = widgets.HBox()
        self.questions = widgets.VBox()
        self.status = widgets.Label()
        self.save_button = widgets.Button(description="save and next", button_style="primary", icon="check")
        self.save_button.on_click(lambda _: self.save())
        self.buttons: dict[str, object] = {}
        self.widget = widgets.VBox([self.header, self.players, self.questions, self.save_button, self.status])
        self._render()

    @property
    def current(self) -> Trial | None:
        """The trial on screen, None when every trial is answered."""
        return self.pending[0] if self.pending else None

    def _render(self) -> None:
        w = self._widgets
        trial = self.current
        total = len(self.session.trials)
        if trial is None:
            self.header.value = f"<h4>All {total} trials answered. Thank you!</h4>"
            self.players.children, self.questions.children = (), ()
            self.save_button.disabled = True
            return
        position = total - len(self.pending) + 1
        self.header.value = f"<h4>Trial {position} of {total}</h4>"
        self.players.children = [
            w.VBox(
                [
                    w.Label(label),
                    w.Audio(
                        value=wav_bytes(load_audio(path, SAMPLE_RATE, check=False)),
                        format="wav",
                        autoplay=False,
                        loop=False,
                    ),
                ]
            )
            for label, path in trial.audio.items()
        ]
        self.buttons = {
            q: w.ToggleButtons(options=answer_options(q), value=None, style={"button_width": "6em"})
            for q in trial.questions
        }
        self.questions.children = [w.VBox([w.Label(QUESTIONS[q]), b]) for q, b in self.buttons.items()]
        self.status.value = ""

    def choose(self, **answers) -> None:
        """Select answers as a click would: ``naturalness=4, similarity=3`` or ``preference="A"``."""
        for question, answer in answers.items():
            self.buttons[question].value = answer

    def save(self) -> bool:
        """Store the selected answers and show the next trial; False (and a hint) if one is missing."""
        trial = self.current
        if trial is None:
            return False
        answers = {q: b.value for q, b in self.buttons.items()}
        missing = [q for q, a in answers.items() if a is None]
        if missing:
            self.status.value = f"Please answer: {', '.join(missing)}."
            return False
        self.store.add(self.session.rater, trial.trial_id, answers)
        self.pending.pop(0)
        self._render()
        return True


def simulate_ratings(form: RatingForm, seed: int = 0) -> int:
    """Answer every pending trial of ``form`` at random through its buttons (tests, demos); returns how many.

    Uses the same path as a rater's clicks, so the stored rows are what a real session writes.
    """
    rng = random.Random(seed)
    count = 0
    while form.current is not None:
        form.choose(**{q: rng.choice([v for _, v in answer_options(q)]) for q in form.current.questions})
        form.save_button.click()
        count += 1
    return count
