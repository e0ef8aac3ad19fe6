"""Run directories -> one tidy table (one row per run × eval split × metric).

Reads only the run-directory contract (``summary.json``; see README "What a run writes").
Failed, unfinished (``running``) and dry runs appear with their status and empty metric
values: nothing is silently dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from lora_exp.selection import protocol

# How a run's numbers were made and chosen (``summary.json``'s ``protocol``, lora_exp/selection.py):
# runs that differ in these are not pooled by ``sweep`` (analysis/sweeps.py). ``seed`` is one
# too, but it has its own column above.
PROTOCOL = ["selection", "selected_on", "eval_every", "evaluations", "init_from", "init_checkpoint",
            "model_dropout", "weight_decay", "no_decay", "heldout_size"]
COLUMNS = ["task", "model", "method", "rank", "targets", "alpha", "lr", "seed", "split", "metric",
           "is_main", "best", "final", "best_step", "final_step", "heldout", "heldout_step",
           "nan_evaluations",
           "trainable", "head", "wall_s", "status", "error", *PROTOCOL, "run_dir"]

# Metric names older runs wrote, and what the same number is called now. E2E's "NIST" was always
# nltk's NIST, about 1.1 below the paper's mteval-v13a NIST on multi-reference data, so it is read
# as "nist_nltk" and never lands in a "NIST" column beside the paper's.
RENAMED_METRICS = {"NIST": "nist_nltk"}

# Runs made before summary.json recorded a ``protocol`` (and runs that failed before writing one)
# get it from their config, over what the trainer did before these keys existed: the paper's
# selection was the only one, every trained parameter was decayed, and init_from loaded a run's
# final parameters. The model's own dropout was not recorded then: it stays empty.
BEFORE_PROTOCOL = {"seed": None, "init_from": None, "init_checkpoint": "final",
                   "task": {"main_metric": None},
                   "trainer": {"selection": "paper", "heldout_size": None, "eval_every": None,
                               "weight_decay": None, "no_decay": False}}


def find_runs(roots: list[str | Path]) -> list[Path]:
    """Every folder holding a ``summary.json`` under the given folders (or the folders themselves)."""
    found = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        found += sorted(p.parent for p in root.rglob("summary.json"))
    return sorted(set(found))


def compact_dropout(dropout: dict | None) -> str | None:
    """``{"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}`` -> ``"0.1"``; unequal
    values as ``key=value;...``; None when nothing was recorded."""
    if not dropout:
        return None
    values = {float(v) for v in dropout.values()}
    if len(values) == 1:
        return str(values.pop())
    return ";".join(f"{k}={float(v)}" for k, v in dropout.items())


def protocol_columns(summary: dict) -> dict:
    """The :data:`PROTOCOL` columns of one run, from its ``protocol`` or else its config."""
    p = summary.get("protocol")
    if p is None:
        known = {"seed": summary.get("seed"),
                 "task": {"main_metric": (summary.get("metrics") or {}).get("main_metric")}}
        cfg = OmegaConf.merge(BEFORE_PROTOCOL, known, summary.get("config") or {})
        dropout = cfg.model.get("dropout") if "model" in cfg else None  # one value sets them all
        p = protocol(cfg, summary.get("evaluations"), {} if dropout is None else {"all": dropout})
    init = p.get("init_from") or {}
    every = p.get("eval_every")
    return {"selection": p.get("selection"), "selected_on": p.get("selected_on"),
            # text: a step count or "epoch" in one column (parquet wants one type per column)
            "eval_every": None if every is None else str(every),
            "evaluations": p.get("evaluations"), "init_from": init.get("run"),
            "init_checkpoint": init.get("checkpoint"),
            "model_dropout": compact_dropout(p.get("model_dropout")),
            "weight_decay": p.get("weight_decay"), "no_decay": p.get("no_decay"),
            "heldout_size": p.get("heldout_size")}


def rows_of(run_dir: Path) -> list[dict]:
    """The tidy rows of one run."""
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (json.JSONDecodeError, OSError) as e:
        return [{"status": "unreadable", "error": str(e), "run_dir": str(run_dir)}]
    config = s.get("config") or {}
    method = config.get("method", {})
    base = {"task": s.get("task"), "model": s.get("model"), "method": s.get("method"),
            "rank": s.get("rank"), "targets": ",".join(method.get("targets", []) or []) or None,
            "alpha": method.get("alpha"), "lr": (config.get("trainer") or {}).get("lr"),
            "seed": s.get("seed"),
            "trainable": (s.get("params") or {}).get("trainable"),
            "head": (s.get("params") or {}).get("head"), "wall_s": s.get("wall_s"),
            "status": "dry_run" if s.get("dry_run") else s.get("status"),
            "error": s.get("error"), **protocol_columns(s), "run_dir": str(run_dir)}
    # NaN evaluations are counted since the protocol was recorded: absent then means none.
    no_nans = 0 if "protocol" in s else None
    metrics = s.get("metrics") or {}
    main = metrics.get("main_metric") or ""
    rows = []
    for split, entry in metrics.items():
        if not isinstance(entry, dict) or "best" not in entry:
            continue
        best, final = entry["best"], entry["final"]
        heldout = entry.get("heldout") or {}  # only with trainer.selection=heldout
        for name, value in best.items():
            if name in ("step", "epoch"):
                continue
            rows.append({**base, "split": split, "metric": RENAMED_METRICS.get(name, name),
                         "is_main": main == f"{split}/{name}", "best": value,
                         "final": final.get(name), "best_step": best.get("step"),
                         "final_step": final.get("step"),
                         "heldout": heldout.get(name), "heldout_step": heldout.get("step"),
                         "nan_evaluations": entry.get("nan_evaluations", no_nans)})
    return rows or [{**base, "split": None, "metric": None, "best": None, "final": None}]


def collect(roots: list[str | Path]) -> pd.DataFrame:
    rows = [r for run in find_runs(roots) for r in rows_of(run)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    # counts stay integers where some rows have none (paper-selected runs: no held-out step)
    return df.astype({c: "Int64" for c in ("best_step", "final_step", "heldout_step",
                                            "nan_evaluations", "evaluations", "heldout_size")})


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
