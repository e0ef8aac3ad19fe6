"""NLG tasks (E2E, WebNLG, DART; paper §5.4, Tables 3, 13, 14): LM data, loss, evaluation.

One training row is ``context + separator + " " + completion + end``, as microsoft/LoRA's
``gpt2_encode.py --add_bos --add_eos`` builds it (GPT-2: separator = end = ``<|endoftext|>``).
The LM loss covers the completion and its end token only: ``labels`` is -100 on the context and
the separator (and on padding, see :func:`lora_exp.data.collate`). Each row also carries
``prompt_len``, the number of prompt tokens (context + separator), where PreEmbed/PreLayer put
their infix (``baselines/prefix.py``).

Evaluation protocol. Generation is slow on CPU, so an evaluation of an ``eval_splits`` split is:

* every evaluation: the validation LM loss (``<split>/loss``, mean cross-entropy per completion
  token, without label smoothing, as LoRA's ``gpt2_ft.py`` evaluates);
* the last evaluation of the run (or every one with ``task.decoding.every_eval``): decoding of
  every unique input (:mod:`lora_exp.generate`) and the paper's metrics, written as
  ``<split>/<metric>`` beside the loss, plus the files under ``<run dir>/predictions/``; with
  ``task.decoding.also_greedy`` a beam-search run also decodes greedily from the same weights,
  as ``<split>/greedy_<metric>`` (predictions ``<split>_greedy.*``).

``trainer.max_eval_samples`` counts unique inputs here (each keeps all its references and rows);
``trainer.max_train_samples`` counts training rows, as for GLUE.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn

from lora_exp.data import IGNORE_INDEX, collate, eval_batches, row_lengths, subset
from lora_exp.generate import DecodeOptions, check_decodable, generate, write_predictions
from lora_exp.errors import ConfigError
from lora_exp.files import check_split_file, fingerprint
from lora_exp.storage import cached_dataset, tokenizer_id
from lora_exp.tasks import nlg_data

log = logging.getLogger("lora_exp")

# task.format -> the file reader. The readers take a path (from task.files, lora_exp/files.py),
# so `task.files.<split>=PATH` works.
READERS = {"e2e": nlg_data._read_e2e, "webnlg": nlg_data._read_webnlg, "dart": nlg_data._read_dart}


# The scorers import nltk and sacrebleu (0.7 s): only when a run decodes.
def _score_e2e(preds, refs, seen):
    from lora_exp.nlg_metrics import e2e_metrics

    return e2e_metrics(preds, refs)  # BLEU nist_nltk METEOR ROUGE_L CIDEr (Table 3)


def _score_webnlg(preds, refs, seen):
    from lora_exp.nlg_metrics import webnlg_bleu

    return webnlg_bleu(preds, refs, seen)  # bleu_seen/unseen/all (Table 14)


def _score_dart(preds, refs, seen):
    from lora_exp.nlg_metrics import dart_bleu

    return dart_bleu(preds, refs)  # bleu (Table 13)


SCORERS = {"e2e": _score_e2e, "webnlg": _score_webnlg, "dart": _score_dart}


@dataclass
class NLGEvalSet:
    """One evaluation split: the LM rows and the unique inputs with their references.

    Attributes:
        rows: tokenised rows (one per reference) for the validation loss.
        contexts: the unique inputs, in order of first appearance (``group_references``).
        references: all references of each input.
        seen: WebNLG's seen-category flag per input; None for other formats.
    """

    rows: Dataset
    contexts: list[str]
    references: list[list[str]]
    seen: list[bool] | None

    def __len__(self) -> int:
        return len(self.contexts)


def special_ids(tokenizer) -> tuple[int, int]:
    """(separator, end) token ids.

    GPT-2 has one special token, ``<|endoftext|>``, used by LoRA as both. A tokenizer with its own
    BOS and EOS (SmolLM2: ``<|im_start|>``, ``<|im_end|>``) uses BOS between context and
    completion and EOS after it; one with neither (BERT vocabularies of the tiny test models)
    uses ``[SEP]`` for both.
    """
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise RuntimeError(f"tokenizer {tokenizer.name_or_path} has no EOS or SEP token to end a "
                           "completion with")
    sep = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else end
    return sep, end


def encode_prompts(tokenizer, contexts: list[str]) -> list[list[int]]:
    """``context + separator`` token ids: the prompt of a row, and of generation."""
    sep, _ = special_ids(tokenizer)
    ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
    return [x + [sep] for x in ids]


def encode_rows(tokenizer, examples: list[nlg_data.NLGExample], max_length: int) -> dict[str, list]:
    """Tokenised LM rows: ``input_ids``, ``labels`` (-100 on the prompt), ``prompt_len``.

    Rows longer than ``max_length`` are cut at the end (LoRA's FT_Dataset does the same), so a
    long one may lose its end token, or all of its completion (see :func:`dataset`).
    """
    _, end = special_ids(tokenizer)
    unique = list(dict.fromkeys(ex.context for ex in examples))
    prompts = dict(zip(unique, encode_prompts(tokenizer, unique)))
    # LoRA encodes ' ' + completion: the first word gets the same BPE form as inside a sentence.
    completions = tokenizer([" " + ex.completion for ex in examples],
                            add_special_tokens=False)["input_ids"]
    cols = {"input_ids": [], "labels": [], "prompt_len": []}
    for ex, comp in zip(examples, completions):
        prompt, target = prompts[ex.context], comp + [end]
        cols["input_ids"].append((prompt + target)[:max_length])
        cols["labels"].append(([IGNORE_INDEX] * len(prompt) + target)[:max_length])
        cols["prompt_len"].append(min(len(prompt), max_length))
    return cols


def read_examples(task_cfg, data_dir: str | None, split: str) -> tuple[list[nlg_data.NLGExample], str]:
    """A split's examples and a fingerprint of its file (for the token cache)."""
    path = check_split_file(task_cfg, data_dir, split)
    if path is None:
        raise ConfigError("data_dir", data_dir, "a local mirror laid out like ../shared/data",
                          f"task {task_cfg.name} reads files only (no hub source)")
    fmt = task_cfg.format
    if fmt not in READERS:
        raise ConfigError("task.format", fmt, sorted(READERS))
    try:
        examples = READERS[fmt](path)
    except nlg_data.DataError as e:
        raise ConfigError(f"task.files.{split}", str(path), None, str(e)) from None
    return examples, fingerprint(path)


def tokenized_rows(task_cfg, examples, source: str, split: str, tokenizer, max_length: int) -> Dataset:
    """:func:`encode_rows`, cached on disk keyed by source file, tokenizer and max length."""
    key = [source, tokenizer_id(tokenizer), max_length, task_cfg.format, "nlg", 1]
    return cached_dataset(f"{task_cfg.name}-{split}", key,
                          lambda: Dataset.from_dict(encode_rows(tokenizer, examples, max_length)))


def _with_targets(rows: Dataset, what: str) -> Dataset:
    """Drop rows whose completion was cut away entirely (no token to learn or score)."""
    keep = [i for i, lab in enumerate(rows["labels"]) if any(t != IGNORE_INDEX for t in lab)]
    if len(keep) < len(rows):
        log.warning("%s: %d of %d rows have no completion token within trainer.max_length; "
                    "dropped", what, len(rows) - len(keep), len(rows))
        rows = rows.select(keep)
    return rows


def train_set(task_cfg, data_dir: str | None, split: str, tokenizer, max_length: int,
              max_samples: int | None) -> Dataset:
    """The training rows of a split: a seeded subset of ``max_samples`` rows (``task.subset_seed``),
    without rows whose completion was cut away."""
    examples, source = read_examples(task_cfg, data_dir, split)
    rows = tokenized_rows(task_cfg, examples, source, split, tokenizer, max_length)
    return _with_targets(subset(rows, max_samples, task_cfg.subset_seed), f"{split} rows")


def eval_set(task_cfg, data_dir: str | None, split: str, tokenizer, max_length: int,
             max_samples: int | None) -> NLGEvalSet:
    """An evaluation split: its unique inputs with all their references, and their LM rows.

    Args:
        max_samples: unique inputs to keep (seeded by ``task.subset_seed``; every reference of a
            kept input stays).
    """
    examples, source = read_examples(task_cfg, data_dir, split)
    rows = tokenized_rows(task_cfg, examples, source, split, tokenizer, max_length)
    contexts, references = nlg_data.group_references(examples)
    seen = nlg_data.seen_flags(examples) if examples and examples[0].seen is not None else None
    group_of = {c: i for i, c in enumerate(contexts)}
    keep = np.arange(len(contexts))
    if max_samples and max_samples < len(contexts):
        rng = np.random.default_rng(task_cfg.subset_seed)
        keep = np.sort(rng.permutation(len(contexts))[:max_samples])
    kept = set(keep.tolist())
    row_idx = [i for i, ex in enumerate(examples) if group_of[ex.context] in kept]
    return NLGEvalSet(rows=_with_targets(rows.select(row_idx), f"{split} rows"),
                      contexts=[contexts[i] for i in keep],
                      references=[references[i] for i in keep],
                      seen=None if seen is None else [seen[i] for i in keep])


class CausalLMLoss:
    """HF's causal-LM loss with label smoothing while the model trains (Table 11: 0.1 on E2E
    and WebNLG). Evaluation losses stay plain cross-entropy, as in LoRA's ``gpt2_ft.py``.

    It replaces ``model.loss_function``, so the loss is still computed inside the model's
    forward, from labels that the prefix methods' pre-hook has already widened.
    """

    def __init__(self, model: nn.Module, label_smoothing: float):
        self.model, self.label_smoothing = model, label_smoothing

    def __call__(self, logits, labels, vocab_size=None, ignore_index: int = IGNORE_INDEX,
                 shift_labels=None, **kwargs) -> torch.Tensor:
        logits = logits.float()  # (B, T, V)
        if shift_labels is None:  # position t predicts token t + 1
            shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        eps = self.label_smoothing if self.model.training else 0.0
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               shift_labels.reshape(-1).to(logits.device),
                               ignore_index=ignore_index, label_smoothing=eps)


