"""Tables 5 and 6 at CPU scale: LoRA's rank sweep and the weight types at a matched budget, per
task, with the verdicts on the paper's two claims (judged on the seed spread, as Table 2's).

* *A small r suffices* (Table 6): holds on a task when the seed range of every rank overlaps
  the range of the rank with the best median (r = 1 … 64 flat within noise).
* *More weight types at a lower rank beat one type at a higher rank* (Table 5): holds when the
  best multi-type configuration has a higher median than the best single type; the page says
  whether the two ranges overlap (the difference is then within seed noise), or that it cannot
  tell while either row has a single seed.
"""
from __future__ import annotations

import pandas as pd

from analysis import table2


def rank_rows(df: pd.DataFrame) -> pd.DataFrame:
    rows = table2.main_rows(df)
    return rows.assign(row=[f"r={int(r)}" for r in rows["rank"]])


def types_rows(df: pd.DataFrame) -> pd.DataFrame:
    rows = table2.main_rows(df)
    return rows.assign(row=[f"{t} (r={int(r)})" for t, r in zip(rows["targets"], rows["rank"])])


def by_rank(label: str) -> tuple:
    return (int(label.split("=")[1]),)


def by_types(label: str) -> tuple:
    return (label.count(",") + 1, label)


def rank_verdicts(st: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (task, protocol), g in st.groupby(["task", "protocol"], sort=True):
        claim = "a small r suffices (r = 1 … 64 flat within noise)"
        g = g[g["n"] >= 2]  # the seed spread needs two seeds at least
        if len(g) < 2:  # nothing to compare yet (a sweep in progress)
            out.append({"claim": claim, "task": task, "protocol": protocol, "holds": None,
                        "note": "fewer than two ranks with two seeds or more so far"})
            continue
        best = g.loc[g["median"].idxmax()]
        apart = [r["row"] for _, r in g.iterrows() if not table2.overlap(r, best)]
        out.append({"claim": claim, "task": task, "protocol": protocol, "holds": not apart,
                    "note": f"best {best['row']}" + (f"; outside its range: {', '.join(apart)}" if apart else "")})
    return pd.DataFrame(out)


def types_verdicts(st: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (task, protocol), g in st.groupby(["task", "protocol"], sort=True):
        several = g[g["row"].str.contains(",")]
        single = g[~g["row"].str.contains(",")]
        if several.empty or single.empty:
            continue
        m, s = several.loc[several["median"].idxmax()], single.loc[single["median"].idxmax()]
        out.append({"claim": "more weight types at a lower rank beat one type at a higher rank",
                    "task": task, "protocol": protocol, "holds": m["median"] > s["median"],
                    "note": f"{m['row']} {100 * m['median']:.1f} vs {s['row']} {100 * s['median']:.1f}"
                            + _noise(m, s)})
    return pd.DataFrame(out)


def _noise(a: pd.Series, b: pd.Series) -> str:
    """Whether the two rows differ beyond their seed ranges; a row with a single seed has no
    range, so the comparison would say nothing about noise."""
    few = [f"{r['row']} has {int(r['n'])} seed" for r in (a, b) if r["n"] < 2]
    if few:
        return "; seed noise not measured (" + ", ".join(few) + ")"
    return "; within seed noise" if table2.overlap(a, b) else "; beyond seed noise"


def verdict_lines(v: pd.DataFrame) -> list[str]:
    word = {True: "holds", False: "does not hold", None: "not testable"}
    return [f"- **{r.claim}**, {r.task}, {r.protocol} selection: {word[r.holds]} ({r.note})."
            for r in v.itertuples()]
