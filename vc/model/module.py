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

from vc.model.loss import SpectrogramLoss

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-5}
DEFAULT_SCHEDULER = {
    "_target_": "transformers.optimization.get_linear_schedule_with_warmup",
    "_partial_": True,
    "num_warmup_steps": 500,
    "num_training_steps": 2000,
}


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
        dropout: config overrides, e.g. ``{"hidden_dropout": 0.1}``; None keeps the checkpoint's.
        freeze: parameter-name prefixes to freeze, e.g. ``["speecht5.encoder.prenet.feature_encoder"]``.
        loss: keyword arguments of :class:`vc.model.loss.SpectrogramLoss`.
        optimizer: a ``_partial_`` Hydra config completed with the parameters.
        scheduler: a ``_partial_`` Hydra config completed with the optimiser; stepped every step.
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
                "dropout": _plain(dropout) or {},
                "freeze": list(freeze or []),
                "loss": _plain(loss) or {},
                "optimizer": _plain(optimizer) or dict(DEFAULT_OPTIMIZER),
                "scheduler": _plain(scheduler),
                "generation": _plain(generation)
                or {"threshold": 0.5, "minlenratio": 0.0, "maxlenratio": 20.0},
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
        """Free-running generation for a collated batch.

        Returns ``(mels (B, T, M), lengths list[int], cross_attentions or None)``; cross
        attentions are (B, layers, heads, T / reduction_factor, S).
        """
        gen = {**self.hparams.generation, **overrides}
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate_speech(
                batch["input_values"].to(self.device),
                speaker_embeddings=batch["speaker_embeddings"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
                threshold=gen["threshold"],
                minlenratio=gen["minlenratio"],
                maxlenratio=gen["maxlenratio"],
                output_cross_attentions=output_cross_attentions,
                return_output_lengths=True,
            )
        finally:
            self.model.train(was_training)
        mels, lengths = out[0], [int(n) for n in out[1]]
        return mels, lengths, (out[2] if output_cross_attentions else None)

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
        scheduler = instantiate({**self.hparams.scheduler, "_partial_": True})(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
