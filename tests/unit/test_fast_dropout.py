"""trainer.fast_dropout (lora_exp/dropout.py) keeps dropout's definition: each element kept with
probability 1 - p independently, kept ones scaled by 1/(1 - p), the same mask in the backward
pass and under replay; attention with dropout equals softmax(s·QKᵀ + mask)·(M/(1-p))·V."""
import math

import pytest
import torch
from torch import nn

from lora_exp import dropout as fast
from lora_exp.models import build_model


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_drops_a_share_p_at_even_and_odd_positions(p):
    n = 2_000_000
    mask = fast.keep_mask((n,), p)
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    sigma = math.sqrt(p * (1 - p) / (n // 2))  # binomial standard error of a half
    # Two draws share each 64-bit word: both halves must be unbiased, not just their mean.
    for half in (mask[0::2], mask[1::2]):
        assert abs((1 - half.mean().item()) - p) < 5 * sigma


def test_keep_mask_follows_torch_seed():
    torch.manual_seed(3)
    a, b = fast.keep_mask((1000,), 0.3), fast.keep_mask((1000,), 0.3)
    torch.manual_seed(3)
    assert torch.equal(fast.keep_mask((1000,), 0.3), a) and not torch.equal(a, b)


def test_dropout_scales_the_kept_values_and_masks_the_gradient_alike():
    x = torch.randn(300, 200, requires_grad=True)
    y = fast.dropout(x, 0.25, training=True)
    kept = y != 0
    assert 0.70 < kept.float().mean().item() < 0.80
    torch.testing.assert_close(y[kept], (x * (1 / 0.75))[kept], rtol=0, atol=0)
    y.sum().backward()
    # d(sum)/dx = 1/(1-p) where kept, 0 where dropped: the forward's mask, not a new one
    torch.testing.assert_close(x.grad, kept.float() / 0.75, rtol=1e-7, atol=0)


def test_dropout_is_the_identity_in_eval_and_at_p_zero():
    x = torch.randn(10, 10)
    assert fast.dropout(x, 0.3, training=False) is x and fast.dropout(x, 0.0) is x
    module = fast.Dropout(0.3).eval()
    assert module(x) is x and isinstance(module, nn.Dropout)
    assert torch.equal(fast.dropout(x, 1.0), torch.zeros_like(x))


def _reference(q, k, v, mask, scaling, keep, p):
    """softmax(s·QKᵀ + additive mask) · (keep/(1-p)) · V, as (B, L, H, d)."""
    scores = q @ k.transpose(-1, -2) * scaling
    if mask is not None:
        scores = scores + mask
    return ((torch.softmax(scores, -1) * keep / (1 - p)) @ v).transpose(1, 2)


class _Module:  # what HF passes as `module`: only these attributes are read
    def __init__(self, is_causal, groups=1):
        self.is_causal, self.num_key_value_groups = is_causal, groups


@pytest.mark.parametrize("case", ["no_mask", "padding", "causal", "float_mask", "gqa"])
def test_attention_with_dropout_equals_the_formula_and_its_gradients(case):
    B, H, L, d, p, s = 2, 4, 6, 8, 0.2, 0.3
    groups = 2 if case == "gqa" else 1
    q = torch.randn(B, H, L, d, requires_grad=True)
    k = torch.randn(B, H // groups, L, d, requires_grad=True)
    v = torch.randn(B, H // groups, L, d, requires_grad=True)
    mask, additive = None, None
    if case == "padding":  # sdpa's boolean mask, True = attend; row 1 has 2 padded keys
        mask = torch.ones(B, 1, L, L, dtype=torch.bool)
        mask[1, :, :, -2:] = False
        additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    elif case == "float_mask":
        mask = additive = torch.randn(B, 1, L, L)
    elif case == "causal":
        additive = torch.zeros(L, L).masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1),
                                                 torch.finfo(torch.float32).min)
    torch.manual_seed(11)
    out, weights = fast.attention(_Module(case == "causal", groups), q, k, v, mask, dropout=p,
                                  scaling=s)
    torch.manual_seed(11)  # the same draw: the mask the attention used
    keep = fast.keep_mask((B, H, L, L), p)
    kk, vv = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    ref = _reference(q, kk, vv, additive, s, keep, p)
    assert weights is None and out.shape == (B, L, H, d)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    ours = torch.autograd.grad((out * g).sum(), [q, k, v])
    theirs = torch.autograd.grad((ref * g).sum(), [q, k, v])
    for a, b, name in zip(ours, theirs, "qkv"):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_attention_skips_the_gradients_nothing_needs():
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8, requires_grad=True)
    out, _ = fast.attention(_Module(False), q, k, v, None, dropout=0.1)
    dq, dv = torch.autograd.grad(out.sum(), [q, v])  # k is frozen input: no dk computed
    assert dq.shape == q.shape and dv.shape == v.shape and k.grad is None


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_gpt2"])
def test_fast_dropout_swaps_every_dropout_and_changes_no_evaluation(make_cfg, model):
    cfg = make_cfg([f"model={model}"])
    kind = "lm" if model == "tiny_gpt2" else "cls"
    stock = build_model(cfg.model, kind, 2, seed=0)
    ours = build_model(cfg.model, kind, 2, seed=0)
    n_dropout = sum(type(m) is nn.Dropout for m in stock.modules())
    done = fast.use_fast_dropout(ours)
    assert done == {"dropout_modules": n_dropout, "attention": True} and n_dropout > 0
    assert not any(type(m) is nn.Dropout for m in ours.modules())
    ids = torch.randint(5, 100, (3, 9))
    attention = torch.ones_like(ids)
    attention[0, -3:] = 0
    with torch.no_grad():
        a = stock.eval()(input_ids=ids, attention_mask=attention).logits
        b = ours.eval()(input_ids=ids, attention_mask=attention).logits
    assert torch.equal(a, b)  # evaluation runs HF's sdpa untouched
    ours.train()
    loss = ours(input_ids=ids, attention_mask=attention,
                **({"labels": ids} if kind == "lm" else {"labels": torch.tensor([0, 1, 0])})).loss
    loss.backward()
    assert math.isfinite(loss.item())
