"""``python benchmarks/main_job.py``: the README's main job (``python run.py``: LoRA r=8 on SST-2
with the embedded MiniLM, one epoch) at the current defaults and at the fp32 eager reference
(``trainer.precision=fp32 trainer.compile=false``), per seed, one after the other.

Prints and writes (``--out``: ``main_job.json``, ``main_job.md``) each run's wall time (process
start to exit, tokenisation cache warm: the first run of the list fills it) and dev accuracy
(best and final evaluation), then ``main_job_speedup``: the median over seeds of defaults ÷
reference wall time, and the largest dev-accuracy difference.

    python benchmarks/main_job.py --seeds 0 1 2 --out docs/generated/main_job
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = ("trainer.precision=fp32", "trainer.compile=false")


def one_run(data_dir: str, seed: int, overrides: tuple[str, ...], run_dir: Path) -> dict:
    cmd = [sys.executable, "run.py", f"data_dir={data_dir}", f"seed={seed}", *overrides,
           "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    t = time.time()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.time() - t
    summary = json.loads((run_dir / "summary.json").read_text())
    dev = summary["metrics"]["dev"]
    return {"seed": seed, "overrides": list(overrides), "wall_s": wall,
            "precision": summary["precision"], "best": dev["best"]["accuracy"],
            "final": dev["final"]["accuracy"]}


def table(runs: list[dict], speedup: float, gap: float) -> str:
    lines = ["| seed | settings | precision | wall (s) | dev best | dev final |",
             "|---:|---|---|---:|---:|---:|"]
    for r in runs:
        settings = " ".join(r["overrides"]) or "defaults"
        lines.append(f"| {r['seed']} | {settings} | {r['precision']} | {r['wall_s']:.0f} | "
                     f"{100 * r['best']:.2f} | {100 * r['final']:.2f} |")
    lines += ["", f"main_job_speedup (median over seeds of defaults ÷ reference wall time): "
                  f"{speedup:.3f}; largest dev-accuracy difference (best or final, same seed): "
                  f"{100 * gap:.2f} points."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default="outputs/main_job")
    args = ap.parse_args(argv)
    if not (Path(args.data_dir) / "sst2" / "train.tsv").is_file():
        print(f"error: --data-dir={args.data_dir} is invalid: no sst2/train.tsv there; valid: a "
              "folder laid out like ../shared/data", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, ratios, gaps = [], [], []
    for seed in args.seeds:
        pair = []
        for name, overrides in (("defaults", ()), ("reference", REFERENCE)):
            pair.append(one_run(args.data_dir, seed, overrides, out / "runs" / f"{name}_seed{seed}"))
            print(json.dumps(pair[-1]), flush=True)
        runs += pair
        ratios.append(pair[0]["wall_s"] / pair[1]["wall_s"])
        gaps.append(max(abs(pair[0][k] - pair[1][k]) for k in ("best", "final")))
    result = {"runs": runs, "main_job_speedup": statistics.median(ratios),
              "max_accuracy_gap": max(gaps)}
    (out / "main_job.json").write_text(json.dumps(result, indent=2))
    md = table(runs, result["main_job_speedup"], result["max_accuracy_gap"])
    (out / "main_job.md").write_text(md)
    print(md)
    print(json.dumps({"main_job_speedup": round(result["main_job_speedup"], 4),
                      "max_accuracy_gap": round(result["max_accuracy_gap"], 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
