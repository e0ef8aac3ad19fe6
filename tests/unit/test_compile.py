"""``trainer.compile``: the compiled training step gives the eager step's losses and gradients,
its recompilations are bounded by the length buckets, and a failing compiler leaves a run
eager with a warning, never with a wrong step.

Compile time dominates: a 2-layer d=32 BERT, few shapes, and no dropout where the test is about
shapes (each CPU dropout is a graph break: more graphs to compile).
"""
import copy
import json
import logging

import numpy as np
import pytest
import torch
from datasets import Dataset

from lora_exp import compiled
from lora_exp.compiled import TrainingSteps, bucket_lengths, pad_length
from lora_exp.data import collate
from lora_exp.dropout import use_fast_dropout
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.optim import make_optimizer
from lora_exp.params import set_trainable
from lora_exp.spec import ModelSpec
from lora_exp.trainer import run, train_step

PAD = 0


def _model(make_cfg, *overrides):
    """tiny_bert with LoRA, the method's parameters and the head trainable, in training mode."""
    cfg = make_cfg(["model=tiny_bert", "rank=4", "trainer.precision=fp32", *overrides])
    net = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    set_trainable(net, set(apply_method(net, spec, cfg.method).trainable) | set(spec.head_parameters(net)))
    with torch.no_grad():  # a trained-looking B, so the LoRA path matters in the gradients
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return net.train(), cfg.trainer


def _rows(lengths, seed=3):
    rng = np.random.default_rng(seed)
    ids = [[101, *rng.integers(1000, 5000, size=int(k) - 2).tolist(), 102] for k in lengths]
    return Dataset.from_dict({"input_ids": ids, "token_type_ids": [[0] * len(r) for r in ids],
                              "labels": rng.integers(0, 2, size=len(ids)).tolist()})


def _train(net, tcfg, ds, groups, steps=None, buckets=None):
    """Losses and final trained parameters of one optimizer step per group, from seed 7: through
    ``steps`` if given, else eager with the batches padded to ``buckets`` (None: dynamic)."""
    torch.manual_seed(7)
    opt = make_optimizer(net, tcfg)
    scaler = torch.amp.GradScaler(enabled=False)
    cpu = torch.device("cpu")
    losses = []
    for group in groups:
        def step(m):
            return train_step(m, group, ds, PAD, cpu, None, opt, scaler, tcfg,
                              steps.buckets if steps else buckets)
        losses.append(steps.run(step) if steps else step(net))
    return losses, {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}


def test_bucket_lengths_and_pad_length():
    assert bucket_lengths(128, 4) == [32, 64, 96, 128]
    assert bucket_lengths(64, 1) == [64]
    assert bucket_lengths(100, 3) == [34, 67, 100]  # round up: the last is max_length
    assert bucket_lengths(8, 20) == [1, 2, 3, 4, 5, 6, 7, 8]  # no bucket twice
    buckets = [32, 64, 96, 128]
    assert [pad_length(n, buckets) for n in (1, 32, 33, 100, 128)] == [32, 32, 64, 128, 128]
    assert pad_length(130, buckets) == 130  # above the largest: its own length, not cut


