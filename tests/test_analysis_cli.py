"""`python -m analysis ...` on real run directories (tiny models, a few steps each)."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis import claims
from analysis.__main__ import main
from analysis.runs import Key, lora_factors, pretrained_weights
from lora_exp.trainer import run

REPO = Path(__file__).resolve().parent.parent


def make_runs(root: Path, specs: dict[str, list[str]], data_dir: Path, *common: str) -> Path:
    """A smoke run per name under ``root``, with ``common`` then its own overrides (tiny_bert
    unless they name a model)."""
    from tests.conftest import compose

    for name, overrides in specs.items():
        model = [] if any(o.startswith("model=") for o in overrides) else ["model=tiny_bert"]
        run(compose([*model, "trainer=smoke", "trainer.lr=1e-2", f"data_dir={data_dir}", *common,
                     *overrides]), root / name)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    from tests.conftest import compose

    root = tmp_path_factory.mktemp("analysis_runs")
    make_runs(root / "sweep", {"r2": ["rank=2"], "r4": ["rank=4"], "r4_seed1": ["rank=4", "seed=1"],
                               "wk_only": ["method.targets=[wk]"], "full_ft": ["method=full_ft"],
                               "gpt2": ["model=tiny_gpt2", "rank=2"]}, data_dir)
    failed = root / "sweep" / "failed"
    with pytest.raises(Exception):
        run(compose(["model=tiny_bert", "trainer=smoke", "rank=999", f"data_dir={data_dir}"]), failed)
    return root / "sweep"


def test_factors_and_weights_follow_the_paper_layout(runs):
    f = lora_factors(runs / "r4")
    q, v = "attention.self.query", "attention.self.value"
    assert sorted(f) == [(0, "wq", q), (0, "wv", v), (1, "wq", q), (1, "wv", v)]
    assert f[(0, "wq", q)].A.shape == (4, 32) and f[(0, "wq", q)].B.shape == (32, 4)
    w = pretrained_weights(runs / "r4", [Key(0, "wq", q)])[(0, "wq", q)]
    assert w.shape == (32, 32)
    # GPT-2: the q slice of the fused Conv1D, transposed to (d_out, d_in).
    g = lora_factors(runs / "gpt2")
    key = Key(1, "wq", "attn.c_attn")
    assert g[key].delta_w.shape == pretrained_weights(runs / "gpt2", [key])[key].shape == (32, 32)


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory, data_dir):
    """LoRA on `mlp`, one weight type for two modules per block (intermediate.dense, output.dense)."""
    return make_runs(tmp_path_factory.mktemp("mlp_runs"), {
        "r2": ["rank=2"], "r4": ["rank=4"], "r4_seed1": ["rank=4", "seed=1"]}, data_dir,
        "method.targets=[mlp]")


@pytest.fixture(scope="module")
def protocol_runs(tmp_path_factory, data_dir):
    """Runs that differ from `runs` in their protocol: selected on a held-out slice of train (two
    seeds, two evaluations each), or evaluated every 2 against every 4 steps."""
    heldout = ["trainer.selection=heldout", "trainer.heldout_size=16", "trainer.eval_every=2"]
    return make_runs(tmp_path_factory.mktemp("protocol_runs"), {
        "heldout/s0": heldout, "heldout/s1": [*heldout, "seed=1"],
        "every2": ["trainer.eval_every=2"], "every4": ["trainer.eval_every=4"]}, data_dir)


def test_a_weight_type_with_two_modules_keeps_both(mlp_runs, tmp_path):
    both = [(layer, module) for layer in (0, 1) for module in ("intermediate.dense", "output.dense")]
    f = lora_factors(mlp_runs / "r4")
    assert sorted(f) == [(layer, "mlp", module) for layer, module in both]
    assert f[(0, "mlp", "intermediate.dense")].delta_w.shape == (64, 32)  # d_ff × d
    assert f[(0, "mlp", "output.dense")].delta_w.shape == (32, 64)
    w = pretrained_weights(mlp_runs / "r4", sorted(f))
    assert all(w[k].shape == f[k].delta_w.shape for k in f)

    assert main(["report", str(mlp_runs), "--ranks", "2,4", "--out", str(tmp_path)]) == 0
    for csv in ("subspace_r2_r4/subspace.csv", "subspace_r4_seeds/subspace.csv",
                "delta_w_r2/delta_w.csv", "delta_w_r4/delta_w.csv"):
        table = pd.read_csv(tmp_path / csv)
        assert sorted(zip(table["layer"], table["module"])) == both, csv
    for layer, module in both:
        assert (tmp_path / "subspace_r2_r4" / f"mlp_layer{layer}_{module}_phi.png").is_file()
        assert (tmp_path / "subspace_r2_r4" / f"mlp_layer{layer}_{module}_w_vs_delta.csv").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "| module" in report and "intermediate.dense" in report and "output.dense" in report


def test_subspace_writes_tables_and_heatmaps(runs, tmp_path, capsys):
    assert main(["subspace", str(runs / "r4"), str(runs / "r4_seed1"), "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "subspace.csv")
    assert len(df) == 4 and df["phi_top1"].between(0, 1).all()
    assert (tmp_path / "wq_layer0_phi.png").is_file() and (tmp_path / "wq_layer0_phi.csv").is_file()
    assert (tmp_path / "random_phi.png").is_file() and (tmp_path / "wv_layer1_w_vs_delta.png").is_file()
    assert "top-direction similarity" in capsys.readouterr().out


def test_subspace_of_a_run_with_itself_is_one_on_the_diagonal(runs, tmp_path):
    main(["subspace", str(runs / "r4"), str(runs / "r4"), "--out", str(tmp_path), "--no-w-vs-delta"])
    phi = pd.read_csv(tmp_path / "wq_layer0_phi.csv", index_col=0).to_numpy()
    assert abs(phi.diagonal() - 1).max() < 1e-9


def test_delta_w_table(runs, tmp_path):
    assert main(["delta-w", str(runs / "r2"), "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "delta_w.csv")
    f = lora_factors(runs / "r2")[(0, "wq", "attention.self.query")]
    assert "module" not in df  # one module per weight type: (layer, weight_type) names a weight
    row = df[(df.layer == 0) & (df.weight_type == "wq")].iloc[0]
    assert row["norm_delta"] == pytest.approx(float(torch.linalg.matrix_norm(f.delta_w)), rel=1e-9)
    assert row["amplification"] == pytest.approx(row["norm_delta"] / row["proj_delta"], rel=1e-9)


def test_collect_keeps_failed_runs(runs, tmp_path):
    assert main(["collect", str(runs), "--out", str(tmp_path)]) == 0
    df = pd.read_parquet(tmp_path / "runs.parquet")
    assert set(df["status"]) == {"ok", "failed"}
    assert len(df.drop_duplicates("run_dir")) == 7
    assert "failed" in (tmp_path / "runs.md").read_text()


@pytest.mark.parametrize("case,needle", [
    ("full_ft", "comparing directions needs a LoRA run"),  # FT vs FT: no rank r to compare
    ("disjoint", "no layer × weight type in common"),
    ("not_a_run", "not a run directory"),
])
def test_subspace_errors(runs, tmp_path, case, needle):
    a, b = {"full_ft": (runs / "full_ft", runs / "full_ft"),
            "disjoint": (runs / "r2", runs / "wk_only"),
            "not_a_run": (tmp_path, runs / "r2")}[case]
    proc = subprocess.run([sys.executable, "-m", "analysis", "subspace", str(a), str(b), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_notebook_runs_top_to_bottom(runs, tmp_path, monkeypatch):
    """notebooks/analysis.ipynb executes on fresh analysis outputs, so it cannot rot."""
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "analysis"  # the layout of `report` (subspace_*/ and delta_w_*/ inside)
    assert main(["report", str(runs), "--ranks", "2,4", "--out", str(out)]) == 0
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("LORA_EXP_ANALYSIS_DIR", str(out))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures rendered
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "effective_rank_90" in shown and "task_metric_name" in shown  # spectrum and forgetting read


def test_sweep_table_and_plot(runs, tmp_path):
    assert main(["sweep", str(runs), "--by", "rank,targets", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "sweep.csv")
    r4 = table[(table["rank"] == 4) & (table["targets"] == "wq,wv")].iloc[0]
    assert r4["n"] == 2 and r4["min"] <= r4["value"] <= r4["max"]  # seeds 0 and 1
    md = (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 0 and "[" in md
    assert md.startswith("Protocol of the 6 pooled runs: selection paper · selected_on dev/accuracy "
                         "· eval_every 500 · evaluations 1 · init_from null · init_checkpoint null ·")
    assert "Differs between them" not in md and "heldout |" not in md  # one protocol, one figure
    assert (table["selection"] == "paper").all() and table["heldout_size"].isna().all()


def test_collect_writes_the_protocol_and_the_heldout_figure(runs, protocol_runs, tmp_path):
    held_dir = protocol_runs / "heldout" / "s0"
    assert main(["collect", str(held_dir), str(runs / "r2"), "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "runs.csv").set_index("selection")
    held, paper = df.loc["heldout"], df.loc["paper"]
    chosen = json.loads((held_dir / "summary.json").read_text())["metrics"]["dev"]["heldout"]
    assert (held["heldout"], held["heldout_step"]) == (chosen["accuracy"], chosen["step"])
    counts = ["evaluations", "heldout_size", "nan_evaluations"]
    assert held[["selected_on", "eval_every", *counts]].tolist() == ["heldout/accuracy", 2, 2, 16, 0]
    assert paper[["selected_on", "eval_every", "evaluations", "nan_evaluations"]].tolist() \
        == ["dev/accuracy", 500, 1, 0]
    assert paper[["heldout", "heldout_step", "heldout_size"]].isna().all()
    for row in (held, paper):
        assert row["model_dropout"] == 0.1 and row["weight_decay"] == 0.01
        assert row["no_decay"] == "biases and normalisation weights"
        assert pd.isna(row["init_from"]) and pd.isna(row["init_checkpoint"])


def test_collect_reads_older_runs_protocol_from_their_config(runs, tmp_path):
    """A run made before summary.json recorded its protocol, and before the keys it adds."""
    from analysis.collect import collect

    s = json.loads((runs / "r2" / "summary.json").read_text())
    del s["protocol"], s["config"]["init_checkpoint"]
    for key in ("selection", "heldout_size", "no_decay"):
        del s["config"]["trainer"][key]
    s["config"]["init_from"] = "outputs/mnli"
    (tmp_path / "summary.json").write_text(json.dumps(s))
    row = collect([tmp_path]).iloc[0]
    assert row[["selection", "selected_on", "eval_every", "evaluations", "weight_decay", "no_decay",
                "init_from", "init_checkpoint"]].tolist() \
        == ["paper", "dev/accuracy", "500", 1, 0.01, "none", "outputs/mnli", "final"]
    assert row[["model_dropout", "nan_evaluations", "heldout", "heldout_size"]].isna().all()


@pytest.mark.parametrize("pair,key,values", [
    (("every2", "every4"), "eval_every", "2, 4"),
    (("every2", "heldout/s0"), "selection", "paper, heldout"),
])
def test_sweep_pools_runs_of_one_protocol_only(protocol_runs, tmp_path, capsys, pair, key,
                                               values):
    dirs = [str(protocol_runs / name) for name in pair]
    assert main(["sweep", *dirs, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: runs differ in protocol key {key}: {values}; "
                                       "pass --mix-protocols to pool them anyway\n")
    assert not (tmp_path / "sweep.md").exists()
    assert main(["sweep", *dirs, "--mix-protocols", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "sweep.md").read_text()
    differ = md.splitlines()[1]
    assert differ.startswith("Differs between them: ") and f"{key} ({values})" in differ
    assert "] (2)" in md  # both runs in one cell


def test_a_heldout_sweep_shows_both_figures(protocol_runs, tmp_path):
    assert main(["sweep", str(protocol_runs / "heldout"), "--out", str(tmp_path)]) == 0
    dev = [json.loads((protocol_runs / "heldout" / s / "summary.json").read_text())["metrics"]["dev"]
           for s in ("s0", "s1")]
    row = pd.read_csv(tmp_path / "sweep.csv").iloc[0]
    md = (tmp_path / "sweep.md").read_text()
    for figure, column in (("best", "value"), ("heldout", "heldout")):
        median = statistics.median(d[figure]["accuracy"] for d in dev)
        assert row[column] == pytest.approx(median)
        assert f" {median * 100:.1f} [" in md
    assert md.index("sst2 dev/accuracy best") < md.index("sst2 dev/accuracy heldout")
    assert md.startswith("Protocol of the 2 pooled runs: selection heldout · selected_on "
                         "heldout/accuracy · eval_every 2 · evaluations 2 ·")
    assert "heldout_size 16." in md and "best − heldout is what choosing on the reported" in md


def test_report_puts_claims_next_to_the_paper(runs, tmp_path):
    assert main(["report", str(runs), "--ranks", "2,4", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "φ(A_r2, A_r4, 1, 1)" in text and "--ranks 2,4" in text
    section7, beyond = text.split("## Beyond §7")
    assert section7.count("**holds**") + section7.count("**does not hold**") == 6  # 3 subspace + 3 Table 7
    assert "21.67" in text  # the paper's Table 7 next to the measured one
    # The same verdicts as records, for the results page's summary of the claims.
    record = json.loads((tmp_path / "claims.json").read_text())
    assert len(record["claims"]) == 6 and set(claims.SECTION7_KEYS[5] + claims.SECTION7_KEYS[6]) <= \
        {c["key"] for c in record["claims"]}
    assert all(f"{'**holds**' if c['holds'] else '**does not hold**'} ({c['figure']})" in section7
               for c in record["claims"])
    assert (tmp_path / "subspace_r2_r4" / "subspace.csv").is_file()
    assert (tmp_path / "delta_w_r4" / "delta_w.csv").is_file()
    # The FT run beside them: LoRA against FT on intruders, effective rank and forgetting.
    assert "sst2 × tiny_bert: LoRA (wq,wv) r = 2, 4 (3 runs) and FT (1 run)" in beyond
    assert len([line for line in beyond.splitlines() if line.startswith("- ")]) == 4
    assert "r=2;" in beyond  # FT's effective rank is compared with --ranks' low r
    spec = pd.read_csv(tmp_path / "spectrum" / "spectrum.csv")
    assert sorted(spec["method"].unique()) == ["full_ft", "lora"]
    records = json.loads((tmp_path / "forgetting" / "forgetting.json").read_text())
    # tiny_bert's weights are seeded: one base model (one `before`) per seed.
    assert len(records) == 4 and len({(r["seed"], r["before"]) for r in records}) == 2
    assert (tmp_path / "forgetting" / "learning_vs_forgetting.png").is_file()


def test_report_writes_what_the_single_commands_write(runs, tmp_path):
    """report and `subspace` / `delta-w` call the same analysis/per_layer functions."""
    from analysis.per_layer import subspace_per_layer, table7_per_layer

    assert main(["report", str(runs), "--ranks", "2,4", "--out", str(tmp_path / "report")]) == 0
    subspace_per_layer(runs / "r2", runs / "r4", tmp_path / "subspace")
    table7_per_layer(runs / "r4", tmp_path / "delta_w")
    for mine, reports in (("subspace/subspace.csv", "subspace_r2_r4/subspace.csv"),
                          ("subspace/wq_layer1_w_vs_delta.csv",
                           "subspace_r2_r4/wq_layer1_w_vs_delta.csv"),
                          ("delta_w/delta_w.csv", "delta_w_r4/delta_w.csv")):
        assert (tmp_path / mine).read_bytes() == (tmp_path / "report" / reports).read_bytes()


def test_results_page_runs_section_7_on_a_rank_sweep(runs, tmp_path):
    from analysis.results import write_page

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "rank_tiny").symlink_to(runs)
    page = write_page([tmp_path / "sweeps"], tmp_path / "out", ranks=(2, 4)).read_text()
    assert "[out/section7/report.md](out/section7/report.md)" in page
    section7 = (tmp_path / "out" / "section7" / "report.md").read_text().split("## Beyond §7")[0]
    assert section7.count("**holds**") + section7.count("**does not hold**") == 6


def test_results_page_runs_the_spectrum_report(runs, tmp_path):
    from analysis.results import write_page

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "spectrum_sst2").symlink_to(runs)  # LoRA r=2, 4 and FT beside them
    page = write_page([tmp_path / "sweeps"], tmp_path / "out").read_text()
    assert "[out/spectrum_sst2/report.md](out/spectrum_sst2/report.md)" in page
    report = (tmp_path / "out" / "spectrum_sst2" / "report.md").read_text()
    beyond = report.split("## Beyond §7")[1]
    assert len([line for line in beyond.splitlines() if line.startswith("- ")]) == 4


def test_report_without_the_needed_runs_is_an_error(runs, mlp_runs, tmp_path, capsys):
    assert main(["report", str(mlp_runs), "--out", str(tmp_path)]) != 0  # no r=8 / r=64, no FT
    err = capsys.readouterr().err
    assert "r=8 (one seed) and r=64 (two seeds)" in err and "no task × model with both" in err
    assert not (tmp_path / "report.md").exists()
    # With FT runs there, the part beyond §7 stands alone and says what §7 misses.
    assert main(["report", str(runs), "--out", str(tmp_path)]) == 0
    assert "Not testable here: report needs LoRA runs at r=8" in (tmp_path / "report.md").read_text()
    assert main(["report", str(runs), "--ranks", "x", "--out", str(tmp_path)]) != 0
    assert "--ranks=x is invalid" in capsys.readouterr().err


def test_sweep_all_metrics_keeps_every_metric():
    from analysis.sweeps import sweep_table, to_markdown

    rows = [{"method": "lora", "task": "e2e", "split": "valid", "metric": m, "is_main": m == "BLEU",
             "best": v + seed, "status": "ok", "trainable": 10, "seed": seed}
            for seed in (0, 1) for m, v in (("BLEU", 60.0), ("nist_nltk", 7.0), ("CIDEr", 1.5))]
    df = pd.DataFrame(rows)
    assert list(sweep_table(df, ["method"], "mean")["metric"]) == ["BLEU"]
    table = sweep_table(df, ["method"], "mean", all_metrics=True)
    assert dict(zip(table["metric"], table["value"])) == {"BLEU": 60.5, "CIDEr": 2.0, "nist_nltk": 7.5}
    md = to_markdown(table, ["method"], "mean", scale=1)
    assert "60.5 [60.0–61.0] (2)" in md and "e2e valid/nist_nltk" in md


def test_each_task_selects_on_its_own_metric():
    """selected_on names the task's metric: it may differ between tasks, not within one."""
    from analysis.sweeps import MixedProtocols, protocol_header, sweep_table

    rows = [{"method": "lora", "task": task, "split": "dev", "metric": metric, "is_main": True,
             "best": 0.5, "status": "ok", "trainable": 10, "selection": "paper",
             "selected_on": f"dev/{metric}", "run_dir": f"{task}{seed}"}
            for seed in (0, 1) for task, metric in (("cola", "mcc"), ("rte", "accuracy"))]
    df = pd.DataFrame(rows)
    assert list(sweep_table(df, ["method"])["selected_on"]) == ["dev/mcc", "dev/accuracy"]
    assert "· selected_on dev/mcc (cola), dev/accuracy (rte).\n" in protocol_header(df)
    df.loc[0, "selected_on"] = "dev/accuracy"
    with pytest.raises(MixedProtocols, match="key selected_on: dev/accuracy, dev/mcc;"):
        sweep_table(df, ["method"])


