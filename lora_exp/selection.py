"""Which evaluation a run reports: the paper's best-epoch protocol, next to the final one."""
from __future__ import annotations


def summarize(history: list[dict], task_cfg) -> dict:
    """Per eval split, the best evaluation (by ``task.main_metric``, the paper's best-epoch
    protocol) and the final one. Evaluations without the main metric are not candidates (NLG
    scores generations at the last evaluation only)."""
    main = task_cfg.main_metric
    best = max((r for r in history if main in r), key=lambda r: r[main], default=history[-1])
    out = {}
    for split in task_cfg.eval_splits:
        pick = lambda r: {**{k.split("/", 1)[1]: v for k, v in r.items() if k.startswith(split + "/")},
                          "step": r["step"], "epoch": r["epoch"]}
        out[split] = {"best": pick(best), "final": pick(history[-1])}
    out["main_metric"] = main
    return out
