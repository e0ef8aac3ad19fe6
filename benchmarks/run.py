"""``python benchmarks/run.py``: the paper's efficiency claims (docs/paper.md#efficiency), measured
side by side in one run on this machine (CPU by default, CUDA when present).

Prints a table, then one JSON line of named ratios, and writes both to ``--out``
(``benchmark.json``, ``benchmark.md``):

* ``lora_ft_step``: LoRA (q, v, r=8) train step ÷ full fine-tuning step (same model, batch, length);
* ``lora_peft_step``: lora-exp's LoRA step ÷ peft's LoRA step;
* ``lora_ft_flops``: LoRA's ÷ full fine-tuning's matrix-product FLOPs per step, the compute limit
  of ``lora_ft_step``; ``*_stock_dropout``: the step ratios with ``trainer.fast_dropout=false``
  (the model's dropout as HF runs it), which separate the dropout kernel's share from LoRA's;
  ``lora_ft_step_no_dropout``: both without dropout, a reference for what dropout costs;
* ``<step ratio>_32x14``: ``lora_ft_step``, ``lora_peft_step`` and ``bf16_fp32_step`` again at
  the README main job's batch of 32 at its mean padded length (14 tokens): the per-step part of
  that job's ``e2e_vs_hf_best``;
* ``lora_ft_mem`` / ``lora_ckpt_ft_mem``: memory training adds above the loaded model, LoRA (and
  LoRA with gradient checkpointing) ÷ full fine-tuning, as peak RSS; ``*_tensor_mem``: the same
  from the peak of live tensor bytes (the profiler's memory events), without what glibc's
  allocator keeps mapped;
* ``keep_freed_step`` / ``keep_freed_mem``: LoRA's train step and training memory with
  ``trainer.keep_freed_memory`` (the default, which every other figure here runs with) ÷ with
  glibc's allocator defaults, in fresh processes;
* ``merged_base_latency_<shape>``: forward latency of the merged LoRA model ÷ the base model's, at
  Table 1's shapes scaled to CPU (1×128, 16×256); also unmerged LoRA, AdapterH and AdapterL;
* the step, FLOP and memory figures again for ``--second-model`` (default ``mpnet_base``,
  RoBERTa-base's shape), named ``<figure>_<model>`` and held to the same targets;
* ``ckpt_ratio``: LoRA checkpoint bytes ÷ full checkpoint bytes (``mpnet_base``: RoBERTa-base
  shape), next to the trainable fraction;
* ``analysis_s``: seconds of the §7 linear algebra (φ and Table 7) for a 12-layer d=768 model
  at r=64, q and v (target: under 5 s on 2 CPU cores);
* ``e2e_vs_hf``: wall time of a LoRA SST-2 job through ``run.py`` ÷ the same job with
  transformers' Trainer + peft (``benchmarks/hf_trainer_peft.py``, run_glue.py's padding to the
  maximum length), with both dev accuracies; ``e2e_vs_hf_dynamic`` against the Trainer with
  dynamic padding and length grouping; ``e2e_vs_hf_best`` against the Trainer at its best here
  (that plus bf16 where this run measures bf16): the median of ``--e2e-rounds`` paired rounds.

``--quick`` shrinks every measurement (the test suite runs it on a tiny model: it checks the
benchmark works, not its numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks import measure  # noqa: E402
from lora_exp.runtime import (keep_freed_memory, native_bf16, pick_precision,  # noqa: E402
                              precision_name)

TARGETS = {  # the project's speed and memory targets: (comparison, bound)
    "lora_ft_step": ("<=", 0.67), "lora_peft_step": ("<=", 0.95), "lora_ft_mem": ("<=", 0.75),
    "lora_ckpt_ft_mem": ("<=", 0.40), "merged_base_latency_": ("within", 0.02),  # every shape
    "bf16_fp32_step": ("<=", 0.60), "bf16_fp32_step_mpnet_base": ("<=", 0.50),
    "lora_mfu": (">=", 0.35), "main_job_speedup": ("<=", 0.55),
    "e2e_vs_hf": ("<=", 0.80), "e2e_vs_hf_best": ("<=", 0.70),
    "e2e_accuracy_gap": ("<=", 0.01), "e2e_best_accuracy_gap": ("<=", 0.01), "analysis_s": ("<", 5.0),
}


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "native_bf16": native_bf16()}  # what trainer.precision=auto picks on this CPU
    try:
        cpu = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        info["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else platform.processor()
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["ram_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


BATCH, SEQ = 16, 128  # the shape of the train-step and training-memory figures
# The README main job's batch (32 SST-2 rows) at its mean padded length: 446 tokens a batch over
# its 2,105 steps. Short rows weigh per-operation overhead and elementwise work more than 16 × 128.
SHORT_BATCH, SHORT_SEQ = 32, 14
WORKERS = {"memory": measure.train_memory, "steps": measure.fresh_process_steps}


def trainer_keeps_freed() -> bool:
    """``trainer.keep_freed_memory``'s default: the benchmark's processes measure with the
    allocator the trainer would set."""
    return bool(measure.trainer_cfg().keep_freed_memory)


def _worker(args) -> None:
    spec = json.loads(args.worker_args)
    keep = spec.pop("keep_freed") if "keep_freed" in spec else trainer_keeps_freed()
    if keep:
        keep_freed_memory()
    print(json.dumps(WORKERS[args.worker](device=device_of(args.device), **spec)))


def in_subprocess(args, worker: str, **spec) -> dict:
    """``WORKERS[worker](**spec)`` in a fresh process of this script: its JSON result."""
    cmd = [sys.executable, __file__, "--worker", worker, "--device", args.device,
           "--worker-args", json.dumps(spec)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_in_subprocess(args, repeats: int, **spec) -> dict:
    """:func:`measure.train_memory` in fresh processes: RSS figures as the median of ``repeats``
    processes (the C allocator's layout varies a few % per run), live tensors in one more."""
    def one(kind: str) -> dict:
        return in_subprocess(args, "memory", **spec, kind=kind)
    runs = [one("rss") for _ in range(repeats)]
    rss = [r["train_mib"] for r in runs]
    trimmed = [r["trimmed_mib"] for r in runs if r["trimmed_mib"] is not None]
    return {"train_mib": statistics.median(rss), "train_mib_runs": rss,
            "trimmed_mib": statistics.median(trimmed) if trimmed else None,
            "tensor_mib": one("tensors")["tensor_mib"]}


def e2e_jobs(args, out: Path) -> dict:
    """The same LoRA SST-2 job through run.py and through Trainer + peft, each timed end to end
    (process start to exit) with a cold tokenisation cache.

    run.py and the Trainer at its best are timed in ``--e2e-rounds`` paired rounds after one
    untimed run of each (which one goes first alternates; every job gets caches of its own),
    since one timing of a 15-20 s job moves by several seconds on this shared machine; the
    slower run_glue.py-style variants once.
    """
    common = dict(steps=args.e2e_steps, bs=16, lr=1e-3, max_len=128)
    bf16 = args.precision_name == "bf16"

    def timed(cmd: list[str], name: str) -> tuple[float, str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "WANDB_MODE": "disabled", "LORA_EXP_CACHE": str(out / name / "cache"),
               "HF_DATASETS_CACHE": str(out / name / "hf_cache")}
        t = time.time()
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=env)
        return time.time() - t, proc.stdout

    def ours(name: str) -> tuple[float, float]:
        run_dir = out / name / "run"
        wall, _ = timed([sys.executable, "run.py", f"data_dir={args.data_dir}", "model=minilm",
                         "method=lora", "rank=8", "method.alpha=8", "task=sst2",
                         f"trainer.max_steps={common['steps']}", f"trainer.batch_size={common['bs']}",
                         f"trainer.lr={common['lr']}", f"trainer.max_length={common['max_len']}",
                         f"trainer.eval_every={common['steps']}",
                         f"trainer.precision={args.precision}", "trainer.progress=false", "seed=0",
                         f"hydra.run.dir={run_dir}"], name)
        summary = json.loads((run_dir / "summary.json").read_text())
        return wall, summary["metrics"]["dev"]["final"]["accuracy"]

    def trainer(name: str, flags: list[str]) -> tuple[float, float]:
        wall, stdout = timed([sys.executable, "benchmarks/hf_trainer_peft.py", "--data-dir",
                              str(args.data_dir), "--steps", str(common["steps"]), "--batch-size",
                              str(common["bs"]), "--lr", str(common["lr"]), "--max-length",
                              str(common["max_len"]), *flags, "--out", str(out / name / "out")], name)
        return wall, json.loads(stdout.strip().splitlines()[-1])["dev_accuracy"]

    # The Trainer as run_glue.py runs it (padded to 128, fp32), with dynamic padding and length
    # grouping, and at its best here: that plus its bf16 autocast when this run measures bf16.
    best_flags = ["--padding", "dynamic", *(["--bf16"] if bf16 else [])]
    # One untimed run of each first: the stage's first job measured slower than its repeats
    # (run.py 13.8 s, then 11.9 and 11.8 s), so a job's place in the order would bias the ratio.
    ours("warmup_run_py")
    trainer("warmup_hf_best", best_flags)
    rounds = []
    for r in range(args.e2e_rounds):
        jobs = [("run_py", lambda: ours(f"run_py_{r}")),
                ("hf_best", lambda: trainer(f"hf_best_{r}", best_flags))]
        timings = dict((name, job()) for name, job in (jobs if r % 2 == 0 else jobs[::-1]))
        rounds.append({name: {"wall_s": w, "accuracy": a} for name, (w, a) in timings.items()})
    res = {"steps": common["steps"], "batch_size": common["bs"], "hf_best_bf16": bf16,
           "rounds": rounds}
    for name in ("run_py", "hf_best"):
        res[f"{name}_wall_s"] = statistics.median(r[name]["wall_s"] for r in rounds)
        res[f"{name}_accuracy"] = rounds[0][name]["accuracy"]  # the same in every round (seeded)
    variants = {"max_length": ["--padding", "max_length"]}
    if bf16:
        variants["dynamic"] = ["--padding", "dynamic"]
    for name, flags in variants.items():
        res[f"hf_{name}_wall_s"], res[f"hf_{name}_accuracy"] = trainer(f"hf_{name}", flags)
    if not bf16:  # fp32: dynamic padding is the Trainer at its best
        res["hf_dynamic_wall_s"], res["hf_dynamic_accuracy"] = res["hf_best_wall_s"], res["hf_best_accuracy"]
    return res