def _drop_prompt_len(module: nn.Module, args: tuple, kwargs: dict):
    # Registered after the method's hooks: a prefix method has consumed `prompt_len` already;
    # for every other method the HF model must not receive it.
    kwargs.pop("prompt_len", None)
    return args, kwargs


def prepare_model(model: nn.Module, task_cfg) -> None:
    """Label smoothing for training, and the ``prompt_len`` batch field kept from the HF model.

    Also checks ``task.format``, ``task.decoding`` and that the adapted model can be decoded with
    those settings now, before step 1, rather than at the final evaluation.
    """
    if task_cfg.format not in READERS:
        raise ConfigError("task.format", task_cfg.format, sorted(READERS))
    options = DecodeOptions.from_cfg(task_cfg.decoding)
    if task_cfg.decoding.get("also_greedy", False) and options.greedy:
        raise ConfigError("task.decoding.also_greedy", True, [False],
                          "the run already decodes greedily (task.decoding.greedy=true)")
    eps = float(task_cfg.get("label_smoothing") or 0.0)
    if not 0 <= eps < 1:
        raise ConfigError("task.label_smoothing", eps, "a fraction in [0, 1)")
    if eps > 0:
        model.loss_function = CausalLMLoss(model, eps)
    model.register_forward_pre_hook(_drop_prompt_len, with_kwargs=True)
    check_decodable(model, options)  # now, not after training


