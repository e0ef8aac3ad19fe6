"""Sweep tables and plots from a collected run table (``python -m analysis sweep``).

One row per group (method, rank, weight types ...), one column per task: the statistic over
seeds of each run's main metric at its best evaluation (the paper's protocol: median of seeds
for GLUE, Table 2; mean for NLG, Table 3), with the min-max spread and the trainable count.
Runs selected on a held-out slice (``trainer.selection=heldout``) get a second figure beside it:
the same metric at the evaluation the held-out slice chose.

Only runs made under one protocol (:data:`analysis.collect.PROTOCOL`) are pooled into a table,
unless asked to mix them; the tables say which protocol that was.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and cluster nodes have no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import collect as collect_mod  # noqa: E402
from analysis import forgetting  # noqa: E402
from analysis.plots import group_order, learning_forgetting_plot  # noqa: E402
from analysis.collect import PROTOCOL  # noqa: E402
from lora_exp.spec import WEIGHT_TYPES  # noqa: E402

# Protocol keys pooled runs may differ in: each seed may start from its own init_from run
# (init_checkpoint still tells a warm start from a fresh one), and the number of evaluations
# follows from the training length, a hyperparameter like the others. The seed has its own
# column: it is what a statistic over seeds pools.
POOLABLE = ("evaluations", "init_from")
# Names the task's own main metric (dev/accuracy, dev/pearson ...): compared within each task.
PER_TASK = "selected_on"
# The figures a cell can show, as (value, min, max, n) columns of the long table: ``best`` is the
# paper's protocol, ``heldout`` the evaluation chosen on the held-out slice.
FIGURES = {"best": ("value", "min", "max", "n"),
           "heldout": ("heldout", "heldout_min", "heldout_max", "heldout_n")}


class MixedProtocols(ValueError):
    """Runs made under different protocols in one table."""


def show(value) -> str:
    """A protocol value as the tables print it: null for none, 16 rather than 16.0."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _distinct(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(map(show, values)))  # in the runs' order


def _joined(values: pd.Series) -> str | None:
    """A group's values of one protocol key, for sweep.csv (empty when none was recorded)."""
    distinct = _distinct(values)
    return None if distinct == ["null"] else ", ".join(distinct)


def check_protocol(runs: pd.DataFrame) -> None:
    """Raise :class:`MixedProtocols` naming the first protocol key whose values differ.

    Columns missing from ``runs`` (a table not made by ``collect``) are not checked.
    """
    for key in PROTOCOL:
        if key in POOLABLE or key not in runs:
            continue
        scopes = [g for _, g in runs.groupby("task", dropna=False)] if key == PER_TASK else [runs]
        for scope in scopes:
            values = _distinct(scope[key])
            if len(values) > 1:
                raise MixedProtocols(f"runs differ in protocol key {key}: {', '.join(values)}; "
                                     "pass --mix-protocols to pool them anyway")


def protocol_header(runs: pd.DataFrame) -> str:
    """The protocol of the pooled runs, for the top of sweep.md: the keys they share, then
    those that differ (e.g. evaluations, or anything under ``--mix-protocols``)."""
    runs = runs.drop_duplicates("run_dir")
    shared, differ = [], []
    for key in (k for k in PROTOCOL if k in runs):
        values = _distinct(runs[key])
        one_per_task = runs.groupby("task")[key].nunique(dropna=False).le(1).all()
        if key == PER_TASK and len(values) > 1 and one_per_task:  # each task's own metric
            per_task = runs[key].map(show) + " (" + runs["task"].astype(str) + ")"
            shared.append(f"{key} " + ", ".join(_distinct(per_task)))
        elif len(values) == 1:
            shared.append(f"{key} {values[0]}")
        else:
            listed = values if len(values) <= 4 else [*values[:3], f"… {len(values)} values"]
            differ.append(f"{key} ({', '.join(listed)})")
    lines = [f"Protocol of the {len(runs)} pooled runs: " + " · ".join(shared) + "."]
    if differ:
        lines.append("Differs between them: " + " · ".join(differ) + ".")
    return "\n".join(lines) + "\n"


def _sort_key(column: pd.Series) -> pd.Series:
    """Weight-type sets in the paper's Table 5 order (wq, wk, wv, wo, then pairs, then all);
    any other column as it sorts."""
    if column.name != "targets":
        return column
    rank = {t: i for i, t in enumerate(WEIGHT_TYPES)}
    return column.map(lambda v: f"{len(str(v).split(',')):02d}" + "".join(  # e.g. "02" "0" "2"
        str(rank.get(t, len(rank))) for t in str(v).split(",")))


def pooled(df: pd.DataFrame, all_metrics: bool = False) -> pd.DataFrame:
    """The rows a sweep table is made of: finished runs, their main metric (or every metric)."""
    main = df[df["status"] == "ok"]
    if not all_metrics:
        main = main[main["is_main"] == True]  # noqa: E712  (a column, not a flag)
    if main.empty:
        raise ValueError("no finished runs with a main metric in the table")
    return main


