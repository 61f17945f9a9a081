"""Launch training on SageMaker from the same configs and overrides a local run uses.

    python -m vc.sagemaker.launch --dry-run sagemaker.role=ARN sagemaker.s3_prefix=s3://BUCKET/vc data.src_spk=awb
    python -m vc.sagemaker.launch data.src_spk=awb,bdl trainer.precision=bf16   # a sweep: one job per point

Two layers. The spec functions (:func:`training_job_spec`, :func:`endpoint_spec`) turn
``conf/sagemaker`` and the overrides into plain dicts, offline and testable; ``--dry-run``
prints them. The SDK functions (:func:`submit_training_job`, :func:`deploy_endpoint`,
:func:`invoke_endpoint`, :func:`delete_endpoint`) hand those dicts to the SageMaker Python SDK
3.x (``ModelTrainer`` and the ``sagemaker.core`` resources); only they import it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime

from vc.errors import ConfigError, VCError
from vc.sagemaker.hyperparams import expand_sweeps, overrides_to_hyperparameters

log = logging.getLogger(__name__)

SM_PROGRAM = "inference.py"
STAGED = "<staged at submit: vc/, conf/, pyproject.toml, requirements.txt>"
JOB_MODEL_DATA = "<the training job's model.tar.gz>"


def _require(value, override: str, example: str):
    if value in (None, ""):
        raise ConfigError(
            f"{override} is not set. Pass {override}={example} (or set it in conf/sagemaker/default.yaml)."
        )
    return value


def s3_uri(sm: Mapping, uri: str | None) -> str | None:
    """``uri`` as a full S3 URI: ``s3://...`` stays, anything else is relative to ``sm["s3_prefix"]``."""
    if uri is None:
        return None
    uri = str(uri)
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    prefix = _require(sm.get("s3_prefix"), "sagemaker.s3_prefix", "s3://my-bucket/speecht5-vc")
    if not str(prefix).startswith("s3://"):
        raise ConfigError(f"sagemaker.s3_prefix={prefix}: not an S3 URI. Use s3://BUCKET/FOLDER.")
    return f"{str(prefix).rstrip('/')}/{uri.strip('/')}"


def run_name(base: str, *, index: int | None = None, now: datetime | None = None) -> str:
    """A SageMaker-safe unique name: ``<base>-<yyyymmdd-hhmmss>[-<index>]``, at most 63 characters."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    suffix = f"-{stamp}" + (f"-{index}" if index is not None else "")
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", str(base)).strip("-") or "vc"
    return clean[: 63 - len(suffix)].rstrip("-") + suffix


def _image(sm: Mapping, scope: str, instance_type: str) -> dict:
    images = sm["images"][scope]
    return {
        "scope": scope,
        "uri": images.get("uri"),
        "framework": "huggingface",
        "transformers_version": str(images["transformers_version"]),
        "pytorch_version": str(images["pytorch_version"]),
        "py_version": images["py_version"],
        "instance_type": instance_type,
    }


def training_job_spec(sm: Mapping, overrides: Sequence[str], *, name: str, source_dir: str = STAGED) -> dict:
    """The training job for one sweep point, as plain data (snake_case names of the SDK's configs).

    ``sm`` is the resolved ``sagemaker`` config node; ``overrides`` are the Hydra overrides of the
    run (no sweeps), carried as hyperparameters; ``name`` names the job and its checkpoint folder.
    Raises :class:`ConfigError` for a missing role or S3 prefix and inconsistent settings.
    """
    tr = sm["training"]
    role = _require(sm.get("role"), "sagemaker.role", "arn:aws:iam::ACCOUNT:role/SageMakerRole")
    count = int(tr["instance_count"])
    distribution = tr.get("distribution")
    if distribution not in (None, "torchrun"):
        raise ConfigError(f"sagemaker.training.distribution={distribution}: use null or torchrun.")
    if count > 1 and distribution != "torchrun":
        raise ConfigError(
            f"sagemaker.training.instance_count={count} needs sagemaker.training.distribution=torchrun "
            "(otherwise every instance would train its own copy)."
        )
    max_run = int(float(tr["max_run_hours"]) * 3600)
    stopping = {"max_runtime_in_seconds": max_run}
    if tr["spot"]:
        max_wait = int(float(tr["max_wait_hours"]) * 3600)
        if max_wait < max_run:
            raise ConfigError(
                f"sagemaker.training.max_wait_hours={tr['max_wait_hours']} is below max_run_hours={tr['max_run_hours']}; "
                "spot training needs max_wait >= max_run."
            )
        stopping["max_wait_time_in_seconds"] = max_wait
    channels = []
    for channel, ch in (tr.get("channels") or {}).items():
        uri = s3_uri(sm, ch.get("uri"))
        if uri is not None:
            channels.append({"channel_name": channel, "data_source": uri})
    checkpoint_uri = s3_uri(sm, tr["checkpoint_uri"])
    return {
        "region": sm.get("region"),
        "role": role,
        "base_job_name": name,
        "image": _image(sm, "training", tr["instance_type"]),
        "source_code": {
            "source_dir": source_dir,
            "entry_script": tr["entry_script"],
            "requirements": "requirements.txt",
        },
        "compute": {
            "instance_type": tr["instance_type"],
            "instance_count": count,
            "volume_size_in_gb": int(tr["volume_size_gb"]),
            "enable_managed_spot_training": bool(tr["spot"]),
        },
        "stopping_condition": stopping,
        "distributed": (
            {"type": "torchrun", "process_count_per_node": tr.get("processes_per_host")}
            if distribution
            else None
        ),
        "input_data_config": channels,
        "output_data_config": {"s3_output_path": s3_uri(sm, tr["output_uri"])},
        # one folder per job: a spot restart of this job resumes from it, other jobs never do
        "checkpoint_config": (
            {"s3_uri": f"{checkpoint_uri}/{name}", "local_path": tr["local_checkpoint_dir"]}
            if checkpoint_uri
            else None
        ),
        "hyperparameters": overrides_to_hyperparameters(overrides),
        "environment": {str(k): str(v) for k, v in (tr.get("environment") or {}).items()},
    }


def endpoint_spec(sm: Mapping, model_data: str, *, name: str) -> dict:
    """Model, endpoint config and endpoint for a ``model.tar.gz`` at ``model_data`` (an S3 URI), as plain data."""
    ep = sm["endpoint"]
    role = _require(sm.get("role"), "sagemaker.role", "arn:aws:iam::ACCOUNT:role/SageMakerRole")
    environment = {
        "SAGEMAKER_PROGRAM": SM_PROGRAM,
        "VC_MAX_REQUEST_MB": str(ep["max_request_mb"]),
        **{str(k): str(v) for k, v in (ep.get("environment") or {}).items()},
    }
    return {
        "region": sm.get("region"),
        "image": _image(sm, "inference", ep["instance_type"]),
        "model": {
            "model_name": name,
            "execution_role_arn": role,
            "primary_container": {"model_data_url": model_data, "environment": environment},
        },
        "endpoint_config": {
            "endpoint_config_name": name,
            "production_variants": [
                {
                    "variant_name": "AllTraffic",
                    "model_name": name,
                    "instance_type": ep["instance_type"],
                    "initial_instance_count": int(ep["instance_count"]),
                    "container_startup_health_check_timeout_in_seconds": int(ep["startup_timeout_s"]),
                }
            ],
        },
        "endpoint": {"endpoint_name": name, "endpoint_config_name": name},
    }


def sagemaker_settings(cfg) -> dict:
    """The resolved ``sagemaker`` node of a composed train config, as a plain dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.sagemaker, resolve=True)


