"""lora-exp entry point: ``python run.py [overrides]`` (Hydra 1.3; see conf/config.yaml)."""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import lora_exp  # noqa: F401  (registers the config resolvers)
from lora_exp.errors import ConfigError
from lora_exp.trainer import run

log = logging.getLogger("lora_exp")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = run(cfg, out_dir)
    except ConfigError as e:  # bad input: a short message, no traceback
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        if sweeping:  # recorded as failed; the sweep goes on and exits 1 at the end
            return None
        sys.exit(2)
    except Exception:
        if sweeping:
            log.exception("job failed: %s", out_dir)
            return None
        raise
    if "metrics" not in summary:  # torchrun ranks other than 0 report nothing
        return None
    log.info("run %s: %s", summary["status"], out_dir)
    print(f"run directory: {out_dir}")
    best = summary.get("metrics", {})
    main_metric = best.get("main_metric")
    if main_metric:
        split, name = main_metric.split("/", 1)
        value = best[split]["best"][name]
        print(f"{main_metric} (best): {value:.4f}")
        return value
    return None


if __name__ == "__main__":
    main()
