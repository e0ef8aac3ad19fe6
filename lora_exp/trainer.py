"""The one trainer every method runs through: seed → model → method → data → train → evaluate → save.

It knows nothing about any particular method: a method returns the parameters it trains
(:mod:`lora_exp.methods`), the trainer adds the task head by one shared rule, builds AdamW over
exactly those, and saves exactly those.
"""
from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from lora_exp import checkpoint, dist, metrics, resume
from lora_exp.data import LengthGroupedBatches, collate, subset
from lora_exp.dropout import use_fast_dropout
from lora_exp.lora import merged
from lora_exp.methods import apply_method
from lora_exp.models import build_model, describe, load_tokenizer
from lora_exp.resume import TrainState
from lora_exp.runlog import Tracker, git_sha, write_json, write_jsonl
from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec
from lora_exp.tasks import nlg
from lora_exp.files import check_split_file
from lora_exp.tasks.glue import tokenized_split
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


def enable_gradient_checkpointing(model) -> None:
    """Keep only each block's input in the forward pass and recompute the block in backward.

    Non-reentrant checkpointing: gradients reach trainable parameters inside a block even when
    the block's input does not require grad (frozen embeddings), which the reentrant variant
    cannot do; outputs and gradients equal those without checkpointing.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError("trainer.gradient_checkpointing", True, [False],
                          f"{type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 names it so
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a cache is of no use in training and conflicts with it


def prepare_for_training(model, tcfg) -> None:
    """The trainer's speed and memory measures, applied after the method (so that the method's
    own dropout is covered too): gradient checkpointing (the same numbers) and the CPU dropout of
    :mod:`lora_exp.dropout` (the same distribution of masks, another random stream)."""
    if tcfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if tcfg.fast_dropout:
        use_fast_dropout(model)


def make_optimizer(model, tcfg) -> torch.optim.AdamW:
    """AdamW over the parameters that train. ``trainer.fused_optimizer``: PyTorch's fused kernel
    (one pass over all parameters, on CPU and CUDA; for MiniLM full fine-tuning 13 ms a step
    against the per-tensor loop's 56 ms on the dev machine), same update rule."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                             betas=tuple(tcfg.betas), fused=tcfg.fused_optimizer or None)


def clip_and_step(model, opt, scaler, tcfg) -> None:
    """Gradient clipping (``trainer.max_grad_norm``), the optimizer step, and zeroing."""
    if tcfg.max_grad_norm:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                       tcfg.max_grad_norm)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)


def checkpointing_on(model) -> bool:
    if hasattr(model, "is_activation_checkpointing"):  # transformers >= 5.2
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


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


def _glue_dataset(task_cfg, data_dir, split, tokenizer, max_length, max_samples, *, train):
    return subset(tokenized_split(task_cfg, data_dir, split, tokenizer, max_length), max_samples,
                  task_cfg.subset_seed)


def _glue_evaluate(model, ds, task_cfg, *, tokenizer, batch_size, device, amp_dtype, **_):
    return evaluate(model, ds, task_cfg, batch_size, tokenizer.pad_token_id, device, amp_dtype)


@dataclass(frozen=True)
class TaskFamily:
    """How one task family (``task.family``) reads its splits and scores an evaluation.

    Attributes:
        dataset: ``(task, data_dir, split, tokenizer, max_length, max_samples, *, train)`` ->
            the rows to train on (a tokenised Dataset) or an evaluation set.
        evaluate: ``(model, ds, task, *, split, final, tokenizer, batch_size, device,
            amp_dtype, out_dir)`` -> ``{metric: value}``; ``final`` marks the run's last evaluation.
        prepare_model: optional ``(model, task)`` hook after the method is applied (e.g. the
            LM loss with label smoothing).
    """

    dataset: Callable
    evaluate: Callable
    prepare_model: Callable | None = None


FAMILIES = {
    "glue": TaskFamily(_glue_dataset, _glue_evaluate),
    "nlg": TaskFamily(nlg.dataset, nlg.evaluate, nlg.prepare_model),  # E2E, WebNLG, DART
}


def task_family(task_cfg) -> TaskFamily:
    name = task_cfg.get("family", "glue")
    if name not in FAMILIES:
        raise ConfigError("task.family", name, sorted(FAMILIES))
    return FAMILIES[name]


