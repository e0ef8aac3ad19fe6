"""Frozen weights cast to the autocast dtype once, not at every forward pass
(``trainer.cache_frozen_casts``).

Autocast casts a linear layer's fp32 weight and bias to bf16 at every call, and keeps the cast
only for tensors that require grad, and only within one autocast region. So every method but full
fine-tuning re-casts the frozen W0 of every layer at every step. On the 2-core CPU, a (448×384) ·
(384×1536)ᵀ product took ~870 µs under autocast with the fp32 weight against ~770 µs with a bf16
copy made once: the cast itself, and a product that reads a freshly written weight.

Here each frozen weight keeps its cast beside it and re-casts only when the weight changed: the
cache is keyed on the tensor, its storage and its version counter, which every in-place change
under ``torch.no_grad`` bumps (merging ΔW, loading a checkpoint, ``load_state_dict``). The cast
of a given fp32 tensor is a given bf16 tensor, so the numbers are those of autocast itself. The
price is memory: a half-size copy of each frozen weight (for MiniLM 21 MB).

Tensors that require grad (full fine-tuning's weights, a trained bias) are left to autocast,
which caches those itself; so is everything under ``torch.compile`` (the graph casts on its own)
and in inference mode (an inference tensor cannot be saved for a later backward pass).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CACHE = "_frozen_casts"  # the module attribute holding {name: (source, version, storage, cast)}


def _autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def frozen(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>``, or its cast to the autocast dtype when it is frozen and ``module``
    caches casts (:func:`cache_frozen_casts`); None stays None."""
    t = getattr(module, name)
    cache = module.__dict__.get(_CACHE)
    if (cache is None or t is None or t.requires_grad or not t.is_floating_point()
            or torch.compiler.is_compiling() or torch.is_inference_mode_enabled()):
        return t
    dtype = _autocast_dtype(t)
    if dtype is None or t.dtype == dtype:
        return t
    hit = cache.get(name)
    if (hit is None or hit[0] is not t or hit[1] != t._version or hit[2] != t.data_ptr()
            or hit[3].dtype != dtype):
        hit = cache[name] = (t, t._version, t.data_ptr(), t.detach().to(dtype))
    return hit[3]


class CastOnceLinear(nn.Linear):
    """``nn.Linear`` whose frozen weight and bias are cast by :func:`frozen`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, frozen(self, "weight"), frozen(self, "bias"))


def cache_frozen_casts(model: nn.Module) -> int:
    """Let every linear layer of ``model`` keep its frozen weight's autocast cast; returns how
    many layers do.

    Plain ``nn.Linear`` modules become :class:`CastOnceLinear` (a subclass adding no state: the
    module keeps its identity, parameters and hooks); the LoRA layers read W0 through
    :func:`frozen` already and only get the cache."""
    from lora_exp.lora import LORA_LAYERS  # lora imports this module

    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:  # exactly nn.Linear: a subclass may do more
            module.__class__ = CastOnceLinear
        elif not isinstance(module, LORA_LAYERS):
            continue
        module.__dict__[_CACHE] = {}
        n += 1
    return n
