"""Runs made twice: independent runs of one resolved config grouped and compared; copies, other
configs and names are told apart."""
import json
import shutil

import pandas as pd

from analysis.collect import collect
from analysis.reruns import made_twice, summary_lines, table
from lora_exp.export import WEIGHTS
from lora_exp.selection import summarize

TASK = {"main_metric": "dev/accuracy", "eval_splits": ["dev"]}


class Cfg(dict):
    __getattr__ = dict.get


def run(root, name, *, dev, heldout, pid, lr=1e-3, precision="fp32", cpu="AMD EPYC", **config):
    """A finished run as the trainer writes it (summary made by the trainer's own summarize)."""
    d = root / name
    d.mkdir(parents=True)
    history = [{"step": 10 * (i + 1), "epoch": float(i + 1), "dev/accuracy": v, "heldout/accuracy": h}
               for i, (v, h) in enumerate(zip(dev, heldout))]
    (d / "summary.json").write_text(json.dumps({
        "status": "ok", "task": "mrpc", "method": "lora", "rank": 8, "seed": 0, "model": "minilm",
        "pid": pid, "started_at": 1000.0 + pid, "git_sha": f"{pid:07d}abc", "precision": precision,
        # cpu=None: a run made before summaries recorded the machine
        **({"machine": {"cpu": cpu, "native_bf16": precision == "bf16", "threads": 1, "gpu": None}}
           if cpu else {}),
        "config": {"task": {"name": "mrpc"}, "trainer": {"lr": lr, **config.pop("trainer", {})},
                   "method": {"targets": ["wq", "wv"]}, **config},
        "metrics": summarize(history, Cfg(TASK), "heldout")}))
    return d


def test_runs_of_one_config_are_grouped_and_compared(tmp_path):
    a = run(tmp_path / "table2_cpu_a", "0", dev=[0.70, 0.80], heldout=[0.6, 0.7], pid=1,
            run_name="table2_cpu", trainer={"checkpoint_every": None})
    # the same config from another sweep: another name, checkpoints on, the same numbers
    run(tmp_path / "rank_mrpc", "3", dev=[0.70, 0.80], heldout=[0.6, 0.7], pid=2,
        run_name="rank_mrpc", trainer={"checkpoint_every": 200})
    # a copy of the first run (the same process) is not a run made twice
    shutil.copytree(a, tmp_path / "weight_types_mrpc" / "5")
    # another learning rate is another config
    run(tmp_path / "lr_grid", "0", dev=[0.70, 0.80], heldout=[0.6, 0.7], pid=3, lr=3e-3)
    # the same config trained in bf16 on a CPU with native bf16: other numbers
    b = run(tmp_path / "table2_cpu_b", "0", dev=[0.72, 0.79], heldout=[0.7, 0.6], pid=4,
            precision="bf16", run_name="table2_cpu")
    # bf16 again, by a run that recorded no machine: compared with the first bf16 run, not fp32's
    c = run(tmp_path / "reruns", "x", dev=[0.72, 0.79], heldout=[0.7, 0.6], pid=5, precision="bf16",
            cpu=None, run_name="x")
    for d, weights in ((a, b"fp32 weights"), (tmp_path / "rank_mrpc" / "3", b"fp32 weights"),
                       (b, b"bf16"), (c, b"bf16")):
        (d / WEIGHTS).write_bytes(weights)

    groups = made_twice(collect([tmp_path]))
    assert [sorted(p.split("/")[-2] for p in g) for g in groups] == [
        ["rank_mrpc", "reruns", "table2_cpu_a", "table2_cpu_b"]]

    t = table(collect([tmp_path]), tmp_path).set_index("run")
    # rank_mrpc/3 sorts first of the fp32 runs, reruns/x of the bf16 ones
    assert list(t.index) == ["rank_mrpc/3", "reruns/x", "table2_cpu_a/0", "table2_cpu_b/0"]
    assert list(t["reference"]) == ["rank_mrpc/3", "reruns/x", "rank_mrpc/3", "reruns/x"]
    assert list(t["same as the first"]) == ["first", "first", "yes", "yes"]
    assert list(t["same weights"]) == ["first", "first", "yes", "yes"]
    assert t.loc["table2_cpu_b/0", "paper selection"] == 0.79
    assert t.loc["table2_cpu_b/0", "held-out selection"] == 0.72  # dev where held-out was best
    assert t.loc["table2_cpu_b/0", "trained"] == "bf16, AMD EPYC avx512_bf16/amx"
    assert t.loc["reruns/x", "trained"] == "bf16"

    # another bf16 run with other numbers is told apart from its own precision's first run
    run(tmp_path / "table2_cpu_c", "0", dev=[0.72, 0.78], heldout=[0.7, 0.6], pid=6,
        precision="bf16", run_name="table2_cpu")
    t = table(collect([tmp_path]), tmp_path).set_index("run")
    assert t.loc["table2_cpu_c/0", "same as the first"] == "no"
    assert t.loc["table2_cpu_c/0", "same weights"] == "—"  # it kept none


def test_the_summary_tells_same_precision_groups_from_mixed_ones():
    fp32 = {"trained": "fp32, AMD EPYC", "paper selection": 0.80, "held-out selection": 0.70,
            "last evaluation": 0.75}
    bf16 = {**fp32, "trained": "bf16", "paper selection": 0.81, "held-out selection": 0.67}
    t = pd.DataFrame([
        {"group": 1, **fp32, "same as the first": "first", "same weights": "first", "reference": "a"},
        {"group": 1, **fp32, "same as the first": "yes", "same weights": "yes", "reference": "a"},
        {"group": 2, **fp32, "same as the first": "first", "same weights": "first", "reference": "b"},
        {"group": 2, **bf16, "same as the first": "first", "same weights": "—", "reference": "c"},
        {"group": 2, **bf16, "last evaluation": 0.76, "same as the first": "no", "same weights": "—",
         "reference": "c"}])
    same, mixed = summary_lines(t)
    assert same == ("- 2 config(s) trained twice at one precision on one kind of machine: 1 agree to 4 "
                    "decimals in all three figures; the largest difference is 1.00 points; 1 of the 1 "
                    "with their trained weights kept have the same weights byte for byte.")
    assert mixed == ("- 1 config(s) trained at two precisions or on two kinds of machine: the largest "
                     "difference between their runs is 3.00 points.")
