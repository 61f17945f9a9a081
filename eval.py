"""Score a trained model on the test split of a parallel corpus: MCD, F0, SECS, CER/WER, DNSMOS.

python eval.py ckpt=BUNDLE                                        # ARCTIC awb -> clb, data.split.test_ratio=0.1
python eval.py ckpt=BUNDLE data=arctic data.src_spk=bdl data.tgt_spk=slt data.split.scheme=paper
python eval.py ckpt=BUNDLE data=manifest data.corpus.path=pairs.csv metrics.asr.backend=whisper
python eval.py --help                                             # all options
"""

import hydra
from omegaconf import DictConfig

from vc.cli import check_command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig):
    from vc.cli import main as cli_main
    from vc.evaluate import run

    return cli_main(run, cfg)


if __name__ == "__main__":
    check_command_line()  # file names Hydra's grammar cannot take as typed: one line with the fix
    main()
