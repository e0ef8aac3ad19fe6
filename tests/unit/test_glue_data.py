"""GLUE readers: the mirror's TSVs give HF nyu-mll/glue's rows and label ids; tokenising is cached."""
import pandas as pd
import pytest

from lora_exp.tasks import glue

# (task, split file in the mirror, HF parquet split) for every task whose mirror has both.
PAIRS = [("sst2", "dev", "validation"), ("cola", "dev", "validation"), ("mrpc", "dev", "validation"),
         ("rte", "dev", "validation"), ("stsb", "dev", "validation"), ("qnli", "dev", "validation")]


@pytest.mark.parametrize("task,split,hf_split", PAIRS)
def test_mirror_matches_hf_parquet(make_cfg, data_dir, task, split, hf_split):
    cfg = make_cfg([f"task={task}", f"data_dir={data_dir}"])
    texts, labels, _ = glue.load_split(cfg.task, str(data_dir), split)
    hf = pd.read_parquet(data_dir / task / "hf_parquet" / f"{hf_split}.parquet")
    assert len(labels) == len(hf)
    if cfg.task.kind == "reg":
        assert abs(labels - hf["label"].to_numpy()).max() < 1e-5
    else:
        assert (labels == hf["label"].to_numpy()).all()  # same label ids as the hub
    first_field = cfg.task.hub.text_fields[0]
    same = sum(a.strip() == b.strip() for a, b in zip(texts[0], hf[first_field]))
    assert same / len(hf) > 0.99


def test_tokenised_split_is_cached(make_cfg, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path))
    from lora_exp.models import load_tokenizer

    cfg = make_cfg(["task=rte", f"data_dir={data_dir}"])
    tok = load_tokenizer(cfg.model)
    calls = []
    real_encode = glue.encode

    def counting(*a, **kw):
        calls.append(1)
        return real_encode(*a, **kw)

    monkeypatch.setattr(glue, "encode", counting)
    first = glue.tokenized_split(cfg.task, str(data_dir), "dev", tok, 128)
    second = glue.tokenized_split(cfg.task, str(data_dir), "dev", tok, 128)
    assert len(calls) == 1 and first["input_ids"] == second["input_ids"]
    glue.tokenized_split(cfg.task, str(data_dir), "dev", tok, 64)  # another max length
    assert len(calls) == 2


def test_subset_is_seeded_and_independent_of_run_seed(make_cfg, data_dir):
    from datasets import Dataset

    from lora_exp.data import subset

    ds = Dataset.from_dict({"x": list(range(100))})
    a, b = subset(ds, 10, 0), subset(ds, 10, 0)
    assert a["x"] == b["x"] and a["x"] != list(range(10)) and subset(ds, 10, 1)["x"] != a["x"]


@pytest.mark.parametrize("task,max_length", [("sst2", 128), ("sst2", 12), ("mrpc", 128), ("mrpc", 24)])
def test_encode_gives_the_tokenizer_calls_ids(make_cfg, data_dir, task, max_length):
    """The backend path gives exactly ``tokenizer(*texts, truncation=True, max_length=...)``'s
    ids, for single sentences and pairs, truncated or not, and leaves the tokenizer as it was."""
    from lora_exp.models import load_tokenizer

    cfg = make_cfg([f"task={task}", f"data_dir={data_dir}"])
    tok = load_tokenizer(cfg.model)
    texts, _, _ = glue.load_split(cfg.task, str(data_dir), "dev")
    texts = [field[:300] for field in texts]
    before = (tok.backend_tokenizer.truncation, tok.backend_tokenizer.padding)
    ours = glue.encode(tok, texts, max_length)
    assert (tok.backend_tokenizer.truncation, tok.backend_tokenizer.padding) == before
    ref = tok(*texts, truncation=True, max_length=max_length)
    assert tok.is_fast and set(ours) == {"input_ids", "token_type_ids"}
    assert ours["input_ids"] == ref["input_ids"] and ours["token_type_ids"] == ref["token_type_ids"]
    assert max(map(len, ours["input_ids"])) <= max_length
    if max_length < 32:  # the short limits do truncate, so truncation is compared too
        assert sum(len(ids) == max_length for ids in ours["input_ids"]) > 100
