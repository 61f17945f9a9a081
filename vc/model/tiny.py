"""Tiny local checkpoints with random weights, built offline, that load through the real loaders.

They stand in for ``microsoft/speecht5_vc``, ``microsoft/speecht5_hifigan`` and
``speechbrain/spkrec-xvect-voxceleb`` in tests and ``experiment=smoke``: the same classes, file
layouts and interfaces (16 kHz audio, 80 log-mel bins, hop 256, 512-d x-vectors), a few hundred
thousand parameters instead of millions.

    python -m vc.model.tiny OUT_DIR     # builds OUT_DIR/{speecht5_vc,speecht5_hifigan,spkrec-xvect}
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch

SPEECHT5_DIR = "speecht5_vc"
HIFIGAN_DIR = "speecht5_hifigan"
XVECTOR_DIR = "spkrec-xvect"
# A folder counts as built once its last-written file exists; the atomic rename makes that all-or-nothing.
# The name carries the stand-ins' version: folders built by an older version are rebuilt.
_COMPLETE = ".complete-v2"

# The real model's x-vector recipe (speechbrain/spkrec-xvect-voxceleb) with small TDNN layers.
# lin_neurons stays 512 because SpeechT5 expects 512-d speaker embeddings. ``pretrained_path``
# is this folder; SpeakerEmbedder re-points it at the folder it loads from, so copies still work.
XVECTOR_HPARAMS = """\
# ############################################################################
# Model: tiny x-vector (random weights) in the layout of speechbrain/spkrec-xvect-voxceleb
# Built by vc.model.tiny for offline tests; not a speaker encoder.
# ############################################################################

# Feature parameters
n_mels: 24

# Pretrain folder
pretrained_path: {pretrained_path}

# Output parameters
out_n_neurons: {n_speakers}

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [32, 32, 32, 32, 64]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 512

classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 512]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: 32
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""
_XVECTOR_SPEAKERS = ("spk0", "spk1", "spk2", "spk3")


@contextmanager
def _seeded(seed: int):
    """Seed the CPU generator the random initialisation draws from, and give the caller's state back."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


class TinyModels(NamedTuple):
    """Folders of the three tiny parts, to pass as ``model.pretrained``, ``model.vocoder`` and
    ``data.speaker.source``."""

    speecht5: Path
    vocoder: Path
    xvector: Path


def tiny_speecht5_config():
    """A SpeechT5Config with small sizes and the real model's audio interface.

    Everything but the sizes is the converted ``microsoft/speecht5_vc``'s: SpeechT5Config's
    defaults (dropout 0.1, LayerDrop 0.1/0.1, the speech pre- and post-net dropouts, relative
    positions 160), the 7 conv layers of the feature encoder with their kernels and strides (320x
    downsampling of 16 kHz audio), 80 mel bins, reduction factor 2, 512-d speaker embeddings, and
    the conversion script's ``max_speech_positions`` 1876 for speech-to-speech (1876 decoder steps
    are 3752 frames, 60 s of output; at maxlenratio 20 an input of 3.75 s or more reaches it). A
    test that needs another value sets it on its own copy.
    """
    from transformers import SpeechT5Config

    return SpeechT5Config(
        hidden_size=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        speech_decoder_prenet_units=32,
        speech_decoder_postnet_units=32,
        speech_decoder_postnet_layers=2,
        num_mel_bins=80,
        reduction_factor=2,
        speaker_embedding_dim=512,
        # transformers' convert_speecht5_original_pytorch_checkpoint_to_pytorch.py, task s2s
        max_speech_positions=1876,
    )


def build_tiny_speecht5(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random tiny ``SpeechT5ForSpeechToSpeech`` (safetensors) and the default
    ``SpeechT5FeatureExtractor`` to ``path``; loadable with ``from_pretrained(path)``."""
    from transformers import SpeechT5FeatureExtractor, SpeechT5ForSpeechToSpeech

    path = Path(path)
    with _seeded(seed):
        model = SpeechT5ForSpeechToSpeech(tiny_speecht5_config())
    model.save_pretrained(path, safe_serialization=True)
    # A VC checkpoint's processor needs only the feature extractor (there is no text side).
    SpeechT5FeatureExtractor().save_pretrained(path)
    return path


