"""VoiceConverter: any source voice -> the target speaker of a reference clip, 16 kHz mono out.

    vc = VoiceConverter.from_pretrained("outputs/train/runs/<time>/bundle")   # or a .ckpt or a hub id
    out = vc.convert("src.flac", ref="target_speaker.wav")
    out.wav, out.sample_rate, out.meta["stop_reason"]

How a call runs: every source is read as mono 16 kHz and split at pauses into chunks of at most
``max_chunk_seconds``; the chunks of all sources are sorted by length and converted in padded
batches of ``batch_size`` (:func:`vc.model.generate.generate`, SpeechT5 ``generate_speech``'s
algorithm with the decoder batched, then the HiFiGAN vocoder); each source's chunks are joined
with a short linear crossfade. Long sources go through in groups of chunks, so the working memory
does not grow with the input (the returned audio does).

On a CPU each chunk is encoded and vocoded alone (both are compute-bound there, and padding only
adds work) and only the decoder, whose small per-step matrix products gain from batching, runs
batched: batched and one-by-one conversion then agree to float rounding (tests/test_converter.py).
On a GPU the encoder and the vocoder run batched too, and the two agree up to the padding: the
encoder's first conv layer group-normalises over the padded length, and the vocoder's receptive
field reaches a few frames into the padding.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vc.audio import AudioInput, content_hash, describe, load_audio
from vc.data.speakers import l2_normalise
from vc.errors import ConfigError, MissingModelError
from vc.model.generate import generate
from vc.model.quantize import half_weights, resolve_quantize
from vc.settings import check_generation, check_value

log = logging.getLogger(__name__)

DEFAULT_VOCODER = "microsoft/speecht5_hifigan"
DEFAULT_SPEAKER_ENCODER = "speechbrain/spkrec-xvect-voxceleb"
DEFAULT_GENERATION = {"threshold": 0.5, "minlenratio": 0.0, "maxlenratio": 20.0}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# The encoder's conv front-end needs 400 samples; a tenth of a second leaves some margin.
MIN_SOURCE_SECONDS = 0.1
# Below this SpeechBrain's x-vector TDNN has too few frames to run at all ...
MIN_REF_SECONDS = 0.25
# ... and below this the x-vector is unreliable.
SHORT_REF_SECONDS = 1.0
# No chunk but a whole short input is shorter than this (nor than a quarter of max_chunk_seconds).
MIN_CHUNK_SECONDS = 0.5
# Chunks sorted and batched together: a few batches' worth, so long inputs keep memory flat.
GROUP_BATCHES = 4
# On a CPU each chunk is vocoded alone, padded to a multiple of this many log-mel frames (0.5 s).
VOCODER_FRAMES = 32


@dataclass
class Conversion:
    """One converted input.

    ``wav``: (T,) float32 mono at ``sample_rate`` (16 kHz). ``meta``: ``src_seconds``,
    ``out_seconds``, ``frames`` (log-mel frames generated), ``chunks``, ``stop_reason``
    ("stop_token", or "max_length" if any chunk ran to the length limit), ``warning`` (the
    runaway warning logged for it, else None) and ``chunk_info`` (per chunk: ``start_s``,
    ``end_s`` in the source, ``frames``, ``stop_reason``).
    """

    wav: np.ndarray
    sample_rate: int
    meta: dict = field(default_factory=dict)


def split_at_pauses(
    wav: np.ndarray,
    sample_rate: int,
    max_seconds: float,
    *,
    min_pause_ms: float = 100.0,
    frame_ms: float = 20.0,
) -> list[tuple[int, int]]:
    """Cut (T,) audio into chunks of at most ``max_seconds`` at its quietest moments.

    Returns ``[(start, end), ...]`` sample indices that cover ``wav`` in order with no gap. Each
    cut lies in the second half of the window that starts at the previous cut, at the frame
    (``frame_ms``) with the lowest energy averaged over ``min_pause_ms`` (so a pause beats a
    single quiet frame; of equal candidates the latest wins, keeping chunks long). The last chunk
    is at least ``min(0.5 s, max_seconds / 4)`` long.
    """
    n = len(wav)
    max_len = int(max_seconds * sample_rate)
    if n <= max_len:
        return [(0, n)]
    frame = int(sample_rate * frame_ms / 1000)
    num_frames = n // frame
    energy = np.square(wav[: num_frames * frame].reshape(num_frames, frame), dtype=np.float64).mean(axis=1)
    width = max(1, round(min_pause_ms / frame_ms))
    score = np.convolve(10 * np.log10(energy + 1e-10), np.full(width, 1 / width), mode="same")
    min_len = int(min(MIN_CHUNK_SECONDS, max_seconds / 4) * sample_rate)
    cuts = [0]
    while n - cuts[-1] > max_len:
        start = cuts[-1]
        lo, hi = start + max_len // 2, min(start + max_len, n - min_len)
        # candidate frames whose centre lies in [lo, hi]
        f_lo = -(-(lo - frame // 2) // frame)
        f_hi = (hi - frame // 2) // frame
        window = score[f_lo : f_hi + 1]
        best = f_lo + len(window) - 1 - int(np.argmin(window[::-1]))
        cuts.append(best * frame + frame // 2)
    return list(zip(cuts, [*cuts[1:], n], strict=True))


def crossfade_join(pieces: Sequence[np.ndarray], crossfade: int) -> np.ndarray:
    """Join (T_i,) float32 pieces, overlapping neighbours by ``crossfade`` samples with linear fades.

    The result, preallocated, has ``sum(T_i) - sum(overlaps)`` samples, where each overlap is
    ``min(crossfade, T_i, T_i+1)``.
    """
    overlaps = [min(crossfade, len(a), len(b)) for a, b in pairwise(pieces)]
    out = np.empty(sum(len(p) for p in pieces) - sum(overlaps), dtype=np.float32)
    pos = 0
    for k, piece in enumerate(pieces):
        n = overlaps[k - 1] if k else 0
        if n:
            fade = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1]
            out[pos - n : pos] = out[pos - n : pos] * (1 - fade) + piece[:n] * fade
        out[pos : pos + len(piece) - n] = piece[n:]
        pos += len(piece) - n
    return out


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device. Use auto, cuda, cuda:1, mps or cpu.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU is visible. Use device=auto or device=cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: Apple MPS is not available. Use device=auto or device=cpu.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> fp32 on every device; or ``bf16``, ``fp16``, ``fp32``.

    ``auto`` is fp32 because training runs in fp32 and fp32 is what was measured to be safe: bf16
    conversion on an H100 came out 0.86 dB MCD away from fp32 (the raw waveform is cast too) and
    no faster at batch 32 (docs/benchmarks.md). bf16 stays an option.
    """
    if name == "auto":
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype={name!r}: use auto, bf16, fp16 or fp32.")
    if name == "fp16" and device.type == "cpu":
        raise ConfigError(
            "dtype=fp16 needs a GPU (on the CPU it is slow or unsupported). Use dtype=fp32 or bf16."
        )
    return DTYPES[name]


