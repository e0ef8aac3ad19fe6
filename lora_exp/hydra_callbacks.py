"""Hydra callback: a multirun whose jobs failed exits non-zero, after every job has run.

``run.py`` records a failing job (its ``summary.json`` says ``failed`` and why) and lets the
sweep go on; this callback then reads every job's summary and ends the command with exit code 1
if any job failed, so a sweep never looks green when part of it broke.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("lora_exp")


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """(run dir, reason) for every job under ``sweep_dir`` whose summary is not ``ok``."""
    bad = []
    for job in sorted(p.parent for p in Path(sweep_dir).glob("*/.hydra")):
        summary = job / "summary.json"
        if not summary.is_file():
            bad.append((job, "no summary.json (the job died before it started)"))
            continue
        data = json.loads(summary.read_text())
        if data.get("status") != "ok":
            bad.append((job, data.get("error") or data.get("status")))
    return bad


class ExitNonZeroOnFailure(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        bad = failed_jobs(Path(config.hydra.sweep.dir))
        if bad:
            for run_dir, reason in bad:
                log.error("job failed: %s: %s", run_dir, reason)
            print(f"{len(bad)} job(s) of the sweep failed (see their summary.json)", file=sys.stderr)
            sys.exit(1)
