"""What every entry script shares: user errors printed without a traceback, and sweep results."""

from __future__ import annotations

import json
import logging
import math
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