def test_collect_reads_old_runs_nist_as_nist_nltk(tmp_path):
    """Runs made before the rename wrote nltk's NIST as "NIST"; it is collected under its new name."""
    from analysis.collect import collect

    metrics = {"BLEU": 64.5, "NIST": 5.65, "step": 120}
    (tmp_path / "summary.json").write_text(json.dumps({
        "task": "e2e", "method": "lora", "status": "ok",
        "metrics": {"main_metric": "valid/BLEU", "valid": {"best": metrics, "final": metrics}}}))
    df = collect([tmp_path])
    assert dict(zip(df["metric"], df["best"])) == {"BLEU": 64.5, "nist_nltk": 5.65}
    assert dict(zip(df["metric"], df["is_main"])) == {"BLEU": True, "nist_nltk": False}


@pytest.fixture(scope="module")
def spectrum_runs(tmp_path_factory, data_dir):
    """Runs `spectrum` measures (FT^Top2; full FT of the fused GPT-2 Conv1D) or refuses (BitFit)."""
    return make_runs(tmp_path_factory.mktemp("spectrum_runs"), {
        "ft_top2": ["method=ft_top2"], "gpt2_ft": ["model=tiny_gpt2", "method=full_ft"],
        "bitfit": ["method=bitfit"]}, data_dir)


