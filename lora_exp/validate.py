"""Check a composed config before any work starts (no model load, no data read).

Every failure is a :class:`ConfigError` naming the key, the value and what would be valid.
First the config's shape (:func:`lora_exp.schema.check`: no key that the top level, the
trainer, the logger or the method does not have), then the values. Checks that need the live
model (a target module missing from some blocks, rank > min(d, k)) run when the method is
applied, still before the first training step.
"""
from __future__ import annotations

from pathlib import Path

from lora_exp import schema
from lora_exp.checks import check_bool, check_choice, check_int, check_positive
from lora_exp.errors import ConfigError
from lora_exp.export import CHECKPOINTS, CONFIG, WEIGHTS, read_config, trained_dir
from lora_exp.selection import HELDOUT, SELECTIONS
from lora_exp.spec import check_targets


def validate(cfg) -> None:
    """Raise ConfigError for the first unknown key or bad value found in ``cfg``."""
    schema.check(cfg)
    check_int("seed", cfg.seed, 0)
    arch = cfg.model.architecture
    d_model = int(arch.hidden_size)
    check_int("rank", cfg.rank, 1, d_model)  # r <= min(d, k) for the d×d attention weights
    m = cfg.method
    if "targets" in m:
        check_targets(m.targets, cfg.model.targets, cfg.model.name)
    if "alpha" in m:
        check_positive("method.alpha", m.alpha)
    if "dropout" in m and not (isinstance(m.dropout, (int, float)) and 0 <= m.dropout < 1):
        raise ConfigError("method.dropout", m.dropout, "a probability in [0, 1)")
    t = cfg.trainer
    check_int("trainer.batch_size", t.batch_size, 1)
    check_int("trainer.grad_accum", t.grad_accum, 1)
    check_int("trainer.checkpoint_every", t.checkpoint_every, 1, allow_none=True)
    check_int("trainer.max_steps", t.max_steps, 0, allow_none=True)
    check_int("trainer.epochs", t.epochs, 1)
    check_int("trainer.max_train_samples", t.max_train_samples, 1, allow_none=True)
    check_int("trainer.max_eval_samples", t.max_eval_samples, 1, allow_none=True)
    check_int("trainer.max_length", t.max_length, 8)
    check_positive("trainer.lr", t.lr)
    if not (0 <= t.warmup_ratio < 1):
        raise ConfigError("trainer.warmup_ratio", t.warmup_ratio, "a fraction in [0, 1)")
    if t.eval_every != "epoch":
        check_int("trainer.eval_every", t.eval_every, 1)
    if t.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("trainer.device", t.device, ["auto", "cpu", "cuda"])
    if t.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError("trainer.precision", t.precision, ["auto", "fp32", "bf16", "fp16"])
    for key in ("gradient_checkpointing", "merged_eval", "group_by_length", "fast_dropout",
                "fused_optimizer", "keep_freed_memory", "compile"):
        check_bool(f"trainer.{key}", t.get(key))
    check_int("trainer.compile_buckets", t.compile_buckets, 1)
    if cfg.init_from is not None:
        _check_init_from(cfg)
    _check_protocol(cfg)
    if cfg.data_dir is not None and not Path(str(cfg.data_dir)).is_dir():
        raise ConfigError("data_dir", cfg.data_dir, "an existing folder laid out like ../shared/data, "
                          "or null for the HF hub", "no such directory")


def _check_init_from(cfg) -> None:
    """The run to start from exists, is safetensors, and was trained with this model and method
    (the same :func:`~lora_exp.schema.method_identity`: an AdapterH run cannot start AdapterP)."""
    run_dir = Path(str(cfg.init_from))
    valid = f"a run directory holding {WEIGHTS} + {CONFIG}"
    if not run_dir.is_dir():
        raise ConfigError("init_from", cfg.init_from, valid, "no such directory")
    meta = read_config(run_dir).get("lora_exp", {})
    saved = {"model": meta.get("model"), "method": _saved_identity(meta)}
    for key, want in (("model", cfg.model.name), ("method", schema.method_identity(cfg.method))):
        if saved[key] != want:
            raise ConfigError("init_from", cfg.init_from, f"a run of {key}={want}",
                              f"it was trained with {key}={saved[key]}")


def _saved_identity(meta: dict) -> str | None:
    """The method identity a run saved. Runs whose meta names the method only ("adapter") still
    say which variant they trained in their method info."""
    method, variant = meta.get("method"), (meta.get("method_info") or {}).get("variant")
    if method == "adapter" and variant:
        return schema.method_identity({"name": method, "variant": variant})
    return method


def _check_protocol(cfg) -> None:
    """The selection protocol, the start checkpoint, weight decay and the model's own dropout."""
    t = cfg.trainer
    check_choice("trainer.selection", t.selection, SELECTIONS)
    check_bool("trainer.no_decay", t.no_decay)
    check_choice("init_checkpoint", cfg.init_checkpoint, CHECKPOINTS)
    if cfg.init_from is not None:
        trained_dir(Path(str(cfg.init_from)), cfg.init_checkpoint)  # a run that kept its best
    if t.selection == HELDOUT:
        check_int("trainer.heldout_size", t.heldout_size, 1)
        if cfg.task.get("family", "glue") != "glue":
            raise ConfigError("trainer.selection", t.selection, ["paper"], f"task {cfg.task.name} "
                              "scores its generations at the last evaluation only; no held-out "
                              "slice can choose among evaluations")
    p = cfg.model.get("dropout")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1):
        raise ConfigError("model.dropout", p, "null (the checkpoint's own) or a probability in [0, 1)")
