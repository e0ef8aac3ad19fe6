"""Training checkpoints for resume-after-crash, in one safetensors file (no pickle).

``trainer.checkpoint_every=N`` writes ``<run_dir>/checkpoint/state.safetensors`` every N
optimizer steps: the trained parameters, the AdamW moments, and, in the file's JSON metadata,
the step, the data position, the scheduler and grad-scaler state, the evaluation history and
the python/numpy/torch RNG states. One file renamed into place means a ``kill -9`` at any
moment leaves the previous checkpoint or the new one, never a mix. ``resume=true`` on the same
run directory restores all of it, so the resumed run continues bit for bit (on CPU).
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lora_exp.storage import atomic_write

FILE = Path("checkpoint") / "state.safetensors"
log = logging.getLogger("lora_exp")


@dataclass
class TrainState:
    """Where the loop is: ``pos`` is the index of the next batch in this epoch's batch list."""

    step: int = 0
    epoch: int = 0
    pos: int = 0
    running_loss: float = 0.0
    n_loss: int = 0
    history: list = field(default_factory=list)
    # Wall time the run had spent when this state was saved, over every invocation: a resumed
    # run's record of its cost then includes the work its checkpoint keeps.
    wall_s: float = 0.0

    def advance(self, loss: float, n_batches: int) -> None:
        """After an optimizer step over ``n_batches`` batches with mean ``loss``."""
        self.step, self.pos = self.step + 1, self.pos + n_batches
        self.running_loss, self.n_loss = self.running_loss + loss, self.n_loss + 1

    def evaluated(self) -> bool:
        """Whether the evaluation history already holds this step's evaluation."""
        return bool(self.history) and self.history[-1].get("step") == self.step


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    np_state = np.random.get_state()
    meta = {"python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return meta, tensors


def _set_rng_state(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npv = meta["numpy"]
    np.random.set_state((npv[0], np.asarray(npv[1], dtype=np.uint32), *npv[2:]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_state(run_dir: Path, model, trained: list[str], opt, sched, scaler, state: TrainState) -> None:
    params = dict(model.named_parameters())
    tensors = {f"param.{n}": params[n].detach().cpu().contiguous() for n in trained}
    index = {id(p): n for n, p in params.items()}
    opt_sd = opt.state_dict()
    group_names = [[index[id(p)] for p in g["params"]] for g in opt.param_groups]
    for gi, group in enumerate(opt_sd["param_groups"]):
        for slot, pid in enumerate(group["params"]):
            for key, value in opt_sd["state"].get(pid, {}).items():
                tensors[f"optim.{group_names[gi][slot]}.{key}"] = value.detach().cpu().contiguous()
    rng_meta, rng_tensors = _rng_state()
    tensors.update(rng_tensors)
    meta = {"state": asdict(state), "sched": sched.state_dict(), "scaler": scaler.state_dict(),
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt_sd["param_groups"]],
            "group_names": group_names, "rng": rng_meta}
    path = Path(run_dir) / FILE
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"lora_exp": json.dumps(meta)}))


def has_state(run_dir: Path) -> bool:
    return (Path(run_dir) / FILE).is_file()


def load_state(run_dir: Path, model, opt, sched, scaler) -> TrainState:
    """Restore everything :func:`save_state` wrote; returns the loop position."""
    from safetensors import safe_open

    path = Path(run_dir) / FILE
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["lora_exp"])
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("param."):
                params[key[len("param."):]].copy_(value)
    state = {}
    for names in meta["group_names"]:
        for n in names:
            entry = {k.rsplit(".", 1)[1]: v for k, v in tensors.items()
                     if k.startswith(f"optim.{n}.") and k.count(".") == n.count(".") + 2}
            if entry:
                state[params[n]] = entry
    for group, saved in zip(opt.param_groups, meta["param_groups"]):
        group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    for p, entry in state.items():
        opt.state[p] = {k: v.to(p.device) for k, v in entry.items()}
    sched.load_state_dict(meta["sched"])
    scaler.load_state_dict(meta["scaler"])
    _set_rng_state(meta["rng"], tensors)
    return TrainState(**meta["state"])


def start(resume: bool, run_dir: Path, model, opt, sched, scaler) -> TrainState:
    """Where a run starts: its saved checkpoint with ``resume=true`` (if it has one), else step 0."""
    if not (resume and has_state(run_dir)):
        return TrainState()
    state = load_state(run_dir, model, opt, sched, scaler)
    log.info("resumed from %s at step %d", Path(run_dir) / FILE, state.step)
    return state
