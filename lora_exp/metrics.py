"""GLUE metrics as the paper reports them (Table 2; docs/paper.md#glue-protocol).

The formulas are those of ``evaluate``'s ``glue`` metric, which itself calls scikit-learn and
SciPy; we call them directly because ``evaluate.load`` fetches its metric script from the hub,
which fails offline.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from lora_exp.errors import ConfigError


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(f1_score(labels, preds))  # binary F1 of the positive class, as GLUE does


def mcc(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(matthews_corrcoef(labels, preds))


def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(pearsonr(preds, labels)[0])


def spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(spearmanr(preds, labels)[0])


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def compute(names: list[str], logits: np.ndarray, labels: np.ndarray, kind: str) -> dict[str, float]:
    """Score one split. ``kind`` "reg" reads the single logit as the prediction."""
    preds = logits.reshape(-1) if kind == "reg" else logits.argmax(-1)
    out = {}
    for name in names:
        if name not in METRICS:
            raise ConfigError("task.metrics", name, sorted(METRICS))
        out[name] = METRICS[name](preds, labels)
    return out
