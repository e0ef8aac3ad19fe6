"""torchrun (DDP, gloo on CPU) gives the single-process result for the same global batch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
# Model dropout off: the two runs then do the same arithmetic up to the order of float sums.
ARGS = ["model=tiny_bert", "task=stsb", "trainer=smoke", "trainer.max_steps=20",
        "trainer.max_train_samples=400", "trainer.lr=1e-3",
        "+model.architecture.hidden_dropout_prob=0.0", "+model.architecture.attention_probs_dropout_prob=0.0"]


def test_torchrun_two_processes_matches_single_process(tmp_path, data_dir):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    a = subprocess.run([sys.executable, "run.py", *ARGS, f"data_dir={data_dir}",
                        f"hydra.run.dir={single}"], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert a.returncode == 0, a.stderr[-2000:]
    b = subprocess.run([torchrun, "--nproc_per_node=2", "run.py", *ARGS, f"data_dir={data_dir}",
                        f"hydra.run.dir={ddp}"], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert b.returncode == 0, b.stderr[-2000:]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (single, ddp))
    assert sb["status"] == "ok"
    # Tolerance: 1e-5 absolute on every trained weight and 1e-4 on the metrics (float sums
    # are reduced in another order across 2 ranks; nothing else differs).
    wa, wb = (load_file(str(d / "adapter_model.safetensors")) for d in (single, ddp))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)
    for key in ("pearson", "spearman"):
        assert abs(sa["metrics"]["dev"]["final"][key] - sb["metrics"]["dev"]["final"][key]) < 1e-4
    la, lb = ([json.loads(x)["train_loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (single, ddp))
    assert abs(la[-1] - lb[-1]) < 1e-4
