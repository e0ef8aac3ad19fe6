"""``python benchmarks/main_job.py``: the README's main job (``python run.py``: LoRA r=8 on SST-2
with the embedded MiniLM, one epoch) at the current defaults and at the fp32 eager reference
(``trainer.precision=fp32 trainer.compile=false``), per seed, one after the other.

Prints and writes (``--out``: ``main_job.json``, ``main_job.md``) each run's wall time (process
start to exit, tokenisation included: every run starts with an empty cache of its own, as a
first run does and as the Trainer's job, which tokenises in each run, always does) and dev
accuracy (best and final evaluation), then ``main_job_speedup``: the median over seeds of
defaults ÷ reference wall time, and the largest dev-accuracy difference. Each seed runs the
reference, then the defaults, then the Trainer: the defaults run sits next to both runs it is
divided by, so the machine's drift (~20 % within an hour on the shared dev VM) biases neither
ratio much.

With ``--vs-hf-best``, each seed's defaults run is also timed against transformers' ``Trainer`` +
peft at its best here (``benchmarks/hf_trainer_peft.py``: dynamic padding, length grouping, and
bf16 when the defaults run used bf16) on the same job, read from that run: its steps, batch,
learning rate, maximum length, evaluation every ``trainer.eval_every`` steps and seed. That gives
``e2e_vs_hf_best``: the median over seeds of run.py's wall time ÷ the Trainer's.

    python benchmarks/main_job.py --seeds 0 1 2 --out docs/generated/main_job
    python benchmarks/main_job.py --seeds 0 --no-reference --vs-hf-best --out docs/generated/main_job_vs_hf
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
REFERENCE = ("trainer.precision=fp32", "trainer.compile=false")


def timed_cold(cmd: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of ``cmd``, offline, with empty caches of its own (lora-exp's and
    datasets'): the job tokenises its data, as a first run does."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "WANDB_MODE": "disabled", "LORA_EXP_CACHE": cache, "HF_DATASETS_CACHE": cache}
        t = time.time()
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=env)
        return time.time() - t, proc.stdout


def one_run(data_dir: str, seed: int, overrides: tuple[str, ...], run_dir: Path) -> dict:
    wall, _ = timed_cold([sys.executable, "run.py", f"data_dir={data_dir}", f"seed={seed}",
                          *overrides, "trainer.progress=false", f"hydra.run.dir={run_dir}"])
    summary = json.loads((run_dir / "summary.json").read_text())
    dev = summary["metrics"]["dev"]
    return {"seed": seed, "overrides": list(overrides), "wall_s": wall,
            "precision": summary["precision"], "best": dev["best"]["accuracy"],
            "final": dev["final"]["accuracy"], "steps": summary["steps"],
            "evaluations": summary["evaluations"]}


def eval_every_error(data_dir: str, overrides: tuple[str, ...]) -> str | None:
    """Why ``--vs-hf-best`` cannot time this job, or None: the Trainer's ``eval_steps`` is a
    number of steps, so run.py's resolved ``trainer.eval_every`` must be one. Read with Hydra's
    ``--cfg job`` (nothing runs), before any timed run."""
    cmd = [sys.executable, "run.py", f"data_dir={data_dir}", *overrides, "--cfg", "job",
           "--resolve", "--package", "trainer"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "run.py failed"
    value = yaml.safe_load(proc.stdout)["eval_every"]
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return (f"trainer.eval_every={value!r} is invalid with --vs-hf-best; valid: a number of steps "
            "(the Trainer's eval_steps), e.g. --override trainer.eval_every=500")


def hf_best_run(data_dir: str, ours: dict, run_dir: Path, out: Path) -> dict:
    """The Trainer + peft job at its best, on the job that ``ours`` (a run.py run) ran."""
    summary = json.loads((run_dir / "summary.json").read_text())
    trainer = summary["config"]["trainer"]
    cmd = [sys.executable, "benchmarks/hf_trainer_peft.py", "--data-dir", data_dir,
           "--steps", str(summary["steps"]), "--batch-size", str(trainer["batch_size"]),
           "--lr", str(trainer["lr"]), "--max-length", str(trainer["max_length"]),
           "--eval-steps", str(trainer["eval_every"]), "--seed", str(ours["seed"]),
           "--padding", "dynamic", *(["--bf16"] if ours["precision"] == "bf16" else []),
           "--out", str(out)]
    wall, stdout = timed_cold(cmd)
    res = json.loads(stdout.strip().splitlines()[-1])
    return {"seed": ours["seed"], "overrides": ["Trainer + peft at its best"], "wall_s": wall,
            "precision": "bf16" if res["bf16"] else "fp32", "best": res["dev_accuracy_best"],
            "final": res["dev_accuracy"], "steps": res["steps"], "evaluations": res["evaluations"]}


def table(result: dict) -> str:
    """``main_job.md``: every run, then each ratio with its per-seed values (on a shared machine
    their spread is the ratio's noise)."""
    lines = ["| seed | settings | precision | wall (s) | dev best | dev final |",
             "|---:|---|---|---:|---:|---:|"]
    for r in result["runs"]:
        settings = " ".join(r["overrides"]) or "defaults"
        lines.append(f"| {r['seed']} | {settings} | {r['precision']} | {r['wall_s']:.0f} | "
                     f"{100 * r['best']:.2f} | {100 * r['final']:.2f} |")
    lines.append("")

    def per_seed(key: str) -> str:
        return ", ".join(f"{v:.3f}" for v in result[f"{key}_per_seed"])

    if result["main_job_speedup"] is not None:
        lines.append(f"main_job_speedup (median over seeds of defaults ÷ reference wall time): "
                     f"{result['main_job_speedup']:.3f} (per seed: {per_seed('main_job_speedup')}); "
                     f"largest dev-accuracy difference (best or final, same seed): "
                     f"{100 * result['max_accuracy_gap']:.2f} points.")
    if result["e2e_vs_hf_best"] is not None:
        lines.append(f"e2e_vs_hf_best (median over seeds of defaults ÷ Trainer + peft at its best, "
                     f"same job): {result['e2e_vs_hf_best']:.3f} (per seed: "
                     f"{per_seed('e2e_vs_hf_best')}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default="outputs/main_job")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a run.py override added to every run (e.g. a shorter job)")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the fp32 eager reference runs (no main_job_speedup)")
    ap.add_argument("--vs-hf-best", action="store_true",
                    help="also run Trainer + peft at its best on each seed's job (e2e_vs_hf_best)")
    args = ap.parse_args(argv)
    if not (Path(args.data_dir) / "sst2" / "train.tsv").is_file():
        print(f"error: --data-dir={args.data_dir} is invalid: no sst2/train.tsv there; valid: a "
              "folder laid out like ../shared/data", file=sys.stderr)
        return 2
    if args.vs_hf_best and (error := eval_every_error(args.data_dir, tuple(args.override))):
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, ratios, gaps, vs_hf = [], [], [], []
    extra = tuple(args.override)
    variants = ([] if args.no_reference else [("reference", extra + REFERENCE)]) + [("defaults", extra)]
    for seed in args.seeds:
        seed_runs = {}
        for name, overrides in variants:
            seed_runs[name] = one_run(args.data_dir, seed, overrides,
                                      out / "runs" / f"{name}_seed{seed}")
            print(json.dumps(seed_runs[name]), flush=True)
        ours = seed_runs["defaults"]
        if args.vs_hf_best:
            seed_runs["hf_best"] = hf = hf_best_run(args.data_dir, ours,
                                                    out / "runs" / f"defaults_seed{seed}",
                                                    out / "runs" / f"hf_best_seed{seed}")
            print(json.dumps(hf), flush=True)
            vs_hf.append(ours["wall_s"] / hf["wall_s"])
        if not args.no_reference:
            ref = seed_runs["reference"]
            ratios.append(ours["wall_s"] / ref["wall_s"])
            gaps.append(max(abs(ours[k] - ref[k]) for k in ("best", "final")))
        runs += seed_runs.values()
    result = {"runs": runs,
              "main_job_speedup": statistics.median(ratios) if ratios else None,
              "main_job_speedup_per_seed": ratios,
              "max_accuracy_gap": max(gaps) if gaps else None,
              "e2e_vs_hf_best": statistics.median(vs_hf) if vs_hf else None,
              "e2e_vs_hf_best_per_seed": vs_hf}
    (out / "main_job.json").write_text(json.dumps(result, indent=2))
    md = table(result)
    (out / "main_job.md").write_text(md)
    print(md)
    print(json.dumps({k: round(v, 4) for k, v in result.items() if isinstance(v, float)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
