"""Normalized subspace similarity φ between LoRA ``A`` matrices (paper §7.2, App. G, H.1-H.3).

φ(A1, A2, i, j) = ‖U_{A1}^{i⊤} U_{A2}^{j}‖_F² / min(i, j) ∈ [0, 1], where U_A holds the
right-singular vectors of A ∈ R^{r×k} (columns, by decreasing singular value) and U^i is its first
i columns. It equals (1/p)·Σσ², with σ the cosines of the principal angles between the two
subspaces and p = min(i, j): 1 for nested subspaces, 0 for orthogonal ones.

Everything here is computed for all (i, j) at once and accepts leading batch dimensions, so a
whole model (all layers, both wq and wv) is one call. Computation is in float64: φ near 0 and 1
is exactly the regime the paper reads off its figures.
"""
from __future__ import annotations

import torch


def right_singular_basis(A: torch.Tensor) -> torch.Tensor:
    """U_A: the right-singular vectors of A as columns, by decreasing singular value (§7.2).

    Args:
        A: a LoRA ``A`` matrix of shape (r, k), or a batch of shape (..., r, k).

    Returns:
        float64 tensor of shape (..., k, min(r, k)); column i is the i-th right-singular vector.
        Signs are arbitrary (φ does not depend on them).

    Raises:
        ValueError: if A has fewer than 2 dimensions.
    """
    if A.ndim < 2:
        raise ValueError(f"A must have shape (..., r, k), got shape {tuple(A.shape)}")
    # Thin SVD: Vh is (..., min(r, k), k), rows already sorted by decreasing singular value.
    _, _, Vh = torch.linalg.svd(A.to(torch.float64), full_matrices=False)
    return Vh.mT  # (..., k, min(r, k))


