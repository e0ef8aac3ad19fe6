"""φ, the normalized subspace similarity (§7.2): hand-computed cases, loop definition, batching."""
import math

import pandas as pd
import pytest
import torch

from analysis.plots import phi_heatmap
from analysis.subspace import (expected_random_phi, grassmann_phi_w_vs_delta, phi,
                               random_baseline, right_singular_basis, subspace_similarity,
                               top_direction_similarity)

ATOL = 1e-12

# Hand example in R^3. A1's right-singular vectors are e1 (σ=2) and e2 (σ=1). A2's rows are
# orthogonal with norms 6 and 3, so its right-singular vectors are v1 = (1, 2, 2)/3 and
# v2 = (2, 1, -2)/3. M = U1^T U2 = [[1/3, 2/3], [2/3, 1/3]], M² = [[1, 4], [4, 1]]/9:
#   φ(1,1) = 1/9;  φ(1,2) = φ(2,1) = (1 + 4)/9 = 5/9;  φ(2,2) = (1 + 4 + 4 + 1)/9 / 2 = 5/9.
A1_HAND = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
A2_HAND = torch.tensor([[2.0, 4.0, 4.0], [2.0, 1.0, -2.0]])
PHI_HAND = torch.tensor([[1 / 9, 5 / 9], [5 / 9, 5 / 9]], dtype=torch.float64)


def _gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_right_singular_basis_order_and_shape():
    # Rows 5·e3 and 2·e2: the top right-singular vector is e3, the next e2 (signs are free).
    A = torch.tensor([[0.0, 0.0, 5.0], [0.0, 2.0, 0.0]])
    U = right_singular_basis(A)
    assert U.shape == (3, 2) and U.dtype == torch.float64
    expected = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(U.abs(), expected, atol=ATOL, rtol=0)
    assert right_singular_basis(_gaussian(4, 2, 3)).shape == (4, 3, 2)


def test_phi_hand_example():
    torch.testing.assert_close(subspace_similarity(A1_HAND, A2_HAND), PHI_HAND, atol=ATOL, rtol=0)
    top = top_direction_similarity(subspace_similarity(A1_HAND, A2_HAND))
    assert top.item() == pytest.approx(1 / 9)


