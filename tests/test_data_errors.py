"""Data that cannot give a training set, through the real command lines: every empty split named,
with the files left out and the fix (exit 2, no traceback), and a manifest's repeated rows left out
with their line numbers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT, compose_config
from tests.test_train import _cli_overrides, _env, _train_cli
from vc.data.manifest import read_manifest
from vc.data.splits import Splits, split_pairs


@pytest.fixture
def manifest(smoke_root, tmp_path) -> Path:
    """Six synthetic pairs copied to a folder as a1.wav/b1.wav ... a6.wav/b6.wav, and pairs.csv
    listing them (relative paths)."""
    wavs = smoke_root / "data" / "synthetic"
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(1, 7):
        for side, spk in (("a", "sya"), ("b", "syb")):
            shutil.copy(
                wavs / f"cmu_us_{spk}_arctic" / "wav" / f"arctic_a{i:04d}.wav", folder / f"{side}{i}.wav"
            )
    path = folder / "pairs.csv"
    path.write_text("src_path,tgt_path\n" + "".join(f"a{i}.wav,b{i}.wav\n" for i in range(1, 7)))
    return path


def _splits(manifest: Path) -> Splits:
    """The split a training run with data=manifest makes (its data.split settings)."""
    cfg = compose_config("train", ["experiment=smoke", "data=manifest", f"data.corpus.path={manifest}"])
    return split_pairs(read_manifest(manifest).pairs, **OmegaConf.to_container(cfg.data.split, resolve=True))


def _break(path: Path) -> None:
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVE but nothing after")


def _args(root: Path, run_dir: Path, manifest: Path) -> list[str]:
    return _cli_overrides(root, run_dir) + ["data=manifest", f"data.corpus.path={manifest}"]


def _train(root: Path, tmp_path: Path, manifest: Path) -> subprocess.CompletedProcess:
    return _train_cli(_args(root, tmp_path / "run", manifest) + ["trainer.max_steps=2"], root)


def _prepare(root: Path, tmp_path: Path, manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vc.data.prepare", *_args(root, tmp_path / "prepare", manifest)],
        cwd=REPO_ROOT,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_data_error(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr[-3000:]


def test_one_pair_manifest_names_the_empty_validation_split(manifest, smoke_root, tmp_path):
    manifest.write_text("\n".join(manifest.read_text().splitlines()[:2]) + "\n")
    proc = _train(smoke_root, tmp_path, manifest)
    _assert_data_error(
        proc, "error: manifest pairs.csv: the val split is empty: the corpus has 1 pair", "Add pairs."
    )
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_the_only_validation_pair_unreadable(manifest, smoke_root, tmp_path):
    """The realistic case: a small manifest whose one validation pair has a broken file."""
    (val,) = _splits(manifest).val
    _break(val.tgt_path)
    proc = _train(smoke_root, tmp_path, manifest)
    _assert_data_error(
        proc,
        "the val split is empty: its only pair was left out:",
        f"{val.tgt_path}: not a readable audio file",
        "Repair or replace those files, or remove their pairs",
    )
    assert "the train split is empty" not in proc.stderr


def test_every_training_pair_unreadable(manifest, smoke_root, tmp_path):
    """Every empty split is named, each with its files: here train and test, not val."""
    splits = _splits(manifest)
    for pair in splits.train + splits.test:
        _break(pair.src_path)
    proc = _train(smoke_root, tmp_path, manifest)
    _assert_data_error(
        proc,
        f"the train split is empty: all {len(splits.train)} of its pairs were left out:",
        "the test split is empty: its only pair was left out:",
        *(f"{p.src_path}: not a readable audio file" for p in splits.train + splits.test),
    )
    assert "the val split is empty" not in proc.stderr


def test_an_unreadable_test_split_is_a_warning(manifest, smoke_root, tmp_path):
    """Training does not use the test split: preparing the data goes on, and says what eval.py will lack."""
    (test,) = _splits(manifest).test
    _break(test.tgt_path)
    proc = _prepare(smoke_root, tmp_path, manifest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "the test split is empty: its only pair was left out:" in output
    assert f"{test.tgt_path}: not a readable audio file" in output
    assert "splits        train 4, val 1, test 0" in proc.stdout


def test_repeated_manifest_rows_are_left_out_with_their_lines(manifest, smoke_root, tmp_path):
    """Rows that repeat a pair (the same row, an absolute path, a byte copy) are named and left out,
    so one utterance cannot land in two splits."""
    folder = manifest.parent
    shutil.copy(folder / "a2.wav", folder / "a2 copy.wav")
    with open(manifest, "a") as f:
        f.write(f"a1.wav,b1.wav\n{folder / 'a3.wav'},{folder / 'b3.wav'}\na2 copy.wav,b2.wav\n")
    proc = _prepare(smoke_root, tmp_path, manifest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "left out 3 duplicate row(s)" in output
    assert "line 8 repeats line 2; line 9 repeats line 4; line 10 repeats line 3" in output
    assert "pairs         6 pairs" in proc.stdout
