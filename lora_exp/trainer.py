"""The one trainer every method runs through: set up, train, evaluate, finish.

It knows nothing about any particular method or task: a method returns the parameters it trains
(:mod:`lora_exp.methods`), the trainer adds the task head by one shared rule, builds AdamW over
exactly those and saves exactly those; a task family (:mod:`lora_exp.tasks.registry`) reads the
data and scores the evaluations.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from lora_exp import dist, export, resume
from lora_exp.compiled import TrainingSteps, pad_length
from lora_exp.data import LengthGroupedBatches, collate, row_lengths
from lora_exp.efficiency import prepare_for_training
from lora_exp.errors import ConfigError
from lora_exp.evaluation import Evaluator
from lora_exp.files import check_split_file
from lora_exp.methods import MethodResult, apply_method
from lora_exp.models import build_model, describe, load_tokenizer, model_dropout
from lora_exp.optim import StepPlan, clip_and_step, lr_lambda, make_optimizer
from lora_exp.params import count_params, set_trainable
from lora_exp.runlog import Tracker, git_sha, write_json
from lora_exp.runtime import (keep_freed_memory, machine, pick_compute, precision_name,
                              quiet_libraries, seed_everything)
from lora_exp.schema import method_identity
from lora_exp.selection import protocol, selecting_key, summarize
from lora_exp.spec import ModelSpec
from lora_exp.tasks.registry import task_family
from lora_exp.validate import validate

log = logging.getLogger("lora_exp")


@dataclass
class Adapted:
    """The pretrained model with the method applied, and what trains in it.

    Attributes:
        head: the task head's parameter names (trained by every method, counted apart).
        trained: the method's parameters and the head: what AdamW updates and the run saves.
    """

    model: torch.nn.Module
    spec: ModelSpec
    result: MethodResult
    head: list[str]
    trained: list[str]
    params: dict[str, int]


def adapt(cfg, family) -> Adapted:
    """Load the pretrained model, apply the method, choose what trains, count it, and load
    ``init_from``'s trained parameters if given."""
    spec = ModelSpec.from_cfg(cfg.model, cfg.task.kind)
    model = build_model(cfg.model, cfg.task.kind, cfg.task.num_labels, seed=cfg.seed)
    result = apply_method(model, spec, cfg.method)
    head = list(spec.head_parameters(model))
    trained = list(dict.fromkeys(result.trainable + head))
    set_trainable(model, set(trained))
    if family.prepare_model is not None:
        family.prepare_model(model, cfg.task)
    prepare_for_training(model, cfg.trainer)
    params = count_params(model, result.trainable, head)
    log.info("%s · method=%s · trainable %s (+ head %s) of %s", describe(cfg.model), cfg.method.name,
             f"{params['trainable']:,}", f"{params['head']:,}", f"{params['total']:,}")
    if cfg.init_from is not None:
        source = export.trained_dir(Path(str(cfg.init_from)), cfg.init_checkpoint)
        loaded = export.load_trained(model, source, expected=result.trainable, optional=head)
        log.info("loaded the %s trained parameters of %s%s", cfg.init_checkpoint, cfg.init_from,
                 f" (new head: {loaded['skipped']} differ in shape)" if loaded["skipped"] else "")
    return Adapted(model, spec, result, head, trained, params)


def save_trained(cfg, run: Adapted, out_dir: Path) -> None:
    """``adapter_model.safetensors`` + ``adapter_config.json``: the trained parameters only."""
    task = cfg.task
    meta = {"model": cfg.model.name, "method": method_identity(cfg.method), "task": task.name,
            "task_kind": task.kind, "num_labels": task.num_labels}
    export.save_trained(run.model, run.trained, out_dir, meta, run.result, run.spec.head,
                        task.kind, cfg.model.get("hub_id") or cfg.model.name)


