"""Gradient accumulation: k micro-batches (trainer.grad_accum = k) make the same optimizer step
as one batch of all their rows, also when the micro-batches differ in size (the trainer weights
each micro-batch's mean loss by its share of the step's rows)."""
import copy

import numpy as np
import pytest
import torch
from datasets import Dataset

from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.spec import ModelSpec
from lora_exp.params import set_trainable
from lora_exp.trainer import train_step

PAD = 0


def _rows(n: int, seed: int = 3) -> Dataset:
    """Classification rows of different lengths ([CLS] ... [SEP]), so batches are padded."""
    rng = np.random.default_rng(seed)
    ids = [[101, *rng.integers(1000, 5000, size=int(k)).tolist(), 102]
           for k in rng.integers(3, 15, size=n)]
    return Dataset.from_dict({"input_ids": ids, "token_type_ids": [[0] * len(r) for r in ids],
                              "labels": rng.integers(0, 2, size=n).tolist()})


def _model(make_cfg, model_name, method):
    cfg = make_cfg([f"model={model_name}", f"method={method}", "rank=4"])
    net = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    result = apply_method(net, spec, cfg.method)
    set_trainable(net, set(result.trainable) | set(spec.head_parameters(net)))
    if method == "lora":  # B = 0 at init would leave every A without gradient
        with torch.no_grad():
            for name, p in net.named_parameters():
                if ".lora_B." in name:
                    p.normal_(0, 0.2)
    # eval(): no dropout, so both ways see the same function; train_step leaves the mode alone.
    return net.eval()


def _one_step(model, ds, group, tcfg):
    """The trainer's step on a copy; SGD with lr 1, so each parameter moves by its gradient
    (AdamW's first step is ~lr·sign(g) and would hide a wrongly scaled gradient)."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_step(model, group, ds, PAD, torch.device("cpu"), None, opt, scaler, tcfg)
    return loss, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model_name,method", [("tiny_bert", "full_ft"), ("tiny_gpt2", "lora")])
@pytest.mark.parametrize("sizes", [(3, 2), (2, 2, 2), (1, 4, 2)], ids=lambda s: "+".join(map(str, s)))
def test_micro_batches_make_the_step_of_one_batch(make_cfg, model_name, method, sizes):
    k, n = len(sizes), sum(sizes)
    # Clipping would act on the accumulated gradient either way; off, the step is the raw gradient.
    tcfg = make_cfg([f"trainer.grad_accum={k}", "trainer.max_grad_norm=0"]).trainer
    model, ds = _model(make_cfg, model_name, method), _rows(n)
    order = np.random.default_rng(0).permutation(n)  # any rows, in any order
    cuts = np.cumsum(sizes)[:-1]
    micro = np.split(order, cuts)
    assert len(micro) == tcfg.grad_accum and [len(m) for m in micro] == list(sizes)

    loss_big, after_big = _one_step(model, ds, [order], tcfg)
    loss_acc, after_acc = _one_step(model, ds, micro, tcfg)

    head = {name: p for name, p in model.named_parameters()
            if name.startswith(("classifier.", "score."))}
    assert after_acc.keys() == after_big.keys() and head.keys() <= after_big.keys()
    assert head and all(not torch.equal(after_big[name], p) for name, p in head.items())  # a step
    assert loss_acc == pytest.approx(loss_big, abs=1e-6)  # the step's loss: the mean over n rows
    for name, p in after_big.items():
        torch.testing.assert_close(after_acc[name], p, rtol=0, atol=1e-6, msg=name)
