"""The pretrained model's dropout, made cheap on the CPU (``trainer.fast_dropout``).

Every method fine-tunes with the model's own dropout on (p = 0.1 in BERT, RoBERTa and GPT-2), and
on a CPU that dropout, not any method, is the largest elementwise cost of a training step:
PyTorch draws each mask with ``bernoulli_`` (5.6 ns per element on the 2-core dev machine), then
scales and multiplies in separate passes: about 40 % of MiniLM's LoRA step at batch 16 × 128
(docs/performance.md). This module keeps the definition —
every element kept independently with probability 1 − p, kept ones scaled by 1/(1 − p) — and
changes how the mask is drawn and applied:

* the mask comes from 32-bit random words of numpy's PCG64DXSM generator (2.5× faster than
  torch's CPU generator here), seeded for each mask from torch's default generator, so
  ``torch.manual_seed``, checkpoint recomputation and resume (which restore torch's RNG state)
  replay it exactly; P(drop) = round(p·2³²)/2³², i.e. p to within 2⁻³³;
* attention-probability dropout runs inside one softmax–dropout–PV function that keeps two L×S
  tensors (probabilities and mask) where autograd keeps three, recomputes the dropped
  probabilities in its backward pass, and applies the scalings to the small L×d products.

The random stream is not ``nn.Dropout``'s, so a run's masks differ from a stock HF run's (as they
differ between any two seeds); the distribution does not. ``trainer.fast_dropout=false`` gives
the stock stream. Under bf16 autocast the masks are the same (they depend on the RNG only) and
attention runs in the dtype of q (bf16). Off the CPU (CUDA has fused dropout kernels), in
evaluation, or for p = 0, everything falls through to PyTorch / HF unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "lora_exp_sdpa"  # the attention implementation name registered with transformers


# Under torch.compile the mask is drawn eagerly (a graph break, as numpy must be): traced, dynamo
# would specialise the graph on each drawn seed and recompile at every step.
@torch.compiler.disable
def keep_mask(shape: tuple[int, ...] | torch.Size, p: float,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of 1s (kept, probability 1 − p, independently per element) and 0s."""
    n = math.prod(shape)
    seed = int(torch.empty((), dtype=torch.int64).random_())  # advances torch's CPU generator
    words = np.random.PCG64DXSM(seed).random_raw((n + 1) // 2)  # 64 random bits = two 32-bit draws
    u = torch.from_numpy(words.view(np.int32)[:n]).view(shape)  # uniform over the 2³² int32 values
    # P(u < threshold) = p. The comparison writes the float mask itself: ~1.0 ms for 3.1M elements
    # on the dev machine, against ~1.6 ms for a bool mask and a cast.
    return torch.ge(u, round(p * 2**32) - 2**31, out=torch.empty(shape, dtype=dtype))


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        mask = keep_mask(x.shape, p, x.dtype).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def _cpu_float(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.is_floating_point()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the CPU mask of :func:`keep_mask`."""
    if not training or p == 0:
        return x
    if not _cpu_float(x) or p >= 1:
        return F.dropout(x, p, training)
    return _Dropout.apply(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same place in the model) drawing its mask as :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:  # rare; callers of an in-place dropout expect their tensor modified
            return F.dropout(x, self.p, self.training, inplace=True)
        return dropout(x, self.p, self.training)


class _AttentionCore(torch.autograd.Function):
    """softmax(s·q·kᵀ + bias) with dropout p, times v; q, k, v of shape (B, H, L|S, d).

    Works on (B·H, L, d) copies so that every product is one batched GEMM reading transposed
    operands in place. Saves q·s, k, v, the probabilities and the 0/1 mask (two L×S tensors
    where autograd would keep three); the backward pass recomputes the dropped probabilities in
    one pass, and the 1/(1 − p) and s factors are applied to the small (L×d) products.
    """

    # Computes in q's dtype (bf16 under bf16 autocast) with autocast off, so that the backward's
    # products, which run outside autocast, see the dtypes the forward saved.
    @staticmethod
    @torch.autocast("cpu", enabled=False)
    def forward(ctx, q, k, v, bias, scaling, p):
        B, H, L, d = q.shape
        k, v = k.to(q.dtype), v.to(q.dtype)
        bias = None if bias is None else bias.to(q.dtype)
        S = k.shape[2]
        qs = q.reshape(B * H, L, d) * scaling
        k3, v3 = k.reshape(B * H, S, d), v.reshape(B * H, S, d)
        scores = torch.bmm(qs, k3.transpose(1, 2))
        if bias is not None:
            scores.view(B, H, L, S).add_(bias)  # bias broadcasts over batch and heads
        probs = torch.softmax(scores, dim=-1)
        mask = keep_mask(probs.shape, p, probs.dtype)
        ctx.scale, ctx.scaling, ctx.shapes = 1.0 / (1.0 - p), scaling, (q.shape, k.shape)
        ctx.save_for_backward(qs, k3, v3, probs, mask)
        return torch.bmm(probs * mask, v3).mul_(ctx.scale).view(B, H, L, d)

    @staticmethod
    def backward(ctx, grad):
        qs, k, v, probs, mask = ctx.saved_tensors
        q_shape, k_shape = ctx.shapes
        grad = grad.reshape(qs.shape)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        dq = dk = dv = None
        if need_v:
            dv = torch.bmm((probs * mask).transpose(1, 2), grad).mul_(ctx.scale).view(k_shape)
        if need_q or need_k:
            # d(probs) = 1/(1-p)·mask·(grad·vᵀ); the 1/(1-p) goes onto dq and dk below (the
            # softmax backward is linear in its incoming gradient).
            dprobs = torch.bmm(grad, v.transpose(1, 2)).mul_(mask)
            dscores = torch._softmax_backward_data(dprobs, probs, -1, probs.dtype)
            if need_q:
                dq = torch.bmm(dscores, k).mul_(ctx.scale * ctx.scaling).view(q_shape)
            if need_k:
                dk = torch.bmm(dscores.transpose(1, 2), qs).mul_(ctx.scale).view(k_shape)
        return dq, dk, dv, None, None, None


# kwargs that ask sdpa for something this path does not do: leave those calls to HF's sdpa.
_SDPA_ONLY = ("position_bias", "cache", "softcap", "s_aux", "sliding_window", "output_attentions")


def attention(module, query, key, value, attention_mask, dropout: float = 0.0,
              scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """HF's ``sdpa`` attention, except in CPU training with attention dropout, where it runs
    :class:`_AttentionCore`. Same signature and return as ``sdpa_attention_forward``."""
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if (dropout == 0 or not _cpu_float(query) or any(kwargs.get(k) for k in _SDPA_ONLY)
            or (attention_mask is None and causal and kv_len != q_len)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    bias = None
    if attention_mask is not None:
        bias = attention_mask
        if attention_mask.dtype == torch.bool:  # sdpa's masks: True = attend
            bias = torch.zeros(attention_mask.shape, dtype=query.dtype).masked_fill_(
                ~attention_mask, torch.finfo(query.dtype).min)
    elif causal and q_len > 1:  # as sdpa's is_causal: query i sees keys j <= i (top-left)
        bias = torch.ones(q_len, kv_len, dtype=torch.bool).triu_(1).to(query.dtype) * \
            torch.finfo(query.dtype).min
    out = _AttentionCore.apply(query, key, value, bias, scaling, dropout)
    return out.transpose(1, 2).contiguous(), None


# A transformers attention implementation, with sdpa's masks, for models to be routed to.
AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> dict[str, int | bool]:
    """Make every ``nn.Dropout`` of ``model`` a :class:`Dropout` and, when the model attends
    through HF's ``sdpa``, route its attention through :func:`attention`.

    Call after the method is applied, so that the method's own dropout (e.g. LoRA's) is swapped
    too. Each module's class is changed in place, not the module replaced: it keeps its identity,
    ``p``, mode and hooks, so a method that hooks a dropout module (AdapterH reads the sublayer's
    output after its dropout, baselines/adapters.py) keeps working. Returns how many modules were
    swapped and whether attention was rerouted.
    """
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Dropout:  # exactly nn.Dropout: subclasses may do more
            module.__class__ = Dropout  # a subclass that adds no state: only forward differs
            swapped += 1
    rerouted = False
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTENTION)
        rerouted = model.config._attn_implementation == ATTENTION
    return {"dropout_modules": swapped, "attention": rerouted}