def train_step(model, group, ds, pad_id, device, amp_dtype, opt, scaler, tcfg,
               buckets: list[int] | None = None) -> float:
    """One optimizer step over ``group`` (the micro-batches of one accumulation); returns the loss.

    Each micro-batch's loss is weighted by its share of the step's rows, so accumulation (and a
    batch split across DDP ranks) gives the gradient of one big batch. ``buckets``: pad each
    micro-batch up to the nearest of these lengths (``trainer.compile``) instead of its longest.
    """
    n_rows = sum(len(b) for b in group)
    world, rank = dist.world_size(), dist.rank()
    total = 0.0
    for idx in group:
        local = idx[rank::world]  # this rank's share of the batch (all of it without DDP)
        pad_to = None if buckets is None else pad_length(
            max(map(len, ds[local.tolist()]["input_ids"])), buckets)
        batch = {k: v.to(device) for k, v in collate(ds, local, pad_id, pad_to).items()}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(**batch).loss
        weight = len(local) * world / n_rows  # DDP averages over ranks: undo it with * world
        scaler.scale(loss * weight).backward()
        total += loss.item() * len(local) / n_rows
    clip_and_step(model, opt, scaler, tcfg)
    return dist.all_reduce_sum(total)  # the step's mean loss over all ranks' rows


def dry_run(cfg) -> dict:
    """Build the skeleton from ``model.architecture`` on the meta device, apply the method, count."""
    spec = ModelSpec.from_cfg(cfg.model, cfg.task.kind)
    model = build_model(cfg.model, cfg.task.kind, cfg.task.num_labels, skeleton=True)
    result = apply_method(model, spec, cfg.method)
    head = list(spec.head_parameters(model))
    params = count_params(model, result.trainable, head)
    print(f"[dry run] {describe(cfg.model)} · method={cfg.method.name} · task={cfg.task.name}\n"
          f"  trainable (no head): {params['trainable']:,}\n  head: {params['head']:,}\n"
          f"  total: {params['total']:,}")
    return {"params": params, "protocol": protocol(cfg, None, model_dropout(model)), "dry_run": True}


