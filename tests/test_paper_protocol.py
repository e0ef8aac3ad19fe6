"""Every paper experiment resolves to the paper's hyperparameters.

The tables below are transcribed from the paper (Hu et al. 2021, Appendix D: Tables 9, 10, 11),
independently of conf/task/*.yaml, so a config that drifts from the paper fails here. Where the
paper is silent the expected value is the released scripts' (microsoft/LoRA examples/NLU/*.sh),
marked "script".
"""
from pathlib import Path

import pytest

from lora_exp.validate import validate

TASKS = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"]


def per_task(*values):
    return dict(zip(TASKS, values))


# Table 9, RoBERTa with LoRA (r_q = r_v = 8, warmup ratio 0.06, linear decay).
ROBERTA_BASE = {"batch_size": per_task(16, 16, 16, 32, 32, 16, 32, 16),
                "epochs": per_task(30, 60, 30, 80, 25, 25, 80, 40),
                "lr": per_task(5e-4, 5e-4, 4e-4, 4e-4, 4e-4, 5e-4, 5e-4, 4e-4),
                "alpha": per_task(*[8] * 8), "max_length": per_task(*[512] * 8)}
ROBERTA_LARGE = {"batch_size": per_task(4, 4, 4, 4, 4, 4, 8, 8),
                 "epochs": per_task(10, 10, 20, 20, 10, 20, 20, 30),
                 "lr": per_task(3e-4, 4e-4, 3e-4, 2e-4, 2e-4, 3e-4, 4e-4, 2e-4),
                 "alpha": per_task(*[16] * 8),
                 "max_length": per_task(128, 128, 512, 128, 512, 512, 512, 512)}
ROBERTA_LARGE_DAGGER = {"batch_size": per_task(*[4] * 8),
                        "epochs": per_task(10, 10, 20, 20, 10, 20, 20, 10),
                        "lr": ROBERTA_LARGE["lr"], "alpha": per_task(*[16] * 8),
                        "max_length": per_task(*[128] * 8)}
# Table 9, adapter baselines: batch 32, max length 128 for all.
ADAPTERS = {
    "table2_roberta_large_adptp_3m": {"rank": 64, "epochs": per_task(10, 20, 20, 20, 10, 20, 20, 20),
                                      "lr": per_task(3e-5, 3e-5, *[3e-4] * 6)},
    "table2_roberta_large_adptp_800k": {"rank": 16, "epochs": per_task(5, 20, 20, 20, 10, 20, 20, 20),
                                        "lr": per_task(*[3e-4] * 8)},
    "table2_roberta_large_adpth_6m": {"rank": 64, "epochs": per_task(10, 5, 10, 10, 5, 20, 20, 10),
                                      "lr": per_task(3e-5, *[3e-4] * 7)},
    "table2_roberta_large_adpth_800k": {"rank": 8, "epochs": per_task(10, 5, 10, 10, 5, 20, 20, 10),
                                        "lr": per_task(*[3e-4] * 8)},
}
# Table 10, DeBERTa-XXL (warmup ratio 0.1).
DEBERTA = {"batch_size": per_task(8, 8, 32, 4, 6, 8, 4, 4),
           "epochs": per_task(5, 16, 30, 10, 8, 11, 11, 10),
           "lr": per_task(1e-4, 6e-5, 2e-4, 1e-4, 1e-4, 1e-4, 2e-4, 2e-4),
           "weight_decay": per_task(0, .01, .01, 0, .01, .01, .01, .1),
           "cls_dropout": per_task(.15, 0, 0, .1, .1, .2, .2, .2),
           "max_length": per_task(256, 128, 128, 64, 512, 320, 320, 128)}
# Table 11, GPT-2 M and L: AdamW, lr 2e-4 linear, 500 warmup steps, batch 8, 5 epochs,
# r_q = r_v = 4, α = 32; per task (E2E / WebNLG / DART) weight decay, dropout, label smoothing;
# beam 10, no-repeat-ngram 4, length penalty .9 / .8 / .8. The reference GPT-2 has no dropout
# module of its own.
GPT2 = {"weight_decay": {"e2e": .01, "webnlg": .01, "dart": 0},
        "dropout": {"e2e": .1, "webnlg": .1, "dart": 0},
        "label_smoothing": {"e2e": .1, "webnlg": .1, "dart": 0},
        "length_penalty": {"e2e": .9, "webnlg": .8, "dart": .8}}

