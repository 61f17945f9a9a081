"""One speaker's recordings, no parallel data: utterances, a split by recording, source versions.

``data=voice data.corpus.root=recordings/``: every audio file below the folder (any format, rate
and channel count) is one recording of the target voice. Each is cut at long pauses, pieces longer
than ``max_seconds`` are split again at their quietest moments (the converter's splitter), edges
are trimmed to the speech, and pieces shorter than ``min_seconds`` are dropped. The pieces are
written once to a cache keyed by the recording's content and these settings.

Each utterance is the target of its own pairs: its source versions (:mod:`vc.data.voice_sources`)
say the same words in other voices, so training learns "anyone -> this voice" as it learns
ARCTIC pairs. Held-out utterances come from held-out recordings: pieces of one recording never
straddle two splits.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from vc.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, file_hash, find_audio_files, load_audio, write_wav
from vc.data.corpus import Pair
from vc.data.datamodule import (
    DataReport,
    LengthBucketBatchSampler,
    RandomBatchSampler,
    VCDataModule,
    VCDataset,
)
from vc.data.features import BadFile
from vc.errors import AudioError, ConfigError, DataError

log = logging.getLogger(__name__)

SEGMENTS_VERSION = "1"
FRAME_SECONDS = 0.02
# speech kept on either side of the first and last loud frame of a piece
EDGE_SECONDS = 0.1
# a recording whose loudest frames are not this far (dB) above its quietest holds no speech
SPEECH_RANGE_DB = 15.0
# below this much usable speech a fine-tune is warned about (the README says why)
ENOUGH_SPEECH_SECONDS = 300.0
SOURCE_KINDS = ("convert", "perturb")


@dataclass(frozen=True)
class Utterance:
    """One piece of a recording: ``path`` (16 kHz mono WAV in the cache), where it came from
    (``recording``, relative to the corpus root; ``start_s``/``end_s`` in it), its length and text."""

    utt_id: str
    path: Path
    recording: str
    start_s: float
    end_s: float
    seconds: float
    text: str = ""


@dataclass
class Recordings:
    """What :meth:`VoiceCorpus.load` found: the utterances, the files left out and the input rates."""

    utterances: list[Utterance]
    bad_files: list[BadFile]
    sample_rates: Counter
    recordings: int

    @property
    def speech_seconds(self) -> float:
        return sum(u.seconds for u in self.utterances)


def speech_spans(
    wav: np.ndarray,
    sample_rate: int,
    *,
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    pause_seconds: float = 0.4,
    silence_db: float = 40.0,
) -> list[tuple[int, int]]:
    """(T,) audio -> ``[(start, end), ...]`` sample spans of speech, each ``min_seconds`` to ``max_seconds``.

    Audio whose level never rises 15 dB above its floor (noise, hum) has no speech: ``[]``.
    Frames (20 ms) more than ``silence_db`` below the loudest frame are silence. The audio is cut
    in every silence of ``pause_seconds`` or more; a part longer than ``max_seconds`` is cut again
    by :func:`vc.converter.split_at_pauses` (at its quietest moments); each part is trimmed to its
    loud frames plus 0.1 s, and parts shorter than ``min_seconds`` are dropped.
    """
    from vc.converter import split_at_pauses

    frame = int(FRAME_SECONDS * sample_rate)
    n_frames = len(wav) // frame
    if n_frames == 0:
        return []
    energy = np.square(wav[: n_frames * frame].reshape(n_frames, frame), dtype=np.float64).mean(axis=1)
    level = 10 * np.log10(energy + 1e-12)
    # speech rises well above its own floor between words; steady noise or hum does not
    if np.percentile(level, 99) - np.percentile(level, 10) < SPEECH_RANGE_DB:
        return []
    loud = level > level.max() - silence_db
    # runs of loud frames, joined across pauses shorter than pause_seconds
    gap = round(pause_seconds / FRAME_SECONDS)
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap)
    runs = zip([idx[0], *idx[breaks + 1]], [*idx[breaks], idx[-1]], strict=True)
    edge = int(EDGE_SECONDS * sample_rate)
    spans = []
    for first, last in runs:
        start, end = max(0, first * frame - edge), min(len(wav), (last + 1) * frame + edge)
        for a, b in split_at_pauses(wav[start:end], sample_rate, max_seconds):
            piece = loud[(start + a) // frame : (start + b) // frame]
            on = np.flatnonzero(piece)
            if on.size == 0:
                continue
            s = max(start + a, (start + a) // frame * frame + on[0] * frame - edge)
            e = min(start + b, (start + a) // frame * frame + (on[-1] + 1) * frame + edge)
            if e - s >= min_seconds * sample_rate:
                spans.append((s, e))
    return spans


def read_transcripts(path: Path) -> dict[str, str]:
    """A CSV with columns ``path,text`` (paths relative to its folder) -> {resolved path: text}."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in reader.fieldnames or []]
        if "path" not in header or "text" not in header:
            raise DataError(
                f"Transcripts {path}: columns {', '.join(header) or 'none'}; it needs a header line "
                "path,text (paths relative to the CSV's folder). Fix it, or set data.corpus.transcripts=none."
            )
        reader.fieldnames = header
        return {
            str((path.parent / row["path"].strip()).resolve()): (row.get("text") or "").strip()
            for row in reader
            if row.get("path")
        }


