"""Chance levels of the GLUE dev metrics (analysis/chance.py) and the Table 2 verdicts they gate."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis import chance, table2
from tests.conftest import compose


def test_accuracy_chance_is_the_majority_share_with_two_binomial_errors():
    labels = np.array([1] * 75 + [0] * 25)
    level, band = chance.level_and_band(labels, "accuracy")
    assert level == 0.75 and band == pytest.approx(2 * math.sqrt(0.75 * 0.25 / 100))  # 0.0866


def test_correlation_chance_is_zero_with_two_over_root_n():
    assert chance.level_and_band(np.linspace(0, 5, 400), "pearson") == (0.0, 0.1)


def test_at_chance_is_within_the_band_only():
    assert chance.at_chance(0.80, (0.75, 0.0866)) and not chance.at_chance(0.84, (0.75, 0.0866))
    assert not chance.at_chance(0.75, None)  # no level known: never called at chance


def test_a_run_reads_its_own_dev_labels(tmp_path, data_dir):
    cfg = compose(["model=tiny_bert", "task=rte", f"data_dir={data_dir}"])
    (tmp_path / "summary.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True)}))
    level, band = chance.of_run(tmp_path, "accuracy")
    assert (round(level, 4), round(band, 4)) == (0.5271, 0.06)  # RTE dev: 146 of 277 not_entailment
    (tmp_path / "summary.json").write_text(json.dumps({"config": {}}))
    assert chance.of_run(tmp_path, "accuracy") is None


def stats(lora, other, task="rte"):
    row = lambda label, v: {"row": label, "task": task, "protocol": "paper", "metric": "accuracy",  # noqa: E731
                            "median": v, "min": v - 0.01, "max": v + 0.01, "n": 3, "improving": 0,
                            "trainable": 1}
    return pd.DataFrame([row(table2.LORA, lora), row("adapter_h r=8", other)])


def test_two_rows_at_chance_are_not_testable_and_say_so():
    levels = {"rte": (0.527, 0.06)}
    v = table2.verdicts(stats(0.52, 0.56), levels)
    assert v["holds"].tolist() == [None]
    line = table2.verdict_lines(v)[0]
    assert "holds on 0 of 0 tasks; not testable on rte (52.0 vs 56.0, both at chance, 52.7 ± 6.0)" in line
    # one row above the band: the comparison stands, and here fails
    v = table2.verdicts(stats(0.52, 0.62), levels)
    assert v["holds"].tolist() == [False]
    assert "not on rte (52.0 vs 62.0, LoRA lower)" in table2.verdict_lines(v)[0]


def test_a_baseline_that_did_not_learn_is_no_evidence_for_lora():
    levels = {"mrpc": (0.684, 0.046)}
    v = table2.verdicts(stats(0.80, 0.684, task="mrpc"), levels)  # LoRA learned, the adapter did not
    assert v["holds"].tolist() == [None]
    assert "not testable on mrpc (80.0 vs 68.4, adapter_h r=8 at chance, 68.4 ± 4.6)" in table2.verdict_lines(v)[0]
