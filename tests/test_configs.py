"""Every model × method × task config composes and resolves; the method registry matches conf/."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lora_exp.methods import METHODS

CONF = Path(__file__).resolve().parent.parent / "conf"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_method_registry_matches_configs(make_cfg):
    """Every METHODS entry has its config, and every method config (presets included) names one."""
    names = {make_cfg([f"method={m}"]).method.name for m in _names("method")}
    assert names == set(METHODS)
    assert set(METHODS) <= set(_names("method"))


@pytest.mark.parametrize("task", _names("task"))
@pytest.mark.parametrize("method", _names("method"))
@pytest.mark.parametrize("model", _names("model"))
def test_compose_every_combination(make_cfg, model, method, task):
    cfg = make_cfg([f"model={model}", f"method={method}", f"task={task}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    m = resolved["method"]
    assert resolved["model"]["name"] == model and m.get("label", m["name"]) == method
    assert resolved["task"]["name"] == task
    arch = resolved["model"]["architecture"]
    assert {"num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"} <= set(arch)
    assert resolved["task"]["main_metric"].split("/")[0] in resolved["task"]["eval_splits"]
    if method == "lora":
        assert resolved["method"]["rank"] == resolved["rank"]


@pytest.mark.parametrize("task", _names("task"))
def test_paper_hyperparameters_are_recorded(make_cfg, task):
    cfg = make_cfg([f"task={task}"])
    for model in ("roberta_base", "roberta_large", "roberta_large_dagger", "deberta_v2_xxlarge"):
        hp = cfg.task.paper[model]
        assert hp.batch_size > 0 and hp.epochs > 0 and 0 < hp.lr < 1e-2


def test_rank_override_reaches_method(make_cfg):
    cfg = make_cfg(["rank=4"])
    assert cfg.method.rank == 4 and cfg.method.alpha == 8 and list(cfg.method.targets) == ["wq", "wv"]


def test_experiment_configs_compose(make_cfg):
    for exp in _names("experiment"):
        cfg = make_cfg([f"experiment={exp}"])
        OmegaConf.to_container(cfg, resolve=True)
