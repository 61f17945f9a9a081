"""Converted source versions of the target's utterances: the pretrained model speaks them in K other voices.

Each utterance is converted once, with :class:`vc.converter.VoiceConverter`, into voices drawn
(seeded, per utterance) from a pool of x-vectors: the precomputed CMU ARCTIC speakers by default,
or a folder of reference clips or ``.npy`` x-vectors. Voices as close to the target as the target
itself (cosine above ``exclude_above``) are left out. Every result is a WAV plus a small JSON in
``cache_dir``, keyed by the utterance's content, the voice, the model's files and the generation
settings, and written atomically as soon as its batch is done: an interrupted run continues where
it stopped, and later runs and DDP ranks read what is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vc.audio import AUDIO_EXTENSIONS, file_hash, find_audio_files, write_wav
from vc.data.speakers import (
    SpeakerEmbedder,
    XVectorCache,
    fetch_arctic_xvectors,
    l2_normalise,
    load_arctic_xvectors_zip,
)
from vc.errors import ConfigError, MissingModelError

log = logging.getLogger(__name__)

CONVERT_VERSION = "1"
# chunks handed to the converter at once: a few of its batches, so progress is saved often
BATCHES_PER_CALL = 4


def _identity(name: str) -> str:
    """A model's name plus, for a local folder, its files' names, sizes and times: new weights, new key."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return name
    stats = [
        f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    return name + "@" + hashlib.sha256("\n".join(stats).encode()).hexdigest()[:16]


def pool_from_folder(folder: Path, xvectors: XVectorCache) -> dict[str, np.ndarray]:
    """A folder of voices -> {name: (512,) unit x-vector}.

    Each sub-folder is one voice (the mean of its clips' and ``.npy`` files' x-vectors); each audio
    or ``.npy`` file directly in the folder is a voice of its own, named by its stem.
    """
    voices = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            clips, arrays = find_audio_files(child), sorted(child.rglob("*.npy"))
        elif child.suffix.lower() in AUDIO_EXTENSIONS:
            clips, arrays = [child], []
        elif child.suffix.lower() == ".npy":
            clips, arrays = [], [child]
        else:
            continue
        vecs = [np.load(a).astype(np.float32).reshape(-1) for a in arrays]
        if clips:
            vecs += list(xvectors.get_many(clips))
        if vecs:
            voices[child.stem if child.is_file() else child.name] = l2_normalise(
                np.mean(l2_normalise(vecs), 0)
            )
    return voices


def pool_from_arctic(repo: str) -> dict[str, np.ndarray]:
    """The precomputed CMU ARCTIC x-vectors -> {speaker: mean (512,) unit x-vector}."""
    try:
        table = load_arctic_xvectors_zip(fetch_arctic_xvectors(repo))
    except MissingModelError as err:
        raise MissingModelError(
            "precomputed ARCTIC x-vectors (the default voice pool of data=voice)",
            repo,
            "data.voice.convert.pool",
            err.__cause__,
            fix=(
                "Point data.voice.convert.pool at a folder of other speakers (a sub-folder of clips or a .npy "
                "x-vector per voice), or train on perturbed sources only: data.voice.sources.convert=0."
            ),
        ) from None
    by_speaker: dict[str, list[np.ndarray]] = {}
    for (spk, _), vec in table.items():
        by_speaker.setdefault(spk, []).append(vec)
    return {spk: l2_normalise(np.mean(l2_normalise(v), 0)) for spk, v in sorted(by_speaker.items())}


class ConvertedSources:
    """K converted versions of each target utterance, made once and cached (see the module's doc).

    Args:
        count: K, voices per utterance.
        speaker: the ``data.speaker`` config (the target's x-vectors, for leaving it out of the pool).
        seed: seeds each utterance's choice of voices.
        ckpt, vocoder, speaker_encoder: the converting model (``model.pretrained``, ``model.vocoder``,
            ``data.speaker.source``).
        pool: folder of voices (:func:`pool_from_folder`); None: the ARCTIC speakers of ``precomputed_repo``.
        exclude_above: voices whose x-vector's cosine with the target's mean is above this are left out.
        generation, batch_size, device, quantize: the converter's settings.
        max_duration_ratio: a conversion longer or shorter than the original by more than this factor,
            or one that never emitted a stop token, is dropped (its timing no longer matches).
        cache_dir: where the converted WAVs and their JSON records go.
    """

    def __init__(
        self,
        count: int,
        speaker: Mapping,
        seed: int,
        ckpt: str,
        cache_dir: str | os.PathLike,
        vocoder: str | None = None,
        speaker_encoder: str | None = None,
        pool: str | None = None,
        precomputed_repo: str = "Matthijs/cmu-arctic-xvectors",
        exclude_above: float = 0.85,
        generation: Mapping | None = None,
        batch_size: int = 8,
        device: str = "auto",
        quantize: str = "none",
        max_duration_ratio: float = 3.0,
    ):
        self.count, self.speaker, self.seed = int(count), dict(speaker), int(seed)
        self.ckpt, self.vocoder, self.speaker_encoder = str(ckpt), vocoder, speaker_encoder
        self.pool, self.precomputed_repo, self.exclude_above = pool, precomputed_repo, float(exclude_above)
        self.generation = {k: float(v) for k, v in dict(generation or {}).items() if v is not None}
        self.batch_size, self.device, self.quantize = int(batch_size), str(device), str(quantize)
        self.max_duration_ratio = float(max_duration_ratio)
        self.cache_dir = Path(cache_dir)
        self.voices: dict[str, np.ndarray] | None = None
        self.excluded: list[str] = []
        self.stats = {"hits": 0, "converted": 0, "dropped": 0}
        self.built = False
        self.ratios: list[float] = []

    # ------------------------------------------------------------------ the plan
    def _xvectors(self) -> XVectorCache:
        return XVectorCache(
            self.speaker["cache_dir"],
            SpeakerEmbedder(self.speaker["source"], device=self.speaker.get("device", "cpu")),
        )

    def _voices(self, train: Sequence) -> dict[str, np.ndarray]:
        """The pool minus the target's own voice; a :class:`ConfigError` when nothing is left."""
        if self.voices is not None:
            return self.voices
        xvectors = self._xvectors()
        if self.pool:
            folder = Path(self.pool).expanduser()
            if not folder.is_dir():
                raise ConfigError(
                    f"data.voice.convert.pool={self.pool}: no such folder. Point it at a folder with a sub-folder of "
                    "clips (or a .npy x-vector) per voice, or set it to null for the CMU ARCTIC speakers."
                )
            voices = pool_from_folder(folder, xvectors)
        else:
            voices = pool_from_arctic(self.precomputed_repo)
        target = l2_normalise(np.mean(xvectors.get_many([u.path for u in train]), 0)) if train else None
        if target is not None:
            self.excluded = [n for n, v in voices.items() if float(v @ target) > self.exclude_above]
            if self.excluded:
                log.info("voice pool: left out %s (too close to the target)", ", ".join(self.excluded))
        self.voices = {n: v for n, v in voices.items() if n not in self.excluded}
        if not self.voices:
            raise ConfigError(
                f"data.voice.convert.pool={self.pool or self.precomputed_repo}: no voice left to convert into "
                f"({len(voices)} found, {len(self.excluded)} closer to the target than "
                f"exclude_above={self.exclude_above}). Add other speakers to the pool, raise "
                "data.voice.convert.exclude_above, or set data.voice.sources.convert=0."
            )
        if len(self.voices) < self.count:
            log.warning(
                "data.voice.sources.convert=%d but the pool has %d voice(s): each utterance gets %d",
                self.count,
                len(self.voices),
                len(self.voices),
            )
        return self.voices

    def _settings_key(self) -> str:
        ids = [
            _identity(self.ckpt),
            _identity(str(self.vocoder)),
            json.dumps(self.generation, sort_keys=True),
        ]
        return "\0".join([CONVERT_VERSION, *ids])

    def plan(self, utterances: Sequence, train: Sequence) -> list[tuple]:
        """``[(utterance, voice name, key), ...]``: K voices per utterance, drawn seeded by its id."""
        voices = self._voices(train)
        names = sorted(voices)
        settings = self._settings_key()
        out = []
        for u in utterances:
            rng = np.random.default_rng([self.seed, zlib.crc32(u.utt_id.encode())])
            chosen = sorted(rng.choice(len(names), size=min(self.count, len(names)), replace=False))
            content = file_hash(u.path)
            for i in chosen:
                vec = voices[names[i]]
                key = hashlib.sha256(f"{content}\0{settings}\0".encode() + vec.tobytes()).hexdigest()
                out.append((u, names[i], key))
        return out

    def _files(self, key: str) -> tuple[Path, Path]:
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.wav", folder / f"{key}.json"

    # -------------------------------------------------------------- conversion
    def build(self, utterances: Sequence, train: Sequence) -> None:
        """Convert every planned (utterance, voice) not yet in the cache (rank 0), in batches.

        Each result is saved when its call returns, so a run killed half-way keeps what it made.
        """
        plan = self.plan(utterances, train)
        todo = [item for item in plan if not self._files(item[2])[1].is_file()]
        self.stats = {"hits": len(plan) - len(todo), "converted": 0, "dropped": 0}
        self.built = True
        if not todo:
            return
        from vc.converter import VoiceConverter

        converter = VoiceConverter.from_pretrained(
            self.ckpt,
            device=self.device,
            quantize=self.quantize,
            vocoder=self.vocoder,
            speaker_encoder=self.speaker_encoder,
            generation=self.generation,
            batch_size=self.batch_size,
        )
        by_voice: dict[str, list] = {}
        for item in todo:
            by_voice.setdefault(item[1], []).append(item)
        step = self.batch_size * BATCHES_PER_CALL
        with tqdm(total=len(todo), desc="convert sources", unit="utt") as bar:
            for name, items in by_voice.items():
                for start in range(0, len(items), step):
                    chunk = items[start : start + step]
                    outs = converter.convert_many([u.path for u, _, _ in chunk], speaker=self.voices[name])
                    for (u, _, key), out in zip(chunk, outs, strict=True):
                        self._save(u, name, key, out)
                    bar.update(len(chunk))

    def _save(self, utterance, voice: str, key: str, out) -> None:
        wav_path, json_path = self._files(key)
        ratio = out.meta["out_seconds"] / max(out.meta["src_seconds"], 1e-9)
        kept = (
            out.meta["stop_reason"] == "stop_token"
            and 1 / self.max_duration_ratio <= ratio <= self.max_duration_ratio
        )
        if kept:
            write_wav(wav_path, out.wav, out.sample_rate)
        record = {
            "utt_id": utterance.utt_id,
            "voice": voice,
            "ratio": ratio,
            "stop_reason": out.meta["stop_reason"],
            "kept": kept,
        }
        tmp = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        # the record is written last: it is what marks this conversion as done
        os.replace(tmp, json_path)
        self.stats["converted" if kept else "dropped"] += 1

    def lookup(self, utterances: Sequence, train: Sequence) -> dict[str, list[Path]]:
        """{utt_id: [converted WAVs]} from the cache (every rank; loads no model). Conversions that
        were dropped, or not made yet, are missing."""
        plan = self.plan(utterances, train)
        out: dict[str, list[Path]] = {}
        self.ratios = []
        found = 0
        for u, _, key in plan:
            wav_path, json_path = self._files(key)
            if not json_path.is_file():
                continue
            found += 1
            record = json.loads(json_path.read_text())
            if record["kept"]:
                out.setdefault(u.utt_id, []).append(wav_path)
                self.ratios.append(record["ratio"])
        self.planned, self.found = len(plan), found
        return out

    def summary(self) -> str:
        """One line for the data report: voices, cache hits, conversions made now, drops, timing."""
        voices = sorted(self.voices or {})
        kept = len(self.ratios)
        line = (
            f"{kept} converted sources in {len(voices)} voice(s) ({', '.join(voices[:6])}"
            f"{' ...' if len(voices) > 6 else ''}); "
        )
        if self.built:
            s = self.stats
            line += f"{s['hits']} cache hits, {s['converted']} converted now, {s['dropped']} dropped"
        else:
            line += f"{self.found} of {self.planned} in the cache"
        if self.ratios:
            line += f"; duration ratio {np.mean(self.ratios):.2f} (converted / original)"
        return line
