"""Paired bootstrap over test inputs for corpus BLEU (Koehn, 2004).

Two runs decoded the same test inputs. Resampling the inputs with replacement, and scoring both
runs on each resample, gives the spread of BLEU(a) − BLEU(b) that the choice of test inputs
alone explains. Table 3 at CPU scale trains one seed per method, so it cannot measure seed
noise; this makes "LoRA on par with FT" testable against test-set noise instead: apart when
the 95 % interval of the difference excludes 0. It does not see seed noise, so it can only make
two runs look further apart than a seed spread would.

BLEU is the corpus BLEU the runs report (:func:`lora_exp.nlg_metrics.bleu` as ``e2e_metrics``
calls it): each resample sums sacrebleu's per-input n-gram statistics, so the full sample gives
exactly the reported score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sacrebleu.metrics import BLEU

from lora_exp.generate import read_predictions
from lora_exp.nlg_metrics import clean

N_RESAMPLES = 1000
# As e2e_metrics scores BLEU (lora_exp/nlg_metrics.py): mteval-13a tokens, lowercased, no smoothing.
_BLEU = BLEU(tokenize="13a", lowercase=True, smooth_method="none", force=True)


def input_stats(predictions: list[str], references: list[list[str]]) -> np.ndarray:
    """Per input, sacrebleu's BLEU sufficient statistics (n-gram matches and totals, lengths)."""
    predictions, references = clean(predictions, references)
    n_streams = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(n_streams)]
    return np.array(_BLEU._extract_corpus_statistics(predictions, streams), dtype=np.int64)


def corpus_bleu(stats: np.ndarray) -> float:
    return _BLEU._compute_score_from_stats(stats.sum(axis=0).tolist()).score


def paired_bleu(run_a: str | Path, run_b: str | Path, split: str = "test",
                n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """BLEU(a) − BLEU(b) on the runs' saved predictions, with the 2.5 and 97.5 percentiles of the
    difference over ``n`` paired resamples of the inputs.

    Raises:
        ValueError: the runs decoded different inputs or references.
    """
    preds_a, refs_a = read_predictions(Path(run_a) / "predictions", split)
    preds_b, refs_b = read_predictions(Path(run_b) / "predictions", split)
    if refs_a != refs_b:
        raise ValueError(f"{run_a} and {run_b} decoded different {split} inputs")
    a, b = input_stats(preds_a, refs_a), input_stats(preds_b, refs_b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        diffs.append(corpus_bleu(a[idx]) - corpus_bleu(b[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"diff": corpus_bleu(a) - corpus_bleu(b), "low": float(low), "high": float(high),
            "resamples": n, "inputs": len(a)}
