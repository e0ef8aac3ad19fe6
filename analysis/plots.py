"""Figures for the §7 analysis and the spectrum of weight updates (:mod:`analysis.spectrum`),
each written as a PNG plus the CSV of the data behind it."""
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


def intruders_by_rank_plot(per_run: pd.DataFrame, path: str | Path, k: int, eps: float) -> Path:
    """Intruder dimensions against LoRA rank (after Shuttleworth et al. 2024), with its CSV.

    Each LoRA run is a dot at its rank (its mean intruders per matrix), the line joins the
    median over the runs of each rank; FT runs have no rank, so each FT method is a horizontal
    line at the median over its runs: the reference LoRA is compared with.

    Args:
        per_run: one row per run with ``method``, ``rank`` (empty for FT) and
            ``intruders_per_matrix``; written as the CSV beside the PNG.
        path: where to write the PNG.
        k, eps: the intruder definition, for the axis label.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(path.with_suffix(".csv"), index=False)
    lora = per_run[per_run["method"] == "lora"].astype({"rank": float})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if not lora.empty:
        ax.scatter(lora["rank"], lora["intruders_per_matrix"], color="C0", alpha=0.6, label="LoRA run")
        medians = lora.groupby("rank")["intruders_per_matrix"].median()
        ax.plot(medians.index, medians.values, color="C0", marker="o", label="LoRA, median")
        ax.set_xscale("log", base=2)  # ranks are powers of two in the paper's sweeps
        ax.set_xticks(medians.index, [str(int(r)) for r in medians.index])
    for i, (method, runs) in enumerate(per_run[per_run["method"] != "lora"].groupby("method")):
        ax.axhline(runs["intruders_per_matrix"].median(), color=f"C{i + 1}", linestyle="--",
                   label=f"{method} ({len(runs)} run{'s' * (len(runs) > 1)})")
    ax.set_ylim(bottom=0)  # counts: zero intruders is the floor FT is read against
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel(f"intruders in top {k} (|cos| < {eps:g})\nmean per matrix")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def group_order(groups) -> list[str]:
    """Group labels (``lora r=4``, ``adapter_h r=8``, ``full_ft``) in plotting order: LoRA by
    increasing rank first, then the other methods, each by rank: the order ranks grow towards FT."""
    def key(g: str):
        method, _, rank = g.partition(" r=")
        return (not g.startswith("lora r="), method, int(rank) if rank.isdigit() else 0, g)

    return sorted(groups, key=key)


def effective_rank_plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Effective rank (90% of ‖ΔW‖_F²) of every adapted matrix, a box per method / rank, with
    the matrices as dots over it; the CSV beside the PNG holds the dots.

    Args:
        table: one row per run × matrix with ``group`` (e.g. ``lora r=4``, ``full_ft``) and
            ``effective_rank_90``.
        path: where to write the PNG.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [c for c in ("group", "run_dir", "layer", "weight_type", "module", "effective_rank_90")
            if c in table.columns]
    table[cols].to_csv(path.with_suffix(".csv"), index=False)
    order = group_order(table["group"].unique())
    data = [table.loc[table["group"] == g, "effective_rank_90"].to_numpy() for g in order]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(order) + 1.5), 3.8))
    ax.boxplot(data, showfliers=False)  # the dots show every matrix, outliers included
    rng = np.random.default_rng(0)  # fixed jitter: the same figure on every run
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=10, alpha=0.5, color="C0")
    ax.set_xticks(range(1, len(order) + 1), order)
    ax.set_ylabel("effective rank of ΔW\n(90% of ‖ΔW‖_F²)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_forgetting_plot(table: pd.DataFrame, path: str | Path,
                             xlabels: dict[str, str]) -> Path:
    """Learning against forgetting (after Biderman et al. 2024, Fig. 1): each run's task metric
    (y) against how much of its base model's probe score it lost (x, positive = forgot), one
    panel per task × probe, one colour per ``label`` (method and rank); the CSV beside the PNG
    holds the points.

    Args:
        table: one row per run with ``label``, ``task``, ``probe``, ``forgetting``,
            ``task_metric`` and ``task_metric_name`` (analysis.forgetting.find_records).
        path: where to write the PNG.
        xlabels: the x-axis label of each probe (what its forgetting is a difference of).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path.with_suffix(".csv"), index=False)
    colours = {g: f"C{i % 10}" for i, g in enumerate(group_order(table["label"].unique()))}
    panels = sorted(set(zip(table["task"], table["probe"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (task, probe) in zip(axes[0], panels):
        sub = table[(table["task"] == task) & (table["probe"] == probe)]
        for label in (g for g in colours if g in set(sub["label"])):  # legend in group order
            g = sub[sub["label"] == label]
            ax.scatter(g["forgetting"], g["task_metric"], color=colours[label], label=label, s=30)
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")  # 0: the base's score kept
        ax.set_title(f"{task}: learning vs forgetting")
        ax.set_xlabel(xlabels.get(probe, f"forgetting ({probe})"), fontsize=8)
        ax.set_ylabel(f"{sub['task_metric_name'].iloc[0]} (task metric)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
