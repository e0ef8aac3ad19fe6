"""The speed and memory measures of the trainer change no result.

Dynamic padding, gradient checkpointing, merged evaluation and the pruned backward pass must
give the numbers the plain computation gives; benchmarks/run.py measures what they save.
"""
import copy
import json

import numpy as np
import pytest
import torch
from datasets import Dataset

import lora_exp.trainer as trainer_mod
from lora_exp.data import collate
from lora_exp.dropout import use_fast_dropout
from lora_exp.efficiency import checkpointing_on, enable_gradient_checkpointing
from lora_exp.lora import lora_modules, merged
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.params import set_trainable
from lora_exp.spec import ModelSpec


def _adapted(make_cfg, model="tiny_bert", method="lora", kind="cls"):
    cfg = make_cfg([f"model={model}", f"method={method}", "rank=4"])
    net = build_model(cfg.model, kind, 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, kind)
    result = apply_method(net, spec, cfg.method)
    trained = set(result.trainable) | set(spec.head_parameters(net))
    set_trainable(net, trained)
    with torch.no_grad():  # a trained-looking B (B = 0 would hide every LoRA effect)
        for _, mod in lora_modules(net):
            for b in mod.lora_B.parameters():  # one B, or one per slice of a fused layer
                b.normal_(0, 0.2)
    return net, spec


def _rows(n=6, seed=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 20, size=n)
    ids = [[101, *rng.integers(1000, 5000, size=int(k)).tolist(), 102] for k in lengths]
    return Dataset.from_dict({"input_ids": ids, "token_type_ids": [[0] * len(r) for r in ids],
                              "labels": rng.integers(0, 2, size=n).tolist()})


def test_collate_lays_each_row_out_in_order_and_pads_the_rest():
    ds = _rows()
    idx = np.array([4, 0, 2])  # any order: the batch follows idx
    batch = collate(ds, idx, pad_id=7)
    rows = [ds[int(i)]["input_ids"] for i in idx]
    assert batch["input_ids"].shape == (3, max(map(len, rows))) and batch["input_ids"].dtype == torch.long
    for b, r in enumerate(rows):
        assert batch["input_ids"][b, :len(r)].tolist() == r
        assert (batch["input_ids"][b, len(r):] == 7).all()
        assert batch["attention_mask"][b].tolist() == [1] * len(r) + [0] * (batch["input_ids"].shape[1] - len(r))
    assert batch["labels"].tolist() == [ds[int(i)]["labels"] for i in idx]
    with pytest.raises(ValueError, match="does not fit"):  # a static width below a row's length
        collate(ds, idx, pad_id=0, pad_to=3)


