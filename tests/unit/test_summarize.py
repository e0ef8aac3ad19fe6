"""summarize(history, task): which evaluation a run reports as "best" (the paper's best-epoch
protocol, by task.main_metric) and as "final", per evaluation split."""
import math

import pytest
from omegaconf import OmegaConf

from lora_exp.selection import summarize

MNLI = OmegaConf.create({"eval_splits": ["dev_matched", "dev_mismatched"],
                         "main_metric": "dev_matched/accuracy"})
SST2 = OmegaConf.create({"eval_splits": ["dev"], "main_metric": "dev/accuracy"})
E2E = OmegaConf.create({"eval_splits": ["valid"], "main_metric": "valid/BLEU"})


def _rec(step, **metrics):
    """One metrics.jsonl record as the trainer writes it (4 steps an epoch); split/metric keys
    are passed with "__" for "/"."""
    return {"step": step, "epoch": step / 4, "train_loss": 0.5,
            **{k.replace("__", "/"): v for k, v in metrics.items()}}


def test_best_is_the_max_of_the_main_metric_on_every_split_and_final_is_the_last():
    history = [_rec(4, dev_matched__accuracy=0.70, dev_mismatched__accuracy=0.75),
               _rec(8, dev_matched__accuracy=0.80, dev_mismatched__accuracy=0.71),
               _rec(12, dev_matched__accuracy=0.78, dev_mismatched__accuracy=0.79)]
    out = summarize(history, MNLI)
    assert out["main_metric"] == "dev_matched/accuracy"
    # Step 8 is best on dev_matched (0.80): its dev_mismatched score is reported beside it, not
    # dev_mismatched's own maximum (0.79 at step 12), as the paper picks one epoch per run.
    assert out["dev_matched"] == {"best": {"accuracy": 0.80, "step": 8, "epoch": 2.0},
                                  "final": {"accuracy": 0.78, "step": 12, "epoch": 3.0}}
    assert out["dev_mismatched"] == {"best": {"accuracy": 0.71, "step": 8, "epoch": 2.0},
                                     "final": {"accuracy": 0.79, "step": 12, "epoch": 3.0}}
    assert set(out) == {"dev_matched", "dev_mismatched", "main_metric", "selection"}
    assert out["selection"] == "paper"


def test_a_tie_goes_to_the_first_evaluation():
    # Pinned on purpose: as python's max, the earliest of equal scores wins (the fewer steps).
    history = [_rec(4, dev__accuracy=0.6), _rec(8, dev__accuracy=0.9, dev__f1=0.1),
               _rec(12, dev__accuracy=0.9, dev__f1=0.2), _rec(16, dev__accuracy=0.8)]
    best = summarize(history, SST2)["dev"]["best"]
    assert (best["step"], best["f1"]) == (8, 0.1)


def test_evaluations_without_the_main_metric_are_not_candidates():
    # NLG decodes (and so has BLEU) at the last evaluation only; the earlier ones carry only
    # the loss, and a lower loss must not make one of them "best".
    history = [_rec(4, valid__loss=2.0), _rec(8, valid__loss=3.0, valid__BLEU=0.41),
               _rec(12, valid__loss=1.5)]
    out = summarize(history, E2E)["valid"]
    assert out["best"] == {"loss": 3.0, "BLEU": 0.41, "step": 8, "epoch": 2.0}
    assert out["final"] == {"loss": 1.5, "step": 12, "epoch": 3.0}


def test_without_any_main_metric_best_is_the_last_evaluation():
    history = [_rec(4, valid__loss=2.0), _rec(8, valid__loss=1.0)]
    assert summarize(history, E2E)["valid"]["best"]["step"] == 8


def test_metrics_of_other_splits_do_not_leak_into_a_split():
    # "dev" must not pick up "dev_mismatched/…" by prefix: the split name ends at the "/".
    task = OmegaConf.create({"eval_splits": ["dev"], "main_metric": "dev/accuracy"})
    history = [_rec(4, dev__accuracy=0.5, dev_mismatched__accuracy=0.9)]
    assert summarize(history, task)["dev"]["best"] == {"accuracy": 0.5, "step": 4, "epoch": 1.0}


def test_a_nan_main_metric_is_never_best():
    # A diverged first evaluation: every comparison with NaN is False, so max() keeps it.
    history = [_rec(4, dev__accuracy=math.nan), _rec(8, dev__accuracy=0.7),
               _rec(12, dev__accuracy=0.9)]
    best = summarize(history, SST2)["dev"]["best"]
    assert not math.isnan(best["accuracy"])
    assert best["step"] == 12
