"""ModelSpec: the one place where the paper's names meet an architecture's module names.

``conf/model/<name>.yaml`` maps the paper's weight types (``wq, wk, wv, wo``, plus ``mlp``) to
module suffixes inside a transformer block, e.g. ``wq: attention.self.query`` for BERT or
``wq: {module: attn.c_attn, slice: 0, of: 3, fan_in_fan_out: true}`` for GPT-2's fused qkv.
Methods only ever speak the paper's names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from torch import nn

from lora_exp.errors import ConfigError

WEIGHT_TYPES = ("wq", "wk", "wv", "wo", "mlp")


def check_targets(targets, defined, model_name: str) -> list[str]:
    """``method.targets`` as a list, if it is a non-empty list of distinct weight types that the
    model defines (``defined``: the keys of ``model.targets``).

    Raises:
        ConfigError: not a list, empty, a type listed twice, or a type the model does not define.
    """
    valid = sorted(defined)
    if isinstance(targets, str) or not hasattr(targets, "__iter__"):
        raise ConfigError("method.targets", targets, valid, "not a list of weight types")
    targets = list(targets)
    if not targets:
        raise ConfigError("method.targets", targets, valid, "empty")
    if len(set(targets)) != len(targets):
        raise ConfigError("method.targets", targets, valid, "a weight type is listed twice")
    for t in targets:
        if t not in defined:
            known = "a paper weight type, but" if t in WEIGHT_TYPES else "not a weight type;"
            raise ConfigError("method.targets", t, valid,
                              f"{known} not defined by model {model_name}")
    return targets


@dataclass(frozen=True)
class TargetRef:
    """One weight type resolved in one block."""

    weight_type: str
    layer: int
    module: str  # full dotted path
    slice_index: int = 0
    n_slices: int = 1
    fan_in_fan_out: bool = False


@dataclass
class ModelSpec:
    """What methods need to know about an architecture, read from ``cfg.model``.

    Attributes:
        name: config name. n_layers: L. d_model: hidden size.
        blocks: dotted path of the ``nn.ModuleList`` of transformer blocks (in the task model).
        targets: weight type -> list of {module, slice, of, fan_in_fan_out} entries (block-relative).
        head: dotted paths of the task head modules (trained by every method, counted apart).
        stack: "encoder" (bidirectional attention) or "decoder" (causal).
    """

    name: str
    n_layers: int
    d_model: int
    blocks: str
    targets: dict[str, list[dict]]
    head: list[str] = field(default_factory=list)
    stack: str = "encoder"
    block_parts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, model_cfg, task_kind: str) -> "ModelSpec":
        arch = model_cfg.architecture
        targets = {}
        for wt, entry in model_cfg.targets.items():
            entries = entry if isinstance(entry, (list, tuple)) or _is_listconfig(entry) else [entry]
            targets[wt] = [_normalise_target(e) for e in entries]
        heads = model_cfg.get("head", {}) or {}
        return cls(
            name=model_cfg.name,
            n_layers=int(arch.num_hidden_layers),
            d_model=int(arch.hidden_size),
            blocks=model_cfg.blocks,
            targets=targets,
            head=list(heads.get(task_kind, []) or []),
            stack=model_cfg.stack,
            block_parts=dict(model_cfg.get("block_parts", {}) or {}),
        )

    def block_modules(self, model: nn.Module) -> nn.ModuleList:
        try:
            return model.get_submodule(self.blocks)
        except AttributeError as e:
            raise RuntimeError(f"model.blocks={self.blocks!r} is not a module of "
                               f"{type(model).__name__}: {e}") from None

    def resolve(self, model: nn.Module, weight_types: list[str]) -> list[TargetRef]:
        """Every (block, weight type) the list names, checked against the live model.

        Raises:
            ConfigError: the list breaks :func:`check_targets`, the rule the config check
                applies (here again for methods applied outside the trainer).
            RuntimeError: a target module missing from some or all blocks (lists what exists).
        """
        weight_types = check_targets(weight_types, self.targets, self.name)
        blocks = self.block_modules(model)
        refs, missing = [], {}
        for i, block in enumerate(blocks):
            names = dict(block.named_modules())
            for wt in weight_types:
                for t in self.targets[wt]:
                    if t["module"] in names:
                        refs.append(TargetRef(wt, i, f"{self.blocks}.{i}.{t['module']}",
                                              t["slice"], t["of"], t["fan_in_fan_out"]))
                    else:
                        missing.setdefault((wt, t["module"]), []).append(i)
        if missing:
            existing = sorted(n for n, m in blocks[0].named_modules()
                              if n and not list(m.children()))
            parts = []
            for (wt, mod), layers in missing.items():
                where = "any block" if len(layers) == len(blocks) else f"blocks {layers}"
                parts.append(f"{wt} -> {mod!r} is missing from {where}")
            raise RuntimeError("method.targets: " + "; ".join(parts)
                               + f". Modules in block 0: {existing}")
        return refs

    def head_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Parameters of the task head (classifier / regression / score head)."""
        out = {}
        for path in self.head:
            try:
                mod = model.get_submodule(path)
            except AttributeError:
                continue  # e.g. a pooler that this checkpoint does not have
            out.update({f"{path}.{n}": p for n, p in mod.named_parameters()})
        return out


def _is_listconfig(x) -> bool:
    return type(x).__name__ == "ListConfig"


def _normalise_target(entry) -> dict:
    if isinstance(entry, str):
        return {"module": entry, "slice": 0, "of": 1, "fan_in_fan_out": False}
    return {"module": entry["module"], "slice": int(entry.get("slice", 0)),
            "of": int(entry.get("of", 1)), "fan_in_fan_out": bool(entry.get("fan_in_fan_out", False))}
