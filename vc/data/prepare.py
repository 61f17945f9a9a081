"""Prepare the data of a training config and print a summary.

    python -m vc.data.prepare                                  # ARCTIC awb -> clb (downloads if needed)
    python -m vc.data.prepare data.corpus.root=/data/arctic data.src_spk=bdl data.tgt_spk=slt
    python -m vc.data.prepare experiment=smoke                 # offline synthetic corpus

Takes the same overrides as train.py. Downloads or writes the corpus, computes and caches
features and x-vectors, then prints pairs, dropped ids, split sizes, bad files, cache hits and
the padding fraction of bucketed against random batches. A second call hits every cache.
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig


def run(cfg: DictConfig) -> str:
    """Prepare and set up ``cfg.data``; return the summary text."""
    if cfg.get("tiny_models"):
        from vc.model.tiny import build_tiny_models

        build_tiny_models(cfg.tiny_models)
    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.prepare_data()
    datamodule.setup("fit")
    summary = str(datamodule.report)
    print(summary)
    return summary


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from vc.cli import main as cli_main

    cli_main(run, cfg)


if __name__ == "__main__":
    main()
