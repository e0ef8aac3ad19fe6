"""The NLG pipeline on tiny GPT-2 (random weights, MiniLM's BERT vocabulary): LM rows with the
context masked, LM collation, the label-smoothed loss, decoding, and one run through the trainer."""
import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import LogitsProcessorList

import lora_exp.trainer as trainer_mod
from lora_exp import nlg_metrics
from lora_exp.data import IGNORE_INDEX, collate
from lora_exp.generate import (DecodeOptions, GeneratedNoRepeatNGram, generate, greedy_unbatched,
                                left_pad)
from lora_exp.lora import lora_modules
from lora_exp.methods import apply_method
from lora_exp.models import build_model, load_tokenizer
from lora_exp.params import set_trainable
from lora_exp.errors import ConfigError
from lora_exp.spec import ModelSpec
from lora_exp.tasks import nlg
from lora_exp.tasks.nlg_data import NLGExample

RANK = 2
E2E_KEYS = {"BLEU", "nist_nltk", "METEOR", "ROUGE_L", "CIDEr"}
EXAMPLES = [NLGExample("name : Alimentum | area : city centre", "Alimentum is in the city centre ."),
            NLGExample("name : Aromi | food : Chinese", "Aromi serves Chinese food .")]


@pytest.fixture
def tokenizer(make_cfg):
    return load_tokenizer(make_cfg(["model=tiny_gpt2"]).model)  # MiniLM's BERT vocabulary


def _lm(make_cfg, overrides=()):
    cfg = make_cfg(["model=tiny_gpt2", "task=e2e", f"rank={RANK}", *overrides])
    model = build_model(cfg.model, "lm", 0, seed=0)
    return cfg, model


def test_separator_and_end_of_a_bert_vocabulary(tokenizer):
    # No BOS or EOS in BERT vocabularies: [SEP] separates and ends (GPT-2 uses <|endoftext|> twice).
    assert nlg.special_ids(tokenizer) == (tokenizer.sep_token_id, tokenizer.sep_token_id) == (102, 102)


def test_labels_mask_exactly_the_context_and_separator(tokenizer):
    rows = nlg.encode_rows(tokenizer, EXAMPLES, max_length=64)
    for ex, ids, labels, plen in zip(EXAMPLES, rows["input_ids"], rows["labels"], rows["prompt_len"]):
        context = tokenizer(ex.context, add_special_tokens=False)["input_ids"]
        completion = tokenizer(" " + ex.completion, add_special_tokens=False)["input_ids"]
        assert ids == context + [102] + completion + [102]
        assert plen == len(context) + 1
        assert labels == [IGNORE_INDEX] * plen + completion + [102]


def test_rows_longer_than_max_length_are_cut_at_the_end(tokenizer):
    rows = nlg.encode_rows(tokenizer, EXAMPLES[:1], max_length=12)
    assert len(rows["input_ids"][0]) == len(rows["labels"][0]) == 12
    assert rows["labels"][0][:rows["prompt_len"][0]] == [IGNORE_INDEX] * rows["prompt_len"][0]


def test_collate_pads_per_token_labels_with_ignore_index(tokenizer):
    ds = Dataset.from_dict(nlg.encode_rows(tokenizer, EXAMPLES, max_length=64))
    batch = collate(ds, np.array([0, 1]), pad_id=0)
    lengths = [len(r) for r in ds["input_ids"]]
    B, T = batch["input_ids"].shape
    assert (B, T) == (2, max(lengths)) and batch["labels"].shape == (B, T)
    assert batch["prompt_len"].tolist() == ds["prompt_len"]
    for i, n in enumerate(lengths):
        assert batch["labels"][i, n:].eq(IGNORE_INDEX).all() and batch["attention_mask"][i, n:].eq(0).all()
        assert batch["labels"][i, :n].tolist() == ds["labels"][i]
        # -100 exactly on the prompt and the padding: everything else is a completion token.
        assert batch["labels"][i].ne(IGNORE_INDEX).sum() == n - ds["prompt_len"][i]


def test_collate_keeps_row_labels_as_before():
    cls = Dataset.from_dict({"input_ids": [[1, 2, 3], [4]], "labels": [1, 0]})
    reg = Dataset.from_dict({"input_ids": [[1, 2, 3], [4]], "labels": [0.5, 2.0]})
    a, b = collate(cls, np.array([0, 1]), 0), collate(reg, np.array([0, 1]), 0)
    assert a["labels"].dtype == torch.long and a["labels"].tolist() == [1, 0]
    assert b["labels"].dtype == torch.float32 and b["labels"].tolist() == [0.5, 2.0]
    assert "prompt_len" not in a


