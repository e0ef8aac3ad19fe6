"""lora-exp: a research harness reproducing LoRA (Hu et al., 2021)."""
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent


def default_data_dir() -> str | None:
    """``../shared/data`` beside the checkout when it exists, else None (the HF hub)."""
    path = REPO.parent / "shared" / "data"
    return str(path) if path.is_dir() else None


if not OmegaConf.has_resolver("default_data_dir"):
    OmegaConf.register_new_resolver("default_data_dir", default_data_dir)
