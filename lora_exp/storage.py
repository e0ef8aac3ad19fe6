"""Writing to disk safely: atomic files, the cache folder, and the tokenised-data cache.

Every file is written to a temporary name in the same folder and renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from datasets import Dataset, load_from_disk


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cache_dir() -> Path:
    """Where derived files (unzipped models, tokenised data) go: $LORA_EXP_CACHE or ~/.cache."""
    root = os.environ.get("LORA_EXP_CACHE") or Path.home() / ".cache" / "lora-exp"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def tokenizer_id(tokenizer) -> str:
    """What of a tokenizer decides its token ids, for cache keys."""
    return f"{tokenizer.name_or_path}:{len(tokenizer)}:{type(tokenizer).__name__}"


def cached_dataset(name: str, key: list, build: Callable[[], Dataset]) -> Dataset:
    """``build()``'s dataset, saved once under ``<cache>/tokenized/<name>-<hash of key>``.

    ``key`` must hold everything the rows depend on (source file fingerprint, tokenizer, max
    length, layout). The folder is published by one rename, so a killed run never leaves a
    half-written cache and parallel jobs building the same split do not collide.
    """
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
    path = cache_dir() / "tokenized" / f"{name}-{digest}"
    if not (path / "dataset_info.json").exists():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        build().save_to_disk(str(tmp))
        try:
            tmp.rename(path)
        except OSError:  # a parallel job published it first
            shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))