# The paper-scale rows; table2_cpu is the CPU stand-in with budgets of its own.
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "experiment")
                     .glob("table2_*.yaml") if p.stem != "table2_cpu")


def _composed(make_cfg, experiment, task):
    cfg = make_cfg([f"experiment={experiment}", f"task={task}", "dry_run=true"])
    validate(cfg)
    return cfg


def _check_glue_row(cfg, table, task):
    t = cfg.trainer
    for key in ("batch_size", "epochs", "lr", "max_length"):
        if key in table:
            assert t[key] == pytest.approx(table[key][task]), (key, task)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_table2_experiment_evaluates_each_epoch(make_cfg, experiment, task):
    cfg = _composed(make_cfg, experiment, task)
    assert cfg.trainer.eval_every == "epoch"  # the paper reports each run's best epoch
    if task == "mnli":  # the paper's MNLI column: accuracy over matched + mismatched
        assert cfg.task.main_metric == "overall/accuracy"
        assert list(cfg.task.combined_splits.overall) == ["dev_matched", "dev_mismatched"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("experiment,table", [("table2_roberta_base_lora", ROBERTA_BASE),
                                              ("table2_roberta_large_lora", ROBERTA_LARGE),
                                              ("table2_roberta_large_lora_dagger", ROBERTA_LARGE_DAGGER)])
def test_roberta_lora_rows_are_table_9(make_cfg, experiment, table, task):
    cfg = _composed(make_cfg, experiment, task)
    _check_glue_row(cfg, table, task)
    assert cfg.method.alpha == table["alpha"][task] and cfg.rank == 8
    assert list(cfg.method.targets) == ["wq", "wv"] and cfg.method.dropout == 0
    assert cfg.trainer.warmup_ratio == 0.06
    assert cfg.trainer.weight_decay == 0.1  # script: --weight_decay 0.1 (the paper gives none)
    assert cfg.model.get("dropout") is None  # the checkpoint's own dropout, as run_glue.py keeps it


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("experiment", sorted(ADAPTERS))
def test_adapter_rows_are_table_9(make_cfg, experiment, task):
    cfg = _composed(make_cfg, experiment, task)
    row = ADAPTERS[experiment]
    _check_glue_row(cfg, row, task)
    assert cfg.rank == row["rank"] and cfg.trainer.batch_size == 32 and cfg.trainer.max_length == 128
    assert cfg.method.variant == experiment.split("_adpt")[1][0]  # h or p
    assert cfg.trainer.warmup_ratio == 0.06
    assert cfg.trainer.weight_decay == 0.0  # script: no --weight_decay (HF's 0); paper silent


@pytest.mark.parametrize("task", TASKS)
def test_deberta_lora_row_is_table_10(make_cfg, task):
    cfg = _composed(make_cfg, "table2_deberta_v2_xxlarge_lora", task)
    _check_glue_row(cfg, DEBERTA, task)
    assert cfg.trainer.weight_decay == pytest.approx(DEBERTA["weight_decay"][task])
    assert cfg.model.hf_config.cls_dropout == pytest.approx(DEBERTA["cls_dropout"][task])
    assert cfg.trainer.warmup_ratio == 0.1
    # Table 2's 4.7M trainable parameters are r = 16 on q, v (Table 10 prints r = 8, which gives
    # 2.4M); the released scripts use r = 16 with α = 32.
    assert cfg.rank == 16 and cfg.method.alpha == 32


@pytest.mark.parametrize("task", ["e2e", "webnlg", "dart"])
@pytest.mark.parametrize("model", ["gpt2_medium", "gpt2_large"])
def test_gpt2_lora_rows_are_table_11(make_cfg, model, task):
    cfg = make_cfg(["experiment=table3_lora", f"model={model}", f"task={task}", "dry_run=true"])
    validate(cfg)
    t, m, d = cfg.trainer, cfg.method, cfg.task.decoding
    assert (t.lr, t.warmup_steps, t.batch_size, t.epochs) == (2e-4, 500, 8, 5)
    assert (cfg.rank, m.alpha, list(m.targets)) == (4, 32, ["wq", "wv"])
    assert t.weight_decay == GPT2["weight_decay"][task] and m.dropout == GPT2["dropout"][task]
    assert cfg.task.label_smoothing == GPT2["label_smoothing"][task]
    assert (d.num_beams, d.no_repeat_ngram_size) == (10, 4)
    assert d.length_penalty == GPT2["length_penalty"][task]
    assert cfg.model.dropout == 0  # the reference GPT-2 has no dropout module
    assert t.eval_every == "epoch"