def plan(overrides: Sequence[str], *, now: datetime | None = None) -> list[dict]:
    """One training-job spec per sweep point of ``overrides``; each point is composed first, so bad overrides fail here."""
    from vc.sagemaker import compose_train_config

    points = expand_sweeps(overrides)
    now = now or datetime.now()  # one timestamp for the whole sweep
    specs = []
    for i, point in enumerate(points):
        sm = sagemaker_settings(compose_train_config(point))
        index = i if len(points) > 1 else None
        specs.append(training_job_spec(sm, point, name=run_name(sm["base_name"], index=index, now=now)))
    return specs


# ---- the SageMaker SDK (3.x) from here on; nothing above imports it ----


def _sdk():
    try:
        import boto3  # noqa: F401
        import sagemaker.core.resources  # noqa: F401
        import sagemaker.train  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f'the SageMaker SDK 3.x is not installed ({err}). Install the extra: pip install -e ".[sagemaker]"'
        ) from None


def _session(region: str | None):
    import boto3
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto3.Session(region_name=region)) if region else Session()


def image_uri(image: Mapping, region: str) -> str:
    """The ECR URI of a Hugging Face PyTorch image spec (its explicit ``uri`` if set)."""
    if image.get("uri"):
        return image["uri"]
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        image["framework"],
        region=region,
        version=image["transformers_version"],
        base_framework_version=f"pytorch{image['pytorch_version']}",
        py_version=image["py_version"],
        instance_type=image["instance_type"],
        image_scope=image["scope"],
    )


