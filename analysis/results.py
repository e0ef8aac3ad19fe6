"""``python -m analysis paper OUTPUTS --out DIR``: the results page, ``DIR.md`` (``--out
docs/results`` writes ``docs/results.md``), with its plots and CSVs in ``DIR/``, from the run
directories under OUTPUTS.

OUTPUTS is read by folder name (the layout the documented commands write,
``docs/generated/sweeps/<name>``):

* ``table2_cpu*``: the CPU Table 2 runs (``experiment=table2_cpu``); ``longer_*``: some of its
  rows trained again with more epochs (:mod:`analysis.longer`);
* ``lr_grid_cpu``: the learning-rate grid that chose each Table 2 row's rate;
* ``rank_*``: LoRA rank sweeps (Table 6), ``weight_types_*``: weight types at a matched budget
  (Table 5), any tasks; §7 runs on the r=8 / r=64 runs of the first ``rank_*`` folder that has
  their adapters;
* ``table3_cpu``: the CPU Table 3 runs (greedy), ``table3_cpu_beam``: LoRA and FT trained again
  and decoded with beam 10 and greedily (the same weights both ways);
* every folder: the configs trained twice, side by side (:mod:`analysis.reruns`), e.g.
  ``reruns/``, one Table 2 job trained again as a single run.

A section whose runs are not there says so, with the command that makes them: the page never
shows a figure it did not read from a run.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from analysis import claims, forgetting, longer, measured, reruns, spectrum, table2, table3, tables56
from analysis.report import CLAIMS as SECTION7_CLAIMS
from analysis.report import build as build_report
from analysis.report import pick_runs
from analysis.collect import collect
from analysis.curves import curves, plot_curves
from analysis.lr_grid import write_grid
from analysis.provenance import run_identity, summary_of, trained_label
from analysis.runs import RunError, kind_label
from lora_exp.export import WEIGHTS

GRID_COMMANDS = """```bash
# seed 0, each method at 3 rates (a x3 ladder around its usual range), on MRPC (6 epochs) and an
# 8,000-row SST-2 subset (3 epochs); two single-thread chains side by side
G=docs/generated/sweeps/lr_grid_cpu
MRPC="task=mrpc trainer.epochs=6"
SST2="task=sst2 trainer.max_train_samples=8000 trainer.epochs=3 trainer.eval_every=epoch trainer.checkpoint_every=null"
run() { OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu seed=0 trainer.save_trained=false "$@"; }
for T in mrpc sst2; do
  [ $T = mrpc ] && B=$MRPC || B=$SST2
  run method=lora,adapter_h,adapter_l trainer.lr=3e-4,1e-3,3e-3 $B hydra.sweep.dir=$G/${T}_lora_adapters
  # AdapterH's larger row (r=64) has a grid of its own: at r=8's rate it learned nothing
  run method=adapter_h rank=64 trainer.lr=3e-4,1e-3,3e-3 $B hydra.sweep.dir=$G/${T}_adapter_h_r64
  run method=prefix_layer trainer.lr=3e-4,1e-3,3e-3 $B hydra.sweep.dir=$G/${T}_prefix_layer
  run method=bitfit trainer.lr=1e-3,3e-3,1e-2 $B hydra.sweep.dir=$G/${T}_bitfit
  run method=full_ft trainer.lr=3e-5,1e-4,3e-4 $B hydra.sweep.dir=$G/${T}_full_ft
done
python -m analysis lr-grid $G --out docs/results/lr_grid
```"""
TABLE2_COMMANDS = """```bash
# two halves side by side, one thread each; re-running a command skips its finished jobs
S=docs/generated/sweeps
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu method=lora,adapter_h,adapter_l hydra.sweep.dir=$S/table2_cpu_a
# the larger adapter, at its own grid's rate (1e-3; at r=8's 3e-3 it predicted one class: the runs
# of commit fd7ca32, removed since)
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu method=adapter_h rank=64 hydra.sweep.dir=$S/table2_cpu_adapter_h_r64
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu method=full_ft,bitfit,prefix_layer hydra.sweep.dir=$S/table2_cpu_b
python run.py experiment=table2_cpu method=lora task=mrpc seed=0      # one run of the table
```"""
LONGER_COMMANDS = """```bash
# Table 2's rows again with more epochs (a run_name of their own; two chains side by side)
S=docs/generated/sweeps
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu task=sst2 method=full_ft seed=0,1,2 \\
    trainer.epochs=2 run_name=longer_budget hydra.sweep.dir=$S/longer_sst2_full_ft
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu task=sst2 method=lora seed=0,1,2 \\
    trainer.epochs=2 run_name=longer_budget hydra.sweep.dir=$S/longer_sst2_lora
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu task=stsb method=lora seed=0,1,2 \\
    trainer.epochs=10 run_name=longer_budget hydra.sweep.dir=$S/longer_stsb_lora
```"""
RANKS_COMMANDS = """```bash
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu method=lora task=mrpc rank=1,2,4,8,64 seed=0,1,2 \\
    hydra.sweep.dir=docs/generated/sweeps/rank_mrpc
OMP_NUM_THREADS=1 python run.py -m experiment=rank_sweep_sst2 hydra.sweep.dir=docs/generated/sweeps/rank_sweep_sst2
```"""
TYPES_COMMANDS = """```bash
# its (wq,wv) r=4 jobs 5, 12, 19 have the resolved configs of the rank sweep's r=4 jobs 2, 7, 12:
# copy those finished runs in first, and the sweep skips them (Compute counts them once)
S=docs/generated/sweeps; mkdir -p $S/weight_types_mrpc
for p in 2:5 7:12 12:19; do cp -r $S/rank_mrpc/${p%:*} $S/weight_types_mrpc/${p#*:}; done
OMP_NUM_THREADS=1 python run.py -m experiment=table2_cpu method=lora task=mrpc seed=0,1,2 \\
    'method.targets=[wq],[wk],[wv],[wo],[wq,wk],[wq,wv],[wq,wk,wv,wo]' "rank='\\${budget_rank:\\${method.targets},8}'" \\
    hydra.sweep.dir=docs/generated/sweeps/weight_types_mrpc
OMP_NUM_THREADS=1 python run.py -m experiment=weight_types_sst2 hydra.sweep.dir=docs/generated/sweeps/weight_types_sst2
```"""

TABLE3_COMMANDS = """```bash
OMP_NUM_THREADS=1 python run.py -m experiment=table3_cpu hydra.sweep.dir=docs/generated/sweeps/table3_cpu
# beam 10 for LoRA and FT: the same training again (the sweep keeps no FT weights, 270 MB), then
# beam search and greedy decoding of the same weights (beam's gain without another training);
# the test loss only at the end (the sweep has the curve; evaluating changes no trained weight);
# a killed run continues with resume=true
for M in lora full_ft; do
  OMP_NUM_THREADS=1 python run.py experiment=table3_cpu method=$M task.decoding.greedy=false \\
      task.decoding.also_greedy=true trainer.eval_every=1000 hydra.run.dir=docs/generated/sweeps/table3_cpu_beam/$M
done
# (with the sweep's weights at hand, beam search alone from them: trainer.max_steps=0
#  init_from=docs/generated/sweeps/table3_cpu/<job> init_checkpoint=final task.decoding.greedy=false)
# greedy decoding under the training autocast (bf16 on a bf16 CPU) instead of fp32, LoRA
OMP_NUM_THREADS=1 python run.py experiment=table3_cpu method=lora trainer.max_steps=0 \\
    init_from=docs/generated/sweeps/table3_cpu/0 init_checkpoint=final task.decoding.precision=train \\
    hydra.run.dir=docs/generated/sweeps/table3_cpu_decode_train/lora
```"""
RERUNS_COMMANDS = """```bash
# Table 2's LoRA on MRPC, seed 0, as one run instead of a sweep job, into a folder of its own
OMP_NUM_THREADS=1 python run.py experiment=table2_cpu method=lora task=mrpc seed=0 \\
    hydra.run.dir=docs/generated/sweeps/reruns/table2_cpu_lora_mrpc_s0
# the same command on a CPU with native bf16, where trainer.precision=auto trains in bf16 as the
# table's run did: into a folder of its own
OMP_NUM_THREADS=1 python run.py experiment=table2_cpu method=lora task=mrpc seed=0 \\
    hydra.run.dir=docs/generated/sweeps/reruns/table2_cpu_lora_mrpc_s0_bf16
```"""
SECTION7_COMMANDS = """```bash
# a rank sweep above, with its r=8 and r=64 adapters (the converged MRPC one: rank_mrpc), then
python -m analysis report {folder} --out docs/results/section7
```"""

# The spectrum experiments: the report on each one's folders with the Table 2 / Table 3 folders
# whose runs they reuse (r = 8 or 4, and FT: the same configs), with the usual r that FT's
# effective rank is measured against and the high rank.
SPECTRUM_EXPERIMENTS = {
    "spectrum_sst2": ((8, 64), ["spectrum_sst2", "table2_cpu_a", "table2_cpu_b"]),
    "spectrum_e2e": ((4, 64), ["spectrum_e2e", "spectrum_e2e_ft", "table3_cpu"]),
}
SPECTRUM_COMMANDS = """```bash
S=docs/generated/sweeps
# LoRA r = 1, 4, 16, 64 x 3 seeds on SST-2; r = 8 and FT are Table 2's runs (same configs)
OMP_NUM_THREADS=1 python run.py -m experiment=spectrum_sst2 hydra.sweep.dir=$S/spectrum_sst2
# FT on SST-2 is Table 2's (table2_cpu_b jobs 36-38: trained ahead of that sweep into a folder of
# their own, with the same configs, then moved there, so the sweep skips them)
# LoRA r = 64 on E2E, seed 0; r = 4 and FT are Table 3's runs
OMP_NUM_THREADS=1 python run.py -m experiment=spectrum_e2e rank=64 hydra.sweep.dir=$S/spectrum_e2e
python -m analysis report $S/spectrum_sst2 $S/table2_cpu_a $S/table2_cpu_b --out docs/results/spectrum_sst2
python -m analysis report $S/spectrum_e2e $S/table3_cpu --ranks 4,64 --out docs/results/spectrum_e2e
```"""


def _folders(outputs: list[Path], prefix: str) -> list[Path]:
    return sorted(p for root in outputs for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def grid_section(outputs: list[Path], out: Path) -> list[str]:
    lines = ['<a id="lr-grid"></a>', "", "## Learning rates: the held-out grid", ""]
    folders = _folders(outputs, "lr_grid_cpu")
    if not folders:
        return lines + ["Not run yet. Commands:", "", GRID_COMMANDS, ""]
    text = write_grid(folders, out / "lr_grid")
    body = text.split("\n", 2)[2]  # below its own title
    return lines + [body, "", "Curves: " + ", ".join(
        f"![{p.stem}]({out.name}/lr_grid/{p.name})" for p in sorted((out / "lr_grid").glob("curves_*.png"))),
        "", "Commands:", "", GRID_COMMANDS, ""]


# Each section returns its lines and its claims' verdicts (:mod:`analysis.claims`).
Section = tuple[list[str], dict[int, pd.DataFrame]]


def table2_section(outputs: list[Path], out: Path) -> Section:
    lines = ['<a id="table2"></a>', "", "## Table 2 at CPU scale (MiniLM-L6, five GLUE tasks)", ""]
    folders = _folders(outputs, "table2_cpu")
    df = collect(folders) if folders else pd.DataFrame()
    rows = table2.main_rows(df) if len(df) else df
    if not len(rows):
        return lines + ["Not run yet. Commands:", "", TABLE2_COMMANDS, ""], {}
    st = table2.stats(rows)
    st.to_csv(out / "table2_cpu.csv", index=False)
    curve = curves(folders)
    curve = curve.assign(row=[kind_label(m, r) for m, r in zip(curve["method"], curve["rank"])])
    key_of_task = {t: curve[curve["task"] == t]["main"].iloc[0] for t in table2.TASKS if t in set(curve["task"])}
    plot_curves(curve, key_of_task, out / "table2_curves.png", hue="row")
    levels = table2.chance_levels(rows)
    v = table2.verdicts(st, levels)
    v.to_csv(out / "table2_verdicts.csv", index=False)
    mixed = table2.mixed_precision(st)
    mixed_line = [f"- **Rows trained at different precisions** (their difference is the methods' "
                  f"and the precision's together; [runs made twice](#reruns)): {mixed}."] if mixed else []
    chance_line = ", ".join(f"{t} {100 * lv:.1f} ± {100 * band:.1f}" for t, (lv, band) in
                            sorted(levels.items(), key=lambda kv: table2.TASKS.index(kv[0])))
    return lines + [
        "Median [min–max] over seeds, ×100, (n) runs; ↑k: k runs whose selected evaluation was "
        "their last (still improving: a lower bound, not converged). trainable excludes the head.",
        f"Runs per training precision (`trainer.precision=auto`; [Compute](#compute)): "
        f"{trained_on(rows['run_dir'].unique())}.", "",
        "**Paper protocol** (best dev evaluation):", "", table2.markdown(st, "paper"), "",
        "**Held-out protocol** (dev at the evaluation best on the 500-row held-out slice):", "",
        table2.markdown(st, "heldout"), "",
        "The paper's figures for the rows these stand in for (RoBERTa-base/large, docs/paper.md#table2):", "",
        table2.paper_rows(), "",
        f"Chance level per task (what a constant prediction scores on dev, ± two standard errors; "
        f"analysis/chance.py): {chance_line}. A comparison of two rows both within it is not "
        "testable.", "", "Verdicts (seed spread; analysis/table2.py):", "",
        *table2.verdict_lines(v), *mixed_line, "", "Learning curves (dev main metric per epoch, median over seeds, "
        f"seed range shaded): ![curves]({out.name}/table2_curves.png)", "", "Commands:", "",
        TABLE2_COMMANDS, ""], claims.from_table2(v)


def longer_section(outputs: list[Path], out: Path) -> list[str]:
    lines = ['<a id="longer"></a>', "", "## Longer budgets: how much of a gap is the budget's", ""]
    folders = _folders(outputs, "longer_")
    if not folders:
        return lines + ["Not run. Commands:", "", LONGER_COMMANDS, ""]
    longer_rows = table2.main_rows(collect(folders))
    if not len(longer_rows):
        return lines + ["No run finished yet. Commands:", "", LONGER_COMMANDS, ""]
    t2 = _folders(outputs, "table2_cpu")
    st = longer.stats(table2.main_rows(collect(t2)) if t2 else longer_rows.iloc[:0], longer_rows)
    st.to_csv(out / "longer.csv", index=False)
    return lines + [
        "Some Table 2 rows trained again with more epochs, everything else as Table 2's runs, "
        "beside Table 2's runs of the same row (and FT's on the task): median [min–max] over seeds, "
        "×100, (n) runs, ↑k as above. Runs per training precision: "
        f"{trained_on(longer_rows['run_dir'].unique())}.", "", longer.markdown(st), "",
        "Claim 1 again, each row at the longest budget it has (seed spread, as Table 2; these "
        "verdicts do not enter the claims at a glance, which are Table 2's):", "",
        *longer.verdict_lines(longer.verdicts(st, table2.chance_levels(longer_rows))), "",
        "Commands:", "", LONGER_COMMANDS, ""]


def _sweep_section(outputs, out, prefix, title, rows_of, order, verdicts_of, commands,
                   number: int) -> Section:
    lines = [f'<a id="{prefix.rstrip("_")}"></a>', "", f"## {title}", ""]
    folders = _folders(outputs, prefix)
    df = collect(folders) if folders else pd.DataFrame()
    rows = rows_of(df) if len(df) else df
    if not len(rows):
        return lines + ["Not run yet. Commands:", "", commands, ""], {}
    st = table2.stats(rows)
    st.to_csv(out / f"{prefix.rstrip('_')}.csv", index=False)
    ok = df[df["status"] == "ok"]["run_dir"].unique()
    lines += ["Median [min–max] over seeds, ×100, (n) runs; ↑k as above. Runs per training "
              f"precision: {trained_on(ok)}.", ""]
    for protocol in table2.PROTOCOLS:
        lines += [f"**{protocol} selection:**", "", table2.markdown(st, protocol, order), ""]
    v = verdicts_of(st)
    return lines + ["Verdicts:", "", *tables56.verdict_lines(v), "", "Commands:", "",
                    commands, ""], claims.from_sweep(v, number)


def table3_section(outputs: list[Path], out: Path) -> Section:
    lines = ['<a id="table3"></a>', "", "## Table 3 at CPU scale (SmolLM2-135M, E2E test)", ""]
    folders = _folders(outputs, "table3_cpu")
    df = collect(folders) if folders else pd.DataFrame()
    table = table3.means(df) if len(df) else pd.DataFrame()
    if not len(table):
        return lines + ["Not run yet. Commands:", "", TABLE3_COMMANDS, ""], {}
    table.to_csv(out / "table3_cpu.csv", index=False)
    paired = table3.paired_lora_ft(df)
    return lines + ["Mean over seeds (n runs) on the whole test set, every input against all its "
                    "references; NIST is nltk's (`nist_nltk`, about 1.1 below the paper's mteval "
                    "NIST on multi-reference data). Runs per training precision: "
                    f"{trained_on(df[df['status'] == 'ok']['run_dir'].unique())}.", "",
                    table3.markdown(table), "",
                    "The paper's GPT-2 M rows (docs/paper.md#table3):", "", table3.paper_rows(), "",
                    "Verdicts, against the order of the paper's rows above (LoRA ≥ FT within "
                    "noise: a paired bootstrap over the test inputs, one seed, "
                    "`analysis/bootstrap.py`; the others: BLEU in the paper's order). The paper "
                    "has PreLayer above AdapterL at GPT-2 M and L, so AdapterL > PreLayer is not "
                    "tested:", "", *table3.verdict_lines(table, paired, table3.beam_gain(df)), "",
                    "Commands:", "", TABLE3_COMMANDS, ""], claims.from_table3(table3.ordering(table, paired))


# Methods whose runs' weights the §7 and spectrum reports read.
WEIGHT_METHODS = ("lora", "full_ft", "ft_top2")


def weights_missing(folders: list[Path], recorded: bool = True) -> list[Path]:
    """The finished runs under ``folders`` whose saved weights the reports would read but that
    this checkout lacks: weights are not committed (only small adapters, on purpose), so a fresh
    clone has the runs' records without them. ``recorded``: a run whose spectrum and forgetting
    are recorded beside it (:mod:`analysis.measured`) needs no weights for them."""
    missing = []
    for summary in sorted(s for f in folders for s in f.glob("*/summary.json")):
        run = json.loads(summary.read_text())
        saved = ((run.get("config") or {}).get("trainer") or {}).get("save_trained", True)
        if (run.get("status") == "ok" and run.get("method") in WEIGHT_METHODS and saved
                and not (summary.parent / WEIGHTS).is_file()
                and not (recorded and measured.has(summary.parent, RECORDED))):
            missing.append(summary.parent)
    return missing


# The measurements the spectrum reports read, with the parameters the page uses.
RECORDED = {"spectrum": spectrum.params(), "forgetting": forgetting.params()}


def section7_pair(folders: list[Path], ranks: tuple[int, int]) -> tuple[Path, ...] | None:
    """The runs a report on ``folders`` would compare in §7, or None: no such pair there."""
    try:
        return pick_runs(collect(folders), *ranks)
    except (RunError, FileNotFoundError):
        return None


def section7_weights_missing(folders: list[Path], ranks: tuple[int, int]) -> list[Path]:
    """The §7 pair's runs (whose A and B are read, never recorded) that lack their saved weights
    here; none when there is no such pair."""
    return [run for run in section7_pair(folders, ranks) or () if not (run / WEIGHTS).is_file()]


def kept_report(report: Path, missing: list[Path], folder: Path) -> str | None:
    """The line that keeps the report an earlier generation of the page wrote, when this checkout
    lacks weights it would be rebuilt from (None: there is none to keep, or it was made from
    another sweep, as when §7 moves on to a sweep whose r=64 adapters were trained elsewhere)."""
    if not report.is_file():
        return None
    if f"python -m analysis report {folder} " not in report.read_text():
        return None
    return (f"kept from the page's last generation: {len(missing)} of its runs' weights are not in "
            f"this checkout (e.g. `{missing[0]}`), so it was not rebuilt")


def section7(outputs: list[Path], out: Path, ranks: tuple[int, int]) -> Section:
    lines = ['<a id="section7"></a>', "", "## §7 on a rank sweep (r=8 against r=64)", ""]
    for folder in _folders(outputs, "rank_"):
        if section7_pair([folder], ranks) is None:
            continue  # no r=8 / r=64 pair yet; nothing of an earlier report is touched
        missing = section7_weights_missing([folder], ranks)
        kept = kept_report(out / "section7" / "report.md", missing, folder) if missing else None
        if missing and not kept:
            continue  # its adapters are elsewhere; a build would only overwrite another's tables
        if not kept:
            try:
                build_report([str(folder)], out / "section7", *ranks)
            except (RunError, FileNotFoundError):
                continue  # no r=8 / r=64 pair with adapters here
        return lines + [f"From `{folder}`: [{out.name}/section7/report.md]({out.name}/section7/report.md) "
                        f"({kept or 'φ, Table 7 and the claims checked'}). These read each run's final A and B: the selection "
                        "protocol does not enter, so the verdicts are the same under both. Whether "
                        "these runs converged: the ↑ marks of their Table 6 cells above (the first "
                        "rank sweep with the adapters is used, the converged MRPC one when it has them).", "",
                        "Commands:", "", SECTION7_COMMANDS.format(folder=folder), ""], \
            claims.from_section7(out / "section7" / SECTION7_CLAIMS)
    return lines + [f"Not run yet (no rank sweep with r={ranks[0]} and r={ranks[1]} adapters). Commands:", "",
                    SECTION7_COMMANDS.format(folder="docs/generated/sweeps/rank_mrpc"), ""], {}


def spectrum_section(outputs: list[Path], out: Path) -> list[str]:
    """LoRA against FT beyond §7 (intruders, effective rank, forgetting): ``report`` on each
    spectrum experiment's folders (``spectrum_sst2*``, ``spectrum_e2e*``) found."""
    lines = ['<a id="beyond7"></a>', "", "## Beyond §7: intruder dimensions, effective rank, forgetting", ""]
    found = []
    for name, (ranks, names) in SPECTRUM_EXPERIMENTS.items():
        if not _folders(outputs, name):
            continue
        folders = [root / n for root in outputs for n in names if (root / n).is_dir()]
        link = f"[{out.name}/{name}/report.md]({out.name}/{name}/report.md)"
        missing = weights_missing(folders) + section7_weights_missing(folders, ranks)
        kept = kept_report(out / name / "report.md", missing, folders[0]) if missing else None
        if kept:
            found.append(f"{link} ({kept})")
            continue
        try:
            build_report([str(f) for f in folders], out / name, *ranks)
        except RunError as e:
            lines += [f"`{name}`: not testable yet ({e}).", ""]
            continue
        found.append(f"{link} (from {', '.join(f'`{f}`' for f in folders)})")
    if not found:
        return lines + ["Not run yet. Commands:", "", SPECTRUM_COMMANDS, ""]
    return lines + [f"Reports, each with its verdicts: {'; '.join(found)}. Spectra read each "
                    "run's final weights (no selection enters); forgetting and the task metric "
                    "beside it read the parameters of the evaluation the run reports (held-out "
                    "selection for the Table 2 runs, the last step for Table 3's).", "",
                    "Commands:", "", SPECTRUM_COMMANDS, ""]