def phi(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """The full matrix Φ[i-1, j-1] = φ(i, j) = ‖U1[:, :i]^⊤ U2[:, :j]‖_F² / min(i, j) (§7.2).

    ‖U1^{i⊤} U2^{j}‖_F² is the sum of M² over the top-left i×j block of M = U1^⊤ U2, so a 2-D
    cumulative sum of M² gives it for every (i, j) in one pass.

    Args:
        U1: orthonormal columns, shape (k, r1) or (..., k, r1).
        U2: orthonormal columns, shape (k, r2) or (..., k, r2); batch dims broadcast with U1's.

    Returns:
        float64 tensor Φ of shape (..., r1, r2), values in [0, 1] up to rounding (not clamped,
        so a bad basis shows up instead of being hidden).

    Raises:
        ValueError: if the two bases do not live in the same space R^k.
    """
    if U1.ndim < 2 or U2.ndim < 2 or U1.shape[-2] != U2.shape[-2]:
        raise ValueError(
            f"U1 and U2 must have shapes (..., k, r1) and (..., k, r2) with the same k, "
            f"got {tuple(U1.shape)} and {tuple(U2.shape)}"
        )
    M = U1.to(torch.float64).mT @ U2.to(torch.float64)  # (..., r1, r2)
    block_sq_norms = M.square().cumsum(dim=-2).cumsum(dim=-1)  # [i-1, j-1] = ‖M[:i, :j]‖_F²
    r1, r2 = M.shape[-2:]
    i = torch.arange(1, r1 + 1, dtype=torch.float64)
    j = torch.arange(1, r2 + 1, dtype=torch.float64)
    return block_sq_norms / torch.minimum(i[:, None], j[None, :])  # (r1, r2) broadcasts over ...


def subspace_similarity(A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """Φ = φ(A1, A2, i, j) for all i ≤ r1, j ≤ r2 (§7.2; Figs. 3, 4, 6, 7).

    Args:
        A1: LoRA ``A`` of shape (..., r1, k), e.g. the r=8 run.
        A2: LoRA ``A`` of shape (..., r2, k), e.g. the r=64 run or another seed.

    Returns:
        float64 tensor of shape (..., r1, r2) (when r1, r2 ≤ k).
    """
    return phi(right_singular_basis(A1), right_singular_basis(A2))


def random_baseline(
    k: int, r1: int, r2: int, generator: torch.Generator | None = None, n: int = 1
) -> torch.Tensor:
    """Φ between pairs of Gaussian random matrices of shapes (r1, k) and (r2, k) (Fig. 4, panel 3).

    The top-i right-singular subspace of a Gaussian matrix is uniformly distributed, so the mean
    of the result tends to :func:`expected_random_phi`.

    Args:
        k: ambient dimension (the layer's input width).
        r1: rows of the first matrix.
        r2: rows of the second matrix.
        generator: seeds the draws; None uses torch's global generator.
        n: number of independent pairs.

    Returns:
        float64 tensor of shape (n, r1, r2), always with the leading n (take ``[0]`` for one panel).
    """
    A1 = torch.randn(n, r1, k, generator=generator, dtype=torch.float64)
    A2 = torch.randn(n, r2, k, generator=generator, dtype=torch.float64)
    return subspace_similarity(A1, A2)


def expected_random_phi(k: int, i: int | torch.Tensor, j: int | torch.Tensor) -> torch.Tensor:
    """E φ for independent uniformly random subspaces of dimensions i and j in R^k: max(i, j)/k.

    Derivation: let P_i, Q_j be the orthogonal projectors onto the two subspaces, with
    ‖U^{i⊤} U^{j}‖_F² = tr(P_i Q_j). A uniformly random i-dim subspace is invariant under every
    rotation, so E P_i commutes with all rotations and is c·I; tr P_i = i gives E P_i = (i/k)·I.
    By independence E tr(P_i Q_j) = tr(E P_i · Q_j) = (i/k)·tr Q_j = i·j/k, hence
    E φ = i·j / (k·min(i, j)) = max(i, j)/k. This is the level of the random panel of Fig. 4: at
    k = 12288 (GPT-3) it is ≈ 0 everywhere; at k = 768 and i, j ≤ 64 it is at most 1/12.

    Args:
        k: ambient dimension.
        i: subspace dimension(s) of the first basis; tensors broadcast with j (e.g. a column of
            1..r1 against a row of 1..r2 gives the whole expected Φ grid).
        j: subspace dimension(s) of the second basis.

    Returns:
        float64 tensor of max(i, j)/k (0-dim for integer i and j).
    """
    i = torch.as_tensor(i, dtype=torch.float64)
    j = torch.as_tensor(j, dtype=torch.float64)
    return torch.maximum(i, j) / k


def top_direction_similarity(Phi: torch.Tensor) -> torch.Tensor:
    """φ(·, ·, 1, 1): how much the top singular directions agree (§7.2, "why r=1 works").

    Args:
        Phi: Φ of shape (..., r1, r2).

    Returns:
        tensor of shape (...), the [0, 0] entry of each Φ.
    """
    return Phi[..., 0, 0]


def grassmann_phi_w_vs_delta(
    W: torch.Tensor, delta_w: torch.Tensor, top_w: int, top_delta: int
) -> torch.Tensor:
    """Φ between the top singular directions of W and of ΔW (§7.3, App. H.3, Fig. 8).

    Both use right-singular vectors (the input side, as φ does for A). For ΔW = (α/r)·B·A with B
    of full column rank these span A's row space, so only top_delta ≤ r is meaningful: beyond the
    rank of ΔW the singular vectors are an arbitrary basis of its null space.

    Args:
        W: pretrained weight of shape (..., d, k).
        delta_w: its update, same shape as W.
        top_w: number of W's directions (rows of Φ), at most min(d, k).
        top_delta: number of ΔW's directions (columns of Φ), at most min(d, k).

    Returns:
        float64 tensor of shape (..., top_w, top_delta).

    Raises:
        ValueError: if the shapes differ or top_w / top_delta are out of range.
    """
    if W.shape != delta_w.shape:
        raise ValueError(f"W and delta_w differ in shape: {tuple(W.shape)}, {tuple(delta_w.shape)}")
    n_dirs = min(W.shape[-2:])
    for name, top in (("top_w", top_w), ("top_delta", top_delta)):
        if not 1 <= top <= n_dirs:
            raise ValueError(f"{name} must be in [1, {n_dirs}] for shape {tuple(W.shape)}: {top}")
    U_w = right_singular_basis(W)[..., :top_w]  # (..., k, top_w)
    U_delta = right_singular_basis(delta_w)[..., :top_delta]  # (..., k, top_delta)
    return phi(U_w, U_delta)
