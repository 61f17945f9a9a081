"""run(cfg): build datamodule, model, trainer, callbacks and loggers from the config; fit; export."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from vc.checkpoints import checkpoint_problem, newest_complete_checkpoint, remove_partial_checkpoints
from vc.errors import ConfigError

log = logging.getLogger(__name__)

# what users type -> Lightning's precision names
PRECISION_ALIASES = {
    "32": "32-true",
    "fp32": "32-true",
    "float32": "32-true",
    "16": "16-mixed",
    "fp16": "16-mixed",
    "float16": "16-mixed",
    "bf16": "bf16-mixed",
    "bfloat16": "bf16-mixed",
}


def normalize_precision(value) -> str:
    """``bf16`` -> ``bf16-mixed``, ``32`` -> ``32-true``...; Lightning's own names pass through."""
    return PRECISION_ALIASES.get(str(value), str(value))


def resolve_ckpt_path(ckpt_path: str | None, checkpoint_dir: str | Path) -> str | None:
    """``last`` -> the newest complete ``.ckpt`` in ``checkpoint_dir`` (last.ckpt, on_exception.ckpt
    or a step one); newer files that are cut short or damaged are skipped with a warning naming them.

    Returns None (a fresh start, with a warning) when ``last`` finds none; a missing or damaged
    explicit path is an error.
    """
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        found = newest_complete_checkpoint(checkpoint_dir)
        if found is None:
            log.warning(
                "ckpt_path=last: no complete checkpoint in %s yet, starting from scratch", checkpoint_dir
            )
            return None
        log.info("resuming from %s", found)
        return str(found)
    if not Path(ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such checkpoint file. Use a .ckpt path or ckpt_path=last."
        )
    problem = checkpoint_problem(ckpt_path)
    if problem:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: {problem}. Pick another checkpoint of the run, or ckpt_path=last "
            "(the newest complete one)."
        )
    return str(ckpt_path)


def allow_layerdrop_under_ddp(trainer: pl.Trainer, layerdrop: float) -> None:
    """Make a data-parallel ``trainer`` safe for a model whose LayerDrop is ``layerdrop``.

    LayerDrop skips layers at random, differently on each rank; a skipped layer's parameters get
    no gradient there, and DDP without ``find_unused_parameters`` waits for them for ever (the VC
    fine-tune ran with fairseq's --find-unused-parameters for this reason). So with LayerDrop > 0
    a DDP strategy of more than one process gets ``find_unused_parameters=True`` before it wraps
    the model, whichever way it was chosen (trainer=ddp, strategy=auto on several devices, a
    SageMaker or SLURM launch); one that asked for False explicitly is a ConfigError.
    """
    from lightning.pytorch.strategies import DDPStrategy

    strategy = trainer.strategy
    if layerdrop <= 0 or not isinstance(strategy, DDPStrategy) or trainer.world_size <= 1:
        return
    # DDPStrategy keeps the DistributedDataParallel keyword arguments here until fit wraps the model
    kwargs = strategy._ddp_kwargs
    if kwargs.get("find_unused_parameters") is False:
        raise ConfigError(
            f"LayerDrop {layerdrop:g} under DDP needs find_unused_parameters: use trainer.strategy=ddp "
            "(train.py then turns it on), or set model.dropout.encoder_layerdrop=0 "
            "model.dropout.decoder_layerdrop=0."
        )
    if not kwargs.get("find_unused_parameters"):
        log.info("LayerDrop %g under DDP: find_unused_parameters=True", layerdrop)
        kwargs["find_unused_parameters"] = True


def _instantiate_dict(cfg: DictConfig | None) -> list:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def build(cfg: DictConfig):
    """Instantiate (datamodule, module, trainer) from a composed config."""
    if cfg.get("tiny_models"):
        from vc.model.tiny import build_tiny_models

        build_tiny_models(cfg.tiny_models)
    with open_dict(cfg):
        cfg.trainer.precision = normalize_precision(cfg.trainer.precision)
    # the module completes its optimiser and scheduler configs itself, so they stay plain dicts
    module = instantiate(cfg.model, _recursive_=False)
    datamodule = instantiate(cfg.data, reduction_factor=module.reduction_factor, _convert_="object")
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=_instantiate_dict(cfg.get("callbacks")),
        logger=_instantiate_dict(cfg.get("logger")) or False,
    )
    config = module.model.config
    allow_layerdrop_under_ddp(trainer, max(config.encoder_layerdrop, config.decoder_layerdrop))
    return datamodule, module, trainer


def run(cfg: DictConfig) -> float | None:
    """Train as configured and return the final value of ``cfg.optimized_metric`` (for sweeps)."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    # every DDP rank runs this; only rank 0 writes checkpoints, so only it clears what a killed one left
    if rank_zero_only.rank == 0:
        remove_partial_checkpoints(cfg.paths.checkpoint_dir)
    ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.checkpoint_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    if trainer.is_global_zero:
        log.info("data:\n%s", datamodule.report)
    if cfg.get("export") and trainer.is_global_zero and not trainer.fast_dev_run:
        export(cfg, trainer, module, datamodule)
    metric = trainer.callback_metrics.get(cfg.get("optimized_metric"))
    return float(metric) if metric is not None else None


def export(cfg: DictConfig, trainer: pl.Trainer, module, datamodule) -> Path:
    """Write the bundle from the best (or last) checkpoint into ``paths.bundle_dir``."""
    from vc.model.bundle import export_bundle
    from vc.model.module import VCLitModule

    ckpt_cb = trainer.checkpoint_callback
    choice = cfg.export
    path = getattr(ckpt_cb, "best_model_path", "") if choice == "best" else ""
    path = path or getattr(ckpt_cb, "last_model_path", "")
    if path and Path(path).is_file():
        log.info("exporting %s checkpoint %s", choice, path)
        module = VCLitModule.load_from_checkpoint(path, map_location="cpu")
    else:
        log.info("exporting the in-memory model (no checkpoint was written)")
    default_speaker = _average_target_xvector(datamodule)
    out = export_bundle(
        module.cpu(),
        cfg.paths.bundle_dir,
        speaker_source=cfg.data.speaker.source,
        default_speaker=default_speaker,
        src_spk=cfg.data.get("src_spk"),
        tgt_spk=cfg.data.get("tgt_spk"),
        train_config=OmegaConf.to_container(cfg, resolve=True),
    )
    log.info("bundle written to %s", out)
    return out


def _average_target_xvector(datamodule) -> np.ndarray | None:
    ds = datamodule.datasets.get("train")
    if ds is None or len(ds) == 0:
        return None
    vecs = np.stack([ds.embeddings[u] for u in ds.utt_ids])
    mean = vecs.mean(0)
    return mean / max(np.linalg.norm(mean), 1e-12)
