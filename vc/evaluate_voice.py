"""eval.py data=voice: score a voice fine-tune on its own speaker's held-out recordings.

    python eval.py ckpt=BUNDLE data=voice data.corpus.root=recordings/ [the training run's data overrides]

No second speaker is needed: each held-out utterance (a piece of a recording the fine-tune never
saw) is the exact reference of its own source versions, the ones training makes
(:meth:`vc.data.voice.VoiceDataModule.eval_pairs`): the pretrained model's conversions into other
voices (``convert``) and the perturbed recording (``perturb``, the version validation sees). Each
source is converted back into the voice and scored against its original as
:mod:`vc.evaluate` scores a parallel pair, one table row group per source kind
(``convert-><speaker>``, ``perturb-><speaker>``), with the systems

- ``source`` (floor): the source version itself;
- ``pretrained``: the model the bundle was fine-tuned from (its ``model.pretrained``), same sources
  and speaker conditioning, so the table shows what fine-tuning gained (``references.pretrained``);
- ``converted``: the fine-tuned bundle;
- ``target`` (ceiling): the original recording (SECS against another utterance of the speaker).

CER/WER: against the utterance's text when the corpus has it, else against the ASR transcript of
the original recording (the ceiling's CER/WER is then n/a: it would be 0 by construction).

``eval.sources=FOLDER``: other speakers' real recordings (each file one source, ``other-><speaker>``
rows) are converted too. They have no reference: no MCD or F0; SECS against a held-out original of
the speaker, CER/WER against the ASR transcript of the source recording, DNSMOS.
The outputs are :mod:`vc.evaluate`'s, plus ``sources/<pair id>.wav`` (the perturbed sources).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vc import evaluate as E
from vc import metrics as M
from vc.audio import SAMPLE_RATE, find_audio_files, load_audio, write_wav
from vc.data.corpus import Pair
from vc.errors import AudioError, ConfigError, DataError
from vc.infer import load_converter

log = logging.getLogger(__name__)

OWN_TRANSCRIPT = "n/a: the reference text is this recording's own ASR transcript"
NO_REFERENCE = (
    "n/a: another speaker's recording (eval.sources) has no recording of the same words to compare with"
)


def _training_config(ckpt: str) -> dict:
    """The training config a bundle records ({} for anything else)."""
    from vc.model.bundle import BUNDLE_FILE, is_bundle

    path = Path(str(ckpt)).expanduser()
    if not is_bundle(path):
        return {}
    return OmegaConf.to_container(OmegaConf.load(path / BUNDLE_FILE)).get("train_config") or {}


def _with_model(cfg: DictConfig, trained: dict) -> str | None:
    """Give ``cfg`` the ``model`` section the voice data config refers to (the converting model of
    the convert sources) -> the pretrained model's name, None when there is none to know."""
    model = dict(trained.get("model") or {})
    pretrained = cfg.eval.pretrained or model.get("pretrained")
    model.setdefault("pretrained", pretrained)
    model.setdefault("vocoder", cfg.vocoder)
    model.setdefault("generation", {})
    with open_dict(cfg):
        cfg.model = model
    return pretrained


def _overlap(trained: dict, utterances, scored) -> dict | None:
    """How many ``scored`` utterances come from recordings the bundle trained on, when it trained on
    data=voice with a recorded split (the same folder's names)."""
    from vc.data.voice import split_recordings

    data = trained.get("data") or {}
    if not str(data.get("_target_", "")).endswith("VoiceDataModule") or not data.get("split"):
        return None
    used = split_recordings(utterances, **data["split"])
    trained_on = {u.recording for u in used["train"]}
    overlap = {"train": sum(u.recording in trained_on for u in scored), "scored": len(scored)}
    if overlap["train"]:
        log.warning(
            "%d of the %d scored utterances come from recordings the bundle trained on (its data.split: %s): "
            "the scores are optimistic. Pass the training run's data.split settings (seed, val_ratio, test_ratio).",
            overlap["train"],
            len(scored),
            data["split"],
        )
    return overlap


def _source_files(dm, pairs: list[Pair], out: Path) -> list[Pair]:
    """Perturbed pairs get their source written to ``out/<pair id>.wav``; the others are kept."""
    made = []
    for pair in pairs:
        if "~pt" in pair.utt_id:
            try:
                wav = load_audio(pair.tgt_path, SAMPLE_RATE)
            except AudioError as err:
                log.error("%s left out: %s", pair.utt_id, err)
                continue
            path = out / f"{pair.utt_id}.wav"
            write_wav(path, dm.perturbed(wav, pair.utt_id))
            pair = dataclasses.replace(pair, src_path=path)
        made.append(pair)
    return made


