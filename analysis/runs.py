"""Read what the §7 analyses need from run directories: LoRA factors, the pretrained W, and the
fine-tuned W of full fine-tuning runs.

Only the run-directory contract is used: ``summary.json`` (the resolved config) and
``adapter_model.safetensors`` + ``adapter_config.json`` (the LoRA sites, rank and α; for FT and
FT^Top2 the trained weights themselves).
Every weight is returned in the paper's (d_out × d_in) layout, GPT-2 ``Conv1D`` slices included.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from omegaconf import OmegaConf

from lora_exp.export import CONFIG, WEIGHTS, read_weights


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


class Key(NamedTuple):
    """One adapted weight. The module is part of the key because a weight type can name several
    modules per block (``mlp``: the MLP's input and output projections), which (layer, weight
    type) alone would merge; with one module per weight type keys sort as (layer, weight type)."""

    layer: int
    weight_type: str
    module: str  # inside the block, as conf/model/<name>.yaml names it, e.g. "intermediate.dense"


def several_modules(keys: Iterable[Key]) -> set[str]:
    """The weight types that have more than one module in some block (e.g. ``mlp``): the ones
    whose tables and file names must name the module to tell the weights apart."""
    seen: dict[tuple[int, str], set[str]] = {}
    for k in keys:
        seen.setdefault((k.layer, k.weight_type), set()).add(k.module)
    return {wt for (_, wt), modules in seen.items() if len(modules) > 1}


def _block_module(path: str, blocks: str | None, layer: int) -> str:
    """``bert.encoder.layer.3.intermediate.dense`` -> ``intermediate.dense`` (the full path if it
    is not inside ``<blocks>.<layer>``)."""
    return path.removeprefix(f"{blocks}.{layer}.")


def kind_label(method: str, rank) -> str:
    """How tables and figures name a run's kind: ``lora r=8``, ``adapter_h r=64`` for the methods
    whose size is a rank, else the method (``full_ft``: its config's rank means nothing)."""
    has_rank = method == "lora" or str(method).startswith("adapter")
    return f"{method} r={int(rank)}" if has_rank and not pd.isna(rank) else str(method)


def summary_of(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run directory (no summary.json)")
    return json.loads(path.read_text())


def lora_factors(run_dir: Path) -> dict[Key, LoRAFactors]:
    """The LoRA factors of every adapted weight of a run, keyed by (layer, weight type, module).

    Raises:
        RunError: not a LoRA run, or two adapted weights with the same key.
    """
    run_dir = Path(run_dir)
    summary = summary_of(run_dir)
    for name in (CONFIG, WEIGHTS):  # a clone has the committed config without the weights
        if not (run_dir / name).is_file():
            raise RunError(f"{run_dir}: no adapter weights ({name} missing; status="
                           f"{summary.get('status')}, method={summary.get('method')})")
    meta = json.loads((run_dir / CONFIG).read_text()).get("lora_exp", {})
    info = meta.get("method_info", {})
    if not info.get("sites"):
        raise RunError(f"{run_dir}: no LoRA factors: method={meta.get('method')} (the analysis "
                       "needs a method=lora run)")
    tensors = read_weights(run_dir)
    blocks = ((summary.get("config") or {}).get("model") or {}).get("blocks")
    out = {}
    for site in info["sites"]:
        part = f".{site['slice_name']}" if site["slice_name"] else ""
        a = tensors[f"{site['module']}.lora_A{part}.weight"]
        b = tensors[f"{site['module']}.lora_B{part}.weight"]
        key = Key(site["layer"], site["weight_type"],
                  _block_module(site["module"], blocks, site["layer"]))
        if key in out:  # never overwrite one weight's factors with another's
            raise RunError(f"{run_dir}: two adapted weights share the key {tuple(key)} "
                           f"({site['module']}{part}); the analysis cannot tell them apart")
        out[key] = LoRAFactors(a, b, float(info["scaling"]))
    return out


def _base_model(run_dir: Path, weight_types: Iterable[str]):
    """The run's base model, built from its own config, and where each weight of these types
    sits in it: (model, {Key: TargetRef})."""
    from lora_exp.models import build_model
    from lora_exp.spec import ModelSpec

    summary = summary_of(run_dir)
    cfg = OmegaConf.create(summary["config"])
    kind = cfg.task.kind
    model = build_model(cfg.model, kind, cfg.task.num_labels, seed=cfg.seed)
    spec = ModelSpec.from_cfg(cfg.model, kind)
    refs = {Key(r.layer, r.weight_type, _block_module(r.module, spec.blocks, r.layer)): r
            for r in spec.resolve(model, sorted(set(weight_types)))}
    return model, refs


def _paper_layout(w: torch.Tensor, ref) -> torch.Tensor:
    """A stored weight as the paper's (d_out × d_in) float64 matrix: GPT-2's ``Conv1D`` stores
    (in, out) and fuses q, k, v, so it is transposed and the weight type's slice taken."""
    w = w.detach()
    if ref.fan_in_fan_out:  # HF Conv1D stores (in, out)
        w = w.T
    width = w.shape[0] // ref.n_slices
    return w[ref.slice_index * width:(ref.slice_index + 1) * width].double()


def pretrained_weights(run_dir: Path, keys: list[Key]) -> dict[Key, torch.Tensor]:
    """W0 (d × k) of each adapted weight, from the run's own base model config."""
    model, refs = _base_model(run_dir, {k.weight_type for k in keys})
    return {key: _paper_layout(model.get_submodule(refs[key].module).weight, refs[key])
            for key in keys}


def finetuned_weights(run_dir: Path, weight_types: Iterable[str]
                      ) -> dict[Key, tuple[torch.Tensor, torch.Tensor]]:
    """(W0, W_tuned), both (d × k) float64, of every weight of these types that the run trained:
    W0 from the run's base model, W_tuned from its saved parameters (full_ft, ft_top2). Weights
    the run did not train (FT^Top2's lower blocks) are not in its file and are left out.

    Raises:
        RunError: no saved parameters, or none of these weight types among them.
    """
    run_dir = Path(run_dir)
    if not (run_dir / WEIGHTS).is_file():
        raise RunError(f"{run_dir}: no trained weights ({WEIGHTS} missing; was it run with "
                       "trainer.save_trained=false, or did it fail?)")
    tensors = read_weights(run_dir)
    model, refs = _base_model(run_dir, weight_types)
    out = {key: (_paper_layout(model.get_submodule(ref.module).weight, ref),
                 _paper_layout(tensors[f"{ref.module}.weight"], ref))
           for key, ref in sorted(refs.items()) if f"{ref.module}.weight" in tensors}
    if not out:
        raise RunError(f"{run_dir}: its saved parameters hold none of the weights "
                       f"{sorted(set(weight_types))}")
    return out
