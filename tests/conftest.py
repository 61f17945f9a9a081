"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from vc.data.synthetic import DEFAULT_SPEAKERS, write_synthetic_arctic

SYNTHETIC_UTTERANCES = 12


@pytest.fixture(scope="session")
def synthetic_arctic(tmp_path_factory) -> Path:
    """A read-only synthetic ARCTIC corpus (speakers sya, syb, syc, syd; 12 utterances each).

    Copy it (``shutil.copytree``) before changing anything in it: the whole session shares it.
    """
    return write_synthetic_arctic(
        tmp_path_factory.mktemp("synthetic_arctic"), DEFAULT_SPEAKERS, num_utterances=SYNTHETIC_UTTERANCES
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny SpeechT5, HiFiGAN and x-vector folders (:class:`vc.model.tiny.TinyModels`), built once.

    Read-only: the whole session shares them.
    """
    from vc.model.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def hub_offline(monkeypatch):
    """Hugging Face hub offline mode for one test, so a hub id fails at once instead of after network
    timeouts. huggingface_hub reads HF_HUB_OFFLINE at import, hence the patched constant."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models, tmp_path_factory) -> Path:
    """A bundle (:mod:`vc.model.bundle`) of the tiny models with a unit default speaker; read-only.

    Generation: threshold 0.5, minlenratio 0, maxlenratio 2. A random model's two stop
    probabilities per step sum to about 1, so at threshold 0.5 it stops after one step; tests
    that need real generation pass a threshold above 2, which is never reached, so every chunk
    runs to the length limit (and must be reported as such).
    """
    import numpy as np
    from omegaconf import OmegaConf

    from vc.model.bundle import export_bundle
    from vc.model.module import VCLitModule

    audio = OmegaConf.to_container(
        OmegaConf.load(Path(__file__).parents[1] / "conf" / "audio" / "speecht5.yaml")
    )
    module = VCLitModule(
        pretrained=str(tiny_models.speecht5),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        audio=audio,
        generation={"threshold": 0.5, "minlenratio": 0.0, "maxlenratio": 2.0},
    )
    speaker = np.full(512, 1 / np.sqrt(512), dtype=np.float32)
    return export_bundle(module, tmp_path_factory.mktemp("tiny_bundle") / "bundle", default_speaker=speaker)


@pytest.fixture(scope="session")
def loud_vocoder(tiny_models, tmp_path_factory) -> Path:
    """The tiny HiFiGAN with its output layer scaled by 1e6: noise peaking around 0.1 instead of 1e-7
    (WORLD finds a spectrum, so MCD and F0 have values)."""
    import torch

    from vc.model.pretrained import load_vocoder

    vocoder = load_vocoder(str(tiny_models.vocoder))
    with torch.no_grad():
        vocoder.conv_post.weight.mul_(1e6)
        vocoder.conv_post.bias.mul_(1e6)
    out = tmp_path_factory.mktemp("loud_vocoder") / "speecht5_hifigan"
    vocoder.save_pretrained(out)
    return out


CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
REPO_ROOT = Path(__file__).resolve().parents[1]


def compose_config(name: str, overrides: list[str]):
    """The real config ``conf/<name>.yaml`` composed with Hydra's compose API."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    """A VC_ROOT-style folder whose data/ and cache/ hold the smoke experiment's prepared data.

    Built once per session (tiny models, synthetic corpus, features, x-vectors) through the
    same ``vc.data.prepare.run`` users call; tests point ``paths.data_dir``/``paths.cache_dir`` here.
    """
    from vc.data.prepare import run

    root = tmp_path_factory.mktemp("smoke_root")
    run(compose_config("train", smoke_overrides(root, root / "prepare")))
    return root


def smoke_overrides(root: Path, output_dir: Path) -> list[str]:
    """Overrides that run the smoke experiment on ``root``'s data and cache, writing into ``output_dir``."""
    return [
        "experiment=smoke",
        f"paths.data_dir={root}/data",
        f"paths.cache_dir={root}/cache",
        f"paths.output_dir={output_dir}",
        "logger=csv",
    ]


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
