"""The few exception types a user can cause.

Each carries a message that names the bad input and the fix. The CLIs print
``str(err)`` without a traceback and exit non-zero; the HTTP endpoint turns
them into 400 responses.
"""


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

    def __init__(self, what: str, name: str, override: str, cause: BaseException | None = None):
        reason = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        super().__init__(
            f"Could not load the {what} '{name}'{reason}. It is neither a local folder nor "
            f"reachable on the Hugging Face hub (offline?). Download it once where the hub is reachable "
            f"(e.g. `huggingface-cli download {name} --local-dir /path/to/{name.split('/')[-1]}`) and "
            f"point at the copy with `{override}=/path/to/{name.split('/')[-1]}`, or use "
            f"`experiment=smoke` for the offline tiny model."
        )
        self.what, self.name, self.override = what, name, override
