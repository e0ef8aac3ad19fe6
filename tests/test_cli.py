"""`python run.py ...` as a user types it: dry-run counts, bad input, a multirun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], tmp_path: Path, multirun: bool = False, timeout: int = 300):
    out = tmp_path / "out"
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    cmd = [sys.executable, "run.py", *(["-m"] if multirun else []), *args, f"{key}={out}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, out


@pytest.mark.parametrize("args,expected", [
    (["model=roberta_base", "rank=8", "task=mnli"], 294_912),
    (["model=roberta_large", "rank=8", "task=mnli"], 786_432),
    (["model=deberta_v2_xxlarge", "rank=16", "task=mnli"], 4_718_592),
    (["model=gpt2_medium", "rank=4", "task=sst2"], 393_216),
    (["model=mpnet_base", "rank=8", "task=sst2"], 294_912),
])
def test_dry_run_counts_match_the_paper(make_cfg, tmp_path, args, expected):
    """docs/paper.md#counts: 2·L̂·d·r on skeletons built from the configs (meta device, no download)."""
    from lora_exp.trainer import run

    summary = run(make_cfg(["method=lora", "dry_run=true", *args]), tmp_path)
    assert summary["status"] == "ok" and summary["params"]["trainable"] == expected


def test_dry_run_from_the_command_line(tmp_path):
    proc, out = run_cli(["model=roberta_base", "method=lora", "rank=8", "task=mnli", "dry_run=true"],
                        tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trainable (no head): 294,912" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["params"]["trainable"] == 294_912


@pytest.mark.parametrize("args,needles", [
    (["task=nosuch"], ["task/nosuch", "sst2", "rte"]),
    (["rank=0"], ["rank=0", "an integer in [1, 32]"]),
    (["rank=-3"], ["rank=-3", "an integer in [1, 32]"]),
    (["method.targets=[wz]"], ["method.targets='wz'", "wq", "wv"]),
    (["data_dir=/nonexistent"], ["data_dir='/nonexistent'"]),
    (["task=rte", "DATA_EMPTY"], ["task.files.train", "rte", "holds"]),
])
def test_bad_input_fails_early_and_clearly(tmp_path, args, needles):
    if "DATA_EMPTY" in args:  # a data_dir that exists but lacks the task's folder
        empty = tmp_path / "mirror"
        (empty / "sst2").mkdir(parents=True)
        args = [a for a in args if a != "DATA_EMPTY"] + [f"data_dir={empty}"]
    proc, out = run_cli(["model=tiny_bert", "trainer=smoke", *args], tmp_path)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    for needle in needles:
        assert needle in text, (needle, text[-1500:])
    assert "Traceback" not in proc.stderr  # a short message, not a stack trace
    summary = out / "summary.json"
    if summary.exists():
        assert json.loads(summary.read_text())["status"] == "failed"


def test_multirun_over_ranks(tmp_path, data_dir):
    proc, out = run_cli(["method=lora", "rank=1,2", "task=rte", "model=tiny_bert",
                         "trainer=smoke", f"data_dir={data_dir}"], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summaries = sorted(out.glob("*/summary.json"))
    assert len(summaries) == 2
    for path, rank in zip(summaries, (1, 2)):
        s = json.loads(path.read_text())
        assert s["status"] == "ok" and s["params"]["trainable"] == 2 * 2 * 32 * rank * 2
        assert (path.parent / "metrics.jsonl").is_file() and (path.parent / ".hydra").is_dir()
        assert (path.parent / "adapter_model.safetensors").is_file()


def test_multirun_isolates_a_failing_job(tmp_path, data_dir):
    """4 jobs, one with a bad rank: 3 ok, 1 failed with its reason, and the command exits 1."""
    proc, out = run_cli(["model=tiny_bert", "trainer=smoke", "rank=1,2,4,64", f"data_dir={data_dir}"],
                        tmp_path, multirun=True)
    assert proc.returncode != 0
    summaries = {json.loads(p.read_text())["rank"]: json.loads(p.read_text())
                 for p in out.glob("*/summary.json")}
    assert sorted(summaries) == [1, 2, 4, 64]
    assert [summaries[r]["status"] for r in (1, 2, 4)] == ["ok"] * 3
    assert summaries[64]["status"] == "failed" and "rank=64" in summaries[64]["error"]
    assert "1 job(s) of the sweep failed" in proc.stderr


def test_joblib_launcher_runs_jobs_in_separate_worker_processes(tmp_path, data_dir):
    """Two workers, one job each. Whether their runs overlap in time is up to the scheduler
    (a loaded machine can start the second worker after the first job ends), so it is not asserted."""
    proc, out = run_cli(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=tiny_bert",
                         "trainer=smoke", "rank=1,2", f"data_dir={data_dir}"], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    assert len(runs) == 2 and all(r["status"] == "ok" for r in runs)
    assert runs[0]["pid"] != runs[1]["pid"]


def test_run_py_leaves_the_collector_on_with_the_imports_frozen():
    """run.py keeps the cyclic collector off during its imports and then freezes what they built;
    a run's own cyclic garbage must still be collected, so the collector ends up on."""
    code = "import gc, run; print(gc.isenabled(), gc.get_freeze_count())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    enabled, frozen = proc.stdout.split()
    assert enabled == "True"
    assert int(frozen) > 100_000  # torch and transformers alone build several hundred thousand


def test_keeping_freed_memory_changes_no_number(tmp_path, data_dir):
    """trainer.keep_freed_memory changes where glibc's allocator gets memory, in the process it
    sets: each setting in a process of its own gives the same metrics, bit for bit, and the
    summary records whether the setting applied (it does under glibc: Linux here)."""
    metrics, kept = {}, {}
    for flag in ("false", "true"):
        proc, out = run_cli(["model=tiny_bert", "task=rte", "trainer=smoke", "trainer.eval_every=2",
                             f"trainer.keep_freed_memory={flag}", f"data_dir={data_dir}"],
                            tmp_path / flag)
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics[flag] = (out / "metrics.jsonl").read_text()
        kept[flag] = json.loads((out / "summary.json").read_text())["kept_freed_memory"]
    assert metrics["true"] == metrics["false"] and metrics["true"].count("\n") == 2
    assert kept == {"false": False, "true": sys.platform.startswith("linux")}
