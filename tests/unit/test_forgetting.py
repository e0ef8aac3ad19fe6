"""Learning vs forgetting (analysis/forgetting.py): the probes by hand, and before/after on tiny
runs (tiny_bert on SST-2 -> the STS-B probe; tiny_gpt2 on E2E -> the WebNLG LM-loss probe)."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from analysis import forgetting
from analysis.runs import Key, RunError, pretrained_weights
from lora_exp import nlg_metrics
from lora_exp.export import read_weights
from lora_exp.lora import lora_modules
from lora_exp.models import build_model, load_tokenizer
from lora_exp.tasks.nlg_data import _read_webnlg
from tests.test_analysis_cli import make_runs

SHORT = "A man is playing a guitar."
LONG = "A woman is slicing a large red onion on a wooden board in a small kitchen."


@pytest.fixture(scope="module")
def enc_runs(tmp_path_factory, data_dir):
    """tiny_bert on SST-2: LoRA r=2 trained 4 steps, the same never trained (B = 0), full FT."""
    return make_runs(tmp_path_factory.mktemp("forgetting_runs"), {
        "lora": ["rank=2"], "untrained": ["rank=2", "trainer.max_steps=0"],
        "full_ft": ["method=full_ft"]}, data_dir)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, data_dir):
    """tiny_gpt2 LoRA on 32 E2E rows, 3 steps, greedy decoding of 4 inputs."""
    root = tmp_path_factory.mktemp("forgetting_lm")
    train = root / "train.txt"
    train.write_text("".join((data_dir / "e2e" / "train.txt").read_text().splitlines(True)[:32]))
    with pytest.MonkeyPatch.context() as mp:  # the JVM metrics: tested in test_nlg_metrics
        mp.setattr(nlg_metrics, "_coco_scores",
                   lambda preds, refs: {"METEOR": 0.25, "ROUGE_L": 0.5, "CIDEr": 0.75})
        make_runs(root, {"e2e": ["model=tiny_gpt2", "task=e2e", "rank=2",
                                 f"task.files.train={train}", "trainer.max_steps=3",
                                 "trainer.max_eval_samples=4", "task.decoding.greedy=true",
                                 "task.decoding.max_new_tokens=4"]}, data_dir)
    return root / "e2e"


@pytest.fixture
def tiny_bert(make_cfg):
    cfg = make_cfg(["model=tiny_bert", "task=stsb"])
    return build_model(cfg.model, "reg", 1, seed=0).eval(), load_tokenizer(cfg.model)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e6, -1e6]],  # last position: padding
                           [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert forgetting.mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [7.0, 8.0]]


def test_a_padded_sentence_embeds_like_the_same_sentence_alone(tiny_bert, one_thread):
    model, tok = tiny_bert
    assert len(tok(SHORT)["input_ids"]) < len(tok(LONG)["input_ids"])  # SHORT gets padded
    alone = forgetting.embed(model, tok, [SHORT])[0]
    padded = forgetting.embed(model, tok, [SHORT, LONG])  # one batch, back in sentence order
    torch.testing.assert_close(padded[0], alone, rtol=0, atol=1e-5)
    # ... and the pads would move it if they were pooled: the test can tell.
    batch = tok([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
    with_pads = forgetting.mean_pool(hidden, torch.ones_like(batch["attention_mask"]))[0]
    assert (with_pads - alone).abs().max() > 1e-3


def test_spearman_of_perfectly_ordered_cosines_is_one():
    angles = torch.tensor([0.1, 0.5, 0.9, 1.3])
    a = torch.tensor([[1.0, 0.0]]).repeat(4, 1)
    # Lengths differ on purpose: cosine ignores them, so the scores are cos(angle) exactly.
    b = torch.stack([angles.cos(), angles.sin()], 1) * torch.tensor([[1.0], [3.0], [0.5], [2.0]])
    torch.testing.assert_close(F.cosine_similarity(a, b, dim=-1), angles.cos())
    gold = np.array([4.8, 3.0, 1.2, 0.2])  # the wider the angle, the less similar
    assert forgetting.cosine_spearman(a, b, gold) == pytest.approx(1.0)
    assert forgetting.cosine_spearman(a, b, gold[::-1].copy()) == pytest.approx(-1.0)


def unrecorded(*run_dirs):
    """Drop the records an earlier test's measure left beside these runs (analysis.measured), so
    that the next one measures from the weights."""
    from analysis import measured
    for run_dir in run_dirs:
        shutil.rmtree(run_dir / measured.FOLDER, ignore_errors=True)


def test_before_and_after_are_one_function_on_two_models(enc_runs, monkeypatch):
    calls = []
    real = forgetting.probe_score

    def spy(model, tokenizer, probe):
        calls.append((model, real(model, tokenizer, probe)))
        return calls[-1][1]

    monkeypatch.setattr(forgetting, "probe_score", spy)
    unrecorded(enc_runs / "lora")
    rec = forgetting.measure(enc_runs / "lora")
    assert len(calls) == 2 and [rec["before"], rec["after"]] == [v for _, v in calls]
    (base, _), (tuned, _) = calls
    assert not list(lora_modules(base))  # before: the plain base model
    assert list(lora_modules(tuned)) and all(m.merged for _, m in lora_modules(tuned))
    # after: the run's saved A and B (its best evaluation), merged into W0
    saved = read_weights(enc_runs / "lora" / "best")
    path = "bert.encoder.layer.1.attention.self.value"
    a, b = saved[f"{path}.lora_A.weight"], saved[f"{path}.lora_B.weight"]
    w0 = pretrained_weights(enc_runs / "lora", [Key(1, "wv", "attention.self.value")])
    w0 = next(iter(w0.values())).float()
    assert b.abs().max() > 0  # trained: B moved off zero
    torch.testing.assert_close(tuned.get_submodule(path).weight, w0 + 8 / 2 * b @ a)  # α/r = 8/2
    assert torch.equal(base.get_submodule(path).weight, w0)
    assert rec["after"] != rec["before"]


def test_runs_of_one_base_model_score_it_once(enc_runs, monkeypatch, tmp_path):
    calls = []
    real = forgetting.probe_score
    monkeypatch.setattr(forgetting, "probe_score",
                        lambda *a: calls.append(a[0]) or real(*a))
    unrecorded(enc_runs / "lora", enc_runs / "full_ft")
    table = forgetting.write_forgetting([enc_runs / "lora", enc_runs / "full_ft"], tmp_path)
    assert len(calls) == 3  # one base model (same config, seed 0) + two tuned ones
    alone = forgetting.measure(enc_runs / "full_ft")
    assert table["before"].tolist() == [alone["before"]] * 2
    assert table["after"].iloc[1] == alone["after"]


def test_a_lora_run_that_never_trained_forgot_nothing(enc_runs):
    """B = 0: the merged model is W0 itself, so after must equal before to the last bit."""
    rec = forgetting.measure(enc_runs / "untrained")
    assert rec["probe"] == "stsb_zero_shot_spearman" and rec["probe_items"] == 1500
    assert -1 <= rec["before"] <= 1
    assert rec["after"] == rec["before"] and rec["forgetting"] == 0.0


def test_a_full_ft_record(enc_runs):
    rec = forgetting.measure(enc_runs / "full_ft", checkpoint="final")
    summary = json.loads((enc_runs / "full_ft" / "summary.json").read_text())
    assert list(rec) == forgetting.COLUMNS
    assert (rec["method"], rec["rank"], rec["task"], rec["checkpoint"]) == ("full_ft", None, "sst2",
                                                                            "final")
    assert rec["forgetting"] == rec["before"] - rec["after"] != 0  # Spearman: lower = forgot
    assert rec["task_metric_name"] == "dev/accuracy"
    assert rec["task_metric"] == summary["metrics"]["dev"]["final"]["accuracy"]


def test_runs_without_trained_parameters_are_refused(enc_runs, tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        forgetting.measure(tmp_path)
    (tmp_path / "summary.json").write_text((enc_runs / "lora" / "summary.json").read_text())
    for checkpoint in ("best", "final"):
        with pytest.raises(RunError, match="no saved trained parameters"):
            forgetting.measure(tmp_path, checkpoint=checkpoint)


def test_lm_probe_is_the_mean_cross_entropy_per_reference_token(make_cfg, data_dir, one_thread):
    cfg = make_cfg(["model=tiny_gpt2", "task=e2e"])
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, "lm", None, seed=0).eval()
    with torch.no_grad():  # GPT-2's init (std 0.02) predicts almost uniformly, whatever the
        for p in model.parameters():  # context: larger weights make the check discriminating
            p.normal_(0.0, 0.5)
    texts, total = forgetting.heldout_texts(data_dir, "webnlg", 3, seed=0)
    refs = {ex.completion for ex in _read_webnlg(data_dir / "webnlg" / "test.json")}
    assert total == len(refs) and set(texts) <= refs and len(set(texts)) == 3
    assert forgetting.heldout_texts(data_dir, "webnlg", 3, seed=0)[0] == texts  # seeded
    assert forgetting.heldout_texts(data_dir, "webnlg", 3, seed=1)[0] != texts
    probe = forgetting.Probe("webnlg_ref_lm_loss", "", 3, rows=forgetting.text_rows(tok, texts))
    got = forgetting.probe_score(model, tok, probe)
    # By hand, one text at a time: [SEP] " text" [SEP] (the BERT vocabulary's separator and end);
    # every token after the separator is predicted, and the mean is over all those tokens.
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = [102, *tok(" " + t, add_special_tokens=False)["input_ids"], 102]
            logits = model(torch.tensor([ids])).logits[0]
            nll += F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum").item()
            n += len(ids) - 1
    assert got == pytest.approx(nll / n, rel=1e-5)
    assert abs(got - math.log(model.config.vocab_size)) > 1  # far from a uniform guess


def test_a_decoder_run_gets_finite_losses_and_a_record(lm_run, tmp_path):
    table = forgetting.write_forgetting([lm_run], tmp_path, n_texts=16)
    [rec] = json.loads((tmp_path / "forgetting.json").read_text())
    assert rec["probe"] == "webnlg_ref_lm_loss" and rec["probe_items"] == 16
    assert rec["probe_data"].startswith("webnlg test references (16 of ")
    assert all(math.isfinite(rec[k]) and rec[k] > 0 for k in ("before", "after"))
    assert rec["after"] != rec["before"]  # 3 steps at lr 1e-2 moved the model
    assert rec["forgetting"] == rec["after"] - rec["before"]  # loss: higher = forgot
    assert (rec["task"], rec["method"], rec["rank"], rec["task_metric_name"]) \
        == ("e2e", "lora", 2, "valid/BLEU")
    assert math.isfinite(rec["task_metric"])
    csv = pd.read_csv(tmp_path / "forgetting.csv")
    assert list(csv.columns) == forgetting.COLUMNS
    assert csv["after"].iloc[0] == pytest.approx(rec["after"])
    assert table["forgetting"].iloc[0] == rec["forgetting"]


def test_the_lm_probe_must_be_text_the_run_never_trained_on():
    cfg = OmegaConf.create({"task": {"kind": "lm", "name": "webnlg"}})
    with pytest.raises(RunError, match="trained on webnlg: use another --lm-probe than webnlg"):
        forgetting.load_probe(cfg, "unused", None, "webnlg", 1, 0)
