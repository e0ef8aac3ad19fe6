"""The one trainer every method runs through: seed → model → method → data → train → evaluate → save.

It knows nothing about any particular method: a method returns the parameters it trains
(:mod:`lora_exp.methods`), the trainer adds the task head by one shared rule, builds AdamW over
exactly those, and saves exactly those.
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from lora_exp import checkpoint, metrics
from lora_exp.data import LengthGroupedBatches, collate, subset
from lora_exp.methods import apply_method
from lora_exp.models import build_model, describe, load_tokenizer
from lora_exp.runlog import Tracker, append_jsonl, git_sha, write_json
from lora_exp.spec import ModelSpec
from lora_exp.tasks.glue import check_split_file, tokenized_split
from lora_exp.validate import validate

log = logging.getLogger("lora_exp")


def quiet_libraries() -> None:
    """Keep HF's per-load reports and datasets' bars out of the run log; ours say what matters."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from lora_exp.spec import ConfigError
        raise ConfigError("trainer.device", name, ["auto", "cpu"], "CUDA is not available here")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32. ``auto``: bf16 on CUDA when supported, else fp16; CPU fp32."""
    if device.type != "cuda" or name == "fp32":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def count_params(model, trainable: list[str], head: list[str]) -> dict[str, int]:
    """The paper's counts: ``trainable`` excludes the task head, which is counted on its own."""
    params = dict(model.named_parameters())
    return {"trainable": sum(params[n].numel() for n in trainable),
            "head": sum(params[n].numel() for n in head),
            "total": sum(p.numel() for p in params.values())}


def set_trainable(model, names: set[str]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)


