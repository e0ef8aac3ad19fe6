"""The CPU-scale Table 2: per row and task, the median [min–max] over seeds under both selection
protocols, the runs still improving at their last evaluation, and the verdicts on the paper's
two Table 2 claims, judged on the seed spread.

Verdicts (each per task and protocol):

* *LoRA within seed noise of FT*: holds when the [min, max] ranges over seeds of LoRA and FT
  overlap; otherwise it does not, and the page says which is higher.
* *LoRA ≥ a baseline*: holds when LoRA's median is at least the baseline's, or the two ranges
  overlap (not worse beyond noise); does not hold when LoRA's best seed is below the baseline's
  worst.

Either claim is *not testable* on a task where both medians are at chance (``analysis.chance``:
within two standard errors of what a constant prediction scores): there the comparison says
nothing about the methods. Nor is claim 2 where only the baseline is at chance while LoRA is
above it: a baseline that did not learn the task at its learning rate is no evidence that LoRA
matches or beats the method (LoRA at chance against a baseline above it still fails the claim:
LoRA's rate was tuned the same way).
"""
from __future__ import annotations

import pandas as pd

from analysis import chance
from analysis.paper_numbers import paper_table, row
from analysis.provenance import summary_of
from analysis.runs import kind_label

TASKS = ["sst2", "mrpc", "cola", "rte", "stsb"]
PAPER_COLUMN = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "rte": "RTE", "stsb": "STS-B"}
PROTOCOLS = {"paper": ("best", "best_step"), "heldout": ("heldout", "heldout_step")}
# The paper's Table 2 row each CPU row stands in for (RoBERTa-base where the paper has the
# method there, else RoBERTa-large's row of the same budget class); AdapterL and PreLayer have
# no Table 2 row.
PAPER_ROW = {"full_ft": ("RoB-base FT*", {}), "bitfit": ("RoB-base BitFit*", {}),
             "lora r=8": ("RoB-base LoRA", {}), "adapter_h r=8": ("RoB-large AdptH†", {"params": "0.8M"}),
             "adapter_h r=64": ("RoB-large AdptH†", {"params": "6.0M"})}
BASELINES = ["full_ft", "bitfit", "adapter_h r=8", "adapter_h r=64", "adapter_l r=16", "prefix_layer"]
LORA, FT = "lora r=8", "full_ft"


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ok runs' dev main-metric rows of ``collect``, labelled by table row."""
    ok = df[(df["status"] == "ok") & df["is_main"].fillna(False).astype(bool) & (df["split"] == "dev")]
    return ok.assign(row=[kind_label(m, r) for m, r in zip(ok["method"], ok["rank"])])