def train_step(model, group, ds, pad_id, device, amp_dtype, opt, scaler, tcfg) -> float:
    """One optimizer step over ``group`` (the micro-batches of one accumulation); returns the loss.

    Each micro-batch's loss is weighted by its share of the step's rows, so accumulation (and a
    batch split across DDP ranks) gives the gradient of one big batch.
    """
    n_rows = sum(len(b) for b in group)
    world, rank = dist.world_size(), dist.rank()
    total = 0.0
    for idx in group:
        local = idx[rank::world]  # this rank's share of the batch (all of it without DDP)
        batch = {k: v.to(device) for k, v in collate(ds, local, pad_id).items()}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(**batch).loss
        weight = len(local) * world / n_rows  # DDP averages over ranks: undo it with * world
        scaler.scale(loss * weight).backward()
        total += loss.item() * len(local) / n_rows
    clip_and_step(model, opt, scaler, tcfg)
    return dist.all_reduce_sum(total)  # the step's mean loss over all ranks' rows


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
    family = task_family(task)
    data_dir = None if cfg.data_dir is None else str(cfg.data_dir)
    # Evaluation only (max_steps=0, e.g. an init_from run) needs no train split: DART's is not
    # in the mirror.
    eval_only = tcfg.max_steps == 0
    splits = list(task.eval_splits) if eval_only else _splits(task)
    for split in splits:  # missing data fails here, before the model is loaded
        check_split_file(task, data_dir, split)
    seed_everything(cfg.seed)
    device = pick_device(tcfg.device)
    if dist.enabled() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    amp_dtype = pick_precision(tcfg.precision, device)

    spec = ModelSpec.from_cfg(cfg.model, task.kind)
    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg.model, task.kind, task.num_labels, seed=cfg.seed)
    result = apply_method(model, spec, cfg.method)
    head = list(spec.head_parameters(model))
    trained = list(dict.fromkeys(result.trainable + head))
    set_trainable(model, set(trained))
    if family.prepare_model is not None:
        family.prepare_model(model, task)
    prepare_for_training(model, tcfg)
    params = count_params(model, result.trainable, head)
    log.info("%s · method=%s · trainable %s (+ head %s) of %s", describe(cfg.model),
             cfg.method.name, f"{params['trainable']:,}", f"{params['head']:,}", f"{params['total']:,}")
    if cfg.init_from is not None:
        loaded = checkpoint.load_trained(model, Path(str(cfg.init_from)), expected=result.trainable,
                                         optional=head)
        log.info("loaded trained parameters from %s%s", cfg.init_from,
                 f" (new head: {loaded['skipped']} differ in shape)" if loaded["skipped"] else "")
    model.to(device)

    train_ds = None if eval_only else family.dataset(task, data_dir, "train", tokenizer,
                                                     tcfg.max_length, tcfg.max_train_samples, train=True)
    eval_ds = {s: family.dataset(task, data_dir, s, tokenizer, tcfg.max_length,
                                 tcfg.max_eval_samples, train=False) for s in task.eval_splits}
    pad_id = tokenizer.pad_token_id
    lengths = [] if eval_only else [len(x) for x in train_ds["input_ids"]]
    sampler = LengthGroupedBatches(lengths, tcfg.batch_size, cfg.seed,
                                   group_by_length=tcfg.group_by_length)
    steps_per_epoch = max(1, math.ceil(len(sampler) / tcfg.grad_accum))
    total = tcfg.max_steps if tcfg.max_steps is not None else steps_per_epoch * tcfg.epochs
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else int(tcfg.warmup_ratio * total)
    opt = make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)
    eval_every = steps_per_epoch if tcfg.eval_every == "epoch" else int(tcfg.eval_every)

    tracker = Tracker(cfg.logger if dist.is_main() else None, out_dir, cfg, cfg.run_name)
    state = TrainState()
    if cfg.resume and resume.has_state(out_dir):
        state = resume.load_state(out_dir, model, opt, sched, scaler)
        log.info("resumed from %s at step %d", out_dir / resume.FILE, state.step)
    ddp_model = dist.wrap(model, device)

    def run_eval() -> None:
        rec = {"step": state.step, "epoch": round(state.step / steps_per_epoch, 4),
               "train_loss": state.running_loss / state.n_loss if state.n_loss else None}
        if dist.is_main():
            # LoRA evaluates merged (W0 + ΔW, no extra products); the exact W0 comes back after.
            fold = merged(model) if result.mergeable and tcfg.merged_eval else nullcontext()
            with fold:
                for split, ds in eval_ds.items():
                    rec.update({f"{split}/{k}": v for k, v in family.evaluate(
                        model, ds, task, split=split, final=state.step >= total,
                        tokenizer=tokenizer, batch_size=tcfg.eval_batch_size, device=device,
                        amp_dtype=amp_dtype, out_dir=out_dir).items()})
            state.history.append(rec)
            # Rewritten whole (atomically) at every evaluation: never a half line after a kill.
            write_jsonl(out_dir / "metrics.jsonl", state.history)
            tracker.log(rec, state.step)
            log.info("step %d (epoch %.2f): %s", state.step, rec["epoch"],
                     ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if "/" in k))
        dist.barrier()
        state.running_loss, state.n_loss = 0.0, 0

    model.train()
    bar = tqdm(total=total, initial=state.step, desc=f"{cfg.method.name} {task.name}", unit="step",
               disable=not (tcfg.progress and dist.is_main()),
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    while state.step < total:
        batches = sampler.batches(state.epoch)
        while state.pos < len(batches) and state.step < total:
            group = batches[state.pos:state.pos + tcfg.grad_accum]
            loss = train_step(ddp_model, group, train_ds, pad_id, device, amp_dtype, opt, scaler, tcfg)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {state.step}: stopping; the last "
                                         "good checkpoint is kept (lower trainer.lr or check the data)")
            sched.step()
            state.step, state.pos = state.step + 1, state.pos + tcfg.grad_accum
            state.running_loss, state.n_loss = state.running_loss + loss, state.n_loss + 1
            bar.update(1)
            if state.step % eval_every == 0 or state.step == total:
                run_eval()
            if tcfg.checkpoint_every and state.step % tcfg.checkpoint_every == 0 and dist.is_main():
                resume.save_state(out_dir, model, trained, opt, sched, scaler, state)
        if state.pos >= len(batches):
            state.epoch, state.pos = state.epoch + 1, 0
    bar.close()
    history, step = state.history, state.step
    if not dist.is_main():
        return {"steps": step}
    if state.step == 0:  # max_steps=0: evaluate only (e.g. an init_from checkpoint)
        run_eval()

    meta = {"model": cfg.model.name, "method": cfg.method.name, "task": task.name,
            "task_kind": task.kind, "num_labels": task.num_labels}
    if tcfg.save_trained and dist.is_main():
        checkpoint.save_trained(model, trained, out_dir, meta, result, spec.head, task.kind,
                                cfg.model.get("hub_id") or cfg.model.name)
    body = {"params": params, "metrics": summarize(history, task), "steps": step,
            "evaluations": len(history)}
    tracker.finish({"trainable": params["trainable"], "steps": step})
    return body


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


