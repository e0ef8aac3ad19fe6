"""Where and how a run was made, from its ``summary.json``: the process that trained it, and the
training precision on which kind of machine."""
from __future__ import annotations

import json
from pathlib import Path


def summary_of(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def run_identity(run_dir: str | Path) -> tuple:
    """What a run is, wherever its folder was copied: the process that trained it and when."""
    summary = summary_of(run_dir)
    if summary.get("started_at") is None:
        return (str(Path(run_dir).resolve()),)
    return (summary.get("pid"), summary["started_at"])


def trained_label(summary: dict) -> str:
    """``bf16``, ``fp32, AMD EPYC``, ``bf16, AMD EPYC avx512_bf16/amx``: the training precision,
    and the machine where the run recorded it (runs made before the field existed say only their
    precision)."""
    m = summary.get("machine")
    where = f", {m['cpu']}{' avx512_bf16/amx' if m['native_bf16'] else ''}" if m else ""
    return f"{summary.get('precision', '?')}{where}"
