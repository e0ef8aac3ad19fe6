"""The learning-rate grid chooses on the held-out slice, never on dev; learning curves mark a run
whose best evaluation is its last as not converged."""
import json

import pandas as pd
import pytest

from analysis.curves import converged, curves, plot_curves
from analysis.lr_grid import choose, grid_table, write_grid
from analysis.runs import RunError


def fake_run(root, name, *, method, lr, task, heldout, dev, status="ok", seed=0, rank=8):
    """A run directory as the trainer writes it: one evaluation per epoch."""
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "status": status, "task": task, "method": method, "rank": rank, "seed": seed,
        "config": {"trainer": {"lr": lr}}, "metrics": {"main_metric": "dev/accuracy"}}))
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"step": 10 * (i + 1), "epoch": float(i + 1), "dev/accuracy": v,
                    "heldout/accuracy": h}) + "\n" for i, (h, v) in enumerate(zip(heldout, dev))))
    return d


@pytest.fixture
def grid(tmp_path):
    # lr 1e-3 is better on dev; 3e-4 is better on the held-out slice, on both tasks on average.
    for task, shift in (("mrpc", 0.0), ("sst2", 0.1)):
        fake_run(tmp_path, f"{task}_a", method="lora", lr=1e-3, task=task,
                 heldout=[0.60 + shift, 0.70 + shift, 0.65 + shift], dev=[0.70, 0.90, 0.95])
        fake_run(tmp_path, f"{task}_b", method="lora", lr=3e-4, task=task,
                 heldout=[0.72 + shift, 0.71 + shift, 0.70 + shift], dev=[0.60, 0.62, 0.64])
    fake_run(tmp_path, "failed", method="lora", lr=3e-3, task="mrpc", heldout=[0.99], dev=[0.99],
             status="failed")
    return tmp_path


def test_the_rate_is_chosen_on_the_heldout_slice_not_on_dev(grid):
    table = grid_table(curves([grid]))
    assert len(table) == 4  # the failed run is not read
    row = table[(table["task"] == "mrpc") & (table["lr"] == 1e-3)].iloc[0]
    assert (row["heldout"], row["heldout_epoch"], row["dev_at_heldout"], row["dev_best"]) == (0.70, 2.0, 0.90, 0.95)
    choice = choose(table)
    chosen = choice[choice["chosen"]]
    assert chosen["lr"].tolist() == [3e-4]
    assert chosen["mean_heldout"].iloc[0] == pytest.approx((0.72 + 0.82) / 2)


def test_a_rate_missing_a_task_is_not_a_candidate(grid, tmp_path_factory):
    extra = tmp_path_factory.mktemp("extra")
    fake_run(extra, "only_mrpc", method="lora", lr=1e-2, task="mrpc", heldout=[0.99], dev=[0.5])
    choice = choose(grid_table(curves([grid, extra])))
    assert choice.loc[choice["lr"] == 1e-2, "mean_heldout"].isna().all()
    assert choice[choice["chosen"]]["lr"].tolist() == [3e-4]


def test_write_grid_writes_tables_and_curves(grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    text = write_grid([grid], out)
    assert "**yes**" in text
    for name in ("lr_grid.csv", "lr_choice.csv", "lr_grid.md", "curves_mrpc.png", "curves_sst2.png",
                 "curves_mrpc.csv"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "lr_grid.csv")) == 4


def test_two_sizes_of_a_method_are_two_grids(grid, tmp_path_factory):
    for task in ("mrpc", "sst2"):  # the larger adapter: its own rates, its own choice, its own curve
        fake_run(grid, f"{task}_h8", method="adapter_h", lr=1e-3, task=task, heldout=[0.8], dev=[0.8])
        fake_run(grid, f"{task}_h64", method="adapter_h", rank=64, lr=1e-3, task=task, heldout=[0.6], dev=[0.6])
    out = tmp_path_factory.mktemp("out")
    write_grid([grid], out)
    choice = pd.read_csv(out / "lr_choice.csv")
    assert choice[choice["method"] == "adapter_h"]["rank"].tolist() == [8, 64]
    series = set(pd.read_csv(out / "curves_mrpc.csv")["series"])
    assert {"adapter_h r=8 lr=0.001", "adapter_h r=64 lr=0.001"} <= series


def test_a_grid_without_heldout_evaluations_is_an_error(tmp_path):
    d = fake_run(tmp_path, "paper_only", method="lora", lr=1e-3, task="mrpc", heldout=[0.5], dev=[0.5])
    (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 1.0, "dev/accuracy": 0.5}) + "\n")
    with pytest.raises(RunError, match="heldout"):
        grid_table(curves([tmp_path]))


def test_best_at_the_last_evaluation_is_not_converged(tmp_path):
    fake_run(tmp_path, "rising", method="lora", lr=1e-3, task="mrpc", heldout=[0, 0, 0], dev=[0.5, 0.6, 0.7])
    fake_run(tmp_path, "plateau", method="lora", lr=1e-3, task="mrpc", heldout=[0, 0, 0], dev=[0.5, 0.7, 0.7])
    table = converged(curves([tmp_path]), "dev/accuracy")
    by_run = {r.run_dir.rsplit("/", 1)[1]: r for r in table.itertuples()}
    assert not by_run["rising"].converged and by_run["rising"].best_step == 30
    assert by_run["plateau"].converged and by_run["plateau"].best_step == 20  # tie: the earliest


def test_plot_curves_writes_the_medians_it_draws(tmp_path):
    for seed, top in enumerate((0.6, 0.8, 0.7)):
        fake_run(tmp_path, f"s{seed}", method="lora", lr=1e-3, task="mrpc", heldout=[0, 0],
                 dev=[0.5, top], seed=seed)
    path = plot_curves(curves([tmp_path]), {"mrpc": "dev/accuracy"}, tmp_path / "c.png")
    data = pd.read_csv(path.with_suffix(".csv"))
    last = data[data["epoch"] == 2.0].iloc[0]
    assert (last["median"], last["min"], last["max"], last["size"]) == (0.7, 0.6, 0.8, 3)
