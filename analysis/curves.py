"""Learning curves: every evaluation of every run (``metrics.jsonl``), one tidy table, and the
plot that shows whether a budget reached its plateau.

A run whose best evaluation on a split is its last one was still improving when it stopped: its
figure is a lower bound, not a converged result (:func:`converged`).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on CI and cluster nodes without a display

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import pandas as pd  # noqa: E402

from analysis.collect import find_runs  # noqa: E402

IDENTITY = ["task", "method", "rank", "lr", "seed"]
# main: the task's main metric key (e.g. ``dev/accuracy``), what the paper's protocol selects on
CURVE_COLUMNS = [*IDENTITY, "main", "step", "epoch", "key", "value", "run_dir"]


def _identity(summary: dict) -> dict:
    config = summary.get("config") or {}
    return {"task": summary.get("task"), "method": summary.get("method"), "rank": summary.get("rank"),
            "lr": (config.get("trainer") or {}).get("lr"), "seed": summary.get("seed"),
            "main": (summary.get("metrics") or {}).get("main_metric")}


def curves(roots: list[str | Path]) -> pd.DataFrame:
    """One row per (run, evaluation, metric key such as ``dev/accuracy``) of every ``ok`` run
    under ``roots``."""
    rows = []
    for run in find_runs(roots):
        summary = json.loads((run / "summary.json").read_text())
        log = run / "metrics.jsonl"
        if summary.get("status") != "ok" or not log.is_file():
            continue
        ident = _identity(summary)
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            rows += [{**ident, "step": rec["step"], "epoch": rec["epoch"], "key": k, "value": v,
                      "run_dir": str(run)}
                     for k, v in rec.items() if "/" in k and isinstance(v, (int, float))]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def converged(curve: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per run: the best ``key``, its evaluation, the last evaluation, and ``converged``: False
    when the best came at the last evaluation (ties go to the earliest, as selection does)."""
    rows = []
    for run, g in curve[curve["key"] == key].groupby("run_dir", sort=True):
        g = g.sort_values("step")
        best = g.loc[g["value"].idxmax()] if g["value"].notna().any() else g.iloc[-1]
        rows.append({**{c: g[c].iloc[0] for c in IDENTITY}, "best": best["value"],
                     "best_step": int(best["step"]), "last_step": int(g["step"].iloc[-1]),
                     "converged": int(best["step"]) < int(g["step"].iloc[-1]), "run_dir": run})
    return pd.DataFrame(rows, columns=[*IDENTITY, "best", "best_step", "last_step", "converged",
                                       "run_dir"])


def plot_curves(curve: pd.DataFrame, key_of_task: dict[str, str], path: Path,
                hue: str = "method") -> Path:
    """One panel per task: ``key_of_task[task]`` (e.g. ``dev/accuracy``) against the epoch, the
    median over seeds per ``hue`` value, the seeds' range shaded; the CSV beside the PNG."""
    tasks = [t for t in key_of_task if t in set(curve["task"])]
    series = sorted(curve[hue].dropna().astype(str).unique())
    # tab20 and three line styles tell up to ~20 series apart; the legend sits outside the panels
    style = {name: (plt.cm.tab20(i % 20), ("-", "--", ":")[i // 20 % 3]) for i, name in enumerate(series)}
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.2 * max(len(tasks), 1) + 2.2, 3.6),
                             squeeze=False)
    data = []
    for ax, task in zip(axes[0], tasks):
        sel = curve[(curve["task"] == task) & (curve["key"] == key_of_task[task])]
        stats = (sel.groupby([hue, "epoch"], dropna=False)["value"]
                 .agg(["median", "min", "max", "size"]).reset_index())
        for label, g in stats.groupby(hue, dropna=False, sort=True):
            color, line = style.get(str(label), ("k", "-"))
            ax.plot(g["epoch"], g["median"], marker="o", ms=3, color=color, linestyle=line,
                    label=str(label))
            ax.fill_between(g["epoch"], g["min"], g["max"], color=color, alpha=0.15)
        ax.set_title(f"{task}: {key_of_task[task]}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        data.append(stats.assign(task=task, key=key_of_task[task]))
    if tasks:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    (pd.concat(data) if data else pd.DataFrame()).to_csv(path.with_suffix(".csv"), index=False)
    return path
