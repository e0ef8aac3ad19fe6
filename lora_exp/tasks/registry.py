"""The task registry: each task family (``task.family`` in ``conf/task/<task>.yaml``) says how
its splits are read and how an evaluation is scored, behind one small interface the trainer
calls. The trainer never branches on a task's name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lora_exp.errors import ConfigError
from lora_exp.tasks import glue, nlg


@dataclass(frozen=True)
class TaskFamily:
    """How one task family reads its splits and scores an evaluation.

    Attributes:
        train_set: ``(task, data_dir, split, tokenizer, max_length, max_samples)`` -> the
            tokenised rows to train on.
        eval_set: the same arguments -> what ``evaluate`` scores.
        evaluate: ``(model, eval_set, task, *, split, final, tokenizer, batch_size, device,
            amp_dtype, out_dir)`` -> ``{metric: value}``; ``final`` marks the run's last
            evaluation.
        prepare_model: optional ``(model, task)`` hook after the method is applied (e.g. the
            LM loss with label smoothing).
    """

    train_set: Callable
    eval_set: Callable
    evaluate: Callable
    prepare_model: Callable | None = None


FAMILIES = {
    "glue": TaskFamily(glue.dataset, glue.dataset, glue.evaluate),
    "nlg": TaskFamily(nlg.train_set, nlg.eval_set, nlg.evaluate, nlg.prepare_model),  # E2E, WebNLG, DART
}


def task_family(task_cfg) -> TaskFamily:
    name = task_cfg.get("family", "glue")
    if name not in FAMILIES:
        raise ConfigError("task.family", name, sorted(FAMILIES))
    return FAMILIES[name]
