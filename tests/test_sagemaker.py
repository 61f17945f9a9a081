"""SageMaker, offline: hyperparameter round trip, job entry mapping, job/endpoint specs, model.tar.gz, handler."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra.core.override_parser.overrides_parser import OverridesParser

from vc.converter import Conversion
from vc.errors import AudioError, ConfigError, VCError
from vc.sagemaker import compose_train_config
from vc.sagemaker.entry import job_overrides, prepare
from vc.sagemaker.hyperparams import (
    argv_to_overrides,
    expand_sweeps,
    hyperparameters_to_argv,
    overrides_to_hyperparameters,
    quote,
)
from vc.sagemaker.inference import (
    RequestError,
    accepts_json,
    error_response,
    input_fn,
    output_fn,
    predict_batch,
)
from vc.sagemaker.launch import endpoint_spec, plan, run_name, sagemaker_settings, training_job_spec
from vc.sagemaker.package import build_model_tar, requirements_txt, stage_job_code

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
S3 = "s3://my-bucket/vc"
NOW = datetime(2025, 1, 2, 3, 4, 5)


# ---------------------------------------------------------------- hyperparameters


def _container_driver(hps: dict[str, str]) -> list[str]:
    """What SageMaker 3.x does between the API and the entry script: JSON-decode, re-encode, --key value."""

    def safe_deserialize(value):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    def safe_serialize(value):
        return value if isinstance(value, str) else json.dumps(value)

    argv = []
    for key, value in json.loads(json.dumps(hps)).items():  # SM_HPS travels as JSON
        argv += [f"--{key}", safe_serialize(safe_deserialize(value))]
    return argv


def _meaning(overrides: list[str]) -> list[tuple]:
    """How Hydra reads each override: (key, type, value)."""
    return [
        (o.get_key_element(), o.type, o.value()) for o in OverridesParser.create().parse_overrides(overrides)
    ]


ROUND_TRIP = [
    "data.src_spk=awb",
    "trainer.precision=bf16",
    "model.optimizer.lr=1e-5",
    "trainer.max_steps=2000",
    "export=null",
    "callbacks.validation_audio.every_n_validations=2",
    "data.bucket=false",
    "model.freeze=[speecht5.encoder.prenet.feature_encoder,speecht5.decoder]",
    "model.dropout={hidden_dropout:0.1,attention_dropout:0.1}",
    'data.corpus.mirror="http://mirror.example/a=b,c d/"',
    "+extra.note='two words, a comma'",
    "++trainer.gradient_clip_val=0.5",
    "~logger",
    "data.speaker.cache_dir=",
    "experiment=smoke",
    "hydra/launcher=local",
    'model.freeze=["a b","c=d"]',
]


@pytest.mark.parametrize("override", ROUND_TRIP)
def test_hyperparameter_round_trip_through_the_container_driver(override):
    hps = overrides_to_hyperparameters([override])
    assert all(isinstance(v, str) for v in hps.values())
    back = argv_to_overrides(_container_driver(hps))
    assert _meaning(back) == _meaning([override])


def test_round_trip_of_a_whole_list_keeps_order_and_meaning():
    hps = overrides_to_hyperparameters(ROUND_TRIP[:-1])
    assert list(hps) == [o.split("=")[0] for o in ROUND_TRIP[:-1]]
    assert _meaning(argv_to_overrides(hyperparameters_to_argv(hps))) == _meaning(ROUND_TRIP[:-1])
    assert _meaning(argv_to_overrides(_container_driver(hps))) == _meaning(ROUND_TRIP[:-1])


def test_round_trip_through_the_real_sdk_driver():
    utils = pytest.importorskip("sagemaker.train.container_drivers.common.utils")
    hps = overrides_to_hyperparameters(ROUND_TRIP[:-1])
    argv = utils.hyperparameters_to_cli_args(json.loads(json.dumps(hps)))
    assert _meaning(argv_to_overrides(argv)) == _meaning(ROUND_TRIP[:-1])


def test_argv_forms_by_hand():
    assert argv_to_overrides(["--a.b=1", "c=2", "--d", "x y", "--~e", ""]) == ["a.b=1", "c=2", "d=x y", "~e"]
    with pytest.raises(ConfigError, match="has no value"):
        argv_to_overrides(["--a"])
    with pytest.raises(ConfigError, match="no '='"):
        argv_to_overrides(["oops"])


@pytest.mark.parametrize("text", ["plain", "a b, c=d", "it's", "back\\", "x\\'y", "", "123", "true", '"q"'])
def test_quote_always_gives_back_the_same_string(text):
    (parsed,) = OverridesParser.create().parse_overrides([f"k={quote(text)}"])
    assert parsed.value() == text


def test_sweeps_expand_in_hydras_order_and_single_jobs_refuse_them():
    points = expand_sweeps(["data.src_spk=awb,bdl", "seed=1", "model.optimizer.lr=range(1,3)"])
    assert points == [
        ["data.src_spk=awb", "seed=1", "model.optimizer.lr=1"],
        ["data.src_spk=awb", "seed=1", "model.optimizer.lr=2"],
        ["data.src_spk=bdl", "seed=1", "model.optimizer.lr=1"],
        ["data.src_spk=bdl", "seed=1", "model.optimizer.lr=2"],
    ]
    assert expand_sweeps(["a='x, y'"]) == [["a='x, y'"]]
    with pytest.raises(ConfigError, match="sweep"):
        overrides_to_hyperparameters(["data.src_spk=awb,bdl"])
    with pytest.raises(ConfigError, match="twice"):
        overrides_to_hyperparameters(["a=1", "a=2"])
    with pytest.raises(ConfigError, match="not valid Hydra syntax"):
        overrides_to_hyperparameters(["a=[1"])


# ---------------------------------------------------------------- entry script


def _job_env(tmp_path: Path, **extra) -> dict[str, str]:
    env = {
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "SM_INPUT_DIR": str(tmp_path / "input"),
        "SM_CHANNEL_TRAIN": str(tmp_path / "input" / "data" / "train"),
        "SM_CHANNEL_CODE": str(tmp_path / "input" / "data" / "code"),
    }
    return {**env, **extra}


def test_job_overrides_map_sagemaker_folders_onto_paths(tmp_path):
    env = _job_env(tmp_path, WORLD_SIZE="8", LOCAL_WORLD_SIZE="4")
    channels = {
        "train": {"key": "paths.data_dir"},
        "manifest": {"key": "data.corpus.path", "file": "pairs.csv"},
    }
    env["SM_CHANNEL_MANIFEST"] = "/opt/ml/input/data/manifest"
    got = dict(
        o.split("=", 1) for o in job_overrides(env, channels=channels, checkpoint_dir="/opt/ml/checkpoints")
    )
    assert got["paths.data_dir"] == quote(env["SM_CHANNEL_TRAIN"])
    assert got["data.corpus.path"] == quote("/opt/ml/input/data/manifest/pairs.csv")
    assert got["paths.output_dir"] == quote(env["SM_OUTPUT_DATA_DIR"])
    assert got["paths.checkpoint_dir"] == quote("/opt/ml/checkpoints") and got["ckpt_path"] == "last"
    assert got["paths.root_dir"] == quote(f"{env['SM_INPUT_DIR']}/vc")
    assert (got["trainer.strategy"], got["trainer.devices"], got["trainer.num_nodes"]) == ("ddp", "4", "2")
    # what the user set wins; no checkpoint folder, no resume
    kept = job_overrides(env, channels=channels, checkpoint_dir=None, user_keys={"paths.data_dir"})
    assert not any(o.startswith(("paths.data_dir=", "ckpt_path=")) for o in kept)
    with pytest.raises(ConfigError, match="SM_MODEL_DIR"):
        job_overrides({}, channels=channels, checkpoint_dir=None)


def test_entry_composes_the_training_config_of_a_job(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    hps = overrides_to_hyperparameters(
        [
            "experiment=smoke",
            "trainer.max_steps=2",
            f"sagemaker.training.local_checkpoint_dir={ckpt}",
            "seed=7",
        ]
    )
    cfg, sm = prepare(_container_driver(hps), _job_env(tmp_path))
    assert cfg.paths.data_dir == str(tmp_path / "input" / "data" / "train")
    assert cfg.paths.output_dir == str(tmp_path / "output" / "data")
    assert cfg.paths.checkpoint_dir == str(ckpt) and cfg.ckpt_path == "last"
    assert cfg.paths.bundle_dir == str(tmp_path / "input" / "vc" / "bundle")
    assert cfg.paths.cache_dir == str(tmp_path / "input" / "vc" / "cache")
    # interpolations follow the mapped paths, and the user's overrides arrive
    assert cfg.data.corpus.root == str(tmp_path / "input" / "data" / "train" / "synthetic")
    assert cfg.callbacks.model_checkpoint.dirpath == str(ckpt)
    assert (cfg.trainer.max_steps, cfg.seed, cfg.model.pretrained.endswith("speecht5_vc")) == (2, 7, True)
    assert sm["images"]["inference"]["pytorch_version"]


@pytest.mark.slow
def test_staged_job_trains_writes_a_deployable_model_folder_and_resumes_after_a_restart(tmp_path):
    """The job as SageMaker runs it: the staged code folder, entry.py run as a file, --key value arguments."""
    import os
    import subprocess
    import sys

    import torch

    code = stage_job_code(tmp_path / "code", pytorch_version="2.9.0")
    ckpt = tmp_path / "checkpoints"  # SageMaker creates it when the job has a checkpoint config
    ckpt.mkdir()
    env = {**os.environ, **_job_env(tmp_path), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    base = [
        "experiment=smoke",
        "logger=csv",
        "data.num_workers=0",
        "trainer.val_check_interval=2",
        f"sagemaker.training.local_checkpoint_dir={ckpt}",
    ]

    def job(max_steps: int) -> str:
        argv = _container_driver(overrides_to_hyperparameters([*base, f"trainer.max_steps={max_steps}"]))
        done = subprocess.run(
            [sys.executable, "vc/sagemaker/entry.py", *argv],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    job(2)
    model = Path(env["SM_MODEL_DIR"])
    for rel in (
        "vc.yaml",
        "speecht5/config.json",
        "vocoder/config.json",
        "code/inference.py",
        "code/requirements.txt",
    ):
        assert (model / rel).is_file(), rel
    assert (ckpt / "last.ckpt").is_file()
    # a spot interruption restarts the job with the same arguments and the synced checkpoints
    assert "resuming from" in job(3)
    assert torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 3


# ---------------------------------------------------------------- specs


def _settings(*overrides: str) -> dict:
    return sagemaker_settings(
        compose_train_config([f"sagemaker.role={ROLE}", f"sagemaker.s3_prefix={S3}", *overrides])
    )


def test_training_job_spec_from_conf_sagemaker():
    overrides = ["data.src_spk=awb", "trainer.precision=bf16", f"sagemaker.role={ROLE}"]
    sm = _settings("sagemaker.training.channels.train.uri=arctic")
    spec = training_job_spec(sm, overrides, name="speecht5-vc-test")
    assert spec["role"] == ROLE
    assert spec["compute"] == {
        "instance_type": "ml.g5.xlarge",
        "instance_count": 1,
        "volume_size_in_gb": 100,
        "enable_managed_spot_training": True,
    }
    assert spec["stopping_condition"] == {
        "max_runtime_in_seconds": 12 * 3600,
        "max_wait_time_in_seconds": 24 * 3600,
    }
    assert spec["checkpoint_config"] == {
        "s3_uri": f"{S3}/checkpoints/speecht5-vc-test",
        "local_path": "/opt/ml/checkpoints",
    }
    assert spec["output_data_config"] == {"s3_output_path": f"{S3}/output"}
    assert spec["input_data_config"] == [{"channel_name": "train", "data_source": f"{S3}/arctic"}]
    assert spec["distributed"] is None
    assert spec["image"]["scope"] == "training" and spec["image"]["framework"] == "huggingface"
    assert (spec["image"]["transformers_version"], spec["image"]["pytorch_version"]) == ("5.3.0", "2.9.0")
    assert spec["source_code"]["entry_script"] == "vc/sagemaker/entry.py"
    assert spec["hyperparameters"] == {
        "data.src_spk": "awb",
        "trainer.precision": "bf16",
        "sagemaker.role": ROLE,
    }
    json.dumps(spec)  # plain data all the way down


def test_distributed_spot_off_and_checks():
    sm = _settings(
        "sagemaker.training.instance_count=2",
        "sagemaker.training.distribution=torchrun",
        "sagemaker.training.processes_per_host=4",
        "sagemaker.training.spot=false",
        "sagemaker.training.instance_type=ml.g5.12xlarge",
    )
    spec = training_job_spec(sm, [], name="n")
    assert spec["distributed"] == {"type": "torchrun", "process_count_per_node": 4}
    assert spec["compute"]["instance_count"] == 2 and spec["compute"]["enable_managed_spot_training"] is False
    assert "max_wait_time_in_seconds" not in spec["stopping_condition"]
    assert spec["input_data_config"] == []  # no channel: ARCTIC downloads inside the job
    with pytest.raises(ConfigError, match="torchrun"):
        training_job_spec(_settings("sagemaker.training.instance_count=2"), [], name="n")
    with pytest.raises(ConfigError, match="max_wait"):
        training_job_spec(_settings("sagemaker.training.max_wait_hours=1"), [], name="n")
    with pytest.raises(ConfigError, match="sagemaker.role"):
        training_job_spec(sagemaker_settings(compose_train_config([])), [], name="n")


def test_plan_gives_one_job_per_sweep_point():
    specs = plan([f"sagemaker.role={ROLE}", f"sagemaker.s3_prefix={S3}", "data.src_spk=awb,bdl"], now=NOW)
    assert [s["base_job_name"] for s in specs] == [
        "speecht5-vc-20250102-030405-0",
        "speecht5-vc-20250102-030405-1",
    ]
    assert [s["hyperparameters"]["data.src_spk"] for s in specs] == ["awb", "bdl"]
    assert specs[0]["checkpoint_config"]["s3_uri"] != specs[1]["checkpoint_config"]["s3_uri"]
    assert len(run_name("x" * 100, index=3, now=NOW)) <= 63


def test_endpoint_spec_from_conf_sagemaker():
    spec = endpoint_spec(
        _settings("sagemaker.endpoint.max_request_mb=4"), f"{S3}/output/job/model.tar.gz", name="ep"
    )
    container = spec["model"]["primary_container"]
    assert container["model_data_url"] == f"{S3}/output/job/model.tar.gz"
    assert container["environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["environment"]["VC_MAX_REQUEST_MB"] == "4"
    assert spec["model"]["execution_role_arn"] == ROLE
    (variant,) = spec["endpoint_config"]["production_variants"]
    assert (variant["instance_type"], variant["initial_instance_count"], variant["model_name"]) == (
        "ml.g4dn.xlarge",
        1,
        "ep",
    )
    assert spec["endpoint"] == {"endpoint_name": "ep", "endpoint_config_name": "ep"}
    assert spec["image"]["scope"] == "inference" and spec["image"]["pytorch_version"] == "2.6.0"


def test_sdk_objects_build_from_the_spec_offline():
    pytest.importorskip("sagemaker.train")
    from sagemaker.core import image_uris
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant
    from sagemaker.train.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        OutputDataConfig,
        StoppingCondition,
    )

    from vc.sagemaker.launch import image_uri

    spec = training_job_spec(_settings("sagemaker.training.channels.train.uri=arctic"), ["seed=1"], name="n")
    Compute(**spec["compute"])
    StoppingCondition(**spec["stopping_condition"])
    CheckpointConfig(**spec["checkpoint_config"])
    OutputDataConfig(**spec["output_data_config"])
    [InputData(**c) for c in spec["input_data_config"]]
    assert "huggingface-pytorch-training" in image_uri(spec["image"], "us-east-1")
    ep = endpoint_spec(_settings(), f"{S3}/m.tar.gz", name="ep")
    ContainerDefinition(image="x", **ep["model"]["primary_container"])
    [ProductionVariant(**v) for v in ep["endpoint_config"]["production_variants"]]
    assert "huggingface-pytorch-inference" in image_uri(ep["image"], "us-east-1")
    assert image_uris  # the SDK's tables resolve offline


def test_launch_dry_run_prints_the_specs(capsys):
    from vc.sagemaker.launch import main

    assert (
        main(["--dry-run", f"sagemaker.role={ROLE}", f"sagemaker.s3_prefix={S3}", "data.src_spk=awb,bdl"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["training_jobs"]) == 2 and printed["endpoint"]["model"]["execution_role_arn"] == ROLE
    assert main(["--dry-run", "data.src_spk=awb"]) == 2  # no role: a one-line error
    assert "sagemaker.role" in capsys.readouterr().err


# ---------------------------------------------------------------- packaging


def _fake_bundle(root: Path) -> Path:
    bundle = root / "bundle"
    for rel in ("vc.yaml", "speecht5/config.json", "vocoder/config.json", "speaker_encoder/hyperparams.yaml"):
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_text("{}")
    return bundle


def test_model_tar_layout(tmp_path):
    out = build_model_tar(_fake_bundle(tmp_path), tmp_path / "model.tar.gz", pytorch_version="2.6.0")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("code/requirements.txt").read().decode()
        handler = tar.extractfile("code/inference.py").read().decode()
    assert {
        "vc.yaml",
        "speecht5/config.json",
        "vocoder/config.json",
        "speaker_encoder/hyperparams.yaml",
    } <= names
    assert {
        "code/inference.py",
        "code/requirements.txt",
        "code/vc/__init__.py",
        "code/vc/converter.py",
    } <= names
    assert not any("__pycache__" in n for n in names)
    assert "def model_fn" in handler and "def input_fn" in handler
    assert "torch==2.6.*" in requirements.splitlines() and "torchaudio==2.6.*" in requirements.splitlines()
    assert any(line.startswith("transformers") for line in requirements.splitlines())
    assert not any(line.startswith(("sagemaker", "pytest", "jiwer")) for line in requirements.splitlines())
    with pytest.raises(ConfigError, match="not a bundle"):
        build_model_tar(tmp_path, tmp_path / "x.tar.gz", pytorch_version=None)


def test_requirements_come_from_pyproject_when_the_package_is_not_installed(monkeypatch):
    """Inside a training job the code is only on sys.path: the dependencies come from pyproject.toml."""
    import importlib.metadata

    from vc.sagemaker import package

    installed = package.project_requirements()

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", not_installed)
    from packaging.requirements import Requirement

    assert sorted(map(str, map(Requirement, package.project_requirements()))) == sorted(
        map(str, map(Requirement, installed))
    )


def test_staged_job_code(tmp_path):
    code = stage_job_code(tmp_path / "code", pytorch_version="2.9.0")
    assert (code / "vc" / "sagemaker" / "entry.py").is_file() and (code / "conf" / "train.yaml").is_file()
    assert "torch==2.9.*" in (code / "requirements.txt").read_text().splitlines()
    assert "torch>=2.3" in requirements_txt(None).splitlines()


# ---------------------------------------------------------------- handler (a stand-in model)


class EchoModel:
    """Stands in for VoiceConverter: returns each source, records the calls."""

    def __init__(self):
        self.calls = []

    def convert_many(self, srcs, refs, **generation):
        self.calls.append((len(srcs), generation))
        for ref in refs:
            if ref is not None and float(np.abs(ref[0]).max()) > 0.99:
                raise AudioError("ref: clipped (test)")
        return [Conversion(np.asarray(wav), 16000) for wav, _ in srcs]


def wav_b64(seconds=0.5, sr=16000, channels=1, amplitude=0.3) -> str:
    t = np.arange(int(seconds * sr)) / sr
    wav = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def test_input_fn_accepts_any_rate_and_channel_count():
    req = input_fn(
        json.dumps({"src_wav_b64": wav_b64(0.5, 44100, 2), "ref_wav_b64": wav_b64(1.0)}), "application/json"
    )
    assert req.src.dtype == np.float32 and req.src.ndim == 1 and abs(len(req.src) - 8000) <= 1
    assert len(req.ref) == 16000 and req.generation == {}
    req = input_fn(
        json.dumps({"src_wav_b64": wav_b64(), "parameters": {"maxlenratio": 4}}).encode(),
        "application/json; charset=utf-8",
    )
    assert req.ref is None and req.generation == {"maxlenratio": 4.0}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "match"),
    [
        ("{not json", "application/json", 400, "not valid JSON"),
        ("[1, 2]", "application/json", 400, "must be an object"),
        ('{"ref_wav_b64": "AAAA"}', "application/json", 400, "missing 'src_wav_b64'"),
        ('{"src_wav_b64": "%%%"}', "application/json", 400, "not valid base64"),
        (
            json.dumps({"src_wav_b64": base64.b64encode(b"hello, not audio").decode()}),
            "application/json",
            400,
            "not a readable audio",
        ),
        (
            json.dumps({"src_wav_b64": wav_b64(seconds=0)}),
            "application/json",
            400,
            "src_wav_b64: empty audio",
        ),
        (json.dumps({"src_wav_b64": ""}), "application/json", 400, "must be a non-empty base64"),
        (json.dumps({"src_wav_b64": wav_b64(amplitude=0.0)}), "application/json", 400, "silent"),
        (
            json.dumps({"src_wav_b64": wav_b64(), "parameters": {"beam": 3}}),
            "application/json",
            400,
            "unknown generation",
        ),
        (
            json.dumps({"src_wav_b64": wav_b64(), "parameters": {"maxlenratio": 1e6}}),
            "application/json",
            400,
            "from 0.5 to 20",
        ),
        (json.dumps({"src_wav_b64": wav_b64(), "extra": 1}), "application/json", 400, "unknown field"),
        ("{}", "audio/wav", 415, "application/json"),
    ],
)
def test_input_fn_rejects_bad_requests_with_a_clear_message(body, content_type, status, match):
    with pytest.raises((RequestError, AudioError), match=match) as info:
        input_fn(body, content_type)
    code, text = error_response(info.value)
    assert code == status and json.loads(text)["error"] == str(info.value)


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_file(samples: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt)
    return buf.getvalue()


SRC = wav_b64()
# a client's mistakes of every kind: each is a 4xx naming what is wrong, never a 500
HOSTILE = {
    "deeply nested JSON": ("[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    "invalid UTF-8": (b'{"src_wav_b64": "\xff\xfe"}', 400, "not valid JSON"),
    "a JSON string": ('"hello"', 400, "must be an object"),
    "a JSON number": ("42", 400, "must be an object"),
    "JSON null": ("null", 400, "must be an object"),
    "NaN literal": ('{"src_wav_b64": "' + SRC + '", "parameters": {"threshold": NaN}}', 400, "NaN is not"),
    "Infinity literal": (
        '{"src_wav_b64": "' + SRC + '", "parameters": {"maxlenratio": Infinity}}',
        400,
        "Infinity",
    ),
    "-Infinity literal": ('{"src_wav_b64": -Infinity}', 400, "-Infinity is not"),
    "a number too large for a float": (
        json.dumps({"src_wav_b64": SRC}).replace("}", ', "parameters": {"maxlenratio": 1e999}}'),
        400,
        "from 0.5 to 20",
    ),
    "a 400-digit integer": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"threshold": 10**400}}),
        400,
        "from 0 to 10",
    ),
    "a 5000-digit integer": (
        '{"src_wav_b64": "' + SRC + '", "parameters": {"threshold": ' + "9" * 5000 + "}}",
        400,
        "not valid JSON",
    ),
    "src a number": (json.dumps({"src_wav_b64": 12}), 400, "must be a non-empty base64 string"),
    "src a list": (json.dumps({"src_wav_b64": [SRC]}), 400, "must be a non-empty base64 string"),
    "src an object": (json.dumps({"src_wav_b64": {"a": SRC}}), 400, "must be a non-empty base64 string"),
    "src null": (json.dumps({"src_wav_b64": None}), 400, "must be a non-empty base64 string"),
    "src true": (json.dumps({"src_wav_b64": True}), 400, "must be a non-empty base64 string"),
    "ref a number": (json.dumps({"src_wav_b64": SRC, "ref_wav_b64": 3}), 400, "'ref_wav_b64' must be"),
    "parameters a list": (json.dumps({"src_wav_b64": SRC, "parameters": [1]}), 400, "must be a JSON object"),
    "parameters a string": (
        json.dumps({"src_wav_b64": SRC, "parameters": "fast"}),
        400,
        "must be a JSON object",
    ),
    "a parameter as a string": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"threshold": "0.5"}}),
        400,
        "'threshold'='0.5'",
    ),
    "a parameter as true": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"maxlenratio": True}}),
        400,
        "from 0.5",
    ),
    "a parameter null": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"minlenratio": None}}),
        400,
        "from 0 to",
    ),
    "a parameter a list": (json.dumps({"src_wav_b64": SRC, "parameters": {"threshold": [1]}}), 400, "from 0"),
    "negative minlenratio": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"minlenratio": -1}}),
        400,
        "from 0",
    ),
    "maxlenratio 0": (json.dumps({"src_wav_b64": SRC, "parameters": {"maxlenratio": 0}}), 400, "from 0.5"),
    "threshold 11": (json.dumps({"src_wav_b64": SRC, "parameters": {"threshold": 11}}), 400, "from 0 to 10"),
    "minlenratio above maxlenratio": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"minlenratio": 10, "maxlenratio": 0.5}}),
        400,
        "minlenratio=10 and maxlenratio=0.5 contradict",
    ),
    "a 100 kB field name": (
        json.dumps({"src_wav_b64": SRC, "x" * 100_000: 1}),
        400,
        "unknown field(s) 'xxxx",
    ),
    "a 100 kB parameter name": (
        json.dumps({"src_wav_b64": SRC, "parameters": {"x" * 100_000: 1}}),
        400,
        "unknown generation parameter 'xxx",
    ),
    "base64 with garbage": (
        json.dumps({"src_wav_b64": SRC[:100] + "!?" + SRC[100:]}),
        400,
        "not valid base64",
    ),
    "base64 cut short": (json.dumps({"src_wav_b64": SRC[:-3]}), 400, "not valid base64"),
    "base64 of non-ASCII": (json.dumps({"src_wav_b64": "ÄÖÜ" * 8}), 400, "not valid base64"),
    "a data URL": (json.dumps({"src_wav_b64": "data:audio/wav;base64," + SRC}), 400, "not valid base64"),
    "11 minutes of FLAC silence (30 kB)": (
        json.dumps({"src_wav_b64": encoded(audio_file(np.zeros(16000 * 660, np.float32), 16000, "FLAC"))}),
        413,
        "11.0 minutes of audio is over the 10 minute limit",
    ),
    "a sample rate of 1 Hz": (
        json.dumps({"src_wav_b64": encoded(audio_file(np.full(100, 0.3, np.float32), 1))}),
        400,
        "sample rate of 1 Hz",
    ),
    "a sample rate of 2 GHz": (
        json.dumps({"src_wav_b64": encoded(audio_file(np.full(1000, 0.3, np.float32), 2**31 - 1))}),
        400,
        "sample rate of 2147483647 Hz",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_input_fn_answers_every_client_mistake_with_a_4xx(case):
    body, status, match = HOSTILE[case]
    with pytest.raises(VCError) as info:
        input_fn(body, "application/json")
    code, text = error_response(info.value)
    assert (code, json.loads(text)["error"]) == (status, str(info.value))
    assert match in str(info.value) and len(str(info.value)) < 400  # what the client sent, shortened


def test_input_fn_takes_what_clients_really_send():
    wrapped = "\n".join(SRC[i : i + 76] for i in range(0, len(SRC), 76))  # `base64 file` wraps lines
    assert len(input_fn(json.dumps({"src_wav_b64": wrapped})).src) == 8000
    edge = {"minlenratio": 10, "maxlenratio": 10, "threshold": 0}
    assert input_fn(json.dumps({"src_wav_b64": SRC, "parameters": edge})).generation == edge


def test_input_fn_keeps_the_signature_the_sagemaker_toolkit_counts():
    import inspect

    # the toolkit passes a context as a third argument to a function with three parameters
    assert len(inspect.signature(input_fn).parameters) == 2
    assert len(inspect.signature(output_fn).parameters) == 2


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("*/*", True),
        ("application/json; charset=utf-8", True),
        ("text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("audio/wav, application/*;q=0.5", True),
        ("audio/wav", False),
        ("application/json;q=0, audio/wav", False),
    ],
)
def test_accept_headers_are_read_as_lists(accept, ok):
    assert accepts_json(accept) is ok


def test_error_response_hides_faults_but_not_what_the_server_says_about_itself():
    assert error_response(KeyError("secret")) == (
        500,
        json.dumps({"error": "internal error (KeyError); see the server log."}),
    )
    busy = RequestError("the server is shutting down; retry on another instance.", 503)
    assert error_response(busy) == (503, json.dumps({"error": str(busy)}))


def test_input_fn_size_limit(monkeypatch):
    monkeypatch.setenv("VC_MAX_REQUEST_MB", "0.01")
    with pytest.raises(RequestError, match="over the 0.01 MB limit") as info:
        input_fn(json.dumps({"src_wav_b64": wav_b64(1.0)}), "application/json")
    assert info.value.status == 413


def test_predict_batch_groups_by_settings_and_isolates_a_bad_request():
    model = EchoModel()
    good = input_fn(json.dumps({"src_wav_b64": wav_b64()}))
    fast = input_fn(json.dumps({"src_wav_b64": wav_b64(), "parameters": {"maxlenratio": 2}}))
    bad = input_fn(json.dumps({"src_wav_b64": wav_b64(), "ref_wav_b64": wav_b64(amplitude=1.0)}))
    results = predict_batch([good, fast, bad, good], model)
    assert isinstance(results[2], AudioError)
    assert all(isinstance(r, Conversion) for i, r in enumerate(results) if i != 2)
    # one call per settings group; the failed group again one by one
    assert model.calls == [(3, {}), (1, {}), (1, {}), (1, {}), (1, {"maxlenratio": 2.0})]
    reply = json.loads(output_fn(results[0], "application/json"))
    wav, sr = sf.read(io.BytesIO(base64.b64decode(reply["wav_b64"])))
    assert sr == 16000 and wav.ndim == 1 and reply["sample_rate"] == 16000 and reply["seconds"] == 0.5


# ---------------------------------------------------------------- end-to-end demo (SDK calls stubbed)


def test_demo_trains_deploys_invokes_and_always_deletes(tmp_path, monkeypatch):
    from vc.sagemaker import demo
    from vc.sagemaker import launch as sm_launch

    src = tmp_path / "src.wav"
    src.write_bytes(base64.b64decode(wav_b64()))
    calls = []

    class Job:
        training_job_name = "job"

    monkeypatch.setattr(
        sm_launch, "submit_training_job", lambda spec, wait: calls.append(("train", spec)) or Job()
    )
    monkeypatch.setattr(sm_launch, "model_data_of", lambda job: f"{S3}/output/job/output/model.tar.gz")
    monkeypatch.setattr(sm_launch, "deploy_endpoint", lambda spec, wait: calls.append(("deploy", spec)))
    monkeypatch.setattr(
        sm_launch,
        "invoke_endpoint",
        lambda spec, payload: calls.append(("invoke", payload)) or {"wav_b64": wav_b64()},
    )
    monkeypatch.setattr(sm_launch, "delete_endpoint", lambda spec: calls.append(("delete", spec)))
    base = [
        f"sagemaker.role={ROLE}",
        f"sagemaker.s3_prefix={S3}",
        f"sagemaker.demo.src={src}",
        "data.src_spk=bdl",
    ]
    out = demo.run_demo([*base, f"sagemaker.demo.out={tmp_path / 'out.wav'}"])
    assert [c[0] for c in calls] == ["train", "deploy", "invoke", "delete"]
    assert calls[0][1]["hyperparameters"]["data.src_spk"] == "bdl"
    assert calls[1][1]["model"]["primary_container"]["model_data_url"].endswith("model.tar.gz")
    assert "src_wav_b64" in calls[2][1] and sf.info(str(out)).samplerate == 16000

    calls.clear()
    monkeypatch.setattr(sm_launch, "invoke_endpoint", lambda spec, payload: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        demo.run_demo([*base, f"sagemaker.demo.model_data={S3}/m.tar.gz"])
    assert [c[0] for c in calls] == ["deploy", "delete"]  # no training; the endpoint is deleted all the same
    assert demo.main(["data.src_spk=awb,bdl"]) == 2


def test_hydra_launcher_submits_one_job_per_sweep_point(tmp_path):
    import subprocess
    import sys

    from vc.sagemaker import PROJECT_ROOT

    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=sagemaker",
        "hydra.launcher.dry_run=true",
        f"hydra.sweep.dir={tmp_path}",
        f"sagemaker.role={ROLE}",
        f"sagemaker.s3_prefix={S3}",
        "data.src_spk=awb,bdl",
        "trainer.precision=bf16",
    ]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    decoder, text, specs = json.JSONDecoder(), done.stdout, []
    start = text.find("{")
    while start != -1:
        spec, end = decoder.raw_decode(text, start)
        specs.append(spec)
        start = text.find("{", end)
    assert [s["hyperparameters"]["data.src_spk"] for s in specs] == ["awb", "bdl"]
    hps = specs[0]["hyperparameters"]
    assert hps["trainer.precision"] == "bf16" and not any(k.startswith("hydra") for k in hps)
    # Hydra escapes ':' in sweep overrides; the job reads the same value back
    assert _meaning([f"sagemaker.role={hps['sagemaker.role']}"]) == _meaning([f"sagemaker.role={ROLE}"])


# ---------------------------------------------------------------- handler on the tiny bundle


def test_handler_functions_on_the_tiny_bundle(tiny_bundle):
    from vc.sagemaker.inference import model_fn, predict_fn

    model = model_fn(str(tiny_bundle))
    for src in (wav_b64(0.6, 16000, 1), wav_b64(0.6, 44100, 2)):
        body = json.dumps(
            {"src_wav_b64": src, "ref_wav_b64": wav_b64(1.0, 44100, 2), "parameters": {"maxlenratio": 2}}
        )
        prediction = predict_fn(input_fn(body, "application/json"), model)
        reply = json.loads(output_fn(prediction, "application/json"))
        wav, sr = sf.read(io.BytesIO(base64.b64decode(reply["wav_b64"])))
        assert sr == reply["sample_rate"] == 16000 and wav.ndim == 1 and len(wav) > 0
    # no reference: the bundle's default speaker
    prediction = predict_fn(input_fn(json.dumps({"src_wav_b64": wav_b64()}), "application/json"), model)
    assert prediction.sample_rate == 16000


def test_handler_reads_its_precision_settings_from_the_environment(tiny_bundle, monkeypatch):
    from vc.model.quantize import fp16_weights_supported
    from vc.sagemaker.inference import model_fn

    monkeypatch.setenv("VC_DEVICE", "cpu")
    assert model_fn(str(tiny_bundle)).quantized == fp16_weights_supported()  # VC_QUANTIZE unset: auto
    monkeypatch.setenv("VC_QUANTIZE", "none")
    assert not model_fn(str(tiny_bundle)).quantized
    monkeypatch.setenv("VC_QUANTIZE", "int4")
    with pytest.raises(ConfigError, match="quantize='int4'"):
        model_fn(str(tiny_bundle))


def test_packaged_model_runs_on_its_own_code(tiny_bundle, tmp_path):
    """model.tar.gz unpacked as SageMaker does; code/inference.py imports the vc copy beside it."""
    import subprocess
    import sys

    archive = build_model_tar(tiny_bundle, tmp_path / "model.tar.gz", pytorch_version="2.6.0")
    model_dir = tmp_path / "opt_ml_model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"src_wav_b64": wav_b64(0.6, 22050, 2), "ref_wav_b64": wav_b64(1.0)}))
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1] + '/code'); import inference, vc; "
        "assert vc.__file__.startswith(sys.argv[1]), vc.__file__; "
        "m = inference.model_fn(sys.argv[1]); "
        "data = inference.input_fn(open(sys.argv[2]).read(), 'application/json'); "
        "print(json.loads(inference.output_fn(inference.predict_fn(data, m), 'application/json'))['sample_rate'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_dir), str(request)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "16000"