@pytest.mark.parametrize("name,r", [("r2", 2), ("r4", 4), ("gpt2", 2)])
def test_spectrum_of_a_lora_update_stays_within_its_rank(runs, name, r):
    from analysis.spectrum import run_table

    table = run_table(runs / name)
    assert sorted(zip(table["layer"], table["weight_type"], table["module"])) \
        == sorted(lora_factors(runs / name))
    assert (table["rank"] == r).all()
    # ΔW = (α/r)·B·A has rank <= r; measuring W0 + ΔW instead would give ~20 of 32.
    assert table["effective_rank_90"].between(1, r).all()
    assert (table["stable_rank"] <= r + 1e-9).all()


@pytest.mark.parametrize("run_name,saved,key,rows", [
    ("full_ft", "bert.encoder.layer.0.attention.self.query.weight",
     Key(0, "wq", "attention.self.query"), slice(None)),
    # GPT-2: c_attn is a Conv1D (in, 3·out); wv is the third third of its transpose.
    ("gpt2_ft", "transformer.h.1.attn.c_attn.weight", Key(1, "wv", "attn.c_attn"), slice(64, 96)),
])
def test_spectrum_of_ft_is_measured_against_the_pretrained_weights(runs, spectrum_runs, run_name,
                                                                    saved, key, rows):
    from analysis.spectrum import norm_ratio, run_table
    from lora_exp.export import read_weights

    run_dir = (runs if run_name == "full_ft" else spectrum_runs) / run_name
    table = run_table(run_dir)
    # FT trains every weight; measured are the four attention types, in both layers.
    assert sorted(zip(table["layer"], table["weight_type"])) \
        == [(layer, wt) for layer in (0, 1) for wt in ("wk", "wo", "wq", "wv")]
    assert table["rank"].isna().all()
    w_tuned = read_weights(run_dir)[saved].T[rows] if "gpt2" in run_name else read_weights(run_dir)[saved]
    w0 = pretrained_weights(run_dir, [key])[key]
    row = table[(table["layer"] == key.layer) & (table["weight_type"] == key.weight_type)].iloc[0]
    assert row["norm_ratio"] == pytest.approx(norm_ratio(w0, w_tuned.double() - w0), rel=1e-9)
    assert row["norm_ratio"] > 0


