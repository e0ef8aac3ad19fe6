"""The trainer's speed and memory measures. None changes what is computed: gradient
checkpointing gives the same numbers, the CPU dropout the same distribution of masks."""
from __future__ import annotations

from lora_exp.dropout import use_fast_dropout
from lora_exp.errors import ConfigError


def enable_gradient_checkpointing(model) -> None:
    """Keep only each block's input in the forward pass and recompute the block in backward.

    Non-reentrant checkpointing: gradients reach trainable parameters inside a block even when
    the block's input does not require grad (frozen embeddings), which the reentrant variant
    cannot do; outputs and gradients equal those without checkpointing.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError("trainer.gradient_checkpointing", True, [False],
                          f"{type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 names it so
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a cache is of no use in training and conflicts with it


def checkpointing_on(model) -> bool:
    if hasattr(model, "is_activation_checkpointing"):  # transformers >= 5.2
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def prepare_for_training(model, tcfg) -> None:
    """Applied after the method (so that the method's own dropout is covered too): gradient
    checkpointing and the CPU dropout of :mod:`lora_exp.dropout` (the same distribution of
    masks, another random stream)."""
    if tcfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if tcfg.fast_dropout:
        use_fast_dropout(model)
