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
