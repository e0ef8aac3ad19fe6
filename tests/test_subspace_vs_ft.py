"""`subspace` with a full fine-tuning run: LoRA's top-r directions of ΔW against FT's top-r."""
import pytest
import torch

from analysis.__main__ import main
from analysis.per_layer import subspace_of_updates, subspace_per_layer
from analysis.runs import RunError, finetuned_weights, lora_factors
from tests.test_analysis_cli import make_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    return make_runs(tmp_path_factory.mktemp("vs_ft"), {
        "lora": ["rank=2"], "ft": ["method=full_ft"], "ft_seed1": ["method=full_ft", "seed=1"],
        "bitfit": ["method=bitfit"]}, data_dir)


def test_lora_against_ft_compares_top_r_directions_of_both_updates(runs, tmp_path):
    table = subspace_per_layer(runs / "lora", runs / "ft", tmp_path)  # dispatches on the methods
    assert set(table["weight_type"]) == {"wq", "wv"} and (table["r_a"] == 2).all()
    # φ(r, r) computed here from the runs' own ΔW: the overlap of the two top-2 row spaces
    factors = lora_factors(runs / "lora")
    tuned = finetuned_weights(runs / "ft", ["wq", "wv"])
    for row in table.itertuples():
        key = next(k for k in factors if (k.layer, k.weight_type) == (row.layer, row.weight_type))
        w0, wt = tuned[key]
        Va = torch.linalg.svd(factors[key].delta_w)[2][:2].T
        Vb = torch.linalg.svd(wt - w0)[2][:2].T
        assert row.phi_top_r == pytest.approx(float((Va.T @ Vb).square().sum() / 2), abs=1e-9)
        assert row.expected_random_top_r == pytest.approx(2 / w0.shape[1])
    assert (tmp_path / "subspace.csv").is_file() and (tmp_path / "random_phi.png").is_file()


def test_a_run_against_itself_is_one_subspace(runs, tmp_path):
    table = subspace_of_updates(runs / "lora", runs / "lora", tmp_path)
    assert table["phi_top_r"].tolist() == pytest.approx([1.0] * len(table))


@pytest.mark.parametrize("a,b,needle", [("ft", "ft_seed1", "needs a LoRA run"),
                                        ("lora", "bitfit", "method=bitfit has no weight update")])
def test_pairs_without_lora_directions_are_a_short_error(runs, tmp_path, capsys, a, b, needle):
    assert main(["subspace", str(runs / a), str(runs / b), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    with pytest.raises(RunError):
        subspace_of_updates(runs / a, runs / b, tmp_path)
