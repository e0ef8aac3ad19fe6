"""Run directories -> one tidy table (one row per run × eval split × metric).

Reads only the run-directory contract (``summary.json``; see README "What a run writes").
Failed, unfinished (``running``) and dry runs appear with their status and empty metric
values: nothing is silently dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["task", "model", "method", "rank", "targets", "alpha", "seed", "split", "metric",
           "is_main", "best", "final", "best_step", "trainable", "head", "wall_s", "status", "error",
           "run_dir"]

# Metric names older runs wrote, and what the same number is called now. E2E's "NIST" was always
# nltk's NIST, about 1.1 below the paper's mteval-v13a NIST on multi-reference data, so it is read
# as "nist_nltk" and never lands in a "NIST" column beside the paper's.
RENAMED_METRICS = {"NIST": "nist_nltk"}


def find_runs(roots: list[str | Path]) -> list[Path]:
    """Every folder holding a ``summary.json`` under the given folders (or the folders themselves)."""
    found = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        found += sorted(p.parent for p in root.rglob("summary.json"))
    return sorted(set(found))


def rows_of(run_dir: Path) -> list[dict]:
    """The tidy rows of one run."""
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (json.JSONDecodeError, OSError) as e:
        return [{"status": "unreadable", "error": str(e), "run_dir": str(run_dir)}]
    method = (s.get("config") or {}).get("method", {})
    base = {"task": s.get("task"), "model": s.get("model"), "method": s.get("method"),
            "rank": s.get("rank"), "targets": ",".join(method.get("targets", []) or []) or None,
            "alpha": method.get("alpha"), "seed": s.get("seed"),
            "trainable": (s.get("params") or {}).get("trainable"),
            "head": (s.get("params") or {}).get("head"), "wall_s": s.get("wall_s"),
            "status": "dry_run" if s.get("dry_run") else s.get("status"),
            "error": s.get("error"), "run_dir": str(run_dir)}
    metrics = s.get("metrics") or {}
    main = metrics.get("main_metric") or ""
    rows = []
    for split, entry in metrics.items():
        if not isinstance(entry, dict) or "best" not in entry:
            continue
        best, final = entry["best"], entry["final"]
        for name, value in best.items():
            if name in ("step", "epoch"):
                continue
            rows.append({**base, "split": split, "metric": RENAMED_METRICS.get(name, name),
                         "is_main": main == f"{split}/{name}", "best": value,
                         "final": final.get(name), "best_step": best.get("step")})
    return rows or [{**base, "split": None, "metric": None, "best": None, "final": None}]


def collect(roots: list[str | Path]) -> pd.DataFrame:
    rows = [r for run in find_runs(roots) for r in rows_of(run)]
    return pd.DataFrame(rows, columns=COLUMNS)


def write(df: pd.DataFrame, out: Path) -> dict[str, Path]:
    """``runs.csv``, ``runs.parquet`` and ``runs.md`` (a short summary) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "runs.csv", "parquet": out / "runs.parquet", "md": out / "runs.md"}
    df.to_csv(paths["csv"], index=False)
    df.to_parquet(paths["parquet"], index=False)
    paths["md"].write_text(markdown_summary(df))
    return paths


def markdown_summary(df: pd.DataFrame) -> str:
    runs = df.drop_duplicates("run_dir")
    lines = ["# Runs", "", f"{len(runs)} run directories: " + ", ".join(
        f"{n} {s}" for s, n in runs["status"].value_counts(dropna=False).items()), ""]
    ok = df[(df["status"] == "ok") & df["metric"].notna()]
    if len(ok):
        table = (ok.groupby(["task", "model", "method", "rank", "targets", "split", "metric"], dropna=False)
                 .agg(n=("best", "size"), best_median=("best", "median"), best_min=("best", "min"),
                      best_max=("best", "max"), final_median=("final", "median"),
                      trainable=("trainable", "first"))
                 .reset_index())
        lines += [table.to_markdown(index=False, floatfmt=".4f"), ""]
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        lines += ["## Not ok", ""] + [f"- `{r.run_dir}`: {r.status}" + (f" ({r.error})" if r.error else "")
                                      for r in bad.itertuples()] + [""]
    return "\n".join(lines)
