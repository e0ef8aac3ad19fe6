"""LoRA layers and their injection into a loaded Hugging Face model (paper §4).

h = W0·x + (α/r)·B·A·x, with A ∈ R^{r×k} Kaiming-uniform and B ∈ R^{d×r} zero, so the adapted
model equals the pretrained one at step 0 (§4.1). The LoRA modules *compose*: they take over the
existing ``weight``/``bias`` Parameters of the wrapped layer (never copied, never re-initialised,
unlike loralib's subclassing, docs/paper.md#loralib), so the HF state-dict keys stay the same and a
merged state dict loads with ``strict=True`` into the untouched model.

Merging is explicit (:func:`merge_lora` / :func:`unmerge_lora`), never a side effect of
``.eval()`` (docs/paper.md#loralib).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec, TargetRef


def _dropout(p: float) -> nn.Module:
    # No dropout op at all when p == 0: nn.Dropout(0) still costs a kernel and a mask.
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _init_lora_a(a: torch.Tensor) -> None:
    # Kaiming-uniform as in loralib / peft (the paper says Gaussian; docs/paper.md#lora).
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))


class LoRALinear(nn.Module):
    """LoRA around one ``nn.Linear`` (weight stored as (out, in)).

    Args:
        linear: the pretrained layer; its ``weight`` and ``bias`` Parameters are reused as-is.
        rank: r, the rank of the update.
        alpha: α; the update is scaled by α/r.
        dropout: dropout probability on the LoRA path only.
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # same Parameter object: W0 is never copied
        self.bias = linear.bias
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        w = linear.weight
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=w.device, dtype=w.dtype)
        _init_lora_a(self.lora_A.weight)
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = _dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r)·B·A in the layout of ``weight`` (out, in), computed in fp32."""
        b, a = self.lora_B.weight.float(), self.lora_A.weight.float()
        return (b @ a) * self.scaling  # (out, r) @ (r, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        # Two thin products; ΔW (d×k) is never materialised during training. W0·x is computed
        # as a 2-D matrix so that (α/r)·B·(A·x) is added into it in place by one addmm_: no
        # separate scaling, sum or extra output of d numbers per token (peft spends three).
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        out = F.linear(x2, self.weight, self.bias)
        h = self.lora_A(self.lora_dropout(x2))  # (tokens, r)
        # (under autocast W0·x and A·x come out in half precision; B follows them)
        out.addmm_(h.to(out.dtype), self.lora_B.weight.t().to(out.dtype), alpha=self.scaling)
        return out.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.rank}, alpha={self.alpha}"


class LoRAFusedLinear(nn.Module):
    """LoRA on chosen slices of a fused projection, e.g. GPT-2's ``Conv1D`` ``c_attn`` = [q|k|v].

    Each enabled slice s gets its own A_s (r×k) and B_s (d×r), as loralib's ``MergedLinear`` with
    ``enable_lora=[True, False, True]`` does for "wq, wv": the k slice's output is untouched.

    Args:
        layer: an ``nn.Linear`` or HF ``Conv1D`` whose output is ``n_slices`` equal parts.
        slices: {slice name: slice index}, e.g. {"wq": 0, "wv": 2}.
        n_slices: how many equal parts the output has (3 for qkv).
        fan_in_fan_out: True when the weight is stored (in, out), as HF ``Conv1D`` does.
    """

    def __init__(self, layer: nn.Module, slices: dict[str, int], n_slices: int, rank: int,
                 alpha: float, dropout: float = 0.0, fan_in_fan_out: bool = True):
        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        self.fan_in_fan_out = fan_in_fan_out
        in_f, out_f = self.weight.shape if fan_in_fan_out else self.weight.shape[::-1]
        if out_f % n_slices:
            raise RuntimeError(f"fused layer of width {out_f} does not split into {n_slices} slices")
        self.in_features, self.out_features = in_f, out_f
        self.slice_width = out_f // n_slices
        self.n_slices = n_slices
        self.slices = dict(slices)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        w = self.weight
        self.lora_A = nn.ModuleDict({
            name: nn.Linear(in_f, rank, bias=False, device=w.device, dtype=w.dtype) for name in slices})
        self.lora_B = nn.ModuleDict({
            name: nn.Linear(rank, self.slice_width, bias=False, device=w.device, dtype=w.dtype)
            for name in slices})
        for name in slices:
            _init_lora_a(self.lora_A[name].weight)
            nn.init.zeros_(self.lora_B[name].weight)
        self.lora_dropout = _dropout(dropout)
        self.merged = False

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        if self.fan_in_fan_out:  # HF Conv1D: y = x @ W + b with W (in, out)
            out = x @ self.weight
            return out + self.bias if self.bias is not None else out
        return F.linear(x, self.weight, self.bias)

    def slice_delta(self, name: str) -> torch.Tensor:
        """ΔW_s = (α/r)·B_s·A_s as (slice_width, in), fp32."""
        return (self.lora_B[name].weight.float() @ self.lora_A[name].weight.float()) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """ΔW of the whole fused layer in the layout of ``weight``; disabled slices are zero."""
        full = torch.zeros(self.out_features, self.in_features, device=self.weight.device)
        for name, s in self.slices.items():
            full[s * self.slice_width:(s + 1) * self.slice_width] = self.slice_delta(name)
        return full.T if self.fan_in_fan_out else full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._base(x)
        if self.merged:
            return out
        h = self.lora_dropout(x)
        parts: list[torch.Tensor | None] = [None] * self.n_slices
        for name, s in self.slices.items():
            parts[s] = self.lora_B[name](self.lora_A[name](h)) * self.scaling  # (..., d)
        zeros = None
        for s, p in enumerate(parts):
            if p is None:
                if zeros is None:
                    zeros = out.new_zeros(*out.shape[:-1], self.slice_width)
                parts[s] = zeros
        return out + torch.cat(parts, dim=-1)  # only the enabled slices change

    def extra_repr(self) -> str:
        return f"slices={self.slices}, width={self.slice_width}, r={self.rank}, alpha={self.alpha}"


LORA_LAYERS = (LoRALinear, LoRAFusedLinear)


@dataclass(frozen=True)
class LoRASite:
    """One adapted weight: where it is and which paper weight type it is."""

    module: str  # dotted module path in the model
    layer: int  # transformer block index
    weight_type: str  # wq, wk, wv, wo, mlp
    slice_name: str | None  # key inside a fused module's ModuleDict, else None


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, new)


def apply_lora(model: nn.Module, spec: ModelSpec, rank: int, alpha: float,
               targets: list[str], dropout: float = 0.0) -> list[LoRASite]:
    """Inject LoRA into every block's target weights (paper §4.2).

    Args:
        model: a loaded HF model (pretrained weights already in place).
        spec: resolves paper weight types to this architecture's module names.
        rank: r. alpha: α. targets: paper weight types, e.g. ["wq", "wv"]. dropout: LoRA path only.

    Returns:
        One :class:`LoRASite` per adapted weight.

    Raises:
        ValueError / RuntimeError from ``spec.resolve`` for unknown or partially matching targets.
    """
    refs: list[TargetRef] = spec.resolve(model, targets)
    by_module: dict[str, list[TargetRef]] = {}
    for ref in refs:
        by_module.setdefault(ref.module, []).append(ref)
    sites = []
    for path, group in by_module.items():
        layer = model.get_submodule(path)
        if isinstance(layer, LORA_LAYERS):
            raise RuntimeError(f"{path} already carries LoRA")
        d_in, d_out = layer.weight.shape if group[0].fan_in_fan_out else layer.weight.shape[::-1]
        limit = min(d_in, d_out // group[0].n_slices)
        if rank > limit:  # a rank-r update of a d×k matrix needs r <= min(d, k)
            raise ConfigError("rank", rank, f"an integer <= min(d, k) = {limit} for {path}")
        fused = group[0].n_slices > 1
        if fused:
            slices = {r.weight_type: r.slice_index for r in group}
            new = LoRAFusedLinear(layer, slices, group[0].n_slices, rank, alpha, dropout,
                                  fan_in_fan_out=group[0].fan_in_fan_out)
        else:
            if group[0].fan_in_fan_out:  # e.g. GPT-2's c_proj (Conv1D) for wo
                new = LoRAFusedLinear(layer, {group[0].weight_type: 0}, 1, rank, alpha, dropout,
                                      fan_in_fan_out=True)
                fused = True
            else:
                new = LoRALinear(layer, rank, alpha, dropout)
        _set_module(model, path, new)
        sites += [LoRASite(path, r.layer, r.weight_type, r.weight_type if fused else None)
                  for r in group]
    return sites


def lora_modules(model: nn.Module):
    """Yield (path, module) for every LoRA layer in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, LORA_LAYERS):
            yield name, mod


