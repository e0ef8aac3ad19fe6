"""One evaluation of a run: every eval split scored at the current step, and the record kept.

The record (``step``, ``epoch``, ``train_loss``, ``<split>/<metric>``) is appended to the run's
history and ``metrics.jsonl`` is rewritten whole (atomically) each time, so a kill never leaves
half a line. Under torchrun only rank 0 evaluates; every rank waits for it.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lora_exp import dist
from lora_exp.lora import merged
from lora_exp.resume import TrainState
from lora_exp.runlog import Tracker, write_jsonl
from lora_exp.selection import best_index
from lora_exp.tasks.registry import TaskFamily

log = logging.getLogger("lora_exp")


@dataclass
class Evaluator:
    """Scores ``eval_sets`` with the task family's ``evaluate`` and records the result.

    Attributes:
        selecting_key: the record key the run's selection protocol picks the best evaluation by
            (:mod:`lora_exp.selection`).
        save_best: called after an evaluation that is the best so far by ``selecting_key``
            (keeps the trained parameters of the best evaluation), or None.
        merge: evaluate LoRA with W0 + ΔW folded in (no extra products); the exact W0 comes
            back afterwards.
        steps_per_epoch: to report the evaluation's epoch.
        total: the run's last step, where NLG decodes (``final``).
    """

    family: TaskFamily
    task: Any
    eval_sets: dict[str, Any]
    tokenizer: Any
    batch_size: int
    device: torch.device
    amp_dtype: torch.dtype | None
    out_dir: Path
    tracker: Tracker
    steps_per_epoch: int
    total: int
    selecting_key: str
    save_best: Callable[[], None] | None = None
    merge: bool = False

    def __call__(self, model: nn.Module, state: TrainState) -> None:
        """Evaluate at ``state.step``, append to ``state.history``, reset the running loss."""
        rec = {"step": state.step, "epoch": round(state.step / self.steps_per_epoch, 4),
               "train_loss": state.running_loss / state.n_loss if state.n_loss else None}
        if dist.is_main():
            with merged(model) if self.merge else nullcontext():
                rec.update(self.family.evaluate(
                    model, self.eval_sets, self.task, final=state.step >= self.total,
                    tokenizer=self.tokenizer, batch_size=self.batch_size, device=self.device,
                    amp_dtype=self.amp_dtype, out_dir=self.out_dir))
            state.history.append(rec)
            write_jsonl(self.out_dir / "metrics.jsonl", state.history)
            self.tracker.log(rec, state.step)
            log.info("step %d (epoch %.2f): %s", state.step, rec["epoch"],
                     ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if "/" in k))
            newest = len(state.history) - 1
            if self.save_best is not None and best_index(state.history, self.selecting_key) == newest:
                self.save_best()
        dist.barrier()
        state.running_loss, state.n_loss = 0.0, 0
