"""LoRA layers: equal outputs at init, merge/unmerge, strict merged loading, peft format, switching."""
import copy

import pytest
import torch
from torch import nn

from lora_exp import export
from lora_exp.lora import (LoRAFusedLinear, LoRALinear, base_state_dict, lora_modules,
                           merge_lora, unmerge_lora)
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.spec import ModelSpec
from lora_exp.errors import ConfigError

RANK = 4
MODELS = ["tiny_bert", "tiny_gpt2"]


def _inputs(vocab=30522, B=3, T=11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 7:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def _model(make_cfg, name, targets="[wq,wv]", rank=RANK):
    cfg = make_cfg([f"model={name}", f"rank={rank}", f"method.targets={targets}", "method.alpha=8"])
    base = build_model(cfg.model, "cls", 2, seed=0).eval()
    model = copy.deepcopy(base)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    result = apply_method(model, spec, cfg.method)
    return cfg, base, model.eval(), spec, result


def _randomise_b(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in lora_modules(model):
            for b in mod.lora_B.parameters() if isinstance(mod.lora_B, nn.ModuleDict) else [mod.lora_B.weight]:
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", MODELS)
def test_init_output_equals_base(make_cfg, name):
    _, base, model, _, _ = _model(make_cfg, name)
    x = _inputs()
    assert torch.equal(base(**x).logits, model(**x).logits)  # B = 0: bit-identical


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_weight_is_reused_not_copied(make_cfg, name):
    _, _, model, _, _ = _model(make_cfg, name)
    path, mod = next(iter(lora_modules(model)))
    assert isinstance(mod, LoRAFusedLinear if name == "tiny_gpt2" else LoRALinear)
    assert mod.weight is dict(model.named_parameters())[f"{path}.weight"]


@pytest.mark.parametrize("name", MODELS)
def test_merge_unmerge_and_strict_load(make_cfg, name):
    _, base, model, _, _ = _model(make_cfg, name)
    _randomise_b(model)
    x = _inputs()
    w_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unmerged = model(**x).logits
    assert not torch.allclose(unmerged, base(**x).logits, atol=1e-4)  # the adapter does something
    assert merge_lora(model) > 0
    merged = model(**x).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    # The merged weights load strictly into the untouched HF model and give the same outputs.
    vanilla = copy.deepcopy(base)
    vanilla.load_state_dict(base_state_dict(model), strict=True)
    torch.testing.assert_close(vanilla(**x).logits, unmerged, atol=1e-5, rtol=1e-5)
    assert unmerge_lora(model) > 0
    torch.testing.assert_close(model(**x).logits, unmerged, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, w_before[n], atol=1e-6, rtol=0)


def test_merge_is_explicit_not_eval(make_cfg):
    _, _, model, _, _ = _model(make_cfg, "tiny_bert")
    _randomise_b(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.eval()
    model.train()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert merge_lora(model) == 4 and merge_lora(model) == 0  # idempotent


def test_gpt2_fused_lora_touches_only_q_and_v_slices(make_cfg):
    cfg, base, model, _, _ = _model(make_cfg, "tiny_gpt2")
    _randomise_b(model)
    d = cfg.model.architecture.hidden_size
    path, mod = next(iter(lora_modules(model)))
    assert path.endswith("attn.c_attn") and set(mod.slices) == {"wq", "wv"}
    x = torch.randn(2, 5, d)
    out = mod(x)
    ref = base.get_submodule(path)(x)
    q, k, v = out.split(d, dim=-1)
    rq, rk, rv = ref.split(d, dim=-1)
    assert torch.equal(k, rk)  # the k slice is untouched
    assert not torch.allclose(q, rq) and not torch.allclose(v, rv)
    # ΔW has zero columns for k (Conv1D stores (in, out)).
    assert torch.count_nonzero(mod.delta_weight()[:, d:2 * d]) == 0


@pytest.mark.parametrize("name,targets,per_layer", [
    ("tiny_bert", "[wq,wv]", 2), ("tiny_bert", "[wq,wk,wv,wo]", 4), ("tiny_gpt2", "[wq,wv]", 2),
    ("tiny_gpt2", "[wo]", 1)])
def test_trainable_count_is_paper_formula(make_cfg, name, targets, per_layer):
    cfg, _, model, _, result = _model(make_cfg, name, targets)
    L, d = cfg.model.architecture.num_hidden_layers, cfg.model.architecture.hidden_size
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in result.trainable) == 2 * L * d * RANK * per_layer


def test_unknown_and_partial_targets_fail(make_cfg):

    cfg = make_cfg(["model=tiny_bert", "method.targets=[wz]"])
    model = build_model(cfg.model, "cls", 2)
    with pytest.raises(ConfigError, match=r"method.targets='wz'.*valid: \['mlp', 'wk', 'wo', 'wq', 'wv'\]"):
        apply_method(model, ModelSpec.from_cfg(cfg.model, "cls"), cfg.method)
    # A module that exists in only some blocks is an error that lists what exists.
    cfg = make_cfg(["model=tiny_bert"])
    model = build_model(cfg.model, "cls", 2)
    del model.bert.encoder.layer[1].attention.self.value
    with pytest.raises(RuntimeError, match=r"wv -> 'attention.self.value' is missing from blocks \[1\].*Modules in block 0"):
        apply_method(model, ModelSpec.from_cfg(cfg.model, "cls"), cfg.method)


def _save_run(model, spec, result, run_dir, cfg):
    head = list(spec.head_parameters(model))
    export.save_trained(model, result.trainable + head, run_dir, {"model": cfg.model.name},
                        result, spec.head, "cls", cfg.model.name)


def test_peft_loads_a_lora_exp_run(make_cfg, tmp_path):
    peft = pytest.importorskip("peft")
    cfg, base, model, spec, result = _model(make_cfg, "tiny_bert")
    _randomise_b(model)
    with torch.no_grad():  # a trained head too: peft must load it via modules_to_save
        for p in spec.head_parameters(model).values():
            p.add_(0.05)
    _save_run(model, spec, result, tmp_path, cfg)
    x = _inputs()
    expected = model(**x).logits
    fresh = build_model(cfg.model, "cls", 2, seed=0).eval()
    loaded = peft.PeftModel.from_pretrained(fresh, str(tmp_path)).eval()
    torch.testing.assert_close(loaded(**x).logits, expected, atol=1e-5, rtol=1e-5)


def test_task_switching_swaps_adapters_on_one_base(make_cfg, tmp_path):
    cfg, _, model, spec, result = _model(make_cfg, "tiny_bert")
    x = _inputs()
    outs = {}
    for seed in (3, 4):  # two "runs" with different trained A, B and heads
        _randomise_b(model, seed)
        with torch.no_grad():
            for p in spec.head_parameters(model).values():
                p.add_(0.01 * seed)
        _save_run(model, spec, result, tmp_path / f"run{seed}", cfg)
        outs[seed] = model(**x).logits.detach().clone()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in result.trainable
              and n not in spec.head_parameters(model)}
    for seed in (3, 4, 3):
        export.load_trained(model, tmp_path / f"run{seed}", expected=result.trainable)
        assert torch.equal(model(**x).logits, outs[seed])
    for n, p in model.named_parameters():  # the one base model in memory never changed
        if n in frozen:
            assert torch.equal(p, frozen[n])
