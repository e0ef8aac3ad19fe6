"""E2E, WebNLG and DART metrics as the paper's scorers compute them (Tables 3, 13, 14).

Inputs are aligned lists: ``predictions[i]`` is the output for the i-th unique input and
``references[i]`` all of its references (see ``tasks.nlg_data.group_references``). Every
function strips each string, as both scorers read line files.

* E2E (Table 3): microsoft/LoRA runs ``e2e-metrics/measure_scores.py -p``. There, BLEU and NIST
  come from its Python port of mteval-v13a (``pymteval``: 13a tokenisation, case-insensitive,
  no smoothing, merged multi-reference clipping); COCO's Bleu_4 is computed but not the reported
  BLEU. METEOR, ROUGE_L and CIDEr come from the MS-COCO caption code (pycocoevalcap) after its
  Stanford PTBTokenizer (lower-cased, punctuation dropped). Here: BLEU = sacrebleu with 13a and
  lowercase (same tokeniser, clipping, closest-reference length with ties to the shorter one);
  ``nist_nltk`` = nltk ``corpus_nist(n=5)`` on the same tokens, which is about 1.1 lower than
  e2e-metrics' NIST on multi-reference data (see :func:`e2e_nist`); METEOR, ROUGE_L, CIDEr =
  pycocoevalcap.
* WebNLG and DART (Tables 14, 13): LoRA's ``gpt2_decode.py --tokenize --lower --ref_num 6``
  lower-cases, splits every non-word character off (``re.split('(\\W)')``), keeps at most 6
  references and pads the rest with the first one. Then GenerationEval's BLEU runs Moses
  ``multi-bleu-detok.perl`` (13a tokenisation, case-sensitive, no smoothing). Here: the same
  post-processing, then sacrebleu with 13a. Padding with a repeated reference changes no BLEU
  statistic, so missing references are passed to sacrebleu as None, which it skips.

Cross-checked outside the repo on E2E, WebNLG and DART test (one reference held out as the
output): BLEU equals e2e-metrics' pymteval and Moses multi-bleu-detok.perl to 4 decimals.
"""
from __future__ import annotations

import math
import re
import shutil

import sacrebleu
from nltk.translate.nist_score import corpus_nist
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

# LoRA's gpt2_decode.py is run with --ref_num 6 for both WebNLG and DART: later references are
# dropped (2 of 1,862 WebNLG test inputs and 88 of 4,159 DART test inputs have more).
GENERATION_EVAL_MAX_REFS = 6

# The keys of :func:`e2e_metrics`, in Table 3's column order. NIST carries its scorer's name
# because it is not the mteval-v13a NIST of the paper's column, so no table can show it as that.
E2E_METRICS = ("BLEU", "nist_nltk", "METEOR", "ROUGE_L", "CIDEr")


def bleu(predictions: list[str], references: list[list[str]], *, tokenize: str = "13a",
         lowercase: bool = False, max_refs: int | None = None) -> float:
    """Corpus BLEU-4 against all references of each input, via sacrebleu.

    sacrebleu wants one stream per reference slot of equal length; inputs with fewer references
    get None in the later streams, which sacrebleu skips (an empty string would instead count
    as a 0-length reference and change the brevity penalty). No smoothing, as multi-bleu and
    mteval.

    Args:
        predictions: One output per input.
        references: The references of each input (at least one each).
        tokenize: sacrebleu tokeniser name; "13a" is mteval-v13a's and multi-bleu-detok's.
        lowercase: Case-insensitive matching.
        max_refs: Keep only the first ``max_refs`` references of each input.

    Returns:
        BLEU in percent (0-100).

    Raises:
        ValueError: Mismatched lengths or an input without references.
    """
    predictions, references = clean(predictions, references)
    if max_refs is not None:
        references = [refs[:max_refs] for refs in references]
    n_streams = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references]
               for k in range(n_streams)]
    # force=True only silences sacrebleu's "tokenized period" warning: E2E references are
    # tokenised text, and the scores do not change.
    return sacrebleu.corpus_bleu(predictions, streams, tokenize=tokenize, lowercase=lowercase,
                                 smooth_method="none", force=True).score


def e2e_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """The five E2E challenge metrics, as ``e2e-metrics/measure_scores.py -p`` (Table 3).

    The jars read and write text in Java's default charset, which Java 17 takes from the
    locale: under a UTF-8 locale (LANG=C.UTF-8) "£" and "é" pass through (PTB turns "£" into
    "#"); under an ASCII locale they become "?", which COCO's punctuation filter drops.

    Args:
        predictions: One output per unique MR.
        references: All references of each MR.

    Returns:
        ``{"BLEU", "nist_nltk", "METEOR", "ROUGE_L", "CIDEr"}`` on the paper's scales: BLEU,
        METEOR and ROUGE_L in percent (70.4, 46.8, 71.8), CIDEr raw (2.53). ``nist_nltk`` is
        raw too but is not the paper's NIST (8.85): see :func:`e2e_nist`.

    Raises:
        RuntimeError: Java is missing (METEOR and the PTB tokeniser run jars).
        ValueError: Mismatched lengths or an MR without references.
    """
    if shutil.which("java") is None:
        raise RuntimeError("METEOR and the PTB tokenizer (pycocoevalcap) need Java 17: "
                           "apt-get install openjdk-17-jre-headless")
    predictions, references = clean(predictions, references)
    scores = {
        "BLEU": bleu(predictions, references, tokenize="13a", lowercase=True),
        "nist_nltk": e2e_nist(predictions, references),
    }
    coco = _coco_scores(predictions, references)
    scores.update(METEOR=100 * coco["METEOR"], ROUGE_L=100 * coco["ROUGE_L"],
                  CIDEr=coco["CIDEr"])
    return {k: float(scores[k]) for k in E2E_METRICS}


