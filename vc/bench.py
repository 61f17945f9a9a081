"""Benchmarks: training and conversion throughput and long-audio memory, each against the seed's way.

    python -m vc.bench                                   # full-size SpeechT5, random weights, all sections
    python -m vc.bench sections=[convert] convert.utterances=32 device=cuda
    python -m vc.bench size=tiny xvector=tiny ...       # the test's size

The models have the architecture of ``microsoft/speecht5_vc`` (``SpeechT5Config()``), of
``microsoft/speecht5_hifigan`` (``SpeechT5HifiGanConfig()``) and of the SpeechBrain x-vector recipe,
with random weights built offline (nothing is downloaded). The audio is CMU ARCTIC
(``data.arctic_root``) when it is there, else synthetic speech-like clips of 1.5-5 s.

Sections, each printed as a Markdown table with its ratio column:

- ``train``: samples/s and audio-seconds/s over one epoch of ``train.utterances`` pairs. The
  seed-style baseline reads the audio and computes the target log-mels and x-vectors at every
  step, takes random batches, runs fp32 and SpeechT5ForSpeechToSpeech's own forward (its post-net
  outputs taken with a hook for the loss). This codebase's pipeline reads cached features and
  x-vectors (built before timing), takes length-bucketed batches and runs
  ``VCLitModule.teacher_forced``; on a GPU also with bf16 autocast. Both use the same model,
  loss (:class:`vc.model.loss.SpectrogramLoss`) and optimiser.
- ``convert``: one-by-one ``generate_speech(..., vocoder=...)`` per utterance (the seed) against
  :class:`vc.converter.VoiceConverter` in batches, plus reduced precision (bf16 on a GPU; on the
  CPU fp16 decoder weights, ``quantize=fp16``, and int8 dynamic quantisation) accepted only when
  the MCD of its output against the fp32 output stays within ``convert.mcd_bound_db``. Random
  weights never emit a stop token: both sides run with an unreachable stop threshold and the same
  ``maxlenratio`` (``out_ratio``), so every utterance gets the same number of output frames on both
  sides.
- ``long``: one source of 1, 5 and 10 minutes each converted by ``VoiceConverter`` in a fresh
  process: time and peak memory.

Every measurement runs in a fresh process (``isolate``), so the peak RSS of a row is its own.
Timings are printed, never asserted. The table, a JSON copy and the log go to the run folder.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from unittest import mock

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vc.audio import SAMPLE_RATE, load_audio, write_wav
from vc.data.corpus import Pair
from vc.model.tiny import TinyModels

log = logging.getLogger(__name__)

# generate_speech stops when a step's two stop probabilities sum to the threshold: 3 is never reached
NEVER_STOP = 3.0
# the SpeechBrain x-vector recipe (speechbrain/spkrec-xvect-voxceleb) against vc.model.tiny's small one
_FULL_XVECTOR = {
    "tdnn_channels: [32, 32, 32, 32, 64]": "tdnn_channels: [512, 512, 512, 512, 1500]",
    "    lin_neurons: 32\n": "    lin_neurons: 512\n",
}
# dense bf16 peak TFLOP/s of a few GPUs, for model FLOPs utilisation (override with peak_tflops=)
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
GOALS = {"train": 3.0, "convert_cpu": 2.0, "convert_gpu": 8.0, "long_gib": 4.0}


# ------------------------------------------------------------------------------------------ models


def build_full_xvector(path: Path, seed: int = 0) -> Path:
    """Write a SpeechBrain x-vector folder with the real recipe's sizes (TDNN 512 x 4 + 1500,
    4.2M parameters in the embedding model) and random weights; loadable like the hub model."""
    from vc.model import tiny

    text = tiny.XVECTOR_HPARAMS
    for small, full in _FULL_XVECTOR.items():
        if small not in text:
            raise RuntimeError(f"vc.model.tiny.XVECTOR_HPARAMS has changed: no {small.strip()!r} to resize")
        text = text.replace(small, full)
    # the tiny builder writes whatever template it holds: hand it the full-size one
    with mock.patch.object(tiny, "XVECTOR_HPARAMS", text):
        return tiny.build_tiny_xvector(path, seed)


def build_models(root: Path, size: str, xvector: str, seed: int = 0) -> TinyModels:
    """Random-weight model folders under ``root``: SpeechT5 VC, HiFiGAN and the x-vector model.

    ``size`` full: ``SpeechT5Config()`` and ``SpeechT5HifiGanConfig()`` (the architectures of
    microsoft/speecht5_vc and microsoft/speecht5_hifigan); tiny: :mod:`vc.model.tiny`'s.
    ``xvector`` full: the spkrec-xvect-voxceleb recipe; tiny: vc.model.tiny's.
    """
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForSpeechToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    from vc.model.tiny import build_tiny_models, build_tiny_xvector

    if size not in ("full", "tiny") or xvector not in ("full", "tiny"):
        from vc.errors import ConfigError

        raise ConfigError(f"size={size} xvector={xvector}: each is full or tiny.")
    if size == "tiny":
        speecht5, vocoder, _ = build_tiny_models(root, seed)
    else:
        torch.manual_seed(seed)
        speecht5, vocoder = root / "speecht5_vc", root / "speecht5_hifigan"
        SpeechT5ForSpeechToSpeech(SpeechT5Config()).save_pretrained(speecht5)
        SpeechT5FeatureExtractor().save_pretrained(speecht5)
        SpeechT5HifiGan(SpeechT5HifiGanConfig()).save_pretrained(vocoder)
    build = build_full_xvector if xvector == "full" else build_tiny_xvector
    return TinyModels(Path(speecht5), Path(vocoder), build(root / f"spkrec-xvect-{xvector}", seed))


def parameter_counts(models: TinyModels) -> dict[str, float]:
    """Millions of parameters of the SpeechT5 model and the vocoder (read from their safetensors)."""
    from safetensors import safe_open

    counts = {}
    for name, folder in (("speecht5", models.speecht5), ("vocoder", models.vocoder)):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            counts[name] = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()) / 1e6
    return counts


# -------------------------------------------------------------------------------------------- data


def speech_like(seconds: float, rng: np.random.Generator, f0_range=(90.0, 220.0)) -> np.ndarray:
    """(T,) float32 at 16 kHz: voiced 'syllables' (harmonic tones, 0.2-0.8 s, Hann envelope)
    between 0.05-0.4 s pauses, over a -60 dBFS noise floor."""
    out = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    pos = 0
    while pos < len(out):
        n = int(rng.uniform(0.2, 0.8) * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        f0 = rng.uniform(*f0_range)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8)) * np.hanning(n)
        out[pos : pos + n] = 0.2 * tone[: len(out) - pos]
        pos += n + int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
    return out + 1e-3 * rng.standard_normal(len(out)).astype(np.float32)


def synthetic_pairs(folder: Path, n: int, seed: int = 0) -> list[Pair]:
    """Write ``n`` parallel pairs of speech-like audio (sources 1.5-5 s, targets within 15% of
    their source's length, a higher voice) under ``folder``; returns them."""
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(n):
        seconds = rng.uniform(1.5, 5.0)
        utt = f"bench_{k:04d}"
        src = write_wav(folder / "src" / f"{utt}.wav", speech_like(seconds, rng))
        tgt_seconds = seconds * rng.uniform(0.85, 1.15)
        tgt = write_wav(folder / "tgt" / f"{utt}.wav", speech_like(tgt_seconds, rng, (160.0, 280.0)))
        pairs.append(Pair(utt, src, tgt, tgt_spk="tgt", src_spk="src"))
    return pairs


def load_pairs(data: Mapping, n: int, workdir: Path, seed: int = 0) -> tuple[list[Pair], str]:
    """The first ``n`` ARCTIC pairs of ``data.src_spk`` -> ``data.tgt_spk`` under ``data.arctic_root``
    (repeated if there are fewer), or ``n`` synthetic pairs when that corpus is not there.
    Returns the pairs and a description of where they came from."""
    from vc.data.arctic import pair_speakers, speaker_dir

    root = Path(str(data["arctic_root"])).expanduser()
    if all(speaker_dir(root, spk) for spk in (data["src_spk"], data["tgt_spk"])):
        found = pair_speakers(root, data["src_spk"], data["tgt_spk"]).pairs
        pairs = [found[k % len(found)] for k in range(n)]
        return pairs, f"CMU ARCTIC {data['src_spk']} -> {data['tgt_spk']} ({root})"
    log.info(
        "%s has no ARCTIC speakers %s and %s: synthetic audio instead", root, data["src_spk"], data["tgt_spk"]
    )
    return synthetic_pairs(workdir / "synthetic", n, seed), "synthetic speech-like audio, 1.5-5 s"


def seconds_of(paths: Sequence[Path]) -> list[float]:
    """Durations in seconds of audio files (from their headers)."""
    import soundfile as sf

    return [sf.info(str(p)).duration for p in paths]


# -------------------------------------------------------------------------------- measurement


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _job(fn: Callable[..., dict], kwargs: dict, threads: int | None) -> dict:
    """Run one measurement and add its peak memory: ``peak_rss_mib`` (the whole process's peak,
    so a fresh process's is the measurement's own) and ``peak_gpu_mib`` on a GPU."""
    import transformers

    if threads:
        torch.set_num_threads(int(threads))
    # a random model never stops, so the converter warns about every chunk: expected here
    logging.getLogger("vc.converter").setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    cuda = torch.cuda.is_available() and str(kwargs.get("device", "cpu")).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = fn(**kwargs)
    out["peak_rss_mib"] = _peak_rss_mib()
    out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return out


def measure(fn: Callable[..., dict], kwargs: dict, *, isolate: bool, threads: int | None) -> dict:
    """``fn(**kwargs)`` plus its peak memory, in a fresh spawned process when ``isolate``."""
    if not isolate:
        return _job(fn, kwargs, threads)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_job, fn, kwargs, threads).result()


