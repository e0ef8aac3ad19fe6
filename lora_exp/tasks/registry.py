"""The task registry: each task family (``task.family`` in ``conf/task/<task>.yaml``) says how
its splits are read and how an evaluation is scored, behind one small interface the trainer
calls. The trainer never branches on a task's name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lora_exp.data import hold_out, subset
from lora_exp.errors import ConfigError
from lora_exp.selection import HELDOUT
from lora_exp.tasks import glue, nlg


@dataclass(frozen=True)
class TaskFamily:
    """How one task family reads its splits and scores an evaluation.

    Attributes:
        train_set: ``(task, data_dir, split, tokenizer, max_length, max_samples)`` -> the
            tokenised rows to train on.
        eval_set: the same arguments -> what ``evaluate`` scores.
        evaluate: ``(model, {split: eval_set}, task, *, final, tokenizer, batch_size, device,
            amp_dtype, out_dir)`` -> ``{"<split>/<metric>": value}``; ``final`` marks the run's
            last evaluation.
        prepare_model: optional ``(model, task)`` hook after the method is applied (e.g. the
            LM loss with label smoothing).
    """

    train_set: Callable
    eval_set: Callable
    evaluate: Callable
    prepare_model: Callable | None = None

    def read_data(self, task, data_dir: str | None, tokenizer, tcfg, eval_only: bool):
        """(training rows or None when only evaluating, {eval split: evaluation set}).

        With ``trainer.selection=heldout`` a seeded slice of the train split (``heldout_size``
        rows, taken before ``max_train_samples``) leaves training and becomes the ``heldout``
        eval split.
        """
        eval_sets = {s: self.eval_set(task, data_dir, s, tokenizer, tcfg.max_length,
                                      tcfg.max_eval_samples) for s in task.eval_splits}
        if eval_only:
            return None, eval_sets
        if tcfg.selection != HELDOUT:
            return self.train_set(task, data_dir, "train", tokenizer, tcfg.max_length,
                                  tcfg.max_train_samples), eval_sets
        rows = self.train_set(task, data_dir, "train", tokenizer, tcfg.max_length, None)
        rows, eval_sets[HELDOUT] = hold_out(rows, tcfg.heldout_size, task.subset_seed)
        return subset(rows, tcfg.max_train_samples, task.subset_seed), eval_sets


FAMILIES = {
    "glue": TaskFamily(glue.dataset, glue.dataset, glue.evaluate),
    "nlg": TaskFamily(nlg.train_set, nlg.eval_set, nlg.evaluate, nlg.prepare_model),  # E2E, WebNLG, DART
}


def task_family(task_cfg) -> TaskFamily:
    name = task_cfg.get("family", "glue")
    if name not in FAMILIES:
        raise ConfigError("task.family", name, sorted(FAMILIES))
    return FAMILIES[name]
