"""AWS SageMaker: train from the same configs as a local run, package the bundle, host it.

    hyperparams.py  Hydra overrides <-> SageMaker's ``--key value`` hyperparameters
    entry.py        the entry script inside a training job: SM_* folders -> path configs -> vc.train.run
    launch.py       training-job and endpoint specs from conf/sagemaker (plain dicts), then the SDK calls
    package.py      model.tar.gz (bundle + code/) and the staged job code
    inference.py    model_fn / input_fn / predict_fn / output_fn (also behind the local endpoint, vc.serve)
    demo.py         train, deploy, convert one file, delete the endpoint

Nothing here imports the SageMaker SDK at import time; only launch.py's submit/deploy functions
need the ``sagemaker`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# the source checkout (or the job's staged code folder): vc/, conf/, pyproject.toml
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


def compose_train_config(overrides: Sequence[str] = (), *, conf_dir: str | Path = CONF_DIR):
    """Compose ``conf/train.yaml`` with Hydra overrides, as ``python train.py`` would, without running it.

    Returns the DictConfig (the ``hydra`` node left out). ``paths.output_dir`` still points at
    Hydra's run folder, so set it with an override before resolving anything that uses it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from vc.errors import ConfigError

    if not (Path(conf_dir) / "train.yaml").is_file():
        raise ConfigError(
            f"{conf_dir}: no train.yaml. SageMaker launching needs a source checkout installed with "
            '`pip install -e ".[sagemaker]"` (the configs are not part of the package).'
        )
    with initialize_config_dir(
        config_dir=str(Path(conf_dir).resolve()), version_base="1.3", job_name="train"
    ):
        try:
            return compose(config_name="train", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(
                f"overrides {' '.join(overrides)!r} do not compose with conf/train.yaml: {err}"
            ) from None