# --------------------------------------------------------------------------------------- training

# the wav2vec2-style convolutional front-end over raw audio
FEATURE_ENCODER = "speecht5.encoder.prenet.feature_encoder"


@dataclass(frozen=True)
class TrainVariant:
    """One rung of the training ladder: each adds one thing to the one before."""

    label: str
    cached: bool = True  # cached features + x-vectors through a DataLoader (else the seed's per-step work)
    bucketed: bool = False  # length-bucketed batches (else random)
    fused: bool = False  # fused AdamW (else torch's default AdamW, as the seed)
    bf16: bool = False  # bf16 autocast (on a GPU)
    frozen: bool = False  # the conv feature encoder frozen (model.freeze=[FEATURE_ENCODER])
    compile: bool = False  # torch.compile of the encoder-decoder
    gpu_only: bool = False


TRAIN_VARIANTS = {
    "seed": TrainVariant("seed-style: features + x-vectors every step, random batches, fp32", cached=False),
    "cached": TrainVariant("+ cached features + x-vectors (DataLoader workers)"),
    "bucketed": TrainVariant("+ length buckets (this codebase on a CPU)", bucketed=True),
    "fused": TrainVariant("+ fused AdamW", bucketed=True, fused=True, gpu_only=True),
    "bf16": TrainVariant(
        "+ bf16 autocast (this codebase on a GPU)", bucketed=True, fused=True, bf16=True, gpu_only=True
    ),
    # an option, not the default: it changes what is trained, so it never counts towards the goal
    "frozen": TrainVariant(
        "+ conv feature encoder frozen (option model.freeze; trains fewer weights)",
        bucketed=True,
        fused=True,
        bf16=True,
        frozen=True,
    ),
    "compile": TrainVariant(
        "+ torch.compile (warmed up on every batch shape)", bucketed=True, fused=True, compile=True
    ),
}


class SeedStyleBatches:
    """What the seed did at every step: read each pair's audio, compute the target log-mel
    (SpeechT5FeatureExtractor) and the target x-vector (SpeechBrain), then pad.

    ``batch(indices)`` -> the collated batch of :class:`vc.data.datamodule.VCCollator`.
    """

    def __init__(self, pairs: Sequence[Pair], audio: Mapping, embedder, reduction_factor: int):
        from vc.data.datamodule import VCCollator
        from vc.data.features import make_feature_extractor

        self.pairs, self.embedder = list(pairs), embedder
        self.sr = int(audio["sample_rate"])
        self.extractor = make_feature_extractor(audio)
        self.collate = VCCollator(reduction_factor)

    def batch(self, indices: Sequence[int]) -> dict:
        from vc.data.features import log_mel

        pairs = [self.pairs[i] for i in indices]
        srcs = [load_audio(p.src_path, self.sr) for p in pairs]
        tgts = [load_audio(p.tgt_path, self.sr) for p in pairs]
        xvectors = self.embedder.embed_batch(tgts)
        items = [
            {
                "utt_id": p.utt_id,
                "input_values": src,
                "labels": log_mel(self.extractor, tgt, self.sr),
                "speaker_embeddings": xv,
            }
            for p, src, tgt, xv in zip(pairs, srcs, tgts, xvectors, strict=True)
        ]
        return self.collate(items)


