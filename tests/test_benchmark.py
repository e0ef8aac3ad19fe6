"""benchmarks/run.py works end to end (on a tiny model, --quick): every ratio is measured and
written. Its numbers are the benchmark's business, never asserted here (no timed tests)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sst2_head(data_dir: Path, out: Path, rows: int = 96) -> Path:
    """A data mirror holding the first rows of the real SST-2 train and dev files: the jobs below
    must run, not learn, so they need not tokenise 67,349 rows each."""
    (out / "sst2").mkdir(parents=True)
    for split in ("train", "dev"):
        lines = (data_dir / "sst2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (out / "sst2" / f"{split}.tsv").write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return out


def test_quick_benchmark_writes_every_ratio(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--model", "tiny_bert",
                           "--ckpt-model", "tiny_bert", "--second-model", "tiny_bert", "--skip-e2e",
                           "--precision", "bf16",  # bf16 even where auto would pick fp32
                           "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ratios = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"lora_ft_step", "lora_peft_step", "lora_ft_mem", "lora_ckpt_ft_mem",
                "merged_base_latency_1x16", "merged_base_latency_2x32",  # --quick's shapes
                "unmerged_base_latency_1x16", "adapter_h_base_latency_1x16", "control_base_latency_1x16",
                "adapter_l_base_latency_2x32", "ckpt_ratio", "trainable_fraction", "analysis_s",
                "lora_ft_flops", "lora_ft_step_stock_dropout", "lora_peft_step_stock_dropout",
                "lora_ft_step_no_dropout", "lora_ft_tensor_mem", "lora_ckpt_ft_tensor_mem",
                "bf16_fp32_step", "lora_mfu", "compiled_eager_step",
                "lora_ft_step_2x8", "lora_peft_step_2x8", "bf16_fp32_step_2x8"}  # --quick's short shape
    second = {"lora_ft_step_tiny_bert", "lora_peft_step_tiny_bert", "lora_ft_flops_tiny_bert",
              "lora_ft_mem_tiny_bert", "lora_ckpt_ft_mem_tiny_bert", "bf16_fp32_step_tiny_bert",
              "lora_mfu_tiny_bert"}  # --second-model's figures
    expected |= second
    assert expected <= set(ratios) and ratios["e2e_vs_hf"] is None
    assert all(ratios[k] > 0 for k in expected)
    # FLOPs are counted, not timed: LoRA skips the frozen weights' gradient products (1/3 of
    # their work) but not the attention products or the input gradients (a large share in a
    # 32-wide model: 0.81 here, 0.675 for MiniLM at 16 × 128).
    assert 0.6 < ratios["lora_ft_flops"] < 0.9
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["precision"] == "bf16" and saved["matmul_peak"]["dtype"] == "bfloat16"
    assert isinstance(saved["machine"]["native_bf16"], bool)  # what the defaults train in there
    assert saved["ratios"].keys() == ratios.keys()
    # The checkpoint holds A and B only: its size follows the trainable count (+ a JSON header).
    ck = saved["checkpoint"]
    assert ck["trainable"] * 4 < ck["lora_bytes"] < ck["trainable"] * 4 + 4096
    md = (tmp_path / "benchmark.md").read_text()
    assert "| lora_ft_step |" in md and "| merged_base_latency_2x32 |" in md and "1.00 ± 0.02" in md
    assert "train step at 2 × 8 (median ms): ft " in md
    # the short shape's figures are diagnostics, held to no target
    assert any(line.startswith("| lora_peft_step_2x8 |") and line.endswith("|  |  |")
               for line in md.splitlines())
    # a second model's figure is checked against the same target
    assert any(line.startswith("| lora_ft_step_tiny_bert |") and "≤ 0.67" in line
               for line in md.splitlines())


def test_unknown_model_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--second-model", "gpt5",
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "--second-model=gpt5 is invalid" in proc.stderr and "mpnet_base" in proc.stderr
    assert "none" in proc.stderr and not (tmp_path / "out" / "benchmark.json").exists()


def test_bad_data_dir_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--data-dir", str(tmp_path),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert f"--data-dir={tmp_path} is invalid" in proc.stderr and "sst2/train.tsv" in proc.stderr
    assert not (tmp_path / "out" / "benchmark.json").exists()


def test_e2e_rounds_must_be_positive(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--e2e-rounds", "0",
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "--e2e-rounds=0 is invalid; valid: 1 or more" in proc.stderr
    assert not (tmp_path / "out" / "benchmark.json").exists()


def test_e2e_vs_hf_best_is_the_median_of_paired_rounds():
    """Each round's ratio pairs the two jobs timed in that round; the median of those, not a
    ratio of medians, is the figure, and the rounds' range is its noise."""
    sys.path.insert(0, str(REPO))
    from benchmarks.run import e2e_ratios

    rounds = [{"run_py": {"wall_s": a}, "hf_best": {"wall_s": b}}
              for a, b in ((15.0, 20.0), (14.0, 28.0), (16.0, 16.0))]  # 0.75, 0.5, 1.0
    e2e = {"rounds": rounds, "run_py_wall_s": 15.0, "hf_best_wall_s": 20.0,
           "hf_max_length_wall_s": 100.0, "hf_dynamic_wall_s": 30.0, "run_py_accuracy": 0.75,
           "hf_max_length_accuracy": 0.76, "hf_best_accuracy": 0.74}
    noise = {}
    ratios = e2e_ratios(e2e, noise)
    assert ratios["e2e_vs_hf_best"] == 0.75 and noise["e2e_vs_hf_best"] == (0.5, 1.0)
    assert ratios["e2e_vs_hf"] == 0.15 and ratios["e2e_vs_hf_dynamic"] == 0.5
    assert abs(ratios["e2e_best_accuracy_gap"] - 0.01) < 1e-12


