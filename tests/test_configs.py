"""Every model × method × task config composes and resolves; every run of an experiment file
also validates and dry-runs; the method registry matches conf/."""
import itertools
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lora_exp.methods import METHODS
from lora_exp.trainer import run
from lora_exp.validate import validate

CONF = Path(__file__).resolve().parent.parent / "conf"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_method_registry_matches_configs(make_cfg):
    """Every METHODS entry has its config, and every method config (presets included) names one."""
    names = {make_cfg([f"method={m}"]).method.name for m in _names("method")}
    assert names == set(METHODS)
    assert set(METHODS) <= set(_names("method"))


@pytest.fixture
def compose_fast():
    """One Hydra context for all the compositions of a test (re-initialising per composition
    costs ~10x). Per test, not per module: make_cfg clears the global Hydra state."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        yield lambda overrides: compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()


def _check(resolved: dict, model: str, method: str, task: str) -> None:
    m, t, where = resolved["method"], resolved["task"], (model, method, task)
    assert resolved["model"]["name"] == model and m.get("label", m["name"]) == method, where
    reported = [*t["eval_splits"], *(t.get("combined_splits") or {})]  # MNLI's overall too
    assert t["name"] == task and t["main_metric"].split("/")[0] in reported, where
    for parts in (t.get("combined_splits") or {}).values():
        assert set(parts) <= set(t["eval_splits"]), where
    arch = resolved["model"]["architecture"]
    assert {"num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"} <= set(arch), where
    if m["name"] == "lora":
        assert m["rank"] == resolved["rank"], where


# Config groups interact pairwise (a method reads ${rank}, run names join model, method and
# task), so every pair of choices is composed: all model × method, model × task and
# method × task pairs, each with the third group at its default. The full triple product
# (~1,300 compositions) would take minutes and adds no interaction.
PAIRS = ([("model", a, "method", b) for a in _names("model") for b in _names("method")]
         + [("model", a, "task", b) for a in _names("model") for b in _names("task")]
         + [("method", a, "task", b) for a in _names("method") for b in _names("task")])
DEFAULTS = {"model": "minilm", "method": "lora", "task": "sst2"}


@pytest.mark.parametrize("group_a", sorted({p[:2] for p in PAIRS}), ids=lambda g: f"{g[0]}={g[1]}")
def test_compose_every_pair(compose_fast, group_a):
    """Every choice of one group composes and resolves with every choice of the other groups."""
    for ga, a, gb, b in (p for p in PAIRS if p[:2] == group_a):
        choice = {**DEFAULTS, ga: a, gb: b}
        cfg = compose_fast([f"{g}={v}" for g, v in choice.items()])
        _check(OmegaConf.to_container(cfg, resolve=True), choice["model"], choice["method"], choice["task"])


@pytest.mark.parametrize("task", _names("task"))
def test_paper_hyperparameters_are_recorded(make_cfg, task):
    cfg = make_cfg([f"task={task}"])
    models = (("gpt2_medium", "gpt2_large") if cfg.task.family == "nlg"  # Table 11
              else ("roberta_base", "roberta_large", "roberta_large_dagger", "deberta_v2_xxlarge"))
    for model in models:
        hp = cfg.task.paper[model]
        assert hp.batch_size > 0 and hp.epochs > 0 and 0 < hp.lr < 1e-2


def test_rank_override_reaches_method(make_cfg):
    cfg = make_cfg(["rank=4"])
    assert cfg.method.rank == 4 and cfg.method.alpha == 8 and list(cfg.method.targets) == ["wq", "wv"]


GLUE = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"]  # Table 2's columns
NLG = ["e2e", "webnlg", "dart"]  # Tables 3, 14, 13
# Dry-running a paper row once per model head suffices: 3 classes, 2 classes, regression.
TABLE2_DRY_RUN = {"mnli", "sst2", "stsb"}


def _experiment_runs(exp: str) -> list[list[str]]:
    """The runs an experiment file stands for: its own sweep (hydra.sweeper.params, seeds
    aside), and for the paper tables every task of the table (their commands pass task=...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    raw = OmegaConf.load(CONF / "experiment" / f"{exp}.yaml")
    params = dict(OmegaConf.select(raw, "hydra.sweeper.params") or {})
    params.pop("seed", None)
    if "task" not in params and exp.startswith(("table2_", "table3_")):
        params["task"] = ",".join(GLUE if exp.startswith("table2_") else NLG)
    sweeps = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
              else [f"{o.key_or_group}={o.get_value_element_as_str()}"]  # one value, e.g. task: sst2
              for o in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])]
    return [list(combo) for combo in itertools.product(*sweeps)]


@pytest.mark.parametrize("exp", _names("experiment"))
def test_experiment_configs_validate_and_dry_run(compose_fast, tmp_path, exp):
    """Every run an experiment file describes composes, resolves, passes validate and builds
    its model and method (a dry run: skeleton on the meta device, no download, no data)."""
    runs = _experiment_runs(exp)
    assert runs and all(len(r) == len(runs[0]) for r in runs)
    for i, overrides in enumerate(runs):
        cfg = compose_fast([f"experiment={exp}", *overrides, "data_dir=null", "dry_run=true"])
        validate(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        method = resolved["method"]
        _check(resolved, cfg.model.name, method.get("label", method["name"]), cfg.task.name)
        if exp.startswith("table2_") and exp != "table2_cpu" and cfg.task.name not in TABLE2_DRY_RUN:
            continue
        summary = run(cfg, tmp_path / str(i))
        assert summary["status"] == "ok" and summary["params"]["trainable"] > 0, (exp, overrides)