def seed_style_loss(module, batch: Mapping) -> torch.Tensor:
    """The seed's step: ``SpeechT5ForSpeechToSpeech.forward`` with the shifted target as decoder
    input. The forward returns only the post-net output, so a hook takes the post-net's three
    outputs (before, after, stop logits) for the same spectrogram loss the pipeline uses."""
    from transformers.models.speecht5.modeling_speecht5 import shift_spectrograms_right

    model = module.model
    captured = {}
    hook = model.speech_decoder_postnet.register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        decoder_input, _ = shift_spectrograms_right(batch["labels"], model.config.reduction_factor)
        out = model(
            input_values=batch["input_values"],
            attention_mask=batch["attention_mask"],
            speaker_embeddings=batch["speaker_embeddings"],
            decoder_input_values=decoder_input,
            output_attentions=module.criterion.attn_weight > 0,
            return_dict=True,
        )
    finally:
        hook.remove()
    before, after, logits = captured["out"]
    encoder_mask = model.speecht5.encoder.prenet._get_feature_vector_attention_mask(
        out.encoder_last_hidden_state.shape[1], batch["attention_mask"]
    )
    return module.criterion(before, after, logits, batch["labels"], encoder_mask, out.cross_attentions)[
        "loss"
    ]


def _to(batch: Mapping, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _train_setup(
    spec: TrainVariant, models: TinyModels, pairs, audio, cache_dir, batch_size, device, seed, num_workers
):
    """The module, optimiser, sampler, batch maker (indices -> batch), loader factory (list of
    batches -> iterable of batches) and loss function of one training variant."""
    from torch.utils.data import DataLoader

    from vc.data.datamodule import LengthBucketBatchSampler, RandomBatchSampler, VCCollator, VCDataset
    from vc.data.features import build_features
    from vc.data.speakers import SpeakerEmbedder, embeddings_for_pairs
    from vc.model.module import VCLitModule

    torch.manual_seed(seed)
    module = VCLitModule(
        pretrained=str(models.speecht5),
        vocoder=str(models.vocoder),
        speaker_encoder=str(models.xvector),
        audio=dict(audio),
        freeze=[FEATURE_ENCODER] if spec.frozen else [],
        # no LR schedule: it does not change what a step costs, and this loop has no trainer
        scheduler={},
    ).to(device)
    module.train()
    if spec.fused:
        optimizer = module.configure_optimizers()  # fused AdamW on a GPU
    else:
        # the seed's optimiser: torch's AdamW with its default implementation
        hp = {k: v for k, v in module.hparams.optimizer.items() if not k.startswith("_")}
        optimizer = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], **hp)
    rf = module.reduction_factor
    if not spec.cached:
        tgt_frames = [
            int(s * SAMPLE_RATE) // int(audio["hop_length"]) for s in seconds_of([p.tgt_path for p in pairs])
        ]
        batches = SeedStyleBatches(pairs, audio, SpeakerEmbedder(str(models.xvector), device=str(device)), rf)
        sampler = RandomBatchSampler(tgt_frames, batch_size, seed=seed)
        return (
            module,
            optimizer,
            sampler,
            batches.batch,
            lambda plan: (batches.batch(idx) for idx in plan),
            lambda b: seed_style_loss(module, b),
        )
    # the caches were filled before timing: these are cache reads
    feats, _, _ = build_features(pairs, audio, Path(cache_dir) / "features")
    vectors, _, _ = embeddings_for_pairs(
        pairs, source=str(models.xvector), mode="utterance", cache_dir=Path(cache_dir) / "xvectors"
    )
    ds = VCDataset(feats, vectors)
    cls = LengthBucketBatchSampler if spec.bucketed else RandomBatchSampler
    sampler = cls(ds.tgt_lengths, batch_size, seed=seed)
    collate = VCCollator(rf)
    if spec.compile:
        module.model.speecht5 = torch.compile(module.model.speecht5, dynamic=True)

    def loader(plan):
        # what train.py's datamodule builds: worker processes, page-locked batches on a GPU
        return DataLoader(
            ds,
            batch_sampler=plan,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )

    return (
        module,
        optimizer,
        sampler,
        lambda idx: collate([ds[i] for i in idx]),
        loader,
        lambda b: module.teacher_forced(b)["loss"],
    )


def train_job(
    variant: str,
    models: TinyModels,
    pairs: list[Pair],
    audio: dict,
    cache_dir: str,
    batch_size: int,
    warmup_steps: int,
    device: str,
    seed: int = 0,
    count_flops: bool = False,
    max_batch_cap: int = 0,
    num_workers: int = 2,
) -> dict:
    """One epoch over ``pairs`` with one training variant (see :data:`TRAIN_VARIANTS`), after
    ``warmup_steps`` untimed steps on the next epoch's batches, at least one per DataLoader worker
    (for torch.compile: the timed epoch's own batches, once). Batches come as train.py gets them:
    for the cached variants from a DataLoader with ``num_workers`` workers.

    Returns ``time_s``, ``samples``, ``audio_s`` (source seconds), ``steps``, ``padding`` (share of
    padded target frames), ``trainable`` (weights trained), ``timed_gpu_mib`` (peak GPU memory of
    the warm-up and timed epoch), ``flops`` (of the epoch's forward and backward passes, when
    ``count_flops``) and ``max_batch`` (the largest batch of the longest pair that trains without
    running out of GPU memory, up to ``max_batch_cap``; 0 skips the search).
    """
    dev = torch.device(device)
    spec = TRAIN_VARIANTS[variant]
    module, optimizer, sampler, make_batch, loader, loss_fn = _train_setup(
        spec, models, pairs, audio, cache_dir, batch_size, dev, seed, num_workers
    )
    bf16 = spec.bf16 and dev.type == "cuda"
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(batch: Mapping) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(_to(batch, dev))
        loss.backward()
        optimizer.step()

    sampler.set_epoch(0)
    epoch = sampler.batches()
    sampler.set_epoch(1)
    # torch.compile specialises on shapes: its warm-up sees every batch of the timed epoch once,
    # so the figure is the steady state a long run reaches, not the compiling
    # every DataLoader worker hands over a batch before timing starts: starting them is not the pipeline's pace
    warmup = epoch if spec.compile else sampler.batches()[: max(warmup_steps, num_workers if spec.cached else 0)]
    start = time.perf_counter() if not warmup else None
    real = padded = samples = src_samples = 0
    for k, batch in enumerate(loader(warmup + epoch)):
        step(batch)
        if k + 1 == len(warmup):
            _sync(dev)
            start = time.perf_counter()
        elif k >= len(warmup):
            real += int(batch["tgt_lengths"].sum())
            padded += int(batch["tgt_lengths"].max()) * len(batch["tgt_lengths"])
            samples += len(batch["tgt_lengths"])
            src_samples += int(batch["src_lengths"].sum())
    _sync(dev)
    out = {
        "time_s": time.perf_counter() - start,
        "samples": samples,
        "audio_s": src_samples / SAMPLE_RATE,
        "steps": len(epoch),
        "padding": 1.0 - real / max(padded, 1),
        "timed_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "flops": None,
        "max_batch": None,
        "trainable": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
    }
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            for indices in epoch:
                step(make_batch(indices))
        out["flops"] = counter.get_total_flops()
    if max_batch_cap:
        out["max_batch"] = _largest_batch(lambda idx: step(make_batch(idx)), sampler, batch_size, max_batch_cap)
    return out