def test_spectrum_writes_the_table_and_both_plots(runs, spectrum_runs, tmp_path, capsys):
    from analysis.spectrum import COLUMNS

    dirs = [runs / "r2", runs / "r4", runs / "full_ft", spectrum_runs / "ft_top2"]
    assert main(["spectrum", *map(str, dirs), "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "spectrum.csv")
    assert list(table.columns) == COLUMNS
    assert table.groupby("method").size().to_dict() == {"lora": 8, "full_ft": 8, "ft_top2": 8}
    assert table["intruders"].between(0, 10).all() and (table["norm_ratio"] > 0).all()
    for plot in ("intruders_by_rank", "effective_rank"):
        assert (tmp_path / f"{plot}.png").stat().st_size > 0
    per_run = pd.read_csv(tmp_path / "intruders_by_rank.csv")
    assert sorted(per_run["run_dir"]) == sorted(map(str, dirs))
    r4 = table[table["run_dir"] == str(runs / "r4")]["intruders"].mean()
    assert per_run.set_index("run_dir").loc[str(runs / "r4"), "intruders_per_matrix"] == r4
    groups = pd.read_csv(tmp_path / "effective_rank.csv").groupby("group").size().to_dict()
    assert groups == {"lora r=2": 4, "lora r=4": 4, "full_ft": 8, "ft_top2": 8}
    assert "wrote" in capsys.readouterr().out


def test_spectrum_flags_set_the_intruder_definition(runs, tmp_path):
    assert main(["spectrum", str(runs / "r2"), "--intruder-k", "3", "--intruder-eps", "1.0",
                 "--out", str(tmp_path)]) == 0
    # ε = 1 makes every one of the top k an intruder (no singular vector survives exactly).
    assert (pd.read_csv(tmp_path / "spectrum.csv")["intruders"] == 3).all()


@pytest.mark.parametrize("args,needles", [
    (["bitfit"], ["method=bitfit", "supports the methods full_ft, ft_top2, lora"]),
    (["ft_top2", "--intruder-k", "0"], ["--intruder-k=0", "valid: k ≥ 1"]),
    (["no_such_run"], ["not a run directory"]),
])
def test_spectrum_errors(spectrum_runs, tmp_path, capsys, args, needles):
    out = tmp_path / "out"
    assert main(["spectrum", str(spectrum_runs / args[0]), *args[1:], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert all(n in err for n in needles), err
    assert not (out / "spectrum.csv").exists()


def test_forgetting_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["forgetting", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path}: not a run directory (no summary.json)\n"
    assert not (out / "forgetting.json").exists()


def test_sweep_forgetting_plots_task_metric_against_forgetting(runs, tmp_path, capsys):
    for name in ("r2", "full_ft"):  # one forgetting.json per run, found again by the sweep
        assert main(["forgetting", str(runs / name), "--out", str(tmp_path / "f" / name)]) == 0
    assert "stsb_zero_shot_spearman before" in capsys.readouterr().out
    records = [json.loads((tmp_path / "f" / n / "forgetting.json").read_text())[0]
               for n in ("r2", "full_ft")]
    assert main(["sweep", str(tmp_path / "f"), "--forgetting", "--out", str(tmp_path / "s")]) == 0
    table = pd.read_csv(tmp_path / "s" / "learning_vs_forgetting.csv").set_index("run_dir")
    assert (tmp_path / "s" / "learning_vs_forgetting.png").stat().st_size > 0
    assert not (tmp_path / "s" / "sweep.md").exists()  # the flag draws this plot instead
    for rec, label in zip(records, ("lora r=2", "full_ft")):
        row = table.loc[rec["run_dir"]]
        assert row["label"] == label and row["probe"] == "stsb_zero_shot_spearman"
        assert row["forgetting"] == pytest.approx(rec["before"] - rec["after"])
        assert row["task_metric"] == pytest.approx(rec["task_metric"])
    assert "2 runs: lora r=2 (1), full_ft (1)" in capsys.readouterr().out


def test_sweep_forgetting_without_any_forgetting_json(runs, tmp_path, capsys):
    assert main(["sweep", str(runs), "--forgetting", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no forgetting.json under {runs}: run `python -m analysis "
                          "forgetting") and err.count("\n") == 1


def test_a_run_whose_weights_are_not_in_this_checkout(runs, tmp_path):
    """A clone has a run's committed records (adapter_config.json included) but not its ignored
    weights: a clear error naming the missing file, not a traceback."""
    import shutil
    clone = tmp_path / "r2"
    shutil.copytree(runs / "r2", clone, ignore=shutil.ignore_patterns("*.safetensors", "checkpoint"))
    proc = subprocess.run([sys.executable, "-m", "analysis", "subspace", str(clone), str(runs / "r4"),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no adapter weights (adapter_model.safetensors missing" in proc.stderr


def test_measurements_are_recorded_beside_the_run(runs, tmp_path):
    """Spectrum and forgetting are written next to the run's records, so a checkout without the
    run's weights still has them; a record of another finish of the run is not used."""
    import shutil

    from analysis import forgetting, spectrum
    from analysis.runs import RunError
    from lora_exp.export import WEIGHTS

    run_dir = tmp_path / "r2"
    shutil.copytree(runs / "r2", run_dir, ignore=shutil.ignore_patterns("measured"))
    table, record = spectrum.run_table(run_dir), forgetting.measure(run_dir)
    assert {p.name for p in (run_dir / "measured").iterdir()} == {"spectrum.measured.json", "forgetting.measured.json"}
    (run_dir / WEIGHTS).unlink()
    pd.testing.assert_frame_equal(spectrum.run_table(run_dir), table)
    assert forgetting.measure(run_dir) == record
    # Other parameters, or the run finished again: measured anew, which needs the weights.
    with pytest.raises(RunError, match="no adapter weights"):
        spectrum.run_table(run_dir, k=5)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["finished_at"] += 1
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(RunError, match="no adapter weights"):
        spectrum.run_table(run_dir)
