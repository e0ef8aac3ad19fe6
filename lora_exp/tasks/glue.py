"""GLUE tasks: read a local mirror (GLUE's TSV layouts) or the HF hub, tokenise once, cache,
and score an evaluation with the task's metrics.

A mirror is laid out like ``../shared/data``: ``<data_dir>/<task>/train.tsv``, ``dev.tsv``, ...
The columns each task reads are named in ``conf/task/<task>.yaml`` (``text_fields``,
``label_field``), so GLUE's own layouts are read as they are (MRPC's ``#1 String``, MNLI's
``gold_label`` ...). Text labels are mapped through ``label_names`` in label-id order, the same
ids as HF's ``nyu-mll/glue``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset

from lora_exp import metrics
from lora_exp.data import collate, eval_batches, row_lengths, subset
from lora_exp.errors import ConfigError
from lora_exp.files import check_split_file, fingerprint
from lora_exp.storage import cached_dataset, tokenizer_id


def read_tsv(path: Path, text_fields: list[str], label_field: str | None) -> pd.DataFrame:
    """Read a GLUE TSV as strings (QUOTE_NONE: some sentences begin with a quote).

    Every row must have the header's number of fields: a short or long row is an error with
    its line number, never a silently shifted column.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as e:
        raise ConfigError("task.files", str(path), None, f"not a readable TSV ({e})") from None
    header, body = rows[0], [r for r in rows[1:] if r]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise ConfigError("task.files", str(path), None, f"not a readable TSV: line {i + 2} has "
                              f"{len(r)} fields, the header has {len(header)}")
    df = pd.DataFrame(body, columns=header)
    need = list(text_fields) + ([label_field] if label_field else [])
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise ConfigError("task.files", str(path), list(df.columns),
                          f"columns {absent} are missing")
    if len(df) == 0:
        raise ConfigError("task.files", str(path), None, "file has a header but no rows")
    return df


def encode_labels(values, task_cfg, source: str) -> np.ndarray:
    """Labels as ids (classification) or floats (regression); anything else is an error."""
    if task_cfg.kind == "reg":
        try:
            return np.asarray([float(v) for v in values], dtype=np.float32)
        except ValueError as e:
            raise ConfigError("task.label_field", str(e), None, f"non-numeric score in {source}") from None
    names = list(task_cfg.label_names) if task_cfg.get("label_names") else None
    valid = names if names else list(range(task_cfg.num_labels))
    lookup = {str(n): i for i, n in enumerate(valid)}
    ids = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        key = str(v).strip()
        if key not in lookup:
            raise ConfigError(f"{source} line {i + 2} label", v, valid,  # +2: header, 1-based
                              "label outside the task's label set")
        ids[i] = lookup[key]
    return ids


def _hub_frame(task_cfg, split: str) -> pd.DataFrame:
    from datasets import load_dataset  # network path: only when no mirror is set

    hub = task_cfg.hub
    try:
        ds = load_dataset(hub.path, hub.name, split=hub.splits[split])
    except (OSError, ConnectionError) as e:  # no network and nothing cached
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("data_dir", None, f"a local mirror (data_dir=PATH laid out like "
                          f"../shared/data), or task.files.{split}=PATH",
                          f"could not fetch {hub.path}/{hub.name} ({split}) from the HF hub "
                          f"({reason})") from None
    df = ds.to_pandas()
    cols = dict(zip(hub.text_fields, task_cfg.text_fields))
    cols[hub.label_field] = task_cfg.label_field
    return df.rename(columns=cols)


def load_split(task_cfg, data_dir: str | None, split: str) -> tuple[list[list[str]], np.ndarray, str]:
    """(texts per field, labels, a fingerprint of the source) for one split."""
    path = check_split_file(task_cfg, data_dir, split)
    if path is None:
        df, source = _hub_frame(task_cfg, split), f"hub:{task_cfg.hub.path}/{task_cfg.hub.name}/{split}"
        label_ids = np.asarray(df[task_cfg.label_field].to_numpy())
        if task_cfg.kind == "reg":
            label_ids = label_ids.astype(np.float32)
    else:
        df = read_tsv(path, task_cfg.text_fields, task_cfg.label_field)
        source = fingerprint(path)
        label_ids = encode_labels(df[task_cfg.label_field].tolist(), task_cfg, str(path))
    texts = [df[f].tolist() for f in task_cfg.text_fields]
    return texts, label_ids, source


