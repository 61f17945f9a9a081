"""Regenerate the README's pictures from a smoke run: loss curve, one validation mel and attention map.

    python -m vc.docs_assets                       # writes docs/assets/*.png
    python -m vc.docs_assets --out /tmp/assets --steps 60 paths.root_dir=/tmp/vc

Runs ``experiment=smoke`` (offline: synthetic corpus, tiny random model, CPU) through
:func:`vc.train.run` with the CSV logger, then writes ``loss_curve.png`` (train and validation loss
against step) and copies the mel and attention pictures of the first validation utterance at the
last validation step as ``val_mel.png`` and ``val_attention.png``. Extra arguments are Hydra
overrides of ``conf/train.yaml``. Data and cache go where ``python train.py experiment=smoke``
puts them (``paths.root_dir``: ``$VC_ROOT`` or the current folder).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize

from vc import plots, runlogs
from vc.errors import DataError, user_error

ASSETS = ("loss_curve.png", "val_mel.png", "val_attention.png")


def smoke_config(run_dir: Path, steps: int, val_every: int, overrides: list[str]):
    """``conf/train.yaml`` with ``experiment=smoke``, the CSV logger and no bundle export, writing into ``run_dir``."""
    with initialize(config_path="../conf", version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=smoke",
                "logger=csv",
                "export=null",
                f"paths.output_dir={run_dir}",
                f"trainer.max_steps={steps}",
                f"trainer.val_check_interval={val_every}",
                *overrides,
            ],
        )


def write_assets(run_dir: str | Path, out: str | Path) -> list[Path]:
    """A finished run's folder -> the :data:`ASSETS` PNGs in ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves = runlogs.select(runlogs.load_curves(run_dir), "train/loss", "val/loss")
    plots.save(plots.curves_figure(curves, title="experiment=smoke: spectrogram loss"), out / ASSETS[0])
    steps = runlogs.val_steps(run_dir)
    if not steps:
        raise DataError(f"{run_dir}: the run wrote no validation samples; raise --steps above --val-every.")
    sample = next(iter(steps[-1].samples.values()))
    shutil.copyfile(sample.mel, out / ASSETS[1])
    shutil.copyfile(sample.attention, out / ASSETS[2])
    return [out / name for name in ASSETS]


def run(out: str | Path, steps: int, val_every: int, overrides: list[str], run_dir: str | Path | None = None):
    """Train the smoke experiment into ``run_dir`` (a temporary folder when None) and write the assets."""
    from vc.train import run as train

    keep = (
        contextlib.nullcontext(run_dir) if run_dir else tempfile.TemporaryDirectory(prefix="vc_docs_assets_")
    )
    with keep as folder:
        folder = Path(folder).resolve()
        train(smoke_config(folder, steps, val_every, overrides))
        return write_assets(folder, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vc.docs_assets", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/assets", help="folder for the PNGs (default: docs/assets)")
    # about three minutes on two shared CPU cores
    parser.add_argument("--steps", type=int, default=120, help="training steps (default: 120)")
    parser.add_argument("--val-every", type=int, default=40, help="steps between validations (default: 40)")
    parser.add_argument("--run-dir", help="keep the run here instead of in a temporary folder")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = run(args.out, args.steps, args.val_every, args.overrides, args.run_dir)
    except Exception as err:
        # Hydra's instantiate wraps the user's errors: report them as themselves, without a traceback
        found = user_error(err)
        if found is None:
            raise
        print(f"error: {found}", file=sys.stderr)
        sys.exit(2)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
