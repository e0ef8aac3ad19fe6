"""Crash safety: SIGKILL mid-run, resume, and get exactly the uninterrupted run's result."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent


def _cmd(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "run.py", "model=tiny_bert", "trainer=smoke", "trainer.max_steps=300",
            "trainer.max_train_samples=2000", "trainer.eval_every=100", "trainer.checkpoint_every=10",
            "trainer.lr=1e-3", "method.dropout=0.1", f"data_dir={data_dir}",
            f"hydra.run.dir={run_dir}", *extra]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigkill_then_resume_is_identical(tmp_path, data_dir, precision):
    ref_dir, crash_dir = tmp_path / "uninterrupted", tmp_path / "crashed"
    ref = subprocess.run(_cmd(ref_dir, data_dir, f"trainer.precision={precision}"), cwd=REPO, env=ENV,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = subprocess.Popen(_cmd(crash_dir, data_dir, f"trainer.precision={precision}"), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = crash_dir / "checkpoint" / "state.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # let it get past the checkpoint, into the middle of later steps
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed = json.loads((crash_dir / "summary.json").read_text())
    assert killed["status"] == "running"  # never marked ok
    for f in crash_dir.rglob("*"):  # nothing half-written: every JSON file still parses
        if f.suffix == ".json":
            json.loads(f.read_text())

    res = subprocess.run(_cmd(crash_dir, data_dir, f"trainer.precision={precision}", "resume=true"),
                         cwd=REPO, env=ENV,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout + res.stderr

    a = json.loads((ref_dir / "summary.json").read_text())
    b = json.loads((crash_dir / "summary.json").read_text())
    assert b["status"] == "ok" and a["metrics"] == b["metrics"]
    assert a["precision"] == b["precision"] == precision
    assert (ref_dir / "metrics.jsonl").read_text() == (crash_dir / "metrics.jsonl").read_text()
    wa = load_file(str(ref_dir / "adapter_model.safetensors"))
    wb = load_file(str(crash_dir / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path, data_dir, monkeypatch):
    """A loss that turns NaN at step 5: the run fails with a clear error, the checkpoint of
    step 4 (the last good one) stays, and nothing is marked ok."""
    import lora_exp.trainer as trainer_mod
    from lora_exp.resume import FILE
    from safetensors import safe_open

    real_build = trainer_mod.build_model
    calls = {"n": 0}

    def build(*a, **kw):
        model = real_build(*a, **kw)
        forward = model.forward

        def poisoned(*fa, **fkw):
            out = forward(*fa, **fkw)
            if model.training:
                calls["n"] += 1
                if calls["n"] >= 5:
                    out.loss = out.loss * float("nan")
            return out

        model.forward = poisoned
        return model

    monkeypatch.setattr(trainer_mod, "build_model", build)
    cfg = make_cfg(["model=tiny_bert", "trainer=smoke", "trainer.max_steps=10", "trainer.checkpoint_every=2",
                    f"data_dir={data_dir}"])
    with pytest.raises(FloatingPointError, match="loss is nan at step 4"):
        trainer_mod.run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss is nan" in summary["error"]
    with safe_open(str(tmp_path / FILE), framework="pt") as f:
        assert json.loads(f.metadata()["lora_exp"])["state"]["step"] == 4
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_checkpoints_leave_the_training_as_it_is(make_cfg, tmp_path, data_dir):
    """A sweep may add trainer.checkpoint_every to jobs it has finished without (lora_exp/rerun.py
    does not compare it): writing checkpoints changes no step."""
    import lora_exp.trainer as trainer_mod
    from lora_exp.resume import FILE

    base = ["model=tiny_bert", "trainer=smoke", "trainer.max_steps=12", "trainer.eval_every=4",
            "method.dropout=0.1", f"data_dir={data_dir}"]
    trainer_mod.run(make_cfg(base), tmp_path / "plain")
    trainer_mod.run(make_cfg(base + ["trainer.checkpoint_every=3"]), tmp_path / "checkpointed")
    assert (tmp_path / "checkpointed" / FILE).is_file() and not (tmp_path / "plain" / FILE).exists()
    assert (tmp_path / "plain" / "metrics.jsonl").read_text() == \
        (tmp_path / "checkpointed" / "metrics.jsonl").read_text()


def _killed_while_evaluating(monkeypatch, trainer_mod, cfg, run_dir: Path, step: int,
                             evaluated: list[int]) -> dict:
    """Run ``cfg`` and kill it the first time it evaluates ``step``; return the state its checkpoint
    holds. Every evaluation begun, in this run and in later ones, is appended to ``evaluated``."""
    from lora_exp.resume import FILE
    from safetensors import safe_open

    class Killed(trainer_mod.Evaluator):
        def __call__(self, model, state):
            evaluated.append(state.step)
            if state.step == step and evaluated.count(step) == 1:
                raise KeyboardInterrupt("killed while evaluating")
            return super().__call__(model, state)

    monkeypatch.setattr(trainer_mod, "Evaluator", Killed)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.run(cfg, run_dir)
    with safe_open(str(run_dir / FILE), framework="pt") as f:
        return json.loads(f.metadata()["lora_exp"])["state"]


def test_a_kill_during_an_evaluation_resumes_at_its_step(make_cfg, tmp_path, data_dir, monkeypatch):
    """The checkpoint of an evaluation step is written before the evaluation: a run killed while
    it evaluates (an NLG run decoding its test set) resumes there, evaluates, and ends as the
    uninterrupted run, without training the steps since the previous checkpoint again."""
    import lora_exp.trainer as trainer_mod

    base = ["model=tiny_bert", "trainer=smoke", "trainer.max_steps=12", "trainer.eval_every=4",
            "trainer.checkpoint_every=4", "method.dropout=0.1", f"data_dir={data_dir}"]
    trainer_mod.run(make_cfg(base), tmp_path / "plain")

    real = trainer_mod.Evaluator
    saved = _killed_while_evaluating(monkeypatch, trainer_mod, make_cfg(base), tmp_path / "killed", 8, [])
    assert saved["step"] == 8 and saved["wall_s"] > 0
    monkeypatch.setattr(trainer_mod, "Evaluator", real)
    resumed = trainer_mod.run(make_cfg(base + ["resume=true"]), tmp_path / "killed")
    # the run's recorded cost includes the first invocation's work up to the checkpoint
    assert resumed["wall_s_before_resume"] == round(saved["wall_s"], 3)
    assert resumed["wall_s"] > resumed["wall_s_before_resume"]
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["wall_s_before_resume"] == 0
    assert (tmp_path / "plain" / "metrics.jsonl").read_text() == \
        (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert [r["step"] for r in map(json.loads, (tmp_path / "plain" / "metrics.jsonl").open())] == [4, 8, 12]


def test_an_evaluation_done_before_a_kill_is_not_repeated(make_cfg, tmp_path, data_dir, monkeypatch):
    """At a step that both checkpoints and evaluates, the checkpoint is written again after the
    evaluation: a run killed later (here while evaluating step 12, with step 8 its last
    checkpoint) resumes with step 8's evaluation kept, evaluates only step 12, and ends as the
    uninterrupted run. An NLG evaluation of the whole test set takes as long as hundreds of steps."""
    import lora_exp.trainer as trainer_mod

    base = ["model=tiny_bert", "trainer=smoke", "trainer.max_steps=12", "trainer.eval_every=4",
            "trainer.checkpoint_every=8", "method.dropout=0.1", f"data_dir={data_dir}"]
    trainer_mod.run(make_cfg(base), tmp_path / "plain")

    evaluated = []
    saved = _killed_while_evaluating(monkeypatch, trainer_mod, make_cfg(base), tmp_path / "killed", 12,
                                     evaluated)
    assert saved["step"] == 8 and [r["step"] for r in saved["history"]] == [4, 8]
    assert saved["n_loss"] == 0  # the state after the evaluation, as the loop continues from it
    trainer_mod.run(make_cfg(base + ["resume=true"]), tmp_path / "killed")
    assert evaluated == [4, 8, 12, 12]  # step 8 is not evaluated again
    assert (tmp_path / "plain" / "metrics.jsonl").read_text() == \
        (tmp_path / "killed" / "metrics.jsonl").read_text()
    plain = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "adapter_model.safetensors"))
    assert plain.keys() == resumed.keys() and all(torch.equal(plain[k], resumed[k]) for k in plain)
