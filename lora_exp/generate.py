"""Decoding for the NLG tasks: batched beam search (or greedy) through HF ``model.generate``.

The settings are those of microsoft/LoRA's ``gpt2_beam.py`` (paper Table 11): beam 10, length
penalty lp (a finished hypothesis scores sum log p / n^lp, n = generated tokens including the
end token; HF's beam search divides the same way), no repeated 4-gram, at most 64 new tokens.

Two details follow ``gpt2_beam.py`` rather than HF's defaults:

* the no-repeat-n-gram rule looks at the *generated* tokens only (gpt2_beam.py's ``history``).
  HF's ``no_repeat_ngram_size`` also counts the prompt for decoder-only models, which would
  forbid copying any 4 tokens of the input, e.g. E2E's ``£ 20 - 25``;
* prompts are left-padded, so every row's generation starts at the same column.

Methods that insert tokens inside the model (PreEmbed, PreLayer) decode greedily, one input at
a time, with :func:`greedy_unbatched`: ``generate``'s mask bookkeeping cannot follow them.

One difference remains: with ``early_stopping=True`` HF stops an input once ``num_beams``
hypotheses have finished, where gpt2_beam.py always runs all 64 steps.

Output files (:func:`write_predictions`), in ``<run dir>/predictions/``:

* ``<split>.pred.txt``: one prediction per line, in the order of the unique inputs
  (``nlg_data.group_references``);
* ``<split>.ref.txt``: the references of each input, one per line, inputs separated by a blank
  line: the multi-reference format of e2e-metrics' ``measure_scores.py``, so
  ``measure_scores.py test.ref.txt test.pred.txt`` scores a run with the official scorer;
* ``<split>.src.txt``: the unique inputs, one per line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor

from lora_exp.storage import atomic_write
from lora_exp.checks import check_int
from lora_exp.errors import ConfigError


PRECISIONS = ("fp32", "train")  # task.decoding.precision


@dataclass(frozen=True)
class DecodeOptions:
    """``task.decoding``: beam search, or greedy decoding with ``greedy``."""

    num_beams: int
    length_penalty: float
    no_repeat_ngram_size: int
    max_new_tokens: int
    batch_size: int  # prompts per generate call (each becomes num_beams sequences)
    greedy: bool = False
    precision: str = "fp32"  # fp32 | train: decode under the training autocast (bf16 on a bf16 run)

    @classmethod
    def from_cfg(cls, cfg) -> "DecodeOptions":
        """Read and check ``task.decoding``.

        Raises:
            ConfigError: a non-positive beam count, token budget or batch size, or a negative
                n-gram size.
        """
        opts = cls(num_beams=cfg.num_beams, length_penalty=float(cfg.length_penalty),
                   no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                   max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                   greedy=bool(cfg.get("greedy", False)), precision=cfg.get("precision", "fp32"))
        if opts.precision not in PRECISIONS:
            raise ConfigError("task.decoding.precision", opts.precision, list(PRECISIONS))
        for key, low in (("num_beams", 1), ("max_new_tokens", 1), ("batch_size", 1),
                         ("no_repeat_ngram_size", 0)):
            check_int(f"task.decoding.{key}", getattr(opts, key), low)
        return opts


class GeneratedNoRepeatNGram(NoRepeatNGramLogitsProcessor):
    """HF's no-repeat-n-gram rule applied to the tokens after column ``prompt_width`` only."""

    def __init__(self, ngram_size: int, prompt_width: int):
        super().__init__(ngram_size)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return super().__call__(input_ids[:, self.prompt_width:], scores)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def widens_sequence(model: nn.Module) -> bool:
    """True when the adapted model returns more positions than it is given.

    PreEmbed/PreLayer insert their special tokens inside the forward pass
    (``baselines/prefix.py``). ``generate`` keeps the attention mask and positions itself and
    cannot follow a wider first step, so such models decode with :func:`greedy_unbatched`.
    """
    device = next(model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    width = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape[1]
    return width != ids.shape[1]


def check_decodable(model: nn.Module, options: DecodeOptions) -> None:
    """Fail before training when the run's decoding cannot be done with this method.

    Raises:
        ConfigError: beam search asked for a model that widens its input (prefix methods).
    """
    if not options.greedy and widens_sequence(model):
        raise ConfigError("task.decoding.greedy", False, [True],
                          "this method inserts tokens inside the model (PreEmbed/PreLayer), which "
                          "HF's beam search cannot follow; lora-exp decodes it greedily, one input "
                          "at a time")


def _check_positions(model: nn.Module, width: int, max_new: int) -> None:
    config = model.config
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit is not None and width + max_new > limit:
        raise RuntimeError(f"prompts of {width} tokens + task.decoding.max_new_tokens={max_new} "
                           f"exceed the model's {limit} positions")


def _text(tokenizer, ids: list[int], end_id: int) -> str:
    if end_id in ids:
        ids = ids[:ids.index(end_id)]
    return " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())  # one line


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: list[list[int]], options: DecodeOptions, *,
             end_id: int, device: torch.device) -> list[str]:
    """Decode every prompt; returns one single-line text per prompt, in the given order.

    Args:
        prompts: token ids of ``context + separator`` per unique input.
        end_id: the token that ends a completion (generation stops there; it is cut off).
    """
    if widens_sequence(model):
        return [_text(tokenizer, greedy_unbatched(model, p, options, end_id=end_id, device=device),
                      end_id) for p in prompts]
    pad_id = tokenizer.pad_token_id
    # Similar lengths in a batch: less padding. The results go back to the input order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), options.batch_size):
        idx = order[start:start + options.batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        width = ids.shape[1]
        _check_positions(model, width, options.max_new_tokens)
        kwargs = {"max_new_tokens": options.max_new_tokens, "eos_token_id": end_id,
                  "pad_token_id": pad_id, "do_sample": False, "num_beams": 1}
        if options.no_repeat_ngram_size:
            kwargs["logits_processor"] = LogitsProcessorList(
                [GeneratedNoRepeatNGram(options.no_repeat_ngram_size, width)])
        if not options.greedy:
            kwargs.update(num_beams=options.num_beams, length_penalty=options.length_penalty,
                          early_stopping=True)
        seqs = model.generate(input_ids=ids, attention_mask=mask, **kwargs)  # (B, width + new)
        for row, i in zip(seqs[:, width:].tolist(), idx):
            out[i] = _text(tokenizer, row, end_id)
    return out


@torch.no_grad()
def greedy_unbatched(model: nn.Module, prompt: list[int], options: DecodeOptions, *, end_id: int,
                     device: torch.device) -> list[int]:
    """Greedy decoding of one prompt with the KV cache and no padding, hence no attention mask.

    For models that widen the first step (prefix methods): the first forward pass inserts the
    special tokens, the cache then holds them, and each later step feeds one token whose position
    the model takes from the cache length. Same rules as :func:`generate`: the no-repeat-n-gram
    rule on generated tokens only, at most ``max_new_tokens``, stop at ``end_id``.

    Returns:
        The generated token ids, without the end token.
    """
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    _check_positions(model, ids.shape[1], options.max_new_tokens)
    no_repeat = (GeneratedNoRepeatNGram(options.no_repeat_ngram_size, ids.shape[1])
                 if options.no_repeat_ngram_size else None)
    out = model(input_ids=ids, use_cache=True)
    new: list[int] = []
    for _ in range(options.max_new_tokens):
        scores = out.logits[:, -1].float()
        if no_repeat is not None:
            scores = no_repeat(ids, scores)
        token = int(scores.argmax(-1))
        if token == end_id:
            break
        new.append(token)
        step = torch.tensor([[token]], dtype=torch.long, device=device)
        ids = torch.cat([ids, step], dim=1)
        out = model(input_ids=step, past_key_values=out.past_key_values, use_cache=True)
    return new


def write_predictions(folder: Path, split: str, contexts: list[str], predictions: list[str],
                      references: list[list[str]]) -> dict[str, Path]:
    """Write ``<split>.pred.txt``, ``.ref.txt`` and ``.src.txt`` (formats: module doc)."""
    def line(s: str) -> str:
        return " ".join(s.split())

    files = {
        "pred": "".join(line(p) + "\n" for p in predictions),
        "ref": "\n".join("".join(line(r) + "\n" for r in refs) for refs in references),
        "src": "".join(line(c) + "\n" for c in contexts),
    }
    paths = {}
    for kind, text in files.items():
        path = Path(folder) / f"{split}.{kind}.txt"
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
        paths[kind] = path
    return paths


def read_predictions(folder: Path, split: str) -> tuple[list[str], list[list[str]]]:
    """The predictions and references :func:`write_predictions` wrote for ``split``."""
    predictions = (Path(folder) / f"{split}.pred.txt").read_text(encoding="utf-8").splitlines()
    blocks = (Path(folder) / f"{split}.ref.txt").read_text(encoding="utf-8").split("\n\n")
    references = [block.splitlines() for block in blocks]
    if len(references) != len(predictions):
        raise ValueError(f"{folder}: {len(predictions)} predictions for {len(references)} reference sets")
    return predictions, references
