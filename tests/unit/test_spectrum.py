"""The spectral measures of analysis/spectrum.py on matrices whose answers are known by hand."""
import math

import pytest
import torch

from analysis.spectrum import effective_rank_90, intruders, norm_ratio, stable_rank


def orthonormal(n: int, seed: int) -> torch.Tensor:
    """A random n×n orthogonal matrix (float64)."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]


U, V = orthonormal(6, 0), orthonormal(6, 1)


def usv(sigma: list[float], left: list[int], right: list[int]) -> torch.Tensor:
    """Σ σᵢ · U[:, left[i]] · V[:, right[i]]ᵀ: a 6×6 matrix with chosen singular directions."""
    return sum(s * torch.outer(U[:, i], V[:, j]) for s, i, j in zip(sigma, left, right))


def test_effective_and_stable_rank_of_known_singular_values():
    # σ = 3, 2, 1, 0.5 -> σ² = 9, 4, 1, 0.25, ‖ΔW‖_F² = 14.25, 90% of it = 12.825.
    # Cumulative σ²: 9 < 12.825 <= 13, so 2 singular values hold 90%. (Summing σ instead of σ²
    # would give 3: 3, 5 < 0.9·6.5 = 5.85 <= 6.)
    dw = usv([3, 2, 1, 0.5], [0, 1, 2, 3], [0, 1, 2, 3])
    assert effective_rank_90(dw) == 2
    # 99% = 14.1075 needs all four (9 + 4 + 1 = 14 falls short).
    assert effective_rank_90(dw, share=0.99) == 4
    # stable rank = Σσ² / σ₁² = 14.25 / 9 = 1.58333 (with σ: 6.5 / 3 = 2.1667; unsquared norms:
    # sqrt(14.25) / 3 = 1.258).
    assert stable_rank(dw) == pytest.approx(14.25 / 9, rel=1e-12)


def test_rank_one_and_zero_updates():
    dw = usv([7.0], [2], [4])
    assert effective_rank_90(dw) == 1 and stable_rank(dw) == pytest.approx(1.0, rel=1e-12)
    zero = torch.zeros(4, 3, dtype=torch.float64)
    assert effective_rank_90(zero) == 0 and stable_rank(zero) == 0.0


def test_norm_ratio():
    w0 = usv([5, 4, 3], [0, 1, 2], [0, 1, 2])  # ‖W0‖_F = sqrt(25 + 16 + 9) = sqrt(50)
    assert norm_ratio(w0, 0.1 * w0) == pytest.approx(0.1, rel=1e-12)
    dw = usv([3, 2, 1, 0.5], [0, 1, 2, 3], [0, 1, 2, 3])  # ‖ΔW‖_F = sqrt(14.25)
    assert norm_ratio(w0, dw) == pytest.approx(math.sqrt(14.25 / 50), rel=1e-12)


# W0 of rank 3 in R^{6×6}: singular values 5, 4, 3 on U[:, 0:3], V[:, 0:3]; U[:, 3:] is orthogonal
# to everything W0 does.
W0 = usv([5, 4, 3], [0, 1, 2], [0, 1, 2])


def test_an_orthogonal_direction_in_the_top_k_is_one_intruder():
    # W0 + ΔW has singular values 10, 5, 4, 3: the top left singular vector is U[:, 3], whose
    # cosine with W0's directions U[:, 0:3] is 0 < ε; the other three are W0's own (cosine 1).
    dw = usv([10.0], [3], [3])
    assert intruders(W0, dw) == 1
    # Scaling W0 keeps its singular vectors: no intruders.
    assert intruders(W0, 0.1 * W0) == 0
    full_rank = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert intruders(full_rank, 0.1 * full_rank) == 0


def test_k_bounds_where_intruders_are_looked_for():
    # σ = 5, 4.5, 4, 3: the new direction is second, so the top 1 holds no intruder.
    dw = usv([4.5], [3], [3])
    assert intruders(W0, dw, k=1) == 0 and intruders(W0, dw, k=2) == 1


def test_intruders_are_read_from_left_singular_vectors_and_eps_is_the_cutoff():
    # A new output direction: W0 + ΔW maps V[:, 0] to 5·U[:, 0] + 10·U[:, 3], so its top left
    # singular vector is (U0 + 2·U3)/sqrt(5), cosine 1/sqrt(5) = 0.447 with U[:, 0]: an intruder
    # for ε = 0.5, not for ε = 0.4. The right singular vectors are W0's.
    new_output = usv([10.0], [3], [0])
    assert intruders(W0, new_output, eps=0.5) == 1
    assert intruders(W0, new_output, eps=0.4) == 0
    # A new input direction only (the transpose situation): the left singular vectors stay W0's.
    new_input = usv([10.0], [0], [3])
    assert intruders(W0, new_input) == 0


@pytest.mark.parametrize("k,eps", [(0, 0.5), (10, 0.0), (10, 1.5)])
def test_intruder_definition_out_of_range_is_refused(k, eps):
    with pytest.raises(ValueError, match="--intruder-k"):
        intruders(W0, W0, k=k, eps=eps)
