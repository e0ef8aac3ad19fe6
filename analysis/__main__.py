"""``python -m analysis <command> ...``: from run directories to the paper's §7 tables and figures.

Commands (each takes ``--out DIR``):
  collect OUTPUTS...      every run under the folders -> runs.csv / runs.parquet / runs.md
  subspace RUN_A RUN_B    φ(A_a, A_b, i, j) per shared layer × weight type (Figs. 3, 4, 6, 7),
                          the Gaussian baseline, and W vs ΔW directions (Fig. 8); with a full
                          fine-tuning run: LoRA's top-r ΔW directions against FT's
  delta-w RUN             Table 7: ‖U^⊤ W V^⊤‖_F for U, V from ΔW, W and random; amplification
  spectrum RUN...         per ΔW of FT / FT^Top2 / LoRA runs: effective rank, stable rank, intruders
  sweep OUTPUTS... --by method|rank,targets   median/mean over seeds per group, table + plot
                          (runs of one protocol only, unless --mix-protocols); with --forgetting
                          the learning-vs-forgetting plot of every forgetting.json under them
  forgetting RUN...       STS-B zero-shot Spearman / held-out LM loss, base vs tuned model
  report OUTPUTS...       subspace + delta-w on the r=8 / r=64 runs, claims checked, report.md
  lr-grid OUTPUTS...      per method the learning rate best on the held-out slice, curves
  paper OUTPUTS...        the results page: each re-measured table and claim, with verdicts
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import collect as collect_mod
from analysis import forgetting, lr_grid, results, spectrum, sweeps
from analysis.per_layer import subspace_per_layer, subspace_summary, table7_per_layer, table7_summary
from analysis.report import build
from analysis.runs import RunError

# Each command only turns its flags into arguments of the analysis/ function that does the work
# (shared with `report`) and prints what that wrote.


def cmd_collect(args: argparse.Namespace) -> None:
    paths = collect_mod.write(collect_mod.collect(args.outputs), Path(args.out))
    print(paths["md"].read_text())
    print(f"wrote {paths['csv']}, {paths['parquet']}, {paths['md']}")


def cmd_sweep(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.forgetting:
        print(sweeps.write_forgetting_sweep(args.outputs, out))
        return
    print(sweeps.write_sweep(args.outputs, out, args.by.split(","), args.stat,
                             all_metrics=args.all_metrics, scale=args.scale,
                             mix_protocols=args.mix_protocols))
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'} and runs.* in {out}")


def cmd_report(args: argparse.Namespace) -> None:
    try:
        low, high = (int(r) for r in args.ranks.split(","))
    except ValueError:
        raise RunError(f"--ranks={args.ranks} is invalid; valid: two ranks 'LOW,HIGH', e.g. 8,64") from None
    build(args.outputs, Path(args.out), low, high)


def cmd_lr_grid(args: argparse.Namespace) -> None:
    print(lr_grid.write_grid(args.outputs, Path(args.out)))
    print(f"wrote lr_grid.md, lr_grid.csv, lr_choice.csv and curves_<task>.png in {args.out}")


def cmd_paper(args: argparse.Namespace) -> None:
    print(f"wrote {results.write_page(args.outputs, Path(args.out))}")


def cmd_subspace(args: argparse.Namespace) -> None:
    table = subspace_per_layer(args.run_a, args.run_b, args.out, seed=args.seed,
                               w_vs_delta=args.w_vs_delta)
    print(subspace_summary(table, args.run_a, args.run_b, args.out))


def cmd_delta_w(args: argparse.Namespace) -> None:
    table = table7_per_layer(args.run, args.out, seed=args.seed)
    print(table7_summary(table, args.run, args.out))


def cmd_spectrum(args: argparse.Namespace) -> None:
    table = spectrum.spectrum_table(args.runs, args.out, k=args.intruder_k, eps=args.intruder_eps)
    print(spectrum.spectrum_summary(table, args.out))


def cmd_forgetting(args: argparse.Namespace) -> None:
    table = forgetting.write_forgetting(args.runs, Path(args.out), checkpoint=args.checkpoint,
                                        data_dir=args.data_dir, lm_probe=args.lm_probe,
                                        n_texts=args.texts, seed=args.seed)
    print(forgetting.summary_text(table, Path(args.out)))


def forgetting_flags(f: argparse.ArgumentParser) -> None:
    f.add_argument("runs", nargs="+", metavar="RUN")
    f.add_argument("--checkpoint", default="best", choices=forgetting.CHECKPOINTS,
                   help="which trained parameters: best (the reported evaluation's) or final")
    f.add_argument("--data-dir", default=None,
                   help="data mirror of the probes (default: each run's own data_dir)")
    f.add_argument("--lm-probe", default="webnlg", choices=sorted(forgetting.LM_PROBES),
                   help="decoder runs: whose test references the LM loss is measured on")
    f.add_argument("--texts", type=int, default=forgetting.N_TEXTS,
                   help="decoder runs: how many references (a subset seeded by --seed)")
    f.set_defaults(func=cmd_forgetting)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run directories -> one tidy table")
    c.add_argument("outputs", nargs="+")
    c.set_defaults(func=cmd_collect)
    s = sub.add_parser("subspace", help="φ between the A matrices of two LoRA runs (§7.2), or "
                       "between the top-r ΔW directions of a LoRA run and an FT run")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--no-w-vs-delta", dest="w_vs_delta", action="store_false",
                   help="skip the Fig. 8 comparison of W's and ΔW's directions")
    s.set_defaults(func=cmd_subspace)
    d = sub.add_parser("delta-w", help="Table 7 for every adapted weight of a LoRA run (§7.3)")
    d.add_argument("run")
    d.set_defaults(func=cmd_delta_w)
    sp = sub.add_parser("spectrum", help="effective rank, stable rank and intruder dimensions of "
                        "ΔW for full_ft, ft_top2 and lora runs")
    sp.add_argument("runs", nargs="+", metavar="RUN")
    sp.add_argument("--intruder-k", type=int, default=spectrum.INTRUDER_K,
                    help="how many top singular vectors of W0+ΔW may be intruders (Shuttleworth "
                         "et al. 2024: %(default)s)")
    sp.add_argument("--intruder-eps", type=float, default=spectrum.INTRUDER_EPS,
                    help="a singular vector whose |cos| with every one of W0's is below this is an "
                         "intruder (Shuttleworth et al. 2024: %(default)s)")
    sp.set_defaults(func=cmd_spectrum)
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
    w.add_argument("--mix-protocols", action="store_true",
                   help="pool runs made under different protocols (selection, eval_every, weight "
                        "decay ...; runs.csv has each run's); refused by default")
    w.add_argument("--forgetting", action="store_true", help="instead: task metric against "
                   "forgetting of every forgetting.json under the folders (from `forgetting`)")
    w.set_defaults(func=cmd_sweep)
    f = sub.add_parser("forgetting", help="what each run forgot of its base model: a probe on "
                       "held-out data before and after fine-tuning (Biderman et al. 2024)")
    forgetting_flags(f)
    r = sub.add_parser("report", help="the §7 analyses of r=8 / r=64 runs next to the paper's numbers")
    r.add_argument("outputs", nargs="+")
    r.add_argument("--ranks", default="8,64", help="the two ranks compared (the paper's 8,64)")
    r.set_defaults(func=cmd_report)
    g = sub.add_parser("lr-grid", help="per method the learning rate best on the held-out slice")
    g.add_argument("outputs", nargs="+")
    g.set_defaults(func=cmd_lr_grid)
    pp = sub.add_parser("paper", help="the results page: each re-measured table and claim")
    pp.add_argument("outputs", nargs="+")
    pp.set_defaults(func=cmd_paper)
    for q in (c, s, d, sp, w, f, r, g, pp):
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
