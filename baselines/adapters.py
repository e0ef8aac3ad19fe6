"""Bottleneck adapters: AdapterH, AdapterL, AdapterP and AdapterD (paper §5.1).

An adapter maps x ↦ x + W_up·f(W_down·x + b_down) + b_up with W_down ∈ R^{r×d}, W_up ∈ R^{d×r}
(r = the top-level ``rank``), so it holds 2·d·r + r + d numbers, and
|Θ| = L̂_Adpt·(2·d·r + r + d) + 2·L̂_LN·d (§5.1). Both projections start from Houlsby et al.'s
near-identity init (truncated normal, std 1e-2, zero biases): the adapted model starts within
~1e-3 of the pretrained one.

Where each variant goes (``block_parts`` in ``conf/model/*.yaml`` names the modules):

* ``h`` AdapterH (Houlsby 2019; adapter-hub ``DoubleSeqBnConfig``): two per block, one on the
  attention sublayer's output and one on the MLP's, each read after the sublayer's own dropout and
  added before its residual addition and LayerNorm. With h = dropout(W_out·z), the sublayer's
  projected and dropped-out output, and x its residual input: post-LN blocks (BERT, RoBERTa,
  DeBERTa, MPNet) compute LN(h + A(h) + x) in place of LN(h + x); GPT-2 adds h + A(h) to x.
  Hooked on ``attn_out_dropout`` / ``mlp_out_dropout``, the dropout module that follows the
  output projection; a model with no such dropout (Llama) names none, and the adapter reads the
  projection (``attn_out`` / ``mlp_out``) itself. Read before the dropout, the adapter's output
  would be masked by that dropout as well. L̂_Adpt = 2·L, no LayerNorm trains (L̂_LN = 0): the
  paper's GPT-3 AdapterH count 7,078,080 = 7.1M and Table 2's 0.8M at r=8 both hold only without
  LayerNorms (docs/paper.md#count-gaps).
* ``l`` AdapterL (Lin et al. 2020): one per block, on the block's output (after the MLP and its
  residual, i.e. after the post-LN block's last LayerNorm), with its own trainable LayerNorm in
  front: y + A(LN(y)). L̂_Adpt = L̂_LN = L; Table 3's GPT-2 L 0.88M is r=8 with that LayerNorm.
* ``p`` AdapterP (Pfeiffer 2021, adapter-hub ``SeqBnConfig``): one per block after the MLP.
  Post-LN blocks (``mlp_ln`` set): the adapter reads the block's output LN(s), s = MLP output +
  residual, and the block's own LayerNorm is applied again: LN(s + A(LN(s))). Pre-LN blocks
  (GPT-2, ``mlp_ln: null``): y + A(y) on the block's output, as adapter-hub does without a
  LayerNorm. L̂_Adpt = L, L̂_LN = 0 (Table 2's 0.8M at r=16 holds only without one).
* ``d`` AdapterDrop (Rücklé et al. 2021): AdapterH (same sites) with no adapters in the lowest
  ``method.drop_layers`` blocks: L̂_Adpt = 2·(L - drop_layers), L̂_LN = 0.

Mechanism: each adapter is a new child of its block (``<blocks>.<i>.adapter_attn`` /
``<blocks>.<i>.adapter_mlp``, with ``down``, ``up`` and, for ``l``, ``ln``), called from a
forward hook on the module whose output it adapts. No HF module is replaced, so every HF
parameter keeps its name. ``trainer.fast_dropout`` (applied after the method) changes the class of
each ``nn.Dropout`` in place rather than replacing the module, so the hooks on dropout modules
stay attached.
"""
from __future__ import annotations

from torch import nn

from lora_exp.checks import check_choice, check_int
from lora_exp.methods import MethodResult
from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec

