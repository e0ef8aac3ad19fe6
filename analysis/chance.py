"""What a task's dev metric is without learning, and how far sampling noise alone moves it.

A comparison between two methods that both score at chance says nothing about either: on RTE a
small model can end at the majority-class rate whatever it is trained with. For a GLUE dev set of
n examples:

* accuracy: the majority class's share p (a constant prediction scores it), with a band of two
  binomial standard errors, 2·sqrt(p(1 − p)/n);
* a correlation (Matthews, Pearson, Spearman): 0, with a band of 2/sqrt(n), about two standard
  errors of a sample correlation whose true value is 0.

A row is at chance when its median lies within the band around that level.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from analysis.runs import summary_of
from lora_exp.tasks import glue


def level_and_band(labels: np.ndarray, metric: str) -> tuple[float, float]:
    """(the metric of a constant prediction, two standard errors) for dev ``labels``."""
    n = len(labels)
    if metric == "accuracy":
        p = float(np.bincount(labels.astype(int)).max() / n)
        return p, 2 * math.sqrt(p * (1 - p) / n)
    return 0.0, 2 / math.sqrt(n)


def of_run(run_dir: str | Path, metric: str) -> tuple[float, float] | None:
    """:func:`level_and_band` of the dev split a run was evaluated on, read the way the run read
    it (its task config and data_dir); None when that data cannot be read here."""
    config = summary_of(Path(run_dir)).get("config") or {}
    if "task" not in config:
        return None
    try:
        _, labels, _ = glue.load_split(OmegaConf.create(config["task"]), config.get("data_dir"), "dev")
    except (OSError, ConnectionError, KeyError, ValueError):
        return None
    return level_and_band(np.asarray(labels), metric)


def at_chance(median: float, level_band: tuple[float, float] | None) -> bool:
    """Whether a median lies within the band around the chance level (never, without one)."""
    return level_band is not None and abs(median - level_band[0]) <= level_band[1]
