"""Where AdapterH (and AdapterD) sit inside a sublayer: after its dropout, before its residual
addition and LayerNorm, as Houlsby et al. 2019 and adapter-hub's ``DoubleSeqBnConfig`` do.

With z the output projection's input, h = dropout(W_out·z) and x the residual input, a post-LN
sublayer (BERT) must compute LN(h + A(h) + x) and a GPT-2 sublayer h + A(h) (the block adds x).
The reference is built from the sublayer's pieces called through ``.forward`` (no hooks), with
the dropout mask replayed from the RNG state saved when the model called that dropout: the check
is exact, for HF's dropout and for ``trainer.fast_dropout``'s.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from lora_exp.dropout import Dropout, use_fast_dropout
from lora_exp.efficiency import prepare_for_training
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.spec import ModelSpec

RANK = 4
# model -> (adapter, sublayer, output projection, its dropout, the sublayer's LayerNorm or None),
# block-relative paths in the HF module tree, written out by hand rather than read from the config.
SUBLAYERS = {
    "tiny_bert": [
        ("adapter_attn", "attention.output", "attention.output.dense", "attention.output.dropout",
         "attention.output.LayerNorm"),
        ("adapter_mlp", "output", "output.dense", "output.dropout", "output.LayerNorm"),
    ],
    "tiny_gpt2": [
        ("adapter_attn", "attn", "attn.c_proj", "attn.resid_dropout", None),
        ("adapter_mlp", "mlp", "mlp.c_proj", "mlp.dropout", None),
    ],
}
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def _adapted(make_cfg, model_name, fast_dropout, variant="h", overrides=()):
    """The tiny model with adapters, prepared for training as the trainer does; every adapter
    given O(1) weights so that A(h) is far from zero."""
    cfg = make_cfg([f"model={model_name}", "method=adapter", f"method.variant={variant}",
                    f"rank={RANK}", f"trainer.fast_dropout={str(fast_dropout).lower()}",
                    *overrides])
    model = build_model(cfg.model, "cls", 2, seed=0)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    result = apply_method(model, spec, cfg.method)
    prepare_for_training(model, cfg.trainer)  # applies trainer.fast_dropout after the method
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in set(result.trainable):
                p.normal_(0, 0.5)
    return model, spec, result


def _batch(B=2, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (B, T), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("fast_dropout", [False, True], ids=["stock_dropout", "fast_dropout"])
@pytest.mark.parametrize("model_name", ["tiny_bert", "tiny_gpt2"])
def test_adapter_h_reads_the_sublayer_output_after_its_dropout(make_cfg, model_name, fast_dropout):
    """Each sublayer's output, in a training-mode forward pass, equals the hand-built reference
    LN(h + A(h) + x) (BERT) or h + A(h) (GPT-2) with the mask the model drew."""
    model, spec, _ = _adapted(make_cfg, model_name, fast_dropout)
    model.train()
    seen, handles = {}, []
    for i, block in enumerate(spec.block_modules(model)):
        for adapter, sub, proj, drop, _ in SUBLAYERS[model_name]:
            key = (i, adapter)

            def proj_in(mod, args, key=key):
                seen[key, "z"] = args[0]

            def rng_at_dropout(mod, args, key=key):
                seen[key, "rng"] = torch.get_rng_state()

            def sub_out(mod, args, out, key=key):
                seen[key, "x"] = args[1] if len(args) > 1 else None  # BERT: the residual input
                seen[key, "out"] = out[0] if isinstance(out, tuple) else out

            handles += [block.get_submodule(proj).register_forward_pre_hook(proj_in),
                        block.get_submodule(drop).register_forward_pre_hook(rng_at_dropout),
                        block.get_submodule(sub).register_forward_hook(sub_out)]
    with torch.no_grad():
        model(**_batch())
    for handle in handles:
        handle.remove()

    for i, block in enumerate(spec.block_modules(model)):
        for adapter, sub, proj, drop, ln in SUBLAYERS[model_name]:
            key = (i, adapter)
            with torch.no_grad():
                h = block.get_submodule(proj).forward(seen[key, "z"])  # W_out·z, no hooks
                torch.set_rng_state(seen[key, "rng"])  # the mask the model drew
                h = block.get_submodule(drop).forward(h)
                expected = h + block.get_submodule(adapter).delta(h)
                if ln is not None:
                    expected = block.get_submodule(ln)(expected + seen[key, "x"])
            assert (h == 0).any()  # the dropout did drop something: the check means something
            torch.testing.assert_close(seen[key, "out"], expected)


@pytest.mark.parametrize("model_name", ["tiny_bert", "tiny_gpt2"])
def test_fast_dropout_keeps_every_adapter_in_the_forward_pass(make_cfg, model_name):
    """With trainer.fast_dropout on: every adapter parameter gets a gradient, and changing any
    one adapter's ``up`` changes the output (evaluation mode: no dropout noise)."""
    model, spec, result = _adapted(make_cfg, model_name, fast_dropout=True)
    assert not any(type(m) is nn.Dropout for m in model.modules())  # all swapped
    params = dict(model.named_parameters())
    model.train()
    model(**_batch(), labels=torch.tensor([0, 1])).loss.backward()
    for name in result.trainable:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name

    model.eval()
    with torch.no_grad():
        before = model(**_batch()).logits
        for i, block in enumerate(spec.block_modules(model)):
            for adapter in ("adapter_attn", "adapter_mlp"):
                up = block.get_submodule(adapter).up
                saved = up.weight.clone()
                up.weight.mul_(3.0)
                assert not torch.allclose(model(**_batch()).logits, before), (i, adapter)
                up.weight.copy_(saved)
        assert torch.equal(model(**_batch()).logits, before)


