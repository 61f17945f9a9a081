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
