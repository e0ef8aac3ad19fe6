"""The keys a run config may have: the top level, the trainer, the logger and each method.

Hydra merges yaml files without a fixed shape, so an experiment file (or ``+key=value``) can add
any key, and every key lands in the run's ``summary.json``. :func:`check` closes the shape: a key
the top level, the trainer, the logger or the chosen method does not have is a
:class:`ConfigError` naming the keys it does have. :func:`lora_exp.validate.validate` calls it
first, before any value check and before any work.

``model`` and ``task`` stay open: their keys differ per architecture and per task family, and
``model.architecture`` / ``task.paper`` are data read by name where they are used.
"""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from lora_exp.errors import ConfigError

TOP_LEVEL = ("model", "method", "task", "trainer", "logger", "rank", "seed", "data_dir", "dry_run",
             "init_from", "init_checkpoint", "resume", "run_name")
TRAINER = ("epochs", "max_steps", "batch_size", "eval_batch_size", "grad_accum", "lr",
           "weight_decay", "no_decay", "selection", "heldout_size", "betas", "warmup_ratio",
           "warmup_steps", "max_grad_norm", "max_length", "max_train_samples", "max_eval_samples",
           "eval_every", "group_by_length",
           "gradient_checkpointing", "fast_dropout", "fused_optimizer", "keep_freed_memory", "compile",
           "compile_buckets",
           "merged_eval", "device",
           "precision", "progress", "checkpoint_every", "save_trained")
LOGGER = {"none": ("name",), "wandb": ("name", "project", "mode")}
# method.name -> its keys (conf/method/<name>.yaml). The adapter presets (adapter_h, _l, _p, _d)
# are method "adapter" with a variant and the label that names it in summaries and run names.
METHODS = {
    "lora": ("name", "rank", "alpha", "targets", "dropout"),
    "full_ft": ("name",),
    "ft_top2": ("name",),
    "bitfit": ("name",),
    "prefix_embed": ("name", "l_p", "l_i"),
    "prefix_layer": ("name", "l_p", "l_i"),
    "adapter": ("name", "label", "variant", "rank", "drop_layers", "nonlinearity"),
}


def method_identity(method_cfg) -> str:
    """What a run's trained parameters are, e.g. ``lora`` or ``adapter_h``: two runs with the
    same identity (and model) train the same kind of parameters, so one can start the other.

    The adapter variants place their adapters differently (two per block, one with a LayerNorm,
    ...), so each variant is its own identity, whichever way it was chosen (``method=adapter_p``
    or ``method=adapter method.variant=p``).
    """
    name = method_cfg.get("name")
    if name == "adapter":
        return f"adapter_{method_cfg.get('variant')}"
    return str(name)


def check(cfg) -> None:
    """Raise ConfigError for the first key that the part of ``cfg`` holding it does not have."""
    _check_keys("", cfg, TOP_LEVEL, "the run config")
    _check_keys("trainer.", cfg.trainer, TRAINER, "trainer")
    logger = cfg.logger.get("name")
    if logger not in LOGGER:
        raise ConfigError("logger.name", logger, sorted(LOGGER))
    _check_keys("logger.", cfg.logger, LOGGER[logger], f"logger {logger}")
    method = cfg.method.get("name")
    if method not in METHODS:
        raise ConfigError("method.name", method, sorted(METHODS))
    _check_keys("method.", cfg.method, METHODS[method], f"method {method}")
    label = cfg.method.get("label")
    if label is not None and label != method_identity(cfg.method):
        raise ConfigError("method.label", label, [method_identity(cfg.method)],
                          f"the label names another variant than method.variant="
                          f"{cfg.method.get('variant')}")


def _check_keys(prefix: str, node, allowed: tuple[str, ...], what: str) -> None:
    for key in node:
        if key not in allowed:
            valid = f"[{', '.join(sorted(allowed))}]"
            raise ConfigError(f"{prefix}{key}", _plain(node, key), valid, f"{what} has no key {key}")


def _plain(node, key: str) -> Any:
    """The value under ``key`` as plain Python, for the message."""
    value = node[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
