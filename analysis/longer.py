"""Longer budgets: some of Table 2's rows trained again with more epochs, beside the Table 2 runs
of the same row and task.

A Table 2 cell marked ↑ (runs whose best evaluation was their last) is a lower bound. These runs
say how much of a gap between two rows is the budget's: each row is shown at every budget it was
trained at, and claim 1 (LoRA within seed noise of FT, :mod:`analysis.table2`) is judged again
with each row at the longest budget it has. Only the epochs differ between a row's budgets (the
linear schedule then decays over the longer run).
"""
from __future__ import annotations

import pandas as pd

from analysis import chance, table2
from analysis.provenance import summary_of


def epochs(run_dir: str) -> float | None:
    """``trainer.epochs`` of the run (None for a run budgeted in steps)."""
    trainer = (summary_of(run_dir).get("config") or {}).get("trainer") or {}
    return None if trainer.get("max_steps") else trainer.get("epochs")


def with_budget(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`analysis.table2.main_rows` with each run's ``epochs``."""
    return rows.assign(epochs=[epochs(d) for d in rows["run_dir"]])


def stats(table2_rows: pd.DataFrame, longer_rows: pd.DataFrame) -> pd.DataFrame:
    """Per (task, row, epochs, protocol), :func:`analysis.table2.stats` of the longer runs and of
    the Table 2 runs of the same tasks and rows, and of FT on those tasks (claim 1's other row)."""
    longer = with_budget(longer_rows)
    pairs = {(t, r) for t, r in zip(longer["task"], longer["row"])}
    pairs |= {(t, table2.FT) for t, _ in pairs}
    base = with_budget(table2_rows)
    base = base[[(t, r) in pairs for t, r in zip(base["task"], base["row"])]]
    out = [table2.stats(g).assign(epochs=budget)
           for budget, g in pd.concat([base, longer]).groupby("epochs")]
    if not out:
        return pd.DataFrame()
    st = pd.concat(out, ignore_index=True)
    key = st.assign(_task=st["task"].map(lambda t: table2.TASKS.index(t) if t in table2.TASKS else 99),
                    _row=st["row"].map(table2.row_order))
    return key.sort_values(["_task", "_row", "epochs"], kind="stable").drop(
        columns=["_task", "_row"]).reset_index(drop=True)


def markdown(st: pd.DataFrame) -> str:
    """A line per task, row and budget, a column per protocol, and the runs' training precision
    (rows compared at two precisions differ by the precision's part too)."""
    lines = ["| task | row | epochs | paper selection | held-out selection | precision |",
             "|---|---|---|---|---|---|"]
    keyed = st.set_index(["task", "row", "epochs", "protocol"])
    for (task, label, budget), g in st.groupby(["task", "row", "epochs"], sort=False):
        cells = [table2.cell(keyed.loc[(task, label, budget, p)])
                 if (task, label, budget, p) in keyed.index else "—" for p in table2.PROTOCOLS]
        lines.append(f"| {task} | {label} | {budget:g} | " + " | ".join(cells)
                     + f" | {g['precision'].iloc[0]} |")
    return "\n".join(lines)


def verdicts(st: pd.DataFrame, levels: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Claim 1 per task and protocol, LoRA and FT each at the longest budget it was trained at;
    ``holds`` is None where both are at chance (``levels``: :func:`analysis.table2.chance_levels`)."""
    levels = levels or {}
    out = []
    for (task, protocol), g in st.groupby(["task", "protocol"], sort=False):
        longest = g.sort_values("epochs", kind="stable").drop_duplicates("row", keep="last").set_index("row")
        if table2.LORA not in longest.index or table2.FT not in longest.index:
            continue
        lora, ft = longest.loc[table2.LORA], longest.loc[table2.FT]
        holds = table2.overlap(lora, ft)
        note = "" if holds else "LoRA higher" if lora["median"] > ft["median"] else "LoRA lower"
        level = levels.get(task)
        if chance.at_chance(lora["median"], level) and chance.at_chance(ft["median"], level):
            holds, note = None, f"both at chance, {100 * level[0]:.1f} ± {100 * level[1]:.1f}"
        out.append({"task": task, "protocol": protocol, "holds": holds, "lora": lora["median"],
                    "lora_epochs": lora["epochs"], "ft": ft["median"], "ft_epochs": ft["epochs"],
                    "note": note})
    return pd.DataFrame(out)


def verdict_lines(v: pd.DataFrame) -> list[str]:
    word = {True: "holds", False: "does not hold", None: "not testable"}
    return [f"- {r.task}, {r.protocol} selection: **{word[r.holds]}** "
            f"(LoRA {100 * r.lora:.1f} at {r.lora_epochs:g} epochs vs FT {100 * r.ft:.1f} at "
            f"{r.ft_epochs:g}{'; ' + r.note if r.note else ''})" for r in v.itertuples()]
