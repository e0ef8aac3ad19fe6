"""Which evaluation a run reports, and by which rule.

Two selection protocols (``trainer.selection``):

* ``paper``: the evaluation with the best main metric on the split that is reported (the
  paper's best epoch, docs/paper.md#glue-protocol). Optimistic: the same dev set picks and
  reports.
* ``heldout``: the evaluation with the best main metric on a held-out slice of the train split
  (``heldout/<metric>``), which the run never trained on; the dev figures are reported at that
  evaluation.

An evaluation whose selecting metric is NaN (e.g. Pearson of constant predictions) is never
selected: NaN loses no comparison, so ``max`` alone would keep a first-evaluation NaN for good.
Ties go to the earliest evaluation.
"""
from __future__ import annotations

import math

HELDOUT = "heldout"  # the split name of the held-out slice in the evaluation records
SELECTIONS = ["paper", HELDOUT]


def selecting_key(task_cfg, selection: str) -> str:
    """The record key a protocol selects on, e.g. ``dev/accuracy`` or ``heldout/accuracy``."""
    main = task_cfg.main_metric
    return f"{HELDOUT}/{main.split('/', 1)[1]}" if selection == HELDOUT else main


def reported_splits(task_cfg) -> list[str]:
    """The eval splits, then the combined ones (``task.combined_splits``, e.g. MNLI's
    ``overall`` = matched + mismatched)."""
    return [*task_cfg.eval_splits, *(task_cfg.get("combined_splits") or {})]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_index(history: list[dict], key: str) -> int | None:
    """Index of the first evaluation with the highest finite ``key``, or None if none has one."""
    best = None
    for i, rec in enumerate(history):
        if _finite(rec.get(key)) and (best is None or rec[key] > history[best][key]):
            best = i
    return best


def _pick(rec: dict, split: str) -> dict:
    return {**{k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith(split + "/")},
            "step": rec["step"], "epoch": rec["epoch"]}


def summarize(history: list[dict], task_cfg, selection: str = "paper") -> dict:
    """Per reported split: ``best`` (the paper's protocol), ``final``, and with ``heldout``
    selection ``heldout`` (the evaluation chosen on the held-out slice). ``nan_evaluations``
    counts the evaluations whose value of a split's main metric was NaN, when there were any.

    Evaluations without the selecting metric are not candidates (NLG scores generations at the
    last evaluation only). With no candidate at all, ``best`` is the final evaluation.
    """
    main = task_cfg.main_metric
    metric = main.split("/", 1)[1]
    rules = {"best": main, **({HELDOUT: selecting_key(task_cfg, HELDOUT)} if selection == HELDOUT else {})}
    chosen = {name: best_index(history, key) for name, key in rules.items()}
    out = {}
    for split in reported_splits(task_cfg):
        out[split] = {name: _pick(history[-1 if i is None else i], split) for name, i in chosen.items()}
        out[split]["final"] = _pick(history[-1], split)
        nans = sum(1 for r in history if f"{split}/{metric}" in r and not _finite(r[f"{split}/{metric}"]))
        if nans:
            out[split]["nan_evaluations"] = nans
    out["main_metric"] = main
    out["selection"] = selection
    return out


def protocol(cfg, evaluations: int | None, model_dropout: dict) -> dict:
    """How the run's reported numbers were made and selected, for ``summary.json`` and tables."""
    t = cfg.trainer
    return {"selection": t.selection, "selected_on": selecting_key(cfg.task, t.selection),
            "heldout_size": t.heldout_size if t.selection == HELDOUT else None,
            "eval_every": t.eval_every, "evaluations": evaluations,
            "init_from": None if cfg.init_from is None else {"run": str(cfg.init_from),
                                                             "checkpoint": cfg.init_checkpoint},
            "seed": cfg.seed, "head_counted": False, "model_dropout": model_dropout,
            "weight_decay": t.weight_decay,
            "no_decay": "biases and normalisation weights" if t.no_decay else "none"}
