"""Lightning callbacks: validation audio, mel and attention pictures, validation metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from vc import plots
from vc.audio import load_audio, write_wav
from vc.errors import ConfigError

log = logging.getLogger(__name__)

# metrics ValidationAudio can compute on its utterances -> the name they are logged under
VALIDATION_METRICS = {"mcd": "val/mcd", "secs": "val/secs"}


class ValidationAudio(pl.Callback):
    """Generate a fixed set of validation utterances free-running and log what they sound and look like.

    After every ``every_n_validations``-th validation, the first K validation utterances (the
    datamodule's ``val_sample_batch()``) are generated, vocoded with the module's vocoder and
    logged to TensorBoard / W&B and written under ``output_dir/step<N>/``: audio, a picture of
    source / target / predicted mel side by side, and the cross-attention of the last decoder
    layer. Source and target are logged once, at the first validation. Generation runs on rank zero.

    ``metrics`` (any of ``mcd``, ``secs``): scores of the generated utterances against the target
    speaker's recordings of the same sentences, as ``eval.py`` computes them for ``converted``
    (:func:`vc.metrics.mcd`, Resemblyzer :class:`~vc.metrics.SpeakerSimilarity`). Their means over
    the K utterances are logged as ``val/mcd`` (dB) and ``val/secs`` to every logger and put in
    ``trainer.callback_metrics`` on every rank, so ``callbacks.model_checkpoint.monitor=val/mcd`` and
    ``optimized_metric=val/mcd`` work (checkpoint callbacks run after this one).
    """

    def __init__(
        self, every_n_validations: int = 1, output_dir: str | None = None, metrics: Sequence[str] = ()
    ):
        unknown = sorted(set(metrics) - set(VALIDATION_METRICS))
        if unknown:
            raise ConfigError(
                f"callbacks.validation_audio.metrics: unknown metric(s) {', '.join(unknown)}; use any of "
                f"{', '.join(VALIDATION_METRICS)} (e.g. [mcd,secs]) or []."
            )
        self.every = max(1, int(every_n_validations))
        self.output_dir = Path(output_dir) if output_dir else None
        self.metrics = list(dict.fromkeys(metrics))
        self._count = 0
        self._logged_truth = False
        self._vocoder = None
        self._similarity = None

    def _vocode(self, module, mels: torch.Tensor) -> np.ndarray:
        if self._vocoder is None:
            from vc.model.pretrained import load_vocoder

            self._vocoder = load_vocoder(module.hparams.vocoder).eval()
        self._vocoder.to(mels.device)
        with torch.no_grad():
            return self._vocoder(mels.float()).cpu().numpy()

    def on_validation_end(self, trainer: pl.Trainer, module) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        self._count += 1
        if (self._count - 1) % self.every:
            return
        scores = self._generate(trainer, module) if trainer.is_global_zero else None
        if self.metrics:
            # every rank needs the values: ModelCheckpoint may monitor them, and it runs on all ranks
            self._record(trainer, trainer.strategy.broadcast(scores, src=0))

    def _generate(self, trainer: pl.Trainer, module) -> dict[str, float]:
        """Generate, log and write the K utterances (rank zero); returns the means of ``self.metrics``."""
        batch = trainer.datamodule.val_sample_batch()
        sr = int(module.hparams.audio.get("sample_rate", 16000))
        hop = int(module.hparams.audio.get("hop_length", 256))
        mels, lengths, attn = module.generate(batch, output_cross_attentions=True)
        step = trainer.global_step
        folder = self.output_dir / f"step{step:07d}" if self.output_dir else None
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        scores: dict[str, list] = {name: [] for name in self.metrics}
        for i, utt in enumerate(batch["utt_ids"]):
            n = max(int(lengths[i]), 1)
            mel = mels[i, :n]
            wav = self._vocode(module, mel)
            if self.metrics:
                for name, value in self._score(trainer.datamodule, utt, wav, sr).items():
                    scores[name].append(value)
            target = batch["labels"][i, : int(batch["tgt_lengths"][i])].numpy()
            source = batch["input_values"][i, : int(batch["src_lengths"][i])].numpy()
            # last decoder layer, averaged over heads: (steps, encoder frames)
            att = attn[i][-1].mean(0).float().cpu().numpy()
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
        return {name: self._mean(name, values) for name, values in scores.items()}

    def _score(self, datamodule, utt: str, wav: np.ndarray, sr: int) -> dict:
        """``self.metrics`` of one generated (T,) waveform against the target's recording of ``utt``."""
        from vc import metrics

        pair = next((p for p in datamodule.splits["val"] if p.utt_id == utt), None)
        if pair is None:
            raise ConfigError(
                f"validation metrics: {utt} is not among the datamodule's validation pairs (datamodule.splits), "
                "so its target recording is unknown. Set callbacks.validation_audio.metrics=[]."
            )
        target = load_audio(pair.tgt_path, sr, check=False)
        out = {}
        if "mcd" in self.metrics:
            out["mcd"] = metrics.mcd(target, wav, sr)
        if "secs" in self.metrics:
            if self._similarity is None:
                self._similarity = metrics.SpeakerSimilarity("resemblyzer")
            out["secs"] = self._similarity.score(wav, target, sr)
        return out

    @staticmethod
    def _mean(name: str, values: list) -> float:
        """Mean of the finite values (NaN if none); the reasons of the others are logged."""
        finite = [float(v) for v in values if math.isfinite(v)]
        for value in values:
            if not math.isfinite(value):
                log.warning(
                    "%s is NaN for a validation utterance: %s", VALIDATION_METRICS[name], value.reason
                )
        return float(np.mean(finite)) if finite else math.nan

    def _record(self, trainer: pl.Trainer, scores: dict[str, float]) -> None:
        """Log the means (loggers write on rank zero) and make them callback metrics on every rank."""
        logged = {VALIDATION_METRICS[name]: value for name, value in scores.items()}
        for key, value in logged.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)

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
