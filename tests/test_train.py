"""Training: configs compose, the model really learns, the CLI run, sweeps, DDP, resume, bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT, compose_config, smoke_overrides

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


def _env(root: Path) -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        "VC_ROOT": str(root),
    }


def _train_cli(args: list[str], root: Path, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO_ROOT,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def _cli_overrides(root: Path, run_dir: Path) -> list[str]:
    return [
        "experiment=smoke",
        f"paths.data_dir={root}/data",
        f"paths.cache_dir={root}/cache",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    from hydra.utils import get_class

    cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert get_class(cfg.model._target_) and get_class(cfg.data._target_)
    assert cfg.model.audio.sample_rate == cfg.data.audio.sample_rate == cfg.audio.sample_rate
    assert cfg.callbacks.model_checkpoint.dirpath == f"{tmp_path}/checkpoints"


def test_default_run_is_awb_clb_and_accepts_bf16(tmp_path):
    from vc.train import normalize_precision

    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", "trainer.precision=bf16"])
    assert (cfg.data.src_spk, cfg.data.tgt_spk) == ("awb", "clb")
    assert cfg.model.optimizer.lr == 1e-5 and cfg.model.scheduler.num_warmup_steps == 500
    assert cfg.trainer.max_steps == 2000 and cfg.trainer.accumulate_grad_batches == 8
    assert cfg.data.batch_size == 2 and cfg.seed == 42 and cfg.data.speaker.mode == "average"
    assert normalize_precision(cfg.trainer.precision) == "bf16-mixed"
    assert normalize_precision("16-mixed") == "16-mixed"


def test_offline_hub_model_gives_the_override(tmp_path, smoke_root):
    """With no hub, the default model stops with a message naming it and the override."""
    proc = _train_cli(
        [
            f"hydra.run.dir={tmp_path}/run",
            "data.src_spk=awb",
            "trainer.precision=bf16",
            "trainer.accelerator=cpu",
        ],
        smoke_root,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "microsoft/speecht5_vc" in proc.stderr and "model.pretrained=" in proc.stderr
    assert "Traceback" not in proc.stderr


def _free_running_l1(module, batch) -> float:
    """DTW-aligned L1 between generated and target mels, averaged over the batch."""
    from vc.metrics import dtw

    mels, lengths, _ = module.generate(batch)
    errors = []
    for i, n in enumerate(lengths):
        pred = mels[i, :n].numpy()
        target = batch["labels"][i, : int(batch["tgt_lengths"][i])].numpy()
        _, path = dtw(pred, target)
        errors.append(np.abs(pred[path[:, 0]] - target[path[:, 1]]).mean())
    return float(np.mean(errors))


def test_overfit_learns(smoke_root, tmp_path):
    """The tiny model overfits 4 synthetic pairs: loss falls and free-running output nears the target."""
    from vc.train import build

    cfg = compose_config(
        "train",
        smoke_overrides(smoke_root, tmp_path)
        + [
            "logger=[]",
            "callbacks=[]",
            "export=null",
            "trainer.max_steps=150",
            "trainer.val_check_interval=null",
            "trainer.check_val_every_n_epoch=1000",
            "data.split.max_train_pairs=4",
            "data.batch_size=4",
            "model.optimizer.lr=3e-3",
            "model.scheduler.num_warmup_steps=10",
            "model.generation.minlenratio=0.0",
            "model.generation.maxlenratio=3.0",
        ],
    )
    datamodule, module, trainer = build(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = datamodule.collate([datamodule.datasets["train"][i] for i in range(4)])
    torch.manual_seed(0)
    module.eval()
    with torch.no_grad():
        loss_before = module.teacher_forced(batch)["loss"].item()
    l1_before = _free_running_l1(module, batch)
    module.train()  # Lightning keeps the modes it finds
    trainer.fit(module, datamodule=datamodule)
    module.eval()
    with torch.no_grad():
        loss_after = module.teacher_forced(batch)["loss"].item()
    l1_after = _free_running_l1(module, batch)
    print(
        f"loss {loss_before:.3f} -> {loss_after:.3f}; free-running DTW mel L1 {l1_before:.3f} -> {l1_after:.3f}"
    )
    assert loss_after < loss_before / 3
    assert l1_after < l1_before / 2


def _tb_tags(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    acc.Reload()
    return acc.Tags()


def test_smoke_cli_run_and_bundle_round_trip(smoke_root, tmp_path):
    """`python train.py experiment=smoke` leaves checkpoints, a bundle and TensorBoard audio + images."""
    run_dir = tmp_path / "run"
    proc = _train_cli(
        _cli_overrides(smoke_root, run_dir) + ["trainer.max_steps=20", "trainer.val_check_interval=10"],
        smoke_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and "step0000020.ckpt" in ckpts
    tags = _tb_tags(run_dir / "tensorboard")
    assert any(t.startswith("val_audio/") for t in tags["audio"]) and any(
        t.startswith("truth/") for t in tags["audio"]
    )
    assert any(t.startswith("val_mel/") for t in tags["images"]) and any(
        t.startswith("val_attention/") for t in tags["images"]
    )
    assert {"train/loss", "train/l1", "train/bce", "train/attn", "val/loss"} <= set(tags["scalars"])
    assert list((run_dir / "val_samples" / "step0000020").glob("*.wav"))
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"

    from vc.model.bundle import load_bundle
    from vc.model.module import VCLitModule

    bundle = load_bundle(run_dir / "bundle")
    assert bundle.default_speaker.shape == (512,)
    assert bundle.settings["tgt_spk"] == "syb" and bundle.settings["audio"]["sample_rate"] == 16000
    best = VCLitModule.load_from_checkpoint(
        str(run_dir / "checkpoints" / "step0000020.ckpt"), map_location="cpu"
    )
    for name, value in best.model.state_dict().items():
        torch.testing.assert_close(bundle.model.state_dict()[name], value)

    # any .ckpt -> bundle, by the documented command
    out = tmp_path / "from_ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "vc.model.bundle", str(run_dir / "checkpoints" / "last.ckpt"), str(out)],
        cwd=REPO_ROOT,
        env=_env(smoke_root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_bundle(out).vocoder is not None
    proc = subprocess.run(
        [sys.executable, "-m", "vc.model.bundle", str(tmp_path / "missing.ckpt"), str(out)],
        cwd=REPO_ROOT,
        env=_env(smoke_root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "missing.ckpt" in proc.stderr and "Traceback" not in proc.stderr


def test_multirun_sweep_survives_a_failing_job(smoke_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _train_cli(
        [
            "-m",
            "experiment=smoke",
            f"paths.data_dir={smoke_root}/data",
            f"paths.cache_dir={smoke_root}/cache",
            f"hydra.sweep.dir={sweep}",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "export=null",
            "data.split.val_ratio=0.2,1.5",
            "model.optimizer.lr=1e-4,3e-4",
        ],
        smoke_root,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert len(summary) == 4
    ok = [r for r in summary if r["status"] == "ok"]
    failed = [r for r in summary if r["status"] == "failed"]
    assert len(ok) == 2 and all(r["value"] is not None and r["metric"] == "val/loss" for r in ok)
    assert len(failed) == 2 and all("val_ratio" in r["error"] for r in failed)
    assert "sweep summary (val/loss)" in proc.stdout
    assert {p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()} == {"0", "1", "2", "3"}


@pytest.mark.slow
def test_ddp_on_cpu_two_processes(smoke_root, tmp_path):
    """Two CPU ranks with the production dropout block (encoder LayerDrop 0.05) finish.

    LayerDrop skips the tiny model's one encoder layer on one rank and not the other in most runs
    of 40 steps (about 98%); without find_unused_parameters DDP then waits for ever, which the
    timeout turns into a failure.
    """
    run_dir = tmp_path / "ddp"
    steps = 40
    proc = _train_cli(
        _cli_overrides(smoke_root, run_dir)
        + [
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            f"trainer.max_steps={steps}",
            "trainer.val_check_interval=20",
            "callbacks.validation_audio=null",
        ],
        smoke_root,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "train.log").read_text() + proc.stdout + proc.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert "LayerDrop 0.05 under DDP: find_unused_parameters=True" in log
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "bundle").is_dir()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == steps
    assert ckpt["hyper_parameters"]["dropout"]["encoder_layerdrop"] == 0.05
    # one run folder: rank 1 wrote into rank 0's
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout=240) -> None:
    start = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path.name} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_resume_after_kill(smoke_root, tmp_path, sig):
    """A run killed mid-training continues from its last checkpoint with ckpt_path=last."""
    run_dir = tmp_path / "run"
    interval = 5
    args = _cli_overrides(smoke_root, run_dir) + [
        f"trainer.val_check_interval={interval}",
        "callbacks.validation_audio=null",
        "export=null",
        "model.scheduler.num_training_steps=10000",
    ]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args, "trainer.max_steps=10000"],
        cwd=REPO_ROOT,
        env=_env(smoke_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(run_dir / "checkpoints" / f"step{2 * interval:07d}.ckpt", proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    ckpts = {
        p.name: torch.load(p, map_location="cpu", weights_only=False)
        for p in (run_dir / "checkpoints").glob("*.ckpt")
    }
    killed_at = max(c["global_step"] for c in ckpts.values())
    assert 2 * interval <= killed_at < 10000
    if sig == signal.SIGTERM:
        assert "on_exception.ckpt" in ckpts  # written on the signal: nothing lost
    else:
        # lost work is at most one checkpoint interval
        assert ckpts["last.ckpt"]["global_step"] % interval == 0

    target = (killed_at // interval + 2) * interval  # ends on a validation, so last.ckpt holds it
    resumed = _train_cli(args + ["ckpt_path=last", f"trainer.max_steps={target}"], smoke_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in (run_dir / "train.log").read_text()
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == target
    # optimiser and scheduler state came back: the scheduler's count continues from the kill
    assert final["lr_schedulers"][0]["last_epoch"] == target
    assert final["optimizer_states"][0]["state"], "optimiser moments missing"


def _tiny_module(tiny_models, **optimizer):
    from vc.model.module import VCLitModule

    config = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, **optimizer}
    # no scheduler: these look at the optimiser alone, outside a trainer
    return VCLitModule(pretrained=str(tiny_models.speecht5), optimizer=config, scheduler={})


def test_optimizer_on_the_cpu_is_torchs_default(tiny_models):
    optimizer = _tiny_module(tiny_models).configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults["fused"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_optimizer_on_a_gpu_is_fused_unless_the_config_says(tiny_models):
    fused = _tiny_module(tiny_models).cuda().configure_optimizers()
    assert fused.defaults["fused"] is True
    chosen = _tiny_module(tiny_models, fused=False).cuda().configure_optimizers()
    assert chosen.defaults["fused"] is False
