"""What the benchmark measures, one function per quantity (``benchmarks/run.py`` runs them).

Timings interleave the compared models (A, B, C, A, B, C, ...) after warm-up steps and report
medians, so a slow moment of a shared machine hits every model alike. Memory is measured in a
fresh process per configuration (:func:`train_memory`), since a process's peak never goes down.
"""
from __future__ import annotations

import ctypes
import gc
import random
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from baselines.count_table import compose  # conf/config.yaml + overrides, as run.py composes it
from lora_exp.lora import lora_modules, merge_lora
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.spec import ModelSpec
from lora_exp.efficiency import prepare_for_training
from lora_exp.optim import clip_and_step, make_optimizer
from lora_exp.params import set_trainable


def trainer_cfg(overrides: tuple[str, ...] = ()):
    """The trainer settings of ``conf/trainer/default.yaml`` (with ``trainer.*`` overrides)."""
    return compose(["task=sst2", *overrides]).trainer


def adapted_model(model: str, method: str, rank: int = 8, train: bool = True,
                  trainer: tuple[str, ...] = ()) -> nn.Module:
    """A classifier (2 labels) of ``model`` with ``method`` applied (``none``: the base model),
    the method's parameters and the head trainable and the trainer's preparation
    (:func:`prepare_for_training` with ``trainer`` overrides) done, as the trainer does it."""
    cfg = compose([f"model={model}", f"method={'lora' if method == 'none' else method}",
                   f"rank={rank}", "task=sst2", *trainer])
    net = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    names = set(spec.head_parameters(net))
    if method != "none":
        names |= set(apply_method(net, spec, cfg.method).trainable)
    set_trainable(net, names)
    prepare_for_training(net, cfg.trainer)
    return net.train(train)


def peft_model(model: str, rank: int = 8, alpha: float = 8.0) -> nn.Module:
    """The same base model with peft's LoRA on the same weights (q, v) and the same head, as a
    peft user builds it (HF's own dropout and attention)."""
    from peft import LoraConfig, get_peft_model

    cfg = compose([f"model={model}", "task=sst2"])
    net = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    names = [cfg.model.targets.wq.split(".")[-1], cfg.model.targets.wv.split(".")[-1]]
    head = [h.split(".")[-1] for h in spec.head]  # pooler + classifier: the trainer's head
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=names,
                        modules_to_save=head)
    return get_peft_model(net, config).train()


def batch(model: nn.Module, batch_size: int, seq_len: int, seed: int = 0, labels: bool = True) -> dict:
    """Random tokens at full length (the benchmark shape), all positions attended."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    out = {"input_ids": torch.randint(1000, vocab, (batch_size, seq_len), generator=g),
           "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
    if labels:
        out["labels"] = torch.randint(0, 2, (batch_size,), generator=g)
    return out


def to(obj, device):
    return {k: v.to(device) for k, v in obj.items()} if isinstance(obj, dict) else obj.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_fn(model: nn.Module, data: dict, device: torch.device, tcfg=None,
                  amp_dtype: torch.dtype | None = None) -> Callable[[], None]:
    """One optimizer step as the trainer takes it: forward and loss (under autocast to
    ``amp_dtype``, None = fp32), backward, gradient clipping, AdamW (the trainer's
    :func:`make_optimizer`), zero_grad. Every compared model, peft's too, gets the same optimizer
    settings."""
    tcfg = tcfg if tcfg is not None else trainer_cfg()
    model.to(device)
    opt = make_optimizer(model, tcfg)
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)
    data = to(data, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(**data).loss
        scaler.scale(loss).backward()
        clip_and_step(model, opt, scaler, tcfg)
    return step


def interleaved_times(fns: dict[str, Callable[[], None]], warmup: int, repeats: int,
                      device: torch.device, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` rounds; each round calls every function once,
    in a new (seeded) random order, so no function always runs first or after the same one."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    rng = random.Random(seed)
    names = list(fns)
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            sync(device)
            t = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Median over rounds of num's time ÷ den's time in the same round (a slow moment of the
    machine hits both), with the interquartile range of the per-round ratios as the noise."""
    r = sorted(a / b for a, b in zip(times[num], times[den]))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0], r[0], r[0]]
    return {"ratio": statistics.median(r), "q1": q[0], "q3": q[2]}


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in times.items()}