def test_targets_of_the_second_model():
    """A second model's figure has the main figure's target unless it has its own."""
    sys.path.insert(0, str(REPO))
    from benchmarks.run import met, target_of

    suffixes = ("_mpnet_base",)
    assert target_of("lora_ft_step_mpnet_base", suffixes) == ("<=", 0.67)
    assert target_of("bf16_fp32_step", suffixes) == ("<=", 0.60)
    assert target_of("bf16_fp32_step_mpnet_base", suffixes) == ("<=", 0.50)
    assert met("bf16_fp32_step_mpnet_base", 0.55, suffixes) == "NO"
    assert met("bf16_fp32_step", 0.55, suffixes) == "yes"
    assert met("lora_mfu", 0.30) == "NO" and met("lora_mfu", 0.40) == "yes"


def test_trainer_reference_job_runs_with_bf16(tmp_path, data_dir):
    """The Trainer + peft job at its best on a CPU (dynamic padding, length grouping, bf16): the
    benchmark's e2e_vs_hf_best reference. Five steps: it must run, not learn. Evaluating every 2
    steps evaluates at steps 2, 4 and the last, 5, once (as run.py's eval_every). Batches of 4 and
    16 dev rows: on a CPU without native bf16 its products are emulated, ~50x slower than fp32."""
    data_dir = sst2_head(data_dir, tmp_path / "data", rows=16)
    proc = subprocess.run([sys.executable, "benchmarks/hf_trainer_peft.py", "--data-dir", str(data_dir),
                           "--steps", "5", "--eval-steps", "2", "--padding", "dynamic", "--bf16",
                           "--batch-size", "4",
                           "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bf16"] is True and result["steps"] == 5 and result["evaluations"] == 3
    assert 0 <= result["dev_accuracy"] <= result["dev_accuracy_best"] <= 1


def test_main_job_against_the_reference_and_the_trainer_on_the_same_job(tmp_path, data_dir):
    """benchmarks/main_job.py --vs-hf-best on a 5-step job evaluated every 2 steps: the fp32
    reference, then the defaults, then the Trainer on the job read from run.py's own run (its
    steps and evaluations), each ratio over its neighbours, and every run with a cold
    tokenisation cache of its own (the user's stays untouched). The ratios' values are the
    benchmark's business, not asserted."""
    data_dir = sst2_head(data_dir, tmp_path / "data")
    user_cache = tmp_path / "user_cache"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/main_job.py", "--data-dir", str(data_dir),
                           "--seeds", "0", "--vs-hf-best",
                           "--override", "trainer.max_steps=5", "--override", "trainer.eval_every=2",
                           "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LORA_EXP_CACHE": str(user_cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "main_job.json").read_text())
    ref, ours, hf = result["runs"]
    assert ref["overrides"] == [*ours["overrides"], "trainer.precision=fp32", "trainer.compile=false"]
    assert ref["precision"] == "fp32"
    assert ours["overrides"] == ["trainer.max_steps=5", "trainer.eval_every=2"]
    assert hf["overrides"] == ["Trainer + peft at its best"] and hf["precision"] == ours["precision"]
    assert hf["steps"] == ours["steps"] == ref["steps"] == 5
    assert hf["evaluations"] == ours["evaluations"] == 3
    assert result["main_job_speedup"] == ours["wall_s"] / ref["wall_s"]
    assert result["e2e_vs_hf_best"] == ours["wall_s"] / hf["wall_s"]
    assert result["main_job_speedup_per_seed"] == [result["main_job_speedup"]]
    assert result["e2e_vs_hf_best_per_seed"] == [result["e2e_vs_hf_best"]]
    md = (out / "main_job.md").read_text()
    assert f"same job): {result['e2e_vs_hf_best']:.3f} (per seed: {result['e2e_vs_hf_best']:.3f})" in md
    assert not user_cache.exists()


def test_main_job_against_the_trainer_needs_eval_every_in_steps(tmp_path, data_dir):
    """The Trainer's eval_steps is a number of steps: an epoch-wise run.py job is refused before
    anything runs, naming the key, the value and what is valid."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/main_job.py", "--data-dir", str(data_dir),
                           "--no-reference", "--vs-hf-best", "--override", "trainer.eval_every=epoch",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "trainer.eval_every='epoch' is invalid with --vs-hf-best; valid: a number of steps" in proc.stderr
    assert not out.exists()
