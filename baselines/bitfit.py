"""BitFit: train only the bias vectors (paper §5.1; Ben Zaken et al. 2021).

"Bias" means every Parameter a module registers under the name ``bias``: the linear and
``Conv1D`` biases and the LayerNorm biases (β), as in BitFit. Biases are found by module
attribute, not by matching a substring of the parameter name. The head's biases are left to
the trainer's shared head rule, so the count is the paper's (no head): on RoBERTa-base
L·(7·d + d_ff) + d = 12·(7·768 + 3072) + 768 = 102,144 (Table 2: 0.1M).
"""
from __future__ import annotations

from torch import nn

from lora_exp.methods import MethodResult
from lora_exp.spec import ModelSpec


def bias_names(model: nn.Module) -> list[str]:
    """Names of every module's own ``bias`` Parameter, in module order."""
    names = []
    for path, module in model.named_modules():
        if isinstance(module._parameters.get("bias"), nn.Parameter):
            names.append(f"{path}.bias" if path else "bias")
    return names


def apply(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    """Mark all bias vectors except the head's trainable (paper §5.1, BitFit).

    Args:
        model: the task model. spec: names the head. cfg: ``cfg.method`` (no options).

    Returns:
        The bias parameter names outside the task head.
    """
    head = spec.head_parameters(model)
    return MethodResult([n for n in bias_names(model) if n not in head])
