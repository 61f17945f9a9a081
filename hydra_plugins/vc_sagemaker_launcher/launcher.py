"""``hydra/launcher=sagemaker``: each job of a run or sweep becomes a SageMaker training job.

    python train.py -m hydra/launcher=sagemaker sagemaker.role=ARN sagemaker.s3_prefix=s3://B/vc data.src_spk=awb,bdl

Nothing trains here: each job's overrides go to :func:`vc.sagemaker.launch.training_job_spec`
(the same specs as ``python -m vc.sagemaker.launch``) and then to the SDK. Options (conf/hydra/
launcher/sagemaker.yaml): ``dry_run`` prints the specs as JSON, ``wait`` waits for each job in turn.
Hydra discovers the class in the ``hydra_plugins`` namespace package.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SageMakerLauncher(Launcher):
    """Submits one SageMaker training job per Hydra job; returns the job names as the jobs' values."""

    def __init__(self, dry_run: bool = False, wait: bool = False) -> None:
        self.dry_run = bool(dry_run)
        self.wait = bool(wait)
        self.config: DictConfig | None = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vc.sagemaker import launch as sm_launch

        now = datetime.now()
        results = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            # the launcher's own settings stay here; the job gets the task's overrides
            task = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            sm = OmegaConf.to_container(job_cfg.sagemaker, resolve=True)
            spec = sm_launch.training_job_spec(
                sm, task, name=sm_launch.run_name(sm["base_name"], index=index, now=now)
            )
            if self.dry_run:
                print(json.dumps(spec, indent=2))
                value = spec["base_job_name"]
            else:
                job = sm_launch.submit_training_job(spec, wait=self.wait)
                value = job.training_job_name
                log.info("job %d: submitted %s (%s)", index, value, " ".join(task))
            results.append(
                JobReturn(
                    overrides=list(overrides), cfg=job_cfg, status=JobStatus.COMPLETED, _return_value=value
                )
            )
        return results
