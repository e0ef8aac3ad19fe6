"""trainer.cache_frozen_casts (lora_exp/casts.py): a frozen weight's autocast cast is made once and
renewed when the weight changes, with the numbers of autocast itself, bit for bit."""
import copy

import numpy as np
import pytest
import torch
from datasets import Dataset

from lora_exp.casts import CastOnceLinear, cache_frozen_casts, frozen
from lora_exp.data import collate
from lora_exp.dropout import use_fast_dropout
from lora_exp.lora import lora_modules, merged
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.params import set_trainable
from lora_exp.spec import ModelSpec

METHODS = ["lora", "full_ft", "bitfit", "prefix_layer", "adapter_h"]
MODELS = [("tiny_bert", "cls"), ("tiny_gpt2", "lm")]


def _adapted(make_cfg, model, kind, method):
    small = {"prefix_layer": ["method.l_p=4", "method.l_i=2"]}
    cfg = make_cfg([f"model={model}", f"method={method}", "rank=4", *small.get(method, [])])
    net = build_model(cfg.model, kind, 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, kind)
    trained = set(apply_method(net, spec, cfg.method).trainable) | set(spec.head_parameters(net))
    set_trainable(net, trained)
    with torch.no_grad():  # B = 0 (LoRA) would hide the LoRA path
        for p in net.parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.2)
    use_fast_dropout(net)
    return net.train()


def _batch(kind, n=6, seed=3):
    rng = np.random.default_rng(seed)
    ids = [[101, *rng.integers(1000, 5000, size=int(k)).tolist(), 102] for k in rng.integers(4, 20, n)]
    rows = {"input_ids": ids, "labels": ids if kind == "lm" else rng.integers(0, 2, n).tolist()}
    return collate(Dataset.from_dict(rows), np.arange(n), pad_id=0)


def _loss_and_grads(net, batch):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks in both runs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(**batch).loss
    loss.backward()
    return loss, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model,kind", MODELS)
def test_cached_casts_give_autocasts_numbers_bit_for_bit(make_cfg, one_thread, model, kind, method):
    plain = _adapted(make_cfg, model, kind, method)
    cached = copy.deepcopy(plain)
    assert cache_frozen_casts(cached) > 0
    batch = _batch(kind)
    for _ in range(2):  # the second pass reads the casts the first one made
        loss, grads = _loss_and_grads(plain, batch)
        loss_c, grads_c = _loss_and_grads(cached, batch)
        assert torch.equal(loss_c, loss)
        assert grads_c.keys() == grads.keys() and grads
        assert all(torch.equal(grads_c[n], grads[n]) for n in grads), method


def test_a_frozen_weight_is_cast_once_and_trained_ones_never(make_cfg, one_thread):
    net = _adapted(make_cfg, "tiny_bert", "cls", "bitfit")  # frozen weights, trained biases
    cache_frozen_casts(net)
    dense = net.bert.encoder.layer[0].intermediate.dense
    assert type(dense) is CastOnceLinear
    assert frozen(dense, "weight") is dense.weight  # no autocast: the fp32 weight itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = frozen(dense, "weight")
        assert first.dtype == torch.bfloat16 and torch.equal(first, dense.weight.to(torch.bfloat16))
        assert frozen(dense, "weight") is first  # the same cast, not a new one
        assert frozen(dense, "bias") is dense.bias  # trained: left to autocast
        with torch.inference_mode():
            assert frozen(dense, "weight") is dense.weight  # an inference tensor is never kept
    assert net.classifier.weight.requires_grad
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert frozen(net.classifier, "weight") is net.classifier.weight


def test_the_cast_is_renewed_when_the_frozen_weight_changes(make_cfg, one_thread):
    net = _adapted(make_cfg, "tiny_bert", "cls", "lora")
    cache_frozen_casts(net)
    _, layer = next(lora_modules(net))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = frozen(layer, "weight")
        with merged(net):  # W0 + ΔW, in place
            during = frozen(layer, "weight")
            assert torch.equal(during, layer.weight.to(torch.bfloat16)) and not torch.equal(during, before)
        after = frozen(layer, "weight")
        assert torch.equal(after, before) and after is not during
        with torch.no_grad():
            layer.weight.copy_(torch.zeros_like(layer.weight))  # e.g. loading a checkpoint
        assert not frozen(layer, "weight").any()


def test_merged_evaluation_with_cached_casts_equals_without(make_cfg, one_thread):
    plain = _adapted(make_cfg, "tiny_bert", "cls", "lora").eval()
    cached = copy.deepcopy(plain)
    cache_frozen_casts(cached)
    x = _batch("cls")
    x.pop("labels")

    def hidden(net):  # the encoder's output: the tiny head's logits barely depend on it
        return net.bert(**x).last_hidden_state

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unmerged = hidden(cached)  # casts W0: this cast must not be used after the merge
        assert torch.equal(unmerged, hidden(plain))
        with merged(plain), merged(cached):
            folded = hidden(cached)
            assert torch.equal(folded, hidden(plain)) and not torch.equal(folded, unmerged)
        assert torch.equal(hidden(cached), unmerged)
