"""Convert speech to the voice of a reference with a trained model.

python infer.py ckpt=BUNDLE src=speech.wav ref=target.wav out=converted.wav
python infer.py ckpt=BUNDLE src=recordings/ ref=target.wav out=converted/   # a folder, mirrored
python infer.py ckpt=microsoft/speecht5_vc src="in/**/*.flac" ref=target.wav
python infer.py ckpt=BUNDLE mode=serve                                     # local HTTP endpoint
python infer.py ckpt=BUNDLE mode=demo                                      # web demo (Gradio)
python infer.py --help                                                     # all options
"""

import hydra
from omegaconf import DictConfig

from vc.cli import check_command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig):
    from vc.cli import main as cli_main
    from vc.infer import run

    return cli_main(run, cfg)


if __name__ == "__main__":
    check_command_line()  # file names Hydra's grammar cannot take as typed: one line with the fix
    main()