def _id_of(relative: str) -> str:
    """``session 1/take.wav`` -> ``session_1__take``: a recording's name usable in file names and ids."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", relative.rsplit(".", 1)[0].replace("/", "__"))


class VoiceCorpus:
    """The recordings of one speaker under ``root`` (recursive), cut into utterances.

    Args:
        root: folder of recordings (WAV, FLAC, OGG, MP3, ...; any rate and channel count).
        cache_dir: where the utterances are written (16 kHz mono WAV), keyed by content and settings.
        transcripts: a CSV ``path,text`` (null: ``root/transcripts.csv`` if it exists; ``none``: no text).
            A recording cut into several utterances keeps no text (the CSV does not say which words
            fall in which piece).
        min_seconds, max_seconds, pause_seconds, silence_db: see :func:`speech_spans`.
        min_speech_seconds: less usable speech than this is an error.
        on_bad_file: ``skip`` (name, count and leave out unusable files) or ``error``.
        name: the speaker's name in reports and the bundle.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cache_dir: str | os.PathLike,
        transcripts: str | None = None,
        min_seconds: float = 1.0,
        max_seconds: float = 10.0,
        pause_seconds: float = 0.4,
        silence_db: float = 40.0,
        min_speech_seconds: float = 60.0,
        on_bad_file: str = "skip",
        name: str | None = None,
    ):
        if on_bad_file not in ("skip", "error"):
            raise ConfigError(f"data.on_bad_file={on_bad_file!r}: use 'skip' or 'error'.")
        if not 0 < min_seconds < max_seconds:
            raise ConfigError(
                f"data.corpus.min_seconds={min_seconds}, max_seconds={max_seconds}: need 0 < min_seconds < max_seconds."
            )
        self.root = Path(root).expanduser()
        self.cache_dir = Path(cache_dir)
        self.transcripts = transcripts
        self.settings = {
            "min_seconds": float(min_seconds),
            "max_seconds": float(max_seconds),
            "pause_seconds": float(pause_seconds),
            "silence_db": float(silence_db),
        }
        self.min_speech_seconds = float(min_speech_seconds)
        self.on_bad_file = on_bad_file
        self.speaker = name or self.root.resolve().name
        self.name = f"voice {self.speaker} ({self.root})"
        self._loaded: Recordings | None = None

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            raise DataError(
                f"data.corpus.root={self.root}: no such folder. Point it at the folder of the target speaker's "
                "recordings."
            )
        files = find_audio_files(self.root)
        if not files:
            raise DataError(
                f"data.corpus.root={self.root}: no audio files below it (looked for "
                f"{', '.join(AUDIO_EXTENSIONS)}). Point it at the folder of the target speaker's recordings."
            )
        return files

    def _texts(self) -> dict[str, str]:
        if self.transcripts is not None and str(self.transcripts).lower() == "none":
            return {}
        path = Path(self.transcripts) if self.transcripts else self.root / "transcripts.csv"
        if not path.is_file():
            if self.transcripts:
                raise DataError(
                    f"data.corpus.transcripts={path}: no such file. Give a CSV path,text or none."
                )
            return {}
        return read_transcripts(path)

    def _segment(self, path: Path) -> list[dict] | str:
        """One recording -> its pieces ``[{file, start_s, end_s}]`` from the cache or cut now, or the
        reason it is unusable."""
        key = file_hash(path, SEGMENTS_VERSION, json.dumps(self.settings, sort_keys=True))[:24]
        folder = self.cache_dir / "utterances" / key[:2] / key
        done = folder / "pieces.json"
        if done.is_file():
            return json.loads(done.read_text())["pieces"]
        try:
            wav = load_audio(path, SAMPLE_RATE)
        except AudioError as err:
            return str(err)
        spans = speech_spans(wav, SAMPLE_RATE, **self.settings)
        if not spans:
            return (
                f"{path}: no stretch of speech of {self.settings['min_seconds']:g} s or more (it is silence, noise "
                "or too short). Remove it or record again."
            )
        tmp = folder.with_name(f"{key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        pieces = []
        for k, (start, end) in enumerate(spans):
            write_wav(tmp / f"{k:03d}.wav", wav[start:end])
            pieces.append(
                {"file": f"{k:03d}.wav", "start_s": start / SAMPLE_RATE, "end_s": end / SAMPLE_RATE}
            )
        (tmp / "pieces.json").write_text(json.dumps({"source": str(path), "pieces": pieces}, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        return pieces

    def prepare(self) -> None:
        """Cut every recording into utterances in the cache (rank 0; idempotent, a re-run reads the cache)."""
        self._loaded = self._scan()

    def load(self) -> Recordings:
        """The utterances of every usable recording, the files left out, the sample rates found.

        Raises :class:`DataError` when no file is usable or there is less than ``min_speech_seconds``
        of speech in all, naming the folder and the fix.
        """
        if self._loaded is None:
            self._loaded = self._scan()
        return self._loaded

    def _scan(self) -> Recordings:
        files = self._files()
        texts = self._texts()
        utterances: list[Utterance] = []
        bad: list[BadFile] = []
        rates: Counter = Counter()
        ids: set[str] = set()
        for path in tqdm(files, desc="recordings", unit="file", leave=False):
            relative = path.relative_to(self.root).as_posix()
            rec_id = _id_of(relative)
            if rec_id in ids:  # take.wav and take.flac
                rec_id = _id_of(relative.replace(".", "_"))
            ids.add(rec_id)
            pieces = self._segment(path)
            if isinstance(pieces, str):
                if self.on_bad_file == "error":
                    raise AudioError(f"{pieces} (set data.on_bad_file=skip to leave such files out)")
                bad.append(BadFile(rec_id, str(path), pieces))
                continue
            rates[sf.info(str(path)).samplerate] += 1
            folder = self._piece_folder(path)
            text = texts.get(str(path.resolve()), "") if len(pieces) == 1 else ""
            for k, p in enumerate(pieces):
                utterances.append(
                    Utterance(
                        utt_id=f"{rec_id}-{k:03d}",
                        path=folder / p["file"],
                        recording=relative,
                        start_s=p["start_s"],
                        end_s=p["end_s"],
                        seconds=p["end_s"] - p["start_s"],
                        text=text,
                    )
                )
        if bad:
            log.warning(
                "left out %d unusable recording(s): %s", len(bad), "; ".join(b.reason for b in bad[:5])
            )
        found = Recordings(utterances, bad, rates, len(files) - len(bad))
        self._check(found, len(files))
        return found

    def _piece_folder(self, path: Path) -> Path:
        key = file_hash(path, SEGMENTS_VERSION, json.dumps(self.settings, sort_keys=True))[:24]
        return self.cache_dir / "utterances" / key[:2] / key

    def _check(self, found: Recordings, n_files: int) -> None:
        if not found.utterances:
            raise DataError(
                f"data.corpus.root={self.root}: none of its {n_files} audio file(s) holds usable speech "
                f"({'; '.join(b.reason for b in found.bad_files[:3])}). Use recordings of the target voice "
                "speaking, at least 1 minute in all (5 or more is better)."
            )
        seconds = found.speech_seconds
        if seconds < self.min_speech_seconds:
            raise DataError(
                f"data.corpus.root={self.root}: only {seconds:.0f} s of usable speech in {found.recordings} "
                f"recording(s); fine-tuning a voice needs at least {self.min_speech_seconds:.0f} s "
                "(5 minutes or more is better). Add recordings, or lower data.corpus.min_speech_seconds."
            )
        low = sorted(rate for rate in found.sample_rates if rate < SAMPLE_RATE)
        if low:
            log.warning(
                "%s: some recordings are sampled below %d Hz (%s Hz): they are upsampled, with nothing above "
                "half their rate, and the voice learned from them sounds muffled. Record at %d Hz or more.",
                self.root,
                SAMPLE_RATE,
                ", ".join(map(str, low)),
                SAMPLE_RATE,
            )


def split_recordings(
    utterances: Sequence[Utterance], seed: int = 42, val_ratio: float = 0.1, test_ratio: float = 0.1, **_
) -> dict[str, list[Utterance]]:
    """Hold out whole recordings: ``{"train", "val", "test"}`` -> utterances, each sorted by id.

    A seeded shuffle of the recordings (sorted by name first, so the file order does not matter);
    ``round(ratio * recordings)`` of them, at least one when the ratio is above 0, go to
    validation and test. Other keys of ``data.split`` (scheme, max_train_pairs) do not apply.
    """
    names = sorted({u.recording for u in utterances})
    n_val = max(1, round(val_ratio * len(names))) if val_ratio > 0 else 0
    n_test = max(1, round(test_ratio * len(names))) if test_ratio > 0 else 0
    if n_val + n_test >= len(names):
        raise DataError(
            f"{len(names)} usable recording(s) cannot give {n_val} validation and {n_test} test recording(s) and "
            "leave one for training: held-out utterances come from held-out recordings, so that pieces of one "
            "recording never straddle two splits. Cut long recordings into several files (e.g. "
            "`ffmpeg -i long.wav -f segment -segment_time 60 part%03d.wav`), or lower data.split.val_ratio / "
            "data.split.test_ratio."
        )
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    part = {name: "test" for name in order[:n_test]}
    part.update({name: "val" for name in order[n_test : n_test + n_val]})
    out: dict[str, list[Utterance]] = {"train": [], "val": [], "test": []}
    for u in sorted(utterances, key=lambda u: u.utt_id):
        out[part.get(u.recording, "train")].append(u)
    return out


@dataclass
class VoiceReport(DataReport):
    """:class:`DataReport` plus what a folder of one voice gave: speech, sources, conversion cache."""

    speech_seconds: float = 0.0
    recordings: int = 0
    sample_rates: dict = field(default_factory=dict)
    utterances: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    convert: str = ""

    def __str__(self) -> str:
        minutes = self.speech_seconds / 60
        lines = [
            f"speech        {minutes:.1f} min usable in {self.recordings} recording(s); sample rates "
            + ", ".join(f"{rate} Hz x{n}" for rate, n in sorted(self.sample_rates.items())),
            "utterances    " + ", ".join(f"{k} {v}" for k, v in self.utterances.items()),
            "sources       "
            + ", ".join(f"{kind} {n} per utterance" for kind, n in self.sources.items())
            + " (perturb: new each epoch)",
        ]
        if self.convert:
            lines.append(f"convert       {self.convert}")
        if self.speech_seconds < ENOUGH_SPEECH_SECONDS:
            lines.append(
                f"warning       only {minutes:.1f} min of speech: 5 min or more gives a voice that generalises "
                "(README: Your own voice from recordings)"
            )
        return super().__str__() + "\n" + "\n".join(lines)


class VoiceDataset(VCDataset):
    """A split's pairs; perturbed sources (``~pt`` ids) are made when an item is read.

    Index ``epoch * len + i`` is item ``i`` in epoch ``epoch`` (what :class:`_EpochSampler` yields,
    so that workers learn the epoch with the index); ``vary=False`` (validation, test) keeps epoch 0.
    """

    def __init__(self, features, embeddings, perturb_settings, seed: int, vary: bool, sample_rate: int):
        super().__init__(features, embeddings)
        self.perturb_settings, self.seed, self.vary, self.sample_rate = (
            perturb_settings,
            seed,
            vary,
            sample_rate,
        )

    def __getitem__(self, i: int) -> dict:
        from vc.data.perturb import perturb, perturb_rng

        epoch, i = divmod(int(i), len(self))
        item = super().__getitem__(i)
        if "~pt" in item["utt_id"]:
            rng = perturb_rng(self.seed, epoch if self.vary else 0, item["utt_id"])
            item["input_values"], _ = perturb(
                item["input_values"], self.sample_rate, rng, self.perturb_settings
            )
        return item


class _EpochSampler:
    """Mixin: yields ``epoch * n + i`` for item ``i``, so the dataset (in any worker) knows the epoch."""

    def __iter__(self):
        offset = self.epoch * len(self.lengths)
        for batch in super().__iter__():
            yield [offset + i for i in batch]


class _EpochBucketSampler(_EpochSampler, LengthBucketBatchSampler):
    pass


class _EpochRandomSampler(_EpochSampler, RandomBatchSampler):
    pass


class VoiceDataModule(VCDataModule):
    """:class:`VCDataModule` for one speaker's recordings (``data=voice``).

    ``voice``: ``sources`` ({convert: K, perturb: P}: source versions of each utterance per epoch;
    the K converted ones are made once and cached, the P perturbed ones are new each epoch),
    ``perturb`` (:class:`vc.data.perturb.PerturbSettings`) and ``convert`` (the keyword arguments
    of :class:`vc.data.voice_sources.ConvertedSources`). The other arguments are VCDataModule's.
    """

    def __init__(self, corpus: VoiceCorpus, voice: Mapping, **kwargs):
        super().__init__(corpus, **kwargs)
        from vc.data.perturb import PerturbSettings

        sources = dict(voice.get("sources") or {})
        unknown = sorted(set(sources) - set(SOURCE_KINDS))
        if unknown or not any(int(n or 0) > 0 for n in sources.values()):
            raise ConfigError(
                f"data.voice.sources={sources}: give how many source versions of each utterance to train on, "
                "by kind, e.g. data.voice.sources={convert:2,perturb:1} (kinds: convert, perturb; at least one above 0)."
            )
        self.sources = {kind: int(sources.get(kind) or 0) for kind in SOURCE_KINDS}
        self.perturb_settings = PerturbSettings(**dict(voice.get("perturb") or {}))
        self.convert_cfg = dict(voice.get("convert") or {})
        self.report = VoiceReport()
        self.utterances: dict[str, list[Utterance]] = {}
        self._converted = None

    def _converter_sources(self):
        from vc.data.voice_sources import ConvertedSources

        if self._converted is None:
            self._converted = ConvertedSources(
                count=self.sources["convert"],
                speaker=self.speaker_cfg,
                seed=int(self.split_cfg.get("seed", 0)),
                **self.convert_cfg,
            )
        return self._converted

    def _splits(self):
        found = self.corpus.load()
        self.utterances = split_recordings(found.utterances, **self.split_cfg)
        rep = self.report
        rep.corpus = self.corpus.name
        rep.speech_seconds, rep.recordings = found.speech_seconds, found.recordings
        rep.sample_rates = dict(found.sample_rates)
        rep.utterances = {k: len(v) for k, v in self.utterances.items() if v}
        rep.sources = {k: n for k, n in self.sources.items() if n}
        rep.pairing = (
            f"{sum(rep.utterances.values())} utterances of {self.corpus.speaker} from {found.recordings} "
            f"recording(s); {len(found.bad_files)} file(s) left out"
        )
        converted = {}
        if self.sources["convert"]:
            converted = self._converter_sources().lookup(
                [u for part in self.utterances.values() for u in part], train=self.utterances["train"]
            )
            rep.convert = self._converted.summary()
        self._bad_recordings = found.bad_files
        return {name: self._pairs(part, converted) for name, part in self.utterances.items()}

    def _pairs(self, utterances: list[Utterance], converted: Mapping[str, list[Path]]) -> list[Pair]:
        pairs = []
        spk = self.corpus.speaker
        for u in utterances:
            for k, src in enumerate(converted.get(u.utt_id, [])):
                pairs.append(Pair(f"{u.utt_id}~cv{k}", src, u.path, u.text, spk, "convert"))
            for j in range(self.sources["perturb"]):
                pairs.append(Pair(f"{u.utt_id}~pt{j}", u.path, u.path, u.text, spk, "perturb"))
        return pairs

    def prepare_data(self) -> None:
        """Cut the recordings, convert each utterance into K voices (cached), build features (rank 0)."""
        self.corpus.prepare()
        if self.sources["convert"]:
            found = self.corpus.load()
            parts = split_recordings(found.utterances, **self.split_cfg)
            # the target's own voice is left out of the pool: its x-vector from the training utterances
            self._converter_sources().build(
                [u for part in parts.values() for u in part], train=parts["train"]
            )
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        self.report.bad_files = self._bad_recordings + self.report.bad_files
        sr = int(self.audio["sample_rate"])
        seed = int(self.split_cfg.get("seed", 0))
        for name, ds in self.datasets.items():
            self.datasets[name] = VoiceDataset(
                ds.features, ds.embeddings, self.perturb_settings, seed, name == "train", sr
            )

    def _sampler(self, ds, shuffle: bool, random_batches: bool = False):
        if not shuffle:
            return super()._sampler(ds, shuffle, random_batches)
        rank, world = self._rank()
        cls = _EpochRandomSampler if random_batches else _EpochBucketSampler
        seed = int(self.split_cfg.get("seed", 0))
        return cls(ds.tgt_lengths, self.batch_size, shuffle=True, seed=seed, rank=rank, world_size=world)

    def eval_pairs(self, split: str = "test") -> tuple[list[Pair], dict[str, list[Utterance]]]:
        """The source pairs of ``split``'s utterances, as training makes them -> ``(pairs, utterances by split)``.

        Needs no :meth:`setup`: converted sources missing from the cache are made first (the
        pretrained model is loaded only then). A perturbed pair's ``src_path`` is the original:
        :meth:`perturbed` gives its source.
        """
        found = self.corpus.load()
        parts = split_recordings(found.utterances, **self.split_cfg)
        converted = {}
        if self.sources["convert"]:
            sources = self._converter_sources()
            sources.build(parts[split], train=parts["train"])
            converted = sources.lookup(parts[split], train=parts["train"])
        return self._pairs(parts[split], converted), parts

    def perturbed(self, wav: np.ndarray, pair_id: str) -> np.ndarray:
        """The perturbed source of pair ``pair_id`` (``<utt_id>~pt<j>``) that validation sees (epoch 0),
        from its original ``wav`` ((T,) float32 at ``audio.sample_rate``)."""
        from vc.data.perturb import perturb, perturb_rng

        rng = perturb_rng(int(self.split_cfg.get("seed", 0)), 0, pair_id)
        return perturb(wav, int(self.audio["sample_rate"]), rng, self.perturb_settings)[0]

    def held_out(self, split: str = "test") -> list[Utterance]:
        """The utterances of ``split`` (after :meth:`setup`): originals of held-out recordings."""
        return self.utterances.get(split, [])