def e2e_ratios(e2e: dict, noise: dict) -> dict[str, float]:
    """run.py's wall time ÷ each Trainer + peft variant's, and the dev-accuracy gaps;
    ``e2e_vs_hf_best`` is the median of the paired rounds' ratios, their range its noise."""
    per_round = [r["run_py"]["wall_s"] / r["hf_best"]["wall_s"] for r in e2e["rounds"]]
    noise["e2e_vs_hf_best"] = (min(per_round), max(per_round))
    return {"e2e_vs_hf": e2e["run_py_wall_s"] / e2e["hf_max_length_wall_s"],
            "e2e_vs_hf_dynamic": e2e["run_py_wall_s"] / e2e["hf_dynamic_wall_s"],
            "e2e_accuracy_gap": abs(e2e["run_py_accuracy"] - e2e["hf_max_length_accuracy"]),
            "e2e_vs_hf_best": statistics.median(per_round),
            "e2e_best_accuracy_gap": abs(e2e["run_py_accuracy"] - e2e["hf_best_accuracy"])}


STEP_RATIOS = (("lora_ft_step", "lora", "ft"), ("lora_peft_step", "lora", "peft_lora"),
               ("bf16_fp32_step", "lora", "lora_fp32"),
               ("lora_ft_step_stock_dropout", "lora_stock_dropout", "ft_stock_dropout"),
               ("lora_peft_step_stock_dropout", "lora_stock_dropout", "peft_lora"),
               ("lora_ft_step_no_dropout", "lora_no_dropout", "ft_no_dropout"))


