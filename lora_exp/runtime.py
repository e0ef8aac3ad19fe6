"""Where and how a run computes: the seeds, the device, the autocast precision, the C
allocator's setting, quiet libraries."""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import random

import numpy as np
import torch

from lora_exp import dist
from lora_exp.errors import ConfigError

log = logging.getLogger("lora_exp")


def quiet_libraries() -> None:
    """Keep HF's per-load reports and datasets' bars out of the run log; ours say what matters."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``trainer.device``: ``auto`` takes CUDA when there is one; under torchrun each process
    takes its own GPU (``LOCAL_RANK``)."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", name, ["auto", "cpu"], "CUDA is not available here")
    else:
        device = torch.device(name)
    if dist.enabled() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles). Without either,
    oneDNN emulates bf16 products and a bf16 step is slower than an fp32 one."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def machine() -> dict:
    """What a run's figures (wall time above all) were measured on: the CPU's model name, whether
    it has native bf16, torch's threads, and the GPU if one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass  # not Linux: platform's name stays
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu, "native_bf16": native_bf16(), "threads": torch.get_num_threads(), "gpu": gpu}


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the training forward pass and loss, or None for fp32. Parameters and
    AdamW's state stay fp32 either way (autocast casts copies for the products).

    ``auto``: on CUDA bf16 where supported, else fp16 (with a grad scaler); on a CPU bf16 when it
    has native bf16 (:func:`native_bf16`), else fp32. fp16 is CUDA-only: a CPU has no fp16 path
    worth taking and bf16 needs no loss scaling.
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if native_bf16() else None
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision", name, ["auto", "fp32", "bf16"],
                          f"fp16 autocast needs CUDA (device is {device.type}); bf16 runs on a CPU")
    return PRECISIONS[name]


def precision_name(dtype: torch.dtype | None) -> str:
    """What a run records: ``fp32``, ``bf16`` or ``fp16``."""
    return next(k for k, v in PRECISIONS.items() if v == dtype)


# glibc's mallopt parameters (malloc.h), and the largest mmap threshold it accepts on 64-bit.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20


def keep_freed_memory() -> bool:
    """Have glibc's allocator keep the memory a training step frees, for the next step to reuse.

    A step allocates and frees the same activation buffers every time. With glibc's defaults the
    larger ones are mmapped and unmapped each step and the heap's free top is handed back to the
    OS, so each step page-faults its activations in anew: MiniLM's LoRA step at 16 × 128 tokens
    took 9,848 page faults and 14.2 ms of kernel time (bf16, the AMD dev machine). Here blocks
    under 32 MiB come from the heap and the heap is trimmed only above 1 GiB of free top: 331
    faults, 1.1 ms, a 0.95× step and the same peak RSS within the noise
    (``benchmarks/run.py``: ``keep_freed_step``, ``keep_freed_mem``; docs/performance.md).
    Returns whether it applied (glibc only).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): the defaults stay
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, 2**30))


def pick_compute(tcfg) -> tuple[torch.device, torch.dtype | None]:
    """``trainer.device`` and ``trainer.precision`` resolved (and logged): the device and the
    autocast dtype of the training steps."""
    device = pick_device(tcfg.device)
    amp_dtype = pick_precision(tcfg.precision, device)
    log.info("device %s · training precision %s (trainer.precision=%s)", device,
             precision_name(amp_dtype), tcfg.precision)
    return device, amp_dtype
