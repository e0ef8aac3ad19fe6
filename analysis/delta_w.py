"""How ΔW relates to W: projections onto top singular subspaces (paper §7.3, Table 7, App. H.4).

The paper projects W onto an r-dimensional pair of subspaces, ‖U^⊤ W V^⊤‖_F, with U (d×r) and
V (r×k) the top-r left/right singular vectors of ΔW, of W itself, or of a random matrix, and
defines the amplification factor ‖ΔW‖_F / ‖U^⊤ W V^⊤‖_F (U, V from ΔW). Large amplification
means ΔW mostly boosts directions that W itself does not emphasise.

All computation is float64. :func:`table7_rows` batches same-shaped layers through one
``torch.linalg`` call each, so a whole model is a few seconds on a CPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

# Relative Frobenius residual under which ΔW counts as captured by a rank-l sketch. A LoRA ΔW
# computed as (α/r)·B·A in float32 has rank r up to ~1e-7 relative rounding; anything above this
# (e.g. a full fine-tuning delta) falls back to the exact full SVD.
_SKETCH_RTOL = 1e-5
_SKETCH_SEED = 0


def _check_rank(shape: torch.Size, r: int) -> None:
    if len(shape) < 2 or not 1 <= r <= min(shape[-2:]):
        raise ValueError(f"r must be in [1, min(d, k)] for shape {tuple(shape)}, got r={r}")


def top_singular(M: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-r singular vectors of M in the paper's layout, so that U^⊤ M V^⊤ = diag(σ_1..σ_r) (§7.3).

    Args:
        M: matrix of shape (d, k), or a batch (..., d, k).
        r: number of singular directions, 1 ≤ r ≤ min(d, k).

    Returns:
        (U, V): float64 U of shape (..., d, r), the top-r left-singular vectors as columns, and
        float64 V of shape (..., r, k), the top-r right-singular vectors as rows.

    Raises:
        ValueError: if r is out of range.
    """
    _check_rank(M.shape, r)
    U, _, Vh = torch.linalg.svd(M.to(torch.float64), full_matrices=False)
    return U[..., :r], Vh[..., :r, :]


