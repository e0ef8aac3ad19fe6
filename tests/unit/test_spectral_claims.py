"""The report's claims beyond §7 (analysis/spectral_claims.py) on hand-made measures."""
import pandas as pd
import pytest

from analysis import spectral_claims as sc


def spectrum_rows(run, method, rank, seed, intruders, eff_rank, types=("wq", "wv")):
    return [{"run_dir": run, "method": method, "rank": rank, "task": "sst2", "seed": seed,
             "layer": layer, "weight_type": t, "module": t, "effective_rank_90": eff_rank,
             "stable_rank": 1.0, "intruders": intruders[i % len(intruders)], "norm_ratio": 0.1}
            for i, (layer, t) in enumerate((layer, t) for layer in (0, 1) for t in types)]


def forgetting_row(run, forgot, metric):
    return {"run_dir": run, "forgetting": forgot, "task_metric": metric,
            "task_metric_name": "dev/accuracy"}


def measures(ft_intruders, ft_eff_rank, ft_forgot, ft_metric):
    """LoRA r=1 (2 seeds), r=64 (1 seed) and an FT run over all four attention weights."""
    spec = pd.DataFrame([
        *spectrum_rows("r1s0", "lora", 1, 0, [2, 0], 1), *spectrum_rows("r1s1", "lora", 1, 1, [1], 1),
        *spectrum_rows("r64", "lora", 64, 0, [1, 0], 5),
        # FT on wk and wo too: 9 intruders there that LoRA's weight types must not count.
        *spectrum_rows("ft", "full_ft", None, 0, [ft_intruders, ft_intruders, 9, 9], ft_eff_rank,
                       types=("wq", "wv", "wk", "wo"))])
    forget = pd.DataFrame([forgetting_row("r1s0", 0.01, 0.90), forgetting_row("r1s1", 0.03, 0.90),
                           forgetting_row("r64", 0.02, 0.80), forgetting_row("ft", ft_forgot, ft_metric)])
    return sc.per_run(spec, forget)


def test_per_run_averages_matrices_and_ft_counts_only_loras_weight_types():
    runs = measures(ft_intruders=0, ft_eff_rank=90, ft_forgot=0.5, ft_metric=0.9)
    assert runs.loc["r1s0", "intruders"] == 1.0  # [2, 0, 2, 0] over 4 matrices
    assert runs.loc["r64", "intruders"] == 0.5
    assert runs.loc["ft", "intruders"] == 0.0  # its wk / wo rows (9 each) are left out
    assert runs.loc["ft", "kind"] == "full_ft" and runs.loc["r64", "kind"] == "lora r=64"
    kinds = sc.by_kind(runs)
    assert list(kinds["kind"]) == ["lora r=1", "lora r=64", "full_ft"]  # LoRA by rank, then FT
    assert kinds.set_index("kind").loc["lora r=1", "intruders"] == 1.0  # median of 1.0 and 1.0
    assert kinds.set_index("kind").loc["lora r=1", "forgetting"] == pytest.approx(0.02)
    assert list(kinds["runs"]) == [2, 1, 1]


def test_every_claim_holds_on_measures_made_to_hold():
    lines = [line for line in sc.section(measures(0, 90, 0.5, 0.9), "runs", 8, "stsb")
             if line.startswith("- ")]
    assert len(lines) == 4
    assert "have few*: **holds** (mean intruders per matrix: lora r=1 1.00; lora r=64 0.50; " \
           "full_ft 0.00)" in lines[0]
    assert "**holds**" in lines[1] and "ρ(rank, intruders) = -1.00 over 3 runs" in lines[1]
    assert "**holds**" in lines[2] and "90.0 = 11.2× r=8" in lines[2]
    assert "**holds** (at equal task metric: lora r=1)" in lines[3]  # r=64 is 10 points lower


