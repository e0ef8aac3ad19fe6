"""Hydra callbacks of a multirun.

* :class:`ExitNonZeroOnFailure`: ``run.py`` records a failing job (its ``summary.json`` says
  ``failed`` and why) and lets the sweep go on; this callback then reads every job's summary and
  ends the command with exit code 1 if any job failed, so a sweep never looks green when part
  of it broke.
  A job that refused to overwrite another config's finished run, or to write into the folder of
  a run still going (:mod:`lora_exp.rerun`), counts as failed too.
* :class:`ReportReruns`: what the jobs of this invocation did with an earlier run of the same
  sweep (:mod:`lora_exp.rerun`): how many were skipped, resumed and run. It also keeps the
  finished runs' ``.hydra/`` files before the jobs start, for the jobs that leave them as they are.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lora_exp import rerun

log = logging.getLogger("lora_exp")


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """(run dir, reason) for every job under ``sweep_dir`` whose summary is not ``ok``, but the
    runs still going in another process (reported as not run)."""
    bad = []
    for job in sorted(p.parent for p in Path(sweep_dir).glob("*/.hydra")):
        summary = job / "summary.json"
        if not summary.is_file():
            bad.append((job, "no summary.json (the job died before it started)"))
            continue
        data = json.loads(summary.read_text())
        if data.get("status") != "ok" and not rerun.running_here(data):
            bad.append((job, data.get("error") or data.get("status")))
    return bad


class ExitNonZeroOnFailure(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        bad = failed_jobs(sweep_dir)
        for run_dir, reason in bad:
            log.error("job failed: %s: %s", run_dir, reason)
        if bad:
            print(f"{len(bad)} job(s) of the sweep failed (see their summary.json)", file=sys.stderr)
        done = rerun.actions_since(sweep_dir, getattr(self, "start", 0.0))
        conflicts = sum(r["action"] == rerun.CONFLICT for r in done)
        busy = sum(r["action"] == rerun.BUSY for r in done)
        if conflicts:
            print(f"{conflicts} job(s) of the sweep not run: their folders hold finished runs "
                  "made under another config (above)", file=sys.stderr)
        if busy:
            print(f"{busy} job(s) of the sweep not run: another process was running them (above); "
                  "re-run the sweep once it has finished", file=sys.stderr)
        if bad or conflicts or busy:
            sys.exit(1)


class ReportReruns(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time()
        rerun.keep_hydra_files(Path(config.hydra.sweep.dir))  # before Hydra rewrites them

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        done = rerun.actions_since(Path(config.hydra.sweep.dir), getattr(self, "start", 0.0))
        counts = {a: sum(r["action"] == a for r in done) for a in (rerun.SKIP, rerun.RESUME, rerun.RUN)}
        conflicts = sum(r["action"] == rerun.CONFLICT for r in done)
        busy = sum(r["action"] == rerun.BUSY for r in done)
        print(f"sweep: skipped {counts[rerun.SKIP]} (ok under the same config), resumed "
              f"{counts[rerun.RESUME]}, ran {counts[rerun.RUN]}"
              + (f", not run {conflicts} (another config's finished run in its folder)" if conflicts else "")
              + (f", not run {busy} (still running in another process)" if busy else ""))
        for r in done:
            log.info("sweep job %s: %s (%s)", r["job"], r["action"], r["reason"])
