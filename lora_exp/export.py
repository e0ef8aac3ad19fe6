"""What a run exports: its trained parameters, ``adapter_model.safetensors`` + ``adapter_config.json``.

Only what a method trained is written (LoRA's A and B plus the task head, ~0.3M numbers for
RoBERTa-base instead of 125M), as safetensors (never pickle). Keys are the model's parameter
names behind peft's ``base_model.model.`` prefix; for LoRA on separate (unfused) projections the
config carries peft's ``LoraConfig`` fields too, so ``peft.PeftModel.from_pretrained(base, run_dir)``
loads a lora-exp run. lora-exp's own metadata sits under the ``lora_exp`` key.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lora_exp.methods import MethodResult
from lora_exp.runlog import write_json
from lora_exp.storage import atomic_write
from lora_exp.errors import ConfigError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PREFIX = "base_model.model."


def _peft_fields(result: MethodResult, head_modules: list[str], task_kind: str, base: str) -> dict:
    """peft ``LoraConfig`` fields, or {} when peft cannot express the run (fused slices, no LoRA)."""
    info = result.info
    sites = info.get("sites") if result.mergeable else None  # only LoRA runs are peft LoRA runs
    if not sites or any(s["slice_name"] is not None for s in sites):
        return {}
    return {
        "peft_type": "LORA", "base_model_name_or_path": base,
        "task_type": {"cls": "SEQ_CLS", "reg": "SEQ_CLS", "lm": "CAUSAL_LM"}[task_kind],
        "r": info["rank"], "lora_alpha": info["alpha"], "lora_dropout": info["dropout"],
        "target_modules": sorted({s["module"] for s in sites}),
        "modules_to_save": head_modules or None, "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
    }


def save_trained(model: nn.Module, names: list[str], run_dir: Path, meta: dict,
                 result: MethodResult, head_modules: list[str], task_kind: str, base: str) -> Path:
    """Write the named parameters and the config describing them (atomically)."""
    params = dict(model.named_parameters())
    tensors = {PREFIX + n: params[n].detach().to("cpu").contiguous() for n in names}
    path = Path(run_dir) / WEIGHTS
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config = {**_peft_fields(result, head_modules, task_kind, base),
              "lora_exp": {**meta, "trained_parameters": list(names), "method_info": result.info}}
    write_json(Path(run_dir) / CONFIG, config)
    return path


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError("init_from", str(run_dir), None,
                          f"not a lora-exp run: {CONFIG} is missing (need {WEIGHTS} + {CONFIG})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError("init_from", str(path), None, f"unreadable JSON ({e})") from None


def read_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The saved tensors by parameter name. Refuses anything that is not safetensors."""
    run_dir = Path(run_dir)
    path = run_dir / WEIGHTS
    if not path.is_file():
        found = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
        raise ConfigError("init_from", str(run_dir), None,
                          f"no {WEIGHTS} there (found {found}); only safetensors checkpoints load")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError("init_from", str(path), None,
                          f"not a safetensors file ({e}); pickled checkpoints are refused") from None
    return {k.removeprefix(PREFIX): v for k, v in tensors.items()}


def load_trained(model: nn.Module, run_dir: Path, expected: list[str],
                 optional: list[str] = ()) -> dict:
    """Copy a run's trained parameters into ``model`` in place; returns the run's metadata.

    Args:
        expected: parameters the file must hold (the method's).
        optional: parameters loaded only when the file has them with the same shape (the task
            head: starting RTE from an MNLI run keeps the adapter and re-initialises the 3-way
            head, as the paper's MNLI-checkpoint start does).

    Raises:
        RuntimeError: the file's keys and the parameters this model trains differ (missing or
            unexpected keys, or a shape mismatch outside ``optional``).
    """
    meta = read_config(run_dir).get("lora_exp", {})
    tensors = read_weights(run_dir)
    params = dict(model.named_parameters())
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise RuntimeError(f"init_from={run_dir}: missing keys {missing[:5]}"
                           f"{' …' if len(missing) > 5 else ''} ({len(missing)}), unexpected keys "
                           f"{unexpected[:5]} ({len(unexpected)}); was it trained with another "
                           f"model or method (it says model={meta.get('model')}, "
                           f"method={meta.get('method')})?")
    skipped = []
    with torch.no_grad():
        for name, value in tensors.items():
            p = params[name]
            if p.shape != value.shape:
                if name in optional:
                    skipped.append(name)
                    continue
                raise RuntimeError(f"init_from={run_dir}: {name} has shape {tuple(value.shape)}, "
                                   f"the model has {tuple(p.shape)}")
            p.copy_(value.to(p.dtype))
    return {**meta, "skipped": skipped}
