"""What every entry script shares: user errors printed without a traceback, and sweep results."""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from vc.errors import VCError, user_error

log = logging.getLogger("vc")


def in_multirun() -> bool:
    """True inside a Hydra multirun job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def threads_setting(value) -> int | None:
    """A ``threads`` setting checked: a whole number of 1 or more, or None (torch's default)."""
    from vc.settings import check_value

    return check_value("threads", value)


def hydra_quote(value: str) -> str:
    """``value`` as a Hydra quoted string that reads back as exactly ``value``.

    OmegaConf would resolve ``${...}``, so it is escaped; Hydra then needs its backslashes doubled
    only before a quote or at the end, and the double quotes escaped.
    """
    value = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    value = re.sub(r"(\\+)(?=\"|$)", lambda m: m.group(1) * 2, value).replace('"', '\\"')
    return f'"{value}"'


def check_command_line(argv: list[str] | None = None) -> None:
    """Before Hydra reads the command line (``sys.argv``): a ``key=value`` it cannot take as typed
    is answered with one line that shows the command with the value quoted, and exit status 2.

    That is a value its grammar rejects (parentheses, quotes, ``=``, ``#``, non-ASCII letters...),
    and, for a path setting (:data:`vc.settings.RULES`), commas read as a sweep without ``-m`` or a
    file name read as a number or a boolean (``0001``, ``1e3``, ``true``). The rest is Hydra's.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from vc.settings import RULES

    argv = sys.argv if argv is None else argv
    parser = OverridesParser.create()
    path_keys = {key for rules in RULES.values() for key, rule in rules.items() if rule.path}
    multirun = "-m" in argv or "--multirun" in argv
    args, reasons = list(argv[1:]), []
    for i, arg in enumerate(args):
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:  # the grammar's errors
            reason = "Hydra's grammar cannot read this value"
        else:
            if override.key_or_group not in path_keys:
                continue
            value, text = override.value(), arg.split("=", 1)[1]
            if override.is_sweep_override() and not multirun:
                reason = "Hydra reads the commas as a sweep over several values"
            elif isinstance(value, (bool, int, float)) and str(value) != text:
                kind = "boolean" if isinstance(value, bool) else "number"
                reason = f"Hydra reads this name as the {kind} {str(value).lower()}"
            else:
                continue
        quoted = _quoted_override(parser, arg)
        if quoted is not None:
            reasons.append(f"{arg}: {reason}")
            args[i] = quoted
    if reasons:
        command = shlex.join(["python", argv[0], *args])
        print(
            f"error: {'; '.join(reasons)}. Quote file names for Hydra inside the shell's quotes; run: {command}",
            file=sys.stderr,
        )
        sys.exit(2)


def _quoted_override(parser, arg: str) -> str | None:
    """``key=value`` with the value (or each item of a ``[...]`` list) quoted; None if Hydra still
    cannot read it."""
    from hydra.errors import HydraException

    key, value = arg.split("=", 1)
    if value.startswith("[") and value.endswith("]"):
        items = [item.strip() for item in value[1:-1].split(",")]
        quoted = f"{key}=[{','.join(item if _is_quoted(item) else hydra_quote(item) for item in items)}]"
    else:
        quoted = f"{key}={hydra_quote(value)}"
    try:
        parser.parse_override(quoted)
    except HydraException:  # the grammar's errors
        return None
    return quoted


def _is_quoted(item: str) -> bool:
    return len(item) >= 2 and item[0] == item[-1] and item[0] in "'\""


def output_dir(cfg: DictConfig) -> Path | None:
    try:
        return Path(cfg.paths.output_dir)
    except Exception:  # the hydra: resolver is unset outside a Hydra app
        return None


def main(run: Callable[[DictConfig], object], cfg: DictConfig):
    """Call ``run(cfg)`` the way a command-line user expects.

    A :class:`VCError` (bad input, missing model...) is printed as one line and the process
    exits with status 2. Inside a multirun a failing job is logged and recorded instead, so the
    other jobs of the sweep still run. Each job writes ``result.json`` (status, metric) in its
    folder; :class:`vc.hydra_callbacks.SweepSummary` collects them. W&B runs are always finished.
    """
    out = output_dir(cfg)
    status, value, error = "ok", None, None
    try:
        try:
            value = run(cfg)
            return value
        except Exception as err:
            # Hydra wraps errors raised while instantiating a target: surface the user's error
            raise user_error(err) or err from None
    except VCError as err:
        status, error = "failed", str(err)
        if not in_multirun():
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("job failed: %s", err)
    except Exception as err:
        status, error = "failed", f"{type(err).__name__}: {err}"
        if not in_multirun():
            raise
        log.exception("job failed")
    finally:
        _finish_wandb()
        if out is not None and out.exists():
            metric = cfg.get("optimized_metric")
            number = (
                float(value) if isinstance(value, (int, float)) and not math.isnan(float(value)) else None
            )
            (out / "result.json").write_text(
                json.dumps({"status": status, "metric": metric, "value": number, "error": error}, indent=1)
            )
            log.info("output folder: %s", out)
    return float("nan")


def run_command(action: Callable[[], object], done: str) -> int:
    """For plain (argparse) commands: run ``action``, print ``done.format(result)`` and return 0,
    or print a :class:`VCError` as one line and return 2."""
    try:
        result = action()
    except Exception as err:
        user = user_error(err)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        return 2
    print(done.format(result))
    return 0


def _finish_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
