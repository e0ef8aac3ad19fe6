"""FT^Top2: fine-tune only the last two transformer blocks (paper §5.1, after Li & Liang 2021).

Every parameter of blocks L-1 and L trains; embeddings, lower blocks and anything after the
blocks (GPT-2's final ``ln_f``) stay frozen; the task head is added by the trainer. On GPT-2
medium this is 2·(12·d² + 13·d) = 25,192,448, the paper's 25.19M (Table 3), which explains the
number docs/paper.md#table3 lists as unexplained (microsoft/LoRA #148): two blocks and nothing else.
"""
from __future__ import annotations

from torch import nn

from lora_exp.checks import check_int
from lora_exp.methods import MethodResult
from lora_exp.spec import ModelSpec

TOP = 2  # the method's name fixes it: Li & Liang's "top 2 layers"


def apply(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    """Mark the parameters of the last two blocks trainable (paper §5.1, FT^Top2).

    Args:
        model: the task model. spec: where its blocks are. cfg: ``cfg.method`` (no options).

    Returns:
        The parameter names of blocks L-2 and L-1 (0-based).

    Raises:
        ConfigError: the model has fewer than two blocks.
    """
    blocks = spec.block_modules(model)
    check_int("model.architecture.num_hidden_layers", len(blocks), TOP,
              why=f"FT^Top2 trains the last {TOP} transformer blocks")
    layers = list(range(len(blocks) - TOP, len(blocks)))
    names = [f"{spec.blocks}.{i}.{n}" for i in layers for n, _ in blocks[i].named_parameters()]
    return MethodResult(names, {"layers": layers})
