"""The notebooks run headless (nbclient) on tiny generated outputs and are stored without outputs;
the README pictures come out of a run."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys

import nbclient
import nbformat
import pytest

from tests.conftest import REPO_ROOT, compose_config, smoke_overrides
from tests.test_listening import SYSTEMS, UTTS, write_listening_folders

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def _execute(name: str):
    """Run ``notebooks/<name>`` in a fresh python3 kernel, in the notebooks folder; the executed notebook."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}}
    )
    client.execute()
    return nb


def _outputs(nb, mime: str) -> list[str]:
    return [
        o["data"][mime]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if mime in o.get("data", {})
    ]


def _errors(nb) -> list[str]:
    return [
        o.get("ename", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]


def test_committed_notebooks_are_stripped_and_hold_no_logic():
    assert {p.name for p in NOTEBOOKS} == {"listening_test.ipynb", "training_review.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3", path.name
        assert "widgets" not in nb.metadata, f"{path.name}: stored widget state"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name}: outputs not stripped"
                )
                # functions and classes belong in vc, where the tests reach them
                assert not any(word in cell.source for word in ("def ", "class ", "lambda")), path.name


def test_listening_notebook_runs_with_simulated_ratings(tmp_path, monkeypatch):
    folders = write_listening_folders(tmp_path / "samples")
    ratings = tmp_path / "ratings"
    env = {
        "VC_SYSTEMS": ",".join(f"{name}={folders[name]}" for name in SYSTEMS),
        "VC_AB_PAIR": ",".join(SYSTEMS),
        "VC_SOURCE_DIR": str(folders["source"]),
        "VC_TARGET_DIR": str(folders["target"]),
        "VC_REFERENCE": str(folders["reference"]),
        "VC_RATINGS_DIR": str(ratings),
        "VC_RATER": "tester",
        "VC_N_BROWSE": "2",
        "VC_SIMULATE_RATINGS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    nb = _execute("listening_test.ipynb")

    assert not _errors(nb)
    # two browsed items' mel pictures, the MOS and the A/B plots
    assert len(_outputs(nb, "image/png")) == 4
    html = " ".join(_outputs(nb, "text/html"))
    assert html.count("<audio") == 2 * 4, "source, reference, converted and target players per browsed item"
    assert len(_outputs(nb, "application/vnd.jupyter.widget-view+json")) == 2
    markdown = " ".join(_outputs(nb, "text/markdown"))
    for system in (*SYSTEMS, "ground truth"):
        assert f"| {system} | naturalness | {len(UTTS)} |" in markdown
    assert f"| {SYSTEMS[0]} | {SYSTEMS[1]} |" in markdown
    rows = (ratings / "ratings_tester.csv").read_text().splitlines()
    # header, 3 systems x 3 utterances x 2 questions (ground truth: similarity too, the reference is another file),
    # 3 A/B answers
    assert len(rows) == 1 + 3 * len(UTTS) * 2 + len(UTTS)
    assert not any(system in "\n".join(rows) for system in SYSTEMS)
    assert sorted(p.name for p in ratings.glob("key_*.json")) == ["key_tester_ab.json", "key_tester_mos.json"]


def test_listening_notebook_with_one_system_runs_the_mos_test_and_says_why_no_ab(tmp_path, monkeypatch):
    """First touch: one system in VC_SYSTEMS and no VC_AB_PAIR. The MOS test runs (the ground truth
    joins it); the A/B section says it needs two systems instead of stopping the notebook."""
    folders = write_listening_folders(tmp_path / "samples", systems=("mine",))
    ratings = tmp_path / "ratings"
    env = {
        "VC_SYSTEMS": f"mine={folders['mine']}",
        "VC_SOURCE_DIR": "",
        "VC_TARGET_DIR": str(folders["target"]),
        "VC_RATINGS_DIR": str(ratings),
        "VC_N_BROWSE": "1",
        "VC_SIMULATE_RATINGS": "1",
    }
    monkeypatch.delenv("VC_AB_PAIR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    nb = _execute("listening_test.ipynb")

    assert not _errors(nb)
    markdown = " ".join(_outputs(nb, "text/markdown"))
    assert "A/B test needs two systems" in markdown and "VC_SYSTEMS" in markdown
    for system in ("mine", "ground truth"):
        assert f"| {system} | naturalness | {len(UTTS)} |" in markdown
    assert "No A/B ratings" not in markdown, "no empty A/B results when there is no A/B test"
    # the MOS form only, answered
    assert len(_outputs(nb, "application/vnd.jupyter.widget-view+json")) == 1
    assert sorted(p.name for p in ratings.glob("key_*.json")) == ["key_rater1_mos.json"]


@pytest.fixture(scope="module")
def tiny_run(smoke_root, tmp_path_factory):
    """A 10-step smoke training run with the CSV logger and two validations (steps 5 and 10); read-only."""
    from vc.train import run

    # in a folder of its own, which stands for it as a folder of runs does for its newest
    run_dir = tmp_path_factory.mktemp("tiny_runs") / "run"
    run(
        compose_config(
            "train",
            smoke_overrides(smoke_root, run_dir)
            + ["trainer.max_steps=10", "trainer.val_check_interval=5", "export=null"],
        )
    )
    return run_dir


def test_training_review_notebook_runs_on_a_smoke_run(tiny_run, tmp_path, monkeypatch):
    from vc import plots

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "table.md").write_text("| system | mcd |\n|---|---|\n| tiny | 12.3 |\n")
    (eval_dir / "summary.json").write_text(json.dumps({"mcd": {"mean": 12.3}}))
    (eval_dir / "plots").mkdir()
    plots.save(plots.curves_figure({"mcd": ([0, 1], [13.0, 12.3])}), eval_dir / "plots" / "metrics.png")
    monkeypatch.setenv("VC_RUN_DIR", str(tiny_run))
    monkeypatch.setenv("VC_EVAL_DIR", str(eval_dir))
    nb = _execute("training_review.ipynb")

    assert not _errors(nb)
    # loss, training and validation loss parts, learning rate, the eval plot
    assert len(_outputs(nb, "image/png")) == 5
    (samples,) = [h for h in _outputs(nb, "text/html") if "<table>" in h]
    assert samples.count("<tr><td>") == 2, "one row per validation step"
    assert samples.count("<img") == 4 and samples.count("<audio") == 2 + 2
    markdown = " ".join(_outputs(nb, "text/markdown"))
    assert "train/loss" in markdown and "| tiny | 12.3 |" in markdown
    assert {"mcd": {"mean": 12.3}} in _outputs(nb, "application/json")


def test_training_review_notebook_without_an_evaluation_says_how_to_add_one(tiny_run, monkeypatch):
    """First touch: VC_RUN_DIR set (to the folder of runs, as a hurried user does), no evaluation run yet
    (VC_EVAL_DIR unset). The review shows the newest run to the end; the evaluation section gives the
    eval.py command for this run's checkpoint."""
    monkeypatch.setenv("VC_RUN_DIR", str(tiny_run.parent))
    monkeypatch.delenv("VC_EVAL_DIR", raising=False)
    nb = _execute("training_review.ipynb")

    assert not _errors(nb)
    # loss, training and validation loss parts, learning rate; no evaluation plot
    assert len(_outputs(nb, "image/png")) == 4
    (samples,) = [h for h in _outputs(nb, "text/html") if "<table>" in h]
    assert samples.count("<tr><td>") == 2, "one row per validation step"
    markdown = " ".join(_outputs(nb, "text/markdown"))
    assert f"Run: `{tiny_run}`" in markdown
    assert "No evaluation of this run" in markdown
    assert f"python eval.py ckpt={tiny_run / 'checkpoints' / 'last.ckpt'}" in markdown


def test_docs_assets_from_a_run(tiny_run, tmp_path):
    from vc import docs_assets

    cfg = docs_assets.smoke_config(tmp_path / "run", steps=7, val_every=3, overrides=["seed=1"])
    assert cfg.trainer.max_steps == 7 and cfg.trainer.val_check_interval == 3 and cfg.seed == 1
    assert list(cfg.logger) == ["csv"] and cfg.export is None and cfg.data.val_samples == 2
    paths = docs_assets.write_assets(tiny_run, tmp_path / "assets")
    assert [p.name for p in paths] == list(docs_assets.ASSETS)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    # the pictures of the last validation step, first utterance (compared by digest: short failure output)
    last = sorted((tiny_run / "val_samples").glob("step*"))[-1]
    mel = sorted(last.glob("*_mel.png"))[0]
    attention = mel.with_name(mel.name.replace("_mel.png", "_attention.png"))

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert (digest(paths[1]), digest(paths[2])) == (digest(mel), digest(attention))


def test_run_logs_from_csv_and_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from vc import runlogs
    from vc.errors import DataError

    run = tmp_path / "outputs" / "train" / "run1"
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(
        "epoch,lr-AdamW,step,train/loss,val/loss\n,0.001,4,,\n0,,4,5.5,\n0,,4,,5.0\n1,,9,4.5,\n1,,9,,4.0\n"
    )
    writer = SummaryWriter(str(run / "tensorboard"))
    for step, value in ((0, 9.0), (5, 8.0)):
        writer.add_scalar("val/loss", value, step)
        writer.add_scalar("val/mcd", value + 1, step)
    writer.close()
    assert runlogs.read_tensorboard(run)["val/mcd"] == ([0, 5], [10.0, 9.0])
    curves = runlogs.load_curves(run)
    # the CSV's val/loss wins; TensorBoard adds what the CSV lacks
    assert curves["val/loss"] == ([4, 9], [5.0, 4.0]) and curves["val/mcd"] == ([0, 5], [10.0, 9.0])
    assert curves["lr-AdamW"] == ([4], [0.001]) and "epoch" not in curves
    assert list(runlogs.select(curves, "val/*", "train/loss")) == ["val/loss", "val/mcd", "train/loss"]
    assert runlogs.latest_run(tmp_path / "outputs") == run

    for step in (30, 60):
        folder = run / "val_samples" / f"step{step:07d}"
        folder.mkdir(parents=True)
        for name in ("a_1.wav", "a_1_mel.png", "a_1_attention.png", "b_2.wav"):
            (folder / name).touch()
    (run / "val_samples" / "truth").mkdir()
    (run / "val_samples" / "truth" / "a_1_source.wav").touch()
    steps = runlogs.val_steps(run)
    assert [s.step for s in steps] == [30, 60] and list(steps[0].samples) == ["a_1", "b_2"]
    assert steps[1].samples["a_1"].attention == run / "val_samples" / "step0000060" / "a_1_attention.png"
    assert steps[1].samples["b_2"].mel is None
    assert runlogs.val_truth(run) == {"a_1": {"source": run / "val_samples" / "truth" / "a_1_source.wav"}}

    assert runlogs.val_samples_html(run, "c_3") == (
        f"<p>No validation samples of utterance 'c_3' in {run / 'val_samples'}; its validation utterances "
        "are a_1, b_2 (VC_UTT_ID picks one).</p>"
    )

    # a folder of runs (outputs/train, a sweep) stands for its newest run; a run folder for itself
    older = tmp_path / "outputs" / "train" / "run0"
    (older / "tensorboard").mkdir(parents=True)
    (older / "tensorboard" / "events.out.tfevents.1").touch()
    os.utime(older, (1e9, 1e9))
    assert runlogs.latest_run(tmp_path / "outputs" / "train") == run
    assert runlogs.latest_run(older) == older

    with pytest.raises(DataError, match="logger=csv"):
        runlogs.load_curves(run / "val_samples")
    with pytest.raises(DataError, match="no such folder. Set VC_RUN_DIR"):
        runlogs.latest_run(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no training run below .*Train first"):
        runlogs.latest_run(tmp_path / "empty")
    with pytest.raises(DataError, match="eval_dir"):
        runlogs.load_eval(tmp_path / "no_eval")


def test_eval_command_of_a_cli_run_scores_its_held_out_pairs_and_the_review_finds_it(smoke_root, tmp_path):
    """A real `python train.py experiment=smoke` run; the command `eval_command` gives for it runs as
    printed (plus quick settings), scores the test pairs training held out, and `find_eval` then finds that
    evaluation below the eval root (and not another model's)."""
    from vc import runlogs

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "train run"  # a space: the command must quote it for the shell and for Hydra
    train = [
        "experiment=smoke",
        f"paths.data_dir={smoke_root}/data",
        f"paths.cache_dir={smoke_root}/cache",
        f"hydra.run.dir='{run_dir}'",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    ]
    proc = subprocess.run(
        [sys.executable, "train.py", *train],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    eval_root = tmp_path / "eval"
    assert runlogs.find_eval(run_dir, eval_root) is None

    command, notes = runlogs.eval_command(run_dir, REPO_ROOT)
    assert notes == []
    words = shlex.split(command)
    assert words[:3] == ["python", "eval.py", f'ckpt="{run_dir / "bundle"}"']
    assert {
        "data=synthetic",
        "data.src_spk=sya",
        "data.tgt_spk=syb",
        "data.split.val_ratio=0.2",
        "seed=42",
    } <= set(words)
    assert f"paths.data_dir={smoke_root}/data" in words and not any(w.startswith("trainer.") for w in words)
    quick = ["metrics.run=[mcd]", "max_utterances=1", "references.target=false", "device=cpu", "threads=1"]
    out = eval_root / "runs" / "one"
    proc = subprocess.run(
        [sys.executable, *words[1:], *quick, f"hydra.run.dir={out}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["train_overlap"]["train"] == 0, "the test pairs are the ones training held out"

    # another model's evaluation, newer, in the same root is not this run's
    other = eval_root / "runs" / "other"
    other.mkdir(parents=True)
    (other / "summary.json").write_text(json.dumps({"ckpt_path": str(tmp_path / "elsewhere" / "bundle")}))
    report = runlogs.find_eval(run_dir, eval_root)
    assert report is not None and report.folder == out and report.summary == summary
    assert runlogs.find_eval(run_dir, other).folder == other, "an eval folder named directly is shown"

    # the same run, had it held out no test pairs: the command leaves test_ratio to eval.py, and says so
    from omegaconf import OmegaConf

    no_test = tmp_path / "no_test"
    shutil.copytree(run_dir / ".hydra", no_test / ".hydra")
    shutil.copytree(run_dir / "bundle", no_test / "bundle")
    config = OmegaConf.load(no_test / ".hydra" / "config.yaml")
    config.data.split.test_ratio = 0
    OmegaConf.save(config, no_test / ".hydra" / "config.yaml")
    command, (note,) = runlogs.eval_command(no_test, REPO_ROOT)
    assert "test_ratio" not in command and "held out no test pairs (data.split.test_ratio=0)" in note
    text = runlogs.eval_note(no_test, eval_root, REPO_ROOT)
    assert f"none below `{eval_root}` scored it" in text and command in text and note in text


def test_eval_note_for_a_run_without_a_checkpoint(tmp_path):
    from vc import runlogs

    assert runlogs.eval_command(tmp_path, tmp_path) == (
        None,
        [
            f"{tmp_path} has no bundle or checkpoint yet: evaluate it once training has written its first "
            "checkpoint (after the first validation)."
        ],
    )
    text = runlogs.eval_note(tmp_path, tmp_path / "eval")
    assert f"(`{tmp_path / 'eval'}` does not exist)" in text and "python eval.py" not in text


def test_a_curve_figure_with_nothing_logged_says_so():
    from vc import plots

    fig = plots.curves_figure({}, title="learning rate")
    assert [t.get_text() for t in fig.axes[0].texts] == ["not logged in this run"]
    assert fig.axes[0].get_legend() is None
    plots.plt.close(fig)