STOCK = ("trainer.fast_dropout=false",)  # the model's dropout as HF runs it


def without_dropout(net: nn.Module) -> nn.Module:
    """Every dropout probability set to 0 (HF then attends with sdpa's fused kernel). A reference
    for what dropout costs, not a training setting: the methods fine-tune with dropout."""
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return net


def step_times(model: str, batch_size: int, seq_len: int, device: torch.device, warmup: int,
               repeats: int, references: bool = True,
               amp_dtype: torch.dtype | None = None) -> dict[str, list[float]]:
    """Train-step seconds per round at ``amp_dtype`` (None = fp32): full FT, lora-exp LoRA, peft
    LoRA (q, v, r=8); with a low-precision ``amp_dtype`` also LoRA in fp32 (``lora_fp32``); with
    ``references``, full FT and LoRA with ``trainer.fast_dropout=false`` (what the dropout kernel
    saves) and without any dropout (what dropout costs at all)."""
    data = batch(adapted_model(model, "none"), batch_size, seq_len)
    nets = {"ft": adapted_model(model, "full_ft"), "lora": adapted_model(model, "lora"),
            "peft_lora": peft_model(model)}
    if references:
        nets |= {"ft_stock_dropout": adapted_model(model, "full_ft", trainer=STOCK),
                 "lora_stock_dropout": adapted_model(model, "lora", trainer=STOCK),
                 "ft_no_dropout": without_dropout(adapted_model(model, "full_ft")),
                 "lora_no_dropout": without_dropout(adapted_model(model, "lora"))}
    fns = {k: train_step_fn(net, data, device, amp_dtype=amp_dtype) for k, net in nets.items()}
    if amp_dtype is not None:
        fns["lora_fp32"] = train_step_fn(adapted_model(model, "lora"), data, device)
    return interleaved_times(fns, warmup, repeats, device)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 5) -> dict:
    """FLOP/s of this machine's dense matrix product in ``dtype``: the best of ``repeats`` timed
    n×n @ n×n products (2·n³ FLOPs each) after one warm-up, with the run's torch threads."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return {"flops_per_s": 2 * n**3 / best, "n": n, "dtype": str(dtype).removeprefix("torch."),
            "best_s": best}


def checkpointing_supported(model: str) -> bool:
    """Whether HF implements gradient checkpointing for ``model`` (MPNet does not)."""
    cfg = compose([f"model={model}", "task=sst2"])
    return bool(getattr(build_model(cfg.model, "cls", 2, skeleton=True),
                        "supports_gradient_checkpointing", False))


def step_flops(model: str, batch_size: int, seq_len: int) -> dict[str, int]:
    """Matrix-product FLOPs of one forward + backward pass (``torch.utils.flop_counter``), full
    FT and LoRA: their ratio is the compute limit of ``lora_ft_step`` at this shape (LoRA skips
    the frozen weights' gradient products, not the attention products or the input gradients)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for key, method in (("ft", "full_ft"), ("lora", "lora")):
        net = adapted_model(model, method)
        data = batch(net, batch_size, seq_len)
        with FlopCounterMode(display=False) as counter:
            net(**data).loss.backward()
        out[key] = counter.get_total_flops()
    return out


def latencies(model: str, shapes: list[tuple[int, int, int]], device: torch.device,
              warmup: int) -> dict[str, dict[str, list[float]]]:
    """Inference forward seconds per round, per (batch, length, repeats): base, a second copy of
    base (the control: its ratio to base is the measurement's noise), LoRA merged, LoRA unmerged,
    AdapterH, AdapterL. LoRA's B is random (a trained-looking update) so merging does real work."""
    nets = {"base": adapted_model(model, "none", train=False),
            "base_copy": adapted_model(model, "none", train=False),
            "lora_merged": adapted_model(model, "lora", train=False),
            "lora_unmerged": adapted_model(model, "lora", train=False),
            "adapter_h": adapted_model(model, "adapter_h", train=False),
            "adapter_l": adapted_model(model, "adapter_l", train=False)}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key in ("lora_merged", "lora_unmerged"):
            for _, mod in lora_modules(nets[key]):
                for b in mod.lora_B.parameters():
                    b.copy_(torch.randn(b.shape, generator=g) * 0.01)
    merge_lora(nets["lora_merged"])
    for net in nets.values():
        net.to(device)
    out = {}
    for bs, seq, repeats in shapes:
        data = to(batch(nets["base"], bs, seq, labels=False), device)

        def forward(net):
            def f():
                with torch.inference_mode():
                    net(**data)
            return f
        out[f"{bs}x{seq}"] = interleaved_times({k: forward(n) for k, n in nets.items()},
                                               warmup, repeats, device)
    return out


# ---- memory: run in a fresh process (benchmarks/run.py --worker memory) -----------------------

def _status_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _peak_live_bytes(prof) -> int:
    """The highest sum of live tensor bytes over a profiled run: the profiler's memory events
    (+ on allocation, − on free) in time order. The CPU analogue of CUDA's peak allocated."""
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def resident(net: nn.Module) -> None:
    """Read every parameter and buffer once. A model loaded from safetensors keeps its weights in
    the file's memory map, paged in (and counted in RSS) only when first read: without this, the
    first training step would page in the whole model (MiniLM: 85 MiB of 87) and the baseline
    "after loading" would leave it out, counting the model itself as training memory."""
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            t.sum()


def train_memory(model: str, method: str, batch_size: int, seq_len: int, steps: int,
                 checkpointing: bool, device: torch.device, kind: str = "rss",
                 precision: str = "fp32") -> dict[str, float]:
    """MiB that training adds above the loaded model (gradients, AdamW's two moments,
    activations). Call in a fresh process: a process's peak never goes down.

    ``kind="rss"``: ``train_mib``, what a user's out-of-memory error depends on: peak RSS minus
    RSS after loading with every weight paged in (:func:`resident`; CPU; Linux's VmHWM, reset
    after loading via /proc/self/clear_refs), or
    peak minus current allocated memory (CUDA); and ``trimmed_mib``, the RSS after the steps once glibc has
    returned its free heap pages (``malloc_trim(0)``; CPU only): what of the peak was freed
    memory the allocator kept. ``kind="tensors"``: ``tensor_mib``, the peak of live tensor bytes
    the steps allocate (CPU: the profiler's memory events; CUDA: peak allocated). Profiling costs
    memory of its own, hence one kind a process. ``precision``: the autocast dtype's name
    (``fp32``, ``bf16``, ``fp16``).
    """
    from lora_exp.runtime import PRECISIONS

    net = adapted_model(model, method, trainer=(
        f"trainer.gradient_checkpointing={str(checkpointing).lower()}",)).to(device)
    resident(net)
    step = train_step_fn(net, batch(net, batch_size, seq_len), device,
                         amp_dtype=PRECISIONS[precision])
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loaded = torch.cuda.memory_allocated()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - loaded) / 2**20
        return {"train_mib": peak, "trimmed_mib": None, "tensor_mib": peak}
    if kind == "tensors":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(steps):
                step()
        return {"tensor_mib": _peak_live_bytes(prof) / 2**20}
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    loaded = _status_kb("VmRSS")
    for _ in range(steps):
        step()
    peak = (_status_kb("VmHWM") - loaded) / 1024
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = (_status_kb("VmRSS") - loaded) / 1024
    except (OSError, AttributeError):  # not glibc
        trimmed = None
    return {"train_mib": peak, "trimmed_mib": trimmed}


