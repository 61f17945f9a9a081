"""Checkpoints a kill cannot spoil: the atomic writer under kill -9, and `ckpt_path=last` past a
cut-short newest checkpoint, through real training runs of the smoke experiment."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_train import _cli_overrides, _train_cli
from vc.checkpoints import remove_partial_checkpoints

# a checkpoint big enough that writing it takes a while (32 MB)
WRITER_LOOP = """
import sys, torch
from vc.checkpoints import AtomicCheckpointIO

writer, state = AtomicCheckpointIO(), torch.zeros(8_000_000)
for step in range(1, 10**6):
    writer.save_checkpoint({"state": state.fill_(step)}, sys.argv[1])
"""


def test_a_kill_while_writing_never_leaves_a_partial_file_at_the_final_name(tmp_path):
    """kill -9 a process that writes checkpoints in a loop, in the middle of a write: the file at
    the final name is the previous complete checkpoint, and the temporary file is cleaned up.

    The writer's temp folder is set to a tmpfs (/dev/shm), as on machines whose /tmp is one:
    Lightning's own writer then copies its temporary file into the final name."""
    folder = tmp_path / "checkpoints"
    final = folder / "last.ckpt"
    buffer = io.BytesIO()
    torch.save({"state": torch.zeros(8_000_000)}, buffer)
    complete_size = buffer.tell()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if Path("/dev/shm").is_dir():
        env["TMPDIR"] = "/dev/shm"
    proc = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(final)], env=env, stderr=subprocess.PIPE)
    try:
        # kill at the first moment a write is under way after a complete one: a temporary file
        # beside the final one, or the final file being written in place
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no write under way was seen"
            size = final.stat().st_size if final.exists() else None
            if size is not None and (size != complete_size or list(folder.glob(".*.tmp"))):
                break
            time.sleep(0.001)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    checkpoint = torch.load(final, map_location="cpu", weights_only=True)
    state = checkpoint["state"]
    assert state[0] >= 1 and torch.equal(state, torch.full_like(state, float(state[0])))
    removed = remove_partial_checkpoints(folder)
    assert [p.name for p in removed] == [f".last.ckpt.{proc.pid}.tmp"]
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]


@pytest.fixture(scope="module")
def trained(smoke_root, tmp_path_factory) -> tuple[Path, Path]:
    """A smoke run folder after 4 steps (step0000002.ckpt, step0000004.ckpt and last.ckpt, the
    newest) and a pristine copy of it: ``(run folder, copy)``."""
    base = tmp_path_factory.mktemp("trained")
    proc = _train_cli(_run_args(smoke_root, base / "run") + ["trainer.max_steps=4"], smoke_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(base / "run", base / "pristine")
    return base / "run", base / "pristine"


@pytest.fixture
def run_dir(trained) -> Path:
    """The trained run folder as the training left it. Restored in place: its checkpoints record
    their folder, and Lightning resumes their bookkeeping (last.ckpt's name) only in the same one."""
    run, pristine = trained
    shutil.rmtree(run)
    shutil.copytree(pristine, run)  # keeps modification times: last.ckpt stays the newest
    return run


def _run_args(root: Path, run_dir: Path) -> list[str]:
    return _cli_overrides(root, run_dir) + [
        "trainer.val_check_interval=2",
        "callbacks.validation_audio=null",
        "export=null",
        "model.scheduler.num_training_steps=100",
    ]


def _checkpoints(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()}


def test_a_data_error_on_resume_writes_no_checkpoint(run_dir, smoke_root):
    """A resumed run that stops on a data error before its first step leaves the checkpoints as
    they were: no untrained on_exception.ckpt that the next ckpt_path=last would pick."""
    before = _checkpoints(run_dir)
    proc = _train_cli(
        _run_args(smoke_root, run_dir) + ["ckpt_path=last", "trainer.max_steps=6", "data.split.val_ratio=0"],
        smoke_root,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "val split is empty" in proc.stderr and "Traceback" not in proc.stderr
    assert _checkpoints(run_dir) == before


def test_resume_skips_a_cut_short_newest_checkpoint(run_dir, smoke_root):
    """What a kill in the middle of writing left (the newest .ckpt cut short, a temporary file):
    ckpt_path=last names the bad file, resumes from the newest complete one, writes over the bad
    one and clears the leftover."""
    ckpts = run_dir / "checkpoints"
    last = ckpts / "last.ckpt"
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 2)
    leftover = ckpts / ".step0000006.ckpt.4242.tmp"
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")

    resumed = _train_cli(
        _run_args(smoke_root, run_dir) + ["ckpt_path=last", "trainer.max_steps=6"], smoke_root
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert f"skipping checkpoint {last}: cut short or damaged" in log
    assert f"resuming from {ckpts / 'step0000004.ckpt'}" in log
    assert f"Restoring states from the checkpoint path at {ckpts / 'step0000004.ckpt'}" in log
    assert "removed 1 partial checkpoint(s)" in log and not leftover.exists()
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    assert not list(ckpts.glob("last-v*.ckpt"))


def test_a_damaged_checkpoint_by_name_is_a_config_error(run_dir):
    """ckpt_path=<file> that is cut short: one message naming it and the way out, not a zip error."""
    from vc.errors import ConfigError
    from vc.train import resolve_ckpt_path

    last = run_dir / "checkpoints" / "last.ckpt"
    with open(last, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ConfigError, match=rf"ckpt_path={last}: cut short or damaged .*ckpt_path=last"):
        resolve_ckpt_path(str(last), last.parent)
    assert resolve_ckpt_path("last", last.parent) == str(last.parent / "step0000004.ckpt")
