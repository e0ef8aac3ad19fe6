"""Re-running a sweep into the same directory: finished jobs are skipped, interrupted jobs with a
checkpoint resume, the rest run again (lora_exp/rerun.py)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_exp import rerun

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def _write(run_dir: Path, status: str, config: dict, checkpoint: bool = False, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "config": config, **fields}))
    if checkpoint:
        (run_dir / rerun.CHECKPOINT_FILE).parent.mkdir(parents=True)
        (run_dir / rerun.CHECKPOINT_FILE).write_bytes(b"")


def test_decide_reads_the_earlier_run(tmp_path):
    cfg = {"rank": 4, "trainer": {"lr": 0.001}, "resume": False}
    assert rerun.decide(tmp_path / "none", cfg)[0] == rerun.RUN
    _write(tmp_path / "ok", "ok", cfg)
    assert rerun.decide(tmp_path / "ok", cfg) == (rerun.SKIP, "ok under the same config")
    assert rerun.decide(tmp_path / "ok", {**cfg, "resume": True})[0] == rerun.SKIP  # how, not what
    checkpointed = {**cfg, "trainer": {"lr": 0.001, "checkpoint_every": 200}}
    assert rerun.decide(tmp_path / "ok", checkpointed)[0] == rerun.SKIP
    for keep in (True, False):  # the allocator's setting changes no number (tests/test_cli.py)
        allocator = {**cfg, "trainer": {"lr": 0.001, "keep_freed_memory": keep}}
        assert rerun.decide(tmp_path / "ok", allocator)[0] == rerun.SKIP
    # Another grid swept into the folder: its finished run is not overwritten.
    action, reason = rerun.decide(tmp_path / "ok", {**cfg, "trainer": {"lr": 0.01}})
    assert action == rerun.CONFLICT and "trainer.lr: 0.001 there, 0.01 here" in reason
    _write(tmp_path / "failed_other", "failed", cfg)
    action, reason = rerun.decide(tmp_path / "failed_other", {**cfg, "rank": 8})
    assert action == rerun.RUN and "(rank)" in reason
    _write(tmp_path / "killed", "running", cfg, checkpoint=True)
    assert rerun.decide(tmp_path / "killed", cfg)[0] == rerun.RESUME
    _write(tmp_path / "killed_early", "running", cfg)
    assert rerun.decide(tmp_path / "killed_early", cfg)[0] == rerun.RUN
    _write(tmp_path / "failed", "failed", cfg, checkpoint=True)
    assert rerun.decide(tmp_path / "failed", cfg) == (rerun.RUN, "the earlier run is failed")


def test_an_option_added_later_at_its_old_behaviour_is_the_same_config(tmp_path):
    """A run made before ``task.decoding.also_greedy`` existed decoded only one way: it matches a
    config with the option off, and only off."""
    old = {"task": {"decoding": {"greedy": True}}}
    _write(tmp_path / "ok", "ok", old)
    added = {"task": {"decoding": {"greedy": True, "also_greedy": False}}}
    assert rerun.decide(tmp_path / "ok", added)[0] == rerun.SKIP
    on = {"task": {"decoding": {"greedy": True, "also_greedy": True}}}
    assert rerun.decide(tmp_path / "ok", on)[0] == rerun.CONFLICT
    # any other key a run lacks still makes it another config's
    other = {"task": {"decoding": {"greedy": True, "num_beams": 10}}}
    assert rerun.decide(tmp_path / "ok", other)[0] == rerun.CONFLICT


@pytest.fixture
def live_pid():
    """The pid of a process alive for the test (standing in for a run still going)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_run_still_going_is_not_run_twice_into_its_folder(tmp_path, live_pid):
    cfg = {"rank": 4, "trainer": {"lr": 0.001}}
    here = socket.gethostname()
    _write(tmp_path / "going", "running", cfg, checkpoint=True, pid=live_pid, host=here)
    action, reason = rerun.decide(tmp_path / "going", cfg)
    assert action == rerun.BUSY and f"process {live_pid} on this machine" in reason
    # whatever config the other process runs: its folder is not written by a second one
    assert rerun.decide(tmp_path / "going", {**cfg, "rank": 8})[0] == rerun.BUSY
    # its process gone: interrupted, resumed from its checkpoint
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    _write(tmp_path / "killed", "running", cfg, checkpoint=True, pid=int(dead), host=here)
    assert rerun.decide(tmp_path / "killed", cfg)[0] == rerun.RESUME
    # a pid on another machine, or a run that recorded no host, says nothing about this machine
    _write(tmp_path / "elsewhere", "running", cfg, checkpoint=True, pid=live_pid, host=here + "-other")
    assert rerun.decide(tmp_path / "elsewhere", cfg)[0] == rerun.RESUME
    _write(tmp_path / "old", "running", cfg, checkpoint=True, pid=live_pid)
    assert rerun.decide(tmp_path / "old", cfg)[0] == rerun.RESUME
    # the run started before its pid's process did: the pid was reused, the run was interrupted
    _write(tmp_path / "reused", "running", cfg, checkpoint=True, pid=live_pid, host=here,
           started_at=time.time() - 3600)
    assert rerun.decide(tmp_path / "reused", cfg)[0] == rerun.RESUME
    _write(tmp_path / "going_since", "running", cfg, checkpoint=True, pid=live_pid, host=here,
           started_at=time.time())
    assert rerun.decide(tmp_path / "going_since", cfg)[0] == rerun.BUSY
    # a finished run's process may live on (a sweep's later jobs): it is skipped as usual
    _write(tmp_path / "done", "ok", cfg, pid=live_pid, host=here)
    assert rerun.decide(tmp_path / "done", cfg)[0] == rerun.SKIP