def _largest_batch(step, sampler, start: int, cap: int) -> int:
    """The largest batch (doubling from ``start`` up to ``cap``) of copies of the longest pair
    that runs a training step without a CUDA out-of-memory error; 0 if none does."""
    longest = max(range(len(sampler.lengths)), key=lambda i: sampler.lengths[i])
    fits, size = 0, start
    while size <= cap:
        try:
            step([longest] * size)
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        fits, size = size, size * 2
    return fits


# ------------------------------------------------------------------------------------- conversion


def _load_parts(models: TinyModels, device: torch.device):
    from vc.model.pretrained import load_feature_extractor, load_speecht5, load_vocoder

    model = load_speecht5(str(models.speecht5)).to(device).eval()
    return (
        model,
        load_feature_extractor(str(models.speecht5)),
        load_vocoder(str(models.vocoder)).to(device).eval(),
    )


def _converter(
    models: TinyModels, device: torch.device, precision: str, out_ratio: float, batch_size: int, **kw
):
    """A :class:`VoiceConverter` of the bench models that never stops before ``out_ratio``."""
    from vc.converter import DTYPES, VoiceConverter
    from vc.errors import ConfigError

    model, extractor, vocoder = _load_parts(models, device)
    dtype, quantize = torch.float32, "none"
    if precision == "fp16-decoder":
        quantize = "fp16"
    elif precision == "int8":
        if device.type != "cpu":
            raise ConfigError("convert.precisions: int8 dynamic quantisation runs on the CPU only.")
        # int8 weights for every Linear layer, activations quantised on the fly; torch.ao's eager
        # quantisation warns that it moves to torchao, which this project does not depend on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif precision != "fp32":
        dtype = DTYPES[precision]
    return VoiceConverter(
        model,
        extractor,
        vocoder,
        speaker_encoder=str(models.xvector),
        generation={"threshold": NEVER_STOP, "minlenratio": 0.0, "maxlenratio": out_ratio},
        device=device,
        dtype=dtype,
        quantize=quantize,
        batch_size=batch_size,
        **kw,
    )


