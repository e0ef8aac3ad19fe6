"""The paper's baselines (§5.1) on tiny models: |Θ| formulas, step-0 outputs, what training moves,
where the special tokens go, and bad input."""
import copy

import pytest
import torch

from baselines.bitfit import bias_names
from baselines.prefix import IGNORE_INDEX
from lora_exp.methods import apply_method
from lora_exp.models import build_model
from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec

RANK = 4
L_P, L_I = 3, 2
MODELS = ["tiny_bert", "tiny_gpt2"]
# (id, method, overrides): every baseline and every adapter variant.
SETTINGS = [
    ("ft_top2", "ft_top2", []),
    ("bitfit", "bitfit", []),
    ("prefix_embed", "prefix_embed", [f"method.l_p={L_P}", f"method.l_i={L_I}"]),
    ("prefix_layer", "prefix_layer", [f"method.l_p={L_P}", f"method.l_i={L_I}"]),
    ("adapter_h", "adapter", ["method.variant=h"]),
    ("adapter_l", "adapter", ["method.variant=l"]),
    ("adapter_p", "adapter", ["method.variant=p"]),
    ("adapter_d", "adapter", ["method.variant=d", "method.drop_layers=1"]),
    ("lora", "lora", []),
]
IDS = [s[0] for s in SETTINGS]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def _build(make_cfg, model_name, method, overrides):
    cfg = make_cfg([f"model={model_name}", f"method={method}", f"rank={RANK}", *overrides])
    base = build_model(cfg.model, "cls", 2, seed=0).eval()
    model = copy.deepcopy(base)
    spec = ModelSpec.from_cfg(cfg.model, "cls")
    result = apply_method(model, spec, cfg.method)
    return cfg, base, model.eval(), spec, result


def _batch(pad_id, B=4, T=9, seed=1):
    """Random tokens, right-padded rows of different lengths (pad ids where the mask is 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in enumerate([T, 6, 4, 7][:B]):
        mask[row, n:] = 0
    ids[mask == 0] = pad_id
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.randint(0, 2, (B,), generator=g)}


def _formula(setting, cfg, spec, model):
    """The paper's |Θ| for the tiny shapes (§5.1), computed from L, d, r, never from the model's
    trainable set."""
    L, d, r = spec.n_layers, spec.d_model, RANK
    d_ff = cfg.model.architecture.get("intermediate_size") or 4 * d  # GPT-2: n_inner = 4·d
    adapter = lambda n_adpt, n_ln: n_adpt * (2 * d * r + r + d) + 2 * n_ln * d
    return {
        # two blocks: attention 4·(d² + d), two LayerNorms 2·2·d, MLP 2·d·d_ff + d_ff + d
        "ft_top2": 2 * (4 * d * d + 2 * d * d_ff + d_ff + 9 * d),
        # bias entries, counted on the model (the definition itself), minus the head's
        "bitfit": sum(p.numel() for n, p in model.named_parameters()
                      if n in set(bias_names(model)) - set(spec.head_parameters(model))),
        "prefix_embed": d * (L_P + L_I),
        "prefix_layer": L * d * (L_P + L_I),
        "adapter_h": adapter(2 * L, 0),
        "adapter_l": adapter(L, L),
        "adapter_p": adapter(L, 0),
        "adapter_d": adapter(2 * (L - 1), 0),
        "lora": 2 * (2 * L) * d * r,  # 2·L̂·d·r with L̂ = 2·L (wq, wv)
    }[setting]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("setting,method,overrides", SETTINGS, ids=IDS)
def test_trainable_count_is_the_paper_formula(make_cfg, model_name, setting, method, overrides):
    cfg, _, model, spec, result = _build(make_cfg, model_name, method, overrides)
    params = dict(model.named_parameters())
    assert len(set(result.trainable)) == len(result.trainable)
    assert not set(result.trainable) & set(spec.head_parameters(model))  # the head is apart
    count = sum(params[n].numel() for n in result.trainable)
    assert count == _formula(setting, cfg, spec, model)


def test_bitfit_hand_count_tiny_bert(make_cfg):
    """L·(7·d + d_ff) + d: q,k,v,o + 2 LN + MLP biases per block, plus the embeddings' LN."""
    _, _, model, _, result = _build(make_cfg, "tiny_bert", "bitfit", [])
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in result.trainable) == 2 * (7 * 32 + 64) + 32 == 608


