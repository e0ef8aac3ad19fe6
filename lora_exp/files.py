"""A task's split files: where each one is, and a clear error before any work when it is unusable.

``conf/task/<task>.yaml`` names each split's file relative to ``data_dir`` (a mirror laid out like
``../shared/data``); ``task.files.<split>=PATH`` replaces one. Both the GLUE and the NLG readers
find their files here.
"""
from __future__ import annotations

from pathlib import Path

from lora_exp.errors import ConfigError


def split_file(task_cfg, data_dir: str | None, split: str) -> Path | None:
    """The file a split reads, or None when the hub is used (no ``data_dir``)."""
    files = task_cfg.files
    if split not in files:
        raise ConfigError(f"task.files.{split}", None, sorted(files), f"task {task_cfg.name} "
                          "has no such split")
    path = Path(str(files[split]))
    if path.is_absolute() or path.exists():
        return path
    if data_dir is None:
        return None
    return Path(data_dir) / path


def check_split_file(task_cfg, data_dir: str | None, split: str) -> Path | None:
    """Fail before any work if a split's file is missing or empty; say what the mirror holds."""
    path = split_file(task_cfg, data_dir, split)
    if path is None:
        return None
    if not path.is_file():
        folder = path.parent
        holds = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if folder.is_dir():
            where = f"{folder} holds {holds}"
        else:
            root = Path(data_dir) if data_dir else folder.parent
            tasks = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            where = f"{folder} does not exist; data_dir={data_dir} holds {tasks}"
        note = task_cfg.get("mirror_note")
        raise ConfigError(f"task.files.{split}", str(path), None,
                          f"file not found; {where}" + (f". {note}" if note else ""))
    if path.stat().st_size == 0:
        raise ConfigError(f"task.files.{split}", str(path), None, "file is empty")
    return path


def fingerprint(path: Path) -> str:
    """Path, size and modification time: what the tokenised-data cache keys a file by."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
