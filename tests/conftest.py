"""Test set-up: offline, deterministic, small. Real data is read from ../shared/data."""
import os

# Before any HF import: no hub access, no wandb, no tokenizer thread pools.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning: with subprocess tests (torchrun, joblib) sharing
# 2 cores, spinning threads slow torch down 10-100x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The suite runs one pytest-xdist worker per CPU (pyproject's addopts): each worker, and every
# process it starts, then computes on one thread, so that the workers do not oversubscribe.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import lora_exp  # noqa: E402  (registers config resolvers)

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

DATA_DIR = Path(os.environ.get("LORA_EXP_DATA_DIR") or REPO.parent / "shared" / "data")
# CI has the mirror: there a missing mirror fails the data tests instead of skipping them.
REQUIRE_DATA = os.environ.get("LORA_EXP_REQUIRE_DATA") == "1"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data mirror. Without it (a clone on its own) the tests that read it are skipped,
    unless LORA_EXP_REQUIRE_DATA=1, where they fail."""
    if not (DATA_DIR / "sst2" / "train.tsv").is_file():
        reason = (f"real data not found at {DATA_DIR}: put ../shared beside the checkout or set "
                  "LORA_EXP_DATA_DIR")
        if REQUIRE_DATA:
            pytest.fail(f"{reason} (LORA_EXP_REQUIRE_DATA=1)")
        pytest.skip(reason)
    return DATA_DIR


def compose(overrides: list[str]):
    """Compose conf/config.yaml with overrides, as `python run.py ...` would."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return hydra_compose(config_name="config", overrides=overrides)


@pytest.fixture
def make_cfg():
    return compose
