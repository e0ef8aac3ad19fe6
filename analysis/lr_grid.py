"""The learning-rate grid behind a CPU table: per method, the rate whose runs score best on the
held-out slice of the train split.

A run's held-out score is its best held-out main metric over its evaluations (the figure
``trainer.selection=heldout`` selects on). A method's rate is the one with the highest mean
held-out score over the grid's tasks; ties go to the smaller rate. Dev figures are shown beside
them and never enter the choice.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.curves import curves, plot_curves
from analysis.runs import RunError, kind_label
from lora_exp.selection import HELDOUT


def grid_table(curve: pd.DataFrame) -> pd.DataFrame:
    """One row per run: method, rank, lr, task, seed, the held-out score, dev at that evaluation
    (held-out selection) and the best dev (the paper's selection)."""
    rows = []
    for run, g in curve.groupby("run_dir", sort=True):
        main = g["main"].iloc[0]
        held = g[g["key"] == f"{HELDOUT}/{main.split('/', 1)[1]}"].sort_values("step")
        dev = g[g["key"] == main].set_index("step")["value"]
        if held.empty:
            raise RunError(f"{run}: no {HELDOUT} evaluations; the grid needs trainer.selection={HELDOUT}")
        pick = held.loc[held["value"].idxmax()]
        rows.append({**{c: g[c].iloc[0] for c in ("method", "rank", "lr", "task", "seed")},
                     "metric": main, "heldout": pick["value"], "heldout_epoch": pick["epoch"],
                     "dev_at_heldout": dev.get(pick["step"]), "dev_best": dev.max(),
                     "epochs": g["epoch"].max(), "run_dir": run})
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame) -> pd.DataFrame:
    """Per method (and rank): the mean held-out score of each rate over the tasks, and the
    chosen rate. A rate missing a task is not a candidate (its mean would be over fewer tasks)."""
    tasks = sorted(table["task"].unique())
    wide = table.pivot_table(index=["method", "rank", "lr"], columns="task", values="heldout")
    wide["mean_heldout"] = wide[tasks].mean(axis=1, skipna=False)
    wide = wide.reset_index()
    chosen = []
    for _, g in wide.groupby(["method", "rank"], sort=True):
        ok = g[g["mean_heldout"].notna()].sort_values(["mean_heldout", "lr"], ascending=[False, True])
        chosen.append(None if ok.empty else ok.index[0])
    wide["chosen"] = wide.index.isin([c for c in chosen if c is not None])
    return wide


def _markdown(table: pd.DataFrame) -> str:
    """A table as Markdown with the method and its size (``lora r=8``, ``full_ft``) in place of a
    rank column that means nothing for most methods, and the rate as written (3e-05, not 0.0000)."""
    kinds = [kind_label(m, r) for m, r in zip(table["method"], table["rank"])]
    shown = table.assign(method=kinds).drop(columns="rank")
    return shown.to_markdown(index=False, floatfmt=["g" if c == "lr" else ".4f" for c in shown.columns])


def write_grid(roots: list[str | Path], out: Path) -> str:
    """``lr_grid.csv`` (every run), ``lr_choice.csv``, ``lr_grid.md`` and the learning curves
    (``curves_<task>.png``) in ``out``; returns the markdown."""
    curve = curves(roots)
    if curve.empty:
        raise RunError(f"no finished runs with metrics.jsonl under {', '.join(map(str, roots))}")
    table = grid_table(curve)
    choice = choose(table)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "lr_grid.csv", index=False)
    choice.to_csv(out / "lr_choice.csv", index=False)
    for task, g in curve.groupby("task"):
        main = g["main"].iloc[0]
        kinds = [kind_label(m, r) for m, r in zip(g["method"], g["rank"])]  # r=8 and r=64 apart
        both = g.assign(series=[f"{k} lr={lr:g}" for k, lr in zip(kinds, g["lr"])])
        plot_curves(both, {task: f"{HELDOUT}/{main.split('/', 1)[1]}"}, out / f"curves_{task}.png",
                    hue="series")
    shown = choice.assign(chosen=choice["chosen"].map({True: "**yes**", False: ""}))
    lines = ["# Learning-rate grid", "",
             "Held-out score: the best held-out main metric over a run's evaluations. The chosen "
             "rate has the highest mean held-out score over the tasks (ties: the smaller rate); "
             "dev figures are shown, never used.", "",
             _markdown(shown), "",
             "Every run:", "",
             _markdown(table.drop(columns="run_dir").sort_values(["method", "task", "lr"])), ""]
    text = "\n".join(lines)
    (out / "lr_grid.md").write_text(text)
    return text