def check_finite(loss: float, step: int) -> None:
    """Stop at a NaN or infinite loss, before it reaches the weights or a checkpoint."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss is {loss} at step {step}: stopping; the last good "
                                 "checkpoint is kept (lower trainer.lr or check the data)")


def progress_bar(cfg, total: int, step: int) -> tqdm:
    """tqdm over the optimizer steps (``trainer.progress``); sparse updates when not on a
    terminal, so a log file does not fill with bars."""
    return tqdm(total=total, initial=step, desc=f"{cfg.method.name} {cfg.task.name}", unit="step",
                disable=not (cfg.trainer.progress and dist.is_main()),
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


def train(cfg, out_dir: Path) -> dict:
    """Train and evaluate one run; write the run directory; return the summary's body."""
    task, tcfg = cfg.task, cfg.trainer
    family = task_family(task)
    data_dir = None if cfg.data_dir is None else str(cfg.data_dir)
    # Evaluation only (max_steps=0, e.g. an init_from run) needs no train split: DART's is not
    # in the mirror.
    eval_only = tcfg.max_steps == 0
    for split in [*([] if eval_only else ["train"]), *task.eval_splits]:
        check_split_file(task, data_dir, split)  # missing data fails before the model is loaded
    seed_everything(cfg.seed)
    device, amp_dtype = pick_compute(tcfg)
    kept = tcfg.keep_freed_memory and keep_freed_memory()
    if tcfg.keep_freed_memory and not kept:
        log.info("trainer.keep_freed_memory: not glibc; the C allocator's defaults stay")

    # Set-up: the adapted model, the data, the optimizer, the evaluator.
    tokenizer = load_tokenizer(cfg.model)
    run = adapt(cfg, family)
    model = run.model.to(device)
    train_ds, eval_sets = family.read_data(task, data_dir, tokenizer, tcfg, eval_only)
    sampler = LengthGroupedBatches([] if eval_only else row_lengths(train_ds),
                                   tcfg.batch_size, cfg.seed, group_by_length=tcfg.group_by_length)
    plan = StepPlan.from_cfg(tcfg, len(sampler))
    opt = make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(plan.warmup, plan.total))
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)
    tracker = Tracker(cfg.logger if dist.is_main() else None, out_dir, cfg, cfg.run_name)
    state = resume.start(cfg.resume, out_dir, model, opt, sched, scaler)
    before_resume_s, started = state.wall_s, time.time()
    evaluate = Evaluator(family, task, eval_sets, tokenizer, tcfg.eval_batch_size, device,
                         amp_dtype, out_dir, tracker, plan.steps_per_epoch, plan.total,
                         selecting_key(task, tcfg.selection),
                         save_best=(lambda: save_trained(cfg, run, out_dir / export.BEST))
                         if tcfg.save_trained else None,
                         merge=run.result.mergeable and tcfg.merged_eval)
    ddp_model = dist.wrap(model, device)
    steps = TrainingSteps.from_cfg(ddp_model, tcfg)  # trainer.compile: compiled, eager fallback

    def checkpoint() -> None:
        if dist.is_main():
            state.wall_s = before_resume_s + time.time() - started
            resume.save_state(out_dir, model, run.trained, opt, sched, scaler, state)

    def evaluate_and_keep() -> None:
        evaluate(model, state)
        if plan.checkpoints_at(state.step):
            checkpoint()  # again, now holding this evaluation: a later kill does not repeat it

    # The loop: one optimizer step per accumulation group, evaluations and checkpoints by plan.
    model.train()
    if state.step and plan.evaluates_at(state.step) and not state.evaluated():
        evaluate_and_keep()  # resumed from the checkpoint written before this step's evaluation
    bar = progress_bar(cfg, plan.total, state.step)
    while state.step < plan.total:
        batches = sampler.batches(state.epoch)
        while state.pos < len(batches) and state.step < plan.total:
            group = batches[state.pos:state.pos + tcfg.grad_accum]
            loss = steps.run(lambda net: train_step(net, group, train_ds, tokenizer.pad_token_id,
                                                    device, amp_dtype, opt, scaler, tcfg, steps.buckets))
            check_finite(loss, state.step)
            sched.step()
            state.advance(loss, tcfg.grad_accum)
            bar.update(1)
            # The checkpoint goes first: a kill during a long evaluation (an NLG run's decoding of
            # the test set) then resumes at this step and evaluates, instead of re-training.
            if plan.checkpoints_at(state.step):
                checkpoint()
            if plan.evaluates_at(state.step):
                evaluate_and_keep()
        if state.pos >= len(batches):
            state.epoch, state.pos = state.epoch + 1, 0
    bar.close()

    # Finish: rank 0 saves the trained parameters and summarises the evaluations.
    if not dist.is_main():
        return {"steps": state.step}
    if state.step == 0:  # max_steps=0: evaluate only (e.g. an init_from checkpoint)
        evaluate(model, state)
    if tcfg.save_trained:
        save_trained(cfg, run, out_dir)
    tracker.finish({"trainable": run.params["trainable"], "steps": state.step})
    return {"params": run.params, "metrics": summarize(state.history, task, tcfg.selection),
            "protocol": protocol(cfg, len(state.history), model_dropout(model)), "steps": state.step,
            "precision": precision_name(amp_dtype), "kept_freed_memory": kept,
            "evaluations": len(state.history),
            "compile": steps.record(), "wall_s_before_resume": round(before_resume_s, 3)}


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
               "git_sha": git_sha(), "pid": os.getpid(), "host": socket.gethostname(),
               "started_at": time.time(),
               "machine": machine(), "config": resolved}
    if main:
        write_json(out_dir / "summary.json", summary)
    try:
        validate(cfg)
        body = dry_run(cfg) if cfg.dry_run else train(cfg, out_dir)
    except BaseException as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}",
                       wall_s=round(time.time() - start, 3))
        if main:
            write_json(out_dir / "summary.json", summary)
        raise
    finally:
        dist.shutdown()
    # wall_s: this invocation plus, for a resumed run, the earlier ones up to its checkpoint
    wall_s = time.time() - start + body.get("wall_s_before_resume", 0.0)
    summary.update(body, status="ok", wall_s=round(wall_s, 3), finished_at=time.time())
    if main:
        write_json(out_dir / "summary.json", summary)
    return summary
