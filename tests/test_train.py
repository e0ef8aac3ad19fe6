"""The shared trainer end to end: run-directory contract, frozen weights, real SST-2 training."""
import json

import pytest
import torch
from safetensors.torch import load_file

from lora_exp.runtime import native_bf16
from lora_exp.trainer import run


def _run(make_cfg, tmp_path, overrides, data_dir):
    cfg = make_cfg([f"data_dir={data_dir}", *overrides])
    return cfg, run(cfg, tmp_path)


def test_run_directory_contract(make_cfg, tmp_path, data_dir):
    cfg, summary = _run(make_cfg, tmp_path, ["model=tiny_bert", "trainer=smoke", "rank=4",
                                             "trainer.eval_every=2"], data_dir)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "ok" and summary["status"] == "ok"
    L, d = 2, 32
    assert saved["params"]["trainable"] == 2 * L * d * 4 * 2  # 2·L·d·r·(wq, wv)
    assert saved["params"]["head"] == (32 * 32 + 32) + (32 * 2 + 2)  # pooler + classifier
    assert saved["params"]["total"] > saved["params"]["trainable"] + saved["params"]["head"]
    dev = saved["metrics"]["dev"]
    assert set(dev) == {"best", "final"} and "accuracy" in dev["best"] and dev["final"]["step"] == 4
    assert saved["wall_s"] > 0 and saved["config"]["method"]["rank"] == 4
    # what the wall time was measured on
    assert saved["machine"]["cpu"] and saved["machine"]["threads"] == torch.get_num_threads()
    assert saved["machine"]["native_bf16"] == native_bf16()
    assert saved["machine"]["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4] and all("dev/accuracy" in r for r in lines)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert len(tensors) == len(config["lora_exp"]["trained_parameters"])
    n_saved = sum(t.numel() for t in tensors.values())
    assert n_saved == saved["params"]["trainable"] + saved["params"]["head"]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_gpt2"])
def test_only_trainable_parameters_move(make_cfg, tmp_path, data_dir, model, monkeypatch):
    """After training, every frozen weight is bit-identical; every trained one moved."""
    import lora_exp.trainer as trainer_mod

    captured = {}
    real_build = trainer_mod.build_model

    def build(*a, **kw):
        m = real_build(*a, **kw)
        captured["model"] = m
        captured["before"] = {n: p.detach().clone() for n, p in m.named_parameters()}
        return m

    monkeypatch.setattr(trainer_mod, "build_model", build)
    _run(make_cfg, tmp_path, [f"model={model}", "trainer=smoke", "trainer.lr=1e-2"], data_dir)
    m, before = captured["model"], captured["before"]
    trained = set(json.loads((tmp_path / "adapter_config.json").read_text())["lora_exp"]["trained_parameters"])
    after = dict(m.named_parameters())
    for n, p in before.items():
        if n in trained:  # the task head: trained by every method
            assert not torch.equal(after[n].detach(), p), f"head parameter {n} did not move"
        else:
            assert torch.equal(after[n].detach(), p), f"frozen weight {n} changed"
    new = [n for n in after if n not in before]
    assert new and set(new) <= trained  # the LoRA factors are the only new parameters
    assert all(not torch.equal(after[n], torch.zeros_like(after[n])) for n in new if ".lora_B." in n)


def test_eval_only_with_init_from(make_cfg, tmp_path, data_dir):
    _, first = _run(make_cfg, tmp_path / "a", ["model=tiny_bert", "trainer=smoke"], data_dir)
    _, again = _run(make_cfg, tmp_path / "b", ["model=tiny_bert", "trainer=smoke",
                                               "trainer.max_steps=0", f"init_from={tmp_path / 'a'}"], data_dir)
    assert again["steps"] == 0
    assert again["metrics"]["dev"]["final"]["accuracy"] == first["metrics"]["dev"]["final"]["accuracy"]


@pytest.mark.slow
def test_embedded_minilm_learns_real_sst2(make_cfg, tmp_path, data_dir):
    """LoRA on the real MiniLM weights and real SST-2 rows: clearly above chance (50%)."""
    _, summary = _run(make_cfg, tmp_path, [
        "trainer.max_steps=300", "trainer.batch_size=16", "trainer.max_eval_samples=400",
        "trainer.progress=false", "seed=0"], data_dir)
    acc = summary["metrics"]["dev"]["final"]["accuracy"]
    assert acc >= 0.75, acc


def test_init_from_a_run_of_another_task_keeps_the_adapter_and_a_fresh_head(make_cfg, tmp_path, data_dir):
    """The paper's MNLI-checkpoint start: a 1-output STS-B run starts RTE (2 labels)."""
    _run(make_cfg, tmp_path / "stsb", ["model=tiny_bert", "trainer=smoke", "task=stsb", "trainer.lr=1e-2"],
         data_dir)
    _, summary = _run(make_cfg, tmp_path / "rte", ["model=tiny_bert", "trainer=smoke", "task=rte",
                                                    "trainer.max_steps=0", f"init_from={tmp_path / 'stsb'}"],
                      data_dir)
    assert summary["status"] == "ok"
    a = load_file(str(tmp_path / "stsb" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "rte" / "adapter_model.safetensors"))
    lora = [k for k in a if ".lora_" in k]
    assert lora and all(torch.equal(a[k], b[k]) for k in lora)  # the adapter came along
    assert a["base_model.model.classifier.weight"].shape != b["base_model.model.classifier.weight"].shape
