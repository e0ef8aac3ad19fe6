"""The benchmark's reference job, written the way users do it today: transformers' ``Trainer`` +
peft LoRA on SST-2 (the structure of transformers' ``run_glue.py`` and peft's sequence-
classification example). ``benchmarks/run.py`` runs it next to the same job through ``run.py``.

Same model (the embedded MiniLM), LoRA r=8 α=8 on query and value, the same trained head
(pooler + classifier), steps, batch, learning rate, warmup ratio, weight decay, gradient clipping
and maximum length; evaluation on the full dev set at the end, and with ``--eval-steps N`` every
N steps too (as ``run.py``'s ``trainer.eval_every=N``).

Padding: ``--padding max_length`` is ``run_glue.py``'s default (``pad_to_max_length=True``);
``--padding dynamic`` uses ``DataCollatorWithPadding`` with length-grouped sampling, the best a
Trainer user can pick; ``--bf16`` adds the Trainer's bf16 autocast (``bf16=True``), which it
supports on a CPU too.

    python benchmarks/hf_trainer_peft.py --data-dir ../shared/data --steps 200 --out /tmp/hf
Prints one JSON line: wall seconds (inside the script), dev accuracy at the end and the best of
the evaluations.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np


def read_tsv(path: str) -> dict[str, list]:
    # GLUE's SST-2 TSV (sentence \t label); csv.QUOTE_NONE as the GLUE files need.
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {"sentence": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]}


def dev_accuracies(trainer) -> list[float]:
    """The dev accuracy of every evaluation, the last step's included. The Trainer evaluates its
    last step itself when evaluating every N steps (whether or not N divides it); run.py evaluates
    each step once, so only a last step not yet evaluated gets an evaluation here."""
    def evaluations() -> list[dict]:
        return [h for h in trainer.state.log_history if "eval_accuracy" in h]

    if not evaluations() or evaluations()[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()
    return [h["eval_accuracy"] for h in evaluations()]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model-dir", default=None, help="default: the embedded MiniLM folder")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--padding", choices=["max_length", "dynamic"], default="max_length")
    ap.add_argument("--bf16", action="store_true",
                    help="TrainingArguments(bf16=True): the Trainer's bf16 autocast (CPU or CUDA)")
    ap.add_argument("--eval-steps", type=int, default=None,
                    help="also evaluate every N steps (default: only at the end)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    start = time.time()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments, set_seed)

    model_dir = args.model_dir
    if model_dir is None:  # where lora-exp finds the embedded MiniLM (a package folder)
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from lora_exp.embedded import minilm_path
        model_dir = str(minilm_path())
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pad = "max_length" if args.padding == "max_length" else False

    def tokenize(batch):
        return tokenizer(batch["sentence"], padding=pad, truncation=True, max_length=args.max_length)

    train = Dataset.from_dict(read_tsv(f"{args.data_dir}/sst2/train.tsv")).map(tokenize, batched=True)
    dev = Dataset.from_dict(read_tsv(f"{args.data_dir}/sst2/dev.tsv")).map(tokenize, batched=True)

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model = get_peft_model(model, LoraConfig(
        task_type=TaskType.SEQ_CLS, r=8, lora_alpha=8, lora_dropout=0.0,
        target_modules=["query", "value"], modules_to_save=["pooler", "classifier"]))

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    targs = TrainingArguments(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, learning_rate=args.lr, warmup_steps=0.06,  # a fraction: the ratio
        weight_decay=0.01, lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed,
        eval_strategy="steps" if args.eval_steps else "no", eval_steps=args.eval_steps,
        save_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=True, dataloader_num_workers=0, bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),  # the Trainer asks for it to run bf16 on a CPU
        train_sampling_strategy="group_by_length" if args.padding == "dynamic" else "random")
    trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=accuracy)
    trainer.train()
    accuracies = dev_accuracies(trainer)
    result = {"wall_s": time.time() - start, "dev_accuracy": accuracies[-1],
              "dev_accuracy_best": max(accuracies), "evaluations": len(accuracies),
              "padding": args.padding, "bf16": args.bf16, "steps": args.steps}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
