"""Read what the §7 analyses need from run directories: LoRA factors and the pretrained W.

Only the run-directory contract is used: ``summary.json`` (the resolved config) and
``adapter_model.safetensors`` + ``adapter_config.json`` (the LoRA sites, rank and α).
Every weight is returned in the paper's (d_out × d_in) layout, GPT-2 ``Conv1D`` slices included.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lora_exp.export import CONFIG, read_weights


class RunError(ValueError):
    """A folder that cannot serve the requested analysis; the message says what is missing."""


@dataclass
class LoRAFactors:
    """A (r×k), B (d×r) and the scaling α/r of one adapted weight."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def delta_w(self) -> torch.Tensor:
        """ΔW = (α/r)·B·A, float64, (d × k)."""
        return self.B.double() @ self.A.double() * self.scaling


Key = tuple[int, str]  # (layer, weight type)


def summary_of(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run directory (no summary.json)")
    return json.loads(path.read_text())


def lora_factors(run_dir: Path) -> dict[Key, LoRAFactors]:
    """The LoRA factors of every adapted weight of a run, keyed by (layer, weight type)."""
    run_dir = Path(run_dir)
    summary = summary_of(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir}: no adapter weights ({CONFIG} missing; status="
                       f"{summary.get('status')}, method={summary.get('method')})")
    meta = json.loads((run_dir / CONFIG).read_text()).get("lora_exp", {})
    info = meta.get("method_info", {})
    if not info.get("sites"):
        raise RunError(f"{run_dir}: no LoRA factors: method={meta.get('method')} (the analysis "
                       "needs a method=lora run)")
    tensors = read_weights(run_dir)
    out = {}
    for site in info["sites"]:
        part = f".{site['slice_name']}" if site["slice_name"] else ""
        a = tensors[f"{site['module']}.lora_A{part}.weight"]
        b = tensors[f"{site['module']}.lora_B{part}.weight"]
        out[(site["layer"], site["weight_type"])] = LoRAFactors(a, b, float(info["scaling"]))
    return out


def pretrained_weights(run_dir: Path, keys: list[Key]) -> dict[Key, torch.Tensor]:
    """W0 (d × k) of each adapted weight, from the run's own base model config."""
    from lora_exp.models import build_model
    from lora_exp.spec import ModelSpec

    summary = summary_of(run_dir)
    cfg = OmegaConf.create(summary["config"])
    kind = cfg.task.kind
    model = build_model(cfg.model, kind, cfg.task.num_labels, seed=cfg.seed)
    spec = ModelSpec.from_cfg(cfg.model, kind)
    refs = {(r.layer, r.weight_type): r for r in spec.resolve(model, sorted({k[1] for k in keys}))}
    out = {}
    for key in keys:
        ref = refs[key]
        w = model.get_submodule(ref.module).weight.detach()
        if ref.fan_in_fan_out:  # HF Conv1D stores (in, out)
            w = w.T
        width = w.shape[0] // ref.n_slices
        out[key] = w[ref.slice_index * width:(ref.slice_index + 1) * width].double()
    return out
