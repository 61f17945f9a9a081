"""The few exception types a user can cause.

Each carries a message that names the bad input and the fix. The CLIs print
``str(err)`` without a traceback and exit non-zero; the HTTP endpoint turns
them into 400 responses.
"""

import os
from pathlib import Path


class VCError(Exception):
    """Base class: an error caused by the user's input or setup, not by a bug."""


class AudioError(VCError):
    """Audio that cannot be read or used (unreadable, empty, silent, NaN, too short)."""


class DataError(VCError):
    """A corpus, manifest or split that cannot give a valid dataset."""


class ConfigError(VCError):
    """A configuration value that is missing or inconsistent."""


class MissingModelError(VCError):
    """A pretrained part that is neither a local folder nor reachable on the hub."""

    def __init__(
        self, what: str, name: str, override: str, cause: BaseException | None = None, fix: str | None = None
    ):
        reason = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        local = name.split("/")[-1]
        fix = fix or (
            "It is neither a local folder nor reachable on the Hugging Face hub (offline?). Download it once "
            f"where the hub is reachable (e.g. `huggingface-cli download {name} --local-dir /path/to/{local}`) "
            f"and point at the copy with `{override}=/path/to/{local}`. (`python train.py experiment=smoke` "
            "runs offline on tiny models.)"
        )
        super().__init__(f"Could not load the {what} '{name}'{reason}. {fix}")
        self.what, self.name, self.override = what, name, override


def path_hint(path: str | os.PathLike) -> str:
    """For a "no such file or folder" message: where a relative ``path`` was looked for, and the same path
    one folder up when that exists (the notebooks run in notebooks/, the commands in the repository)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return ""
    up = Path("..") / path
    return f" (relative paths start in {Path.cwd()}" + (f"; {up} exists)" if up.exists() else ")")


def user_error(err: BaseException) -> VCError | None:
    """The :class:`VCError` in ``err``'s cause chain, if any.

    Libraries wrap what our callbacks raise (Hydra's instantiate, `datasets` generators):
    this finds the user's error again so it is reported as itself.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, VCError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
