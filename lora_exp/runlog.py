"""Run-directory records: ``summary.json``, ``metrics.jsonl`` (written atomically), the git
commit, and the optional experiment tracker."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from lora_exp.storage import atomic_write


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line, the whole file replaced atomically."""
    text = "".join(json.dumps(_clean(r)) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def git_sha() -> str | None:
    """The commit this process's code was loaded at: a multirun imports once and runs for hours,
    while the checkout's HEAD may move on under it."""
    return _SHA_AT_START


def _head_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


_SHA_AT_START = _head_sha()


class Tracker:
    """Optional experiment tracker beside the local files: ``logger=wandb`` (offline by default).

    The local files are always written; the tracker only mirrors them.
    """

    def __init__(self, logger_cfg, out_dir: Path, cfg, name: str):
        self.run = None
        if logger_cfg is not None and logger_cfg.name == "wandb":
            import wandb
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(cfg, resolve=True)  # only when a tracker wants it

            self.run = wandb.init(project=logger_cfg.project, mode=logger_cfg.mode, dir=str(out_dir),
                                  config=config, name=name, reinit="finish_previous")

    def log(self, record: dict, step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def finish(self, summary: dict) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            self.run.finish()