def run(cfg, out_dir: Path) -> dict:
    """Entry point used by ``run.py``: validate, then dry-run or train; always write summary.json
    (``running`` while it works, then ``ok`` or ``failed`` with the error). Under torchrun only
    rank 0 writes."""
    out_dir = Path(out_dir)
    quiet_libraries()
    start = time.time()
    main = dist.is_main()
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:  # e.g. a resolver rejecting a value
        if main:
            write_json(out_dir / "summary.json", {"status": "failed", "error": str(e).splitlines()[0]})
        raise ConfigError("config", str(e).splitlines()[0], None, "could not be resolved") from None
    summary = {"status": "running", "task": cfg.task.name, "model": cfg.model.name,
               "method": cfg.method.get("label") or cfg.method.name, "rank": cfg.rank, "seed": cfg.seed,
               "git_sha": git_sha(), "pid": os.getpid(), "started_at": time.time(), "config": resolved}
    if main:
        write_json(out_dir / "summary.json", summary)
    try:
        validate(cfg)
        body = dry_run(cfg, out_dir) if cfg.dry_run else train(cfg, out_dir)
    except BaseException as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}",
                       wall_s=round(time.time() - start, 3))
        if main:
            write_json(out_dir / "summary.json", summary)
        raise
    finally:
        dist.shutdown()
    summary.update(body, status="ok", wall_s=round(time.time() - start, 3), finished_at=time.time())
    if main:
        write_json(out_dir / "summary.json", summary)
    return summary
