"""Loading pretrained parts: local folders work, and anything missing names the model and the override."""

from __future__ import annotations

import pytest

from vc.errors import MissingModelError
from vc.model.pretrained import (
    load_feature_extractor,
    load_speaker_encoder,
    load_speecht5,
    load_vocoder,
    looks_like_path,
)


def test_local_folders_load(tiny_models):
    model = load_speecht5(tiny_models.speecht5, apply_spec_augment=False)
    assert model.config.apply_spec_augment is False
    assert load_feature_extractor(tiny_models.speecht5).sampling_rate == 16_000
    assert load_vocoder(tiny_models.vocoder).config.model_in_dim == 80


@pytest.mark.parametrize(
    ("load", "override"),
    [
        (load_speecht5, "model.pretrained"),
        (load_feature_extractor, "model.pretrained"),
        (load_vocoder, "model.vocoder"),
        (load_speaker_encoder, "data.speaker.source"),
    ],
)
def test_missing_hub_id_offline_names_model_and_override(hub_offline, load, override):
    name = "vc-tests-nobody/no-such-model"
    with pytest.raises(MissingModelError) as info:
        load(name)
    assert info.value.name == name and info.value.override == override
    assert name in str(info.value) and f"{override}=" in str(info.value)


def test_missing_local_folder_is_reported_as_a_path(tmp_path):
    missing = tmp_path / "models" / "speecht5_vc"
    with pytest.raises(MissingModelError, match="does not exist") as info:
        load_speecht5(str(missing))
    assert str(missing) in str(info.value) and "model.pretrained=" in str(info.value)
    assert "huggingface-cli" not in str(info.value)


def test_speaker_encoder_copy_loads_from_its_new_place(tiny_models, tmp_path):
    import shutil

    # the yaml's pretrained_path still names the original folder; the loader re-points it
    copy = shutil.copytree(tiny_models.xvector, tmp_path / "copy")
    (copy / "hyperparams.yaml").write_text(
        (copy / "hyperparams.yaml").read_text().replace(str(tiny_models.xvector), "nowhere/gone")
    )
    encoder = load_speaker_encoder(str(copy))
    assert encoder.mods.embedding_model is not None


@pytest.mark.parametrize(
    ("name", "is_path"),
    [
        ("microsoft/speecht5_vc", False),
        ("speecht5_vc", False),
        ("/abs/dir", True),
        ("./rel", True),
        ("a/b/c", True),
    ],
)
def test_hub_ids_and_paths_are_told_apart(name, is_path):
    assert looks_like_path(name) is is_path
