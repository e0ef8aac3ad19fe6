"""Multi-process training with torch's own engine: ``torchrun`` + DistributedDataParallel.

Under ``torchrun --nproc_per_node=N run.py ...`` every process joins one process group (NCCL on
GPU, gloo on CPU), each takes its share of every batch, DDP averages the gradients, and only
rank 0 evaluates and writes the run directory. Without torchrun all of this is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
from torch import nn


def enabled() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (idempotent)."""
    if enabled() and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch_dist.init_process_group(backend=backend)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around the model when torchrun started us; the model itself otherwise."""
    if not enabled():
        return model
    init(device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(value: float) -> float:
    """Sum a number over all ranks (the number itself without DDP)."""
    if not (enabled() and torch_dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if torch_dist.get_backend() == "nccl":
        t = t.cuda()
    torch_dist.all_reduce(t)
    return float(t.item())


def barrier() -> None:
    if enabled() and torch_dist.is_initialized():
        torch_dist.barrier()


def shutdown() -> None:
    if enabled() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