def convert_job(
    variant: str,
    models: TinyModels,
    paths: list[Path],
    speaker: np.ndarray,
    out_ratio: float,
    batch_size: int,
    device: str,
    precision: str = "fp32",
    keep_outputs: int = 0,
    seed: int = 0,
) -> dict:
    """Convert ``paths`` one by one the seed's way (``variant`` "one_by_one") or with
    VoiceConverter in batches ("batched", in ``precision`` fp32 | bf16 | fp16 | fp16-decoder | int8),
    after an untimed warm-up on a 1 s clip and the first clip (one by one) or batch (batched).

    Returns ``time_s``, ``utterances``, ``audio_s`` (input seconds), ``out_s`` (output seconds) and
    ``mels``: for the batched variant, the log-mels of the first ``keep_outputs`` clips generated
    after timing by :func:`generated_mels` with the converter's model (for the MCD against fp32).
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    wavs = [load_audio(p, SAMPLE_RATE) for p in paths]
    warm = speech_like(1.0, np.random.default_rng(seed))
    spk = torch.from_numpy(np.asarray(speaker, dtype=np.float32))[None].to(dev)
    if variant == "one_by_one":
        model, extractor, vocoder = _load_parts(models, dev)

        @torch.inference_mode()
        def run(batch: list[np.ndarray]) -> list[np.ndarray]:
            outs = []
            for wav in batch:
                inputs = extractor(audio=wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
                speech = model.generate_speech(
                    inputs["input_values"].to(dev),
                    spk,
                    threshold=NEVER_STOP,
                    maxlenratio=out_ratio,
                    vocoder=vocoder,
                )
                outs.append(speech.float().cpu().numpy())
            return outs

    else:
        converter = _converter(models, dev, precision, out_ratio, batch_size, seed=seed)

        def run(batch: list[np.ndarray]) -> list[np.ndarray]:
            return [c.wav for c in converter.convert_many(batch, speaker=speaker)]

    # untimed warm-up at the timed shapes (kernel selection, caches, lazy initialisation)
    run([warm, *wavs[: 1 if variant == "one_by_one" else batch_size]])
    _sync(dev)
    start = time.perf_counter()
    outs = run(wavs)
    _sync(dev)
    elapsed = time.perf_counter() - start
    mels = []
    if variant != "one_by_one" and keep_outputs:
        mels = generated_mels(
            converter.model,
            converter.feature_extractor,
            wavs[:keep_outputs],
            speaker,
            out_ratio,
            converter.dtype,
            seed,
        )
    return {
        "time_s": elapsed,
        "utterances": len(wavs),
        "audio_s": sum(len(w) for w in wavs) / SAMPLE_RATE,
        "out_s": sum(len(o) for o in outs) / SAMPLE_RATE,
        "mels": mels,
    }


@torch.inference_mode()
def generated_mels(
    model, extractor, wavs: Sequence[np.ndarray], speaker: np.ndarray, out_ratio: float, dtype, seed: int = 0
) -> list[np.ndarray]:
    """(T_i,) 16 kHz clips -> (frames, 80) float32 log10-mels from ``generate_speech``, one clip at
    a time, reseeded before each so that the decoder pre-net's dropout masks are the same for every
    model this is called with."""
    device = next(model.parameters()).device
    spk = torch.from_numpy(np.asarray(speaker, dtype=np.float32))[None].to(device, dtype)
    mels = []
    for wav in wavs:
        inputs = extractor(audio=wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_values"]
        torch.manual_seed(seed)
        mel = model.generate_speech(
            inputs.to(device, dtype), spk, threshold=NEVER_STOP, maxlenratio=out_ratio
        )
        mels.append(mel.float().cpu().numpy())
    return mels


def mel_cepstral_distortion(ref: np.ndarray, hyp: np.ndarray, order: int = 24) -> float:
    """MCD in dB between two (frames, mels) log10-mel spectrograms of the same length, frame by frame.

    Mel-cepstra are the orthonormal DCT-II of the natural-log mels; coefficients 1..``order`` are
    compared (c0, the level, is left out as in :mod:`vc.metrics`):
    ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)``, averaged over frames.
    """
    from scipy.fft import dct

    ref_c, hyp_c = (dct(np.log(10.0) * np.asarray(x, np.float64), norm="ortho", axis=-1) for x in (ref, hyp))
    diff2 = np.sum((ref_c[:, 1 : order + 1] - hyp_c[:, 1 : order + 1]) ** 2, axis=-1)
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * diff2)))


def long_input(paths: Sequence[Path], minutes: float, seed: int = 0) -> np.ndarray:
    """(T,) float32 16 kHz audio of ``minutes``: the clips of ``paths`` in turn, with 0.2-0.6 s
    pauses (a -60 dBFS noise floor) between them."""
    rng = np.random.default_rng(seed)
    clips = [load_audio(p, SAMPLE_RATE) for p in paths]
    total = int(minutes * 60 * SAMPLE_RATE)
    out = np.empty(total, dtype=np.float32)
    pos, k = 0, 0
    while pos < total:
        pause = 1e-3 * rng.standard_normal(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)).astype(np.float32)
        piece = np.concatenate([clips[k % len(clips)], pause])[: total - pos]
        out[pos : pos + len(piece)] = piece
        pos, k = pos + len(piece), k + 1
    return out


def long_job(
    models: TinyModels,
    paths: list[Path],
    minutes: float,
    speaker: np.ndarray,
    out_ratio: float,
    batch_size: int,
    max_chunk_seconds: float,
    device: str,
    precision: str = "fp32",
    seed: int = 0,
) -> dict:
    """Convert one source of ``minutes`` (:func:`long_input`) with VoiceConverter.

    Returns ``time_s``, ``audio_s``, ``out_s``, ``chunks`` and ``rss_before_mib`` (the peak RSS
    once the models are loaded and the input is built, before converting).
    """
    dev = torch.device(device)
    converter = _converter(
        models, dev, precision, out_ratio, batch_size, max_chunk_seconds=max_chunk_seconds, seed=seed
    )
    wav = long_input(paths, minutes, seed)
    rss_before = _peak_rss_mib()
    _sync(dev)
    start = time.perf_counter()
    out = converter.convert_many([wav], speaker=speaker)[0]
    _sync(dev)
    return {
        "time_s": time.perf_counter() - start,
        "audio_s": len(wav) / SAMPLE_RATE,
        "out_s": len(out.wav) / SAMPLE_RATE,
        "chunks": out.meta["chunks"],
        "rss_before_mib": rss_before,
    }


# ------------------------------------------------------------------------------------------ report


@dataclass
class Report:
    """What a run measured: ``meta`` (device, versions, settings) and one list of rows per section."""

    meta: dict
    train: list[dict] = field(default_factory=list)
    convert: list[dict] = field(default_factory=list)
    long: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _num(x, fmt: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def our_variant(gpu: bool) -> str:
    """The training rung that is this codebase's configuration on the device (what the goal counts)."""
    return "bf16" if gpu else "bucketed"


def goals(report: Report) -> list[tuple[str, str, str, str]]:
    """(goal, target, measured, verdict) for each goal of the issue; verdict met | NOT met | not measured."""
    meta = report.meta
    gpu = meta["device_type"] == "cuda"
    out = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    ours = [r for r in report.train if r["variant"] == our_variant(gpu)]
    out.append(
        (
            f"training samples/s vs seed-style ({meta['device_type']})",
            f">= {GOALS['train']:g}x",
            f"{ours[0]['ratio']:.2f}x ({ours[0]['label']})" if ours else "-",
            verdict(ours[0]["ratio"] >= GOALS["train"] if ours else None),
        )
    )
    accepted = [r for r in report.convert if r["variant"] != "one_by_one" and r.get("accepted", True)]
    best = max(accepted, key=lambda r: r["ratio"], default=None)
    for kind in ("cpu", "gpu"):
        target = GOALS[f"convert_{kind}"]
        here = (kind == "gpu") == gpu and best is not None
        why = "section not run" if (kind == "gpu") == gpu else "no such device in this run"
        out.append(
            (
                f"conversion vs one-by-one ({kind})",
                f">= {target:g}x",
                f"{best['ratio']:.2f}x ({best['label']})" if here else f"- ({why})",
                verdict(best["ratio"] >= target if here else None),
            )
        )
    if report.long:
        rows = sorted(report.long, key=lambda r: r["minutes"])
        peaks = [r["peak_gpu_mib"] if gpu else r["peak_rss_mib"] for r in rows]
        # flat: no growth between the two longest inputs (shorter ones may not reach steady state)
        growth = peaks[-1] / peaks[-2] - 1 if len(peaks) > 1 else None
        under = peaks[-1] / 1024 < GOALS["long_gib"]
        out.append(
            (
                f"long audio: peak {'GPU memory' if gpu else 'RSS'} flat in input length, "
                f"{rows[-1]['minutes']:g} min under {GOALS['long_gib']:g} GiB",
                f"< {GOALS['long_gib']:g} GiB, no growth (< 15%) from {rows[-2]['minutes']:g} to "
                f"{rows[-1]['minutes']:g} min"
                if growth is not None
                else f"< {GOALS['long_gib']:g} GiB",
                ", ".join(f"{r['minutes']:g} min {p:.0f} MiB" for r, p in zip(rows, peaks))
                + (f" ({growth:+.0%})" if growth is not None else ""),
                verdict(under and (growth is None or growth < 0.15)),
            )
        )
    else:
        out.append(("long audio: peak memory flat, 10 min < 4 GiB", "", "-", verdict(None)))
    return out


