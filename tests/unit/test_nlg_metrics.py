"""NLG metrics: hand-checkable BLEU cases, and the E2E wrapper against direct library calls."""
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import sacrebleu
from nltk.translate.nist_score import corpus_nist
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from lora_exp import nlg_metrics
from lora_exp.nlg_metrics import bleu, dart_bleu, e2e_metrics, e2e_nist, webnlg_bleu
from lora_exp.tasks import nlg
from lora_exp.tasks.nlg_data import group_references
from tests.conftest import compose

SENT = "the cat sat on the mat ."


def test_identical_single_reference_scores_100():
    assert bleu([SENT], [[SENT]]) == pytest.approx(100.0)
    assert dart_bleu([SENT], [[SENT]]) == {"bleu": pytest.approx(100.0)}


def test_bleu_of_a_disjoint_output_is_0():
    assert bleu(["a b c d e"], [[SENT]]) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def e2e_valid_refs(data_dir):
    """The references of each E2E valid MR, read as the trainer reads the split."""
    examples, _ = nlg.read_examples(compose(["task=e2e"]).task, str(data_dir), "valid")
    return group_references(examples)[1]


def test_prediction_matching_any_of_3_references_beats_one_non_matching_reference(e2e_valid_refs):
    three = e2e_valid_refs[0][:3]  # name : Alimentum | area : city centre | family friendly : no
    prediction = three[1]
    with_all = bleu([prediction], [three])
    with_one_other = bleu([prediction], [three[:1]])
    assert with_all == pytest.approx(100.0)
    assert with_one_other < 50.0


def test_fewer_references_equal_lora_padding_with_the_first():
    # LoRA pads missing reference slots with the first reference; a repeated reference changes
    # no BLEU statistic, so leaving the slot empty (None for sacrebleu) gives the same score.
    preds = ["a pub near the river", "blue spice is a coffee shop in the centre"]
    refs = [["the pub is near the river", "a riverside pub"],
            ["blue spice is a coffee shop", "a coffee shop called blue spice", "in the centre"]]
    padded = [refs[0] + [refs[0][0]], refs[1]]
    assert bleu(preds, refs) == pytest.approx(bleu(preds, padded))


def test_generation_eval_lowercases_splits_non_word_chars_and_keeps_6_refs():
    # gpt2_decode.py --lower --tokenize: "Abilene,Texas" -> "abilene , texas".
    assert dart_bleu(["ABILENE,TEXAS is served."],
                     [["abilene , texas is served ."]]) == {"bleu": pytest.approx(100.0)}
    refs = [f"reference number {k} is here" for k in range(7)]
    assert bleu([refs[6]], [refs]) == pytest.approx(100.0)
    assert dart_bleu([refs[6]], [refs])["bleu"] < 100.0  # the 7th reference is dropped


def test_webnlg_scores_seen_and_unseen_separately():
    preds = [SENT, "a b c d e"]
    refs = [[SENT], ["the dog ran in the park ."]]
    scores = webnlg_bleu(preds, refs, seen=[True, False])
    assert scores["bleu_seen"] == pytest.approx(100.0)
    assert scores["bleu_unseen"] == pytest.approx(0.0)
    assert 0.0 < scores["bleu_all"] < 100.0
    assert math.isnan(webnlg_bleu([SENT], [[SENT]], seen=[True])["bleu_unseen"])


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 predictions for 1 reference sets"):
        bleu([SENT, SENT], [[SENT]])
    with pytest.raises(ValueError, match="seen flags"):
        webnlg_bleu([SENT], [[SENT]], seen=[True, False])


def test_nist_with_outputs_shorter_than_5_tokens_is_finite():
    assert e2e_nist(["x y"], [["x y z"]]) > 0.0


def test_e2e_metrics_needs_java(monkeypatch):
    monkeypatch.setattr(nlg_metrics.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Java 17"):
        e2e_metrics([SENT], [[SENT]])


def _perturb(k: int, text: str) -> str:
    words = text.split()
    return [" ".join(words[:-3]),                      # truncated
            " ".join(words[1:] + words[:1]),           # rotated
            text.replace("Alimentum", "The Eagle"),    # wrong name
            text.upper(),                              # case only: BLEU/NIST/COCO ignore it
            " ".join(words[::-1])][k]                  # reversed


@pytest.fixture(scope="module")
def e2e_sample(e2e_valid_refs):
    """First 5 MRs of E2E valid, each output a perturbed copy of one of its references."""
    refs = e2e_valid_refs[:5]
    preds = [_perturb(k, r[k]) for k, r in enumerate(refs)]
    # Each reference used as an output is taken out of its MR's references.
    refs = [r[:k] + r[k + 1:] for k, r in enumerate(refs)]
    return preds, refs


def _direct_scores(preds: list[str], refs: list[list[str]]) -> dict[str, float]:
    """The same metrics straight from the libraries, COCO as COCOEvalCap.evaluate does it."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max(map(len, refs)))]
    sacre = sacrebleu.corpus_bleu(preds, streams, tokenize="13a", lowercase=True,
                                  smooth_method="none", force=True).score
    tok = Tokenizer13a()
    nist = corpus_nist([[tok(r.lower()).split() for r in rs] for rs in refs],
                       [tok(p.lower()).split() for p in preds], n=5)
    ptb = PTBTokenizer()
    gts = ptb.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = ptb.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    meteor = Meteor()
    meteor_score = meteor.compute_score(gts, res)[0]
    del meteor  # its __del__ ends the JVM
    return {"BLEU": sacre, "nist_nltk": nist, "METEOR": 100 * meteor_score,
            "ROUGE_L": 100 * Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0]}


@pytest.fixture(scope="module")
def scores(e2e_sample):
    """(wrapper, direct) scores; each starts a METEOR JVM, the slow part, so run side by side."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        direct = pool.submit(_direct_scores, *e2e_sample)
        wrapper = e2e_metrics(*e2e_sample)
        return wrapper, direct.result()


@pytest.mark.parametrize("metric", ["BLEU", "nist_nltk", "METEOR", "ROUGE_L", "CIDEr"])
def test_e2e_metrics_equal_direct_library_calls(scores, metric):
    wrapper, direct = scores
    assert wrapper[metric] == pytest.approx(direct[metric], rel=1e-9)


def test_e2e_metrics_scales(scores):
    wrapper_scores = scores[0]
    # nltk's NIST is not the paper's mteval NIST: it is named apart, never plain "NIST".
    assert list(wrapper_scores) == ["BLEU", "nist_nltk", "METEOR", "ROUGE_L", "CIDEr"]
    assert not {k for k in wrapper_scores if k.lower() == "nist"}
    # Perturbed copies of references: high but imperfect; percent for BLEU/METEOR/ROUGE_L,
    # raw for NIST (a few units) and CIDEr (0-10).
    assert 20 < wrapper_scores["BLEU"] < 100
    assert 20 < wrapper_scores["METEOR"] < 100
    assert 20 < wrapper_scores["ROUGE_L"] < 100
    assert 1 < wrapper_scores["nist_nltk"] < 15
    assert 0.1 < wrapper_scores["CIDEr"] < 10