def add_step_ratios(steps: dict, suffix: str, ratios: dict, noise: dict) -> None:
    """Every ratio of :data:`STEP_RATIOS` whose two steps were timed, named with ``suffix``."""
    for name, num, den in STEP_RATIOS:
        if num in steps and den in steps:
            r = measure.paired_ratio(steps, num, den)
            ratios[name + suffix], noise[name + suffix] = r["ratio"], (r["q1"], r["q3"])


def step_and_memory(args, model: str, suffix: str, results: dict, ratios: dict, noise: dict,
                    device, main: bool) -> None:
    """Train step (paired rounds), FLOPs and training memory of one model; every figure is
    named with ``suffix`` (empty for the main model). The main model also gets the reference
    steps (stock dropout, no dropout) and its RSS from 3 processes; the second model, slower,
    gets fewer rounds and one process per measure."""
    q, bs, seq = args.quick, BATCH, SEQ
    repeats = args.step_repeats if main else args.second_step_repeats
    steps = measure.step_times(model, bs, seq, device, warmup=1 if q or not main else 2,
                               repeats=2 if q else repeats, references=main,
                               amp_dtype=args.amp_dtype)
    results[f"step_s{suffix}"] = measure.medians(steps)
    add_step_ratios(steps, suffix, ratios, noise)
    flops = results[f"step_flops{suffix}"] = measure.step_flops(model, bs, seq)
    ratios["lora_ft_flops" + suffix] = flops["lora"] / flops["ft"]
    ratios["lora_mfu" + suffix] = (flops["lora"] / results[f"step_s{suffix}"]["lora"]
                                   / results["matmul_peak"]["flops_per_s"])
    processes = 1 if q or not main else 3
    configs = [("ft", "full_ft", False), ("lora", "lora", False)]
    if measure.checkpointing_supported(model):  # else its ratios are reported as not run
        configs.append(("lora_ckpt", "lora", True))
    mem = {name: memory_in_subprocess(args, processes, model=model, method=method, batch_size=bs,
                                      seq_len=seq, steps=2 if q else 3, checkpointing=ckpt,
                                      precision=args.precision_name)
           for name, method, ckpt in configs}
    results[f"train_memory_mib{suffix}"] = mem
    for kind, field in (("mem", "train_mib"), ("tensor_mem", "tensor_mib")):
        ratios[f"lora_ft_{kind}{suffix}"] = mem["lora"][field] / mem["ft"][field]
        ratios[f"lora_ckpt_ft_{kind}{suffix}"] = (mem["lora_ckpt"][field] / mem["ft"][field]
                                                  if "lora_ckpt" in mem else None)


