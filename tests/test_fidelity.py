"""Faithful to the real checkpoint: the recipe's defaults, stand-ins that keep the real settings, and
the failures a real fine-tune would hit (validation past the position table, a schedule that ends
before training does), each on a real Lightning run."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import compose_config, smoke_overrides
from tests.test_train import _cli_overrides, _train_cli
from vc.model import module as module_defaults
from vc.model.loss import SpectrogramLoss
from vc.model.module import VCLitModule

# SpeechT5Config fields that only size the model: the tiny stand-in may differ from the real one here
SIZE_KEYS = {
    "hidden_size",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "conv_dim",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "speech_decoder_prenet_units",
    "speech_decoder_postnet_units",
    "speech_decoder_postnet_layers",
}


def real_s2s_config():
    """The converted microsoft/speecht5_vc's config: SpeechT5Config's defaults plus what transformers'
    conversion script sets for task s2s (max_speech_positions 1876)."""
    from transformers import SpeechT5Config

    return SpeechT5Config(max_speech_positions=1876)


def test_tiny_stand_in_keeps_every_setting_of_the_real_checkpoint_but_sizes(tiny_models):
    from transformers import SpeechT5Config, SpeechT5FeatureExtractor, SpeechT5HifiGanConfig

    real = real_s2s_config().to_dict()
    tiny = SpeechT5Config.from_pretrained(tiny_models.speecht5).to_dict()
    differ = {k for k in real.keys() | tiny.keys() if real.get(k) != tiny.get(k)}
    ignored = {"transformers_version", "architectures", "dtype", "torch_dtype"}
    assert differ - ignored <= SIZE_KEYS, {
        k: (real.get(k), tiny.get(k)) for k in differ - ignored - SIZE_KEYS
    }
    assert tiny["max_speech_positions"] == 1876
    assert (tiny["encoder_layerdrop"], tiny["decoder_layerdrop"], tiny["hidden_dropout"]) == (0.1, 0.1, 0.1)

    features = SpeechT5FeatureExtractor.from_pretrained(tiny_models.speecht5).to_dict()
    defaults = SpeechT5FeatureExtractor().to_dict()
    assert {k: v for k, v in features.items() if k != "processor_class"} == {
        k: v for k, v in defaults.items() if k != "processor_class"
    }
    vocoder = SpeechT5HifiGanConfig.from_pretrained(tiny_models.vocoder)
    assert vocoder.normalize_before and vocoder.sampling_rate == 16_000 and vocoder.model_in_dim == 80


def test_composed_defaults_are_the_recipes_and_the_pythons():
    """conf/model/speecht5_vc.yaml and vc.model.module hold the same defaults, and they are the values
    its comments cite: the fairseq VC fine-tune's dropout, LayerDrop, betas and guided-attention weight."""
    cfg = compose_config("train", [])
    model = OmegaConf.to_container(cfg.model, resolve=False)
    assert (
        model["dropout"]
        == module_defaults.RECIPE_DROPOUT
        == {
            "hidden_dropout": 0.2,
            "attention_dropout": 0.2,
            "activation_dropout": 0.2,
            "encoder_layerdrop": 0.05,
            "decoder_layerdrop": 0.0,
        }
    )
    assert model["loss"] == module_defaults.DEFAULT_LOSS
    assert module_defaults.DEFAULT_LOSS["attn_weight"] == 1.0
    signature = inspect.signature(SpectrogramLoss).parameters
    assert {k: signature[k].default for k in module_defaults.DEFAULT_LOSS} == module_defaults.DEFAULT_LOSS
    assert model["optimizer"] == module_defaults.DEFAULT_OPTIMIZER
    assert tuple(model["optimizer"]["betas"]) == (0.9, 0.999) and model["optimizer"]["weight_decay"] == 0.0
    assert model["scheduler"] == module_defaults.DEFAULT_SCHEDULER
    assert model["scheduler"]["num_training_steps"] is None
    assert model["generation"] == module_defaults.DEFAULT_GENERATION


