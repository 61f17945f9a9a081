"""run(cfg): convert a split of a parallel corpus, score every utterance, write a report.

    python eval.py ckpt=BUNDLE data=arctic data.src_spk=bdl data.tgt_spk=slt
    python eval.py ckpt=BUNDLE data.split.scheme=paper      # SpeechT5's ARCTIC test set (the last 100 ids)
    python eval.py ckpt=BUNDLE data=manifest data.corpus.path=pairs.csv

Each utterance of the split is scored against the target speaker's recording of the same sentence
as three systems:

- ``converted``: the model's output;
- ``source`` (the floor): the unconverted source, what doing nothing scores;
- ``target`` (the ceiling): the target recordings themselves, where a metric allows it: SECS
  against another recording of the target speaker, CER/WER and DNSMOS of the recording. MCD and
  F0 of the target against itself are 0 by definition, so they are n/a.

Writes under ``paths.output_dir``: ``utterances.csv`` (one row per utterance and system: every
metric and, per metric, why it is NaN), ``summary.json`` (per pair, system and metric: mean, 95%
confidence interval, n, n_nan; the settings, backends and their versions, the split),
``table.md`` (the SpeechT5 paper's VC table, pair x system with MCD and WER, extended with CER,
SECS, F0 and DNSMOS), ``plots/metrics.png`` (distributions per system), ``plots/mel_best.png`` and
``plots/mel_worst.png`` (source / target / converted mels of the utterances with the lowest and
highest MCD) and ``converted/<utt_id>.wav`` (16 kHz).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vc import metrics as M
from vc import plots
from vc.audio import SAMPLE_RATE, load_audio, write_wav
from vc.data.corpus import Pair
from vc.data.splits import split_pairs
from vc.errors import AudioError, ConfigError, DataError
from vc.infer import load_converter
from vc.settings import METRIC_GROUPS, check

log = logging.getLogger(__name__)

# pretrained: data=voice only (vc.evaluate_voice), the model the bundle was fine-tuned from
SYSTEMS = ("source", "pretrained", "converted", "target")
SYSTEM_LABELS = {
    "source": "source (floor)",
    "pretrained": "pretrained (no fine-tune)",
    "converted": "converted",
    "target": "target (ceiling)",
}
# CSV metric columns, each with the metrics.run entry that computes it
COLUMNS = {
    "mcd": "mcd",
    "f0_rmse_hz": "f0",
    "f0_rmse_cent": "f0",
    "f0_corr": "f0",
    "vuv_error": "f0",
    "duration_ratio": "f0",
    "secs": "secs",
    "cer": "asr",
    "wer": "asr",
    "dnsmos_ovrl": "dnsmos",
    "dnsmos_sig": "dnsmos",
    "dnsmos_bak": "dnsmos",
    "dnsmos_p808": "dnsmos",
}
# table.md columns: header (the arrow says which way is better), CSV column, scale, decimals
TABLE = (
    ("MCD (dB) ↓", "mcd", 1, 2),
    ("WER (%) ↓", "wer", 100, 1),
    ("CER (%) ↓", "cer", 100, 1),
    ("SECS ↑", "secs", 1, 3),
    ("F0 RMSE (Hz) ↓", "f0_rmse_hz", 1, 1),
    ("F0 corr ↑", "f0_corr", 1, 3),
    ("DNSMOS OVRL ↑", "dnsmos_ovrl", 1, 2),
)
SELF_COMPARISON = "n/a: the target recording against itself is 0 by definition"


@dataclass
class Utterance:
    """One scored pair: its audio as (T,) float32 at 16 kHz, and the conversion once it is done.

    ``other`` is another recording of the target speaker (the ceiling's SECS), None if there is none.
    ``pretrained`` is the conversion by the model without fine-tune (data=voice only).
    """

    pair: Pair
    label: str
    src: np.ndarray
    tgt: np.ndarray
    other: np.ndarray | None = None
    converted: np.ndarray | None = None
    pretrained: np.ndarray | None = None
    stop_reasons: dict[str, str] = field(default_factory=dict)

    def audio(self, system: str) -> np.ndarray:
        """The audio a system is scored on: a conversion, the source or the target recording."""
        return {
            "converted": self.converted,
            "pretrained": self.pretrained,
            "source": self.src,
            "target": self.tgt,
        }[system]


# ---------------------------------------------------------------------------------------------
# Configuration and data


def _groups(cfg: DictConfig) -> tuple[str, ...]:
    """The settings checked before any work (:func:`vc.settings.check`) -> the metric groups of
    ``metrics.run``, in :data:`~vc.settings.METRIC_GROUPS` order."""
    check(cfg, "eval")
    return tuple(g for g in METRIC_GROUPS if g in cfg.metrics.run)


def _systems(cfg: DictConfig, references: Sequence[str] = ("source", "target")) -> list[str]:
    """``converted`` and those of ``references`` that ``cfg.references`` asks for, in table order."""
    return [s for s in SYSTEMS if s == "converted" or (s in references and cfg.references.get(s))]


def _label(pair: Pair, src_name: str, tgt_name: str) -> str:
    """The table's pair name, e.g. ``bdl->slt``."""
    return f"{pair.src_spk or src_name}->{pair.tgt_spk or tgt_name}"


def select_pairs(cfg: DictConfig, pairs: Sequence[Pair], corpus_name: str):
    """Split ``pairs`` with ``cfg.data.split`` -> ``(Splits, the pairs of cfg.split, at most max_utterances)``.

    An empty split is a :class:`DataError` that says how to get one.
    """
    settings = OmegaConf.to_container(cfg.data.split, resolve=True)
    splits = split_pairs(pairs, **settings)
    chosen = getattr(splits, cfg.split)
    if not chosen:
        fix = {
            "test": "Set data.split.test_ratio (e.g. 0.1, with the seed and val_ratio of the training run) "
            "or data.split.scheme=paper (SpeechT5's ARCTIC split: the last 100 ids are the test set).",
            "val": "Set data.split.val_ratio above 0 (the training run's, for its validation pairs), or score "
            "split=test.",
            "train": "Lower data.split.val_ratio and data.split.test_ratio, or score split=test.",
        }[cfg.split]
        raise DataError(
            f"The {cfg.split} split of {corpus_name} is empty ({len(pairs)} pairs, data.split: "
            + ", ".join(f"{k}={v}" for k, v in settings.items())
            + f"). {fix}"
        )
    if cfg.max_utterances is not None:
        chosen = chosen[: int(cfg.max_utterances)]
    return splits, chosen


def training_overlap(
    ckpt: str, cfg: DictConfig, pairs: Sequence[Pair], scored: Sequence[Pair]
) -> dict | None:
    """How many ``scored`` pairs the bundle ``ckpt`` was trained or validated on, or None if that cannot be told.

    A bundle records its training config; when that trained the same speaker pair, its split is
    recomputed on ``pairs`` and compared by utterance id. Returns ``{"train", "val", "scored",
    "train_split"}``: training pairs make the scores optimistic (a warning); validation pairs only
    chose the checkpoint, so they bias the scores a little (logged).
    """
    from vc.model.bundle import is_bundle, read_settings

    path = Path(str(ckpt)).expanduser()
    if not is_bundle(path):
        return None
    train_data = (read_settings(path).get("train_config") or {}).get("data") or {}
    same_pair = (train_data.get("src_spk"), train_data.get("tgt_spk")) == (
        cfg.data.get("src_spk"),
        cfg.data.get("tgt_spk"),
    )
    if not train_data.get("split") or not same_pair:
        return None
    train_split = dict(train_data["split"])
    used = split_pairs(pairs, **train_split)
    trained, validated = {p.utt_id for p in used.train}, {p.utt_id for p in used.val}
    overlap = {
        "train": sum(p.utt_id in trained for p in scored),
        "val": sum(p.utt_id in validated for p in scored),
        "scored": len(scored),
        "train_split": train_split,
    }
    if overlap["train"]:
        log.warning(
            "%d of the %d scored utterances were training pairs of %s (its data.split: %s): the scores are "
            "optimistic. Score its held-out pairs (its data.split with data.split.test_ratio above 0 and "
            "the same seed) or retrain with data.split.test_ratio=0.1 or data.split.scheme=paper.",
            overlap["train"],
            len(scored),
            path,
            train_split,
        )
    if overlap["val"]:
        log.info(
            "%d of the %d scored utterances were validation pairs of %s (they chose its checkpoint)",
            overlap["val"],
            len(scored),
            path,
        )
    return overlap


def load_utterances(
    chosen: Sequence[Pair], all_pairs: Sequence[Pair], labels: dict[str, str], need_other: bool
) -> tuple[list[Utterance], dict[str, str]]:
    """Read the audio of ``chosen`` -> ``(utterances, {utt_id: reason})`` for pairs that cannot be used.

    With ``need_other``, each utterance also gets the target speaker's next recording by id (cyclic)
    among ``all_pairs``, for the ceiling's SECS.
    """
    by_spk: dict[str, list[Pair]] = {}
    for p in sorted(all_pairs, key=lambda p: p.utt_id):
        by_spk.setdefault(p.tgt_spk, []).append(p)
    utts, failed = [], {}
    for pair in chosen:
        try:
            src = load_audio(pair.src_path, SAMPLE_RATE, min_seconds=M.MIN_SECONDS)
            tgt = load_audio(pair.tgt_path, SAMPLE_RATE, min_seconds=M.MIN_SECONDS)
        except AudioError as err:
            log.error("%s left out: %s", pair.utt_id, err)
            failed[pair.utt_id] = str(err)
            continue
        utt = Utterance(pair, labels[pair.utt_id], src, tgt)
        others = [p for p in by_spk[pair.tgt_spk] if p.tgt_path != pair.tgt_path]
        if need_other and others:
            after = [p for p in others if p.utt_id > pair.utt_id]
            other = (after or others)[0]
            try:
                utt.other = load_audio(other.tgt_path, SAMPLE_RATE)
            except AudioError as err:
                log.warning("%s: no second target recording for the ceiling's SECS: %s", pair.utt_id, err)
        utts.append(utt)
    return utts, failed


# ---------------------------------------------------------------------------------------------
# Conversion


def convert(
    cfg: DictConfig,
    converter,
    utts: list[Utterance],
    train: Sequence[Pair],
    out_dir: Path,
    system: str = "converted",
) -> dict:
    """Convert every utterance (batches of ``converter.batch_size``) and write ``out_dir/<utt_id>.wav``;
    the result is the utterance's ``system`` audio (converted, or pretrained).

    The target voice follows ``cfg.speaker`` (see conf/eval.yaml). Returns audio and wall seconds,
    the real-time factor and how many outputs ran to the length limit.
    """
    groups: dict[str, list[Utterance]] = {}
    for utt in utts:
        # average: one x-vector per target speaker, so batches stay within a speaker
        groups.setdefault(utt.pair.tgt_spk if cfg.speaker == "average" else "", []).append(utt)
    start, audio_seconds, runaway = time.perf_counter(), 0.0, 0
    progress = {"total": len(utts), "unit": "utt", "desc": f"converting ({system})", "disable": None}
    with logging_redirect_tqdm(), tqdm(**progress) as bar:
        for spk, members in groups.items():
            if cfg.speaker == "average":
                clips = [str(p.ref_path or p.tgt_path) for p in train if p.tgt_spk == spk]
                if not clips:
                    raise ConfigError(
                        f"speaker=average: the training split has no utterances of target speaker '{spk}' to "
                        "average. Use speaker=utterance or speaker=default."
                    )
                condition = {"speaker": converter.speaker_embedding(clips)}
            elif cfg.speaker == "default":
                condition = {"speaker": converter.speaker_embedding(None)}
            for b in range(0, len(members), converter.batch_size):
                batch = members[b : b + converter.batch_size]
                if cfg.speaker == "utterance":
                    condition = {"refs": [str(u.pair.ref_path or u.pair.tgt_path) for u in batch]}
                results = converter.convert_many(
                    [u.src for u in batch], names=[u.pair.utt_id for u in batch], **condition
                )
                for utt, result in zip(batch, results, strict=True):
                    setattr(utt, system, result.wav)
                    utt.stop_reasons[system] = result.meta["stop_reason"]
                    write_wav(out_dir / f"{utt.pair.utt_id}.wav", result.wav, result.sample_rate)
                    audio_seconds += result.meta["src_seconds"]
                    runaway += result.meta["stop_reason"] == "max_length"
                bar.update(len(batch))
    wall = time.perf_counter() - start
    return {
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "rtf": wall / max(audio_seconds, 1e-9),
        "ran_to_length_limit": runaway,
    }


# ---------------------------------------------------------------------------------------------
# Scoring


def world_scores(
    jobs: Sequence[tuple[np.ndarray, np.ndarray]], f0_range: tuple[float, float], num_workers: int
) -> list[dict[str, M.Score]]:
    """:func:`vc.metrics.mcd_f0` of each ``(ref, hyp)`` (16 kHz arrays), in ``num_workers`` processes (0: here).

    Workers are spawned, not forked: a fork of a process running torch threads can deadlock. Spawned
    workers import the calling script again, so a script that calls this with workers needs the
    ``if __name__ == "__main__":`` guard (eval.py has it).
    """
    fn = partial(M.mcd_f0, f0_range=f0_range)
    progress = {"total": len(jobs), "unit": "pair", "desc": "MCD / F0 (WORLD)", "disable": None}
    if num_workers < 1:
        return [fn(ref, hyp) for ref, hyp in tqdm(jobs, **progress)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(num_workers, mp_context=context) as pool:
        return list(tqdm(pool.map(fn, *zip(*jobs, strict=True)), **progress))


class Scorers:
    """The model-based metrics of ``metrics`` (conf/eval.yaml), loaded once, run on demand."""

    def __init__(self, metrics: DictConfig, groups: Sequence[str]):
        self.groups = groups
        self.secs = (
            M.SpeakerSimilarity(metrics.secs.backend, metrics.secs.source, device=metrics.device)
            if "secs" in groups
            else None
        )
        self.asr = (
            M.Transcriber(metrics.asr.backend, metrics.asr.model, device=metrics.device)
            if "asr" in groups
            else None
        )

    def score(self, hyp: np.ndarray, speaker_ref: np.ndarray | None, text: str) -> dict:
        """SECS of ``hyp`` against ``speaker_ref`` (NaN when that is None: the target speaker has no
        second recording), CER/WER of ``hyp``'s transcript against ``text``, DNSMOS of ``hyp``; all
        (T,) arrays at 16 kHz. Returns ``{column: Score, "transcript": str}``."""
        out: dict = {}
        if self.secs is not None:
            out["secs"] = (
                self.secs.score(hyp, speaker_ref)
                if speaker_ref is not None
                else M.Score(math.nan, "the target speaker has no other recording to compare with")
            )
        if self.asr is not None:
            out.update(self._error_rates(hyp, text))
        if "dnsmos" in self.groups:
            out.update({f"dnsmos_{k}": v for k, v in M.dnsmos(hyp).items()})
        return out

    def _error_rates(self, hyp: np.ndarray, text: str) -> dict:
        if not text.strip():
            reason = "no text for this pair (txt.done.data or the manifest's text column)"
            return {"cer": M.Score(math.nan, reason), "wer": M.Score(math.nan, reason), "transcript": ""}
        try:
            transcript = self.asr.transcribe(hyp)
        except AudioError as err:
            reason = f"ASR: {err}"
            return {"cer": M.Score(math.nan, reason), "wer": M.Score(math.nan, reason), "transcript": ""}
        return {"cer": M.cer(text, transcript), "wer": M.wer(text, transcript), "transcript": transcript}


def score_utterances(
    cfg: DictConfig,
    utts: list[Utterance],
    groups: Sequence[str],
    systems: Sequence[str] | None = None,
    scorers: Scorers | None = None,
) -> list[dict]:
    """Rows ``{utt_id, pair, system, text, transcript, seconds, stop_reason, <metric>: Score}`` for
    each utterance and system (default: converted, and the references cfg.references asks for);
    ``scorers``: already loaded ones (default: loaded here)."""
    systems = systems or _systems(cfg)
    world_systems = [s for s in systems if s != "target"]
    world: dict[tuple[str, str], dict] = {}
    if {"mcd", "f0"} & set(groups):
        keys = [(u.pair.utt_id, s) for u in utts for s in world_systems]
        jobs = [(u.tgt, u.audio(s)) for u in utts for s in world_systems]
        f0_range = tuple(float(x) for x in cfg.metrics.f0_range)
        world = dict(zip(keys, world_scores(jobs, f0_range, int(cfg.metrics.num_workers)), strict=True))
    scorers = scorers or Scorers(cfg.metrics, groups)
    rows = []
    for utt in tqdm(utts, unit="utt", desc="SECS / ASR / DNSMOS", disable=None):
        for system in systems:
            row = {
                "utt_id": utt.pair.utt_id,
                "pair": utt.label,
                "system": system,
                "text": utt.pair.text,
                "transcript": "",
                "seconds": len(utt.audio(system)) / SAMPLE_RATE,
                "stop_reason": utt.stop_reasons.get(system, ""),
            }
            if system == "target":
                row.update(
                    {k: M.Score(math.nan, SELF_COMPARISON) for k, g in COLUMNS.items() if g in ("mcd", "f0")}
                )
                row.update(scorers.score(utt.tgt, utt.other, utt.pair.text))
            else:
                row.update(world.get((utt.pair.utt_id, system), {}))
                row.update(scorers.score(utt.audio(system), utt.tgt, utt.pair.text))
            rows.append({k: v for k, v in row.items() if k not in COLUMNS or COLUMNS[k] in groups})
    return rows


def failed_rows(
    failed: dict[str, str], pairs: Sequence[Pair], labels: dict[str, str], systems: Sequence[str], columns
) -> list[dict]:
    """Rows for the ``failed`` pairs (``{utt_id: reason}``): every metric in ``columns`` NaN with the reason."""
    texts = {p.utt_id: p.text for p in pairs}
    return [
        {
            "utt_id": utt_id,
            "pair": labels[utt_id],
            "system": system,
            "text": texts[utt_id],
            "transcript": "",
            "seconds": math.nan,
            "stop_reason": "",
            **{k: M.Score(math.nan, reason) for k in columns},
        }
        for utt_id, reason in failed.items()
        for system in systems
    ]


# ---------------------------------------------------------------------------------------------
# Statistics and outputs


def _number(value: float) -> float | None:
    """NaN -> None, so summary.json stays strict JSON."""
    return None if value is None or not math.isfinite(value) else float(value)


def statistics(rows: list[dict], columns: Sequence[str]) -> dict:
    """``{pair: {system: {column: {mean, ci_low, ci_high, n, n_nan[, nan_reasons]}}}}`` from score rows.

    The interval is the two-sided 95% Student-t interval of the mean; ``n`` counts finite values,
    ``nan_reasons`` the most common reasons of the others.
    """
    out: dict = {}
    for row in rows:
        out.setdefault(row["pair"], {}).setdefault(row["system"], []).append(row)
    stats: dict = {}
    for pair, systems in out.items():
        for system, members in systems.items():
            for column in columns:
                values = [float(r[column]) for r in members]
                mean, low, high = M.confidence_interval(values)
                finite = sum(math.isfinite(v) for v in values)
                entry = {
                    "mean": _number(mean),
                    "ci_low": _number(low),
                    "ci_high": _number(high),
                    "n": finite,
                    "n_nan": len(values) - finite,
                }
                reasons = Counter(
                    getattr(r[column], "reason", None) for r in members if not math.isfinite(r[column])
                )
                if reasons:
                    entry["nan_reasons"] = dict(reasons.most_common(5))
                stats.setdefault(pair, {}).setdefault(system, {})[column] = entry
    return stats


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    """One line per row; each metric followed by ``<metric>_reason`` (empty when the value is valid)."""
    fields = ["utt_id", "pair", "system", "text", "transcript", "seconds", "stop_reason"]
    fields += [name for column in columns for name in (column, f"{column}_reason")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            line = {k: row[k] for k in fields[:7]}
            line["seconds"] = f"{row['seconds']:.3f}"
            for column in columns:
                line[column] = f"{float(row[column]):.6g}"
                line[f"{column}_reason"] = getattr(row[column], "reason", None) or ""
            writer.writerow(line)


def _cell(entry: dict, scale: float, decimals: int) -> str:
    if entry["n"] == 0:
        return "n/a"
    mean = entry["mean"] * scale
    if entry["ci_high"] is None:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {(entry['ci_high'] - entry['mean']) * scale:.{decimals}f}"


def markdown_table(stats: dict, columns: Sequence[str], notes: Sequence[str]) -> str:
    """The SpeechT5 paper's VC table (pair, MCD, WER) with CER, SECS, F0 and DNSMOS: one row per pair
    and system, cells ``mean ± 95% CI half-width``, ``n/a`` where no value exists; ``notes`` below it."""
    shown = [c for c in TABLE if c[1] in columns]
    lines = [
        "| Pair | System | " + " | ".join(c[0] for c in shown) + " |",
        "|---|---|" + "---:|" * len(shown),
    ]
    for pair in sorted(stats):
        for system in SYSTEMS:
            if system in stats[pair]:
                cells = [_cell(stats[pair][system][c[1]], c[2], c[3]) for c in shown]
                lines.append(f"| {pair} | {SYSTEM_LABELS[system]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"{note}  " for note in notes).rstrip() + "\n"


def distributions_figure(rows: list[dict], columns: Sequence[str]):
    """One box plot per table metric: its values per system (dots: the utterances; triangle: the mean)."""
    shown = [c for c in TABLE if c[1] in columns]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plots.plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (header, column, scale, _) in zip(axes.flat, shown):
        data, names = [], []
        for system in SYSTEMS:
            values = [float(r[column]) * scale for r in rows if r["system"] == system]
            values = [v for v in values if math.isfinite(v)]
            if values:
                data.append(values)
                names.append(system)
        if data:
            ax.boxplot(data, showmeans=True)
            for k, values in enumerate(data, 1):
                ax.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.5, color="k")
            ax.set_xticks(range(1, len(names) + 1), names)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(header)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def mel_pictures(utts: list[Utterance], rows: list[dict], audio: DictConfig, out_dir: Path) -> dict[str, str]:
    """``out_dir/mel_best.png`` and ``mel_worst.png``: source / target / converted log-mels of the
    utterances with the lowest and highest converted MCD. Returns ``{"best": utt_id, "worst": utt_id}``
    ({} when no converted utterance has an MCD)."""
    from vc.data.features import log_mel, make_feature_extractor

    mcd = {r["utt_id"]: float(r["mcd"]) for r in rows if r["system"] == "converted" and "mcd" in r}
    ranked = sorted((v, u) for u, v in mcd.items() if math.isfinite(v))
    if not ranked:
        log.warning("no converted utterance has an MCD: no best and worst mel pictures")
        return {}
    extractor = make_feature_extractor(audio)
    by_id = {u.pair.utt_id: u for u in utts}
    hop = int(audio.hop_length) / int(audio.sample_rate)
    chosen = {"best": ranked[0], "worst": ranked[-1]}
    for name, (value, utt_id) in chosen.items():
        utt = by_id[utt_id]
        mels = {
            k: log_mel(extractor, wav, SAMPLE_RATE)
            for k, wav in (("source", utt.src), ("target", utt.tgt), ("converted", utt.converted))
        }
        fig = plots.mel_figure(
            mels, title=f"{name} by MCD: {utt_id} ({utt.label}), {value:.2f} dB", hop_seconds=hop
        )
        plots.save(fig, out_dir / f"mel_{name}.png")
    return {name: utt_id for name, (_, utt_id) in chosen.items()}


def _settings(cfg: DictConfig, groups: Sequence[str]) -> dict:
    """What each metric that ran used, with the versions of its packages."""
    versions = M.backend_versions()
    out = {}
    if {"mcd", "f0"} & set(groups):
        mcd = {**M.MCD_SETTINGS, "f0_range_hz": [float(x) for x in cfg.metrics.f0_range]}
        out["mcd_f0"] = {**mcd, "packages": {k: versions[k] for k in ("pyworld", "pysptk")}}
    if "secs" in groups:
        package = {"resemblyzer": "Resemblyzer", "speechbrain": "speechbrain"}[cfg.metrics.secs.backend]
        out["secs"] = {
            "backend": cfg.metrics.secs.backend,
            "source": cfg.metrics.secs.source,
            "compared_with": "the target's recording of the same sentence (ceiling: another target recording)",
            "packages": {package: versions[package]},
        }
    if "asr" in groups:
        package = "pocketsphinx" if cfg.metrics.asr.backend == "pocketsphinx" else "transformers"
        out["asr"] = {
            "backend": cfg.metrics.asr.backend,
            "model": cfg.metrics.asr.model or M.Transcriber.DEFAULT_MODELS.get(cfg.metrics.asr.backend),
            "text_normalisation": "vc.metrics.normalize_text: lower case, punctuation removed",
            "packages": {package: versions[package], "jiwer": versions["jiwer"]},
        }
    if "dnsmos" in groups:
        out["dnsmos"] = {
            "model": "DNSMOS P.835 (sig, bak, ovrl) and P.808, ONNX models of speechmos; clips tiled to 9 s",
            "packages": {k: versions[k] for k in ("speechmos", "onnxruntime")},
        }
    return out


def table_notes(split: str, n_scored: int, settings: dict) -> list[str]:
    """The lines under the table: what the cells are, and each metric's settings (from ``summary.json``'s
    ``settings``); the model card of a pushed bundle (:mod:`vc.hub`) reuses them."""
    notes = [
        f"Mean ± 95% confidence interval (Student's t) over {n_scored} {split} utterance(s); "
        "↓ lower is better, ↑ higher is better. Floor: the unconverted source; ceiling: the target recordings. "
        "n/a: no valid value (the ceiling's MCD and F0 are 0 by definition; other reasons: nan_reasons in "
        "summary.json)."
    ]
    if "mcd_f0" in settings:
        s = settings["mcd_f0"]
        notes.append(
            f"MCD: WORLD + SPTK mel-cepstrum c1-c{s['mcep_order']} (alpha {s['mcep_alpha']}, no c0), "
            f"{s['frame_shift_ms']:g} ms frames, DTW, against the target recording. F0: harvest "
            f"{s['f0_range_hz'][0]:g}-{s['f0_range_hz'][1]:g} Hz on the MCD's alignment, frames voiced in both."
        )
    if "secs" in settings:
        notes.append(f"SECS: cosine similarity of {settings['secs']['backend']} speaker embeddings.")
    if "asr" in settings:
        notes.append(
            f"CER/WER: {settings['asr']['backend']} ({settings['asr']['model'] or 'its default model'})."
        )
    if "dnsmos" in settings:
        notes.append("DNSMOS: P.835 overall quality (1-5), speechmos.")
    return notes


def run(cfg: DictConfig) -> dict:
    """Convert ``cfg.split`` of ``cfg.data`` with ``cfg.ckpt``, score it and write the report
    (see the module docstring); returns the summary (also written as summary.json)."""
    groups = _groups(cfg)
    out = Path(cfg.paths.output_dir)
    if str(cfg.data.get("_target_", "")).endswith("VoiceDataModule"):
        from vc.evaluate_voice import run as run_voice

        return run_voice(cfg, groups)
    # the model first: a wrong ckpt is reported before any corpus download or feature work
    converter = load_converter(cfg)
    corpus = instantiate(cfg.data.corpus, _convert_="object")
    corpus.prepare()
    pairing = corpus.load()
    splits, chosen = select_pairs(cfg, pairing.pairs, corpus.name)
    labels = {p.utt_id: _label(p, pairing.src_name, pairing.tgt_name) for p in pairing.pairs}
    log.info("%s: scoring %d %s utterance(s) of %s", corpus.name, len(chosen), cfg.split, pairing.summary())
    overlap = training_overlap(cfg.ckpt, cfg, pairing.pairs, chosen)
    need_other = "secs" in groups and cfg.references.target
    utts, failed = load_utterances(chosen, pairing.pairs, labels, need_other)
    if not utts:
        raise DataError(
            f"None of the {len(chosen)} {cfg.split} pairs could be read (listed above). Check the corpus files."
        )
    conversion = convert(cfg, converter, utts, splits.train, out / "converted")
    columns = [k for k, g in COLUMNS.items() if g in groups]
    rows = score_utterances(cfg, utts, groups) + failed_rows(failed, chosen, labels, _systems(cfg), columns)
    settings = _settings(cfg, groups)
    notes = table_notes(cfg.split, len(utts), settings)
    stats, mels = write_report(cfg, out, utts, rows, columns, notes)
    local = Path(str(cfg.ckpt)).expanduser()
    summary = {
        "ckpt": str(cfg.ckpt),
        # absolute (None for a hub id), so that a training run's review (vc.runlogs.find_eval) finds it
        "ckpt_path": str(local.resolve()) if local.exists() else None,
        "pairs": sorted({labels[p.utt_id] for p in chosen}),
        "data": {
            "corpus": corpus.name,
            "pairing": pairing.summary(),
            "split": cfg.split,
            "split_settings": OmegaConf.to_container(cfg.data.split, resolve=True),
            "split_sizes": {k: len(getattr(splits, k)) for k in ("train", "val", "test")},
            "scored": len(utts),
            "failed": failed,
            "train_overlap": overlap,
        },
        "speaker": cfg.speaker,
        "generation": converter.generation,
        "conversion": conversion,
        "metrics_run": list(groups),
        "settings": settings,
        "backend_versions": M.backend_versions(),
        "mel_pictures": mels,
        "results": stats,
    }
    return write_summary(out, summary)


def write_report(
    cfg: DictConfig,
    out: Path,
    utts: list[Utterance],
    rows: list[dict],
    columns: Sequence[str],
    notes: list[str],
) -> tuple[dict, dict]:
    """utterances.csv, table.md (with ``notes`` under it) and the plots -> ``(statistics, mel pictures)``."""
    stats = statistics(rows, columns)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "utterances.csv", rows, columns)
    (out / "table.md").write_text(markdown_table(stats, columns, notes))
    (out / "plots").mkdir(exist_ok=True)
    plots.save(distributions_figure(rows, columns), out / "plots" / "metrics.png")
    return stats, mel_pictures(utts, rows, cfg.audio, out / "plots")


def write_summary(out: Path, summary: dict) -> dict:
    """``out/summary.json``; logs the table. Returns ``summary``."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    log.info("results in %s:\n%s", out, (out / "table.md").read_text())
    return summary
