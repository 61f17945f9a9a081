"""The one place that loads pretrained parts, by hub id or local folder.

Each loader calls the owning library's own ``from_pretrained``/``from_hparams``. When the part is
neither a local folder nor reachable on the hub (offline, a typo, an incomplete copy), the error
is a :class:`~vc.errors.MissingModelError` that names the part and the config override that points
at a local copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vc.errors import MissingModelError

SPEECHT5_OVERRIDE = "model.pretrained"
VOCODER_OVERRIDE = "model.vocoder"
SPEAKER_OVERRIDE = "data.speaker.source"

# ValueErrors that mean "the files are not there" (speechbrain's fetch, transformers' checks),
# as opposed to bad arguments, which must surface as they are.
_MISSING_HINTS = (
    "not found",
    "no such file",
    "does not exist",
    "does not appear to have",
    "allow_network",
    "offline",
)


class MissingFolderError(MissingModelError):
    """A model named by a local path that does not exist (or is a file, not a folder)."""

    def __init__(self, what: str, name: str, override: str, path: Path):
        reason = "is a file, not a model folder" if path.exists() else "does not exist"
        super().__init__(what, name, override, FileNotFoundError(f"{path} {reason}"))
        # The hub download advice of MissingModelError does not apply to a path: replace the message.
        Exception.__init__(
            self,
            f"The {what} folder '{name}' {reason} (looked at {path}). Fix `{override}=...`: a folder "
            "holding the model (relative paths are relative to where you ran the command) or a "
            "Hugging Face hub id.",
        )


def is_missing_model_error(err: BaseException) -> bool:
    """True for the errors hub and offline failures raise: OSError (transformers and
    huggingface_hub's HTTP/offline errors), huggingface_hub's EntryNotFoundError and
    HFValidationError (a path that is not a folder read as a repo id), and ValueErrors about
    missing files."""
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    if isinstance(err, (OSError, EntryNotFoundError, HFValidationError)):
        return True
    return isinstance(err, ValueError) and any(hint in str(err).lower() for hint in _MISSING_HINTS)


def looks_like_path(name: str) -> bool:
    """True when ``name`` can only be a folder, not a hub id (``owner/repo`` or ``repo``)."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or name.endswith("/")
    )


def resolve_source(name: str | os.PathLike, *, what: str, override: str) -> str:
    """``name`` as an existing local folder (absolute, ``~`` expanded), or unchanged as a hub id.

    Raises :class:`MissingFolderError` for something that can only be a path but is no folder.
    """
    name = str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or looks_like_path(name):
        raise MissingFolderError(what, name, override, path.resolve())
    return name


def load_pretrained(cls: type, name: str | os.PathLike, *, what: str, override: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name, **kwargs)`` for a hub id or a local folder.

    ``what`` names the part in errors (e.g. "SpeechT5 model"); ``override`` is the config key that
    points at a local copy. Raises :class:`MissingModelError` when the part cannot be found.
    """
    source = resolve_source(name, what=what, override=override)
    try:
        return cls.from_pretrained(source, **kwargs)
    except Exception as err:
        if is_missing_model_error(err):
            raise MissingModelError(what, str(name), override, err) from err
        raise


def load_speecht5(name: str | os.PathLike, **kwargs: Any):
    """A ``SpeechT5ForSpeechToSpeech`` from a hub id or folder; ``kwargs`` override config values
    (e.g. ``apply_spec_augment=False``)."""
    from transformers import SpeechT5ForSpeechToSpeech

    return load_pretrained(
        SpeechT5ForSpeechToSpeech, name, what="SpeechT5 model", override=SPEECHT5_OVERRIDE, **kwargs
    )


def load_feature_extractor(name: str | os.PathLike):
    """The ``SpeechT5FeatureExtractor`` saved with a SpeechT5 checkpoint (16 kHz audio -> 80
    log-mel bins). A VC checkpoint has no tokenizer, so the processor is only this part."""
    from transformers import SpeechT5FeatureExtractor

    return load_pretrained(
        SpeechT5FeatureExtractor, name, what="SpeechT5 feature extractor", override=SPEECHT5_OVERRIDE
    )


def load_vocoder(name: str | os.PathLike):
    """A ``SpeechT5HifiGan`` vocoder from a hub id or folder: (T, 80) log-mel -> T * 256 samples."""
    from transformers import SpeechT5HifiGan

    return load_pretrained(SpeechT5HifiGan, name, what="HiFiGAN vocoder", override=VOCODER_OVERRIDE)


def load_speaker_encoder(
    source: str | os.PathLike, savedir: str | os.PathLike | None = None, device: str = "cpu"
):
    """A SpeechBrain ``EncoderClassifier`` (e.g. ``speechbrain/spkrec-xvect-voxceleb``) from a hub
    id or folder, on ``device``.

    ``savedir`` is where SpeechBrain links the files it uses; None uses a local folder in place
    and the hub cache for hub ids. A local folder's ``pretrained_path`` (which the hub's yaml
    sets to the hub id) is pointed at the folder, so a downloaded copy loads offline.
    """
    from speechbrain.inference.speaker import EncoderClassifier

    resolved = resolve_source(source, what="speaker encoder", override=SPEAKER_OVERRIDE)
    overrides = {}
    hparams_file = Path(resolved) / "hyperparams.yaml"
    if hparams_file.is_file() and _has_top_level_key(hparams_file, "pretrained_path"):
        overrides["pretrained_path"] = resolved
    try:
        return EncoderClassifier.from_hparams(
            source=resolved,
            savedir=None if savedir is None else str(savedir),
            overrides=overrides,
            run_opts={"device": device},
        )
    except Exception as err:
        if is_missing_model_error(err):
            raise MissingModelError("speaker encoder", str(source), SPEAKER_OVERRIDE, err) from err
        raise


def _has_top_level_key(yaml_file: Path, key: str) -> bool:
    """Whether a (HyperPyYAML) file defines ``key`` at the top level; SpeechBrain refuses
    overrides of keys a file lacks."""
    prefix = f"{key}:"
    return any(line.startswith(prefix) for line in yaml_file.read_text(encoding="utf-8").splitlines())