def render(report: Report) -> str:
    """The report as Markdown: settings, one table per section, the goals."""
    m = report.meta
    gpu = m["device_type"] == "cuda"
    parts = [
        f"# vc.bench {m['date']}",
        "",
        f"- command: `{m['command']}`",
        f"- device: {m['device']}; CPU: {m['cpu']} ({m['cores']} cores, torch threads {m['threads']})",
        f"- versions: python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"speechbrain {m['speechbrain']}",
        f"- models (random weights): SpeechT5 {m['params']['speecht5']:.1f}M parameters ({m['size']}), "
        f"HiFiGAN {m['params']['vocoder']:.1f}M, x-vector {m['xvector']}",
        f"- audio: {m['corpus']}",
    ]
    if report.train:
        t = m["train"]
        parts += [
            "",
            f"## Training: one epoch of {t['utterances']} pairs, batch {t['batch_size']}, "
            f"{t['warmup_steps']} untimed warm-up step(s), at least one per DataLoader worker "
            f"({t['num_workers']})",
            "",
        ]
        rows = []
        for r in report.train:
            tflops = r["flops"] / r["time_s"] / 1e12 if r.get("flops") else None
            mfu = tflops / m["peak_tflops"] if tflops and m.get("peak_tflops") else None
            rows.append(
                [
                    r["label"],
                    _num(r["samples"] / r["time_s"], ".3f"),
                    _num(r["audio_s"] / r["time_s"], ".3f"),
                    f"{r['ratio']:.2f}x",
                    f"{r['padding']:.1%}",
                    _num(r["peak_rss_mib"], ".0f"),
                    _num(r["peak_gpu_mib"], ".0f"),
                    _num(tflops, ".1f"),
                    _num(mfu, ".1%"),
                    _num(r.get("max_batch"), "d"),
                ]
            )
        parts.append(
            _table(
                [
                    "variant",
                    "samples/s",
                    "audio s/s",
                    "vs seed",
                    "padding",
                    "peak RSS MiB",
                    "peak GPU MiB",
                    "TFLOP/s",
                    "MFU",
                    "largest batch",
                ],
                rows,
            )
        )
    if report.convert:
        c = m["convert"]
        parts += [
            "",
            f"## Conversion: {c['utterances']} utterances, batch {c['batch_size']}, fixed output length "
            f"(maxlenratio {c['out_ratio']:g}, stop threshold never reached)"
            + (f", best of {c['repeats']} interleaved rounds" if c.get("repeats", 1) > 1 else ""),
            "",
        ]
        rows = [
            [
                r["label"],
                _num(r["audio_s"], ".1f"),
                _num(r["out_s"], ".1f"),
                _num(r["time_s"], ".1f"),
                _num(r["utterances"] / r["time_s"], ".3f"),
                _num(r["time_s"] / r["audio_s"], ".2f"),
                f"{r['ratio']:.2f}x",
                _num(r.get("mcd_db"), ".2f", "-") + ("" if r.get("accepted", True) else " (over bound)"),
                _num(r["peak_rss_mib"], ".0f"),
                _num(r["peak_gpu_mib"], ".0f"),
            ]
            for r in report.convert
        ]
        parts.append(
            _table(
                [
                    "variant",
                    "input s",
                    "output s",
                    "time s",
                    "utt/s",
                    "RTF",
                    "vs one-by-one",
                    "MCD vs fp32 dB",
                    "peak RSS MiB",
                    "peak GPU MiB",
                ],
                rows,
            )
        )
    if report.long:
        lg = m["long"]
        parts += [
            "",
            f"## Long audio: one source per fresh process, VoiceConverter batch {lg['batch_size']}, chunks of at "
            f"most {lg['max_chunk_seconds']:g} s, maxlenratio {lg['out_ratio']:g}, {lg['precision']}",
            "",
        ]
        rows = [
            [
                f"{r['minutes']:g}",
                str(r["chunks"]),
                _num(r["time_s"], ".1f"),
                _num(r["time_s"] / r["audio_s"], ".2f"),
                _num(r["rss_before_mib"], ".0f"),
                _num(r["peak_rss_mib"], ".0f"),
                _num(r["peak_gpu_mib"], ".0f"),
            ]
            for r in report.long
        ]
        parts.append(
            _table(
                ["input min", "chunks", "time s", "RTF", "RSS before MiB", "peak RSS MiB", "peak GPU MiB"],
                rows,
            )
        )
    parts += ["", "## Goals", "", _table(["goal", "target", "measured", "verdict"], goals(report))]
    if report.notes:
        parts += ["", *[f"- {n}" for n in report.notes]]
    if not m["isolate"]:
        parts += [
            "",
            "isolate=false: a peak RSS is the whole process's peak up to that row, not the row's own.",
        ]
    if not gpu:
        parts += ["", "No GPU in this run: no bf16, largest-batch or MFU figures."]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ run


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # called without Hydra (tests)
        overrides = []
    return " ".join(["python -m vc.bench", *overrides])


def _meta(cfg: DictConfig, device: torch.device, params: dict, corpus: str) -> dict:
    import transformers

    try:
        import speechbrain

        sb = speechbrain.__version__
    except ImportError:
        sb = "-"
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = cfg.get("peak_tflops")
    if peak is None and gpu_name:
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu_name), None)
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": _command(),
        "device": gpu_name or "CPU",
        "device_type": device.type,
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": cfg.threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "speechbrain": sb,
        "size": cfg.size,
        "xvector": cfg.xvector,
        "params": params,
        "corpus": corpus,
        "peak_tflops": peak,
        "isolate": bool(cfg.isolate),
        "train": OmegaConf.to_container(cfg.train),
        "convert": OmegaConf.to_container(cfg.convert),
        "long": OmegaConf.to_container(cfg.long),
    }


def _precisions(cfg: DictConfig, device: torch.device) -> list[str]:
    value = cfg.convert.precisions
    if value == "auto":
        from vc.model.quantize import resolve_quantize

        if device.type == "cuda":
            return ["bf16"]
        return ["fp16-decoder", "int8"] if resolve_quantize("auto", device, torch.float32) else ["int8"]
    return [str(p) for p in (value or [])]