def trained_on(run_dirs) -> str:
    """Runs per training precision and machine."""
    counts: dict[str, int] = {}
    for run_dir in run_dirs:
        label = trained_label(summary_of(run_dir))
        counts[label] = counts.get(label, 0) + 1
    return "; ".join(f"{label}: {n}" for label, n in sorted(counts.items()))


def compute_section(outputs: list[Path]) -> list[str]:
    """What the kept sweeps cost: per folder, the runs and the sum of their recorded wall times."""
    lines = ['<a id="compute"></a>', "", "## Compute", ""]
    rows, counted = [], set()
    for folder in sorted(p for root in outputs for p in root.iterdir() if p.is_dir()):
        try:
            runs = collect([folder]).drop_duplicates("run_dir")
        except (RunError, FileNotFoundError):
            continue  # not a sweep folder
        ok = runs[runs["status"] == "ok"]
        ids = ok["run_dir"].map(run_identity)
        copy = ids.isin(counted)
        counted.update(ids)
        rows.append({"folder": folder.name, "runs ok": len(ok), "other": len(runs) - len(ok),
                     "copies": int(copy.sum()), "job-hours": ok.loc[~copy, "wall_s"].fillna(0).sum() / 3600,
                     "trained on": trained_on(ok["run_dir"])})
    if not rows:
        return lines + ["No runs yet.", ""]
    table = pd.DataFrame(rows)
    total = table["job-hours"].sum()
    return lines + [
        "Wall time each finished run recorded (`wall_s`: one job on one thread, two jobs side by "
        "side on the 2-core machine; a resumed run counts its earlier invocations up to the "
        "checkpoint it resumed from, not the work lost after that checkpoint, and one resumed "
        "before runs recorded this (no `wall_s_before_resume`) its last invocation only: a lower "
        "bound), summed per sweep folder; a run copied into a second sweep whose job has "
        "the same resolved config (copies) counts once, in the first folder; with the runs per "
        "training precision (`auto` "
        "takes bf16 on a CPU with native bf16, fp32 on one without, whose steps are slower):", "",
        table.to_markdown(index=False, floatfmt=".1f"), "",
        f"Total: {total:.1f} job-hours, about {total / 2:.1f} machine-hours at two jobs at a time.", ""]