def test_compiled_steps_give_the_eager_losses_and_parameters(make_cfg, one_thread):
    """With the CPU dropout on (graph breaks, masks drawn eagerly from torch's RNG), three
    compiled AdamW steps give the eager losses and weights.

    The eager steps pad to the same buckets: a dropout mask covers the padded positions too, so
    another padded length draws other masks (the same distribution; padding itself changes no
    row's result, tests/unit/test_speedups_change_nothing.py).
    """
    net, tcfg = _model(make_cfg)
    use_fast_dropout(net)
    other = copy.deepcopy(net)
    ds = _rows([5, 9, 17, 12, 20, 7, 4, 11, 15, 6, 19, 8])
    groups = [[np.arange(i, i + 4)] for i in (0, 4, 8)]
    buckets = bucket_lengths(64, 2)  # every row <= 32: one shape
    eager_losses, eager_params = _train(net, tcfg, ds, groups, buckets=buckets)
    steps = TrainingSteps(other, True, buckets)
    losses, params = _train(other, tcfg, ds, groups, steps)
    assert not steps.fell_back and steps.graphs > 0 and steps.shapes == {(4, 32)}
    np.testing.assert_allclose(losses, eager_losses, rtol=0, atol=1e-5)
    for name, value in eager_params.items():
        torch.testing.assert_close(params[name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_recompilations_are_bounded_by_the_buckets(make_cfg, one_thread, monkeypatch):
    # What recompiles is dynamo's decision (its guards on the input shapes); the backend only
    # turns each graph into code, so the graphs run as traced here instead of through inductor.
    monkeypatch.setattr(compiled, "inductor", lambda gm, example_inputs: gm.forward)
    net, tcfg = _model(make_cfg, "model.dropout=0")  # fewer graph breaks: fewer graphs
    buckets = bucket_lengths(64, 2)
    lengths = list(range(4, 64, 3))  # 20 distinct lengths
    ds = _rows(lengths)
    order = np.random.default_rng(0).permutation(len(lengths))
    groups = [[order[i:i + 2]] for i in range(0, 20, 2)]  # 10 batches, 10 distinct longest rows
    steps = TrainingSteps(net, True, buckets)
    _train(net, tcfg, ds, groups[:1], steps)
    per_shape = steps.graphs  # the graphs of one shape (more than one at a graph break)
    _train(net, tcfg, ds, groups[1:], steps)
    assert not steps.fell_back
    assert steps.shapes == {(2, 32), (2, 64)}  # a shape per bucket, not per length
    # Each new shape recompiles at most the first shape's graphs, plus once more the first
    # shape's: HF sets config.problem_type at the first forward, which dynamo guards on.
    assert per_shape <= steps.graphs <= per_shape * (len(steps.shapes) + 1)
    assert steps.record() | {"compile_s": 0, "graphs": 0} == {
        "enabled": True, "fell_back": False, "error": None, "graphs": 0, "shapes": 2,
        "buckets": [32, 64], "compile_s": 0}


def _failing_backend(gm, example_inputs):
    raise RuntimeError("no C compiler (simulated)")


def test_a_failing_compiler_falls_back_to_the_eager_losses(make_cfg, one_thread, monkeypatch, caplog):
    net, tcfg = _model(make_cfg)
    use_fast_dropout(net)  # dropout on: the redone step must draw the same masks
    other = copy.deepcopy(net)
    ds = _rows([5, 9, 17, 12, 20, 7, 4, 11])
    groups = [[np.arange(0, 2), np.arange(2, 4)], [np.arange(4, 8)]]  # accumulation: 2 micro-batches
    eager_losses, eager_params = _train(net, tcfg, ds, groups)
    monkeypatch.setattr(compiled, "inductor", _failing_backend)
    steps = TrainingSteps(other, True, bucket_lengths(64, 2))
    with caplog.at_level(logging.WARNING, logger="lora_exp"):
        losses, params = _train(other, tcfg, ds, groups, steps)
    assert steps.fell_back and "no C compiler (simulated)" in steps.error
    assert any("training eagerly" in r.getMessage() for r in caplog.records)
    assert losses == eager_losses  # the eager step itself: bit for bit
    for name, value in eager_params.items():
        assert torch.equal(params[name], value), name


def test_a_step_failing_halfway_is_redone_from_its_start(make_cfg, one_thread):
    """A failure after part of the step's gradients accumulated (e.g. a backward compiled
    lazily at the second micro-batch): the redone step drops them and draws the same masks."""
    net, tcfg = _model(make_cfg)
    use_fast_dropout(net)
    other = copy.deepcopy(net)
    ds = _rows([5, 9, 17, 12])
    group = [np.arange(0, 2), np.arange(2, 4)]
    eager_losses, eager_params = _train(net, tcfg, ds, [group])

    steps = TrainingSteps(other, False, [64])
    steps.compiled = torch.nn.Identity()  # stands for the compiled model; never called
    torch.manual_seed(7)
    opt, scaler = make_optimizer(other, tcfg), torch.amp.GradScaler(enabled=False)

    def step(m):
        if m is steps.compiled:  # one micro-batch's forward + backward, then the failure
            other(**collate(ds, group[0], PAD)).loss.backward()
            raise RuntimeError("backward compilation failed (simulated)")
        return train_step(m, group, ds, PAD, torch.device("cpu"), None, opt, scaler, tcfg)

    assert steps.run(step) == eager_losses[0]
    assert steps.fell_back and "simulated" in steps.error
    for name, value in eager_params.items():
        assert torch.equal(other.get_parameter(name), value), name


def test_a_compiled_run_records_its_compilations(make_cfg, data_dir, tmp_path):
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_bert", "trainer=smoke", "trainer.max_steps=2",
                    "trainer.compile=true", "trainer.compile_buckets=1", "model.dropout=0",
                    "trainer.eval_every=2"])
    summary = run(cfg, tmp_path)
    assert summary["status"] == "ok"
    record = json.loads((tmp_path / "summary.json").read_text())["compile"]
    assert record["enabled"] and not record["fell_back"] and record["buckets"] == [64]
    assert record["shapes"] == 1 and record["graphs"] >= 1