def train_variants(cfg: DictConfig, device: torch.device) -> list[str]:
    """The training rungs to run: ``train.variants`` (null: all) that this device and ``compile``
    allow, in ladder order. A :class:`ConfigError` for a name that is not a rung or a list without seed."""
    from vc.errors import ConfigError

    chosen = set(cfg.train.variants or TRAIN_VARIANTS)
    if chosen - set(TRAIN_VARIANTS) or "seed" not in chosen:
        raise ConfigError(
            f"train.variants={sorted(chosen)}: use null or a list of {', '.join(TRAIN_VARIANTS)} that includes seed."
        )
    return [
        name
        for name, spec in TRAIN_VARIANTS.items()
        if name in chosen and (device.type == "cuda" or not spec.gpu_only) and (cfg.compile or not spec.compile)
    ]


def run_train(cfg: DictConfig, report: Report, models: TinyModels, pairs, cache_dir: Path, device) -> None:
    """Fill the caches (timed apart), then measure each training variant."""
    from vc.data.features import build_features
    from vc.data.speakers import embeddings_for_pairs

    t = cfg.train
    audio = OmegaConf.to_container(cfg.audio)
    start = time.perf_counter()
    build_features(pairs, audio, cache_dir / "features")
    embeddings_for_pairs(
        pairs, source=str(models.xvector), mode="utterance", cache_dir=cache_dir / "xvectors"
    )
    report.notes.append(
        f"training caches (features + x-vectors of {len(pairs)} pairs) built once before timing in "
        f"{time.perf_counter() - start:.1f} s; not part of any training figure"
    )
    # a CPU step is slow and its kernels do not depend on the shape; on a GPU every new batch
    # shape costs a first-time price, so a few of the shapes to come are seen first
    warmup_steps = int(t.warmup_steps) if t.warmup_steps is not None else (8 if device.type == "cuda" else 1)
    report.meta["train"]["warmup_steps"] = warmup_steps
    for variant in train_variants(cfg, device):
        ours = variant == our_variant(gpu=True)  # the largest-batch search is for the GPU configuration
        kwargs = {
            "variant": variant,
            "models": models,
            "pairs": pairs,
            "audio": audio,
            "cache_dir": str(cache_dir),
            "batch_size": int(t.batch_size),
            "warmup_steps": warmup_steps,
            "device": str(device),
            "seed": int(cfg.seed),
            "count_flops": device.type == "cuda",
            "max_batch_cap": int(t.max_batch_cap) if ours else 0,
            "num_workers": int(t.num_workers),
        }
        label = TRAIN_VARIANTS[variant].label
        log.info("train: %s", label)
        row = measure(train_job, kwargs, isolate=cfg.isolate, threads=cfg.threads)
        # the training's own peak, not the largest-batch search's
        if row.get("timed_gpu_mib") is not None:
            row["peak_gpu_mib"] = row["timed_gpu_mib"]
        row.update(variant=variant, label=label)
        report.train.append(row)
        log.info("train: %s: %.3f samples/s", variant, row["samples"] / row["time_s"])
    base = report.train[0]["samples"] / report.train[0]["time_s"]
    for row in report.train:
        row["ratio"] = row["samples"] / row["time_s"] / base


def run_convert(cfg: DictConfig, report: Report, models: TinyModels, pairs, speaker, device) -> None:
    """Measure one-by-one conversion, batched fp32 and each reduced precision."""
    c = cfg.convert
    paths = [p.src_path for p in pairs]
    common = {
        "models": models,
        "paths": paths,
        "speaker": speaker,
        "out_ratio": float(c.out_ratio),
        "batch_size": int(c.batch_size),
        "device": str(device),
        "seed": int(cfg.seed),
    }
    precisions = _precisions(cfg, device)
    keep = int(c.mcd_utterances) if precisions else 0
    plan = [("one_by_one", "fp32", "one-by-one generate_speech + vocoder (seed), fp32")]
    plan += [("batched", p, f"VoiceConverter, batch {c.batch_size}, {p}") for p in ["fp32", *precisions]]
    from vc.errors import ConfigError

    rounds = int(c.get("repeats", 1))
    if rounds < 1:
        raise ConfigError(f"convert.repeats={rounds}: use 1 or more.")
    # Rows run in turn, round after round, and each keeps its fastest round: a slow spell of a
    # shared machine then costs every row alike instead of whichever row it fell on.
    rows: list[dict] = []
    for round_no in range(rounds):
        for i, (variant, precision, label) in enumerate(plan):
            log.info("convert, round %d/%d: %s", round_no + 1, rounds, label)
            kwargs = {
                **common,
                "variant": variant,
                "precision": precision,
                "keep_outputs": keep if round_no == 0 else 0,
            }
            row = measure(convert_job, kwargs, isolate=cfg.isolate, threads=cfg.threads)
            log.info("convert: %s: %.1f s", label, row["time_s"])
            if round_no == 0:
                row.update(variant=variant, precision=precision, label=label, times_s=[row["time_s"]])
                rows.append(row)
                continue
            best = rows[i]
            best["times_s"].append(row["time_s"])
            best["time_s"] = min(best["times_s"])
            for key in ("peak_rss_mib", "peak_gpu_mib"):
                if row.get(key) is not None:
                    best[key] = max(best[key] or 0.0, row[key])
    report.convert.extend(rows)
    base = report.convert[0]["time_s"]
    fp32 = report.convert[1]["mels"]
    for row in report.convert:
        row["ratio"] = base / row["time_s"]
        if row["precision"] != "fp32":
            row["mcd_db"] = float(np.mean([mel_cepstral_distortion(r, h) for r, h in zip(fp32, row["mels"])]))
            row["accepted"] = row["mcd_db"] <= float(c.mcd_bound_db)
        row.pop("mels")
    if precisions:
        report.notes.append(
            f"reduced precision counts towards the conversion goal only if its MCD against fp32 is at most "
            f"{c.mcd_bound_db:g} dB: log-mels of the first {keep} utterances generated by both models with the same "
            "dropout seed, compared frame by frame (mel-cepstra from a DCT of the log-mels, c0 left out); "
            "the random vocoder's output is near silence, so waveform MCD would say nothing"
        )