def lr_lambda(warmup: int, total: int):
    """Linear warmup to the peak LR, then linear decay to 0 (paper App. D)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


@torch.no_grad()
def evaluate(model, ds, task_cfg, batch_size: int, pad_id: int, device, amp_dtype) -> dict[str, float]:
    model.eval()
    logits, labels = [], []
    for idx in LengthGroupedBatches([0] * len(ds), batch_size, 0, shuffle=False).batches(0):
        batch = {k: v.to(device) for k, v in collate(ds, idx, pad_id).items()}
        y = batch.pop("labels")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(**batch).logits
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    model.train()
    return metrics.compute(list(task_cfg.metrics), torch.cat(logits).numpy(),
                           torch.cat(labels).numpy(), task_cfg.kind)


def _splits(task_cfg) -> list[str]:
    return ["train", *task_cfg.eval_splits]


def dry_run(cfg, out_dir: Path) -> dict:
    """Build the skeleton from ``model.architecture`` on the meta device, apply the method, count."""
    spec = ModelSpec.from_cfg(cfg.model, cfg.task.kind)
    model = build_model(cfg.model, cfg.task.kind, cfg.task.num_labels, skeleton=True)
    result = apply_method(model, spec, cfg.method)
    head = list(spec.head_parameters(model))
    params = count_params(model, result.trainable, head)
    print(f"[dry run] {describe(cfg.model)} · method={cfg.method.name} · task={cfg.task.name}\n"
          f"  trainable (no head): {params['trainable']:,}\n  head: {params['head']:,}\n"
          f"  total: {params['total']:,}")
    return {"params": params, "dry_run": True}


def train(cfg, out_dir: Path) -> dict:
    """Train and evaluate one run; write the run directory; return the summary's body."""
    task, tcfg = cfg.task, cfg.trainer
    data_dir = None if cfg.data_dir is None else str(cfg.data_dir)
    for split in _splits(task):  # missing data fails here, before the model is loaded
        check_split_file(task, data_dir, split)
    seed_everything(cfg.seed)
    device = pick_device(tcfg.device)
    amp_dtype = pick_precision(tcfg.precision, device)

    spec = ModelSpec.from_cfg(cfg.model, task.kind)
    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg.model, task.kind, task.num_labels, seed=cfg.seed)
    result = apply_method(model, spec, cfg.method)
    head = list(spec.head_parameters(model))
    trained = list(dict.fromkeys(result.trainable + head))
    set_trainable(model, set(trained))
    params = count_params(model, result.trainable, head)
    log.info("%s · method=%s · trainable %s (+ head %s) of %s", describe(cfg.model),
             cfg.method.name, f"{params['trainable']:,}", f"{params['head']:,}", f"{params['total']:,}")
    if cfg.init_from is not None:
        checkpoint.load_trained(model, Path(str(cfg.init_from)), expected=result.trainable)
        log.info("loaded trained parameters from %s", cfg.init_from)
    model.to(device)

    train_ds = subset(tokenized_split(task, data_dir, "train", tokenizer, tcfg.max_length),
                      tcfg.max_train_samples, task.subset_seed)
    eval_ds = {s: subset(tokenized_split(task, data_dir, s, tokenizer, tcfg.max_length),
                         tcfg.max_eval_samples, task.subset_seed) for s in task.eval_splits}
    pad_id = tokenizer.pad_token_id
    sampler = LengthGroupedBatches([len(x) for x in train_ds["input_ids"]], tcfg.batch_size,
                                   cfg.seed, group_by_length=tcfg.group_by_length)
    steps_per_epoch = math.ceil(len(sampler) / tcfg.grad_accum)
    total = tcfg.max_steps if tcfg.max_steps is not None else steps_per_epoch * tcfg.epochs
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else int(tcfg.warmup_ratio * total)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg.lr,
                            weight_decay=tcfg.weight_decay, betas=tuple(tcfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)
    eval_every = steps_per_epoch if tcfg.eval_every == "epoch" else int(tcfg.eval_every)

    history: list[dict] = []
    metrics_path = out_dir / "metrics.jsonl"
    tracker = Tracker(cfg.logger, out_dir, OmegaConf.to_container(cfg, resolve=True), cfg.run_name)

    def run_eval(step: int, epoch: float, train_loss: float | None) -> None:
        rec = {"step": step, "epoch": round(epoch, 4), "train_loss": train_loss}
        for split, ds in eval_ds.items():
            rec.update({f"{split}/{k}": v for k, v in evaluate(
                model, ds, task, tcfg.eval_batch_size, pad_id, device, amp_dtype).items()})
        history.append(rec)
        append_jsonl(metrics_path, rec)
        tracker.log(rec, step)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if "/" in k)
        log.info("step %d (epoch %.2f): %s", step, epoch, shown)

    model.train()
    step, epoch, running, n_loss = 0, 0, 0.0, 0
    bar = tqdm(total=total, desc=f"{cfg.method.name} {task.name}", unit="step",
               disable=not tcfg.progress, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    while step < total:
        batches = sampler.batches(epoch)
        for i in range(0, len(batches), tcfg.grad_accum):
            if step >= total:
                break
            group = batches[i:i + tcfg.grad_accum]
            n_rows = sum(len(b) for b in group)
            for idx in group:
                batch = {k: v.to(device) for k, v in collate(train_ds, idx, pad_id).items()}
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}: stopping "
                                             "(lower trainer.lr or check the data)")
                # Weight each micro-batch by its rows so accumulation equals one big batch.
                scaler.scale(loss * (len(idx) / n_rows)).backward()
                running += loss.item() * len(idx) / n_rows
            if tcfg.max_grad_norm:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                               tcfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            n_loss += 1
            bar.update(1)
            if step % eval_every == 0 or step == total:
                run_eval(step, step / steps_per_epoch, running / max(1, n_loss))
                bar.set_postfix(loss=f"{running / max(1, n_loss):.4f}")
                running, n_loss = 0.0, 0
        epoch += 1
    bar.close()
    if not history:  # max_steps=0: evaluate only (e.g. an init_from checkpoint)
        run_eval(0, 0.0, None)

    meta = {"model": cfg.model.name, "method": cfg.method.name, "task": task.name,
            "task_kind": task.kind, "num_labels": task.num_labels}
    if tcfg.save_trained:
        checkpoint.save_trained(model, trained, out_dir, meta, result, spec.head, task.kind,
                                cfg.model.get("hub_id") or cfg.model.name)
    body = {"params": params, "metrics": summarize(history, task), "steps": step,
            "evaluations": len(history)}
    tracker.finish({"trainable": params["trainable"], "steps": step})
    return body


def summarize(history: list[dict], task_cfg) -> dict:
    """Per eval split, the best evaluation (by ``task.main_metric``, the paper's best-epoch
    protocol) and the final one."""
    main = task_cfg.main_metric
    best = max(history, key=lambda r: r[main])
    out = {}
    for split in task_cfg.eval_splits:
        pick = lambda r: {**{k.split("/", 1)[1]: v for k, v in r.items() if k.startswith(split + "/")},
                          "step": r["step"], "epoch": r["epoch"]}
        out[split] = {"best": pick(best), "final": pick(history[-1])}
    out["main_metric"] = main
    return out


def run(cfg, out_dir: Path) -> dict:
    """Entry point used by ``run.py``: validate, then dry-run or train; always write summary.json."""
    out_dir = Path(out_dir)
    quiet_libraries()
    start = time.time()
    summary = {"status": "running", "task": cfg.task.name, "model": cfg.model.name,
               "method": cfg.method.name, "rank": cfg.rank, "seed": cfg.seed,
               "git_sha": git_sha(), "config": OmegaConf.to_container(cfg, resolve=True)}
    write_json(out_dir / "summary.json", summary)
    try:
        validate(cfg)
        body = dry_run(cfg, out_dir) if cfg.dry_run else train(cfg, out_dir)
    except BaseException as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}",
                       wall_s=round(time.time() - start, 3))
        write_json(out_dir / "summary.json", summary)
        raise
    summary.update(body, status="ok", wall_s=round(time.time() - start, 3))
    write_json(out_dir / "summary.json", summary)
    return summary