def test_label_smoothing_only_while_training(make_cfg, tokenizer):
    cfg, model = _lm(make_cfg)
    ds = Dataset.from_dict(nlg.encode_rows(tokenizer, EXAMPLES, max_length=64))
    batch = collate(ds, np.array([0, 1]), pad_id=0)
    model.eval()
    plain = model(**{k: v for k, v in batch.items() if k != "prompt_len"}).loss
    nlg.prepare_model(model, cfg.task)  # task.label_smoothing = 0.1 (Table 11, E2E)
    assert torch.allclose(model(**batch).loss, plain)  # eval: plain CE; prompt_len dropped
    model.train()
    torch.manual_seed(0)
    logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "prompt_len")}).logits
    torch.manual_seed(0)
    smoothed = model(**batch).loss
    shift = batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 shift.reshape(-1), label_smoothing=0.1)
    torch.testing.assert_close(smoothed, expected)
    assert not torch.allclose(smoothed, plain)


def test_no_repeat_ngram_ignores_the_prompt():
    # Prompt [5 6 7] then generated [5 6]: HF's processor would ban 7 (the prompt's 5 6 7);
    # gpt2_beam.py counts generated tokens only, so only a repeat inside [5 6 ...] is banned.
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    scores = torch.zeros(1, 10)
    assert GeneratedNoRepeatNGram(3, prompt_width=3)(ids, scores.clone()).isfinite().all()
    generated = torch.tensor([[9, 9, 5, 6, 7, 5, 6]])  # prompt [9 9], generated 5 6 7 5 6
    banned = GeneratedNoRepeatNGram(3, prompt_width=2)(generated, scores.clone())
    assert torch.isinf(banned[0, 7]) and banned[0].isfinite().sum() == 9


def test_left_padded_batches_decode_like_single_prompts(make_cfg, tokenizer):
    _, model = _lm(make_cfg)
    model.eval()
    prompts = nlg.encode_prompts(tokenizer, [ex.context for ex in EXAMPLES] + ["name : Cocum"])
    ids, mask = left_pad(prompts, 0)
    assert mask.sum(1).tolist() == [len(p) for p in prompts] and ids[2, 0] == 0
    for greedy in (True, False):
        opts = DecodeOptions(num_beams=3, length_penalty=0.9, no_repeat_ngram_size=4,
                             max_new_tokens=6, batch_size=3, greedy=greedy)
        batched = generate(model, tokenizer, prompts, opts, end_id=102, device=torch.device("cpu"))
        single = [generate(model, tokenizer, [p], opts, end_id=102, device=torch.device("cpu"))[0]
                  for p in prompts]
        assert batched == single and all(batched)


def test_lora_keeps_the_k_slice_after_training(make_cfg, tokenizer):
    """Trained LoRA on c_attn changes q and v, never k (loralib's enable_lora=[T, F, T])."""
    cfg, model = _lm(make_cfg)
    base = {n: m.weight.detach().clone() for n, m in model.named_modules() if n.endswith("c_attn")}
    spec = ModelSpec.from_cfg(cfg.model, "lm")
    trainable = apply_method(model, spec, cfg.method).trainable
    set_trainable(model, set(trainable))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ds = Dataset.from_dict(nlg.encode_rows(tokenizer, EXAMPLES, max_length=64))
    batch = {k: v for k, v in collate(ds, np.array([0, 1]), 0).items() if k != "prompt_len"}
    for _ in range(3):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    d = cfg.model.architecture.hidden_size
    x = torch.randn(2, 5, d)
    for path, mod in lora_modules(model):
        assert not torch.equal(mod.lora_B["wq"].weight, torch.zeros_like(mod.lora_B["wq"].weight))
        with torch.no_grad():
            q, k, v = mod(x).split(d, dim=-1)
            rq, rk, rv = (x @ base[path] + mod.bias).split(d, dim=-1)  # Conv1D: x @ W + b
        assert torch.equal(k, rk)
        assert not torch.allclose(q, rq) and not torch.allclose(v, rv)


