"""Where and how a run computes: the seeds, the device, the autocast precision, quiet libraries."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from lora_exp import dist
from lora_exp.errors import ConfigError


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


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32. ``auto``: bf16 on CUDA when supported, else fp16; CPU fp32."""
    if device.type != "cuda" or name == "fp32":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
