"""Hydra callbacks: a summary of a sweep's optimised metric, written when the multirun ends."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """Collects each job's ``result.json`` into ``summary.json`` and a printed table.

    Works for every launcher (jobs in this process, joblib workers, SLURM), since it reads
    what the jobs wrote into the sweep folder.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        rows = []
        for result in sorted(
            sweep.glob("*/result.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
        ):
            data = json.loads(result.read_text())
            overrides_file = result.parent / ".hydra" / "overrides.yaml"
            overrides = (
                overrides_file.read_text().strip().replace("\n", " ") if overrides_file.exists() else ""
            )
            rows.append({"job": result.parent.name, "overrides": overrides, **data})
        if not rows:
            return
        (sweep / "summary.json").write_text(json.dumps(rows, indent=1))
        metric = rows[0].get("metric")
        lines = [f"sweep summary ({metric}) -> {sweep / 'summary.json'}"]
        for r in rows:
            shown = f"{r['value']:.4f}" if r["value"] is not None else r["status"]
            lines.append(f"  job {r['job']:>3}  {shown:>10}  {r['overrides']}")
        ok = [r for r in rows if r["value"] is not None]
        if ok:
            best = min(ok, key=lambda r: r["value"])
            lines.append(f"  best: job {best['job']} ({best['value']:.4f})")
        print("\n".join(lines))