def encode(tokenizer, texts: list[list[str]], max_length: int) -> dict[str, list[list[int]]]:
    """``tokenizer(*texts, truncation=True, max_length=max_length)``'s ``input_ids``, and its
    ``token_type_ids`` where the tokenizer makes them: the ids, nothing else.

    A fast tokenizer's Rust backend is called directly, as the Python wrapper calls it (no
    padding, longest-first truncation, special tokens added); the wrapper would then turn every
    row's encoding into lists the cache does not keep (attention masks among them): SST-2's
    67,349 rows take 1.3 s this way against 2.1 s through the wrapper on the dev machine.
    The backend's padding and truncation settings are restored afterwards.
    """
    backend = tokenizer.backend_tokenizer if tokenizer.is_fast else None
    if backend is None:
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        return {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
    padding, truncation = backend.padding, backend.truncation
    backend.no_padding()
    backend.enable_truncation(max_length, stride=0, strategy="longest_first",
                              direction=tokenizer.truncation_side)
    try:
        rows = backend.encode_batch(list(zip(*texts)) if len(texts) > 1 else texts[0])
    finally:
        if truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)
    out = {"input_ids": [e.ids for e in rows]}
    if "token_type_ids" in tokenizer.model_input_names:
        out["token_type_ids"] = [e.type_ids for e in rows]
    return out


def tokenized_split(task_cfg, data_dir: str | None, split: str, tokenizer, max_length: int) -> Dataset:
    """Tokenised split, cached on disk keyed by source file, tokenizer and max length."""
    texts, labels, source = load_split(task_cfg, data_dir, split)

    def build() -> Dataset:
        return Dataset.from_dict({**encode(tokenizer, texts, max_length), "labels": labels.tolist()})

    key = [source, tokenizer_id(tokenizer), max_length, list(task_cfg.text_fields), task_cfg.kind, 2]
    return cached_dataset(f"{task_cfg.name}-{split}", key, build)


def dataset(task_cfg, data_dir: str | None, split: str, tokenizer, max_length: int,
            max_samples: int | None) -> Dataset:
    """A split's tokenised rows, or a seeded subset of ``max_samples`` of them (the same rows
    for every run seed: ``task.subset_seed``). Training and evaluation read splits alike."""
    return subset(tokenized_split(task_cfg, data_dir, split, tokenizer, max_length), max_samples,
                  task_cfg.subset_seed)


@torch.no_grad()
def predict(model, ds: Dataset, tokenizer, batch_size: int, device,
            amp_dtype) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of every row of ``ds``, in order."""
    batches = eval_batches(row_lengths(ds), batch_size)
    logits, labels = [], []
    for idx in batches:
        batch = {k: v.to(device) for k, v in collate(ds, idx, tokenizer.pad_token_id).items()}
        y = batch.pop("labels")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(**batch).logits
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    order = np.argsort(np.concatenate(batches), kind="stable")  # back to row order
    return torch.cat(logits).numpy()[order], torch.cat(labels).numpy()[order]


def evaluate(model, eval_sets: dict[str, Dataset], task_cfg, *, tokenizer, batch_size: int, device,
             amp_dtype, **_) -> dict[str, float]:
    """``<split>/<metric>`` for every eval split with the task's metrics (``task.metrics``, paper
    Table 2), and for every combined split (``task.combined_splits``: MNLI's ``overall``, the
    paper's MNLI column, scores matched and mismatched rows together)."""
    model.eval()
    try:
        outputs = {s: predict(model, ds, tokenizer, batch_size, device, amp_dtype)
                   for s, ds in eval_sets.items()}
    finally:
        model.train()
    for name, parts in (task_cfg.get("combined_splits") or {}).items():
        outputs[name] = tuple(np.concatenate([outputs[p][i] for p in parts]) for i in (0, 1))
    return {f"{split}/{k}": v for split, (logits, labels) in outputs.items()
            for k, v in metrics.compute(list(task_cfg.metrics), logits, labels, task_cfg.kind).items()}
