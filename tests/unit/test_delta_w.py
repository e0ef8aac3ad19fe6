"""Table 7 quantities (§7.3): ΔW built along known singular directions of W, checked by hand."""
import math

import pytest
import torch

from analysis.delta_w import projection_norm, table7_row, table7_rows, top_singular

D, K = 6, 5
S = (5.0, 4.0, 3.0, 2.0, 1.0)  # singular values of W, so ‖W‖_F = √55
NORM_W = math.sqrt(55.0)


def _gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def svd_w():
    """W = U diag(S) V^T with known orthonormal U (D×D) and V (K×K); returns (W, U, V)."""
    U, _ = torch.linalg.qr(_gaussian(D, D, seed=1))
    V, _ = torch.linalg.qr(_gaussian(K, K, seed=2))
    W = U[:, :K] @ torch.diag(torch.tensor(S, dtype=torch.float64)) @ V.T
    return W, U, V


def _check_row(row, **expected):
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_top_singular_layout(svd_w):
    W, _, _ = svd_w
    U, V = top_singular(W, 2)
    assert U.shape == (D, 2) and V.shape == (2, K)
    # U^T W V^T = diag(σ1, σ2) in the paper's layout (signs of the pairs agree).
    expected = torch.diag(torch.tensor([5.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(U.T @ W @ V.T, expected)
    with pytest.raises(ValueError, match="r must be"):
        top_singular(W, K + 1)


def test_projection_norm_by_hand(svd_w):
    W, U, V = svd_w
    assert projection_norm(W, U[:, :1], V[:, :1].T) == pytest.approx(5.0)  # u1^T W v1 = σ1
    assert projection_norm(W, U[:, :1], V[:, 1:2].T) == pytest.approx(0.0, abs=1e-12)  # u1 ⟂ W v2
    assert projection_norm(W, U[:, :2], V[:, :2].T) == pytest.approx(math.sqrt(25 + 16))


def test_delta_along_third_direction(svd_w):
    # ΔW = 0.6·u3 v3^T: its top pair is W's third, so U^T W V^T = σ3 = 3 and amplification = 0.6/3.
    W, U, V = svd_w
    row = table7_row(W, 0.6 * torch.outer(U[:, 2], V[:, 2]), r=1)
    _check_row(row, proj_delta=3.0, proj_w=5.0, norm_w=NORM_W, norm_delta=0.6, amplification=0.2)


def test_delta_along_two_weak_directions(svd_w):
    # ΔW = 0.8·u4 v4^T + 0.6·u5 v5^T: ‖ΔW‖ = 1, proj_delta = √(σ4² + σ5²) = √5,
    # proj_w = √(σ1² + σ2²) = √41.
    W, U, V = svd_w
    delta_w = 0.8 * torch.outer(U[:, 3], V[:, 3]) + 0.6 * torch.outer(U[:, 4], V[:, 4])
    row = table7_row(W, delta_w, r=2)
    _check_row(row, proj_delta=math.sqrt(5.0), proj_w=math.sqrt(41.0), norm_w=NORM_W,
               norm_delta=1.0, amplification=1 / math.sqrt(5.0))


def test_delta_mixing_directions(svd_w):
    # ΔW = 2·(u1 + u2)/√2 · v1^T: U^T W V^T = (u1 + u2)^T (σ1 u1)/√2 = 5/√2, amplification = 2√2/5.
    W, U, V = svd_w
    row = table7_row(W, 2.0 * torch.outer((U[:, 0] + U[:, 1]) / math.sqrt(2.0), V[:, 0]), r=1)
    _check_row(row, proj_delta=5 / math.sqrt(2.0), norm_delta=2.0,
               amplification=2 * math.sqrt(2.0) / 5)


def test_delta_on_a_pair_w_ignores(svd_w):
    # ΔW = 0.5·u1 v2^T: u1^T W v2 = 0, W does not map v2 onto u1 at all, so amplification = ∞.
    W, U, V = svd_w
    row = table7_row(W, 0.5 * torch.outer(U[:, 0], V[:, 1]), r=1)
    assert row["proj_delta"] == pytest.approx(0.0, abs=1e-12)
    assert row["amplification"] > 1e12


def test_zero_delta_is_nan(svd_w):
    W, _, _ = svd_w
    row = table7_row(W, torch.zeros(D, K), r=1)
    assert math.isnan(row["proj_delta"]) and math.isnan(row["amplification"])
    assert row["norm_delta"] == 0.0


def test_rows_match_definition():
    # One batch, two paths: the rank-3 ΔW is captured by the sketch, the full-rank one falls back
    # to the full SVD. Both must agree with top_singular + projection_norm, the definition.
    W = _gaussian(20, 30, seed=3).float()  # fp32 inputs, as in checkpoints
    low_rank = (_gaussian(20, 3, seed=4) @ _gaussian(3, 30, seed=5)).float()
    full_rank = _gaussian(20, 30, seed=6).float()
    rows = table7_rows([W, W], [low_rank, full_rank], r=3)
    W64 = W.double()
    for row, delta_w in zip(rows, [low_rank.double(), full_rank.double()]):
        # rel 1e-6: the sketch sees the fp32-rounded ΔW, whose rank is 3 only up to ~1e-7.
        expected_proj_delta = projection_norm(W64, *top_singular(delta_w, 3))
        assert row["proj_delta"] == pytest.approx(expected_proj_delta, rel=1e-6)
        assert row["proj_w"] == pytest.approx(projection_norm(W64, *top_singular(W64, 3)), rel=1e-9)
        assert row["norm_w"] == pytest.approx(torch.linalg.matrix_norm(W64).item(), rel=1e-12)
        assert row["norm_delta"] == pytest.approx(torch.linalg.matrix_norm(delta_w).item(), rel=1e-12)
        assert row["amplification"] == pytest.approx(row["norm_delta"] / row["proj_delta"], rel=1e-12)


def test_batched_equals_per_item():
    # Mixed shapes are grouped; random subspaces are drawn in layer order, so even proj_random
    # matches one-by-one calls that share a generator.
    shapes = [(8, 6), (5, 7), (8, 6)]
    Ws = [_gaussian(*s, seed=10 + n) for n, s in enumerate(shapes)]
    deltas = [_gaussian(d, 2, seed=20 + n) @ _gaussian(2, k, seed=30 + n)
              for n, (d, k) in enumerate(shapes)]
    batched = table7_rows(Ws, deltas, r=2, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    for row, W, delta_w in zip(batched, Ws, deltas):
        single = table7_row(W, delta_w, r=2, generator=gen)
        assert row.keys() == single.keys()
        for key in row:
            assert row[key] == pytest.approx(single[key], rel=1e-9), key


def test_proj_random_mean_square(svd_w):
    # For independent uniform U (d×r) and V (r×k): E‖U^T W V^T‖² = r²‖W‖²/(d·k) = 4·55/(6·5) = 22/3.
    # Over 2000 draws the empirical relative sd of the mean is about 1.5%, so 6% is ~4 sd.
    W, _, _ = svd_w
    n = 2000
    rows = table7_rows([W] * n, [W] * n, r=2, generator=torch.Generator().manual_seed(0))
    mean_sq = sum(row["proj_random"] ** 2 for row in rows) / n
    assert mean_sq == pytest.approx(4 * 55 / 30, rel=0.06)


def test_rejects_bad_inputs(svd_w):
    W, _, _ = svd_w
    with pytest.raises(ValueError, match="same shape"):
        table7_row(W, torch.zeros(K, D), r=1)
    with pytest.raises(ValueError, match="differ in length"):
        table7_rows([W, W], [W], r=1)
    with pytest.raises(ValueError, match="r must be"):
        table7_row(W, W, r=K + 1)
