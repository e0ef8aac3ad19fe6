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


def machine_kind(summary: dict) -> tuple[str, bool] | None:
    """(CPU name, native bf16) of the machine the run recorded, or None for a run made before
    summaries recorded it."""
    m = summary.get("machine")
    return (m["cpu"], bool(m["native_bf16"])) if m else None


def trained_label(summary: dict) -> str:
    """``bf16``, ``fp32, AMD EPYC``, ``bf16, AMD EPYC avx512_bf16/amx``: the training precision,
    and the kind of machine where the run recorded it (runs made before the field existed say
    only their precision)."""
    kind = machine_kind(summary)
    where = f", {kind[0]}{' avx512_bf16/amx' if kind[1] else ''}" if kind else ""
    return f"{summary.get('precision', '?')}{where}"