def e2e_nist(predictions: list[str], references: list[list[str]]) -> float:
    """NIST-5 via nltk on mteval-13a tokens, lower-cased (e2e-metrics is case-insensitive).

    Equal to e2e-metrics' NIST on single-reference data, but LOWER on multi-reference data:
    nltk clips n-gram hits against the single best reference and takes that reference's length,
    where mteval clips against the merged references and uses the mean reference length. On E2E
    test (616 MRs, one held-out reference as the output, the rest as references) nltk gives 7.83
    where e2e-metrics gives 8.91, so this NIST is not comparable with the paper's 8.85; it is
    reported as ``nist_nltk``.

    Returns:
        NIST, raw (not percent).
    """
    predictions, references = clean(predictions, references)
    tok = Tokenizer13a()

    def words(s: str) -> list[str]:
        return tok(s.lower()).split()

    hyps = [words(p) for p in predictions]
    # nltk divides by the number of output n-grams of each order, so an order that no output
    # reaches (every output shorter than 5 tokens) would divide by zero; it adds 0 in mteval.
    order = min(5, max(len(h) for h in hyps))
    if order == 0:
        return 0.0
    return float(corpus_nist([[words(r) for r in refs] for refs in references], hyps, n=order))


def webnlg_bleu(predictions: list[str], references: list[list[str]],
                seen: list[bool]) -> dict[str, float]:
    """WebNLG BLEU on seen, unseen and all categories, as LoRA's pipeline (Table 14 S/U/A).

    Each subset is its own corpus BLEU, as LoRA's ``gpt2_decode.py --filter seen|unseen``.

    Args:
        predictions: One output per unique triple set.
        references: Its references.
        seen: Whether each input's category is a training category.

    Returns:
        ``{"bleu_seen", "bleu_unseen", "bleu_all"}`` in percent; NaN for an empty subset
        (dev has no unseen category).
    """
    predictions, references = clean(predictions, references)
    if len(seen) != len(predictions):
        raise ValueError(f"{len(seen)} seen flags for {len(predictions)} predictions")
    preds = [_generation_eval_text(p) for p in predictions]
    refs = [[_generation_eval_text(r) for r in rs] for rs in references]

    def subset(keep: list[bool]) -> float:
        idx = [i for i, k in enumerate(keep) if k]
        if not idx:
            return math.nan
        return bleu([preds[i] for i in idx], [refs[i] for i in idx],
                    max_refs=GENERATION_EVAL_MAX_REFS)

    return {"bleu_seen": subset(list(seen)), "bleu_unseen": subset([not s for s in seen]),
            "bleu_all": subset([True] * len(seen))}


def dart_bleu(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """DART BLEU as LoRA's pipeline (Table 13): ``{"bleu"}`` in percent."""
    predictions, references = clean(predictions, references)
    preds = [_generation_eval_text(p) for p in predictions]
    refs = [[_generation_eval_text(r) for r in rs] for rs in references]
    return {"bleu": bleu(preds, refs, max_refs=GENERATION_EVAL_MAX_REFS)}


def _generation_eval_text(s: str) -> str:
    # gpt2_decode.py post_process with --lower --tokenize: lower, then split off every \W char.
    return " ".join(" ".join(re.split(r"(\W)", s.lower())).split())


def clean(predictions: list[str], references: list[list[str]]
          ) -> tuple[list[str], list[list[str]]]:
    """The texts as every scorer here reads them (whitespace runs as one space), after checking
    one reference set, never empty, per prediction."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"inputs without references at positions {empty[:10]}")
    # Strip like the scorers' line readers; a newline inside a string would break the line
    # protocols of METEOR and the PTB tokenizer, so whitespace runs become one space.
    return ([" ".join(p.split()) for p in predictions],
            [[" ".join(r.split()) for r in refs] for refs in references])


def _coco_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """METEOR, ROUGE_L and CIDEr as COCOEvalCap.evaluate computes them (fractions, raw CIDEr)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # One tokenizer run for references and predictions (one JVM start instead of two); it
    # keeps lines apart, so the tokens equal COCOEvalCap's two separate calls.
    captions = {("ref", i): [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    captions.update({("sys", i): [{"caption": p}] for i, p in enumerate(predictions)})
    tokens = PTBTokenizer().tokenize(captions)
    gts = {i: tokens[("ref", i)] for i in range(len(references))}
    res = {i: tokens[("sys", i)] for i in range(len(predictions))}

    meteor = Meteor()
    try:
        meteor_score, _ = meteor.compute_score(gts, res)
    finally:
        meteor.meteor_p.stdin.close()  # end the JVM now, not whenever the object is collected
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
    return {"METEOR": meteor_score,
            "ROUGE_L": Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0]}