def stats(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (row, task, protocol): median, min, max, n, ``improving``: runs whose selected
    evaluation was their last one (not converged), and the training ``precision`` of the runs
    (``bf16``, ``fp32`` or ``bf16+fp32``). A protocol the runs did not record (no held-out slice)
    has no entries."""
    precision = {d: summary_of(d).get("precision", "?") for d in rows["run_dir"].unique()}
    out = []
    for protocol, (value_col, step_col) in PROTOCOLS.items():
        for (label, task), g in rows.groupby(["row", "task"], sort=True):
            v = g[value_col].astype(float)
            if v.isna().all():
                continue
            out.append({"row": label, "task": task, "protocol": protocol, "metric": g["metric"].iloc[0],
                        "median": v.median(), "min": v.min(), "max": v.max(), "n": int(v.notna().sum()),
                        "improving": int((g[step_col] == g["final_step"]).sum()),
                        "trainable": int(g["trainable"].iloc[0]),
                        "precision": "+".join(sorted({precision[d] for d in g["run_dir"]}))})
    return pd.DataFrame(out)


def cell(s: pd.Series | None) -> str:
    if s is None:
        return "—"
    mark = f" ↑{s['improving']}" if s["improving"] else ""
    return f"{100 * s['median']:.1f} [{100 * s['min']:.1f}–{100 * s['max']:.1f}] ({s['n']}){mark}"


def markdown(st: pd.DataFrame, protocol: str, order=None) -> str:
    """One protocol's table: a row per CPU row (sorted by ``order``), a column per task."""
    sub = st[st["protocol"] == protocol].set_index(["row", "task"])
    if sub.empty:
        return "(no runs recorded this protocol)"
    tasks = [t for t in TASKS if t in set(sub.index.get_level_values("task"))]
    header = ["row", "trainable", *[f"{t} ({sub.xs(t, level='task')['metric'].iloc[0]})" for t in tasks]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in sorted(set(sub.index.get_level_values("row")), key=order or row_order):
        trainable = sub.xs(label, level="row")["trainable"].iloc[0]
        cells = [cell(sub.loc[(label, t)]) if (label, t) in sub.index else "—" for t in tasks]
        lines.append(f"| {label} | {trainable:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_rows() -> str:
    """The paper's Table 2 figures of the rows the CPU rows stand in for."""
    table = paper_table("table2")
    lines = ["| CPU row | paper row | params | " + " | ".join(PAPER_COLUMN[t] for t in TASKS) + " |",
             "|" + "---|" * (3 + len(TASKS))]
    for label, (name, cells) in PAPER_ROW.items():
        r = row(table, name, **cells)
        lines.append(f"| {label} | {r.iloc[0]} | {r['params']} | "
                     + " | ".join(r[PAPER_COLUMN[t]] for t in TASKS) + " |")
    return "\n".join(lines)


def overlap(a: pd.Series, b: pd.Series) -> bool:
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def chance_levels(rows: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per task of the :func:`main_rows`, the chance level and band of its main metric (tasks
    whose dev data cannot be read here are left out)."""
    levels = {}
    for task, g in rows.groupby("task"):
        found = chance.of_run(g["run_dir"].iloc[0], g["metric"].iloc[0])
        if found is not None:
            levels[task] = found
    return levels


def verdicts(st: pd.DataFrame, levels: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Claim 1 (LoRA vs FT) and claim 2 (LoRA vs each baseline), per task and protocol;
    ``holds`` is None where both rows are at chance (``levels``: :func:`chance_levels`)."""
    levels = levels or {}
    out = []
    for (task, protocol), g in st.groupby(["task", "protocol"], sort=True):
        by = g.set_index("row")
        if LORA not in by.index:
            continue
        lora = by.loc[LORA]
        for other in BASELINES:
            if other not in by.index:
                continue
            o = by.loc[other]
            if other == FT:
                holds = overlap(lora, o)
                claim = "LoRA within seed noise of FT"
            else:
                holds = lora["median"] >= o["median"] or overlap(lora, o)
                claim = f"LoRA ≥ {other}"
            note = "" if holds else ("LoRA higher" if lora["median"] > o["median"] else "LoRA lower")
            level = levels.get(task)
            if chance.at_chance(o["median"], level):
                both = chance.at_chance(lora["median"], level)
                holds, note = None, (f"{'both' if both else other} at chance, "
                                     f"{100 * level[0]:.1f} ± {100 * level[1]:.1f}")
            out.append({"claim": claim, "task": task, "protocol": protocol, "holds": holds,
                        "lora": lora["median"], "other": o["median"], "note": note})
    return pd.DataFrame(out)


def verdict_lines(v: pd.DataFrame) -> list[str]:
    """One line per claim: in how many tasks it holds under each protocol, the exceptions."""
    lines = []
    for claim, g in v.groupby("claim", sort=False):
        parts = []
        for protocol in PROTOCOLS:
            p = g[g["protocol"] == protocol]
            fails = ", ".join(f"{r.task} ({100 * r.lora:.1f} vs {100 * r.other:.1f}, {r.note})"
                              for r in p.itertuples() if r.holds is not None and not r.holds)
            untestable = ", ".join(f"{r.task} ({100 * r.lora:.1f} vs {100 * r.other:.1f}, {r.note})"
                                   for r in p.itertuples() if r.holds is None)
            testable = p[p["holds"].notna()]
            parts.append(f"{protocol} selection: holds on {int(testable['holds'].astype(bool).sum())} "
                         f"of {len(testable)} tasks" + (f"; not on {fails}" if fails else "")
                         + (f"; not testable on {untestable}" if untestable else ""))
        lines.append(f"- **{claim}**: " + "; ".join(parts) + ".")
    return lines


def mixed_precision(st: pd.DataFrame) -> str | None:
    """The verdicts' comparisons whose two rows trained at different precisions, or None: a
    difference between them is the methods' and the precision's together (the runs made twice
    on the page measure the precision's part)."""
    sub = st[st["protocol"] == "paper"].set_index(["task", "row"])
    pairs = []
    for task in TASKS:
        if (task, LORA) not in sub.index:
            continue
        mine = sub.loc[(task, LORA), "precision"]
        others: dict[str, list[str]] = {}
        for other in BASELINES:
            if (task, other) in sub.index and sub.loc[(task, other), "precision"] != mine:
                others.setdefault(sub.loc[(task, other), "precision"], []).append(other)
        if others:
            pairs.append(f"{task}: LoRA {mine}, " + ", ".join(
                f"{', '.join(rows)} {p}" for p, rows in sorted(others.items())))
    return "; ".join(pairs) or None


def row_order(label: str) -> tuple:
    """Sort key of a row label: LoRA, then the baselines in Table 2's order, then the rest."""
    names = [LORA, *BASELINES]
    return (names.index(label) if label in names else len(names), label)