def test_dynamic_padding_gives_the_losses_of_padding_to_max_length(make_cfg):
    net, _ = _adapted(make_cfg)
    net.eval()
    ds, idx = _rows(), np.arange(6)
    dynamic = collate(ds, idx, pad_id=0)
    padded = collate(ds, idx, pad_id=0, pad_to=128)
    assert dynamic["input_ids"].shape[1] < 30 and padded["input_ids"].shape[1] == 128
    with torch.no_grad():
        per_row = [torch.nn.functional.cross_entropy(net(**{k: v for k, v in b.items() if k != "labels"})
                                                     .logits, b["labels"], reduction="none")
                   for b in (dynamic, padded)]
    # Same rows, same math; only the GEMM shapes differ, so the float sums may differ in the
    # last bits: 1e-6 relative is far below any effect padding could have (it is masked out).
    torch.testing.assert_close(per_row[0], per_row[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fast_dropout", [False, True])
@pytest.mark.parametrize("model,kind", [("tiny_bert", "cls"), ("tiny_gpt2", "lm")])
def test_gradient_checkpointing_gives_equal_losses_and_gradients(make_cfg, model, kind, fast_dropout):
    net, _ = _adapted(make_cfg, model, kind=kind)
    if fast_dropout:  # its masks come from torch's RNG state, which checkpointing restores
        use_fast_dropout(net)
    net.train()  # dropout on: checkpointing must replay the same masks
    other = copy.deepcopy(net)
    enable_gradient_checkpointing(other)
    batch = collate(_rows(), np.arange(6), pad_id=0)
    if kind == "lm":
        batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                 "labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)}
    results = []
    for m in (net, other):
        torch.manual_seed(7)
        loss = m(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()
                                        if p.requires_grad}))
    assert checkpointing_on(other) and not checkpointing_on(net)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    assert results[0][1].keys() == results[1][1].keys() and len(results[0][1]) > 0
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("model,kind", [("tiny_bert", "cls"), ("tiny_gpt2", "lm")])
def test_merged_evaluation_equals_unmerged_and_restores_w0_exactly(make_cfg, model, kind):
    net, _ = _adapted(make_cfg, model, kind=kind)
    net.eval()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = collate(_rows(), np.arange(6), pad_id=0)
    x = {k: v for k, v in x.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        unmerged = net(**x).logits
        with merged(net):
            assert all(mod.merged for _, mod in lora_modules(net))
            folded = net(**x).logits
    torch.testing.assert_close(folded, unmerged, rtol=1e-5, atol=1e-5)
    assert not any(mod.merged for _, mod in lora_modules(net))
    for n, p in net.named_parameters():  # W0 back bit for bit, not W0 + ΔW − ΔW
        assert torch.equal(p, before[n]), n


def _block_inputs_needing_grad(net, spec) -> list[bool]:
    needs = []

    def record(module, args, kwargs):
        needs.append(kwargs.get("hidden_states", args[0] if args else None).requires_grad)

    hooks = [b.register_forward_pre_hook(record, with_kwargs=True) for b in spec.block_modules(net)]
    net.train()
    net(**collate(_rows(), np.arange(6), 0))
    for h in hooks:
        h.remove()
    return needs


@pytest.mark.parametrize("method,expected", [("lora", [False, True, True, True]),
                                             ("ft_top2", [False, False, False, True]),
                                             ("full_ft", [True, True, True, True])])
def test_no_backward_below_the_lowest_trainable_parameter(make_cfg, method, expected):
    """Autograd builds no backward graph where nothing below needs a gradient: LoRA's gradient
    stops at block 0's input (embeddings frozen), FT^Top2's at block 2's input of 4 blocks."""
    cfg = make_cfg(["model=tiny_bert", "model.architecture.num_hidden_layers=4",
                    f"method={method}", "rank=4"])
    net = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    result = apply_method(net, spec, cfg.method)
    set_trainable(net, set(result.trainable) | set(spec.head_parameters(net)))
    assert _block_inputs_needing_grad(net, spec) == expected


def test_trainer_run_with_gradient_checkpointing_matches_without(make_cfg, data_dir, tmp_path):
    history = {}
    for flag in ("false", "true"):
        cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_bert", "task=rte", "trainer=smoke",
                        f"trainer.gradient_checkpointing={flag}", "trainer.eval_every=2"])
        assert trainer_mod.run(cfg, tmp_path / flag)["status"] == "ok"
        history[flag] = [json.loads(line) for line in (tmp_path / flag / "metrics.jsonl").open()]
    assert len(history["true"]) == len(history["false"]) == 2
    for with_ckpt, without in zip(history["true"], history["false"]):
        assert with_ckpt == pytest.approx(without, rel=1e-5)  # train loss and dev metrics


def test_lora_linear_fused_path_matches_the_plain_formula_and_runs_under_autocast():
    from lora_exp.lora import LoRALinear

    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(12, 10), rank=3, alpha=6)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(2, 5, 12, requires_grad=True)
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias) + \
        (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * 2.0  # h = W0·x + (α/r)·B·A·x
    fused = layer(x)
    torch.testing.assert_close(fused, plain)
    g_plain = torch.autograd.grad(plain.sum(), [x, layer.lora_A.weight, layer.lora_B.weight])
    g_fused = torch.autograd.grad(fused.sum(), [x, layer.lora_A.weight, layer.lora_B.weight])
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # AMP: half-precision W0·x, fp32 B
        low = layer(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), plain, rtol=5e-2, atol=5e-2)
    low.float().sum().backward()
    assert layer.lora_B.weight.grad is not None and layer.lora_B.weight.grad.dtype == torch.float32
