"""The entry script of a SageMaker training job: SageMaker's arguments and folders -> vc.train.run.

SageMaker runs ``python vc/sagemaker/entry.py --key value ...`` (or the same under torchrun) in
the job's code folder. This script

- turns the ``--key value`` hyperparameters back into Hydra overrides,
- points the path configs at the job's folders: each input channel (``SM_CHANNEL_<NAME>``) at
  the config key ``conf/sagemaker`` names for it, ``SM_OUTPUT_DATA_DIR`` at ``paths.output_dir``,
  the synced checkpoint folder (``/opt/ml/checkpoints``) at ``paths.checkpoint_dir`` with
  ``ckpt_path=last`` (so a spot restart resumes), scratch space at ``paths.root_dir``,
- sets DDP devices and nodes from torchrun's ``LOCAL_WORLD_SIZE``/``WORLD_SIZE``,
- composes conf/train.yaml, trains, and fills ``SM_MODEL_DIR`` with the bundle plus ``code/``,
  so the job's model.tar.gz is deployable as it is.

Overrides the user gave win over the derived ones. Everything reads an ``env`` mapping, so tests
pass a dict instead of a real job's environment.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):
    # run as a file from the job's code folder, where vc/ is not installed: make it importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vc.errors import ConfigError  # noqa: E402
from vc.sagemaker.hyperparams import argv_to_overrides, override_keys, quote  # noqa: E402

log = logging.getLogger("vc.sagemaker.entry")

REQUIRED_ENV = ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_INPUT_DIR")


def job_overrides(
    env: Mapping[str, str],
    *,
    channels: Mapping[str, Mapping],
    checkpoint_dir: str | os.PathLike | None,
    user_keys: set[str] = frozenset(),
) -> list[str]:
    """Hydra overrides that point the config at a SageMaker job's folders.

    ``env``: the job's environment (``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_INPUT_DIR``,
    ``SM_CHANNEL_<NAME>``, torchrun's ``WORLD_SIZE``/``LOCAL_WORLD_SIZE``). ``channels``: the
    ``sagemaker.training.channels`` config (name -> ``{key, file}``). ``checkpoint_dir``: the
    synced checkpoint folder if the job has one. Keys in ``user_keys`` are left to the user.
    Raises :class:`ConfigError` outside a SageMaker job (``SM_MODEL_DIR`` and the others unset).
    """
    missing = [k for k in REQUIRED_ENV if not env.get(k)]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: this is SageMaker's training entry script. "
            "Train locally with `python train.py ...`, or launch with `python -m vc.sagemaker.launch ...`."
        )
    derived: dict[str, str] = {}
    # the job's EBS volume (volume_size_gb), not the container's small root disk, holds data and caches
    scratch = f"{env['SM_INPUT_DIR']}/vc"
    derived["paths.root_dir"] = scratch
    derived["paths.output_dir"] = env["SM_OUTPUT_DATA_DIR"]
    # the bundle is built aside and copied into SM_MODEL_DIR with code/ (see package.write_model_dir)
    derived["paths.bundle_dir"] = f"{scratch}/bundle"
    for name, channel in channels.items():
        folder = env.get(f"SM_CHANNEL_{name.upper()}")
        if folder is None:
            continue
        if not channel.get("key"):
            raise ConfigError(
                f"sagemaker.training.channels.{name}.key is not set: name the config value its folder goes to."
            )
        derived[channel["key"]] = f"{folder}/{channel['file']}" if channel.get("file") else folder
    if checkpoint_dir is not None:
        derived["paths.checkpoint_dir"] = str(checkpoint_dir)
        derived["ckpt_path"] = "last"
    world, local = int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_WORLD_SIZE", 1))
    if world > 1:
        derived["trainer.strategy"] = "ddp"
        derived["trainer.devices"] = str(local)
        derived["trainer.num_nodes"] = str(world // local)
    return [
        f"{key}={value if key.startswith('trainer.') or key == 'ckpt_path' else quote(value)}"
        for key, value in derived.items()
        if key not in user_keys
    ]


def prepare(argv: Sequence[str], env: Mapping[str, str]):
    """The composed training config of a job: ``argv`` (SageMaker's ``--key value`` pairs) + the job's folders.

    Returns ``(cfg, sagemaker_settings)``. The checkpoint folder counts only if it exists
    (SageMaker creates it when the job has a checkpoint config).
    """
    from omegaconf import OmegaConf

    from vc.sagemaker import compose_train_config

    user = argv_to_overrides(argv)
    first = compose_train_config(user)
    sm = OmegaConf.to_container(first.sagemaker, resolve=False)
    ckpt = Path(sm["training"]["local_checkpoint_dir"])
    derived = job_overrides(
        env,
        channels=sm["training"].get("channels") or {},
        checkpoint_dir=ckpt if ckpt.is_dir() else None,
        user_keys=override_keys(user),
    )
    log.info("overrides from the job: %s", " ".join(derived))
    log.info("overrides from the launch: %s", " ".join(user))
    cfg = compose_train_config(derived + user)
    return cfg, OmegaConf.to_container(cfg.sagemaker, resolve=True)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Train as the job's arguments say, then write the deployable model folder. Returns the exit status."""
    from vc.cli import main as cli_main
    from vc.errors import VCError
    from vc.model.bundle import is_bundle
    from vc.sagemaker.package import write_model_dir
    from vc.train import run

    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    try:
        cfg, sm = prepare(sys.argv[1:] if argv is None else argv, env)
    except VCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cli_main(run, cfg)  # a user error exits 2 here, as for train.py
    if env.get("RANK", "0") != "0":
        return 0
    bundle = Path(cfg.paths.bundle_dir)
    if not is_bundle(bundle):
        log.warning("no bundle at %s (export=%s): the model folder stays empty", bundle, cfg.get("export"))
        return 0
    out = write_model_dir(
        bundle, env["SM_MODEL_DIR"], pytorch_version=sm["images"]["inference"]["pytorch_version"]
    )
    log.info("model folder %s: bundle + code/ (SageMaker uploads it as model.tar.gz)", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