def fresh_process_steps(model: str, batch_size: int, seq_len: int, steps: int, device: torch.device,
                        precision: str = "fp32") -> dict[str, float]:
    """LoRA train steps in this (fresh) process: the median seconds of ``steps`` steps after two
    warm-up steps, and the page faults and kernel seconds per step. For settings that hold for a
    whole process (``trainer.keep_freed_memory``), which one process cannot compare side by side."""
    import resource

    from lora_exp.runtime import PRECISIONS

    net = adapted_model(model, "lora").to(device)
    step = train_step_fn(net, batch(net, batch_size, seq_len), device,
                         amp_dtype=PRECISIONS[precision])
    for _ in range(2):
        step()
    before, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"step_s": statistics.median(times),
            "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "kernel_s_per_step": (after.ru_stime - before.ru_stime) / steps}


def checkpoint_bytes(model: str, out: Path) -> dict[str, float]:
    """Bytes of the LoRA checkpoint (A and B only, as lora-exp writes it, no task head) and of a
    full safetensors checkpoint of the same model, with the trainable fraction."""
    from safetensors.torch import save_file

    from lora_exp import export
    from lora_exp.lora import base_state_dict

    cfg = compose([f"model={model}", "method=lora", "rank=8", "task=sst2"])
    net = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    base_total = sum(p.numel() for p in net.parameters())
    result = apply_method(net, spec, cfg.method)
    lora_dir, full = out / "lora_ckpt", out / "full_ckpt" / "model.safetensors"
    export.save_trained(net, result.trainable, lora_dir, {"model": model, "method": "lora"},
                        result, [], "cls", cfg.model.get("hub_id") or model)
    full.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in base_state_dict(net).items()}, str(full))
    lora_bytes = (lora_dir / export.WEIGHTS).stat().st_size
    trainable = sum(p.numel() for n, p in net.named_parameters() if n in set(result.trainable))
    return {"lora_bytes": lora_bytes, "full_bytes": full.stat().st_size,
            "trainable": trainable, "total": base_total}