VARIANTS = ["h", "l", "p", "d"]
NONLINEARITIES = {"relu": nn.ReLU, "swish": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
# The variant's own nonlinearity when method.nonlinearity is null: adapter-hub's DoubleSeqBnConfig
# (Houlsby) uses swish, SeqBnConfig (Pfeiffer) relu; Lin et al. 2020 use ReLU.
DEFAULT_NONLINEARITY = {"h": "swish", "d": "swish", "l": "relu", "p": "relu"}
INIT_STD = 1e-2  # Houlsby et al. 2019, §3.6: near-identity initialisation


class BottleneckAdapter(nn.Module):
    """x ↦ x + up(f(down(x))), optionally with a LayerNorm on the input: x + up(f(down(LN(x)))).

    Args:
        d: d_model. rank: the bottleneck r. nonlinearity: a key of ``NONLINEARITIES``.
        layer_norm: add a trainable LayerNorm before ``down`` (AdapterL).
        mode: how the hook combines it with the adapted module's output: ``"output"``
            (out + Δ(out)) or ``"post_ln"`` (LN(s + Δ(LN(s))) around a post-LN block's LayerNorm).
        like: a parameter of the adapted block, for device and dtype.
    """

    def __init__(self, d: int, rank: int, nonlinearity: str, layer_norm: bool, mode: str,
                 like: nn.Parameter):
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype}
        self.ln = nn.LayerNorm(d, **kw) if layer_norm else None
        self.down = nn.Linear(d, rank, **kw)
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(rank, d, **kw)
        for lin in (self.down, self.up):
            nn.init.trunc_normal_(lin.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            nn.init.zeros_(lin.bias)
        self.mode = mode

    def delta(self, x):
        """up(f(down(x))): the adapter's contribution, without its skip connection."""
        return self.up(self.act(self.down(x if self.ln is None else self.ln(x))))

    def hook(self, module: nn.Module, args: tuple, output):
        """Forward hook on the adapted module: returns the adapted output."""
        if self.mode == "post_ln":
            # module is the block's LayerNorm: output = LN(s); re-run LN without re-entering hooks.
            return module.forward(args[0] + self.delta(output))
        if isinstance(output, tuple):  # a block that returns (hidden_states, attentions, ...)
            return (output[0] + self.delta(output[0]), *output[1:])
        return output + self.delta(output)


def _sites(variant: str, parts: dict) -> list[tuple[str, str, str, bool]]:
    """(adapter name, block-relative module path, '' = the block itself; hook mode; own LN)."""
    if variant in ("h", "d"):
        # After the sublayer's dropout when it has one, so that dropout does not mask A(h) too.
        attn = parts.get("attn_out_dropout") or parts["attn_out"]
        mlp = parts.get("mlp_out_dropout") or parts["mlp_out"]
        return [("adapter_attn", attn, "output", False), ("adapter_mlp", mlp, "output", False)]
    if variant == "l":
        return [("adapter_mlp", "", "output", True)]
    if parts.get("mlp_ln"):  # p on a post-LN block
        return [("adapter_mlp", parts["mlp_ln"], "post_ln", False)]
    return [("adapter_mlp", "", "output", False)]  # p on a pre-LN block (GPT-2)


def _check(spec: ModelSpec, cfg) -> tuple[str, int, int, str]:
    variant = check_choice("method.variant", cfg.variant, VARIANTS)
    rank = check_int("method.rank", cfg.rank, 1, spec.d_model)
    drop = cfg.get("drop_layers", 0)
    if variant == "d":
        drop = check_int("method.drop_layers", drop, 0, spec.n_layers - 1,
                         f"AdapterDrop keeps adapters in at least one of the {spec.n_layers} blocks")
    elif drop != 0:
        raise ConfigError("method.drop_layers", drop, "0 unless method.variant=d",
                          f"variant {variant!r} does not drop layers")
    act = cfg.get("nonlinearity") or DEFAULT_NONLINEARITY[variant]
    check_choice("method.nonlinearity", act, list(NONLINEARITIES))
    needed = {"h": ["attn_out", "mlp_out"], "d": ["attn_out", "mlp_out"], "l": [], "p": ["mlp_ln"]}
    for key in needed[variant]:
        if key not in spec.block_parts:
            raise ConfigError(f"model.block_parts.{key}", None, "a module path inside a block",
                              f"adapter variant {variant!r} needs it; model {spec.name} lacks it")
    return variant, rank, drop, act


def apply(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    """Insert bottleneck adapters for ``cfg.variant`` and return their parameters (§5.1).

    Args:
        model: the task model. spec: blocks and ``block_parts`` of the architecture.
        cfg: ``cfg.method``: ``variant`` (h|l|p|d), ``rank`` (r), ``drop_layers`` (d only),
            ``nonlinearity`` (null = the variant's own).

    Returns:
        The adapters' parameter names; ``info`` holds L̂_Adpt, L̂_LN and where each adapter went.

    Raises:
        ConfigError: unknown variant or nonlinearity, rank outside [1, d], drop_layers outside
            [0, L-1] (or set for a variant other than d), a needed ``block_parts`` key missing.
        RuntimeError: a ``block_parts`` module missing from a block.
    """
    variant, rank, drop, act = _check(spec, cfg)
    blocks = spec.block_modules(model)
    names, placed = [], []
    for i in range(drop, len(blocks)):
        block = blocks[i]
        like = next(block.parameters())
        for name, path, mode, layer_norm in _sites(variant, spec.block_parts):
            try:
                target = block.get_submodule(path) if path else block
            except AttributeError:
                have = sorted(n for n, m in block.named_modules() if n and not list(m.children()))
                raise RuntimeError(f"model.block_parts: {path!r} is not in block {i}; modules "
                                   f"there: {have}") from None
            adapter = BottleneckAdapter(spec.d_model, rank, act, layer_norm, mode, like)
            block.add_module(name, adapter)
            target.register_forward_hook(adapter.hook)
            prefix = f"{spec.blocks}.{i}.{name}"
            names += [f"{prefix}.{n}" for n, _ in adapter.named_parameters()]
            placed.append({"layer": i, "adapter": prefix, "after": path or "<block output>",
                          "mode": mode, "layer_norm": layer_norm})
    n_adapters = len(placed)
    n_ln = sum(p["layer_norm"] for p in placed)
    info = {"variant": variant, "rank": rank, "drop_layers": drop, "nonlinearity": act,
            "L_adpt": n_adapters, "L_ln": n_ln, "adapters": placed}
    return MethodResult(names, info)