def test_fast_dropout_keeps_the_module_its_hooks_and_its_mode():
    """use_fast_dropout changes the class in place: same object, p, mode and forward hooks."""
    drop = nn.Dropout(0.3)
    net = nn.Sequential(nn.Linear(4, 4), drop).eval()
    calls = []
    drop.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    assert use_fast_dropout(net)["dropout_modules"] == 1
    assert net[1] is drop and type(drop) is Dropout and drop.p == 0.3 and not drop.training
    net(torch.randn(2, 4))
    assert calls == [torch.Size([2, 4])]


@pytest.mark.parametrize("model_name,override,site", [
    ("tiny_bert", "~model.block_parts.attn_out_dropout", "attention.output.dense"),
    ("tiny_gpt2", "~model.block_parts.mlp_out_dropout", "mlp.c_proj"),
])
def test_without_a_dropout_site_adapter_h_reads_the_projection(make_cfg, model_name, override,
                                                               site):
    """A model with no dropout after its output projection (Llama) names none: the adapter then
    reads the projection's output."""
    _, _, result = _adapted(make_cfg, model_name, fast_dropout=False, overrides=[override])
    assert site in {s["after"] for s in result.info["adapters"]}


def test_every_model_names_the_dropout_after_its_output_projections(make_cfg):
    """Each conf/model names attn_out_dropout and mlp_out_dropout: an ``nn.Dropout`` of the
    block when its family has dropout there (BERT, RoBERTa, DeBERTa-v2, MPNet, GPT-2), null when
    the block has no dropout module at all (Llama)."""
    for path in sorted((Path(__file__).parents[2] / "conf" / "model").glob("*.yaml")):
        cfg = make_cfg([f"model={path.stem}"])
        spec = ModelSpec.from_cfg(cfg.model, "cls")
        block = spec.block_modules(build_model(cfg.model, "cls", 2, skeleton=True))[0]
        has_dropout = any(isinstance(m, nn.Dropout) for m in block.modules())
        for key in ("attn_out_dropout", "mlp_out_dropout"):
            site = spec.block_parts[key]
            assert bool(site) == has_dropout, (path.stem, key)
            assert site is None or type(block.get_submodule(site)) is nn.Dropout, (path.stem, key)
