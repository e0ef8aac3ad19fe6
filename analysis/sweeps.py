"""Sweep tables and plots from a collected run table (``python -m analysis sweep``).

One row per group (method, rank, weight types ...), one column per task: the statistic over
seeds of each run's main metric at its best evaluation (the paper's protocol: median of seeds
for GLUE, Table 2; mean for NLG, Table 3), with the min-max spread and the trainable count.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and cluster nodes have no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import collect as collect_mod  # noqa: E402
from lora_exp.spec import WEIGHT_TYPES  # noqa: E402


def _sort_key(column: pd.Series) -> pd.Series:
    """Weight-type sets in the paper's Table 5 order (wq, wk, wv, wo, then pairs, then all);
    any other column as it sorts."""
    if column.name != "targets":
        return column
    rank = {t: i for i, t in enumerate(WEIGHT_TYPES)}
    return column.map(lambda v: f"{len(str(v).split(',')):02d}" + "".join(  # e.g. "02" "0" "2"
        str(rank.get(t, len(rank))) for t in str(v).split(",")))


def sweep_table(df: pd.DataFrame, by: list[str], stat: str = "median",
                all_metrics: bool = False) -> pd.DataFrame:
    """Long table: one row per (group, task, metric) with n, the statistic, min, max, trainable.

    Args:
        all_metrics: every metric of the runs (e.g. E2E's five, Table 3), not only the task's
            main metric.
    """
    main = df[df["status"] == "ok"]
    if not all_metrics:
        main = main[main["is_main"] == True]  # noqa: E712  (a column, not a flag)
    if main.empty:
        raise ValueError("no finished runs with a main metric in the table")
    keys = [*by, "task", "split", "metric"]
    return (main.groupby(keys, dropna=False, sort=False)  # metrics in the runs' order
            .agg(n=("best", "size"), value=("best", stat), min=("best", "min"), max=("best", "max"),
                 trainable=("trainable", "first"))
            .reset_index())


def to_markdown(table: pd.DataFrame, by: list[str], stat: str, scale: float = 100.0) -> str:
    """Wide Markdown: a column per task × metric with ``stat [min–max] (n)`` (one run: the value
    and (1)), then the trainable count. Values below 10 get two decimals (CIDEr, nist_nltk)."""
    def num(v: float) -> str:
        return f"{v * scale:.2f}" if abs(v * scale) < 10 else f"{v * scale:.1f}"

    def cell(r) -> str:
        spread = f" [{num(r['min'])}–{num(r['max'])}]" if r["n"] > 1 else ""
        return f"{num(r['value'])}{spread} ({r['n']})"

    t = table.assign(cell=table.apply(cell, axis=1),
                     col=table["task"] + " " + table["split"] + "/" + table["metric"])
    wide = t.pivot_table(index=by, columns="col", values="cell", aggfunc="first")
    wide = wide[list(dict.fromkeys(t["col"]))]  # metric columns in the runs' order, not A-Z
    wide = wide.reset_index().sort_values(by, key=_sort_key).set_index(by)
    counts = t.groupby(by, dropna=False)["trainable"].first()
    wide.insert(0, "trainable", counts.map(lambda v: f"{int(v):,}"))
    note = (f"{stat} over seeds of each run's best evaluation, ×{scale:g}; [min–max] over seeds; "
            "(n) runs. trainable excludes the task head (the paper's count).")
    return wide.reset_index().to_markdown(index=False) + "\n\n" + note + "\n"


def plot(table: pd.DataFrame, x: str, hue: str | None, path: Path, stat: str) -> Path:
    """Line plot of the statistic against ``x`` (one panel per task and metric), spread as
    error bars."""
    panels = sorted(set(zip(table["task"], table["metric"])))  # one panel per task × metric
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels):
        sub = table[(table["task"] == task) & (table["metric"] == metric)]
        groups = sub.groupby(hue, dropna=False) if hue else [(None, sub)]
        if not pd.api.types.is_numeric_dtype(sub[x]):  # fix the category order on the axis first
            order = sub[x].drop_duplicates().sort_values(key=_sort_key).astype(str)
            ax.plot(list(order), [float("nan")] * len(order), color="none")  # keeps the color cycle
        for name, g in groups:
            g = g.sort_values(x, key=_sort_key)
            categorical = not pd.api.types.is_numeric_dtype(g[x])
            xs = g[x].astype(str) if categorical else g[x]
            ax.errorbar(xs, g["value"], yerr=[g["value"] - g["min"], g["max"] - g["value"]],
                        marker="o", capsize=3, label=str(name) if hue else None,
                        linestyle="none" if categorical else "-")  # no line between categories
        if x == "rank":
            ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel(x)
        ax.set_ylabel(f"{sub['metric'].iloc[0]} ({stat}, min–max)")
        if hue:
            ax.legend(title=hue, fontsize=7)
        ax.tick_params(axis="x", rotation=45 if x != "rank" else 0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_sweep(outputs: list[str | Path], out: Path, by: list[str], stat: str = "median",
                all_metrics: bool = False, scale: float = 100.0) -> str:
    """Collect the runs under ``outputs`` and write ``runs.*``, ``sweep.csv`` (the long
    :func:`sweep_table`), ``sweep.md`` (:func:`to_markdown`) and ``sweep.png`` (:func:`plot`,
    x = the first ``by`` column, one line per value of the second) into ``out``.

    Returns:
        the Markdown of ``sweep.md``.
    """
    df = collect_mod.collect(outputs)
    collect_mod.write(df, out)
    table = sweep_table(df, by, stat, all_metrics=all_metrics)
    table.to_csv(out / "sweep.csv", index=False)
    md = to_markdown(table, by, stat, scale=scale)
    (out / "sweep.md").write_text(md)
    x, hue = (by[0], by[1] if len(by) > 1 else None)
    plot(table, x, hue, out / "sweep.png", stat)
    return md