def test_phi_identical_subspaces_is_one():
    A = _gaussian(4, 10)
    # Same matrix: same basis, so ‖U^{i⊤} U^{j}‖² = min(i, j) and φ = 1 everywhere.
    torch.testing.assert_close(subspace_similarity(A, A), torch.ones(4, 4, dtype=torch.float64))
    # An invertible mix of the rows spans the same row space, but orders directions differently:
    # only U^r spans all of it, so φ(i, r) = φ(r, j) = 1 (φ(r, r) = 1 in particular).
    G = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 1.0, 3.0, 0.0], [0.0, 0.0, -1.0, 2.0],
                      [0.0, 0.0, 0.0, 0.5]], dtype=torch.float64)  # det = -1
    Phi = subspace_similarity(A, G @ A)
    torch.testing.assert_close(Phi[-1, :], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(Phi[:, -1], torch.ones(4, dtype=torch.float64))


def test_phi_orthogonal_row_spaces_is_zero():
    A1 = torch.zeros(3, 5, dtype=torch.float64)
    A2 = torch.zeros(2, 5, dtype=torch.float64)
    A1[:, :3] = _gaussian(3, 3, seed=1)  # row space ⊂ span(e1, e2, e3)
    A2[:, 3:] = _gaussian(2, 2, seed=2)  # row space ⊂ span(e4, e5)
    torch.testing.assert_close(subspace_similarity(A1, A2), torch.zeros(3, 2, dtype=torch.float64),
                               atol=ATOL, rtol=0)


def test_phi_matches_loop_definition():
    U1 = right_singular_basis(_gaussian(3, 7, seed=3))
    U2 = right_singular_basis(_gaussian(5, 7, seed=4))
    expected = torch.empty(3, 5, dtype=torch.float64)
    for i in range(1, 4):
        for j in range(1, 6):
            block_norm = torch.linalg.matrix_norm(U1[:, :i].T @ U2[:, :j])
            expected[i - 1, j - 1] = block_norm**2 / min(i, j)
    torch.testing.assert_close(phi(U1, U2), expected, atol=ATOL, rtol=0)


def test_phi_in_unit_interval():
    Phi = subspace_similarity(_gaussian(5, 6, 12, seed=5), _gaussian(5, 9, 12, seed=6))
    assert Phi.shape == (5, 6, 9)
    assert Phi.min() >= -ATOL and Phi.max() <= 1 + ATOL


def test_batched_equals_per_item():
    A1s, A2s = _gaussian(3, 4, 16, seed=7), _gaussian(3, 6, 16, seed=8)
    batched = subspace_similarity(A1s, A2s)
    for n in range(3):
        single = subspace_similarity(A1s[n], A2s[n])
        torch.testing.assert_close(batched[n], single, atol=ATOL, rtol=0)
    torch.testing.assert_close(top_direction_similarity(batched), batched[:, 0, 0])


def test_phi_rejects_different_spaces():
    with pytest.raises(ValueError, match="same k"):
        phi(torch.eye(4)[:, :2], torch.eye(5)[:, :2])


def test_expected_random_phi_values():
    assert expected_random_phi(64, 2, 8).item() == pytest.approx(0.125)
    assert expected_random_phi(64, 8, 2).item() == pytest.approx(0.125)
    grid = expected_random_phi(64, torch.arange(1, 4)[:, None], torch.arange(1, 3)[None, :])
    expected = torch.tensor([[1, 2], [2, 2], [3, 3]], dtype=torch.float64) / 64
    torch.testing.assert_close(grid, expected)


def test_random_baseline_mean_matches_max_ij_over_k():
    # Tolerance: 5 standard errors of the mean, cell by cell (se = sample sd / √n). The noisiest
    # cell, φ(1, 16), has sd ≈ 0.075, so se ≈ 0.0024 at n = 1000; φ(1, 1) = (u·v)² has sd ≈ 0.022.
    k, r1, r2, n = 64, 8, 16, 1000
    Phi = random_baseline(k, r1, r2, generator=torch.Generator().manual_seed(0), n=n)
    assert Phi.shape == (n, r1, r2)
    i, j = torch.arange(1, r1 + 1)[:, None], torch.arange(1, r2 + 1)[None, :]
    expected = expected_random_phi(k, i, j)
    standard_error = Phi.std(dim=0) / math.sqrt(n)
    assert ((Phi.mean(dim=0) - expected).abs() <= 5 * standard_error).all()
    assert standard_error.max() < 0.003  # the test has power: 5 se is below 0.015 everywhere


def test_grassmann_phi_w_vs_delta_along_third_direction():
    # W = Q1 diag(5, 4, 3, 2, 1) Q2^T and ΔW = 0.3·u3 v3^T: ΔW's only direction is W's third, so
    # φ(i, 1) = ‖U_W^{i⊤} v3‖² = 0 for i < 3 and 1 from i = 3 on.
    Q1, _ = torch.linalg.qr(_gaussian(6, 6, seed=9))
    Q2, _ = torch.linalg.qr(_gaussian(5, 5, seed=10))
    W = Q1[:, :5] @ torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ Q2.T
    delta_w = 0.3 * torch.outer(Q1[:, 2], Q2[:, 2])
    Phi = grassmann_phi_w_vs_delta(W, delta_w, top_w=4, top_delta=1)
    torch.testing.assert_close(Phi, torch.tensor([[0.0], [0.0], [1.0], [1.0]], dtype=torch.float64),
                               atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="top_w"):
        grassmann_phi_w_vs_delta(W, delta_w, top_w=6, top_delta=1)


def test_phi_heatmap_writes_png_and_csv(tmp_path):
    path = phi_heatmap(PHI_HAND, tmp_path / "fig" / "phi.png", "hand example", "j", "i")
    assert path == tmp_path / "fig" / "phi.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(path.with_suffix(".csv"), index_col=0)
    assert list(table.index) == [1, 2] and list(table.columns) == ["1", "2"]
    assert table.loc[1, "1"] == pytest.approx(1 / 9) and table.loc[2, "2"] == pytest.approx(5 / 9)
    assert not math.isnan(table.to_numpy().sum())
