"""PreEmbed and PreLayer: special tokens inserted into the input (paper §5.1).

Both insert l_p *prefix* and l_i *infix* tokens into every input row and differ in what trains:

* **PreEmbed** (prefix-embedding tuning): the special tokens' word embeddings,
  |Θ| = d·(l_p + l_i).
* **PreLayer** (prefix-layer tuning): the activations at the special positions, one trainable
  set per layer, |Θ| = L·d·(l_p + l_i). This is *not* peft's / Li & Liang's KV-prefix
  (2·L·d·l_p, docs/paper.md#peft): the hidden states themselves are replaced.

Where the tokens go (rows are right-padded, so infix positions differ per row):

* Classification / regression, encoder (BERT, RoBERTa, MPNet, DeBERTa): the prefix right after
  the first token, so ``[CLS]``/``<s>`` stays at position 0 where the classifier reads it; the
  infix right after the row's last real token (after the final ``[SEP]``/``</s>``):
  ``[CLS] P1..Plp x1 .. [SEP] I1..Ili <pad>..``.
* Classification, decoder (GPT-2): the prefix at the very start, the infix after the last real
  token: ``P1..Plp x1 .. xn I1..Ili <pad>..``. ``GPT2ForSequenceClassification`` reads the last
  non-pad token, which is now the last infix token, so the infix sees the whole input.
* NLG prompt (causal LM): the prefix before the prompt, the infix between the prompt and the
  completion. The batch carries ``prompt_len`` (B,), the number of prompt tokens per row; the
  pre-hook pops it, so the HF model never sees it. Without ``prompt_len`` the infix goes after
  the last real token (a prompt-only batch, as at generation time). Per-token ``labels``
  (same shape as ``input_ids``) get -100 at the inserted positions.

Mechanism. A forward pre-hook on the model (``with_kwargs=True``) widens the batch: the special
positions get a placeholder token id (any id but the pad id), ``attention_mask`` 1,
``token_type_ids`` the type of the token they follow, LM ``labels`` -100. The batch keeps
``input_ids`` rather than becoming ``inputs_embeds``: HF's GPT-2 classifier finds each row's
last token from ``input_ids`` and, given ``inputs_embeds``, reads position -1, a pad position
for every row but the longest (transformers ``GPT2ForSequenceClassification.forward``).
Vectors are then written at the special positions by one helper, :meth:`SpecialTokens.overwrite`:

* PreEmbed: a forward hook on the input-embedding module replaces the placeholder's embedding
  (position and type embeddings are added after it, as for any token).
* PreLayer: a forward pre-hook on every block replaces the hidden states *entering* block
  l = 0..L-1 with set l, i.e. after the embedding layer and after each of blocks 0..L-2. That is
  L sets, the paper's L·d·(l_p + l_i). The output of the last block at those positions is
  computed, not replaced: a decoder classifier (and the LM's first completion token) reads the
  last infix position, which would otherwise be a constant.

Initialisation (the paper does not say): every set starts as the word embeddings of l_p + l_i
vocabulary tokens drawn with the run's seed (Lester et al. 2021's sampled-vocabulary init).

Generation with a KV cache: steps after the first (``past_key_values`` non-empty) pass through
unchanged; the first step inserts as above. ``generate``'s own attention-mask bookkeeping does
not know about the wider first step, so the NLG pipeline must decode with its own loop.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from lora_exp.checks import check_int
from lora_exp.data import IGNORE_INDEX
from lora_exp.methods import MethodResult
from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec



def max_positions(config) -> int | None:
    """How many tokens the model can embed, or None when it uses relative positions only."""
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa-v2: no absolute table
        return None
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if n and config.model_type in ("roberta", "mpnet"):
        n -= config.pad_token_id + 1  # their position ids start after padding_idx
    return n


class SpecialTokens(nn.Module):
    """The l_p prefix and l_i infix tokens: where they go and their trainable vectors.

    Args:
        l_p: prefix tokens. l_i: infix tokens (>= 1 when built from a config).
        n_sets: 1 for PreEmbed (word embeddings), L for PreLayer (one set per block input).
        prefix_at: the prefix's position, 1 after an encoder's ``[CLS]``, 0 for a decoder.
        placeholder_id: the token id written at special positions (must not be the pad id).
        limit: the model's number of positions (None: no limit).
        init: (l_p + l_i, d) starting vectors, copied into every set.
    """

    def __init__(self, l_p: int, l_i: int, n_sets: int, prefix_at: int, placeholder_id: int,
                 limit: int | None, init: torch.Tensor):
        super().__init__()
        self.l_p, self.l_i, self.prefix_at = l_p, l_i, prefix_at
        self.placeholder_id, self.limit = placeholder_id, limit
        self.vectors = nn.Parameter(init.detach().clone().unsqueeze(0).repeat(n_sets, 1, 1))
        self._slot: torch.Tensor | None = None  # (B, T') vector index, -1 at input tokens

    def extra_repr(self) -> str:
        return f"l_p={self.l_p}, l_i={self.l_i}, sets={self.vectors.shape[0]}, d={self.vectors.shape[-1]}"

    def layout(self, ids: torch.Tensor, infix_at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map the widened row onto the original one.

        Args:
            ids: (B, T) input ids. infix_at: (B,) original index before which the infix goes.

        Returns:
            ``src`` (B, T') the original position each new position copies (a special token
            copies its left neighbour, for ``token_type_ids``), and ``slot`` (B, T') the special
            token's vector index (prefix 0..l_p-1, infix l_p..l_p+l_i-1), -1 elsewhere.
        """
        B, T = ids.shape
        l_p, l_i, p0 = self.l_p, self.l_i, self.prefix_at
        j = torch.arange(T + l_p + l_i, device=ids.device).expand(B, -1)  # (B, T')
        e = (infix_at.to(ids.device) + l_p).unsqueeze(1)  # (B, 1) first infix position
        src = torch.where(j < p0, j, torch.where(j < e, j - l_p, j - l_p - l_i))
        in_prefix = (j >= p0) & (j < p0 + l_p)
        in_infix = (j >= e) & (j < e + l_i)
        src = torch.where(in_prefix, max(p0 - 1, 0), src)
        src = torch.where(in_infix, (e - l_p - 1).clamp(min=0).expand(B, j.shape[1]), src)
        slot = torch.full_like(j, -1)
        slot = torch.where(in_prefix, j - p0, slot)
        slot = torch.where(in_infix, l_p + j - e, slot)
        return src, slot

    def insert(self, model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Forward pre-hook on the model: widen the batch by the special tokens."""
        if args:  # model(input_ids) with the ids positional
            if len(args) > 1:
                raise RuntimeError("prefix methods: pass the batch by keyword (input_ids=..., "
                                   "attention_mask=...)")
            kwargs = {"input_ids": args[0], **kwargs}
            args = ()
        prompt_len = kwargs.pop("prompt_len", None)
        past = kwargs.get("past_key_values")
        if past is not None and getattr(past, "get_seq_length", lambda: 0)() > 0:
            self._slot = None  # a later generation step: the specials are in the cache already
            return args, kwargs
        ids = kwargs.get("input_ids")
        if ids is None:
            raise RuntimeError("prefix methods need input_ids (inputs_embeds are not supported)")
        if kwargs.get("position_ids") is not None:
            raise RuntimeError("prefix methods: explicit position_ids are not supported")
        B, T = ids.shape
        mask = kwargs.get("attention_mask")
        lengths = mask.sum(1) if mask is not None else torch.full((B,), T, device=ids.device)
        infix_at = prompt_len if prompt_len is not None else lengths  # right padding
        if bool((infix_at < self.prefix_at).any()) or bool((infix_at > T).any()):
            raise RuntimeError(f"prefix methods: infix positions {infix_at.tolist()} outside "
                               f"[{self.prefix_at}, {T}] (prompt_len / attention_mask)")
        width = T + self.l_p + self.l_i
        if self.limit is not None and width > self.limit:
            raise RuntimeError(
                f"method.l_p + method.l_i = {self.l_p + self.l_i} special tokens make rows of "
                f"{T} tokens {width} long, beyond the model's {self.limit} positions: lower "
                f"trainer.max_length to {self.limit - self.l_p - self.l_i} or lower method.l_p")
        src, slot = self.layout(ids, infix_at)
        special = slot >= 0

        def widen(x: torch.Tensor, fill: int | None) -> torch.Tensor:
            out = x.gather(1, src)
            return out if fill is None else out.masked_fill(special, fill)

        kwargs["input_ids"] = widen(ids, self.placeholder_id)
        if mask is not None:
            kwargs["attention_mask"] = widen(mask, 1)
        if kwargs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = widen(kwargs["token_type_ids"], None)
        labels = kwargs.get("labels")
        if labels is not None and labels.shape == ids.shape:  # per-token (LM) labels
            kwargs["labels"] = widen(labels, IGNORE_INDEX)
        self._slot = slot
        return args, kwargs

    def finish(self, model: nn.Module, args: tuple, output):
        """Forward hook on the model: forget this batch's layout (no stale state)."""
        self._slot = None

    def overwrite(self, h: torch.Tensor, index: int) -> torch.Tensor:
        """``h`` (B, T', d) with set ``index``'s vectors at the special positions."""
        slot = self._slot
        if slot is None:
            return h
        if h.shape[:2] != slot.shape:
            raise RuntimeError(f"prefix methods: hidden states {tuple(h.shape)} do not match the "
                               f"widened batch {tuple(slot.shape)}")
        vec = self.vectors[index].to(h.dtype)[slot.clamp(min=0)]  # (B, T', d)
        return torch.where((slot >= 0).unsqueeze(-1), vec, h)

    def embedding_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the input embedding (PreEmbed)."""
        return self.overwrite(output, 0)

    def block_hook(self, module: nn.Module, args: tuple, kwargs: dict, layer: int):
        """Forward pre-hook on block ``layer`` (PreLayer): replace its input hidden states."""
        if args:
            return (self.overwrite(args[0], layer), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self.overwrite(kwargs["hidden_states"], layer)}


def _check_lengths(cfg, limit: int | None) -> tuple[int, int]:
    # Both kinds of special token are required (l_p, l_i >= 1): the paper defines both methods
    # by l_p prefix and l_i infix tokens (§5.1).
    l_p = check_int("method.l_p", cfg.l_p, 1)
    l_i = check_int("method.l_i", cfg.l_i, 1)
    if limit is not None and l_p + l_i >= limit:
        raise ConfigError("method.l_p", l_p, f"l_p + l_i < {limit}",
                          f"with l_i={l_i} no position is left for the input")
    return l_p, l_i


def insert_special_tokens(model: nn.Module, spec: ModelSpec, cfg, n_sets: int) -> SpecialTokens:
    """Attach a :class:`SpecialTokens` as ``model.special_tokens`` and hook the insertion.

    Shared by PreEmbed and PreLayer; each then hooks where its vectors are written.

    Raises:
        ConfigError: l_p < 1, l_i < 1, or l_p + l_i leaves no room in the model's positions.
    """
    config = model.config
    limit = max_positions(config)
    l_p, l_i = _check_lengths(cfg, limit)
    emb = model.get_input_embeddings()
    # Sampled-vocabulary init; ids from 1000 on skip most special/unused tokens of BERT vocabularies.
    low = min(1000, emb.num_embeddings - 1)
    ids = torch.randint(low, emb.num_embeddings, (l_p + l_i,))
    pad = config.pad_token_id
    tokens = SpecialTokens(l_p, l_i, n_sets, prefix_at=1 if spec.stack == "encoder" else 0,
                           placeholder_id=1 if pad == 0 else 0, limit=limit,
                           init=emb.weight[ids.to(emb.weight.device)])
    model.add_module("special_tokens", tokens)
    model.register_forward_pre_hook(tokens.insert, with_kwargs=True)
    model.register_forward_hook(tokens.finish)
    return tokens


def _info(tokens: SpecialTokens, spec: ModelSpec) -> dict:
    return {"l_p": tokens.l_p, "l_i": tokens.l_i, "sets": tokens.vectors.shape[0],
            "prefix_at": tokens.prefix_at, "infix_at": "after the last real token, or prompt_len",
            "stack": spec.stack}


def apply_prefix_embed(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    """PreEmbed: trainable word embeddings for l_p + l_i special tokens (paper §5.1).

    Args:
        cfg: ``cfg.method`` with ``l_p`` and ``l_i``.

    Returns:
        ``special_tokens.vectors`` (1, l_p + l_i, d): d·(l_p + l_i) numbers.
    """
    tokens = insert_special_tokens(model, spec, cfg, n_sets=1)
    model.get_input_embeddings().register_forward_hook(tokens.embedding_hook)
    return MethodResult(["special_tokens.vectors"], _info(tokens, spec))


def apply_prefix_layer(model: nn.Module, spec: ModelSpec, cfg) -> MethodResult:
    """PreLayer: trainable activations at the special positions, entering every block (§5.1).

    Args:
        cfg: ``cfg.method`` with ``l_p`` and ``l_i``.

    Returns:
        ``special_tokens.vectors`` (L, l_p + l_i, d): L·d·(l_p + l_i) numbers.
    """
    blocks = spec.block_modules(model)
    tokens = insert_special_tokens(model, spec, cfg, n_sets=len(blocks))
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(functools.partial(tokens.block_hook, layer=i),
                                        with_kwargs=True)
    return MethodResult(["special_tokens.vectors"], _info(tokens, spec))