def analysis_seconds(layers: int = 12, d: int = 768, r: int = 64, types: int = 2) -> dict[str, float]:
    """Wall seconds of the §7 linear algebra for ``layers × types`` adapted d×d weights at rank r:
    φ between two runs' A (with the Gaussian baseline) and Table 7 (the ``subspace`` and
    ``delta-w`` commands without file I/O and plots)."""
    from analysis.delta_w import table7_rows
    from analysis.subspace import random_baseline, subspace_similarity

    g = torch.Generator().manual_seed(0)
    n = layers * types
    A1, A2 = torch.randn(n, r, d, generator=g), torch.randn(n, r, d, generator=g)
    B = torch.randn(n, d, r, generator=g)
    W = torch.randn(n, d, d, generator=g)
    t = time.perf_counter()
    for i in range(n):
        subspace_similarity(A1[i], A2[i])
        random_baseline(d, r, r, generator=g)
    t_phi = time.perf_counter() - t
    t = time.perf_counter()
    table7_rows(list(W), [B[i] @ A1[i] for i in range(n)], r, generator=g)
    t_t7 = time.perf_counter() - t
    return {"phi_s": t_phi, "table7_s": t_t7, "total_s": t_phi + t_t7, "weights": n, "d": d, "r": r}


# ---- trainer.compile: eager vs torch.compile (inductor) LoRA train steps ----------------------

def compiled_step_times(model: str, batch_size: int, seq_len: int, device: torch.device, warmup: int,
                        repeats: int, amp_dtype: torch.dtype | None = None) -> dict[str, list[float]]:
    """LoRA train-step seconds per round, eager and compiled (``trainer.compile``: inductor,
    static shapes, the trainer's CPU dropout as graph breaks), interleaved; two identical
    models, one step = forward + loss under autocast (``amp_dtype``; None: fp32), backward,
    clipping, AdamW.

    The compiled model compiles at its first call (and its backward at the first backward), so
    the first warm-up call's seconds, less a compiled step's median, are its compile time:
    returned as ``compile_s`` (one value) beside the per-round lists.
    """
    from lora_exp.compiled import TrainingSteps

    tcfg = trainer_cfg()
    nets = {"eager": adapted_model(model, "lora"), "compiled": adapted_model(model, "lora")}
    data = to(batch(nets["eager"], batch_size, seq_len), device)
    compiled = TrainingSteps(nets["compiled"].to(device), True, [seq_len])

    def step_fn(net: nn.Module, run: Callable[[Callable[[nn.Module], None]], None]):
        opt = make_optimizer(net.to(device), tcfg)
        scaler = torch.amp.GradScaler(enabled=False)

        def step(m: nn.Module) -> None:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = m(**data).loss
            loss.backward()
            clip_and_step(m, opt, scaler, tcfg)
        return lambda: run(step)

    fns = {"eager": step_fn(nets["eager"], lambda step: step(nets["eager"])),
           "compiled": step_fn(nets["compiled"], compiled.run)}
    sync(device)
    t = time.perf_counter()
    fns["compiled"]()  # compiles the forward and the backward
    sync(device)
    first = time.perf_counter() - t
    times = interleaved_times(fns, warmup, repeats, device)
    if compiled.fell_back:
        raise RuntimeError(f"compiling failed: {compiled.error}")
    return times | {"compile_s": [first - statistics.median(times["compiled"])],
                    "graphs": [compiled.graphs]}