def _transcribe(utts: list[E.Utterance], scorers: E.Scorers, side: str = "tgt") -> set[str]:
    """Utterances without text get the ASR transcript of their ``side`` (``tgt``: the original,
    ``src``: the source) as text -> their ids."""
    transcripts: dict[Path, str] = {}
    filled = set()
    for utt in utts:
        if utt.pair.text.strip():
            continue
        path = getattr(utt.pair, f"{side}_path")
        if path not in transcripts:
            try:
                transcripts[path] = scorers.asr.transcribe(getattr(utt, side))
            except AudioError as err:
                log.warning("%s: no transcript of %s: %s", utt.pair.utt_id, path, err)
                transcripts[path] = ""
        text = transcripts[path]
        if text.strip():
            utt.pair = dataclasses.replace(utt.pair, text=text)
            filled.add(utt.pair.utt_id)
    return filled


def _other_sources(cfg: DictConfig, held: list[E.Utterance], speaker: str) -> list[E.Utterance]:
    """``eval.sources``' audio files (recursive) as utterances labelled ``other-><speaker>``; each
    file's ``tgt`` is a held-out original of the speaker (cyclic), the reference of its SECS."""
    from vc.data.voice import _id_of

    folder = cfg.eval.get("sources")
    if not folder:
        return []
    root = Path(str(folder)).expanduser()
    files = find_audio_files(root) if root.exists() else []
    if not files:
        raise DataError(
            f"eval.sources={folder}: no audio files there ({'no such folder' if not root.exists() else 'none found'}). "
            "Point it at a folder of other speakers' recordings, or leave it out."
        )
    out = []
    for k, path in enumerate(files):
        ref = held[k % len(held)]
        name = _id_of(path.relative_to(root).as_posix()) if root.is_dir() else _id_of(path.name)
        try:
            src = load_audio(path, SAMPLE_RATE, min_seconds=M.MIN_SECONDS)
        except AudioError as err:
            log.error("eval.sources: %s left out: %s", path, err)
            continue
        pair = Pair(f"other-{name}", path, ref.pair.tgt_path, "", speaker, "other")
        out.append(E.Utterance(pair, f"other->{speaker}", src, ref.tgt))
    return out


