"""Hydra overrides <-> SageMaker hyperparameters, both ways.

A local run is configured with Hydra overrides (``data.src_spk=awb trainer.precision=bf16``).
A SageMaker job receives a dict of string hyperparameters and hands them to the entry script
as ``--key value`` pairs. The key of a hyperparameter is the override's key as typed (``+`` /
``++`` / ``~`` prefixes and group paths such as ``hydra/launcher`` included) and its value is
the override's value text in Hydra's grammar, so the way back is ``key=value``.

One wrinkle: SageMaker's container driver JSON-decodes every value and encodes it again before
building the command line, which strips the quotes of a JSON string (``"a,b"`` would arrive as
``a,b``, a sweep). Double-quoted values are therefore sent single-quoted, which JSON leaves alone.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence

from vc.errors import ConfigError

# CreateTrainingJob's limits on the HyperParameters map
MAX_HYPERPARAMETERS = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 2500


def _parse(parser, override: str):
    """Parse one override with Hydra's grammar; a :class:`ConfigError` naming it if it is malformed."""
    from hydra.errors import HydraException

    try:
        return parser.parse_override(override)
    except HydraException as err:
        raise ConfigError(f"override {override!r} is not valid Hydra syntax: {err}") from None


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def quote(value: str) -> str:
    """Quote any text as a Hydra string value: ``a b,c`` -> ``'a b,c'``; quotes and backslashes escaped.

    Use it for paths and other free text put into an override; the result always parses as a
    string equal to ``value`` (never as a number, bool, list or sweep).
    """
    # Hydra unescapes backslashes only in front of a quote and at the end of a quoted string
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def split_override(override: str) -> tuple[str, str | None]:
    """``key=value`` -> ``(key, value)``; a bare deletion ``~key`` -> ``("~key", None)``.

    The key keeps its ``+``/``++``/``~`` prefix; the value is the text after the first ``=``
    (keys never contain ``=``, values may).
    """
    key, sep, value = override.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {override!r} has no key. Write key=value, e.g. data.src_spk=awb.")
    if not sep:
        if key.startswith("~"):
            return key, None
        raise ConfigError(f"override {override!r} has no '='. Write key=value (or ~key to delete a key).")
    return key, value


def override_keys(overrides: Sequence[str]) -> set[str]:
    """The config keys a list of overrides sets: ``+a.b=1`` -> ``a.b``; ``~c`` stays ``~c``."""
    return {split_override(o)[0].lstrip("+") for o in overrides}


def _sagemaker_safe(value: str) -> str:
    """A value Hydra reads the same after SageMaker's JSON decode/encode round trip."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    if isinstance(decoded, str):
        return quote(decoded)
    return value


def overrides_to_hyperparameters(overrides: Sequence[str]) -> dict[str, str]:
    """Hydra overrides (no sweeps) -> SageMaker hyperparameters ``{key: value}``, all strings.

    Raises :class:`ConfigError` for a sweep (expand it first with :func:`expand_sweeps`), a key
    given twice, or a map beyond SageMaker's limits (100 entries, 256-char keys, 2500-char values).
    """
    parser = _parser()
    hps: dict[str, str] = {}
    for override in overrides:
        key, value = split_override(override)
        if _parse(parser, override).is_sweep_override():
            raise ConfigError(
                f"override {override!r} is a sweep; one SageMaker job takes single values. "
                "Launch with the sweep (one job per point) or pick one value."
            )
        if key in hps:
            raise ConfigError(f"override key {key!r} is given twice ({override!r}). Keep one.")
        text = "" if value is None else _sagemaker_safe(value)
        if len(key) > MAX_KEY_CHARS or len(text) > MAX_VALUE_CHARS:
            raise ConfigError(
                f"override {override[:80]!r}...: SageMaker limits hyperparameter keys to {MAX_KEY_CHARS} and "
                f"values to {MAX_VALUE_CHARS} characters. Put long values in a config file instead."
            )
        hps[key] = text
    if len(hps) > MAX_HYPERPARAMETERS:
        raise ConfigError(
            f"{len(hps)} overrides: SageMaker takes at most {MAX_HYPERPARAMETERS} hyperparameters. "
            "Collect them in an experiment config (conf/experiment/) and select that instead."
        )
    return hps


def hyperparameters_to_argv(hyperparameters: Mapping[str, str]) -> list[str]:
    """``{key: value}`` -> ``["--key", "value", ...]``, the command line SageMaker gives the entry script."""
    argv: list[str] = []
    for key, value in hyperparameters.items():
        argv += [f"--{key}", str(value)]
    return argv


def argv_to_overrides(argv: Sequence[str]) -> list[str]:
    """The entry script's command line -> Hydra overrides.

    Takes SageMaker's ``--key value`` pairs, ``--key=value``, and plain ``key=value`` (a run by
    hand). An empty value for a ``~key`` deletion gives back the bare ``~key``.
    """
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            split_override(token)  # raises with a clear message if it is not key=value
            overrides.append(token)
            i += 1
            continue
        body = token[2:]
        if "=" in body:
            overrides.append(body)
            i += 1
            continue
        if i + 1 >= len(args):
            raise ConfigError(f"argument {token!r} has no value. Pass --key value pairs (or key=value).")
        value = args[i + 1]
        overrides.append(body if body.startswith("~") and value == "" else f"{body}={value}")
        i += 2
    return overrides


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra sweep overrides -> the override list of every sweep point, in Hydra's order.

    ``["a=1,2", "b=x,y", "c=3"]`` -> ``[["a=1","b=x","c=3"], ["a=1","b=y","c=3"], ...]``; a list
    without sweeps gives itself once. ``range(...)`` and ``choice(...)`` work; ``glob(...)`` needs
    the config and is refused.
    """
    from hydra.errors import HydraException

    parser = _parser()
    axes: list[list[str]] = []
    for override in overrides:
        parsed = _parse(parser, override)
        if not parsed.is_sweep_override():
            axes.append([override])
            continue
        try:
            values = list(parsed.sweep_string_iterator())
        except HydraException as err:
            raise ConfigError(f"override {override!r}: {err}. List the values instead (key=a,b,c).") from None
        axes.append([f"{parsed.get_key_element()}={v}" for v in values])
    return [list(point) for point in itertools.product(*axes)]