def _pointing_at(override: str, load, *args):
    """``load(*args)``, with a :class:`MissingModelError` re-pointed at this CLI's ``override``."""
    try:
        return load(*args)
    except MissingModelError as err:
        raise MissingModelError(err.what, err.name, override, err.__cause__) from None


class _Parts(NamedTuple):
    """What a checkpoint provides; ``vocoder`` is a loaded model or a name still to load."""

    model: object
    feature_extractor: object
    vocoder: object
    speaker_encoder: str
    default_speaker: np.ndarray | None
    generation: Mapping


class VoiceConverter:
    """SpeechT5 voice conversion ready to run: model, feature extractor, vocoder, speaker encoder.

    Build it with :meth:`from_pretrained`. Args of the constructor (the loaded parts):
        model: ``SpeechT5ForSpeechToSpeech``; feature_extractor: its ``SpeechT5FeatureExtractor``;
        vocoder: ``SpeechT5HifiGan``.
        speaker_encoder: hub id or folder of the SpeechBrain x-vector model (loaded on first use).
        default_speaker: (512,) x-vector used when no reference is given (a bundle's training target).
        generation: ``threshold``, ``minlenratio``, ``maxlenratio`` of ``generate_speech``, per chunk.
        device, dtype: where and in which precision the model and vocoder run.
        quantize: ``fp16`` keeps the decoder's weights in fp16 on a CPU (fp32 arithmetic; 2.5x
            faster decoder steps, log-mels within about 5e-4 relative; :mod:`vc.model.quantize`),
            changing ``model`` in place; ``auto`` does so where it can run (a CPU in fp32, x86);
            ``none`` (the default here; ``from_pretrained`` and the CLIs default to ``auto``) runs
            the model as given.
        batch_size: chunks decoded together.
        max_chunk_seconds: longer sources are split at pauses into chunks no longer than this.
        crossfade_ms: overlap of neighbouring chunks' outputs.
        speaker_cache_size: reference x-vectors kept, by content hash (least recently used go first).
        seed: SpeechT5's decoder pre-net applies dropout at inference too (with one mask shared by
            the whole batch); reseeding before each batch makes an input's output independent of
            what it is batched with and repeatable. None: not reseeded.
        name: how the model is named in messages.
    """

    def __init__(
        self,
        model,
        feature_extractor,
        vocoder,
        *,
        speaker_encoder: str = DEFAULT_SPEAKER_ENCODER,
        default_speaker: np.ndarray | None = None,
        generation: Mapping | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        quantize: str = "none",
        batch_size: int = 8,
        max_chunk_seconds: float = 10.0,
        crossfade_ms: float = 20.0,
        speaker_cache_size: int = 256,
        seed: int | None = 0,
        name: str = "the model",
    ):
        check_value("batch_size", batch_size)
        check_value("max_chunk_seconds", max_chunk_seconds)
        check_value("crossfade_ms", crossfade_ms)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        self.quantized = resolve_quantize(str(quantize), self.device, dtype)
        if self.quantized:
            count = half_weights(self.model.speecht5.decoder)
            log.info("quantize: %d decoder Linear layers keep fp16 weights (fp32 arithmetic)", count)
        self.vocoder = vocoder.to(self.device, dtype).eval()
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.speaker_encoder = str(speaker_encoder)
        self.default_speaker = (
            None if default_speaker is None else l2_normalise(np.reshape(default_speaker, -1))
        )
        self.generation = self._generation(DEFAULT_GENERATION, generation or {})
        self.batch_size = int(batch_size)
        self.max_chunk_seconds = float(max_chunk_seconds)
        self.crossfade = int(crossfade_ms * self.sample_rate / 1000)
        self.speaker_cache_size = int(speaker_cache_size)
        self.seed = seed
        self.name = name
        self._embedder = None
        self._speaker_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls,
        ckpt: str | os.PathLike,
        *,
        device: str = "auto",
        dtype: str = "auto",
        quantize: str = "auto",
        vocoder: str | None = None,
        speaker_encoder: str | None = None,
        generation: Mapping | None = None,
        batch_size: int = 8,
        max_chunk_seconds: float = 10.0,
        crossfade_ms: float = 20.0,
        speaker_cache_size: int = 256,
        seed: int | None = 0,
    ) -> VoiceConverter:
        """Load a converter from ``ckpt``: a bundle folder, a Lightning ``.ckpt``, a Hub bundle repo
        (``USER/NAME``, pushed with ``python -m vc.hub push``; offline: from the local Hub cache), or a
        SpeechT5 hub id or folder (``microsoft/speecht5_vc``).

        ``vocoder`` and ``speaker_encoder`` (hub ids or folders) replace the checkpoint's own; for
        a hub id they default to ``microsoft/speecht5_hifigan`` and
        ``speechbrain/spkrec-xvect-voxceleb``. ``generation`` overrides the checkpoint's
        generation settings. ``device``: auto | cuda | mps | cpu; ``dtype``: auto | bf16 | fp16 | fp32;
        ``quantize``: auto | none | fp16 (fp16 decoder weights on a CPU; auto: where it can run).
        The other arguments are the constructor's.
        """
        from vc.model.bundle import is_bundle
        from vc.model.pretrained import load_vocoder

        dev = resolve_device(str(device))
        torch_dtype = resolve_dtype(str(dtype), dev)
        name = str(ckpt)
        path = Path(name).expanduser()
        if is_bundle(path):
            parts = cls._load_bundle(path)
        elif path.suffix == ".ckpt" or path.is_file():
            parts = cls._load_lightning(path)
        else:
            from vc.hub import bundle_repo

            # a Hub repo holding a bundle (vc.hub push) loads whole; a plain SpeechT5 repo as before
            snapshot = bundle_repo(name)
            parts = cls._load_bundle(snapshot) if snapshot else cls._load_speecht5(name)
        # a bundle's vocoder is loaded already; a name (from a .ckpt, the default or the override) is not
        voc = parts.vocoder
        if vocoder is not None or isinstance(voc, str):
            voc = _pointing_at("vocoder", load_vocoder, vocoder or voc)
        return cls(
            parts.model,
            parts.feature_extractor,
            voc,
            speaker_encoder=speaker_encoder or parts.speaker_encoder,
            default_speaker=parts.default_speaker,
            generation={**parts.generation, **(generation or {})},
            device=dev,
            dtype=torch_dtype,
            quantize=quantize,
            batch_size=batch_size,
            max_chunk_seconds=max_chunk_seconds,
            crossfade_ms=crossfade_ms,
            speaker_cache_size=speaker_cache_size,
            seed=seed,
            name=name,
        )

    @staticmethod
    def _load_bundle(path: Path) -> _Parts:
        from vc.model.bundle import load_bundle

        bundle = load_bundle(path)  # a damaged part is a ConfigError naming its file
        return _Parts(
            bundle.model,
            bundle.feature_extractor,
            bundle.vocoder,
            str(bundle.speaker_encoder_dir),
            bundle.default_speaker,
            bundle.settings.get("generation") or {},
        )

    @staticmethod
    def _load_lightning(path: Path) -> _Parts:
        """A Lightning checkpoint: the model from its weights, the other parts named in its hparams."""
        from vc.data.features import make_feature_extractor
        from vc.model.bundle import damaged, first_line
        from vc.model.module import VCLitModule

        if not path.is_file():
            raise ConfigError(
                f"ckpt={path}: no such checkpoint file. Check the path (relative paths are relative to where you "
                "ran the command)."
            )
        if path.suffix != ".ckpt":
            raise ConfigError(
                f"ckpt={path}: a file that is not a Lightning .ckpt. Point ckpt at a bundle folder, a .ckpt or a hub id."
            )
        other = (
            "Pick another checkpoint (an earlier one in the same checkpoints/ folder, or last.ckpt) or the run's "
            "exported bundle."
        )
        # checked before torch reads it: torch would unpickle a file that is no archive
        problem = damaged(path)
        if problem:
            raise ConfigError(f"ckpt={path}: {problem}, so it is not a usable checkpoint. {other}")
        try:
            module = VCLitModule.load_from_checkpoint(str(path), map_location="cpu")
        except Exception as err:
            # torch's own text may advise weights_only=False: never for a file the user did not make
            unsafe = isinstance(err, pickle.UnpicklingError)
            reason = "it holds data torch refuses to unpickle" if unsafe else first_line(err)
            raise ConfigError(
                f"ckpt={path}: not a readable VCLitModule checkpoint ({reason}). "
                f"Use a .ckpt written by train.py. {other}"
            ) from None
        hp = module.hparams
        if hp.audio:
            extractor = make_feature_extractor(hp.audio)
        else:
            from transformers import SpeechT5FeatureExtractor

            extractor = SpeechT5FeatureExtractor()
        return _Parts(
            module.model, extractor, hp.vocoder, hp.speaker_encoder, None, dict(hp.generation or {})
        )

    @staticmethod
    def _load_speecht5(name: str) -> _Parts:
        """A hub id or a SpeechT5 folder: SpeechT5's own vocoder and speaker encoder, no default speaker."""
        from vc.model.pretrained import load_feature_extractor, load_speecht5, looks_like_path

        path = Path(name).expanduser()
        if path.is_dir() and not (path / "config.json").is_file():
            raise ConfigError(
                f"ckpt={name}: a folder that is neither a bundle (no vc.yaml) nor a SpeechT5 model "
                "(no config.json). Point ckpt at a bundle folder, a .ckpt file or a hub id."
            )
        if not path.exists() and looks_like_path(name):
            raise ConfigError(
                f"ckpt={name}: no such bundle, checkpoint or model folder. Check the path (relative paths "
                "are relative to where you ran the command), or use a hub id such as microsoft/speecht5_vc."
            )
        model = _pointing_at("ckpt", load_speecht5, name)
        extractor = _pointing_at("ckpt", load_feature_extractor, name)
        return _Parts(model, extractor, DEFAULT_VOCODER, DEFAULT_SPEAKER_ENCODER, None, {})

    @staticmethod
    def _generation(base: Mapping, overrides: Mapping) -> dict:
        unknown = sorted(set(overrides) - set(DEFAULT_GENERATION))
        if unknown:
            raise ConfigError(
                f"unknown generation setting(s) {', '.join(unknown)}: use {', '.join(DEFAULT_GENERATION)}."
            )
        merged = {**base, **overrides}
        check_generation(merged)
        return {k: float(v) for k, v in merged.items()}

    # ----------------------------------------------------------------- speakers

    @property
    def embedder(self):
        """The :class:`vc.data.speakers.SpeakerEmbedder` (loads the speaker encoder on first use)."""
        if self._embedder is None:
            from vc.data.speakers import SpeakerEmbedder
            from vc.model.bundle import first_line, is_bundle

            # SpeechBrain's x-vector front-end is not supported on MPS
            device = "cuda" if self.device.type == "cuda" else "cpu"
            embedder = SpeakerEmbedder(self.speaker_encoder, device=device)
            try:
                _ = embedder.model  # loaded here, so that a damaged copy is named as such
            except MissingModelError:
                raise
            except Exception as err:
                bundle = Path(self.speaker_encoder).parent
                fix = (
                    f"Export the bundle {bundle} again (`python -m vc.model.bundle CKPT OUT`)."
                    if is_bundle(bundle)
                    else "Point speaker_encoder= at a complete copy."
                )
                raise ConfigError(
                    f"{self.speaker_encoder}: the speaker encoder does not load ({first_line(err)}). {fix}"
                ) from None
            self._embedder = embedder
        return self._embedder

    def speaker_embedding(self, ref: AudioInput | list | None = None) -> np.ndarray:
        """The (512,) float32 unit-norm x-vector of ``ref``.

        ``ref``: one audio input (path, bytes, ``(array, sr)`` or a 16 kHz array), a list of them
        (their x-vectors averaged and re-normalised), or None for the model's default speaker.
        Each clip's x-vector is cached by the hash of its 16 kHz samples. A clip shorter than
        1 s logs a warning (the x-vector is unreliable); shorter than 0.25 s is an error.
        """
        if ref is None:
            if self.default_speaker is None:
                raise ConfigError(
                    f"no reference audio given, and {self.name} has no default speaker (only bundles exported "
                    "with one do). Pass ref=<a clip of the target voice>."
                )
            return self.default_speaker
        clips = ref if isinstance(ref, list) else [ref]
        if not clips:
            raise ConfigError("ref is an empty list: give at least one clip of the target voice.")
        return l2_normalise(np.mean([self._clip_embedding(c) for c in clips], axis=0))

    def _clip_embedding(self, clip: AudioInput) -> np.ndarray:
        name = describe(clip)
        wav = load_audio(clip, self.sample_rate, min_seconds=MIN_REF_SECONDS)
        key = content_hash(wav)
        if key in self._speaker_cache:
            self._speaker_cache.move_to_end(key)
            return self._speaker_cache[key]
        if len(wav) < SHORT_REF_SECONDS * self.sample_rate:
            log.warning(
                "reference %s: %.2f s is short for a reliable x-vector; use %.0f s or more of the target voice "
                "(several clips are averaged).",
                name,
                len(wav) / self.sample_rate,
                3 * SHORT_REF_SECONDS,
            )
        try:
            vec = self.embedder.embed(wav)
        except MissingModelError as err:
            raise MissingModelError(err.what, err.name, "speaker_encoder", err.__cause__) from None
        self._speaker_cache[key] = vec
        if len(self._speaker_cache) > self.speaker_cache_size:
            self._speaker_cache.popitem(last=False)
        return vec

    def _speakers(self, count: int, refs, speaker: np.ndarray | None) -> np.ndarray:
        """(count, 512) x-vectors: ``speaker`` for all, one ref for all, or one ref per source."""
        if speaker is not None:
            if refs is not None:
                raise ConfigError("give either refs or speaker, not both.")
            return np.tile(l2_normalise(np.reshape(speaker, -1)), (count, 1))
        if isinstance(refs, list):
            if len(refs) != count:
                raise ConfigError(
                    f"{len(refs)} references for {count} sources: give one reference for all, or one per source "
                    "(average several clips for all sources with speaker=converter.speaker_embedding([...]))."
                )
            return np.stack([self.speaker_embedding(r) for r in refs])
        return np.tile(self.speaker_embedding(refs), (count, 1))

    # --------------------------------------------------------------- conversion

    def load_source(self, src: AudioInput, name: str | None = None) -> np.ndarray:
        """Read a source as (T,) float32 mono 16 kHz; :class:`AudioError` naming it if it is
        unreadable, empty, NaN/Inf, silent or shorter than 0.1 s."""
        return load_audio(src, self.sample_rate, name=name, min_seconds=MIN_SOURCE_SECONDS)

    def convert(self, src: AudioInput, ref: AudioInput | list | None = None, **generation) -> Conversion:
        """Convert one source to the voice of ``ref`` (see :meth:`speaker_embedding`; None: the
        default speaker). ``generation`` overrides threshold / minlenratio / maxlenratio."""
        return self.convert_many([src], [ref], **generation)[0]

    def convert_many(
        self,
        srcs: Sequence[AudioInput],
        refs: AudioInput | list | None = None,
        *,
        speaker: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        **generation,
    ) -> list[Conversion]:
        """Convert several sources together; returns one :class:`Conversion` per source, in order.

        ``refs``: None (the default speaker), one reference for all, or a list with one entry per
        source (an entry may itself be a list of clips to average). ``speaker``: a (512,) x-vector
        for all instead. ``names``: how the sources are named in messages (default: their paths).
        ``generation`` overrides threshold / minlenratio / maxlenratio.

        minlenratio and maxlenratio count from each chunk's own length, so a chunk's output does
        not depend on what it is batched with (:mod:`vc.model.generate`).
        """
        gen = self._generation(self.generation, generation)
        srcs = list(srcs)
        names = [describe(s) for s in srcs] if names is None else list(names)
        speakers = self._speakers(len(srcs), refs, speaker)
        wavs = [self.load_source(s, n) for s, n in zip(srcs, names, strict=True)]
        spans = [split_at_pauses(wav, self.sample_rate, self.max_chunk_seconds) for wav in wavs]
        chunks = [(i, k, start, end) for i, own in enumerate(spans) for k, (start, end) in enumerate(own)]
        pieces: dict[int, list] = {i: [None] * len(own) for i, own in enumerate(spans)}
        results: list[Conversion | None] = [None] * len(srcs)
        group = self.batch_size * GROUP_BATCHES
        for g in range(0, len(chunks), group):
            todo = sorted(chunks[g : g + group], key=lambda c: c[3] - c[2], reverse=True)
            for b in range(0, len(todo), self.batch_size):
                batch = todo[b : b + self.batch_size]
                outs = self._convert_batch(
                    [wavs[i][start:end] for i, _, start, end in batch], speakers[[c[0] for c in batch]], gen
                )
                for (i, k, start, end), out in zip(batch, outs, strict=True):
                    pieces[i][k] = (start, end, *out)
            # join the sources whose chunks are all done, so their pieces are freed
            for i in [i for i, p in pieces.items() if all(x is not None for x in p)]:
                results[i] = self._finish(pieces.pop(i), len(wavs[i]), names[i], gen)
        return results

    def _finish(self, pieces: list, src_len: int, name: str, gen: Mapping) -> Conversion:
        """Chunk outputs ``(start, end, wav, frames, stop_reason)`` of one source -> its Conversion."""
        wav = crossfade_join([p[2] for p in pieces], self.crossfade)
        sr = self.sample_rate
        runaway = sum(p[4] == "max_length" for p in pieces)
        warning = None
        if runaway:
            warning = (
                f"{runaway} of {len(pieces)} chunk(s) ran to the length limit without a stop token "
                f"(maxlenratio={gen['maxlenratio']:g}): the output may end in babble. Check that the input is "
                f"speech and the model is trained; lower generation.threshold (now {gen['threshold']:g}) to stop "
                "earlier, or lower generation.maxlenratio to cap the length."
            )
            log.warning("%s: %s", name, warning)
        meta = {
            "src_seconds": src_len / sr,
            "out_seconds": len(wav) / sr,
            "frames": sum(p[3] for p in pieces),
            "chunks": len(pieces),
            "stop_reason": "max_length" if runaway else "stop_token",
            "warning": warning,
            "chunk_info": [
                {"start_s": start / sr, "end_s": end / sr, "frames": frames, "stop_reason": reason}
                for start, end, _, frames, reason in pieces
            ],
        }
        return Conversion(wav=wav, sample_rate=sr, meta=meta)

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        """Reseed the pre-net's dropout for one batch, leaving the caller's random state as it was."""
        if self.seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            yield

    @torch.inference_mode()
    def _convert_batch(self, wavs: list[np.ndarray], speakers: np.ndarray, gen: Mapping) -> list[tuple]:
        """(T_i,) 16 kHz chunks + (B, 512) x-vectors -> per chunk ``(wav (T_i',) float32, frames, stop_reason)``."""
        features = self.feature_extractor(
            audio=wavs,
            sampling_rate=self.sample_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        with self._seeded():
            out = generate(
                self.model,
                features["input_values"].to(self.device, self.dtype),
                features["attention_mask"].to(self.device),
                torch.from_numpy(speakers).to(self.device, self.dtype),
                threshold=gen["threshold"],
                minlenratio=gen["minlenratio"],
                maxlenratio=gen["maxlenratio"],
                # on a CPU the encoder is compute-bound: padding only adds work
                encode_separately=self.device.type == "cpu",
            )
        return list(zip(self._vocode(out.mels), out.frames, out.stop_reasons, strict=True))

    def _vocode(self, mels: list[torch.Tensor]) -> list[np.ndarray]:
        """(frames_i, 80) log-mels -> (frames_i * hop,) float32 waveforms.

        On a GPU in one padded batch. On a CPU one at a time: HiFiGAN is compute-bound there and
        its padded batch was slower than the clips one by one (8 chunks of 3.2 s: 10.8 s against
        7.4 s); each clip is padded to a multiple of ``VOCODER_FRAMES`` frames so that the number
        of distinct input shapes (each caches its own oneDNN kernels) stays bounded.
        """
        if self.device.type == "cpu":
            return [self._vocode_batch([mel], quantum=VOCODER_FRAMES)[0] for mel in mels]
        return self._vocode_batch(mels)

    def _vocode_batch(self, mels: list[torch.Tensor], quantum: int = 1) -> list[np.ndarray]:
        frames = [len(m) for m in mels]
        longest = -(-max(frames) // quantum) * quantum
        # Pad with the vocoder's input mean: after its normalisation that is the zero padding a
        # lone clip gets from the first conv, so batching changes less at the edges.
        mean = getattr(self.vocoder, "mean", None) if self.vocoder.config.normalize_before else None
        padded = mels[0].new_zeros(len(frames), longest, mels[0].shape[-1])
        if mean is not None:
            padded[:] = mean.to(padded.dtype)
        for i, mel in enumerate(mels):
            padded[i, : len(mel)] = mel
        audio = self.vocoder(padded)
        hop = audio.shape[-1] // longest
        # copies, so that a kept chunk does not hold on to the whole padded batch
        return [audio[i, : n * hop].float().cpu().numpy().copy() for i, n in enumerate(frames)]