def test_lora_e2e_run_writes_predictions_and_five_metrics(make_cfg, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path / "cache"))
    # METEOR, ROUGE-L and CIDEr run two JVMs (~12 s on a busy CPU): test_nlg_metrics checks
    # them; here BLEU and nist_nltk are real and the Java part returns fixed fractions.
    coco = {"METEOR": 0.25, "ROUGE_L": 0.5, "CIDEr": 0.75}
    monkeypatch.setattr(nlg_metrics, "_coco_scores", lambda preds, refs: coco)
    train = tmp_path / "train.txt"
    train.write_text("".join((data_dir / "e2e" / "train.txt").read_text().splitlines(True)[:32]))
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke",
                    f"rank={RANK}", f"task.files.train={train}", "trainer.max_steps=3",
                    "trainer.max_eval_samples=4", "task.decoding.greedy=true",
                    "task.decoding.max_new_tokens=4", "trainer.eval_every=2"])
    out = tmp_path / "run"
    summary = trainer_mod.run(cfg, out)
    assert summary["status"] == "ok"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["params"]["trainable"] == 2 * 2 * 32 * RANK * 2  # 2·L·d·r·(wq, wv)
    final = saved["metrics"]["valid"]["final"]
    assert E2E_KEYS | {"loss"} <= set(final) and final["step"] == 3
    assert (final["METEOR"], final["ROUGE_L"], final["CIDEr"]) == (25.0, 50.0, 0.75)  # paper scales
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [2, 3]
    assert "valid/loss" in history[0] and "valid/BLEU" not in history[0]  # decoding at the end only
    pred = (out / "predictions" / "valid.pred.txt").read_text().splitlines()
    src = (out / "predictions" / "valid.src.txt").read_text().splitlines()
    groups = (out / "predictions" / "valid.ref.txt").read_text().rstrip("\n").split("\n\n")
    assert len(pred) == len(src) == len(groups) == 4
    valid = [[" ".join(x.split()) for x in line.split("||")]
             for line in (data_dir / "e2e" / "valid.txt").open()]
    for mr, refs in zip(src, groups):  # every reference of each input, in file order
        assert refs.splitlines() == [ref for ctx, ref in valid if ctx == mr]


def test_the_evaluation_schedule_changes_no_trained_weight(make_cfg, tmp_path, data_dir, monkeypatch):
    # A re-training that only decodes differently (Table 3's beam rows) may skip the loss curve
    # the first run recorded: evaluating must not move the random stream LoRA's dropout draws.
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nlg_metrics, "_coco_scores", lambda preds, refs: {"METEOR": 0.25, "ROUGE_L": 0.5,
                                                                          "CIDEr": 0.75})
    weights, losses = {}, {}
    for every in (2, 6):
        torch.manual_seed(0)
        cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke",
                        f"rank={RANK}", "method.dropout=0.1", "trainer.max_steps=6",
                        f"trainer.eval_every={every}", "trainer.max_eval_samples=4",
                        "task.eval_splits=[test]", "task.decoding.greedy=true",
                        "task.decoding.max_new_tokens=3"])
        summary = trainer_mod.run(cfg, tmp_path / str(every))
        weights[every] = load_file(tmp_path / str(every) / "adapter_model.safetensors")
        losses[every] = summary["metrics"]["test"]["final"]["loss"]
    assert weights[2].keys() == weights[6].keys() and len(weights[2]) == 2 * 2 * 2  # L · (q, v) · (A, B)
    assert all(torch.equal(weights[2][k], weights[6][k]) for k in weights[2])
    assert losses[2] == losses[6]


def test_beam_search_also_decodes_greedily_from_the_same_weights(make_cfg, tmp_path, data_dir,
                                                                  monkeypatch):
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nlg_metrics, "_coco_scores", lambda preds, refs: {"METEOR": 0.25, "ROUGE_L": 0.5,
                                                                          "CIDEr": 0.75})
    base = [f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke", f"rank={RANK}",
            "trainer.max_steps=0", "trainer.max_eval_samples=3", "task.decoding.max_new_tokens=6",
            "task.decoding.num_beams=3"]
    beam = trainer_mod.run(make_cfg(base + ["task.decoding.also_greedy=true"]), tmp_path / "beam")
    greedy = trainer_mod.run(make_cfg(base + ["task.decoding.greedy=true"]), tmp_path / "greedy")
    both, alone = beam["metrics"]["valid"]["final"], greedy["metrics"]["valid"]["final"]
    assert {k: both[f"greedy_{k}"] for k in E2E_KEYS} == {k: alone[k] for k in E2E_KEYS}
    assert (tmp_path / "beam" / "predictions" / "valid_greedy.pred.txt").read_text() == \
        (tmp_path / "greedy" / "predictions" / "valid.pred.txt").read_text()
    assert (tmp_path / "beam" / "predictions" / "valid.pred.txt").is_file()  # the beam's own
    with pytest.raises(ConfigError, match=r"task\.decoding\.also_greedy=True is invalid: the run "
                                          r"already decodes greedily"):
        trainer_mod.run(make_cfg(base + ["task.decoding.greedy=true", "task.decoding.also_greedy=true"]),
                        tmp_path / "both")


