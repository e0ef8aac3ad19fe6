"""The method registry: every adaptation method plugs in here and nowhere else.

A method is a function ``apply(model, spec, method_cfg) -> MethodResult`` that may add modules
to the model and returns the names of the parameters it trains (the task head excluded: the
trainer adds the head for every method by one shared rule and counts it apart, as the paper
does). The trainer never branches on a method's name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec


@dataclass
class MethodResult:
    """What a method did to a model.

    Attributes:
        trainable: names of the parameters the method trains (no head).
        info: method details saved in ``adapter_config.json`` (e.g. LoRA sites).
        mergeable: the method's update can be folded into the frozen weights (LoRA).
    """

    trainable: list[str]
    info: dict = field(default_factory=dict)
    mergeable: bool = False


def _lora(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from lora_exp.lora import apply_lora, lora_parameter_names

    sites = apply_lora(model, spec, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets),
                       dropout=cfg.dropout)
    names = lora_parameter_names(model)
    info = {"rank": cfg.rank, "alpha": cfg.alpha, "scaling": cfg.alpha / cfg.rank,
            "targets": list(cfg.targets), "dropout": cfg.dropout,
            "sites": [vars(s) for s in sites]}
    return MethodResult(names, info, mergeable=True)


# name -> "module:function". Imported on first use: the baselines import MethodResult from here.
METHODS: dict[str, str] = {
    "lora": "lora_exp.methods:_lora",
    "full_ft": "baselines.full_ft:apply",
    "ft_top2": "baselines.ft_top2:apply",
    "bitfit": "baselines.bitfit:apply",
    "prefix_embed": "baselines.prefix:apply_prefix_embed",
    "prefix_layer": "baselines.prefix:apply_prefix_layer",
    "adapter": "baselines.adapters:apply",
}


def apply_method(model: nn.Module, spec: ModelSpec, method_cfg) -> MethodResult:
    if method_cfg.name not in METHODS:
        raise ConfigError("method", method_cfg.name, sorted(METHODS))
    module, _, function = METHODS[method_cfg.name].partition(":")
    apply: Callable[[nn.Module, ModelSpec, object], MethodResult] = getattr(
        importlib.import_module(module), function)
    return apply(model, spec, method_cfg)
