"""VCLitModule: fine-tune SpeechT5ForSpeechToSpeech with the spectrogram loss.

The module takes plain values and builds SpeechT5 itself, so
``VCLitModule.load_from_checkpoint(path)`` works without Hydra. After the first build the
model's config is stored in the hyperparameters, so loading a checkpoint rebuilds the
architecture offline and takes the weights from the checkpoint, not from the hub.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vc.errors import ConfigError
from vc.model.loss import SpectrogramLoss

# The defaults of a fine-tune, written once here and once in conf/model/speecht5_vc.yaml (a test
# checks that the two agree). Sources: the fairseq VC fine-tune that produced microsoft/speecht5_vc
# (microsoft/SpeechT5, SpeechT5/README.md "VC" command and speecht5/criterions/).
#
# dropout 0.2, attention and activation dropout 0.2, LayerDrop 0.05 (encoder) / 0.0 (decoder): the
# VC command's --dropout/--attention-dropout/--activation-dropout/--encoder-layerdrop/--decoder-layerdrop.
# The converted checkpoint's config keeps SpeechT5Config's 0.1 everywhere instead.
RECIPE_DROPOUT = {
    "hidden_dropout": 0.2,
    "attention_dropout": 0.2,
    "activation_dropout": 0.2,
    "encoder_layerdrop": 0.05,
    "decoder_layerdrop": 0.0,
}
# guided-attention weight 1.0: the VC command sets --use-guided-attn-loss, but SpeechT5Criterion
# does not pass guided_attn_loss_lambda on, so TexttoSpeechLoss keeps its own default 1.0 (sigma
# 0.4 and 2 heads likewise). transformers' guided_attention_loss_scale default is 10.
# SpectrogramLoss's signature holds these values; this dict names them for the hyperparameters.
DEFAULT_LOSS = {"bce_pos_weight": 5.0, "attn_weight": 1.0, "attn_sigma": 0.4, "attn_heads": 2}
# --optimizer adam with no --adam-betas: fairseq's Adam defaults, betas (0.9, 0.999), eps 1e-8, no
# weight decay. The learning rate is lower than the recipe's 1e-4 from the pretrained model:
# this fine-tunes an already fine-tuned VC model on a new pair.
DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.AdamW",
    "_partial_": True,
    "lr": 1e-5,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 0.0,
}
# linear warm-up, then linear decay to 0 at the end of training. num_training_steps None: the
# trainer's own total (max_steps, or max_epochs x batches per epoch), read when fit starts.
DEFAULT_SCHEDULER = {
    "_target_": "transformers.optimization.get_linear_schedule_with_warmup",
    "_partial_": True,
    "num_warmup_steps": 500,
    "num_training_steps": None,
}
# generate_speech's defaults
DEFAULT_GENERATION = {"threshold": 0.5, "minlenratio": 0.0, "maxlenratio": 20.0}


def _plain(x):
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


# optimisers given fused=True when every parameter is on a CUDA GPU and the config does not set it
FUSABLE_OPTIMIZERS = ("torch.optim.AdamW", "torch.optim.Adam")


class VCLitModule(pl.LightningModule):
    """SpeechT5 voice conversion as a LightningModule.

    Args:
        pretrained: hub id or folder of a SpeechT5ForSpeechToSpeech checkpoint.
        vocoder: hub id or folder of the SpeechT5HifiGan (validation audio and the bundle).
        speaker_encoder: hub id or folder of the SpeechBrain x-vector model (for the bundle).
        spec_augment: SpecAugment on the encoder (transformers enables it by default; the
            original VC fine-tune used none).
        dropout: SpeechT5Config overrides; None is the VC recipe's (:data:`RECIPE_DROPOUT`), ``{}``
            keeps the checkpoint's.
        freeze: parameter-name prefixes to freeze, e.g. ``["speecht5.encoder.prenet.feature_encoder"]``.
        loss: keyword arguments of :class:`vc.model.loss.SpectrogramLoss` over :data:`DEFAULT_LOSS`.
        optimizer: a ``_partial_`` Hydra config completed with the parameters; None is
            :data:`DEFAULT_OPTIMIZER`.
        scheduler: a ``_partial_`` Hydra config completed with the optimiser, stepped every step;
            None is :data:`DEFAULT_SCHEDULER`, ``{}`` trains without one. A
            ``num_training_steps`` of None is the trainer's total number of steps.
        generation: ``threshold``, ``minlenratio``, ``maxlenratio`` for free-running generation.
        audio: the audio settings (stored for the bundle).
        model_config: the SpeechT5 config; filled in after the first build (do not set by hand).
    """

    def __init__(
        self,
        pretrained: str = "microsoft/speecht5_vc",
        vocoder: str = "microsoft/speecht5_hifigan",
        speaker_encoder: str = "speechbrain/spkrec-xvect-voxceleb",
        spec_augment: bool = False,
        dropout: Mapping | None = None,
        freeze: Sequence[str] = (),
        loss: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        generation: Mapping | None = None,
        audio: Mapping | None = None,
        model_config: Mapping | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(
            {
                "pretrained": pretrained,
                "vocoder": vocoder,
                "speaker_encoder": speaker_encoder,
                "spec_augment": spec_augment,
                "dropout": dict(RECIPE_DROPOUT) if dropout is None else _plain(dropout),
                "freeze": list(freeze or []),
                "loss": {**DEFAULT_LOSS, **(_plain(loss) or {})},
                "optimizer": _plain(optimizer) or dict(DEFAULT_OPTIMIZER),
                "scheduler": dict(DEFAULT_SCHEDULER) if scheduler is None else _plain(scheduler),
                "generation": {**DEFAULT_GENERATION, **(_plain(generation) or {})},
                "audio": _plain(audio) or {},
                "model_config": _plain(model_config),
            }
        )
        overrides = {"apply_spec_augment": spec_augment, "use_cache": False, **(self.hparams.dropout or {})}
        if model_config:
            from transformers import SpeechT5Config, SpeechT5ForSpeechToSpeech

            config = SpeechT5Config(**{**dict(model_config), **overrides})
            self.model = SpeechT5ForSpeechToSpeech(config)
        else:
            from vc.model.pretrained import load_speecht5

            self.model = load_speecht5(pretrained, **overrides)
            self.hparams.model_config = self.model.config.to_dict()
        # from_pretrained returns eval mode, and Lightning keeps the modes it finds: train for real
        self.model.train()
        frozen = list(self.hparams.freeze)
        if not spec_augment:
            # only SpecAugment uses it; a parameter without a gradient breaks DDP's reducer
            frozen.append("speecht5.encoder.prenet.masked_spec_embed")
        for name, param in self.model.named_parameters():
            if any(name.startswith(prefix) for prefix in frozen):
                param.requires_grad_(False)
        self.criterion = SpectrogramLoss(
            reduction_factor=self.model.config.reduction_factor, **self.hparams.loss
        )

    @property
    def reduction_factor(self) -> int:
        return self.model.config.reduction_factor

    def teacher_forced(self, batch: Mapping, output_attentions: bool | None = None) -> dict:
        """Run encoder, decoder and post-net with the shifted target as decoder input.

        Returns the loss parts plus ``after`` (B, T, M) and ``cross_attentions``.
        """
        from transformers.models.speecht5.modeling_speecht5 import shift_spectrograms_right

        labels = batch["labels"]
        need_attn = self.criterion.attn_weight > 0 if output_attentions is None else output_attentions
        decoder_input, _ = shift_spectrograms_right(labels, self.reduction_factor)
        out = self.model.speecht5(
            input_values=batch["input_values"],
            attention_mask=batch["attention_mask"],
            decoder_input_values=decoder_input,
            speaker_embeddings=batch["speaker_embeddings"],
            output_attentions=need_attn,
            use_cache=False,
            return_dict=True,
        )
        before, after, logits = self.model.speech_decoder_postnet(out.last_hidden_state)
        encoder_mask = self.model.speecht5.encoder.prenet._get_feature_vector_attention_mask(
            out.encoder_last_hidden_state.shape[1], batch["attention_mask"]
        )
        parts = self.criterion(
            before, after, logits, labels, encoder_mask, out.cross_attentions if need_attn else None
        )
        return {**parts, "after": after, "cross_attentions": out.cross_attentions}

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        parts = self.teacher_forced(batch)
        bs = batch["input_values"].shape[0]
        for k in ("l1", "bce", "attn", "loss"):
            self.log(f"train/{k}", parts[k], prog_bar=k == "loss", batch_size=bs)
        return parts["loss"]

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        parts = self.teacher_forced(batch)
        bs = batch["input_values"].shape[0]
        for k in ("l1", "bce", "attn", "loss"):
            self.log(f"val/{k}", parts[k], prog_bar=k == "loss", batch_size=bs, sync_dist=True)

    @torch.no_grad()
    def generate(self, batch: Mapping, output_cross_attentions: bool = False, **overrides):
        """Free-running generation for a collated batch, through the converter's loop
        (:func:`vc.model.generate.generate`): capped at the decoder's position table, so an item
        that never emits a stop (early in training) ends at the limit instead of overrunning it.

        Returns ``(mels (B, T, M) padded, lengths list[int], cross_attentions or None)``; cross
        attentions are per item (layers, heads, steps, encoder frames).
        """
        from vc.model.generate import generate

        gen = {**self.hparams.generation, **overrides}
        was_training = self.model.training
        self.model.eval()
        try:
            out = generate(
                self.model,
                batch["input_values"].to(self.device),
                batch["attention_mask"].to(self.device),
                batch["speaker_embeddings"].to(self.device),
                threshold=gen["threshold"],
                minlenratio=gen["minlenratio"],
                maxlenratio=gen["maxlenratio"],
                output_cross_attentions=output_cross_attentions,
            )
        finally:
            self.model.train(was_training)
        mels = torch.nn.utils.rnn.pad_sequence(out.mels, batch_first=True)
        return mels, out.frames, out.cross_attentions

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        config = dict(self.hparams.optimizer)
        # Lightning moves the model before it asks for optimisers: on a GPU, Adam(W) updates every
        # parameter in one fused kernel instead of a few hundred launches per step
        on_gpu = bool(params) and all(p.is_cuda for p in params)
        if on_gpu and config.get("_target_") in FUSABLE_OPTIMIZERS and "fused" not in config:
            config["fused"] = True
        # a `_partial_` config instantiates to a partial; calling it completes it
        optimizer = instantiate({**config, "_partial_": True})(params=params)
        if not self.hparams.scheduler:
            return optimizer
        config = {**self.hparams.scheduler, "_partial_": True}
        if "num_training_steps" in config:
            config["num_training_steps"] = self._scheduled_steps(config["num_training_steps"])
        scheduler = instantiate(config)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _scheduled_steps(self, configured) -> int:
        """The scheduler's total: the trainer's number of optimiser steps when ``configured`` is
        None (or -1), else ``configured``, which must not end before training does (a linear
        schedule is 0 from its total on, and nothing would be learnt after it)."""
        trainer = self._trainer
        total = trainer.estimated_stepping_batches if trainer is not None else None
        if configured is None or int(configured) < 0:
            if total is None or total == float("inf"):
                raise ConfigError(
                    "model.scheduler.num_training_steps=null needs a finite training length: set "
                    "trainer.max_steps or trainer.max_epochs, or give num_training_steps."
                )
            return int(total)
        if total is not None and total != float("inf") and int(configured) < int(total):
            raise ConfigError(
                f"model.scheduler.num_training_steps={configured} ends before training does ({int(total)} "
                f"steps): the learning rate would be 0 from step {configured} on. Leave it null (the "
                "trainer's total) or set it to at least that."
            )
        return int(configured)
