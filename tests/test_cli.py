"""The entry scripts' help and config printing, as the README shows them."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", ["train.py", "infer.py", "eval.py"])
def test_help_lists_groups_and_examples(script):
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"{script}: SpeechT5 any-to-any voice conversion" in proc.stdout
    assert "audio: speecht5" in proc.stdout and "paths: default" in proc.stdout
    assert "experiment=smoke" in proc.stdout and "--cfg job" in proc.stdout
    assert (
        """quote the value for Hydra\ninside the shell's quotes, e.g. 'src="take 1, final.wav"'"""
        in proc.stdout
    )


def test_train_help_lists_every_group():
    out = _run("train.py", "--help").stdout
    for line in (
        "data: arctic, base, manifest, synthetic",
        "experiment: awb_clb",
        "trainer: cpu, ddp, default, gpu",
    ):
        assert line in out


def test_cfg_job_shows_the_overrides_as_typed():
    proc = _run("train.py", "--cfg", "job", "data.src_spk=awb", "trainer.precision=bf16")
    assert proc.returncode == 0, proc.stderr
    assert "src_spk: awb" in proc.stdout and "precision: bf16" in proc.stdout
    assert "pretrained: microsoft/speecht5_vc" in proc.stdout
