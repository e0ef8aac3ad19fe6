"""FT: full fine-tuning, every weight of the pretrained model trains (paper §5.1)."""
from __future__ import annotations

from torch import nn

from lora_exp.methods import MethodResult
from lora_exp.spec import ModelSpec


def apply(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    head = set(spec.head_parameters(model))
    return MethodResult([n for n, _ in model.named_parameters() if n not in head])
