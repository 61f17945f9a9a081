"""Lightning callbacks: validation audio, mel and attention pictures."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from vc import plots
from vc.audio import write_wav

log = logging.getLogger(__name__)


class ValidationAudio(pl.Callback):
    """Generate a fixed set of validation utterances free-running and log what they sound and look like.

    After every ``every_n_validations``-th validation, the first K validation utterances (the
    datamodule's ``val_sample_batch()``) are generated, vocoded with the module's vocoder and
    logged to TensorBoard / W&B and written under ``output_dir/step<N>/``: audio, a picture of
    source / target / predicted mel side by side, and the cross-attention of the last decoder
    layer. Source and target are logged once, at the first validation. Rank zero only.
    """

    def __init__(self, every_n_validations: int = 1, output_dir: str | None = None):
        self.every = max(1, int(every_n_validations))
        self.output_dir = Path(output_dir) if output_dir else None
        self._count = 0
        self._logged_truth = False
        self._vocoder = None

    def _vocode(self, module, mels: torch.Tensor) -> np.ndarray:
        if self._vocoder is None:
            from vc.model.pretrained import load_vocoder

            self._vocoder = load_vocoder(module.hparams.vocoder).eval()
        self._vocoder.to(mels.device)
        with torch.no_grad():
            return self._vocoder(mels.float()).cpu().numpy()

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, module) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        self._count += 1
        if (self._count - 1) % self.every:
            return
        batch = trainer.datamodule.val_sample_batch()
        sr = int(module.hparams.audio.get("sample_rate", 16000))
        hop = int(module.hparams.audio.get("hop_length", 256))
        mels, lengths, attn = module.generate(batch, output_cross_attentions=True)
        step = trainer.global_step
        folder = self.output_dir / f"step{step:07d}" if self.output_dir else None
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        for i, utt in enumerate(batch["utt_ids"]):
            n = max(int(lengths[i]), 1)
            mel = mels[i, :n]
            wav = self._vocode(module, mel)
            target = batch["labels"][i, : int(batch["tgt_lengths"][i])].numpy()
            source = batch["input_values"][i, : int(batch["src_lengths"][i])].numpy()
            # last decoder layer, averaged over heads: (steps, encoder frames)
            att = (
                attn[i, -1]
                .mean(0)[: (n + module.reduction_factor - 1) // module.reduction_factor]
                .float()
                .cpu()
                .numpy()
            )
            mel_fig = plots.mel_figure(
                {"target": target, "predicted": mel.float().cpu().numpy()},
                title=f"{utt} @ step {step}",
                hop_seconds=hop / sr,
            )
            att_fig = plots.attention_figure(att, title=f"{utt} cross-attention @ step {step}")
            self._log(trainer, utt, step, sr, wav, mel_fig, att_fig)
            if not self._logged_truth:
                self._log_audio(trainer, f"truth/{utt}/source", source, step, sr)
                tgt_wav = self._vocode(module, torch.as_tensor(target))
                self._log_audio(trainer, f"truth/{utt}/target_vocoded", tgt_wav, step, sr)
                if folder:
                    write_wav(folder.parent / "truth" / f"{utt}_source.wav", source, sr)
                    write_wav(folder.parent / "truth" / f"{utt}_target_vocoded.wav", tgt_wav, sr)
            if folder:
                write_wav(folder / f"{utt}.wav", wav, sr)
                plots.save(mel_fig, folder / f"{utt}_mel.png")
                plots.save(att_fig, folder / f"{utt}_attention.png")
            else:
                plots.plt.close(mel_fig)
                plots.plt.close(att_fig)
        self._logged_truth = True

    def _log(self, trainer, utt, step, sr, wav, mel_fig, att_fig) -> None:
        self._log_audio(trainer, f"val_audio/{utt}", wav, step, sr)
        for logger in trainer.loggers:
            exp = logger.experiment
            if hasattr(exp, "add_figure"):  # TensorBoard
                exp.add_figure(f"val_mel/{utt}", mel_fig, step, close=False)
                exp.add_figure(f"val_attention/{utt}", att_fig, step, close=False)
            elif hasattr(logger, "log_image"):  # W&B
                logger.log_image(key=f"val_mel/{utt}", images=[mel_fig], step=step)
                logger.log_image(key=f"val_attention/{utt}", images=[att_fig], step=step)

    @staticmethod
    def _log_audio(trainer, tag, wav, step, sr) -> None:
        for logger in trainer.loggers:
            exp = logger.experiment
            if hasattr(exp, "add_audio"):
                exp.add_audio(tag, torch.as_tensor(wav).clamp(-1, 1).unsqueeze(0), step, sample_rate=sr)
            elif hasattr(logger, "log_audio"):
                logger.log_audio(key=tag, audios=[wav], sample_rate=[sr], step=step)