def test_claims_that_do_not_hold_are_reported_as_such():
    runs = measures(ft_intruders=3, ft_eff_rank=40, ft_forgot=0.0, ft_metric=0.9)
    lines = [line for line in sc.section(runs, "runs", 8, "stsb") if line.startswith("- ")]
    assert "have few*: **does not hold**" in lines[0]  # FT has more (3) than any LoRA rank
    assert "**does not hold** (FT's median effective_rank_90 40.0 = 5.0× r=8" in lines[2]
    assert "forgets less at equal task metric*: **does not hold**" in lines[3]


def test_partial_verdicts_name_the_ranks():
    runs = measures(ft_intruders=0.5, ft_eff_rank=90, ft_forgot=0.025, ft_metric=0.95)  # r=64: 0.5
    lines = [line for line in sc.section(runs, "runs", 8, "stsb") if line.startswith("- ")]
    assert "**holds at lora r=1 only**" in lines[0]
    # Both ranks forget less than FT (0.02 < 0.025) but neither is within 1 point of its metric.
    assert "**holds, but LoRA also learned less here**" in lines[3]


def test_one_rank_cannot_test_the_rank_claim():
    runs = measures(0, 90, 0.5, 0.9).drop(index="r64")
    lines = [line for line in sc.section(runs, "runs", 8, "stsb") if line.startswith("- ")]
    assert "- *A higher rank has fewer intruders*: not testable (one LoRA rank)." in lines


def test_pick_needs_ft_and_lora_runs_of_one_task_and_model():
    rows = pd.DataFrame([
        {"status": "ok", "run_dir": "a", "task": "sst2", "model": "m", "method": "lora", "rank": 4,
         "seed": 0, "targets": "wq,wv"},
        {"status": "ok", "run_dir": "b", "task": "mrpc", "model": "m", "method": "full_ft",
         "rank": 8, "seed": 0, "targets": None}])
    assert "no task × model with both" in sc.pick(rows)
    more = pd.concat([rows, pd.DataFrame([
        {"status": "ok", "run_dir": "c", "task": "sst2", "model": "m", "method": "full_ft",
         "rank": 8, "seed": 0, "targets": None},
        {"status": "failed", "run_dir": "d", "task": "sst2", "model": "m", "method": "lora",
         "rank": 1, "seed": 0, "targets": "wq,wv"},
        {"status": "ok", "run_dir": "e", "task": "sst2", "model": "m", "method": "lora",
         "rank": 2, "seed": 0, "targets": "wk"},
        {"status": "ok", "run_dir": "f", "task": "sst2", "model": "m", "method": "lora",
         "rank": 4, "seed": 0, "targets": "wq,wv", "init_from": "a"}])])
    run_dirs, line = sc.pick(more)
    # Left out: the failed run, the re-evaluation of run a, and the weight types that tie with
    # (W_q, W_v) for the most runs.
    assert [str(p) for p in run_dirs] == ["a", "c"]
    assert line == "sst2 × m: LoRA (wq,wv) r = 4 (1 run) and FT (1 run)"


def test_pick_counts_a_job_trained_into_two_folders_once():
    ft = {"status": "ok", "task": "sst2", "model": "m", "method": "full_ft", "rank": 8,
          "targets": None, "heldout": 0.9}
    rows = pd.DataFrame([
        {"status": "ok", "run_dir": "a", "task": "sst2", "model": "m", "method": "lora", "rank": 4,
         "seed": 0, "targets": "wq,wv", "heldout": 0.9},
        {**ft, "run_dir": "spectrum_ft/0", "seed": 0, "wall_s": 600.0},
        {**ft, "run_dir": "table2/36", "seed": 0, "wall_s": 640.0},  # the same job again
        {**ft, "run_dir": "table2/37", "seed": 1, "wall_s": 610.0},
        # same config, another figure: not the same run, so it stays
        {**ft, "run_dir": "table2/99", "seed": 1, "wall_s": 610.0, "heldout": 0.8}])
    run_dirs, line = sc.pick(rows)
    assert [str(p) for p in run_dirs] == ["a", "spectrum_ft/0", "table2/37", "table2/99"]
    assert line.endswith("and FT (3 runs)")