def short_batch_steps(args, model: str, results: dict, ratios: dict, noise: dict, device) -> None:
    """The step ratios again (full FT, LoRA, peft LoRA; fp32 LoRA under bf16) at the main job's
    shape, named ``<figure>_<batch>x<length>``: the per-step part of the main job's
    ``e2e_vs_hf_best``; the 16 × 128 figures overstate lora-exp's lead on short rows. No targets."""
    q = args.quick
    bs, seq = (2, 8) if q else (SHORT_BATCH, SHORT_SEQ)
    steps = measure.step_times(model, bs, seq, device, warmup=1 if q else 3,
                               repeats=2 if q else 3 * args.step_repeats, references=False,
                               amp_dtype=args.amp_dtype)
    results["short_steps"] = {"batch": bs, "seq": seq, "median_s": measure.medians(steps)}
    add_step_ratios(steps, f"_{bs}x{seq}", ratios, noise)


def keep_freed_vs_glibc_defaults(args, model: str, results: dict, ratios: dict,
                                 noise: dict) -> None:
    """``keep_freed_step``: LoRA's train step with ``trainer.keep_freed_memory`` ÷ with glibc's
    allocator defaults, each in fresh processes (the setting holds for a whole process): the
    median of paired rounds, which one goes first alternating. ``keep_freed_mem``: LoRA's peak
    RSS above the loaded model with the setting (the memory figures above) ÷ without it."""
    q = args.quick
    spec = dict(model=model, batch_size=2 if q else BATCH, seq_len=16 if q else SEQ,
                steps=2 if q else 7, precision=args.precision_name)
    rounds = []
    for r in range(1 if q else 3):
        flags = (True, False) if r % 2 == 0 else (False, True)
        rounds.append({flag: in_subprocess(args, "steps", **spec, keep_freed=flag)
                       for flag in flags})
    per_round = [r[True]["step_s"] / r[False]["step_s"] for r in rounds]
    ratios["keep_freed_step"] = statistics.median(per_round)
    noise["keep_freed_step"] = (min(per_round), max(per_round))
    defaults_mib = in_subprocess(args, "memory", model=model, method="lora", batch_size=BATCH,
                                 seq_len=SEQ, steps=2 if q else 3, checkpointing=False,
                                 precision=args.precision_name, kind="rss", keep_freed=False)
    kept_mib = results["train_memory_mib"]["lora"]["train_mib"]
    ratios["keep_freed_mem"] = kept_mib / defaults_mib["train_mib"]
    results["keep_freed"] = {
        "kept": {k: statistics.median(r[True][k] for r in rounds) for k in rounds[0][True]},
        "glibc_defaults": {k: statistics.median(r[False][k] for r in rounds)
                           for k in rounds[0][False]},
        "lora_train_mib_glibc_defaults": defaults_mib["train_mib"]}


