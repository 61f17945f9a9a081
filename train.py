"""Fine-tune SpeechT5 voice conversion.

python train.py                                  # ARCTIC awb -> clb (experiment=awb_clb)
python train.py experiment=smoke                 # offline, tiny model, CPU, minutes
python train.py data.src_spk=bdl data.tgt_spk=slt trainer=gpu
python train.py -m model.optimizer.lr=1e-5,3e-5  # a sweep
python train.py --help                           # config groups and options
"""

import hydra
from omegaconf import DictConfig

from vc.cli import check_command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    from vc.cli import main as cli_main
    from vc.train import run

    return cli_main(run, cfg)


if __name__ == "__main__":
    check_command_line()  # file names Hydra's grammar cannot take as typed: one line with the fix
    main()