def _sweep(sweep_dir: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "run.py", "-m", "model=tiny_bert", "trainer=smoke", "rank=1,2,4,8",
            f"data_dir={data_dir}", f"hydra.sweep.dir={sweep_dir}"]


def _statuses(sweep_dir: Path) -> dict[str, str]:
    out = {}
    for p in sweep_dir.glob("*/summary.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())["status"]
        except json.JSONDecodeError:  # being written
            pass
    return out


def test_a_killed_sweep_rerun_skips_the_finished_jobs(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen(_sweep(sweep_dir, data_dir), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while list(_statuses(sweep_dir).values()).count("ok") < 2 and time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _statuses(sweep_dir)
    assert sorted(first.values()).count("ok") == 2, first
    finished = {job for job, status in first.items() if status == "ok"}
    mtimes = {job: (sweep_dir / job / "summary.json").stat().st_mtime_ns for job in finished}

    again = subprocess.run(_sweep(sweep_dir, data_dir), cwd=REPO, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sweep: skipped 2 (ok under the same config), resumed 0, ran 2" in again.stdout
    assert _statuses(sweep_dir) == {"0": "ok", "1": "ok", "2": "ok", "3": "ok"}
    for job in finished:  # untouched: not run again
        assert (sweep_dir / job / "summary.json").stat().st_mtime_ns == mtimes[job]


def test_a_sweep_does_not_overwrite_another_configs_finished_run(tmp_path, data_dir):
    """Job numbers name other jobs when another grid is swept into the same folder."""
    sweep_dir = tmp_path / "sweep"
    first = [a.replace("rank=1,2,4,8", "rank=1") for a in _sweep(sweep_dir, data_dir)]
    assert subprocess.run(first, cwd=REPO, env=ENV, capture_output=True, timeout=300).returncode == 0
    summary = (sweep_dir / "0" / "summary.json").read_bytes()
    metrics = (sweep_dir / "0" / "metrics.jsonl").read_bytes()
    overrides = (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_bytes()
    hydra_config = (sweep_dir / "0" / ".hydra" / "config.yaml").read_bytes()
    assert b"rank=1" in overrides

    other = [a.replace("rank=1", "rank=2") for a in first]
    again = subprocess.run(other, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    assert "sweep job 0 not run" in again.stderr and "rank: 1 there, 2 here" in again.stderr
    assert "not run 1 (another config's finished run in its folder)" in again.stdout
    assert (sweep_dir / "0" / "summary.json").read_bytes() == summary
    assert (sweep_dir / "0" / "metrics.jsonl").read_bytes() == metrics
    # Hydra rewrote the job's .hydra/ files for rank=2 before the job refused; they are put back
    assert (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_bytes() == overrides
    assert (sweep_dir / "0" / ".hydra" / "config.yaml").read_bytes() == hydra_config
    assert not (sweep_dir / "0" / rerun.KEPT_HYDRA).exists()


def test_a_sweep_leaves_a_job_another_process_is_running(tmp_path, data_dir, live_pid):
    """A second sweep command (or a single run) into the job's folder is still writing it: the
    sweep does not run the job, runs the others, and exits 1 saying so."""
    sweep_dir = tmp_path / "sweep"
    command = [a.replace("rank=1,2,4,8", "rank=1,2") for a in _sweep(sweep_dir, data_dir)]
    going = sweep_dir / "0"
    _write(going, "running", {"rank": 1}, pid=live_pid, host=socket.gethostname())
    (going / ".hydra").mkdir()
    (going / ".hydra" / "overrides.yaml").write_text("- the other process's overrides\n")
    summary = (going / "summary.json").read_bytes()

    again = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    assert "sweep job 0 not run" in again.stderr and f"process {live_pid}" in again.stderr
    assert "skipped 0 (ok under the same config), resumed 0, ran 1, not run 1 (still running in " \
           "another process)" in again.stdout
    assert "job failed" not in again.stderr  # it is not failed: it is someone else's, still going
    assert (going / "summary.json").read_bytes() == summary
    assert (going / ".hydra" / "overrides.yaml").read_text() == "- the other process's overrides\n"
    assert _statuses(sweep_dir) == {"0": "running", "1": "ok"}
