"""The budget_rank resolver: r for a fixed budget of r × (number of weight types), as in paper
Table 5 (budget 8: one type at r=8, two at r=4, all four at r=2)."""
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lora_exp import budget_rank
from lora_exp.errors import ConfigError


@pytest.mark.parametrize("targets,rank", [
    (["wq"], 8),                    # 8 / 1
    (["wq", "wv"], 4),              # 8 / 2
    (["wq", "wk", "wv", "wo"], 2),  # 8 / 4
])
def test_table5_ranks(targets, rank):
    assert budget_rank(targets, 8) == rank


@pytest.mark.parametrize("targets", [["wq", "wk", "wv"], []], ids=["8 over 3", "no type"])
def test_uneven_split_or_no_type_is_a_config_error(targets):
    with pytest.raises(ConfigError, match="method.targets") as err:
        budget_rank(targets, 8)
    assert err.value.key == "method.targets" and "budget 8" in str(err.value)


@pytest.mark.parametrize("targets,rank", [("[wq]", 8), ("[wk]", 8), ("[wq,wv]", 4),
                                          ("[wq,wk,wv,wo]", 2)])
def test_through_the_experiment_config(make_cfg, targets, rank):
    """As conf/experiment/weight_types_sst2.yaml sweeps it: rank follows method.targets."""
    cfg = make_cfg(["experiment=weight_types_sst2", f"method.targets={targets}"])
    assert rank * len(cfg.method.targets) == 8  # the budget, r × (number of types)
    assert cfg.rank == rank and cfg.method.rank == rank  # LoRA's r reads ${rank}


def test_uneven_split_fails_when_the_config_resolves(make_cfg):
    cfg = make_cfg(["experiment=weight_types_sst2", "method.targets=[wq,wk,wv]"])
    with pytest.raises(OmegaConfBaseException, match="budget cannot be split evenly"):
        OmegaConf.to_container(cfg, resolve=True)