def sweep_table(df: pd.DataFrame, by: list[str], stat: str = "median",
                all_metrics: bool = False, mix_protocols: bool = False) -> pd.DataFrame:
    """Long table: one row per (group, task, metric) with n, the statistic, min, max, trainable;
    for runs selected on a held-out slice the same of their ``heldout`` figure (``heldout_n``,
    ``heldout``, ``heldout_min``, ``heldout_max``); then each group's protocol values.

    Args:
        all_metrics: every metric of the runs (e.g. E2E's five, Table 3), not only the task's
            main metric.
        mix_protocols: pool runs made under different protocols instead of raising
            :class:`MixedProtocols`.
    """
    main = pooled(df, all_metrics)
    if not mix_protocols:
        check_protocol(main)
    stats = {"n": ("best", "size"), "value": ("best", stat), "min": ("best", "min"),
             "max": ("best", "max"), "trainable": ("trainable", "first")}
    if "heldout" in main and main["heldout"].notna().any():
        stats.update(heldout_n=("heldout", "count"), heldout=("heldout", stat),
                     heldout_min=("heldout", "min"), heldout_max=("heldout", "max"))
    stats.update({k: (k, _joined) for k in PROTOCOL if k in main})
    keys = [*by, "task", "split", "metric"]
    return (main.groupby(keys, dropna=False, sort=False)  # metrics in the runs' order
            .agg(**stats)
            .reset_index())


def to_markdown(table: pd.DataFrame, by: list[str], stat: str, scale: float = 100.0) -> str:
    """Wide Markdown: a column per task × metric with ``stat [min–max] (n)`` (one run: the value
    and (1)), then the trainable count. Values below 10 get two decimals (CIDEr, nist_nltk).
    With held-out figures in ``table``, two columns per task × metric, ``best`` then ``heldout``
    (empty for runs without one)."""
    def num(v: float) -> str:
        return f"{v * scale:.2f}" if abs(v * scale) < 10 else f"{v * scale:.1f}"

    def cell(r, figure: str) -> str:
        value, lo, hi, n = (r[c] for c in FIGURES[figure])
        if n == 0:
            return ""
        spread = f" [{num(lo)}–{num(hi)}]" if n > 1 else ""
        return f"{num(value)}{spread} ({n})"

    t = table.assign(col=table["task"] + " " + table["split"] + "/" + table["metric"])
    cols = list(dict.fromkeys(t["col"]))  # metric columns in the runs' order, not A-Z
    figures = [f for f in FIGURES if FIGURES[f][0] in t]
    named = len(figures) > 1  # "… best" and "… heldout" side by side

    def header(figure: str) -> str:
        return f" {figure}" if named else ""

    wide = pd.concat([t.assign(cell=t.apply(cell, axis=1, figure=f), col=t["col"] + suffix)
                      .pivot_table(index=by, columns="col", values="cell", aggfunc="first")
                      for f, suffix in zip(figures, map(header, figures))], axis=1)
    wide = wide[[c + header(f) for c in cols for f in figures]]
    wide = wide.reset_index().sort_values(by, key=_sort_key).set_index(by)
    counts = t.groupby(by, dropna=False)["trainable"].first()
    wide.insert(0, "trainable", counts.map(lambda v: f"{int(v):,}"))
    note = (f"{stat} over seeds of each run's best evaluation, ×{scale:g}; [min–max] over seeds; "
            "(n) runs. trainable excludes the task head (the paper's count).")
    if named:
        note += ("\n\nbest: the evaluation with the best figure on the reported split itself (the "
                 "paper's protocol, optimistic); heldout: the reported split at the evaluation "
                 "chosen on the held-out slice of train. best − heldout is what choosing on the "
                 "reported split adds.")
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
                all_metrics: bool = False, scale: float = 100.0, mix_protocols: bool = False) -> str:
    """Collect the runs under ``outputs`` and write ``runs.*``, ``sweep.csv`` (the long
    :func:`sweep_table`), ``sweep.md`` (:func:`protocol_header`, then :func:`to_markdown`) and
    ``sweep.png`` (:func:`plot`, x = the first ``by`` column, one line per value of the second)
    into ``out``. ``runs.*`` is written even when the runs cannot be pooled: it shows each run's
    protocol.

    Returns:
        the Markdown of ``sweep.md``.
    """
    df = collect_mod.collect(outputs)
    collect_mod.write(df, out)
    table = sweep_table(df, by, stat, all_metrics=all_metrics, mix_protocols=mix_protocols)
    table.to_csv(out / "sweep.csv", index=False)
    md = protocol_header(pooled(df, all_metrics)) + "\n" + to_markdown(table, by, stat, scale=scale)
    (out / "sweep.md").write_text(md)
    x, hue = (by[0], by[1] if len(by) > 1 else None)
    plot(table, x, hue, out / "sweep.png", stat)
    return md


def write_forgetting_sweep(outputs: list[str | Path], out: Path) -> str:
    """``sweep --forgetting``: every ``forgetting.json`` under ``outputs``
    (``python -m analysis forgetting``) as one learning-vs-forgetting plot,
    ``learning_vs_forgetting.png`` with its ``.csv``, in ``out``.

    Returns:
        what was plotted and where.
    """
    table = forgetting.find_records(outputs)
    path = learning_forgetting_plot(table, out / "learning_vs_forgetting.png", forgetting.AXIS)
    counts = table["label"].value_counts()
    groups = ", ".join(f"{g} ({counts[g]})" for g in group_order(counts.index))
    return f"{len(table)} runs: {groups}\nwrote {path} and {path.with_suffix('.csv')}"