def write_page(outputs: list[str | Path], out: Path, ranks: tuple[int, int] = (8, 64)) -> Path:
    """Write the page ``out.md`` and its files in ``out/``; ``ranks``: the two LoRA ranks §7
    compares (the paper's 8 and 64)."""
    outputs = [Path(o) for o in outputs]
    for o in outputs:
        if not o.is_dir():
            raise RunError(f"{o}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        table2_section(outputs, out), (longer_section(outputs, out), {}),
        (grid_section(outputs, out), {}),
        _sweep_section(outputs, out, "rank_", "Table 6 at CPU scale: which rank", tables56.rank_rows,
                       tables56.by_rank, tables56.rank_verdicts, RANKS_COMMANDS, 3),
        _sweep_section(outputs, out, "weight_types_", "Table 5 at CPU scale: which weight types",
                       tables56.types_rows, tables56.by_types, tables56.types_verdicts, TYPES_COMMANDS, 4),
        section7(outputs, out, ranks), (spectrum_section(outputs, out), {}),
        table3_section(outputs, out), (reruns.section(outputs, RERUNS_COMMANDS), {}),
        (compute_section(outputs), {})]
    found = {n: cells for _, verdicts in sections for n, cells in verdicts.items()}
    lines = ["# Results: the paper's claims re-measured at CPU scale", "",
             f"Written by `python -m analysis paper {' '.join(map(str, outputs))} --out {out}` at "
             f"commit {commit()}. Every figure below is read from the run directories under those "
             "folders; the paper's figures from docs/paper.md.", "",
             '<a id="claims"></a>', "", "## The claims at a glance", "",
             "Each claim's verdict over the comparisons its section makes (a task, a task against "
             "one baseline, a decoding), under the paper's selection protocol (best dev evaluation) "
             "and under held-out selection; each section has the figures, and `analysis/claims.py` "
             "the rule.", "", *claims.summary(found), "",
             *(line for section_lines, _ in sections for line in section_lines)]
    page = out.with_suffix(".md")
    page.write_text("\n".join(lines))
    return page