def _prefix_reference(base, model, spec, x, setting):
    """What PreEmbed / PreLayer compute at step 0 by their definition (baselines/prefix.py),
    built by hand on the unadapted model: the l_p + l_i special tokens written into each row
    (encoder: the prefix after [CLS]; decoder: at the start; the infix after the row's last real
    token), each starting as the word embedding of a vocabulary token.

    PreEmbed: the unadapted model run on those token ids is the exact reference. PreLayer: the
    same input with the hidden states entering every block replaced at the special positions
    by those embeddings (hooks on the unadapted model's blocks).
    """
    words = base.get_input_embeddings().weight
    init = model.special_tokens.vectors.detach()
    # Sampled-vocabulary init: every set starts as the same rows of the word-embedding table.
    assert all(torch.equal(v, init[0]) for v in init)
    vocab = [int(torch.nonzero((words == v).all(1))[0]) for v in init[0]]
    assert torch.equal(words[vocab], init[0])
    prefix, infix = vocab[:L_P], vocab[L_P:]
    at = 1 if spec.stack == "encoder" else 0
    rows, special = [], []
    for ids, mask in zip(x["input_ids"].tolist(), x["attention_mask"].tolist()):
        n = sum(mask)
        rows.append(ids[:at] + prefix + ids[at:n] + infix + ids[n:])
        special.append([False] * at + [True] * L_P + [False] * (n - at) + [True] * L_I
                       + [False] * (len(ids) - n))
    ids = torch.tensor(rows)
    mask = (torch.arange(ids.shape[1]) < x["attention_mask"].sum(1, keepdim=True) + L_P + L_I).long()
    if setting == "prefix_embed":
        return base(input_ids=ids, attention_mask=mask).logits
    where = torch.tensor(special).unsqueeze(-1)  # (B, T', 1)
    values = words[ids].detach()  # the embedding of the token written at each position

    def replace(module, args, kwargs):
        if args:
            return (torch.where(where, values, args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": torch.where(where, values, kwargs["hidden_states"])}

    hooks = [b.register_forward_pre_hook(replace, with_kwargs=True) for b in spec.block_modules(base)]
    try:
        return base(input_ids=ids, attention_mask=mask).logits
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("setting,method,overrides", SETTINGS, ids=IDS)
def test_step0_output(make_cfg, model_name, setting, method, overrides):
    """BitFit, FT^Top2 and LoRA leave the function untouched (bit for bit); adapters start near
    identity; PreEmbed/PreLayer add tokens to the input and give what that input gives by their
    definition (see _prefix_reference)."""
    _, base, model, spec, _ = _build(make_cfg, model_name, method, overrides)
    x = _batch(model.config.pad_token_id)
    x.pop("labels")
    with torch.no_grad():
        expected, got = base(**x).logits, model(**x).logits
        if setting.startswith("prefix"):
            reference = _prefix_reference(base, model, spec, x, setting)
    if setting.startswith("prefix"):
        assert not torch.equal(got, expected)  # the special tokens are in the forward pass
        torch.testing.assert_close(got, reference, rtol=0, atol=1e-6)
    elif setting.startswith("adapter"):
        assert not torch.equal(got, expected)  # the adapters are in the forward pass
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("setting,method,overrides", SETTINGS, ids=IDS)
def test_training_moves_only_method_and_head(make_cfg, model_name, setting, method, overrides):
    """A few AdamW steps on random tokens: every frozen weight is bit-identical afterwards."""
    _, _, model, spec, result = _build(make_cfg, model_name, method, overrides)
    head = set(spec.head_parameters(model))
    trained = set(result.trainable) | head
    for n, p in model.named_parameters():
        p.requires_grad_(n in trained)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(3):
        loss = model(**_batch(model.config.pad_token_id, seed=step)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved <= trained, sorted(moved - trained)
    assert moved & set(result.trainable) and moved & head
    if not setting.startswith(("bitfit", "ft_top2", "lora")):  # every new parameter gets gradient
        assert set(result.trainable) <= moved, sorted(set(result.trainable) - moved)


@pytest.mark.parametrize("variant", ["h", "l", "p", "d"])
def test_adapters_keep_hf_parameter_names(make_cfg, variant):
    drop = ["method.drop_layers=1"] if variant == "d" else []
    for name in MODELS:
        _, base, model, _, result = _build(make_cfg, name, "adapter",
                                           [f"method.variant={variant}", *drop])
        old, new = dict(base.named_parameters()), dict(model.named_parameters())
        assert set(old) <= set(new) and set(new) - set(old) == set(result.trainable)
        assert all(torch.equal(old[n], new[n]) for n in old)


def test_adapter_sites(make_cfg):
    """AdapterH: 2 per block after the output projections' dropouts; AdapterD drops the lowest
    blocks; AdapterL on the block output with a LayerNorm; AdapterP around BERT's post-MLP
    LayerNorm and on GPT-2's block output (pre-LN)."""
    info = lambda name, *ov: _build(make_cfg, name, "adapter", list(ov))[4].info
    h = info("tiny_bert", "method.variant=h")
    assert [(s["layer"], s["after"]) for s in h["adapters"]] == [
        (0, "attention.output.dropout"), (0, "output.dropout"),
        (1, "attention.output.dropout"), (1, "output.dropout")]
    assert h["nonlinearity"] == "swish" and (h["L_adpt"], h["L_ln"]) == (4, 0)
    d = info("tiny_gpt2", "method.variant=d", "method.drop_layers=1")
    assert [(s["layer"], s["after"]) for s in d["adapters"]] == [(1, "attn.resid_dropout"),
                                                                 (1, "mlp.dropout")]
    lin = info("tiny_gpt2", "method.variant=l")
    assert [s["after"] for s in lin["adapters"]] == ["<block output>"] * 2 and lin["L_ln"] == 2
    assert info("tiny_bert", "method.variant=p")["adapters"][0]["mode"] == "post_ln"
    assert info("tiny_gpt2", "method.variant=p")["adapters"][0]["after"] == "<block output>"



@pytest.mark.parametrize("setting,method,overrides", SETTINGS[:-1], ids=IDS[:-1])
def test_through_the_trainer_save_and_reload(make_cfg, tmp_path, data_dir, setting, method,
                                             overrides):
    """Each baseline runs through the shared trainer (GPT-2 regression: decoder + STS-B), saves
    exactly its parameters plus the head, and an init_from evaluation reproduces the metric."""
    import json

    from lora_exp.trainer import run

    args = ["model=tiny_gpt2", f"method={method}", "task=stsb", "trainer=smoke", f"rank={RANK}",
            f"data_dir={data_dir}", *overrides]
    first = run(make_cfg(args), tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["lora_exp"]
    assert first["status"] == "ok" and first["params"]["trainable"] > 0
    assert first["params"]["head"] == 32  # GPT-2's score head: d × 1, no bias
    assert len(saved["trained_parameters"]) == len(set(saved["trained_parameters"]))
    again = run(make_cfg([*args, "trainer.max_steps=0", f"init_from={tmp_path / 'a'}"]), tmp_path / "b")
    assert again["metrics"]["dev"]["final"]["pearson"] == first["metrics"]["dev"]["final"]["pearson"]

# --- where the special tokens go ------------------------------------------------------------

def _tokens(make_cfg, model_name, method="prefix_embed", l_p=2, l_i=1):
    cfg, base, model, spec, result = _build(make_cfg, model_name, method,
                                            [f"method.l_p={l_p}", f"method.l_i={l_i}"])
    return base, model, model.special_tokens


def test_encoder_layout_prefix_after_cls_infix_after_last_token(make_cfg):
    _, _, tok = _tokens(make_cfg, "tiny_bert")
    P = tok.placeholder_id
    ids = torch.tensor([[101, 7, 8, 102, 0, 0], [101, 9, 102, 5, 6, 102]])
    mask = (ids != 0).long()
    types = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]])
    _, kw = tok.insert(None, (), {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                  "labels": torch.tensor([0, 1])})
    assert kw["input_ids"].tolist() == [[101, P, P, 7, 8, 102, P, 0, 0],
                                        [101, P, P, 9, 102, 5, 6, 102, P]]
    assert kw["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 0], [1] * 9]
    assert kw["token_type_ids"].tolist() == [[0] * 9, [0, 0, 0, 0, 0, 1, 1, 1, 1]]
    assert kw["labels"].tolist() == [0, 1]  # sequence labels are left alone
    assert tok._slot.tolist() == [[-1, 0, 1, -1, -1, -1, 2, -1, -1],
                                  [-1, 0, 1, -1, -1, -1, -1, -1, 2]]


def test_decoder_lm_layout_with_prompt_len(make_cfg):
    """NLG: prefix before the prompt, infix between prompt and completion, labels -100 there."""
    _, model, tok = _tokens(make_cfg, "tiny_gpt2")
    P, pad = tok.placeholder_id, model.config.pad_token_id
    ids = torch.tensor([[11, 12, 13, 21, 22], [11, 12, 21, pad, pad]])
    mask = (ids != pad).long()
    labels = torch.where((mask == 1) & (torch.arange(5) >= torch.tensor([[3], [2]])), ids, IGNORE_INDEX)
    _, kw = tok.insert(None, (), {"input_ids": ids, "attention_mask": mask, "labels": labels,
                                  "prompt_len": torch.tensor([3, 2])})
    assert "prompt_len" not in kw  # consumed: the HF model never sees it
    assert kw["input_ids"].tolist() == [[P, P, 11, 12, 13, P, 21, 22],
                                        [P, P, 11, 12, P, 21, pad, pad]]
    X = IGNORE_INDEX
    assert kw["labels"].tolist() == [[X, X, X, X, X, X, 21, 22], [X, X, X, X, X, 21, X, X]]
    # Without prompt_len (classification), the infix follows the last real token.
    _, kw = tok.insert(None, (), {"input_ids": ids, "attention_mask": mask})
    assert kw["input_ids"].tolist() == [[P, P, 11, 12, 13, 21, 22, P],
                                        [P, P, 11, 12, 21, P, pad, pad]]


@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
@pytest.mark.parametrize("model_name", MODELS)
def test_padding_does_not_change_a_row(make_cfg, model_name, method):
    """Row-dependent infix positions: a short row gives the same logits alone as in a padded
    batch (GPT-2 reads its last infix token, BERT its [CLS])."""
    _, model, _ = _tokens(make_cfg, model_name, method, L_P, L_I)
    x = _batch(model.config.pad_token_id)
    x.pop("labels")
    batched = model(**x).logits
    for row in range(4):
        n = int(x["attention_mask"][row].sum())
        alone = model(input_ids=x["input_ids"][row:row + 1, :n],
                      attention_mask=x["attention_mask"][row:row + 1, :n]).logits
        torch.testing.assert_close(alone[0], batched[row], atol=1e-5, rtol=1e-5)


def test_prefix_layer_replaces_every_block_input(make_cfg):
    _, model, tok = _tokens(make_cfg, "tiny_bert", "prefix_layer", L_P, L_I)
    with torch.no_grad():
        tok.vectors.copy_(torch.randn_like(tok.vectors))
    seen = []
    spec_blocks = model.bert.encoder.layer
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
             for b in spec_blocks]  # registered after the method's hooks: sees replaced inputs
    x = _batch(model.config.pad_token_id)
    x.pop("labels")
    model(**x)
    for h in hooks:
        h.remove()
    row_len = int(x["attention_mask"][1].sum())
    for layer, h in enumerate(seen):
        assert torch.equal(h[1, 1:1 + L_P], tok.vectors[layer, :L_P])  # prefix after [CLS]
        e = row_len + L_P  # row 1's infix starts after its last real token
        assert torch.equal(h[1, e:e + L_I], tok.vectors[layer, L_P:])
    assert tok._slot is None  # the layout is forgotten after the forward


def test_prefix_layer_decoder_output_depends_on_input(make_cfg):
    """The last block's output at the infix is computed, not replaced: GPT-2's classifier
    reads it, so different inputs must give different logits."""
    _, model, _ = _tokens(make_cfg, "tiny_gpt2", "prefix_layer", L_P, L_I)
    a = model(**{k: v for k, v in _batch(0, seed=1).items() if k != "labels"}).logits
    b = model(**{k: v for k, v in _batch(0, seed=2).items() if k != "labels"}).logits
    assert not torch.allclose(a, b)


def test_prefix_too_long_for_positions_fails_before_the_step(make_cfg):
    _, model, _ = _tokens(make_cfg, "tiny_bert", "prefix_embed", l_p=100, l_i=8)
    ids = torch.randint(1000, 2000, (1, 30))
    with pytest.raises(RuntimeError, match=r"method.l_p \+ method.l_i = 108.*128 positions"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name,method,overrides,needle", [
    ("tiny_bert", "adapter", ["method.variant=x"], r"method.variant='x'.*\['d', 'h', 'l', 'p'\]"),
    ("tiny_bert", "adapter", ["method.variant=d", "method.drop_layers=2"],
     r"method.drop_layers=2.*\[0, 1\]"),
    ("tiny_gpt2", "adapter", ["method.variant=d", "method.drop_layers=-1"], r"method.drop_layers=-1"),
    ("tiny_bert", "adapter", ["method.variant=h", "method.drop_layers=1"],
     r"method.drop_layers=1.*0 unless method.variant=d"),
    ("tiny_bert", "adapter", ["method.nonlinearity=softsign"], r"method.nonlinearity='softsign'"),
    ("tiny_bert", "adapter", ["~model.block_parts.mlp_ln", "method.variant=p"],
     r"model.block_parts.mlp_ln"),
    ("tiny_bert", "prefix_embed", ["method.l_p=0"], r"method.l_p=0.*>= 1"),
    ("tiny_gpt2", "prefix_layer", ["method.l_p=-2"], r"method.l_p=-2"),
    ("tiny_bert", "prefix_layer", ["method.l_i=-1"], r"method.l_i=-1.*>= 1"),
    ("tiny_bert", "prefix_embed", ["method.l_i=0"], r"method.l_i=0.*>= 1"),
    ("tiny_gpt2", "prefix_embed", ["method.l_p=120", "method.l_i=8"], r"method.l_p=120.*< 128"),
    ("tiny_bert", "ft_top2", ["model.architecture.num_hidden_layers=1"],
     r"model.architecture.num_hidden_layers=1.*last 2 transformer blocks.*>= 2"),
])
def test_bad_input_raises_config_error(make_cfg, model_name, method, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        _build(make_cfg, model_name, method, overrides)


def test_count_table_rounding_rule():
    """docs/baselines.md marks a paper number ✓ when the count rounds to its printed decimals."""
    from baselines.count_table import agrees

    assert agrees(294_912, "0.3M") and agrees(25_192_448, "25.19M") and agrees(875_808, "0.88M")
    assert not agrees(393_216, "0.35M") and not agrees(6_343_680, "6.0M")
