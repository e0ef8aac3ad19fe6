"""The report's claims beyond §7, checked on LoRA runs of several ranks next to full fine-tuning:

* Shuttleworth et al. 2024 ("LoRA vs Full Fine-tuning: An Illusion of Equivalence"): LoRA's tuned
  weights have intruder dimensions and full fine-tuning's have few; a higher rank has fewer.
* Biderman et al. 2024 ("LoRA Learns Less and Forgets Less"): full fine-tuning's ΔW has an
  effective rank 10-100× LoRA's usual r, and LoRA forgets less of what the base model knew.

The measures are those of ``python -m analysis spectrum`` (:mod:`analysis.spectrum`, on each run's
final weights) and ``python -m analysis forgetting`` (:mod:`analysis.forgetting`, on the weights of
the evaluation the run reports). A run is one sample: its matrices are averaged first (mean
intruders per matrix; median effective rank), then the runs of one kind (LoRA r=…, FT) give the
median over seeds that each verdict compares.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import forgetting, spectrum, sweeps
from analysis.runs import kind_label

FT_METHODS = ("full_ft", "ft_top2")
# Biderman et al.: full fine-tuning's ΔW has a rank "10-100×" a typical LoRA configuration's.
RANK_FACTOR = 10
# "At equal task metric": LoRA's median within this of FT's (1 point of accuracy / correlation).
EQUAL_METRIC = 0.01


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def pick(df: pd.DataFrame) -> tuple[list[Path], str] | str:
    """(LoRA and FT run directories of one task × model, a line naming them), or why there are
    none: the task × model with the most such runs among ``df`` (``analysis.collect`` rows) that
    has at least one FT run and LoRA runs; LoRA runs keep their most frequent weight-type set.
    Runs started from another run (``init_from``, e.g. a beam-search re-decoding) are left out:
    they would count that run's ΔW a second time; so is a run that repeats another's config and
    every figure (the same job trained into two sweep folders)."""
    ok = df[df["status"] == "ok"].drop_duplicates("run_dir")
    ok = ok.drop_duplicates([c for c in ok.columns if c not in ("run_dir", "wall_s")])
    if "init_from" in ok:
        ok = ok[ok["init_from"].isna()]
    best: tuple[list[Path], str] | None = None
    for (task, model), g in ok.groupby(["task", "model"]):
        ft, lora = g[g["method"].isin(FT_METHODS)], g[g["method"] == "lora"]
        if ft.empty or lora.empty:
            continue
        counts = lora["targets"].value_counts()  # ties go to the paper's (W_q, W_v)
        lora = lora[lora["targets"] == max(counts.index, key=lambda t: (counts[t], t == "wq,wv"))]
        runs = [Path(p) for p in [*lora.sort_values(["rank", "seed"]).run_dir, *ft.run_dir]]
        if best is None or len(runs) > len(best[0]):
            ranks = ", ".join(str(int(r)) for r in sorted(lora["rank"].unique()))
            best = runs, (f"{task} × {model}: LoRA ({lora['targets'].iloc[0]}) r = {ranks} "
                          f"({_runs(len(lora))}) and FT ({_runs(len(ft))})")
    return best or ("no task × model with both full fine-tuning runs (method full_ft or ft_top2) "
                    "and LoRA runs under the given folders")


def per_run(spec: pd.DataFrame, forget: pd.DataFrame) -> pd.DataFrame:
    """One row per run: mean intruders per matrix, median effective / stable rank and norm ratio,
    and its forgetting and task metric. FT is measured on LoRA's weight types only, so that both
    count intruders over the same matrices."""
    lora_types = set(spec.loc[spec["method"] == "lora", "weight_type"])
    spec = spec[(spec["method"] == "lora") | spec["weight_type"].isin(lora_types)]
    runs = spec.groupby("run_dir").agg(
        method=("method", "first"), rank=("rank", "first"), seed=("seed", "first"),
        intruders=("intruders", "mean"), effective_rank_90=("effective_rank_90", "median"),
        stable_rank=("stable_rank", "median"), norm_ratio=("norm_ratio", "median"))
    runs = runs.join(forget.set_index("run_dir")[["forgetting", "task_metric", "task_metric_name"]])
    return runs.assign(kind=[kind_label(m, r) for m, r in zip(runs["method"], runs["rank"])])


def by_kind(runs: pd.DataFrame) -> pd.DataFrame:
    """Median over the seeds of each kind, LoRA by rank first, then FT."""
    cols = ["intruders", "effective_rank_90", "stable_rank", "norm_ratio", "forgetting",
            "task_metric"]
    table = runs.groupby("kind")[cols].median().join(runs.groupby("kind").size().rename("runs"))
    table = table.join(runs.groupby("kind")[["method", "rank"]].first())
    order = table.assign(ft=table["method"].isin(FT_METHODS)).sort_values(["ft", "rank"])
    return order.drop(columns=["method", "ft"]).reset_index()


def _verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def _fmt(kinds: pd.DataFrame, column: str, digits: int = 2) -> str:
    return "; ".join(f"{k} {v:.{digits}f}" for k, v in zip(kinds["kind"], kinds[column]))


def intruder_claims(kinds: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """Shuttleworth et al.: intruders in LoRA and not in FT; fewer with rank."""
    lora, ft = kinds[kinds["rank"].notna()], kinds[kinds["rank"].isna()]
    more = lora[lora["intruders"] > ft["intruders"].max()]
    verdict = (_verdict(True) if len(more) == len(lora) else _verdict(False) if more.empty else
               f"**holds at {', '.join(more['kind'])} only**")
    lines = [f"- Shuttleworth et al., *LoRA's tuned weights have intruder dimensions; full "
             f"fine-tuning's have few*: {verdict} (mean intruders per matrix: "
             f"{_fmt(kinds, 'intruders')})."]
    if lora["rank"].nunique() < 2:
        return lines + ["- *A higher rank has fewer intruders*: not testable (one LoRA rank)."]
    lora_runs = runs[runs["rank"].notna()]
    rho = lora_runs["rank"].corr(lora_runs["intruders"], method="spearman")
    low, high = lora.iloc[0], lora.iloc[-1]
    return lines + [f"- *A higher rank has fewer intruders*: "
                    f"{_verdict(high['intruders'] < low['intruders'] and rho < 0)} "
                    f"({low['kind']} {low['intruders']:.2f} vs {high['kind']} "
                    f"{high['intruders']:.2f}; Spearman ρ(rank, intruders) = {rho:.2f} over "
                    f"{len(lora_runs)} runs)."]


def rank_claim(kinds: pd.DataFrame, usual_rank: int) -> str:
    """Biderman et al.: FT's ΔW has an effective rank 10-100× LoRA's usual r."""
    ft_rank = kinds.loc[kinds["rank"].isna(), "effective_rank_90"].median()
    return (f"- Biderman et al., *full fine-tuning's ΔW has an effective rank 10-100× LoRA's usual "
            f"r*: {_verdict(ft_rank >= RANK_FACTOR * usual_rank)} (FT's median effective_rank_90 "
            f"{ft_rank:.1f} = {ft_rank / usual_rank:.1f}× r={usual_rank}; per kind: "
            f"{_fmt(kinds, 'effective_rank_90', 1)}).")


def forgetting_claim(kinds: pd.DataFrame, probe: str) -> str:
    """Biderman et al.: LoRA forgets less, at equal task metric."""
    lora, ft = kinds[kinds["rank"].notna()], kinds[kinds["rank"].isna()].iloc[0]
    less = lora[lora["forgetting"] < ft["forgetting"]]
    equal = less[less["task_metric"] >= ft["task_metric"] - EQUAL_METRIC]
    if equal.empty and less.empty:
        verdict = _verdict(False)
    elif equal.empty:
        verdict = "**holds, but LoRA also learned less here** (no rank within 1 point of FT's metric)"
    else:
        verdict = f"**holds** (at equal task metric: {', '.join(equal['kind'])})"
    return (f"- Biderman et al., *LoRA forgets less at equal task metric*: {verdict} (forgetting "
            f"on {probe}, positive = forgot: {_fmt(kinds, 'forgetting', 4)}; task metric: "
            f"{_fmt(kinds, 'task_metric', 4)}).")


def section(runs: pd.DataFrame, line: str, usual_rank: int, probe: str) -> list[str]:
    """The report section: the per-kind table and the four verdicts, from :func:`per_run` rows."""
    kinds = by_kind(runs)
    show = kinds.drop(columns=["rank"]).rename(columns={
        "intruders": "intruders/matrix", "task_metric": runs["task_metric_name"].iloc[0]})
    return ["## Beyond §7: intruder dimensions, effective rank, forgetting", "",
            f"Runs: {line}. Median over seeds per kind: intruders per adapted matrix (top "
            f"k={spectrum.INTRUDER_K} singular vectors of W0 + ΔW with |cos| < ε="
            f"{spectrum.INTRUDER_EPS} to every singular vector of W0), effective_rank_90 and "
            "stable_rank of ΔW, ‖ΔW‖_F/‖W0‖_F (FT on LoRA's weight types), forgetting "
            f"({probe}; positive = forgot) and the task metric of the reported evaluation.", "",
            show.to_markdown(index=False, floatfmt=".4g"), "",
            *intruder_claims(kinds, runs), rank_claim(kinds, usual_rank),
            forgetting_claim(kinds, probe), "",
            "Files: `spectrum/spectrum.csv`, `spectrum/intruders_by_rank.png`, "
            "`spectrum/effective_rank.png`, `forgetting/forgetting.json`, "
            "`forgetting/learning_vs_forgetting.png`.", ""]


def build_section(picked: tuple[list[Path], str] | str, out: Path, usual_rank: int) -> list[str]:
    """Measure spectra and forgetting of the runs :func:`pick` found (``picked``), write them
    under ``out/spectrum`` and ``out/forgetting``, and return the report section (or a line
    saying why it is not testable)."""
    if isinstance(picked, str):
        return ["## Beyond §7: intruder dimensions, effective rank, forgetting", "",
                f"Not testable here: {picked}.", ""]
    run_dirs, line = picked
    spec = spectrum.spectrum_table(run_dirs, out / "spectrum")
    forget = forgetting.write_forgetting(run_dirs, out / "forgetting")
    print(sweeps.write_forgetting_sweep([out / "forgetting"], out / "forgetting"))
    return section(per_run(spec, forget), line, usual_rank, forget["probe"].iloc[0])