def build_tiny_hifigan(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random tiny ``SpeechT5HifiGan`` to ``path``: (T, 80) log-mel -> T * 256 samples at 16 kHz.

    Like ``microsoft/speecht5_hifigan`` it normalises its input with stored ``mean``/``scale``
    buffers (``normalize_before``); here they hold plausible log10-mel statistics.
    """
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    path = Path(path)
    config = SpeechT5HifiGanConfig(
        model_in_dim=80,
        sampling_rate=16_000,
        upsample_initial_channel=32,
        upsample_rates=(4, 4, 4, 4),
        upsample_kernel_sizes=(8, 8, 8, 8),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        normalize_before=True,
    )
    with _seeded(seed):
        model = SpeechT5HifiGan(config)
    with torch.no_grad():
        model.mean.copy_(torch.linspace(-2.0, -4.0, config.model_in_dim))
        model.scale.copy_(torch.full((config.model_in_dim,), 1.2))
        # random init gives ~1e-7 amplitude, which every silence check rejects: scale the last
        # layer so a plausible mel comes out at speech level (RMS about 0.1)
        with _seeded(seed):
            probe = model.mean + model.scale * torch.randn(200, config.model_in_dim)
        rms = model(probe).pow(2).mean().sqrt()
        model.conv_post.weight.mul_(0.1 / rms)
        model.conv_post.bias.mul_(0.1 / rms)
    model.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_xvector(
    path: str | os.PathLike, seed: int = 0, *, pretrained_path: str | os.PathLike | None = None
) -> Path:
    """Write a SpeechBrain model folder in the layout of ``speechbrain/spkrec-xvect-voxceleb``
    (hyperparams.yaml, embedding_model.ckpt, mean_var_norm_emb.ckpt, classifier.ckpt,
    label_encoder.txt) with random weights; ``EncoderClassifier.from_hparams(source=path)`` loads
    it offline and ``encode_batch`` gives 512-d embeddings of 16 kHz audio.

    The yaml's ``pretrained_path`` (where the pretrainer finds the weights) is ``pretrained_path``,
    default ``path``: the folder's final place when it is built elsewhere first.
    :class:`vc.data.speakers.SpeakerEmbedder` re-points that key at the folder it loads, so a
    moved copy still loads through it.
    """
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    final = Path(pretrained_path or path).resolve()
    text = XVECTOR_HPARAMS.format(pretrained_path=final.as_posix(), n_speakers=len(_XVECTOR_SPEAKERS))
    (path / "hyperparams.yaml").write_text(text, encoding="utf-8")
    with _seeded(seed):
        hparams = load_hyperpyyaml(text)
    # Global statistics as a trained model stores them (loading expects count > 0).
    norm = hparams["mean_var_norm_emb"]
    norm.count, norm.glob_mean, norm.glob_std = 1, torch.zeros(512), torch.ones(512)
    hparams["label_encoder"].update_from_iterable(_XVECTOR_SPEAKERS)
    hparams["label_encoder"].save(path / "label_encoder.txt")
    for name in ("embedding_model", "mean_var_norm_emb", "classifier"):
        get_default_hook(hparams[name], DEFAULT_SAVE_HOOKS)(hparams[name], path / f"{name}.ckpt")
    return path


def _build_atomic(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a temporary sibling of ``target`` and rename it into place.

    Idempotent and safe when several processes (DDP ranks) race: a complete ``target`` is kept
    as is, and a loser of the rename race drops its own copy.
    """
    if (target / _COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the renamed folder is a shared cache
    try:
        build(tmp)
        (tmp / _COMPLETE).touch()
        if target.exists() and not (target / _COMPLETE).exists():
            # left behind by an older, interrupted build without the marker
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_models(root: str | os.PathLike, seed: int = 0) -> TinyModels:
    """Build (or reuse) the three tiny parts under ``root``: ``speecht5_vc``, ``speecht5_hifigan``
    and ``spkrec-xvect``. Parts whose folder is complete are skipped; each is written to a
    temporary folder and renamed, so concurrent callers see either nothing or a whole folder."""
    root = Path(root).resolve()
    xvector = root / XVECTOR_DIR
    return TinyModels(
        speecht5=_build_atomic(root / SPEECHT5_DIR, lambda tmp: build_tiny_speecht5(tmp, seed)),
        vocoder=_build_atomic(root / HIFIGAN_DIR, lambda tmp: build_tiny_hifigan(tmp, seed)),
        xvector=_build_atomic(xvector, lambda tmp: build_tiny_xvector(tmp, seed, pretrained_path=xvector)),
    )


def _count_parameters(models: TinyModels) -> dict[str, int]:
    """Parameters of each part, counted after loading it through the project's loaders."""
    from vc.data.speakers import SpeakerEmbedder
    from vc.model.pretrained import load_speecht5, load_vocoder

    encoder = SpeakerEmbedder(str(models.xvector)).model
    return {
        "speecht5": sum(p.numel() for p in load_speecht5(str(models.speecht5)).parameters()),
        "vocoder": sum(p.numel() for p in load_vocoder(str(models.vocoder)).parameters()),
        "xvector": sum(p.numel() for p in encoder.mods.parameters()),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m vc.model.tiny OUT_DIR``: build the tiny models and print their folders and sizes."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m vc.model.tiny OUT_DIR")
    models = build_tiny_models(argv[0])
    counts = _count_parameters(models)
    for name, folder in models._asdict().items():
        print(f"{name:9s} {folder}  ({counts[name]:,} parameters)")


if __name__ == "__main__":
    main()