def test_dart_train_is_a_config_error_before_any_work(make_cfg, tmp_path, data_dir, monkeypatch):
    def no_model(*a, **kw):
        raise AssertionError("the model was built before the data check")

    monkeypatch.setattr(trainer_mod, "build_model", no_model)
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=dart", "trainer=smoke"])
    with pytest.raises(ConfigError, match=r"task\.files\.train=.*dart-v1\.1\.1-full-train\.json.*"
                                          r"holds \[.*dart-v1\.1\.1-full-dev\.json.*not in the mirror"):
        trainer_mod.run(cfg, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_dart_evaluates_without_its_train_split(make_cfg, tmp_path, data_dir, monkeypatch):
    # trainer.max_steps=0 (e.g. with init_from) needs only the evaluation split.
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path / "cache"))
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=dart", "trainer=smoke",
                    "trainer.max_steps=0", "trainer.max_eval_samples=3", "task.decoding.greedy=true",
                    "task.decoding.max_new_tokens=4"])
    summary = trainer_mod.run(cfg, tmp_path / "run")
    assert summary["status"] == "ok" and summary["steps"] == 0
    assert "bleu" in summary["metrics"][cfg.task.eval_splits[0]]["final"]  # DART: one BLEU
    assert len((tmp_path / "run" / "predictions" / f"{cfg.task.eval_splits[0]}.pred.txt")
               .read_text().splitlines()) == 3


def test_prefix_methods_with_beam_search_fail_before_training(make_cfg, data_dir, tmp_path):
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke",
                    "method=prefix_embed", "method.l_p=2", "method.l_i=1"])
    with pytest.raises(ConfigError, match=r"task\.decoding\.greedy=False.*valid: \[True\]"):
        trainer_mod.run(cfg, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unbatched_greedy_loop_decodes_like_generate(make_cfg, tokenizer):
    # The loop used for prefix methods, checked on a model generate can decode too.
    _, model = _lm(make_cfg)
    model.eval()
    opts = DecodeOptions(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=2,
                         max_new_tokens=8, batch_size=1, greedy=True)
    for prompt in nlg.encode_prompts(tokenizer, [ex.context for ex in EXAMPLES]):
        ids = torch.tensor([prompt])
        hf = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            num_beams=1, max_new_tokens=8, eos_token_id=102, pad_token_id=0,
                            logits_processor=LogitsProcessorList([GeneratedNoRepeatNGram(2, len(prompt))]))
        expected = hf[0, len(prompt):].tolist()
        if 102 in expected:
            expected = expected[:expected.index(102)]
        assert expected  # a non-trivial comparison: some tokens were generated
        assert greedy_unbatched(model, prompt, opts, end_id=102, device=torch.device("cpu")) == expected


@pytest.mark.parametrize("method", ["prefix_layer", "prefix_embed"])
def test_prefix_method_e2e_run_decodes_greedily(method, make_cfg, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nlg_metrics, "_coco_scores",  # the JVM metrics: test_nlg_metrics
                        lambda preds, refs: {"METEOR": 0.25, "ROUGE_L": 0.5, "CIDEr": 0.75})
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke",
                    f"method={method}", "method.l_p=2", "method.l_i=2", "trainer.max_steps=2",
                    "trainer.max_eval_samples=3", "task.decoding.greedy=true",
                    "task.decoding.max_new_tokens=5"])
    summary = trainer_mod.run(cfg, tmp_path / "run")
    assert summary["status"] == "ok"
    assert E2E_KEYS <= set(summary["metrics"]["valid"]["final"])
    pred = (tmp_path / "run" / "predictions" / "valid.pred.txt").read_text().splitlines()
    assert len(pred) == 3


@pytest.mark.parametrize("override,needle", [
    ("task.decoding.num_beams=0", r"task\.decoding\.num_beams=0.*>= 1"),
    ("task.decoding.precision=bf16", r"task\.decoding\.precision='bf16' is invalid.*valid: \['fp32', 'train'\]")])
def test_bad_decoding_value_is_a_config_error(make_cfg, data_dir, tmp_path, override, needle):
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke", override])
    with pytest.raises(ConfigError, match=needle):
        trainer_mod.run(cfg, tmp_path)


@pytest.mark.parametrize("decoding,expected", [("fp32", None), ("train", torch.bfloat16)])
def test_decoding_precision_follows_task_decoding_precision(make_cfg, tmp_path, data_dir, monkeypatch,
                                                            decoding, expected):
    """Generation runs in fp32 unless task.decoding.precision=train asks for the training autocast."""
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nlg_metrics, "_coco_scores",
                        lambda preds, refs: {"METEOR": 0.25, "ROUGE_L": 0.5, "CIDEr": 0.75})
    seen = []

    def fake_generate(model, tokenizer, prompts, options, **_):
        on = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if on else None)
        return ["a sentence"] * len(prompts)
    monkeypatch.setattr(nlg, "generate", fake_generate)
    cfg = make_cfg([f"data_dir={data_dir}", "model=tiny_gpt2", "task=e2e", "trainer=smoke",
                    "trainer.precision=bf16", "trainer.max_steps=1", "trainer.max_eval_samples=2",
                    "task.decoding.greedy=true", f"task.decoding.precision={decoding}"])
    assert trainer_mod.run(cfg, tmp_path / "run")["status"] == "ok"
    assert seen == [expected]
