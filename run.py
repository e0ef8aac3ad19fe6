"""lora-exp entry point: ``python run.py [overrides]`` (Hydra 1.3; see conf/config.yaml)."""
import atexit
import gc

gc.disable()  # until the imports are done: see below
atexit.register(gc.freeze)  # registered first, so it runs last of the exit handlers

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import lora_exp  # noqa: F401  (registers the config resolvers)
from lora_exp import rerun
from lora_exp.errors import ConfigError
from lora_exp.trainer import run

# The imports build ~0.5M objects (torch, transformers) that live as long as the process. The
# cyclic collector traversed them all at every full collection: ~0.8 s during the imports, ~0.2 s
# during a short run, and ~1 s at exit (the last collection, which the exit handler above spares
# it). That was a sixth of a 120-step SST-2 job. Frozen, they are out of its sight; what the run
# allocates is collected as usual.
gc.freeze()
gc.enable()

log = logging.getLogger("lora_exp")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if sweeping:  # a re-run sweep skips finished jobs and resumes interrupted ones
        action, previous = rerun_job(cfg, out_dir, hydra_cfg.sweep.dir)
        if action in rerun.NOT_RUN:  # left as it is; the sweep exits 1 at its end
            return None
        if previous is not None:
            return report(previous, out_dir)
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
    return report(summary, out_dir)


def rerun_job(cfg: DictConfig, out_dir: str, sweep_dir: str) -> tuple[str, dict | None]:
    """Decide what this sweep job does with what an earlier run left in ``out_dir``
    (:mod:`lora_exp.rerun`): the action, and the earlier summary if the job is skipped; with
    ``resume`` set when it continues from a checkpoint."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:  # the run itself reports a config that does not resolve
        return rerun.RUN, None
    action, reason = rerun.decide(Path(out_dir), resolved)
    rerun.record(Path(sweep_dir), Path(out_dir), action, reason)
    rerun.restore_hydra_files(Path(out_dir), keep=action in (rerun.SKIP, *rerun.NOT_RUN))
    if action in rerun.NOT_RUN:
        log.error("sweep job %s: not run: %s", Path(out_dir).name, reason)
        print(f"error: sweep job {Path(out_dir).name} not run: {reason}", file=sys.stderr)
        return action, None
    log.info("sweep job %s: %s (%s)", Path(out_dir).name, action, reason)
    if action == rerun.SKIP:
        return action, json.loads((Path(out_dir) / "summary.json").read_text())
    if action == rerun.RESUME:
        cfg.resume = True
    return action, None


def report(summary: dict, out_dir: str) -> float | None:
    """Print the run directory and the main metric; return the metric (Hydra's job return)."""
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