def submit_training_job(spec: Mapping, *, wait: bool = False):
    """Stage the job code, create the training job from ``spec`` and return the SDK's ``TrainingJob``.

    With ``wait`` it streams the logs and returns when the job ends.
    """
    _sdk()
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train.distributed import Torchrun

    from vc.sagemaker.package import stage_job_code

    session = _session(spec["region"])
    with tempfile.TemporaryDirectory(prefix="vc-job-code-") as code:
        stage_job_code(code, pytorch_version=spec["image"]["pytorch_version"])
        dist = spec["distributed"]
        trainer = ModelTrainer(
            sagemaker_session=session,
            role=spec["role"],
            base_job_name=spec["base_job_name"],
            training_image=image_uri(spec["image"], session.boto_region_name),
            source_code=SourceCode(**{**spec["source_code"], "source_dir": code}),
            compute=Compute(**spec["compute"]),
            stopping_condition=StoppingCondition(**spec["stopping_condition"]),
            distributed=Torchrun(process_count_per_node=dist["process_count_per_node"]) if dist else None,
            output_data_config=OutputDataConfig(**spec["output_data_config"]),
            checkpoint_config=CheckpointConfig(**spec["checkpoint_config"])
            if spec["checkpoint_config"]
            else None,
            hyperparameters=dict(spec["hyperparameters"]),
            environment=dict(spec["environment"]),
        )
        inputs = [InputData(**c) for c in spec["input_data_config"]] or None
        # the code is uploaded to S3 inside train(), so the staged folder may go afterwards
        trainer.train(input_data_config=inputs, wait=wait, logs=wait)
    return trainer._latest_training_job  # the SDK keeps no public handle on the job it created


def model_data_of(job) -> str:
    """The S3 URI of a finished training job's ``model.tar.gz``."""
    job.refresh()
    if job.training_job_status != "Completed":
        raise VCError(
            f"training job {job.training_job_name} ended {job.training_job_status}: {job.failure_reason}"
        )
    return job.model_artifacts.s3_model_artifacts


def deploy_endpoint(spec: Mapping, *, wait: bool = True):
    """Create the model, endpoint config and endpoint of an :func:`endpoint_spec`; return the ``Endpoint``."""
    _sdk()
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant

    session = _session(spec["region"])
    region = session.boto_region_name
    m = spec["model"]
    container = ContainerDefinition(image=image_uri(spec["image"], region), **m["primary_container"])
    Model.create(
        model_name=m["model_name"],
        primary_container=container,
        execution_role_arn=m["execution_role_arn"],
        session=session.boto_session,
        region=region,
    )
    ec = spec["endpoint_config"]
    EndpointConfig.create(
        endpoint_config_name=ec["endpoint_config_name"],
        production_variants=[ProductionVariant(**v) for v in ec["production_variants"]],
        session=session.boto_session,
        region=region,
    )
    endpoint = Endpoint.create(**spec["endpoint"], session=session.boto_session, region=region)
    if wait:
        endpoint.wait_for_status("InService")
    return endpoint


def invoke_endpoint(spec: Mapping, payload: Mapping) -> dict:
    """POST ``payload`` (the JSON contract of vc.sagemaker.inference) to the endpoint; return the JSON reply."""
    _sdk()
    from sagemaker.core.resources import Endpoint

    session = _session(spec["region"])
    endpoint = Endpoint.get(
        spec["endpoint"]["endpoint_name"], session=session.boto_session, region=session.boto_region_name
    )
    reply = endpoint.invoke(
        body=json.dumps(payload).encode(), content_type="application/json", accept="application/json"
    )
    body = reply.body.read() if hasattr(reply.body, "read") else reply.body
    return json.loads(body)


def delete_endpoint(spec: Mapping) -> None:
    """Delete the endpoint, its config and the model of an :func:`endpoint_spec`; missing ones are skipped."""
    _sdk()
    from botocore.exceptions import ClientError
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model

    session = _session(spec["region"])
    kw = {"session": session.boto_session, "region": session.boto_region_name}
    for resource, name in (
        (Endpoint, spec["endpoint"]["endpoint_name"]),
        (EndpointConfig, spec["endpoint_config"]["endpoint_config_name"]),
        (Model, spec["model"]["model_name"]),
    ):
        try:
            resource.get(name, **kw).delete()
            log.info("deleted %s %s", resource.__name__, name)
        except ClientError as err:
            log.warning("could not delete %s %s: %s", resource.__name__, name, err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vc.sagemaker.launch",
        description="Submit SageMaker training jobs from conf/train.yaml + Hydra overrides (a sweep gives one job per point).",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (sweeps: key=a,b)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the job and endpoint specs as JSON; contact nobody"
    )
    parser.add_argument("--wait", action="store_true", help="stream the logs of a single job until it ends")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        specs = plan(args.overrides)
        if args.dry_run:
            from vc.sagemaker import compose_train_config

            sm = sagemaker_settings(compose_train_config(expand_sweeps(args.overrides)[0]))
            endpoint = endpoint_spec(
                sm, JOB_MODEL_DATA, name=sm["endpoint"]["name"] or run_name(sm["base_name"])
            )
            print(json.dumps({"training_jobs": specs, "endpoint": endpoint}, indent=2))
            return 0
        if args.wait and len(specs) > 1:
            raise ConfigError("--wait streams one job's logs; a sweep submits several. Drop --wait.")
        for spec in specs:
            job = submit_training_job(spec, wait=args.wait)
            print(f"submitted {job.training_job_name}  (hyperparameters: {len(spec['hyperparameters'])})")
    except VCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
