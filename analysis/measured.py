"""Per-run measurements kept beside the run, in ``<run_dir>/measured/<name>.measured.json``.

Spectra and forgetting read a run's saved weights, and the repository keeps a run's records but
not its weights (FT's are 90 MB). A fresh clone, or a session whose run folders were lost, could
then not rebuild the results page. So each measurement writes its rows next to the run's
``summary.json``, where they are committed with it, and is read back from there instead of
recomputed (which also makes the page quick to regenerate).

A record holds for the run as it finished (its summary's ``finished_at``) and for the
measurement's parameters (which include its definition's version, bumped whenever what the
measurement computes changes); any other record is measured again, from the weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from analysis.runs import summary_of
from lora_exp.runlog import git_sha, write_json

FOLDER = "measured"


def path_of(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / FOLDER / f"{name}.measured.json"  # not read as a forgetting.json


def _stamp(run_dir: Path) -> float | None:
    return summary_of(run_dir).get("finished_at")


def read(run_dir: str | Path, name: str, params: dict) -> list[dict] | None:
    """The rows recorded for this run and these parameters, or None (no record, or a record of
    another run, other parameters, or an unreadable file: it will be measured again)."""
    path = path_of(run_dir, name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    fresh = record.get("finished_at") == _stamp(Path(run_dir)) and record.get("params") == params
    return record.get("rows") if fresh else None


def write(run_dir: str | Path, name: str, params: dict, rows: list[dict], **provenance) -> None:
    """Record ``rows`` for the run as it finished. ``provenance``: extra keys saying where the rows
    came from when they were not measured here (default: measured at this checkout's commit)."""
    record = {"finished_at": _stamp(Path(run_dir)), "params": params,
              "measured_at": provenance.pop("measured_at", git_sha()), **provenance, "rows": rows}
    write_json(path_of(run_dir, name), record)


def records(table: pd.DataFrame) -> list[dict]:
    """A table's rows as JSON-ready records, missing values (an FT run's rank) as null."""
    return table.astype(object).where(table.notna(), None).to_dict("records")


def cached(run_dir: str | Path, name: str, params: dict,
           measure: Callable[[], list[dict]]) -> list[dict]:
    """The recorded rows, or ``measure()``'s, recorded first."""
    rows = read(run_dir, name, params)
    if rows is None:
        rows = measure()
        try:
            write(run_dir, name, params, rows)
        except OSError as e:  # a read-only copy of someone's runs: measure, keep nothing
            print(f"warning: {path_of(run_dir, name)} not written ({e})")
    return rows


def has(run_dir: str | Path, names_params: dict[str, dict]) -> bool:
    """Whether the run has a valid record of every measurement named, with its parameters."""
    return all(read(run_dir, n, p) is not None for n, p in names_params.items())
