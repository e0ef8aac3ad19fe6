"""``python -m analysis <command> ...``: from run directories to the paper's §7 tables and figures.

Commands (each takes ``--out DIR``):
  collect OUTPUTS...      every run under the folders -> runs.csv / runs.parquet / runs.md
  subspace RUN_A RUN_B    φ(A_a, A_b, i, j) per shared layer × weight type (Figs. 3, 4, 6, 7),
                          the Gaussian baseline, and W vs ΔW directions (Fig. 8)
  delta-w RUN             Table 7: ‖U^⊤ W V^⊤‖_F for U, V from ΔW, W and random; amplification
  sweep OUTPUTS... --by method|rank,targets   median/mean over seeds per group, table + plot
  report OUTPUTS...       subspace + delta-w on the r=8 / r=64 runs, claims checked, report.md
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import torch

from analysis import collect as collect_mod
from analysis.delta_w import table7_rows
from analysis.plots import phi_heatmap
from analysis.runs import RunError, lora_factors, pretrained_weights, summary_of
from analysis.subspace import grassmann_phi_w_vs_delta, random_baseline, subspace_similarity


def cmd_collect(args) -> pd.DataFrame:
    df = collect_mod.collect(args.outputs)
    paths = collect_mod.write(df, Path(args.out))
    print(paths["md"].read_text())
    print(f"wrote {paths['csv']}, {paths['parquet']}, {paths['md']}")
    return df


def cmd_sweep(args) -> pd.DataFrame:
    from analysis import sweeps

    out = Path(args.out)
    df = collect_mod.collect(args.outputs)
    collect_mod.write(df, out)
    by = args.by.split(",")
    table = sweeps.sweep_table(df, by, args.stat, all_metrics=args.all_metrics)
    table.to_csv(out / "sweep.csv", index=False)
    md = sweeps.to_markdown(table, by, args.stat, scale=args.scale)
    (out / "sweep.md").write_text(md)
    x, hue = (by[0], by[1] if len(by) > 1 else None)
    sweeps.plot(table, x, hue, out / "sweep.png", args.stat)
    print(md)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'} and runs.* in {out}")
    return table


def cmd_report(args) -> Path:
    from analysis.report import build

    try:
        low, high = (int(r) for r in args.ranks.split(","))
    except ValueError:
        raise RunError(f"--ranks={args.ranks} is invalid; valid: two ranks 'LOW,HIGH', e.g. 8,64") from None
    return build(args.outputs, Path(args.out), low, high)


def _label(run_dir: Path) -> str:
    s = summary_of(run_dir)
    return f"r={s.get('rank')},seed={s.get('seed')}"


def cmd_subspace(args) -> pd.DataFrame:
    run_a, run_b, out = Path(args.run_a), Path(args.run_b), Path(args.out)
    fa, fb = lora_factors(run_a), lora_factors(run_b)
    shared = sorted(set(fa) & set(fb))
    if not shared:
        raise RunError(f"no layer × weight type in common: {run_a} has "
                       f"{sorted({k[1] for k in fa})}, {run_b} has {sorted({k[1] for k in fb})}")
    la, lb = _label(run_a), _label(run_b)
    g = torch.Generator().manual_seed(args.seed)
    w0 = pretrained_weights(run_a, shared) if args.w_vs_delta else {}
    rows = []
    for key in shared:
        layer, wt = key
        A1, A2 = fa[key].A, fb[key].A
        Phi = subspace_similarity(A1, A2)  # (r_a, r_b)
        Phi_rand = random_baseline(A1.shape[1], A1.shape[0], A2.shape[0], generator=g)[0]
        stem = out / f"{wt}_layer{layer}"
        phi_heatmap(Phi, f"{stem}_phi.png", f"ΔW{wt[1:]} layer {layer}: φ(A {la}, A' {lb})",
                    f"j ({lb})", f"i ({la})")
        row = {"layer": layer, "weight_type": wt, "r_a": A1.shape[0], "r_b": A2.shape[0],
               "phi_top1": float(Phi[0, 0]), "phi_random_top1": float(Phi_rand[0, 0]),
               "expected_random_top1": 1.0 / A1.shape[1],
               "phi_mean": float(Phi.mean()), "phi_random_mean": float(Phi_rand.mean())}
        if args.w_vs_delta:
            k = min(w0[key].shape)
            top_w = max(1, math.ceil(0.1 * k))  # the paper reads W's top 10% of directions
            M = grassmann_phi_w_vs_delta(w0[key], fa[key].delta_w, k, fa[key].A.shape[0])
            phi_heatmap(M[:top_w], f"{stem}_w_vs_delta.png", f"W{wt[1:]} layer {layer} vs ΔW ({la})",
                        "j (ΔW direction)", "i (W direction)")
            row["w_top10pct_vs_delta_top"] = float(M[top_w - 1, min(4, M.shape[1]) - 1])
        rows.append(row)
    phi_heatmap(Phi_rand, out / "random_phi.png", "Gaussian random A, A'", "j", "i")
    df = pd.DataFrame(rows)
    df.to_csv(out / "subspace.csv", index=False)
    print(f"top-direction similarity φ(1, 1), {la} vs {lb} and for Gaussian random A (the baseline)")
    print(df[["layer", "weight_type", "phi_top1", "phi_random_top1", "phi_mean"]].to_string(index=False))
    print(f"wrote {out / 'subspace.csv'} and the heatmaps in {out}")
    return df


def cmd_delta_w(args) -> pd.DataFrame:
    run, out = Path(args.run), Path(args.out)
    factors = lora_factors(run)
    keys = sorted(factors)
    w0 = pretrained_weights(run, keys)
    g = torch.Generator().manual_seed(args.seed)
    r = factors[keys[0]].A.shape[0]
    stats = table7_rows([w0[k] for k in keys], [factors[k].delta_w for k in keys], r, generator=g)
    df = pd.DataFrame([{"layer": k[0], "weight_type": k[1], "r": r, **s} for k, s in zip(keys, stats)])
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "delta_w.csv", index=False)
    print(f"Table 7 ({_label(run)}): ‖U^T W V^T‖_F with U, V from ΔW / W / random; amplification "
          "= ‖ΔW‖_F / proj_delta")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out / 'delta_w.csv'}")
    return df


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run directories -> one tidy table")
    c.add_argument("outputs", nargs="+")
    c.set_defaults(func=cmd_collect)
    s = sub.add_parser("subspace", help="φ between the A matrices of two LoRA runs (§7.2)")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--no-w-vs-delta", dest="w_vs_delta", action="store_false",
                   help="skip the Fig. 8 comparison of W's and ΔW's directions")
    s.set_defaults(func=cmd_subspace)
    d = sub.add_parser("delta-w", help="Table 7 for every adapted weight of a LoRA run (§7.3)")
    d.add_argument("run")
    d.set_defaults(func=cmd_delta_w)
    w = sub.add_parser("sweep", help="median (or mean) over seeds per group and task, table + plot")
    w.add_argument("outputs", nargs="+")
    w.add_argument("--by", default="method", help="comma-separated grouping columns, e.g. rank,targets")
    w.add_argument("--stat", default="median", choices=["median", "mean"],
                   help="median: the GLUE protocol (Table 2); mean: the NLG protocol (Table 3)")
    w.add_argument("--all-metrics", action="store_true",
                   help="every metric of the runs (E2E's five), not only the task's main metric")
    w.add_argument("--scale", type=float, default=100.0,
                   help="multiply values by this in the Markdown (100: GLUE fractions as %%; "
                        "1: NLG metrics, already on the paper's scale)")
    w.set_defaults(func=cmd_sweep)
    r = sub.add_parser("report", help="the §7 analyses of r=8 / r=64 runs next to the paper's numbers")
    r.add_argument("outputs", nargs="+")
    r.add_argument("--ranks", default="8,64", help="the two ranks compared (the paper's 8,64)")
    r.set_defaults(func=cmd_report)
    for q in (c, s, d, w, r):
        q.add_argument("--out", required=True, help="folder to write into")
        q.add_argument("--seed", type=int, default=0, help="seed of the random baselines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    try:
        args.func(args)
    except (RunError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
