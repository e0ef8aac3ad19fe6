"""Figures for the §7 analysis, each written as a PNG plus the CSV of the data behind it."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on CI and cluster nodes without a display

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def phi_heatmap(
    Phi: torch.Tensor | np.ndarray, path: str | Path, title: str, xlabel: str, ylabel: str
) -> Path:
    """Heatmap of Φ in the style of the paper's Figs. 3, 4, 6-8 (§7.2), with its CSV beside it.

    Row i of Φ is drawn on the y axis (i = 1 at the top) and column j on the x axis, both
    1-based as in the paper; the colour scale is fixed to [0, 1] so panels compare directly.

    Args:
        Phi: 2-D matrix of φ values, shape (r1, r2).
        path: where to write the PNG; parent directories are created. The same stem with
            ``.csv`` receives Φ with 1-based row labels i and column labels j (corner "i/j").
        title: figure title, e.g. ``"ΔWq, layer 6: A_r=8 vs A_r=64"``.
        xlabel: x-axis label, e.g. ``"j (A_r=64)"``.
        ylabel: y-axis label, e.g. ``"i (A_r=8)"``.

    Returns:
        the PNG path.

    Raises:
        ValueError: if Phi is not 2-D.
    """
    Phi = Phi.detach().cpu().numpy() if isinstance(Phi, torch.Tensor) else np.asarray(Phi)
    if Phi.ndim != 2:
        raise ValueError(f"Phi must be a 2-D matrix, got shape {Phi.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    r1, r2 = Phi.shape

    table = pd.DataFrame(Phi, index=pd.RangeIndex(1, r1 + 1), columns=pd.RangeIndex(1, r2 + 1))
    table.to_csv(path.with_suffix(".csv"), index_label="i/j")  # rows i, columns j

    # Wide panels (8×64 in Fig. 3) would be unreadable at equal aspect; grow with the matrix.
    fig, ax = plt.subplots(figsize=(min(2.5 + 0.12 * r2, 12.0), min(1.5 + 0.12 * r1, 9.0)))
    # extent puts cell (i, j) centred on integer coordinates, so ticks read as paper indices.
    image = ax.imshow(
        Phi, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest",
        extent=(0.5, r2 + 0.5, r1 + 0.5, 0.5),
    )
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, integer=True))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, label="φ")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)  # figures are global state in pyplot; a sweep over layers would leak them
    return path
