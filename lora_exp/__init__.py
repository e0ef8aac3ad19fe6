"""lora-exp: a research harness reproducing LoRA (Hu et al., 2021)."""
from pathlib import Path

from omegaconf import OmegaConf

from lora_exp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def default_data_dir() -> str | None:
    """``../shared/data`` beside the checkout when it exists, else None (the HF hub)."""
    path = REPO.parent / "shared" / "data"
    return str(path) if path.is_dir() else None


def budget_rank(targets, budget: int) -> int:
    """r for a fixed budget of r × (number of weight types), as in paper Table 5 (budget 8:
    one type at r=8, two at r=4, four at r=2)."""
    n = len(targets)
    if n == 0 or budget % n:
        raise ConfigError("method.targets", list(targets), f"a count that divides the budget {budget}",
                          "the budget cannot be split evenly")
    return budget // n


def lookup(key, table: dict, _node_):
    """``table[key]``: ``epochs: ${lookup:${task.name},{mnli: 10, sst2: 5}}`` writes a per-task
    value inline in an experiment file, with no helper key in the run config."""
    if key not in table:
        raise ConfigError(_node_._get_full_key(None), key, sorted(table),
                          f"the experiment file sets it per value of another key and has no entry "
                          f"for {key!r}")
    return table[key]


for _name, _fn in {"default_data_dir": default_data_dir, "budget_rank": budget_rank,
                   "lookup": lookup}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