@torch.no_grad()
def lm_loss(model: nn.Module, rows: Dataset, batch_size: int, pad_id: int, device,
            amp_dtype) -> float:
    """Mean cross-entropy per completion token over ``rows``."""
    total, n = 0.0, 0
    for idx in eval_batches(row_lengths(rows), batch_size):  # a sum: order-free
        batch = {k: v.to(device) for k, v in collate(rows, idx, pad_id).items()}
        tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # what the loss averages
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(**batch).loss
        total += loss.float().item() * tokens
        n += tokens
    return total / max(n, 1)


def evaluate(model: nn.Module, eval_sets: dict[str, NLGEvalSet], task_cfg, **kwargs) -> dict[str, float]:
    """``<split>/<metric>`` for every eval split (:func:`evaluate_split`)."""
    return {f"{split}/{k}": v for split, ds in eval_sets.items()
            for k, v in evaluate_split(model, ds, task_cfg, split=split, **kwargs).items()}


def evaluate_split(model: nn.Module, ds: NLGEvalSet, task_cfg, *, split: str, final: bool, tokenizer,
                   batch_size: int, device, amp_dtype, out_dir: Path) -> dict[str, float]:
    """``loss`` always; decoding and the task's metrics at the final evaluation (module doc)."""
    model.eval()
    try:
        out = {"loss": lm_loss(model, ds.rows, batch_size, tokenizer.pad_token_id, device, amp_dtype)}
        dec = task_cfg.decoding
        if final or dec.get("every_eval", False):
            options = DecodeOptions.from_cfg(dec)
            decode = dict(tokenizer=tokenizer, device=device, amp_dtype=amp_dtype, out_dir=out_dir)
            out.update(decode_and_score(model, ds, task_cfg.format, options, split, **decode))
            if dec.get("also_greedy", False) and not options.greedy:
                # beam search's gain over greedy decoding of the same weights, without retraining
                greedy = decode_and_score(model, ds, task_cfg.format, replace(options, greedy=True),
                                          f"{split}_greedy", **decode)
                out.update({f"greedy_{k}": v for k, v in greedy.items()})
    finally:
        model.train()
    return out


def decode_and_score(model: nn.Module, ds: NLGEvalSet, task_format: str, options: DecodeOptions,
                     name: str, *, tokenizer, device, amp_dtype, out_dir: Path) -> dict[str, float]:
    """Decode every unique input of ``ds``, write the predictions as ``name``, return the task's
    metrics."""
    # fp32 unless asked: a near-tie between two tokens can flip under bf16 rounding
    autocast = options.precision == "train" and amp_dtype is not None
    with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
        preds = generate(model, tokenizer, encode_prompts(tokenizer, ds.contexts), options,
                         end_id=special_ids(tokenizer)[1], device=device)
    write_predictions(Path(out_dir) / "predictions", name, ds.contexts, preds, ds.references)
    return SCORERS[task_format](preds, ds.references, ds.seen)