def _projection_norms(W: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(U.mT @ W.to(torch.float64) @ V.mT)  # (...,)


def projection_norm(W: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> float:
    """‖U^⊤ W V^⊤‖_F, the first row of Table 7 (§7.3).

    Args:
        W: matrix of shape (d, k).
        U: orthonormal columns, shape (d, r).
        V: orthonormal rows, shape (r, k).

    Returns:
        the Frobenius norm as a Python float.
    """
    return float(_projection_norms(W, U.to(torch.float64), V.to(torch.float64)))


def _top_singular_energy(W: torch.Tensor, r: int) -> torch.Tensor:
    # With U, V from W itself, U^⊤ W V^⊤ = diag(σ_1..σ_r), so ‖U^⊤ W V^⊤‖_F² = Σ_{i≤r} σ_i²:
    # eigenvalues alone suffice. The Gram matrix of the smaller side is symmetric and its
    # eigvalsh is cheaper than svdvals; squaring only loses precision on the small σ_i, which
    # this sum never uses (float64 error ≈ 1e-16·σ_1²).
    d, k = W.shape[-2:]
    gram = W @ W.mT if d <= k else W.mT @ W  # (b, min(d, k), min(d, k))
    eigvals = torch.linalg.eigvalsh(gram).clamp_min(0)  # ascending; rounding can go below 0
    return eigvals[..., -r:].sum(dim=-1)  # (b,)


def _top_singular_of_delta(delta: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    # A LoRA ΔW has rank ≤ its LoRA rank, so a randomized range sketch Q (d×l) usually captures it
    # exactly: ΔW = Q Q^⊤ ΔW, and the SVD of the small l×k matrix Q^⊤ ΔW gives ΔW's SVD. The
    # residual is checked per matrix; those not captured (higher rank) take the full SVD.
    d, k = delta.shape[-2:]
    sketch = min(d, k, max(2 * r, r + 10))
    if sketch == min(d, k):
        return top_singular(delta, r)
    gen = torch.Generator().manual_seed(_SKETCH_SEED)  # own generator: leaves the caller's alone
    omega = torch.randn(k, sketch, generator=gen, dtype=torch.float64)
    Q, _ = torch.linalg.qr(delta @ omega)  # (b, d, l); range(Q) ⊇ range(ΔW Ω)
    small = Q.mT @ delta  # (b, l, k)
    # Pythagoras: ‖ΔW − Q Q^⊤ ΔW‖² = ‖ΔW‖² − ‖Q^⊤ ΔW‖², without forming the residual.
    norm_sq = torch.linalg.matrix_norm(delta).square()
    residual_sq = norm_sq - torch.linalg.matrix_norm(small).square()
    captured = residual_sq <= _SKETCH_RTOL**2 * norm_sq
    # SVD of the tall transpose (k×l) is cheaper than of the wide l×k: small^⊤ = P S R^⊤.
    P, _, Rh = torch.linalg.svd(small.mT, full_matrices=False)
    U, V = Q @ Rh.mT[..., :r], P[..., :r].mT  # (b, d, r), (b, r, k)
    if not captured.all():
        U[~captured], V[~captured] = top_singular(delta[~captured], r)
    return U, V


def _random_frame(dim: int, r: int, generator: torch.Generator | None) -> torch.Tensor:
    # Orthonormalised via SVD: the left-singular vectors of a dim×r Gaussian matrix.
    G = torch.randn(dim, r, generator=generator, dtype=torch.float64)
    return torch.linalg.svd(G, full_matrices=False)[0]  # (dim, r)


def table7_rows(
    Ws: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    r: int,
    generator: torch.Generator | None = None,
) -> list[dict[str, float]]:
    """Table 7 quantities for many layers at once (§7.3, App. H.4).

    Same-shaped matrices are stacked and go through batched ``torch.linalg`` calls.

    The random U, V are the top-r singular subspaces of a Gaussian d×k matrix in distribution:
    by the rotation invariance of Gaussian matrices those are independent and uniformly
    distributed, which is what drawing U from a d×r and V from a k×r Gaussian (orthonormalised
    via SVD) gives, without a full d×k SVD per layer. Then E‖U^⊤ W V^⊤‖_F² = r²‖W‖_F²/(d·k); its
    root r‖W‖_F/√(d·k), with the paper's ‖Wq‖_F = 61.95 and d = k = 12288, is 0.020 at r = 4 and
    0.32 at r = 64, matching Table 7's Random column (0.02, 0.33).

    Args:
        Ws: pretrained weights W, each of shape (d, k) (shapes may differ between layers).
        deltas: the matching updates ΔW, each the same shape as its W.
        r: number of singular directions (the paper uses the LoRA rank: 4 or 64).
        generator: seeds the random subspaces, drawn in the order of ``Ws`` so that this equals
            calling :func:`table7_row` on each layer in turn with the same generator.

    Returns:
        one dict per layer with float values: ``proj_delta`` (U, V from ΔW), ``proj_w`` (U, V
        from W, which equals √(σ_1² + … + σ_r²) of W and is computed that way), ``proj_random``
        (U, V random), ``norm_w`` = ‖W‖_F, ``norm_delta`` = ‖ΔW‖_F and
        ``amplification`` = ‖ΔW‖_F / proj_delta. If ΔW = 0 its subspace is undefined and
        proj_delta and amplification are nan.

    Raises:
        ValueError: if the lists differ in length, a ΔW's shape differs from its W's, or r is
            out of range for some layer.
    """
    if len(Ws) != len(deltas):
        raise ValueError(f"Ws and deltas differ in length: {len(Ws)} and {len(deltas)}")
    for layer, (W, delta) in enumerate(zip(Ws, deltas)):
        if W.ndim != 2 or W.shape != delta.shape:
            raise ValueError(
                f"layer {layer}: W and ΔW must be matrices of the same shape, "
                f"got {tuple(W.shape)} and {tuple(delta.shape)}"
            )
        _check_rank(W.shape, r)
    # Draw every random frame first, in layer order, so the grouping below does not change them.
    frames = [
        (_random_frame(W.shape[0], r, generator), _random_frame(W.shape[1], r, generator))
        for W in Ws
    ]

    layers_by_shape: dict[tuple[int, int], list[int]] = {}
    for layer, W in enumerate(Ws):
        layers_by_shape.setdefault(tuple(W.shape), []).append(layer)
    rows: list[dict[str, float]] = [{} for _ in Ws]
    for idx in layers_by_shape.values():  # b = len(idx) layers of one shape
        W = torch.stack([Ws[n] for n in idx]).to(torch.float64)  # (b, d, k)
        delta = torch.stack([deltas[n] for n in idx]).to(torch.float64)  # (b, d, k)
        U_rand = torch.stack([frames[n][0] for n in idx])  # (b, d, r)
        V_rand = torch.stack([frames[n][1] for n in idx]).mT  # (b, r, k)

        norm_w = torch.linalg.matrix_norm(W)
        norm_delta = torch.linalg.matrix_norm(delta)
        proj_delta = _projection_norms(W, *_top_singular_of_delta(delta, r))
        proj_delta = torch.where(norm_delta > 0, proj_delta, torch.nan)
        stats = {
            "proj_delta": proj_delta,
            "proj_w": _top_singular_energy(W, r).sqrt(),
            "proj_random": _projection_norms(W, U_rand, V_rand),
            "norm_w": norm_w,
            "norm_delta": norm_delta,
            "amplification": norm_delta / proj_delta,
        }
        for pos, layer in enumerate(idx):
            rows[layer] = {key: float(value[pos]) for key, value in stats.items()}
    return rows


def table7_row(
    W: torch.Tensor, delta_w: torch.Tensor, r: int, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Table 7 quantities for one layer (§7.3); see :func:`table7_rows` for the keys.

    Args:
        W: pretrained weight of shape (d, k).
        delta_w: its update ΔW, shape (d, k).
        r: number of singular directions.
        generator: seeds the random subspaces.

    Returns:
        dict with ``proj_delta``, ``proj_w``, ``proj_random``, ``norm_w``, ``norm_delta`` and
        ``amplification``, as floats.
    """
    return table7_rows([W], [delta_w], r, generator)[0]