def _fit(module, datamodule, steps: int, seed: int = 0, **trainer_kw) -> pl.Trainer:
    pl.seed_everything(seed, workers=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **trainer_kw,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


def _smoke_datamodule(smoke_root, tmp_path, module):
    cfg = compose_config("train", smoke_overrides(smoke_root, tmp_path))
    return instantiate(cfg.data, reduction_factor=module.reduction_factor, _convert_="object")


def test_module_built_in_python_trains_as_the_composed_config(tiny_models, smoke_root, tmp_path):
    """VCLitModule() without Hydra has the composed config's optimiser, schedule, loss and dropout,
    and a few steps of training give the same weights."""
    parts = [
        f"model.pretrained={tiny_models.speecht5}",
        f"model.vocoder={tiny_models.vocoder}",
        f"data.speaker.source={tiny_models.xvector}",
    ]
    cfg = compose_config("train", parts)
    composed = instantiate(cfg.model, _recursive_=False)
    plain = VCLitModule(
        pretrained=str(tiny_models.speecht5),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        audio=OmegaConf.to_container(cfg.audio, resolve=True),
    )
    assert dict(plain.hparams) == dict(composed.hparams)

    datamodule = _smoke_datamodule(smoke_root, tmp_path, plain)
    trainers = [_fit(m, datamodule, steps=3) for m in (composed, plain)]
    for name, value in composed.model.state_dict().items():
        torch.testing.assert_close(plain.model.state_dict()[name], value, msg=name)
    lrs = [t.optimizers[0].param_groups[0]["lr"] for t in trainers]
    assert lrs[0] == lrs[1] > 0


class _RecordLR(pl.Callback):
    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_training_by_epochs_keeps_learning(tiny_models, smoke_root, tmp_path):
    """max_steps=-1 with max_epochs: the schedule's total is the trainer's, so the LR stays above 0
    after warm-up until the last step (it used to be 0 from the end of warm-up on)."""
    module = VCLitModule(
        pretrained=str(tiny_models.speecht5),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        scheduler={**module_defaults.DEFAULT_SCHEDULER, "num_warmup_steps": 2},
    )
    datamodule = _smoke_datamodule(smoke_root, tmp_path, module)
    record = _RecordLR()
    trainer = _fit(module, datamodule, steps=-1, max_epochs=3, callbacks=[record])
    steps = trainer.global_step
    assert steps == len(record.lrs) and steps > 4
    assert all(lr > 0 for lr in record.lrs[1:]), record.lrs
    # linear decay to 0 at the trainer's total
    assert record.lrs[-1] == pytest.approx(1e-5 / (steps - 2), rel=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=-1"],
            "num_training_steps=null needs a finite training",
        ),
        (["trainer.max_steps=20", "model.scheduler.num_training_steps=10"], "ends before training does (20"),
    ],
    ids=["endless", "schedule-too-short"],
)
def test_a_schedule_that_cannot_fit_the_run_is_a_config_error(smoke_root, tmp_path, overrides, message):
    proc = _train_cli([*_cli_overrides(smoke_root, tmp_path / "run"), *overrides], smoke_root)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def _short_table_model(source: Path, folder: Path, positions: int) -> Path:
    """A copy of the tiny SpeechT5 at ``source`` whose decoder position table holds ``positions``
    steps (this test's own stand-in: the real table, 1876, is reached only by a clip of 3.75 s or
    more at maxlenratio 20, which would make the test slow)."""
    from transformers import SpeechT5FeatureExtractor, SpeechT5ForSpeechToSpeech

    model = SpeechT5ForSpeechToSpeech.from_pretrained(source)
    model.config.max_speech_positions = positions
    state = model.state_dict()
    shorter = SpeechT5ForSpeechToSpeech(model.config)
    # the sinusoidal table is a buffer sized by max_speech_positions; every weight is kept
    shorter.load_state_dict({k: v for k, v in state.items() if "encode_positions.pe" not in k}, strict=False)
    shorter.save_pretrained(folder)
    SpeechT5FeatureExtractor.from_pretrained(source).save_pretrained(folder)
    return folder


