"""The paired bootstrap of corpus BLEU over test inputs (analysis/bootstrap.py) and the
predictions reader it stands on."""
import pytest

from analysis import bootstrap
from lora_exp.generate import read_predictions, write_predictions
from lora_exp.nlg_metrics import bleu

REFS = [["the pub is in the city centre .", "a pub in the centre of the city ."],
        ["a cheap coffee shop near the river ."],
        ["it is a family friendly restaurant .", "a restaurant for families .", "kids are welcome ."],
        ["the eagle serves french food ."]] * 5
GOOD = ["the pub is in the city centre .", "a cheap coffee shop near the river .",
        "it is a family friendly restaurant .", "the eagle serves french food ."] * 5
POOR = ["a pub .", "a shop near the river .", "a restaurant .", "food ."] * 5


def run(tmp_path, name, predictions):
    folder = tmp_path / name / "predictions"
    folder.mkdir(parents=True)
    write_predictions(folder, "test", ["src"] * len(predictions), predictions, REFS)
    return tmp_path / name


def test_predictions_read_back_as_written(tmp_path):
    folder = run(tmp_path, "a", GOOD) / "predictions"
    assert read_predictions(folder, "test") == (GOOD, REFS)


def test_the_whole_sample_gives_the_reported_bleu():
    stats = bootstrap.input_stats(POOR, REFS)
    assert stats.shape[0] == len(POOR)
    assert bootstrap.corpus_bleu(stats) == pytest.approx(bleu(POOR, REFS, tokenize="13a", lowercase=True))


def test_paired_bootstrap_separates_only_what_the_inputs_cannot_explain(tmp_path):
    good, poor = run(tmp_path, "good", GOOD), run(tmp_path, "poor", POOR)
    same = bootstrap.paired_bleu(good, good, n=50)
    assert same["diff"] == same["low"] == same["high"] == 0
    apart = bootstrap.paired_bleu(good, poor, n=200)
    assert apart["diff"] == pytest.approx(100 - bleu(POOR, REFS, tokenize="13a", lowercase=True))
    assert 0 < apart["low"] <= apart["diff"] <= apart["high"] and apart["inputs"] == len(GOOD)
    other = run(tmp_path, "other", GOOD[:4])
    with pytest.raises(ValueError, match="predictions for"):
        read_predictions(other / "predictions", "test")  # 4 predictions, 20 reference sets
