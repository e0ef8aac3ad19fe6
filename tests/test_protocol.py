"""How a reported number is made and selected: selection rules, the best checkpoint, MNLI's
overall metric, the model's own dropout, weight decay, fp32 loading, offline errors."""
import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf

from lora_exp.data import hold_out
from lora_exp.errors import ConfigError
from lora_exp.models import build_model, load_tokenizer
from lora_exp.optim import make_optimizer, no_decay_names
from lora_exp.selection import best_index, summarize
from lora_exp.tasks import glue
from lora_exp.trainer import run

SMOKE = ["model=tiny_bert", "trainer=smoke"]


def _run(make_cfg, out, overrides, data_dir):
    cfg = make_cfg([f"data_dir={data_dir}", *SMOKE, *overrides])
    run(cfg, out)
    return json.loads((out / "summary.json").read_text())


def _task(**extra):
    return OmegaConf.create({"main_metric": "dev/pearson", "eval_splits": ["dev"], **extra})


def test_a_nan_metric_is_never_selected():
    # A first-evaluation NaN (Pearson of constant predictions) loses to every number after it.
    history = [{"step": 1, "epoch": 1, "dev/pearson": float("nan")},
               {"step": 2, "epoch": 2, "dev/pearson": 0.2},
               {"step": 3, "epoch": 3, "dev/pearson": 0.1}]
    assert best_index(history, "dev/pearson") == 1
    out = summarize(history, _task())
    assert out["dev"]["best"]["step"] == 2 and out["dev"]["nan_evaluations"] == 1
    assert out["dev"]["final"]["step"] == 3


def test_all_nan_falls_back_to_the_final_evaluation_and_says_so():
    history = [{"step": s, "epoch": s, "dev/pearson": float("nan")} for s in (1, 2)]
    assert best_index(history, "dev/pearson") is None
    out = summarize(history, _task())
    assert out["dev"]["best"]["step"] == 2 and out["dev"]["nan_evaluations"] == 2


def test_heldout_selection_picks_on_the_heldout_slice_and_reports_dev_there():
    history = [{"step": 1, "epoch": 1, "dev/pearson": 0.9, "heldout/pearson": 0.1},
               {"step": 2, "epoch": 2, "dev/pearson": 0.5, "heldout/pearson": 0.7}]
    out = summarize(history, _task(), "heldout")
    assert out["dev"]["best"]["pearson"] == 0.9  # the paper's protocol, still shown
    assert out["dev"]["heldout"] == {"pearson": 0.5, "step": 2, "epoch": 2}
    assert out["selection"] == "heldout"


def test_hold_out_is_a_seeded_disjoint_slice():
    ds = Dataset.from_dict({"x": list(range(50))})
    train, held = hold_out(ds, 10, seed=0)
    again_train, again_held = hold_out(ds, 10, seed=0)
    assert list(held["x"]) == list(again_held["x"]) and list(train["x"]) == list(again_train["x"])
    assert len(held) == 10 and sorted(list(train["x"]) + list(held["x"])) == list(range(50))
    assert list(hold_out(ds, 10, seed=1)[1]["x"]) != list(held["x"])
    with pytest.raises(ConfigError, match="trainer.heldout_size"):
        hold_out(ds, 50, seed=0)


def test_mnli_overall_is_accuracy_over_matched_and_mismatched_rows(make_cfg):
    # Matched: 3 of 4 right (0.75); mismatched: 0 of 2 right (0). Overall: 3 of 6 = 0.5, not
    # the mean of the two accuracies (0.375).
    task = make_cfg(["task=mnli", "model=tiny_bert"]).task
    assert task.main_metric == "overall/accuracy"
    logits = {"dev_matched": (np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 1])),
              "dev_mismatched": (np.eye(3)[[0, 0]], np.array([1, 2]))}
    real_predict = glue.predict
    try:
        glue.predict = lambda model, ds, *a, **k: logits[ds]
        out = glue.evaluate(torch.nn.Identity(), {s: s for s in logits}, task, tokenizer=None,
                            batch_size=1, device=torch.device("cpu"), amp_dtype=None)
    finally:
        glue.predict = real_predict
    assert out == {"dev_matched/accuracy": 0.75, "dev_mismatched/accuracy": 0.0,
                   "overall/accuracy": 0.5}


def test_best_checkpoint_reproduces_the_best_evaluation(make_cfg, tmp_path, data_dir):
    # 3 epochs whose best evaluation (epoch 2) is not the last: the parameters kept at the best
    # evaluation, evaluated again, give its metric exactly; the final ones give the final metric.
    train = ["task=rte", "trainer.max_steps=null", "trainer.epochs=3", "trainer.eval_every=epoch",
             "trainer.lr=3e-2"]
    trained = _run(make_cfg, tmp_path / "run", train, data_dir)
    dev = trained["metrics"]["dev"]
    assert dev["best"]["step"] != dev["final"]["step"], "the fixture needs a best that is not last"
    assert (tmp_path / "run" / "best" / "adapter_model.safetensors").is_file()
    for which in ("best", "final"):
        again = _run(make_cfg, tmp_path / which, ["task=rte", "trainer.max_steps=0",
                                                  f"init_from={tmp_path / 'run'}",
                                                  f"init_checkpoint={which}"], data_dir)
        assert again["metrics"]["dev"]["final"]["accuracy"] == dev[which]["accuracy"]
        assert again["protocol"]["init_from"] == {"run": str(tmp_path / "run"), "checkpoint": which}


