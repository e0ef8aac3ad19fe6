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

    class Counting:
        def __getattr__(self, name):
            return getattr(tok, name)

        def __len__(self):
            return len(tok)

        def __call__(self, *a, **kw):
            calls.append(1)
            return tok(*a, **kw)

    first = glue.tokenized_split(cfg.task, str(data_dir), "dev", Counting(), 128)
    second = glue.tokenized_split(cfg.task, str(data_dir), "dev", Counting(), 128)
    assert len(calls) == 1 and first["input_ids"] == second["input_ids"]
    glue.tokenized_split(cfg.task, str(data_dir), "dev", Counting(), 64)  # another max length
    assert len(calls) == 2


def test_subset_is_seeded_and_independent_of_run_seed(make_cfg, data_dir):
    from datasets import Dataset

    from lora_exp.data import subset

    ds = Dataset.from_dict({"x": list(range(100))})
    a, b = subset(ds, 10, 0), subset(ds, 10, 0)
    assert a["x"] == b["x"] and a["x"] != list(range(10)) and subset(ds, 10, 1)["x"] != a["x"]