def compiled_vs_eager(args, model: str, results: dict, ratios: dict, noise: dict, device) -> None:
    """``compiled_eager_step``: LoRA's train step through ``trainer.compile`` ÷ eager, at the
    benchmark's precision, after compiling (its seconds reported apart)."""
    q = args.quick
    comp = measure.compiled_step_times(model, 2 if q else BATCH, 16 if q else SEQ, device,
                                       warmup=1 if q else 2, repeats=2 if q else args.step_repeats,
                                       amp_dtype=args.amp_dtype)
    results["compiled_step"] = {**measure.medians({k: comp[k] for k in ("eager", "compiled")}),
                                "compile_s": comp["compile_s"][0], "graphs": comp["graphs"][0]}
    r = measure.paired_ratio(comp, "compiled", "eager")
    ratios["compiled_eager_step"], noise["compiled_eager_step"] = r["ratio"], (r["q1"], r["q3"])


def run(args) -> dict:
    device = device_of(args.device)
    q = args.quick
    model = args.model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.amp_dtype = pick_precision(args.precision, device)
    args.precision_name = precision_name(args.amp_dtype)
    # The steps measured in this process run with the allocator the trainer sets.
    kept = trainer_keeps_freed() and keep_freed_memory()
    results: dict = {"machine": {**machine(), "kept_freed_memory": kept}, "device": str(device),
                     "model": model, "second_model": args.second_model,
                     "precision": args.precision_name}
    ratios: dict[str, float | None] = {}
    noise = results["noise"] = {}  # interquartile range of the per-round ratios
    t0 = time.time()
    # The machine's own peak, in the dtype of the measured steps' products (fp32 or bf16).
    results["matmul_peak"] = measure.matmul_peak(args.amp_dtype or torch.float32, device,
                                                 n=256 if q else 2048)

    print(f"[1/8] {model}: train step (batch {BATCH} × {SEQ}; full FT, LoRA, peft LoRA, references), "
          f"FLOPs, training memory (fresh processes); the steps at the main job's {SHORT_BATCH} × "
          f"{SHORT_SEQ}; LoRA's step and memory with glibc's allocator "
          "defaults (fresh processes)", flush=True)
    step_and_memory(args, model, "", results, ratios, noise, device, main=True)
    short_batch_steps(args, model, results, ratios, noise, device)
    keep_freed_vs_glibc_defaults(args, model, results, ratios, noise)
    if args.second_model != "none":
        print(f"[2/8] {args.second_model}: train step, FLOPs, training memory", flush=True)
        step_and_memory(args, args.second_model, f"_{args.second_model}", results, ratios, noise,
                        device, main=False)

    print(f"[3/8] {model}: LoRA step compiled (trainer.compile) vs eager, at "
          f"{args.precision_name}", flush=True)
    compiled_vs_eager(args, model, results, ratios, noise, device)

    print("[4/8] inference latency: base, merged and unmerged LoRA, AdapterH, AdapterL", flush=True)
    shapes = ([(1, 128, 4 * args.latency_repeats), (16, 256, args.latency_repeats)] if not q
              else [(1, 16, 3), (2, 32, 3)])  # the cheap shape gets more rounds
    lat = measure.latencies(model, shapes, device, warmup=2 if q else 3)
    results["latency_s"] = {shape: measure.medians(t) for shape, t in lat.items()}
    for shape, t in lat.items():
        for key in ("base_copy", "lora_merged", "lora_unmerged", "adapter_h", "adapter_l"):
            name = {"lora_merged": "merged", "lora_unmerged": "unmerged",
                    "base_copy": "control"}.get(key, key)
            r = measure.paired_ratio(t, key, "base")
            ratios[f"{name}_base_latency_{shape}"] = r["ratio"]
            noise[f"{name}_base_latency_{shape}"] = (r["q1"], r["q3"])

    print(f"[5/8] checkpoint sizes ({args.ckpt_model})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ck = measure.checkpoint_bytes(args.ckpt_model, Path(tmp))
    results["checkpoint"] = ck
    ratios["ckpt_ratio"] = ck["lora_bytes"] / ck["full_bytes"]
    ratios["trainable_fraction"] = ck["trainable"] / ck["total"]

    print("[6/8] §7 linear algebra: φ and Table 7 for 12 layers × 2 types, d=768, r=64", flush=True)
    an = measure.analysis_seconds(**({"layers": 2, "d": 64, "r": 8} if q else {}))
    results["analysis"] = an
    ratios["analysis_s"] = an["total_s"]  # seconds, not a ratio: the target is "< 5 s on 2 cores"

    if args.skip_e2e:
        ratios["e2e_vs_hf"] = None
    else:
        print(f"[7/8] end-to-end LoRA SST-2 job ({args.e2e_steps} steps): run.py vs Trainer + peft",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            results["e2e"] = e2e_jobs(args, Path(tmp))
        ratios |= e2e_ratios(results["e2e"], noise)
    results["ratios"] = ratios
    results["benchmark_wall_s"] = time.time() - t0
    print("[8/8] done", flush=True)
    return results


def target_of(name: str, suffixes: tuple[str, ...] = ()) -> tuple[str, float] | None:
    """The target for a named figure (a key ending in ``_`` covers every shape; a
    second model's figures, named ``<figure>_<model>``, have the figure's target)."""
    if name in TARGETS:  # a figure with its own target on the second model
        return TARGETS[name]
    for suffix in suffixes:
        if suffix and name.endswith(suffix):
            name = name[:-len(suffix)]
    if name in TARGETS:
        return TARGETS[name]
    return next((t for k, t in TARGETS.items() if k.endswith("_") and name.startswith(k)), None)


def met(name: str, value: float | None, suffixes: tuple[str, ...] = ()) -> str:
    target = target_of(name, suffixes)
    if target is None or value is None:
        return ""
    op, bound = target
    ok = {"<=": value <= bound, "<": value < bound, ">=": value >= bound}.get(
        op, abs(value - 1) <= bound)
    return "yes" if ok else "NO"


def _suffixes(results: dict) -> tuple[str, ...]:
    second = results.get("second_model", "none")
    return () if second == "none" else (f"_{second}",)


def _step_and_memory_lines(results: dict, suffix: str, model: str) -> list[str]:
    s, f = results[f"step_s{suffix}"], results[f"step_flops{suffix}"]
    line = (f"{model}, train step (median s): full FT {s['ft']:.3f}, LoRA {s['lora']:.3f}, "
            f"peft LoRA {s['peft_lora']:.3f}")
    if "ft_stock_dropout" in s:
        line += (f"; with trainer.fast_dropout=false: full FT {s['ft_stock_dropout']:.3f}, LoRA "
                 f"{s['lora_stock_dropout']:.3f}; without dropout: full FT {s['ft_no_dropout']:.3f}, "
                 f"LoRA {s['lora_no_dropout']:.3f}")
    line += (f". Matrix-product GFLOP per step: full FT {f['ft'] / 1e9:.1f}, LoRA "
             f"{f['lora'] / 1e9:.1f}.")
    m = results[f"train_memory_mib{suffix}"]
    mem = (f"{model}, training memory above the loaded model (MiB), peak RSS (median [min–max] of "
           "fresh processes): " + ", ".join(
               f"{k} {v['train_mib']:.0f} [{min(v['train_mib_runs']):.0f}–"
               f"{max(v['train_mib_runs']):.0f}]" for k, v in m.items())
           + "; peak live tensors: " + ", ".join(f"{k} {v['tensor_mib']:.0f}" for k, v in m.items())
           + ("; RSS after the steps once glibc returned its free heap (malloc_trim): " + ", ".join(
               f"{k} {v['trimmed_mib']:.0f}" for k, v in m.items())
              if all(v.get("trimmed_mib") is not None for v in m.values()) else "") + ".")
    return [line, mem]


def table(results: dict) -> str:
    suffixes = _suffixes(results)

    def target(name: str) -> str:
        if target_of(name, suffixes) is None:
            return ""
        op, bound = target_of(name, suffixes)
        return {"<=": f"≤ {bound}", "<": f"< {bound}", ">=": f"≥ {bound}"}.get(op, f"1.00 ± {bound}")

    lines = ["| figure | measured | per-round IQR | target | met |", "|---|---:|---|---|---|"]
    for name, value in results["ratios"].items():
        shown = "not run" if value is None else f"{value:.4f}" if value < 0.1 else f"{value:.3f}"
        iqr = results["noise"].get(name)
        spread = f"{iqr[0]:.3f}–{iqr[1]:.3f}" if iqr else ""
        lines.append(f"| {name} | {shown} | {spread} | {target(name)} | "
                     f"{met(name, value, suffixes)} |")
    lines += ["", *_step_and_memory_lines(results, "", results["model"])]
    short = results["short_steps"]
    lines.append(f"{results['model']}, train step at {short['batch']} × {short['seq']} (median ms): " +
                 ", ".join(f"{k} {v * 1e3:.1f}" for k, v in short["median_s"].items()) + ".")
    for suffix in suffixes:
        lines += _step_and_memory_lines(results, suffix, results["second_model"])
    k = results["keep_freed"]

    def steps(r: dict) -> str:
        return (f"{r['step_s']:.3f} ({r['faults_per_step']:,.0f}, "
                f"{r['kernel_s_per_step'] * 1e3:.1f})")
    lines.append("LoRA step (median s; page faults, kernel ms per step) with "
                 f"trainer.keep_freed_memory {steps(k['kept'])}, with glibc's allocator defaults "
                 f"{steps(k['glibc_defaults'])}; LoRA's training memory with glibc's defaults "
                 f"{k['lora_train_mib_glibc_defaults']:.0f} MiB (one process).")
    c = results["compiled_step"]
    lines.append(f"LoRA step compiled vs eager at {results['precision']} (median s): eager "
                 f"{c['eager']:.3f}, compiled {c['compiled']:.3f}; compiling took {c['compile_s']:.1f} s "
                 f"({c['graphs']} graphs). Dense {results['matmul_peak']['dtype']} matmul peak "
                 f"({results['matmul_peak']['n']}³, best of 5): "
                 f"{results['matmul_peak']['flops_per_s'] / 1e9:.0f} GFLOP/s.")
    for shape, t in results["latency_s"].items():
        lines.append(f"Forward {shape} (median ms): " + ", ".join(
            f"{k} {v * 1e3:.2f}" for k, v in t.items()) + ".")
    c = results["checkpoint"]
    lines.append(f"Checkpoint: LoRA {c['lora_bytes']:,} B, full {c['full_bytes']:,} B; trainable "
                 f"{c['trainable']:,} of {c['total']:,}.")
    if "e2e" in results:
        e = results["e2e"]
        walls = "; ".join(f"{r['run_py']['wall_s']:.1f} vs {r['hf_best']['wall_s']:.1f}"
                          for r in e["rounds"])
        lines.append(f"End to end ({e['steps']} steps, batch {e['batch_size']}; run.py and the "
                     f"Trainer at its best: median of {len(e['rounds'])} paired rounds, s: {walls}): run.py "
                     f"{e['run_py_wall_s']:.1f} s (dev acc {e['run_py_accuracy']:.4f}); Trainer + peft "
                     f"padded to 128 {e['hf_max_length_wall_s']:.1f} s ({e['hf_max_length_accuracy']:.4f}); "
                     f"dynamic padding {e['hf_dynamic_wall_s']:.1f} s ({e['hf_dynamic_accuracy']:.4f}); "
                     f"at its best here (dynamic padding, length grouping"
                     f"{', bf16' if e['hf_best_bf16'] else ''}) "
                     f"{e['hf_best_wall_s']:.1f} s ({e['hf_best_accuracy']:.4f}).")
    mach = results["machine"]
    notes = {True: " with native bf16", False: " without native bf16"}.get(mach.get("native_bf16"), "")
    notes += {True: ", glibc keeping freed memory", False: ", the C allocator's defaults"}.get(
        mach.get("kept_freed_memory"), "")
    lines.append(f"Machine: {mach.get('cpu', '?')}, {mach['cpus']} CPUs{notes}, torch {mach['torch']} "
                 f"({mach['threads']} threads), {results['device']}; model {results['model']}; "
                 f"benchmark wall {results['benchmark_wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="lora-exp efficiency benchmark (side by side, one run)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="autocast dtype of the measured steps, as trainer.precision (auto: bf16 "
                         "on a CPU with native bf16 and on CUDA, else fp32); bf16_fp32_step "
                         "compares LoRA's step at this precision with fp32")
    ap.add_argument("--model", default="minilm", help="model config for step, memory and latency")
    ap.add_argument("--second-model", default="mpnet_base",
                    help="a second model for step and memory figures (named <figure>_<model>), "
                         "or none")
    ap.add_argument("--step-repeats", type=int, default=11, help="paired rounds of train steps")
    ap.add_argument("--second-step-repeats", type=int, default=7,
                    help="paired rounds of train steps for --second-model")
    ap.add_argument("--ckpt-model", default="mpnet_base", help="model config for checkpoint sizes")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--e2e-steps", type=int, default=120)
    ap.add_argument("--e2e-rounds", type=int, default=3,
                    help="paired rounds of run.py and the Trainer at its best (median ratio)")
    ap.add_argument("--latency-repeats", type=int, default=15)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny repeats and shapes (a smoke test)")
    ap.add_argument("--out", default="outputs/benchmark")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device=cuda is invalid: CUDA is not available; valid: auto, cpu", file=sys.stderr)
        return 2
    models = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    for flag, value, extra in (("--model", args.model, []), ("--ckpt-model", args.ckpt_model, []),
                               ("--second-model", args.second_model, ["none"])):
        if value not in models + extra:
            print(f"error: {flag}={value} is invalid; valid: {', '.join(models + extra)}",
                  file=sys.stderr)
            return 2
    if args.e2e_rounds < 1:
        print(f"error: --e2e-rounds={args.e2e_rounds} is invalid; valid: 1 or more", file=sys.stderr)
        return 2
    if not args.skip_e2e and not (Path(args.data_dir) / "sst2" / "train.tsv").is_file():
        print(f"error: --data-dir={args.data_dir} is invalid: no sst2/train.tsv there; valid: a "
              "folder laid out like ../shared/data (or --skip-e2e)", file=sys.stderr)
        return 2
    results = run(args)
    md = table(results)
    out = Path(args.out)
    (out / "benchmark.md").write_text(md)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2))
    print(md)
    print(json.dumps({k: (None if v is None else round(v, 4)) for k, v in results["ratios"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
