"""Batching: dynamic padding and length-grouped batches.

GLUE sentences are far shorter than the 128/512-token maximum, so each batch is padded only to
its own longest row, and rows of similar length are batched together (within shuffled
mega-batches, as HF's ``LengthGroupedSampler`` does) so little compute goes to padding.
Padding never changes a row's result: attention masks out pad positions.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset

from lora_exp.errors import ConfigError

IGNORE_INDEX = -100  # HF's label value for "no loss here" (LM padding and prompt tokens)


class LengthGroupedBatches:
    """Deterministic batches of row indices for one epoch.

    Shuffle with ``seed + epoch``; cut into mega-batches of ``mega`` batches; sort each by length;
    cut into batches; shuffle the batch order. ``group_by_length=False`` gives plain shuffling.
    """

    def __init__(self, lengths, batch_size: int, seed: int, group_by_length: bool = True,
                 mega: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed = batch_size, seed
        self.group_by_length, self.mega = group_by_length, mega

    def batches(self, epoch: int) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(n)
        if self.group_by_length:
            size = self.batch_size * self.mega
            chunks = [order[i:i + size] for i in range(0, n, size)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def row_lengths(ds: Dataset) -> np.ndarray:
    """Tokens per row, read from the Arrow column: building 67k Python lists for SST-2's train
    split just to take their lengths costs about a second."""
    return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy()


def eval_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches of row indices sorted by length, longest first (the peak memory comes
    at once): each batch pads to rows of its own length. Callers put results back in row order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _padded(column: pa.ChunkedArray, width: int, fill: int) -> torch.Tensor:
    """A list column's rows as a (rows, width) int64 tensor, right-padded with ``fill``."""
    lists = column.combine_chunks()
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"a row of {lengths.max()} tokens does not fit a batch padded to {width}")
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(width)
    inside = positions < lengths[:, None]
    out = np.full((len(lengths), width), fill, dtype=np.int64)
    out[inside] = values[(starts[:, None] + positions)[inside]]  # row-major: each row's tokens in order
    return torch.from_numpy(out)


def collate(ds: Dataset, idx: np.ndarray, pad_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of a tokenised dataset as padded tensors (right padding).

    Per-token ``labels`` (LM rows) are padded with -100; an optional ``prompt_len`` column
    becomes a (B,) tensor. The rows are gathered from the Arrow columns with a few vectorised
    operations, not a Python loop over rows: a batch takes well under a millisecond, every
    training step.

    Args:
        pad_to: pad every batch to this length instead of its longest row (static padding).
    """
    rows = ds.with_format("arrow")[np.asarray(idx).tolist()]
    ids = rows.column("input_ids")
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False)
    width = pad_to or int(lengths.max())
    batch = {"input_ids": _padded(ids, width, pad_id),
             "attention_mask": torch.from_numpy(
                 (np.arange(width) < lengths[:, None]).astype(np.int64))}
    if "token_type_ids" in rows.column_names:
        batch["token_type_ids"] = _padded(rows.column("token_type_ids"), width, 0)
    labels = rows.column("labels")
    if pa.types.is_list(labels.type) or pa.types.is_large_list(labels.type):  # per-token (LM) labels
        batch["labels"] = _padded(labels, width, IGNORE_INDEX)
    else:  # one label per row (classification, regression)
        values = labels.to_numpy()
        batch["labels"] = (torch.from_numpy(values.astype(np.float32)) if values.dtype.kind == "f"
                           else torch.from_numpy(values.astype(np.int64)))
    if "prompt_len" in rows.column_names:  # NLG: prompt tokens per row, where prefix methods put the infix
        batch["prompt_len"] = torch.from_numpy(rows.column("prompt_len").to_numpy().astype(np.int64))
    return batch


def subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A seeded random subset of ``n`` rows (the same rows for every run seed)."""
    if not n or n >= len(ds):
        return ds
    keep = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return ds.select(keep.tolist())


def hold_out(ds: Dataset, n: int, seed: int) -> tuple[Dataset, Dataset]:
    """(the rows to train on, ``n`` held-out rows): a seeded slice, the same rows for every run
    seed and method, that training never sees and that selects the evaluation to report."""
    if not 0 < n < len(ds):
        raise ConfigError("trainer.heldout_size", n, f"an integer in [1, {len(ds) - 1}]",
                          f"the train split has {len(ds)} rows")
    order = np.random.default_rng(seed).permutation(len(ds))
    return ds.select(np.sort(order[n:]).tolist()), ds.select(np.sort(order[:n]).tolist())
