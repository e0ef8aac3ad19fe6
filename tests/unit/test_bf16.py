"""bf16 autocast on the CPU: the same losses and gradients as fp32 to bf16's precision, for every
method; fp32 master weights and AdamW moments; merged evaluation equal to unmerged.

bf16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ ≈ 0.2 %): the tolerances below are a few
such roundings accumulated through two tiny blocks, far tighter than any bug (a missed cast, a
half-precision parameter, a mask applied twice) would land.
"""
import numpy as np
import pytest
import torch

from lora_exp.data import collate
from lora_exp.dropout import use_fast_dropout
from lora_exp.errors import ConfigError
from lora_exp.lora import lora_modules, merged
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.optim import make_optimizer
from lora_exp.params import set_trainable
from lora_exp.runtime import pick_precision
from lora_exp.spec import ModelSpec
from lora_exp.trainer import train_step

METHODS = ["lora", "full_ft", "ft_top2", "bitfit", "prefix_embed", "prefix_layer", "adapter_h",
           "adapter_l", "adapter_p", "adapter_d"]
MODELS = [("tiny_bert", "cls"), ("tiny_gpt2", "lm")]


def _adapted(make_cfg, model, kind, method, fast_dropout=True):
    small = {"prefix_embed": ["method.l_p=4", "method.l_i=2"],  # sizes for 2 tiny blocks
             "prefix_layer": ["method.l_p=4", "method.l_i=2"], "adapter_d": ["method.drop_layers=1"]}
    cfg = make_cfg([f"model={model}", f"method={method}", "rank=4", *small.get(method, [])])
    net = build_model(cfg.model, kind, 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, kind)
    trained = set(apply_method(net, spec, cfg.method).trainable) | set(spec.head_parameters(net))
    set_trainable(net, trained)
    with torch.no_grad():  # B = 0 (LoRA) or zero up-projections would hide the method's path
        for name, p in net.named_parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.2)
    if fast_dropout:
        use_fast_dropout(net)
    return net.train(), cfg


def _batch(kind, n=6, seed=3):
    rng = np.random.default_rng(seed)
    ids = [[101, *rng.integers(1000, 5000, size=int(k)).tolist(), 102] for k in rng.integers(4, 20, n)]
    rows = {"input_ids": ids, "labels": rng.integers(0, 2, size=n).tolist()}
    if kind == "lm":
        rows["labels"] = ids  # every token is a target
    from datasets import Dataset
    return collate(Dataset.from_dict(rows), np.arange(n), pad_id=0)


def _loss_and_grads(net, batch, dtype):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks in both precisions (drawn from torch's RNG)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        loss = net(**batch).loss
    loss.backward()
    return loss.float(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model,kind", MODELS)
def test_bf16_losses_and_gradients_match_fp32(make_cfg, one_thread, model, kind, method):
    net, _ = _adapted(make_cfg, model, kind, method)
    batch = _batch(kind)
    loss32, g32 = _loss_and_grads(net, batch, None)
    loss16, g16 = _loss_and_grads(net, batch, torch.bfloat16)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=5e-3, atol=0)
    assert g16.keys() == g32.keys() and g32
    for name in g32:
        assert g16[name].dtype == torch.float32, name  # gradients land in the fp32 parameters
    flat32 = torch.cat([g32[n].flatten() for n in g32])
    flat16 = torch.cat([g16[n].flatten() for n in g32])
    rel = ((flat16 - flat32).norm() / flat32.norm()).item()
    assert rel < 0.03, rel  # measured 0.002-0.009
    cos = torch.nn.functional.cosine_similarity(flat16, flat32, dim=0).item()
    assert cos > 0.999, cos


def test_bf16_is_really_used(make_cfg, one_thread):
    """The comparison above must not pass because autocast did nothing: the products run in bf16."""
    net, _ = _adapted(make_cfg, "tiny_bert", "cls", "lora")
    seen = []
    hook = net.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(**_batch("cls"))
    hook.remove()
    assert seen == [torch.bfloat16]


@pytest.mark.parametrize("method", ["lora", "full_ft"])
def test_master_weights_and_adamw_moments_stay_fp32(make_cfg, one_thread, method):
    net, cfg = _adapted(make_cfg, "tiny_bert", "cls", method)
    from datasets import Dataset
    rng = np.random.default_rng(0)
    ds = Dataset.from_dict({"input_ids": [[101, *rng.integers(1000, 5000, 8).tolist(), 102]] * 8,
                            "labels": [0, 1] * 4})
    opt = make_optimizer(net, cfg.trainer)
    before = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    scaler = torch.amp.GradScaler(enabled=False)
    for _ in range(2):
        train_step(net, [np.arange(8)], ds, 0, torch.device("cpu"), torch.bfloat16, opt, scaler,
                   cfg.trainer)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    states = [opt.state[p] for p in net.parameters() if p.requires_grad]
    assert states and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in states)
    moved = [n for n, p in net.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved  # the steps updated the fp32 weights
    # bf16 would round an update of lr·(Adam step) ≈ 1e-3 away on weights of size ~1 in many
    # elements; in fp32 every moved weight moved by less than bf16's spacing is still a change.
    small = [n for n in moved if ((net.get_parameter(n) - before[n]).abs() <
                                  before[n].abs() * 2 ** -8).any()]
    assert small


def test_merged_evaluation_under_bf16_equals_unmerged(make_cfg, one_thread):
    net, _ = _adapted(make_cfg, "tiny_bert", "cls", "lora")
    net.eval()
    x = _batch("cls")
    x.pop("labels")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unmerged = net(**x).logits.float()
        with merged(net):
            folded = net(**x).logits.float()
    assert lora_modules(net)  # and W0 is back: the unmerged model still gives its logits
    torch.testing.assert_close(folded, unmerged, rtol=3e-2, atol=3e-2)
    assert not torch.equal(folded, torch.zeros_like(folded))


def test_auto_precision_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("lora_exp.runtime.native_bf16", lambda: True)
    assert pick_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr("lora_exp.runtime.native_bf16", lambda: False)
    assert pick_precision("auto", cpu) is None
    assert pick_precision("bf16", cpu) == torch.bfloat16  # asked for: used even if emulated
    assert pick_precision("fp32", cpu) is None
    with pytest.raises(ConfigError, match="fp16"):
        pick_precision("fp16", cpu)