def test_a_run_without_best_parameters_is_refused_for_init_checkpoint_best(make_cfg, tmp_path,
                                                                           data_dir):
    _run(make_cfg, tmp_path / "run", ["task=rte"], data_dir)
    (tmp_path / "run" / "best" / "adapter_model.safetensors").unlink()
    with pytest.raises(ConfigError, match="init_checkpoint='best'.*valid: \\['final'\\]"):
        _run(make_cfg, tmp_path / "next", ["task=rte", f"init_from={tmp_path / 'run'}"], data_dir)


def test_protocol_is_recorded_in_the_summary(make_cfg, tmp_path, data_dir):
    summary = _run(make_cfg, tmp_path, ["task=rte", "trainer.selection=heldout",
                                        "trainer.heldout_size=16", "model.dropout=0.0"], data_dir)
    p = summary["protocol"]
    assert p["selection"] == "heldout" and p["selected_on"] == "heldout/accuracy"
    assert p["heldout_size"] == 16 and p["evaluations"] == summary["evaluations"] == 1
    assert p["seed"] == 0 and p["head_counted"] is False and p["init_from"] is None
    assert p["model_dropout"] == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    assert p["weight_decay"] == 0.01 and p["no_decay"] == "biases and normalisation weights"
    assert "heldout" in summary["metrics"]["dev"]


def test_heldout_selection_is_refused_for_nlg(make_cfg, tmp_path, data_dir):
    with pytest.raises(ConfigError, match="trainer.selection='heldout'.*valid: \\['paper'\\]"):
        _run(make_cfg, tmp_path, ["model=tiny_gpt2", "task=e2e", "trainer.selection=heldout"],
             data_dir)


def test_model_dropout_sets_gpt2s_own_dropout(make_cfg):
    cfg = make_cfg(["model=tiny_gpt2", "task=e2e", "model.dropout=0"])
    model = build_model(cfg.model, "lm", 0)
    assert (model.config.embd_pdrop, model.config.attn_pdrop, model.config.resid_pdrop) == (0, 0, 0)
    default = build_model(make_cfg(["model=tiny_gpt2", "task=e2e"]).model, "lm", 0)
    assert default.config.resid_pdrop == 0.1  # null keeps the checkpoint's own


def test_no_weight_decay_on_biases_and_layernorm(make_cfg):
    cfg = make_cfg(SMOKE + ["method=full_ft", "trainer.weight_decay=0.5", "trainer.lr=1.0"])
    model = build_model(cfg.model, "cls", 2)
    exempt = no_decay_names(model)
    names = dict(model.named_parameters())
    assert "bert.embeddings.LayerNorm.weight" in exempt and "classifier.bias" in exempt
    assert "bert.encoder.layer.0.attention.self.query.weight" not in exempt
    assert all(n.endswith("bias") or "LayerNorm" in n for n in exempt)
    before = {n: p.detach().clone() for n, p in names.items()}
    opt = make_optimizer(model, cfg.trainer)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only decoupled weight decay moves a weight, p ← p·(1 − lr·wd)
    for n, p in names.items():
        factor = 1.0 if n in exempt else 0.5
        assert torch.equal(p.detach(), before[n] * factor), n


def test_weights_load_in_fp32_from_a_half_precision_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(SMOKE)
    build_model(cfg.model, "cls", 2).to(torch.float16).save_pretrained(tmp_path / "fp16")
    load_tokenizer(cfg.model).save_pretrained(tmp_path / "fp16")
    saved = json.loads((tmp_path / "fp16" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "float16"
    hub = make_cfg(SMOKE + ["model.source=hub", f"model.hub_id={tmp_path / 'fp16'}"])
    model = build_model(hub.model, "cls", 2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_no_network_is_one_clear_error(make_cfg, tmp_path, data_dir):
    # The tests run with HF_HUB_OFFLINE=1: the hub is unreachable, as on a machine without network.
    with pytest.raises(ConfigError, match="could not fetch nyu-mll/glue/mnli.*valid: a local mirror"):
        run(make_cfg(SMOKE + ["task=mnli", "data_dir=null"]), tmp_path / "data")
    with pytest.raises(ConfigError, match="could not fetch FacebookAI/roberta-base.*embedded"):
        run(make_cfg(["model=roberta_base", "trainer=smoke", f"data_dir={data_dir}"]), tmp_path / "m")
    for out in ("data", "m"):
        assert json.loads((tmp_path / out / "summary.json").read_text())["status"] == "failed"


def test_nan_written_as_a_string_is_not_selected_either():
    # metrics.jsonl stores NaN as the string "nan" (JSON has no NaN); read back, it is no candidate.
    history = [{"step": 1, "epoch": 1, "dev/pearson": "nan"}, {"step": 2, "epoch": 2, "dev/pearson": 0.3}]
    assert best_index(history, "dev/pearson") == 1
