"""Which parameters train, and the paper's parameter counts."""
from __future__ import annotations

from torch import nn


def set_trainable(model: nn.Module, names: set[str]) -> None:
    """``requires_grad`` on exactly the parameters named, off on every other."""
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)


def count_params(model: nn.Module, trainable: list[str], head: list[str]) -> dict[str, int]:
    """The paper's counts: ``trainable`` excludes the task head, which is counted on its own."""
    params = dict(model.named_parameters())
    return {"trainable": sum(params[n].numel() for n in trainable),
            "head": sum(params[n].numel() for n in head),
            "total": sum(p.numel() for p in params.values())}
