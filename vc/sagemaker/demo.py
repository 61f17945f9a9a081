"""End to end on AWS, all from config: train, deploy an endpoint, convert one file, delete the endpoint.

    python -m vc.sagemaker.demo sagemaker.role=ARN sagemaker.s3_prefix=s3://BUCKET/vc \\
        sagemaker.demo.src=src.wav sagemaker.demo.ref=ref.wav [training overrides, e.g. data.src_spk=bdl]

It bills for a training job and for the endpoint while it runs (see the README's cost notes).
With ``sagemaker.demo.model_data=s3://.../model.tar.gz`` it skips training. The endpoint, its
config and the model are deleted at the end, also when a step fails, unless
``sagemaker.demo.delete_endpoint=false``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vc.audio import b64_to_bytes
from vc.errors import ConfigError, VCError
from vc.sagemaker import compose_train_config
from vc.sagemaker import launch as sm_launch
from vc.sagemaker.hyperparams import expand_sweeps
from vc.sagemaker.inference import request_payload

log = logging.getLogger(__name__)


def run_demo(overrides: Sequence[str]) -> Path:
    """Train (unless ``sagemaker.demo.model_data`` is set), deploy, convert ``sagemaker.demo.src``, clean up.

    Returns the path of the converted WAV (``sagemaker.demo.out``).
    """
    if len(expand_sweeps(overrides)) > 1:
        raise ConfigError("the demo runs one training job: give single values, not a sweep.")
    sm = sm_launch.sagemaker_settings(compose_train_config(overrides))
    demo = sm["demo"]
    if not demo["src"]:
        raise ConfigError(
            "sagemaker.demo.src is not set: pass sagemaker.demo.src=speech.wav (and sagemaker.demo.ref=voice.wav)."
        )
    payload = request_payload(demo["src"], demo["ref"])  # read the files before paying for anything
    model_data = demo["model_data"]
    if not model_data:
        spec = sm_launch.training_job_spec(sm, overrides, name=sm_launch.run_name(sm["base_name"]))
        log.info("training job %s ...", spec["base_job_name"])
        model_data = sm_launch.model_data_of(sm_launch.submit_training_job(spec, wait=True))
    endpoint = sm_launch.endpoint_spec(
        sm, model_data, name=sm["endpoint"]["name"] or sm_launch.run_name(f"{sm['base_name']}-ep")
    )
    log.info("deploying %s on %s ...", model_data, sm["endpoint"]["instance_type"])
    try:
        sm_launch.deploy_endpoint(endpoint, wait=True)
        reply = sm_launch.invoke_endpoint(endpoint, payload)
        if "wav_b64" not in reply:
            raise VCError(f"the endpoint answered without audio: {str(reply)[:300]}")
        out = Path(demo["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b64_to_bytes(reply["wav_b64"], "wav_b64"))
        log.info("converted %s -> %s (%.2f s)", demo["src"], out, reply.get("seconds", float("nan")))
    finally:
        if demo["delete_endpoint"]:
            sm_launch.delete_endpoint(endpoint)
        else:
            log.warning(
                "endpoint %s is still running and billing: delete it when done",
                endpoint["endpoint"]["endpoint_name"],
            )
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from vc.cli import run_command

    return run_command(lambda: run_demo(sys.argv[1:] if argv is None else argv), "wrote {}")


if __name__ == "__main__":
    sys.exit(main())