def test_validation_of_a_model_that_never_stops_is_capped_at_the_position_table(smoke_root, tmp_path):
    """Early in training a model may never emit a stop. Validation audio then ends at the decoder's
    position table instead of overrunning it (transformers' generate_speech raised a size mismatch
    there, and Lightning aborted the run)."""
    from vc.train import build

    # above the longest training target (teacher forcing uses the table too), below a 1 s clip x 20
    positions = 200
    pretrained = _short_table_model(
        smoke_root / "cache" / "tiny" / "speecht5_vc", tmp_path / "short", positions
    )
    cfg = compose_config(
        "train",
        smoke_overrides(smoke_root, tmp_path / "run")
        + [
            f"model.pretrained={pretrained}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "+trainer.limit_val_batches=1",
            "model.generation.threshold=10.0",
            "model.generation.minlenratio=0.0",
            "model.generation.maxlenratio=20.0",
        ],
    )
    datamodule, module, trainer = build(cfg)
    assert module.model.config.max_speech_positions == positions
    trainer.fit(module, datamodule=datamodule)
    wavs = sorted((tmp_path / "run" / "val_samples" / "step0000002").glob("*.wav"))
    assert len(wavs) == cfg.data.val_samples
    import soundfile as sf

    frames = positions * module.reduction_factor
    for wav in wavs:
        assert len(sf.read(wav)[0]) == frames * cfg.audio.hop_length, wav.name
    assert (tmp_path / "run" / "val_samples" / "step0000002" / f"{wavs[0].stem}_attention.png").is_file()


@pytest.mark.slow
def test_full_size_architecture_trains_validates_at_the_limit_and_converts(tmp_path, tiny_models):
    """The converted checkpoint's architecture at full size, random weights, no download: one training
    step, one validation generation that runs into the 1876-step position table, one conversion.

    About 2 minutes on 2 idle CPU cores, most of it the 1876 decoder steps.
    """
    from transformers import SpeechT5FeatureExtractor, SpeechT5ForSpeechToSpeech

    from vc.converter import VoiceConverter
    from vc.data.datamodule import VCCollator
    from vc.model.bundle import export_bundle

    torch.manual_seed(0)
    folder = tmp_path / "speecht5_vc_full"
    SpeechT5ForSpeechToSpeech(real_s2s_config()).save_pretrained(folder)
    SpeechT5FeatureExtractor().save_pretrained(folder)
    module = VCLitModule(
        pretrained=str(folder),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        generation={"threshold": 10.0, "minlenratio": 0.0, "maxlenratio": 20.0},
        scheduler={},
        audio=OmegaConf.to_container(compose_config("train", []).audio, resolve=True),
    )
    assert module.model.config.max_speech_positions == 1876 and module.model.config.encoder_layers == 12
    rng = np.random.default_rng(0)
    # 4 s of source: at maxlenratio 20 its limit (200 encoder frames -> 2000 steps) is past the table
    item = {
        "input_values": (0.1 * rng.standard_normal(64_000)).astype(np.float32),
        "labels": rng.normal(-4, 1, size=(60, 80)).astype(np.float32),
        "speaker_embeddings": (np.ones(512) / np.sqrt(512)).astype(np.float32),
        "utt_id": "u0",
    }
    batch = VCCollator(module.reduction_factor)([item])
    optimizer = module.configure_optimizers()
    module.train()
    loss = module.teacher_forced(batch)["loss"]
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)

    mels, lengths, attn = module.generate(batch, output_cross_attentions=True)
    assert lengths == [1876 * module.reduction_factor] and mels.shape[1] == lengths[0]
    assert attn[0].shape[:3] == (6, 12, 1876)

    bundle = export_bundle(module, tmp_path / "bundle", default_speaker=item["speaker_embeddings"])
    # a short output: the limit was reached above, this checks the bundle's round trip
    vc = VoiceConverter.from_pretrained(
        bundle, device="cpu", quantize="none", generation={"threshold": 10.0, "maxlenratio": 1.0}
    )
    out = vc.convert(item["input_values"][:16_000])
    assert out.meta["stop_reason"] == "max_length"
    assert out.sample_rate == 16_000 and np.isfinite(out.wav).all() and len(out.wav) > 0
