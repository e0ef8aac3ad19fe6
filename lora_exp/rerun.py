"""What a multirun does with a job directory an earlier run of the same sweep left behind.

Re-running a sweep command into the same sweep directory (after a crash, a preemption, a
killed session) must not redo finished work. Each job looks at its directory first:

* ``skip``: its ``summary.json`` says ``ok`` under the same resolved config;
* ``resume``: the run was interrupted (status still ``running``) under the same config and left
  a training checkpoint (``trainer.checkpoint_every``): it continues from it (``resume=true``);
* ``run``: anything else: no earlier run, a failed one (its failure may have been fixed since),
  an interrupted one without a checkpoint, or an unfinished one made under another config;
* ``conflict``: its directory holds a finished (``ok``) run made under another config, as when
  another grid is swept into the same directory and job numbers name other jobs. The job does
  not run, so that run is not overwritten, and the sweep exits 1 at its end;
* ``busy``: its run is still going, in a live process on this machine (a second sweep command
  into the same directory, or a single run into the job's folder): two processes writing one
  folder would interleave their checkpoints and files. The job does not run, and the sweep exits 1
  at its end; re-running it once that process has finished skips or resumes the job.

Each job appends its decision to ``<sweep dir>/sweep_actions.jsonl``; the multirun callback
(:mod:`lora_exp.hydra_callbacks`) prints the counts at the end.

Hydra writes each job's ``.hydra/`` files (config, overrides) before the job can decide. For a
skipped or refused job those files describe the run in the folder, not this invocation: the
callback keeps a copy of every finished run's ``.hydra/`` before the jobs start
(:func:`keep_hydra_files`), and the job puts it back (:func:`restore_hydra_files`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from lora_exp.resume import FILE as CHECKPOINT_FILE

SKIP, RESUME, RUN, CONFLICT, BUSY = "skip", "resume", "run", "conflict", "busy"
NOT_RUN = (CONFLICT, BUSY)  # actions that leave the folder as it is and fail the sweep
ACTIONS_FILE = "sweep_actions.jsonl"
# Keys that say how to run, not what: a job resumed with resume=true is still the same job,
# checkpoints leave the training as it is (tests/test_resume.py), and so does the allocator's
# setting (tests/test_cli.py), so a sweep can add or change them without redoing finished jobs.
_NOT_COMPARED = ("resume", "trainer.checkpoint_every", "trainer.keep_freed_memory")
# Keys added to the config after runs were made, each with the value that does what runs made
# without it did: an earlier run that lacks the key matches a config holding that value, so
# adding an option does not turn every finished run into another config's.
ADDED_LATER = {"task.decoding.also_greedy": False}
KEPT_HYDRA = ".hydra_kept"


def first_difference(old, new, prefix: str = "") -> str | None:
    """The dotted key of the first value that differs between two resolved configs, or None: the
    same run. How-to-run keys (``_NOT_COMPARED``) and keys added later at the value that does what
    runs without them did (``ADDED_LATER``) are no difference."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}{key}"
            if where in _NOT_COMPARED:
                continue
            if key not in old and key in new and where in ADDED_LATER and new[key] == ADDED_LATER[where]:
                continue
            if key not in old or key not in new:
                return where
            found = first_difference(old[key], new[key], where + ".")
            if found:
                return found
        return None
    return None if old == new else prefix.rstrip(".")


def _at(config, dotted: str):
    for key in dotted.split("."):
        config = config.get(key, "(absent)") if isinstance(config, dict) else "(absent)"
    return config


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), from Linux's /proc; None where that is not
    readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in clock ticks
    except (OSError, IndexError, StopIteration, ValueError):
        return None


def running_here(summary: dict) -> bool:
    """The run of this ``summary.json`` is still going: its status is ``running`` and its process
    (``pid`` on ``host``) is alive on this machine. A run that did not record its host (made
    before summaries did), or one on another machine, is taken as interrupted; so is one whose
    pid now names a process started after the run did (the pid was reused)."""
    pid = summary.get("pid")
    if summary.get("status") != "running" or summary.get("host") != socket.gethostname() \
            or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    started, run_started = _process_start(pid), summary.get("started_at")
    # the run's clock starts after its process did; 2 s covers /proc's whole-second boot time
    return started is None or run_started is None or started <= run_started + 2.0


def decide(run_dir: Path, resolved: dict) -> tuple[str, str]:
    """(action, reason) for a sweep job about to run in ``run_dir`` with config ``resolved``."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return RUN, "no earlier run"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return RUN, "its summary.json is unreadable"
    if running_here(summary):
        return BUSY, (f"{run_dir} is being written by a run still going (process {summary['pid']} "
                      "on this machine); running would interleave two runs' files in one folder: "
                      "re-run the sweep once it has finished")
    old = summary.get("config") or {}
    differs = first_difference(old, resolved)
    status = summary.get("status")
    if differs and status == "ok":
        return CONFLICT, (f"{run_dir} holds a finished run made under another config ({differs}: "
                          f"{_at(old, differs)!r} there, {_at(resolved, differs)!r} here); running "
                          "would overwrite it: sweep into another hydra.sweep.dir, or delete that "
                          "folder to replace its run")
    if differs:
        return RUN, f"the earlier run had another config ({differs})"
    if status == "ok":
        return SKIP, "ok under the same config"
    if status == "running" and (Path(run_dir) / CHECKPOINT_FILE).is_file():
        return RESUME, "interrupted; continues from its checkpoint"
    return RUN, f"the earlier run is {status}" + (" without a checkpoint" if status == "running" else "")


def record(sweep_dir: Path, run_dir: Path, action: str, reason: str) -> None:
    """Append one job's decision to the sweep's actions file (one short line: atomic append)."""
    line = json.dumps({"job": Path(run_dir).name, "action": action, "reason": reason,
                       "time": time.time()})
    with open(Path(sweep_dir) / ACTIONS_FILE, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def actions_since(sweep_dir: Path, start: float) -> list[dict]:
    """The decisions jobs recorded at or after ``start`` (this invocation of the sweep)."""
    path = Path(sweep_dir) / ACTIONS_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["time"] >= start]


def keep_hydra_files(sweep_dir: Path) -> None:
    """Before a sweep's jobs start: copy the ``.hydra/`` of each finished run, and of each run
    still going (:func:`running_here`), to ``.hydra_kept/``. A copy left by an invocation that was
    killed is the original, and stays."""
    for summary in Path(sweep_dir).glob("*/summary.json"):
        run_dir = summary.parent
        try:
            data = json.loads(summary.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        keep = data.get("status") == "ok" or running_here(data)
        if keep and (run_dir / ".hydra").is_dir() and not (run_dir / KEPT_HYDRA).exists():
            shutil.copytree(run_dir / ".hydra", run_dir / KEPT_HYDRA)


def restore_hydra_files(run_dir: Path, keep: bool) -> None:
    """Put back the ``.hydra/`` files that Hydra overwrote for this job (``keep``: the job leaves
    the earlier run as it is), or drop the copy (the job runs, and its own files are right)."""
    kept = Path(run_dir) / KEPT_HYDRA
    if not kept.is_dir():
        return
    if keep:
        shutil.rmtree(Path(run_dir) / ".hydra", ignore_errors=True)
        kept.rename(Path(run_dir) / ".hydra")
    else:
        shutil.rmtree(kept)
