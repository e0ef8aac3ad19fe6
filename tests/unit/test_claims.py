"""The results page's summary of the claims (analysis/claims.py): verdicts over cells, and whether
held-out selection changes them."""
import json

import pandas as pd

from analysis import claims


def cells(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(claims.COLUMNS, r)) for r in rows], columns=claims.COLUMNS,
                        dtype=object)  # holds: True, False or None


def test_a_claim_holds_where_every_testable_cell_holds():
    c = cells((1, "paper", "mrpc", True, "80.1 vs 80.1"), (1, "paper", "sst2", True, "86.9 vs 87.0"),
              (1, "paper", "rte", None, "52.0 vs 58.1, both at chance"))
    assert claims.verdict(c) == "**holds** (2 of 2); not testable: 1"
    c.loc[1, "holds"] = False
    assert claims.verdict(c) == "**holds partly** (1 of 2; not: sst2: 86.9 vs 87.0); not testable: 1"
    c.loc[0, "holds"] = False
    assert claims.verdict(c).startswith("**does not hold** (0 of 2: mrpc: 80.1 vs 80.1; sst2")
    assert claims.verdict(c.iloc[2:]) == "not testable here (rte: 52.0 vs 58.1, both at chance)"
    assert claims.verdict(c.iloc[:0]) == "not run yet"


def test_held_out_selection_changing_a_cell_is_named():
    c = cells((3, "paper", "mrpc", True, "flat"), (3, "heldout", "mrpc", False, "r=1 apart"),
              (3, "paper", "sst2", True, "flat"), (3, "heldout", "sst2", True, "flat"))
    assert claims.changes(c) == "yes: mrpc (holds → does not hold)"
    c.loc[1, "holds"] = None
    assert claims.changes(c) == "yes: mrpc (holds → not testable)"
    c.loc[1, "holds"] = True
    assert claims.changes(c) == "no"
    # A sweep without a held-out slice: its cells count under the paper's protocol only.
    c = pd.concat([c, cells((3, "paper", "cola", False, "r=1 apart"))], ignore_index=True)
    assert claims.changes(c) == "no (under one protocol only: cola)"
    assert claims.changes(cells((5, claims.BOTH, "Fig. 3", True, "50%"))) == "no: no selection enters"


def test_table2_verdicts_become_claims_1_and_2():
    v = pd.DataFrame([
        {"claim": "LoRA within seed noise of FT", "task": "mrpc", "protocol": "paper", "holds": True,
         "lora": 0.801, "other": 0.801, "note": ""},
        {"claim": "LoRA ≥ adapter_h r=8", "task": "sst2", "protocol": "heldout", "holds": False,
         "lora": 0.865, "other": 0.876, "note": "LoRA lower"}])
    found = claims.from_table2(v)
    assert list(found[1]["cell"]) == ["mrpc"] and list(found[2]["cell"]) == ["sst2 vs adapter_h r=8"]
    assert list(found[2]["figure"]) == ["86.5 vs 87.6, LoRA lower"]
    # Claim 2 has no paper-protocol cell here: that column says so, the held-out one does not hold.
    row = next(line for line in claims.summary(found) if line.startswith("| 2 |"))
    assert "| not measured: no run selected this way | **does not hold** (0 of 1: sst2 vs adapter_h r=8: " \
           "86.5 vs 87.6, LoRA lower) | not testable: one protocol only (sst2 vs adapter_h r=8) |" in row


def test_the_summary_has_every_claim_and_reads_section7s_record(tmp_path):
    record = {"ranks": [8, 64], "runs": [], "claims": [
        {"key": "fig3_top_direction", "claim": "Fig. 3", "holds": True, "figure": "φ > 0.5 for 50%"},
        {"key": "fig4_wq_above_wv", "claim": "Wq vs Wv", "holds": False, "figure": "not claim 5's"},
        {"key": "t7_factor_falls", "claim": "Claim 3", "holds": False, "figure": "median 0.9 at r=8"}]}
    (tmp_path / "claims.json").write_text(json.dumps(record))
    found = claims.from_section7(tmp_path / "claims.json")
    lines = claims.summary(found)
    assert len(lines) == 2 + len(claims.CLAIMS)
    assert "| **holds** (1 of 1) | **holds** (1 of 1) | no: no selection enters |" in lines[2 + 4]
    assert "**does not hold** (0 of 1: Claim 3: median 0.9 at r=8)" in lines[2 + 5]
    assert lines[2].endswith("| not run yet | not run yet | — |")  # claim 1: no Table 2 runs


def test_one_rank_is_nothing_to_compare():
    from analysis import tables56

    # r=1 with its seeds, r=2 and r=4 with one seed each: no spread to compare them by yet.
    st = pd.DataFrame([{"task": "mrpc", "protocol": "paper", "row": f"r={r}", "median": m, "min": m,
                        "max": m, "n": n} for r, m, n in ((1, 0.78, 3), (2, 0.80, 1), (4, 0.77, 1))])
    v = tables56.rank_verdicts(st)
    assert v["holds"].tolist() == [None]
    assert tables56.verdict_lines(v) == ["- **a small r suffices (r = 1 … 64 flat within noise)**, mrpc, "
                                         "paper selection: not testable (fewer than two ranks with two "
                                         "seeds or more so far)."]