def run_long(cfg: DictConfig, report: Report, models: TinyModels, pairs, speaker, device) -> None:
    """Convert one long source per length, each in a fresh process (peak memory per length)."""
    lg = cfg.long
    precision = str(lg.precision)
    if precision == "auto":  # what infer.py's defaults (dtype=auto, quantize=auto) run
        from vc.model.quantize import resolve_quantize

        cpu = "fp16-decoder" if resolve_quantize("auto", device, torch.float32) else "fp32"
        precision = "bf16" if device.type == "cuda" else cpu
    report.meta["long"]["precision"] = precision
    for minutes in lg.minutes:
        kwargs = {
            "models": models,
            "paths": [p.src_path for p in pairs],
            "minutes": float(minutes),
            "speaker": speaker,
            "out_ratio": float(lg.out_ratio),
            "batch_size": int(lg.batch_size),
            "max_chunk_seconds": float(lg.max_chunk_seconds),
            "device": str(device),
            "precision": precision,
            "seed": int(cfg.seed),
        }
        log.info("long: %g min", minutes)
        row = measure(long_job, kwargs, isolate=True, threads=cfg.threads)
        row["minutes"] = float(minutes)
        report.long.append(row)
        log.info("long: %g min: %.1f s, peak RSS %.0f MiB", minutes, row["time_s"], row["peak_rss_mib"])


SECTIONS = ("train", "convert", "long")


def figure(report: Mapping):
    """The report (a :class:`Report`'s ``__dict__`` or its ``bench.json``) as a picture: ratios
    against the goals per section, and long-audio peak memory against input length."""
    from vc.plots import bench_figure

    meta = report["meta"]
    gpu = meta["device_type"] == "cuda"
    panels = []
    if report.get("train"):
        ours = our_variant(gpu)
        bars = [(r["variant"], r["ratio"], "ours" if r["variant"] == ours else "other") for r in report["train"]]
        panels.append(("training samples/s", bars, GOALS["train"], "x the seed-style baseline"))
    if report.get("convert"):
        bars = []
        for r in report["convert"]:
            name = "one by one (seed)" if r["variant"] == "one_by_one" else f"batch {meta['convert']['batch_size']}, {r['precision']}"
            kind = "other" if r["variant"] == "one_by_one" else ("ours" if r.get("accepted", True) else "rejected")
            bars.append((name, r["ratio"], kind))
        goal = GOALS["convert_gpu" if gpu else "convert_cpu"]
        panels.append(("conversion", bars, goal, "x one-by-one generate_speech + vocoder"))
    memory = None
    if report.get("long"):
        rows = sorted(report["long"], key=lambda r: r["minutes"])
        key, what = ("peak_gpu_mib", "peak GPU MiB") if gpu else ("peak_rss_mib", "peak RSS MiB")
        memory = ([r["minutes"] for r in rows], [r[key] for r in rows], GOALS["long_gib"] * 1024, what)
    device = meta["device"] if gpu else f"{meta['cpu']}, {meta['threads']} thread(s)"
    return bench_figure(panels, memory, title=f"vc.bench {meta['date']}, {device}")


def plot_reports(paths: Sequence[str | os.PathLike], out: Path) -> Path:
    """Draw earlier runs' ``bench.json`` files as one ``bench.png`` in ``out``: each section from
    the last file that has it, the settings from the first."""
    from vc.errors import ConfigError
    from vc.plots import save

    merged: dict = {}
    for path in paths:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"plot: {path} is not a readable bench.json ({err}). Give the files runs wrote.") from None
        if not isinstance(data, dict) or "meta" not in data:
            raise ConfigError(f"plot: {path} is JSON but not a bench.json (no 'meta'). Give the files runs wrote.")
        merged.setdefault("meta", data["meta"])
        merged.update({k: data[k] for k in SECTIONS if data.get(k)})
    out.mkdir(parents=True, exist_ok=True)
    save(figure(merged), out / "bench.png")
    log.info("picture: %s", out / "bench.png")
    return out / "bench.png"


def run(cfg: DictConfig) -> Report:
    """Build the models and the audio, run the sections in ``cfg.sections``, print the report and
    write ``bench.md``, ``bench.json`` and ``bench.png`` to the run folder (when there is one).
    Returns the report; with ``plot`` set, draws those earlier runs instead and returns None."""
    from vc.cli import output_dir, threads_setting
    from vc.converter import resolve_device
    from vc.data.speakers import SpeakerEmbedder
    from vc.errors import ConfigError

    if cfg.get("plot"):
        plot_reports(list(cfg.plot), output_dir(cfg) or Path.cwd())
        return None
    unknown = sorted(set(cfg.sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"sections: unknown {', '.join(unknown)}; use any of {', '.join(SECTIONS)}.")
    device = resolve_device(str(cfg.device))
    if "train" in cfg.sections:
        train_variants(cfg, device)  # a bad train.variants fails before the models are built
    if threads_setting(cfg.threads) is not None:
        torch.set_num_threads(cfg.threads)
    work = Path(tempfile.mkdtemp(prefix="vc-bench-"))
    try:
        log.info("building %s models with random weights in %s", cfg.size, work)
        models = build_models(work / "models", str(cfg.size), str(cfg.xvector), int(cfg.seed))
        n = max(int(cfg.train.utterances), int(cfg.convert.utterances))
        pairs, corpus = load_pairs(cfg.data, n, work, int(cfg.seed))
        report = Report(meta=_meta(cfg, device, parameter_counts(models), corpus))
        speaker = SpeakerEmbedder(str(models.xvector)).embed(load_audio(pairs[0].tgt_path, SAMPLE_RATE))
        if "train" in cfg.sections:
            run_train(cfg, report, models, pairs[: int(cfg.train.utterances)], work / "cache", device)
        if "convert" in cfg.sections:
            run_convert(cfg, report, models, pairs[: int(cfg.convert.utterances)], speaker, device)
        if "long" in cfg.sections:
            run_long(cfg, report, models, pairs[: int(cfg.convert.utterances)], speaker, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(report)
    print(text)
    out = output_dir(cfg)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.md").write_text(text)
        (out / "bench.json").write_text(json.dumps(report.__dict__, indent=1, default=str))
        from vc.plots import save

        save(figure(report.__dict__), out / "bench.png")
        log.info("report: %s (picture: bench.png)", out / "bench.md")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig):
    from vc.cli import main as cli_main

    return cli_main(run, cfg)


if __name__ == "__main__":
    main()
