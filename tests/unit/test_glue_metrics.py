"""The GLUE metrics every Table 2 number rests on, against values worked out by hand.

The expected values are written as fractions with their arithmetic beside them, never computed
with scikit-learn or SciPy, which lora_exp.metrics itself calls.
"""
import math

import numpy as np
import pytest

from lora_exp import metrics
from lora_exp.errors import ConfigError

# Five binary items. Counting positive = 1:
#   item:   0  1  2  3  4
#   pred:   1  0  1  1  0
#   label:  1  0  0  1  1
#   TP = {0, 3} = 2, TN = {1} = 1, FP = {2} = 1, FN = {4} = 1
PREDS = np.array([1, 0, 1, 1, 0])
LABELS = np.array([1, 0, 0, 1, 1])


def test_accuracy():
    # correct at items 0, 1, 3: 3 / 5
    assert metrics.accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    assert metrics.accuracy(np.array([2, 1, 0]), np.array([2, 1, 0])) == 1.0  # 3 classes (MNLI)


def test_f1_is_the_positive_class_f1():
    # F1 = 2·TP / (2·TP + FP + FN) = 4 / (4 + 1 + 1) = 2/3.
    # With class 0 as the positive one it would be TP0 = {1} = 1, FP0 = {4}, FN0 = {2}:
    # 2 / (2 + 1 + 1) = 1/2, so a swapped positive class cannot pass.
    assert metrics.f1(PREDS, LABELS) == pytest.approx(2 / 3)
    # No positive prediction and one positive label: TP = 0, so F1 = 0 / (0 + 0 + 1) = 0.
    assert metrics.f1(np.array([0, 0, 0]), np.array([0, 1, 0])) == 0.0


def test_matthews_correlation():
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (2·1 − 1·1) / sqrt(3·3·2·2) = 1 / 6
    assert metrics.mcc(PREDS, LABELS) == pytest.approx(1 / 6)
    assert metrics.mcc(LABELS, LABELS) == pytest.approx(1.0)
    assert metrics.mcc(1 - LABELS, LABELS) == pytest.approx(-1.0)  # every prediction wrong
    # One predicted class (an early CoLA model): the denominator is 0 and MCC is defined as 0,
    # not NaN, as GLUE reports it.
    assert metrics.mcc(np.ones(5, dtype=int), LABELS) == 0.0


def test_pearson():
    # x = 1 2 3 4, mean 2.5, x − x̄ = −1.5 −0.5 0.5 1.5;  Σ(x−x̄)² = 2.25+0.25+0.25+2.25 = 5
    # y = 2 4 5 9, mean 5,   y − ȳ = −3 −1 0 4;           Σ(y−ȳ)² = 9+1+0+16 = 26
    # Σ(x−x̄)(y−ȳ) = 4.5 + 0.5 + 0 + 6 = 11;  r = 11 / sqrt(5·26) = 11 / sqrt(130)
    preds, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 5.0, 9.0])
    assert metrics.pearson(preds, labels) == pytest.approx(11 / math.sqrt(130))
    assert metrics.pearson(labels, preds) == pytest.approx(11 / math.sqrt(130))  # symmetric


def test_spearman_ranks_with_ties_averaged():
    # preds 0.1 0.4 0.4 0.9 have ranks 1 2.5 2.5 4 (the tie shares ranks 2 and 3); labels 1..4.
    # Pearson of the ranks: r − r̄ = −1.5 0 0 1.5 and −1.5 −0.5 0.5 1.5;
    # Σ products = 2.25 + 2.25 = 4.5, Σ squares 4.5 and 5: 4.5 / sqrt(4.5·5) = sqrt(0.9)
    preds, labels = np.array([0.1, 0.4, 0.4, 0.9]), np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.spearman(preds, labels) == pytest.approx(math.sqrt(0.9))
    # A monotone but not linear relation: Spearman 1, Pearson below 1.
    convex = np.array([1.0, 2.0, 3.0, 10.0])
    assert metrics.spearman(convex, labels) == pytest.approx(1.0)
    assert metrics.pearson(convex, labels) < 0.95


def test_compute_reads_argmax_for_classification():
    # Row argmaxes 1 0 1 1 0 are PREDS above: accuracy 3/5, F1 2/3, MCC 1/6.
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [-3.0, 3.0], [0.0, 0.5], [0.7, 0.2]])
    got = metrics.compute(["accuracy", "f1", "mcc"], logits, LABELS, "cls")
    assert got == pytest.approx({"accuracy": 3 / 5, "f1": 2 / 3, "mcc": 1 / 6})


def test_compute_reads_the_single_logit_for_regression():
    # (n, 1) logits are the predictions themselves: the Pearson / Spearman cases above. An
    # argmax over the one column would predict 0 everywhere (a NaN correlation).
    logits = np.array([[1.0], [2.0], [3.0], [4.0]])
    got = metrics.compute(["pearson", "spearman"], logits, np.array([2.0, 4.0, 5.0, 9.0]), "reg")
    assert got == pytest.approx({"pearson": 11 / math.sqrt(130), "spearman": 1.0})


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match=r"task.metrics='bleu' is invalid.*accuracy.*spearman") as err:
        metrics.compute(["accuracy", "bleu"], np.zeros((2, 2)), np.zeros(2), "cls")
    assert err.value.key == "task.metrics"