def lora_parameter_names(model: nn.Module) -> list[str]:
    """Names of the LoRA factors A and B, found by module type (never by substring)."""
    names = []
    for path, mod in lora_modules(model):
        for part in ("lora_A", "lora_B"):
            names += [f"{path}.{part}.{n}" for n, _ in getattr(mod, part).named_parameters()]
    return names


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """W ← W0 + ΔW for every LoRA layer (explicit, idempotent). Returns how many were merged."""
    n = 0
    for _, mod in lora_modules(model):
        if not mod.merged:
            mod.weight.data += mod.delta_weight().to(mod.weight.dtype)
            mod.merged = True
            n += 1
    return n


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> int:
    """W ← W − ΔW for every merged LoRA layer. Returns how many were unmerged."""
    n = 0
    for _, mod in lora_modules(model):
        if mod.merged:
            mod.weight.data -= mod.delta_weight().to(mod.weight.dtype)
            mod.merged = False
            n += 1
    return n


@contextmanager
def merged(model: nn.Module):
    """Run the block with W0 + ΔW folded into every LoRA layer (zero added latency, §4.1), then
    put back the exact W0.

    W0 is restored from a copy, not as (W0 + ΔW) − ΔW: that rounding would drift the frozen
    weights a little at every evaluation. The copy costs the adapted weights' size while the
    block runs. Layers already merged stay merged.
    """
    saved = {id(mod): mod.weight.detach().clone() for _, mod in lora_modules(model) if not mod.merged}
    merge_lora(model)
    try:
        yield model
    finally:
        with torch.no_grad():
            for _, mod in lora_modules(model):
                if id(mod) in saved:
                    mod.weight.copy_(saved[id(mod)])
                    mod.merged = False


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without LoRA factors: loads strictly into the unmodified HF model.

    Call after :func:`merge_lora` to export the merged weights W0 + ΔW.
    """
    lora_keys = set(lora_parameter_names(model))
    return {k: v for k, v in model.state_dict().items() if k not in lora_keys}
