"""`logger=wandb` in offline mode: a run `wandb sync` could upload, written without a network."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wandb_offline_run_is_syncable(tmp_path, data_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "run.py", "model=tiny_bert", "trainer=smoke", "logger=wandb",
                           f"data_dir={data_dir}", f"hydra.run.dir={run_dir}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    records = list(offline[0].glob("run-*.wandb"))
    assert records and records[0].stat().st_size > 0
    wandb_cli = Path(sys.executable).parent / "wandb"
    sync = subprocess.run([str(wandb_cli), "sync", "--dry-run", str(offline[0])], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert sync.returncode == 0 and "Would sync 1 run(s)" in sync.stdout + sync.stderr
