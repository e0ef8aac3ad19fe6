"""``python -m analysis report OUTPUTS... --out DIR``: the §7 analyses next to the paper's numbers.

From the LoRA runs found under OUTPUTS it picks, for one task × model × weight-type set, the
r=8 run of the lowest seed and the r=64 runs of the two lowest seeds, then writes ``report.md``:

- φ(A_r8, A_r64) top direction per layer (Fig. 3 / 6) and seed-to-seed φ(A_r64, A'_r64) against
  the Gaussian baseline (Fig. 4 / 7), with the heatmaps;
- Table 7 rows (‖U^⊤ W V^⊤‖_F for U, V from ΔW / W / random, norms, amplification) at r=8, r=64;
- each of the paper's claims (§7.2, §7.3; docs/paper.md#low-rank) marked as holding here or not;
- when FT runs of the same task and model are among them, the claims made since on LoRA's ΔW
  against full fine-tuning's (intruder dimensions, effective rank, forgetting;
  :mod:`analysis.spectral_claims`), each with its verdict;
- a ``sweeps.md`` already in the output folder, appended as its last section.

Either part may be missing (a note says which runs it needs), not both.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import collect as collect_mod
from analysis import spectral_claims
from analysis.per_layer import (id_columns, subspace_per_layer, subspace_summary, table7_per_layer,
                                table7_summary)
from analysis.runs import RunError
from lora_exp.runlog import write_json

# §7's verdicts as records, beside report.md (read by the results page's summary of the claims).
CLAIMS = "claims.json"

# Paper Table 7 (GPT-3, layer 48, Wq; docs/paper.md#delta-w): r=4 and r=64.
PAPER_TABLE7 = pd.DataFrame([
    {"r": 4, "proj_delta": 0.32, "proj_w": 21.67, "proj_random": 0.02, "norm_w": 61.95,
     "norm_delta": 6.91, "amplification": 21.5},
    {"r": 64, "proj_delta": 1.90, "proj_w": 37.71, "proj_random": 0.33, "norm_w": 61.95,
     "norm_delta": 3.57, "amplification": 1.9},
])


def pick_runs(df: pd.DataFrame, low: int = 8, high: int = 64) -> tuple[Path, Path, Path]:
    """(r=low run, r=high run, r=high run of another seed) of one task × model × targets."""
    ok = df[(df["status"] == "ok") & (df["method"] == "lora")].drop_duplicates("run_dir")
    for (task, model, targets), g in ok.groupby(["task", "model", "targets"]):
        r8 = g[g["rank"] == low].sort_values("seed")
        r64 = g[g["rank"] == high].sort_values("seed")
        if len(r8) >= 1 and len(r64) >= 2:
            return Path(r8.run_dir.iloc[0]), Path(r64.run_dir.iloc[0]), Path(r64.run_dir.iloc[1])
    raise RunError(f"report needs LoRA runs at r={low} (one seed) and r={high} (two seeds) of the "
                   "same task, model and weight types under the given folders")


def _verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def _subspace(run_a: Path, run_b: Path, out: Path, w_vs_delta: bool = True) -> pd.DataFrame:
    """:func:`subspace_per_layer` with the baseline seed 0 (the single commands' default, so the
    report's tables are theirs), echoing its console summary."""
    table = subspace_per_layer(run_a, run_b, out, seed=0, w_vs_delta=w_vs_delta)
    print(subspace_summary(table, run_a, run_b, out))
    return table


def _table7(run: Path, out: Path) -> pd.DataFrame:
    """:func:`table7_per_layer` with the baseline seed 0 (the single commands' default, so the
    report's tables are theirs), echoing its console summary."""
    table = table7_per_layer(run, out, seed=0)
    print(table7_summary(table, run, out))
    return table


def phi_table(s_rank: pd.DataFrame, s_seed: pd.DataFrame, low: int, high: int) -> pd.DataFrame:
    """φ(A_low, A_high) and seed-to-seed φ(A_high, A'_high) per layer × weight type (× module, if
    a weight type has several), from the :func:`subspace_per_layer` tables ``s_rank``, ``s_seed``."""
    ids = id_columns(s_rank)  # layer, weight_type, and module where a weight type has several
    merged = s_rank[[*ids, "phi_top1"]].rename(columns={"phi_top1": f"phi_r{low}_r{high}"})
    return merged.merge(s_seed[[*ids, "phi_top1", "phi_mean", "phi_random_top1",
                                "phi_random_mean"]].rename(columns={
                                    "phi_top1": "phi_seeds_top1", "phi_mean": "phi_seeds_mean"}),
                        on=ids)


def subspace_section(merged: pd.DataFrame, claims: list[dict], low: int, high: int) -> list[str]:
    """The §7.2 section: the :func:`phi_table` and the verdicts on Figs. 3 and 4 (``claims``)."""
    lo, hi = f"r{low}", f"r{high}"
    lines = ["## Subspace similarity (§7.2)", "",
             f"Top-direction similarity φ(A_{lo}, A_{hi}, 1, 1) per layer (paper Fig. 3, r=8 vs 64: "
             f"> 0.5 at GPT-3 layer 48), and seed-to-seed φ(A_{hi}, A'_{hi}, 1, 1) against Gaussian random "
             "A of the same shape (Fig. 4).", "", merged.to_markdown(index=False, floatfmt=".3f"), ""]
    return lines + [*claim_lines(claims), "",
                    f"Heatmaps: `subspace_{lo}_{hi}/*_phi.png`, `subspace_{hi}_seeds/*_phi.png`, "
                    f"`subspace_{hi}_seeds/random_phi.png`; W vs ΔW (Fig. 8): "
                    f"`subspace_{lo}_{hi}/*_w_vs_delta.png`.", ""]


def subspace_claims(merged: pd.DataFrame, low: int, high: int) -> list[dict]:
    """The verdicts on Figs. 3 and 4 from :func:`subspace_section`'s per-pair table."""
    lo, hi = f"r{low}", f"r{high}"
    share = (merged[f"phi_{lo}_{hi}"] > 0.5).mean()
    above_random = (merged["phi_seeds_mean"] > merged["phi_random_mean"]).mean()
    by_type = merged.groupby("weight_type")["phi_seeds_mean"].mean()
    claims = [
        claim("fig3_top_direction", f"Fig. 3, *the top direction of A_{lo} is shared with A_{hi} (φ > 0.5)*", share >= 0.5,
              f"φ > 0.5 for {share:.0%} of the layer × weight-type pairs"),
        claim("fig4_seeds_above_random", f"Fig. 4, *two seeds at r={high} share more directions than random matrices*",
              above_random == 1.0, f"mean φ above the Gaussian baseline at {above_random:.0%} of pairs"),
    ]
    if {"wq", "wv"} <= set(by_type.index):
        claims.append(claim("fig4_wq_above_wv", "Fig. 4, *ΔWq has a higher intrinsic rank than ΔWv (more shared directions "
                            "across seeds)*", by_type["wq"] > by_type["wv"],
                            f"mean seed-to-seed φ {by_type['wq']:.3f} for wq vs {by_type['wv']:.3f} for wv"))
    return claims


def table7_section(d_low: pd.DataFrame, d_high: pd.DataFrame, claims: list[dict], low: int,
                   high: int, model: str) -> list[str]:
    """The §7.3 section: medians over layers of the :func:`table7_per_layer` tables at r=low and
    r=high next to the paper's Table 7, and the verdicts on its three claims (``claims``)."""
    lines = ["## ΔW versus W (§7.3, Table 7)", ""]
    by = [c for c in id_columns(d_low) if c != "layer"]  # per weight type (and module)
    med = lambda d: d.groupby(by)[["proj_delta", "proj_w", "proj_random", "norm_w",  # noqa: E731
                                   "norm_delta", "amplification"]].median()
    t7 = pd.concat({f"r={low}": med(d_low), f"r={high}": med(d_high)}, names=["run"]).reset_index()
    lines += [f"Median over layers, per weight type{' and module' if 'module' in by else ''}, "
              "measured here:", "",
              t7.to_markdown(index=False, floatfmt=".4g"), "",
              "The paper (GPT-3 175B, layer 48, Wq, docs/paper.md#delta-w):", "",
              PAPER_TABLE7.to_markdown(index=False, floatfmt=".4g"), ""]
    return lines + [*claim_lines(claims), "",
                    f"Scale caveat: `{model}` trained for minutes at CPU scale, not GPT-3 175B; the "
                    "comparison is of directions and orders of magnitude, not values.", ""]


def table7_claims(d_low: pd.DataFrame, d_high: pd.DataFrame, low: int, high: int) -> list[dict]:
    """The verdicts on Table 7's three claims from the per-layer tables at r=low and r=high."""
    both = pd.concat([d_low.assign(run=f"r{low}"), d_high.assign(run=f"r{high}")])
    c1 = (both["proj_delta"] > both["proj_random"]).mean()
    c2 = (both["proj_delta"] < both["proj_w"]).mean()
    amp_low, amp_high = d_low["amplification"].median(), d_high["amplification"].median()
    return [
        claim("t7_correlates", "Claim 1, *ΔW correlates with W more than a random matrix does* (proj_delta > "
              "proj_random)", c1 == 1.0, f"true for {c1:.0%} of the adapted weights"),
        claim("t7_amplifies", "Claim 2, *ΔW amplifies directions not emphasised in W* (proj_delta ≪ proj_w)",
              c2 == 1.0, f"true for {c2:.0%} of the adapted weights"),
        claim("t7_factor_falls", "Claim 3, *the amplification is large, and larger at low r* (paper: 21.5 at r=4, ~2 "
              "at r=64)", amp_low > 1 and amp_low > amp_high,
              f"median {amp_low:.2f} at r={low} and {amp_high:.2f} at r={high}; read as: above 1, "
              f"and larger at r={low}"),
    ]


def claim(key: str, text: str, holds: bool, figure: str) -> dict:
    """One verdict as a record (``claims.json`` beside the report, read by the results page);
    ``key`` names it for readers, whatever the wording."""
    return {"key": key, "claim": text, "holds": bool(holds), "figure": figure}


def claim_lines(claims: list[dict]) -> list[str]:
    return [f"- {c['claim']}: {_verdict(c['holds'])} ({c['figure']})." for c in claims]


def section_7(df: pd.DataFrame, out: Path, low: int, high: int) -> list[str]:
    """The §7 sections (subspace similarity, Table 7) on the runs :func:`pick_runs` finds, their
    per-layer tables and heatmaps written under ``out``, their verdicts in ``out/claims.json``.

    Raises:
        RunError: no r=low run and two r=high runs of one task × model × weight types.
    """
    run_low, run_high, run_high_seed = pick_runs(df, low, high)
    lo, hi = f"r{low}", f"r{high}"
    s_rank = _subspace(run_low, run_high, out / f"subspace_{lo}_{hi}")
    s_seed = _subspace(run_high, run_high_seed, out / f"subspace_{hi}_seeds", w_vs_delta=False)
    d_low = _table7(run_low, out / f"delta_w_{lo}")
    d_high = _table7(run_high, out / f"delta_w_{hi}")
    model = df[df["run_dir"] == str(run_low)]["model"].iloc[0]
    merged = phi_table(s_rank, s_seed, low, high)
    phi_claims = subspace_claims(merged, low, high)
    t7_claims = table7_claims(d_low, d_high, low, high)
    write_json(out / CLAIMS, {"ranks": [low, high], "runs": [str(run_low), str(run_high), str(run_high_seed)],
                              "claims": phi_claims + t7_claims})
    return [f"Runs: r={low} `{run_low}`; r={high} `{run_high}` and `{run_high_seed}` (another "
            "seed).", "", *subspace_section(merged, phi_claims, low, high),
            *table7_section(d_low, d_high, t7_claims, low, high, model)]


def build(outputs: list[str], out: Path, low: int = 8, high: int = 64) -> Path:
    """Write ``out/report.md`` from the runs under ``outputs``; ``low``/``high``: the two ranks
    compared (the paper's 8 and 64; ``low`` is also the usual r that FT's effective rank is
    measured against).

    Beside it: ``runs.*`` of every run found; the per-layer tables and heatmaps of §7 in
    ``subspace_r<low>_r<high>/``, ``subspace_r<high>_seeds/``, ``delta_w_r<low>/`` and
    ``delta_w_r<high>/`` (when there are r=low and two r=high LoRA runs); the spectra and
    forgetting of LoRA against FT in ``spectrum/`` and ``forgetting/`` (when there are FT runs
    too; :mod:`analysis.spectral_claims`). A ``sweeps.md`` already in ``out`` is appended as the
    last section.

    Raises:
        RunError: neither part has the runs it needs.
    """
    df = collect_mod.collect(outputs)
    collect_mod.write(df, out)
    try:
        s7 = section_7(df, out, low, high)
    except RunError as e:
        s7 = None
        missing = str(e)
    picked = spectral_claims.pick(df)
    if s7 is None and isinstance(picked, str):
        raise RunError(f"{missing}; and {picked}")
    lines = ["# §7 analysis at CPU scale, next to the paper", "",
             "Generated by "
             f"`python -m analysis report {' '.join(outputs)} --out {out}"
             f"{'' if (low, high) == (8, 64) else f' --ranks {low},{high}'}`.", "",
             *(s7 or ["## §7 (subspace similarity, Table 7)", "", f"Not testable here: {missing}.",
                      ""]),
             *spectral_claims.build_section(picked, out, low)]
    sweeps = out / "sweeps.md"
    if sweeps.exists():
        lines += ["## Sweeps", "", sweeps.read_text()]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")
    return path