def run(cfg: DictConfig, groups: tuple[str, ...]) -> dict:
    """Score ``cfg.ckpt`` (and the model it was fine-tuned from) on the held-out recordings of
    ``cfg.data`` (data=voice), write :mod:`vc.evaluate`'s report; returns the summary."""
    out = Path(cfg.paths.output_dir)
    trained = _training_config(cfg.ckpt)
    pretrained = _with_model(cfg, trained)
    want_pretrained = bool(cfg.references.get("pretrained"))
    # the model first: a wrong ckpt is reported before any data work
    converter = load_converter(cfg)
    dm = instantiate(cfg.data, _convert_="object")
    if (want_pretrained or dm.sources["convert"]) and not pretrained:
        raise ConfigError(
            f"ckpt={cfg.ckpt} records no model.pretrained (it is not a bundle of a train.py run): set "
            "eval.pretrained to the model it was fine-tuned from (hub id or folder), or score without it: "
            "references.pretrained=false data.voice.sources.convert=0."
        )
    pairs, parts = dm.eval_pairs(cfg.split)
    if not parts[cfg.split]:
        raise DataError(
            f"The {cfg.split} split of {dm.corpus.name} is empty: set data.split.{cfg.split}_ratio above 0 "
            "(the training run's, with its seed), or score split=test."
        )
    if cfg.max_utterances is not None:
        keep = {u.utt_id for u in parts[cfg.split][: int(cfg.max_utterances)]}
        pairs = [p for p in pairs if p.utt_id.split("~")[0] in keep]
    speaker = dm.corpus.speaker
    scored = [u for u in parts[cfg.split] if any(p.utt_id.split("~")[0] == u.utt_id for p in pairs)]
    log.info(
        "%s: scoring %d source version(s) of %d %s utterance(s)",
        dm.corpus.name,
        len(pairs),
        len(scored),
        cfg.split,
    )
    overlap = _overlap(trained, [u for part in parts.values() for u in part], scored)
    chosen = _source_files(dm, pairs, out / "sources")
    labels = {p.utt_id: E._label(p, "source", speaker) for p in chosen}
    train = [Pair(u.utt_id, u.path, u.path, u.text, speaker) for u in parts["train"]]
    need_other = "secs" in groups and cfg.references.target
    utts, failed = E.load_utterances(chosen, chosen + train, labels, need_other)
    if not utts:
        raise DataError(
            f"None of the {len(chosen)} {cfg.split} source versions could be read (listed above)."
        )
    others = _other_sources(cfg, utts, speaker)
    labels.update({u.pair.utt_id: u.label for u in others})

    systems = E._systems(cfg, ("source", "pretrained", "target") if want_pretrained else ("source", "target"))
    conversion = {"converted": E.convert(cfg, converter, utts + others, train, out / "converted")}
    if want_pretrained:
        # the bundle's vocoder and x-vector model: the fine-tune changed neither
        base = OmegaConf.merge(
            cfg,
            {
                "ckpt": pretrained,
                "vocoder": cfg.vocoder or cfg.model.vocoder,
                "speaker_encoder": cfg.speaker_encoder or cfg.data.speaker.source,
            },
        )
        conversion["pretrained"] = E.convert(
            cfg, load_converter(base), utts + others, train, out / "pretrained", system="pretrained"
        )

    scorers = E.Scorers(cfg.metrics, groups)
    own_text = _transcribe(utts, scorers) if scorers.asr is not None else set()
    if scorers.asr is not None:
        _transcribe(others, scorers, side="src")
    columns = [k for k, g in E.COLUMNS.items() if g in groups]
    rows = E.score_utterances(cfg, utts, groups, systems, scorers)
    for row in rows:
        if row["system"] == "target" and row["utt_id"] in own_text:
            row.update({k: M.Score(math.nan, OWN_TRANSCRIPT) for k in ("cer", "wer") if k in row})
    if others:
        no_world = tuple(g for g in groups if g not in ("mcd", "f0"))
        for row in E.score_utterances(cfg, others, no_world, [s for s in systems if s != "target"], scorers):
            row.update(
                {k: M.Score(math.nan, NO_REFERENCE) for k, g in E.COLUMNS.items() if g in ("mcd", "f0")}
            )
            rows.append({k: v for k, v in row.items() if k not in E.COLUMNS or E.COLUMNS[k] in groups})
    rows += E.failed_rows(failed, chosen, labels, systems, columns)
    settings = E._settings(cfg, groups)
    if "secs" in settings:
        settings["secs"]["compared_with"] = (
            "the original recording of the same utterance (ceiling: another utterance of the speaker)"
        )
    notes = E.table_notes(cfg.split, len(scored), settings)
    notes.insert(
        1,
        f"Sources: each held-out utterance of {speaker} is the reference of its own source versions (convert: "
        "the pretrained model speaking it in another voice; perturb: its pitch, formants and EQ changed). "
        f"Pretrained: {pretrained} without fine-tune. "
        + (
            f"CER/WER of {len(own_text)} source version(s) without text: against the ASR transcript of the original."
            if own_text
            else ""
        ),
    )
    if others:
        notes.insert(
            2,
            f"other->{speaker}: {len(others)} recording(s) of other speakers (eval.sources); no reference, so no "
            "MCD or F0; SECS against a held-out original, CER/WER against the ASR transcript of the source.",
        )
    stats, mels = E.write_report(cfg, out, utts + others, rows, columns, notes)
    local = Path(str(cfg.ckpt)).expanduser()
    summary = {
        "ckpt": str(cfg.ckpt),
        "ckpt_path": str(local.resolve()) if local.exists() else None,
        "pretrained": pretrained if want_pretrained else None,
        "pairs": sorted(set(labels.values())),
        "data": {
            "corpus": dm.corpus.name,
            "speaker": speaker,
            "split": cfg.split,
            "split_settings": dict(dm.split_cfg),
            "split_sizes": {k: len(v) for k, v in parts.items()},
            "scored_utterances": len(scored),
            "scored": len(utts),
            "sources": {k: sum(p.src_spk == k for p in chosen) for k in dm.sources},
            "text_from_asr": len(own_text),
            "other_sources": len(others),
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
    return E.write_summary(out, summary)
