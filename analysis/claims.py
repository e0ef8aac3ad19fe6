"""The results page's opening summary: each claim of the paper the page re-measures, its verdict
under the paper's selection protocol and under held-out selection, and whether held-out selection
changes it.

Each section of the page hands over its verdicts as *cells*: one comparison each (a task, a task
against one baseline, a decoding against another method), with ``holds`` True, False or None (not
testable: both rows at chance, or one seed where noise decides). A claim holds where every
testable cell holds, does not hold where none does, and holds partly in between. Cells whose
protocol is ``both`` come from measurements that no selection enters (§7 reads the final
weights; Table 3 decodes once, after the last step).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

PROTOCOLS = ("paper", "heldout")
BOTH = "both"
COLUMNS = ["claim", "protocol", "cell", "holds", "figure"]

# number: (the paper's claim, where the paper makes it, the page's anchor)
CLAIMS = {
    1: ("LoRA is within seed noise of full fine-tuning on each task", "Table 2", "table2"),
    2: ("LoRA ≥ BitFit, PreLayer, AdapterH and AdapterL at a comparable or larger trainable "
        "budget", "Table 2", "table2"),
    3: ("a small r suffices: r = 1 … 64 is flat within noise", "Table 6", "rank"),
    4: ("at a matched budget, more weight types at a lower rank beat one type at a higher rank",
        "Table 5", "weight_types"),
    5: ("φ(A_r8, A_r64) has a top direction above 0.5, and seeds overlap above the Gaussian "
        "baseline", "Figs. 3, 4", "section7"),
    6: ("ΔW amplifies directions W does not emphasise, by a factor that falls as r grows",
        "Table 7", "section7"),
    7: ("on E2E, LoRA is on par with FT or better, and the methods rank as the paper's GPT-2 M "
        "rows: LoRA > PreLayer > FT > AdapterL", "Table 3", "table3"),
}
FT_CLAIM = "LoRA within seed noise of FT"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def from_table2(v: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Claims 1 and 2 from :func:`analysis.table2.verdicts`."""
    if not len(v):
        return {}
    rows = [{"claim": 1 if r.claim == FT_CLAIM else 2, "protocol": r.protocol,
             "cell": r.task if r.claim == FT_CLAIM else f"{r.task} vs {r.claim.split('≥ ', 1)[1]}",
             "holds": r.holds, "figure": f"{_pct(r.lora)} vs {_pct(r.other)}" + (f", {r.note}" if r.note else "")}
            for r in v.itertuples()]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return {n: g for n, g in df.groupby("claim")}


def from_sweep(v: pd.DataFrame, number: int) -> dict[int, pd.DataFrame]:
    """Claim 3 or 4 from :func:`analysis.tables56.rank_verdicts` / ``types_verdicts``."""
    if not len(v):
        return {}
    return {number: pd.DataFrame([{"claim": number, "protocol": r.protocol, "cell": r.task,
                                   "holds": r.holds, "figure": r.note} for r in v.itertuples()],
                                 columns=COLUMNS)}


# The §7 report's verdicts (``key`` in its claims.json) that make up claims 5 and 6; the report
# checks more (ΔWq against ΔWv, ΔW's correlation with W), which these claims do not state.
SECTION7_KEYS = {5: ("fig3_top_direction", "fig4_seeds_above_random"),
                 6: ("t7_amplifies", "t7_factor_falls")}


def from_section7(claims_file: Path) -> dict[int, pd.DataFrame]:
    """Claims 5 (subspace similarity) and 6 (Table 7) from the §7 report's ``claims.json``."""
    if not claims_file.is_file():
        return {}
    by_key = {c["key"]: c for c in json.loads(claims_file.read_text())["claims"]}
    return {number: pd.DataFrame([{"claim": number, "protocol": BOTH, "cell": by_key[k]["claim"],
                                   "holds": by_key[k]["holds"], "figure": by_key[k]["figure"]}
                                  for k in keys if k in by_key], columns=COLUMNS)
            for number, keys in SECTION7_KEYS.items()}


def from_table3(comparisons: list[dict]) -> dict[int, pd.DataFrame]:
    """Claim 7 from :func:`analysis.table3.ordering`."""
    if not comparisons:
        return {}
    return {7: pd.DataFrame([{"claim": 7, "protocol": BOTH, "cell": f"{c['decoding']}: {c['comparison']}",
                              "holds": c["holds"], "figure": c["figure"]} for c in comparisons],
                            columns=COLUMNS)}


def verdict(cells: pd.DataFrame) -> str:
    """One protocol's verdict on a claim from its cells, with the cells that break it."""
    if not len(cells):
        return "not run yet"
    testable = cells[cells["holds"].notna()]
    untestable = cells[cells["holds"].isna()]
    if not len(testable):
        return "not testable here (" + "; ".join(f"{r.cell}: {r.figure}" for r in untestable.itertuples()) + ")"
    held = testable["holds"].astype(bool)
    fails = "; ".join(f"{r.cell}: {r.figure}" for r in testable[~held].itertuples())
    if held.all():
        text = f"**holds** ({len(testable)} of {len(testable)})"
    elif not held.any():
        text = f"**does not hold** (0 of {len(testable)}: {fails})"
    else:
        text = f"**holds partly** ({int(held.sum())} of {len(testable)}; not: {fails})"
    return text + (f"; not testable: {len(untestable)}" if len(untestable) else "")


def changes(cells: pd.DataFrame) -> str:
    """Whether held-out selection changes any cell's verdict, and which; cells measured under
    one protocol only are named as such, not as changes."""
    if not len(cells):
        return "—"
    if (cells["protocol"] == BOTH).all():
        return "no: no selection enters"
    state = {(r.cell, r.protocol): _state(r.holds) for r in cells.itertuples()}
    word = {"True": "holds", "False": "does not hold", "untestable": "not testable"}
    flipped, single = [], []
    for cell in dict.fromkeys(cells["cell"]):
        paper, heldout = state.get((cell, "paper")), state.get((cell, "heldout"))
        if paper is None or heldout is None:
            single.append(cell)
        elif paper != heldout:
            flipped.append(f"{cell} ({word[paper]} → {word[heldout]})")
    text = ("yes: " + "; ".join(flipped)) if flipped else "no"
    if single:
        text += f" (under one protocol only: {', '.join(single)})"
    return text if flipped or len(single) < len(set(cells["cell"])) else \
        f"not testable: one protocol only ({', '.join(single)})"


def _state(holds) -> str:
    return "untestable" if holds is None or pd.isna(holds) else str(bool(holds))


def _protocol_verdict(cells: pd.DataFrame, protocol: str) -> str:
    mine = cells[cells["protocol"].isin([protocol, BOTH])]
    if len(cells) and not len(mine):
        return "not measured: no run selected this way"
    return verdict(mine)


def summary(found: dict[int, pd.DataFrame]) -> list[str]:
    """The page's summary table over :data:`CLAIMS` (``found``: each claim's cells, as the
    ``from_*`` functions give them; a claim without cells is not run yet)."""
    lines = ["| # | the paper's claim | paper | paper's selection | held-out selection | "
             "held-out changes it? |", "|---|---|---|---|---|---|"]
    for number, (text, where, anchor) in CLAIMS.items():
        cells = found.get(number, pd.DataFrame(columns=COLUMNS))
        per = {p: _protocol_verdict(cells, p) for p in PROTOCOLS}
        lines.append(f"| {number} | {text} ([figures](#{anchor})) | {where} | {per['paper']} | "
                     f"{per['heldout']} | {changes(cells)} |")
    return lines
