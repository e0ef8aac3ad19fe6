"""The method registry: every adaptation method plugs in here and nowhere else.

A method is a function ``apply(model, spec, method_cfg) -> MethodResult`` that may add modules
to the model and returns the names of the parameters it trains (the task head excluded: the
trainer adds the head for every method by one shared rule and counts it apart, as the paper
does). The trainer never branches on a method's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from lora_exp.spec import ConfigError, ModelSpec


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


def _full_ft(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from baselines.full_ft import apply

    return apply(model, spec, cfg)


def _ft_top2(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from baselines.ft_top2 import apply

    return apply(model, spec, cfg)


def _bitfit(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from baselines.bitfit import apply

    return apply(model, spec, cfg)


def _prefix_embed(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from baselines.prefix import apply_prefix_embed

    return apply_prefix_embed(model, spec, cfg)


def _prefix_layer(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from baselines.prefix import apply_prefix_layer

    return apply_prefix_layer(model, spec, cfg)


def _adapter(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    from baselines.adapters import apply

    return apply(model, spec, cfg)


METHODS: dict[str, Callable[[nn.Module, ModelSpec, object], MethodResult]] = {
    "lora": _lora,
    "full_ft": _full_ft,
    "ft_top2": _ft_top2,
    "bitfit": _bitfit,
    "prefix_embed": _prefix_embed,
    "prefix_layer": _prefix_layer,
    "adapter": _adapter,
}


def apply_method(model: nn.Module, spec: ModelSpec, method_cfg) -> MethodResult:
    if method_cfg.name not in METHODS:
        raise ConfigError("method", method_cfg.name, sorted(METHODS))
    return METHODS[method_cfg.name](model, spec, method_cfg)
