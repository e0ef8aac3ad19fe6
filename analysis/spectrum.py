"""Spectra of weight updates: how many directions ΔW uses, and whether it brings new ones into W.

For every adapted matrix of a run (layer × weight type, in the paper's d_out × d_in layout):

* ``effective_rank_90``: the number of singular values of ΔW that hold 90% of ‖ΔW‖_F² = Σσᵢ²,
  i.e. the smallest k with σ₁² + … + σ_k² ≥ 0.9·Σσᵢ². A LoRA update of rank r has at most r.
* ``stable_rank``: ‖ΔW‖_F² / ‖ΔW‖_2² = Σσᵢ² / σ₁², a rank that small singular values barely move
  (1 for a rank-1 update, n for n equal singular values).
* ``intruders``: intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An
  Illusion of Equivalence", arXiv 2410.21228): among the top k left singular vectors of
  W0 + ΔW, those whose largest |cosine similarity| with any left singular vector of W0 is
  below ε. Singular vectors of zero singular values are left out on both sides: they are any
  basis of a null space, so matching against them would be arbitrary (real weights are full
  rank, where this changes nothing).
* ``norm_ratio``: ‖ΔW‖_F / ‖W0‖_F, how big the update is next to the weight it changes.

ΔW is (α/r)·B·A for LoRA and W_tuned − W0 for full fine-tuning (full_ft) and FT^Top2 (ft_top2),
with W0 the run's pretrained base model and W_tuned the parameters the run saved at its last
step (the same ones ``lora_factors`` reads for LoRA). A run started with ``init_from`` is
measured from the pretrained model too, so its ΔW includes the run it started from.
Everything is float64 on CPU: the small singular values that decide effective rank and
intruders are exactly where float32 rounding would show.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from analysis import measured
from analysis.plots import effective_rank_plot, intruders_by_rank_plot
from analysis.runs import (Key, RunError, finetuned_weights, kind_label, lora_factors,
                           pretrained_weights, summary_of)

SUPPORTED = ("full_ft", "ft_top2", "lora")
# The weight types the paper's LoRA can adapt in attention (§4.2, Table 5): what FT runs are
# measured on when their config names no targets (full_ft and ft_top2 configs have none).
DEFAULT_TARGETS = ("wq", "wk", "wv", "wo")
# Shuttleworth et al. (arXiv 2410.21228) count intruders among the top k = 10 singular vectors
# with threshold ε = 0.5 on |cos|: the defaults of their released code
# (github.com/reeceshuttle/intruder-dimensions, find_intruder_dimensions.py: k=10,
# --intruder_dimension_threshold=0.5) and of PEFT's reduce_intruder_dimension built on it
# (top_k=10, threshold_epsilon=0.5). The paper's own text was not at hand to check against.
INTRUDER_K = 10
INTRUDER_EPS = 0.5
SHARE = 0.9  # effective_rank_90: the share of ‖ΔW‖_F² to hold
# Bump when what a row measures changes: runs' recorded rows (analysis.measured) are then redone.
DEFINITION = 1
COLUMNS = ["run_dir", "method", "rank", "task", "seed", "layer", "weight_type", "module",
           "effective_rank_90", "stable_rank", "intruders", "norm_ratio"]


def singular_values(M: torch.Tensor) -> torch.Tensor:
    """σ₁ ≥ σ₂ ≥ … of M in float64."""
    return torch.linalg.svdvals(M.double())


def effective_rank_90(dw: torch.Tensor, share: float = SHARE) -> int:
    """The smallest k whose top k singular values hold ``share`` of ‖ΔW‖_F² (0 for ΔW = 0)."""
    energy = singular_values(dw).square()  # σ², not σ: the Frobenius norm squared is Σσ²
    total = float(energy.sum())
    if total == 0.0:
        return 0
    cumulative = energy.cumsum(0)
    # A relative slack of 1e-12 so that exactly `share` (e.g. σ² = 9, 1) is not lost to rounding.
    return int((cumulative < share * total * (1 - 1e-12)).sum()) + 1


def stable_rank(dw: torch.Tensor) -> float:
    """‖ΔW‖_F² / ‖ΔW‖_2² = Σσ² / σ₁² (0 for ΔW = 0)."""
    energy = singular_values(dw).square()
    return float(energy.sum() / energy[0]) if float(energy[0]) > 0 else 0.0


def norm_ratio(w0: torch.Tensor, dw: torch.Tensor) -> float:
    """‖ΔW‖_F / ‖W0‖_F."""
    return float(torch.linalg.matrix_norm(dw.double()) / torch.linalg.matrix_norm(w0.double()))


def _left_basis(M: torch.Tensor) -> torch.Tensor:
    """M's left singular vectors of non-zero singular values (columns, largest first), with
    numpy's matrix-rank tolerance σ > σ₁·max(d, k)·eps deciding what is zero."""
    U, S, _ = torch.linalg.svd(M.double(), full_matrices=False)
    tol = S[0] * max(M.shape) * torch.finfo(torch.float64).eps if S.numel() else 0.0
    return U[:, S > tol]


def check_intruder_definition(k: int, eps: float) -> None:
    """Raises ValueError unless k ≥ 1 and 0 < ε ≤ 1 (|cos| ≤ 1: a larger ε counts every vector)."""
    if k < 1 or not 0 < eps <= 1:
        raise ValueError(f"--intruder-k={k} / --intruder-eps={eps} is invalid; valid: k ≥ 1 and "
                         "0 < ε ≤ 1")


def intruders(w0: torch.Tensor, dw: torch.Tensor, k: int = INTRUDER_K,
              eps: float = INTRUDER_EPS) -> int:
    """How many of the top k left singular vectors of W0 + ΔW have max_i |cos(y_j, x_i)| < ε
    over the left singular vectors x_i of W0 (Shuttleworth et al. 2024).

    Raises:
        ValueError: k < 1, ε outside (0, 1], or W0 and ΔW of different shapes.
    """
    check_intruder_definition(k, eps)
    if w0.shape != dw.shape:
        raise ValueError(f"W0 {tuple(w0.shape)} and ΔW {tuple(dw.shape)} differ in shape")
    base, tuned = _left_basis(w0), _left_basis(w0.double() + dw.double())[:, :k]
    # Columns are unit vectors, so U_tunedᵀ U_0 holds the cosines; the sign of a singular vector
    # is arbitrary, hence |·|.
    best = (tuned.mT @ base).abs().amax(dim=1)
    return int((best < eps).sum())


def matrix_row(w0: torch.Tensor, dw: torch.Tensor, k: int = INTRUDER_K,
               eps: float = INTRUDER_EPS) -> dict:
    """The four measures of one adapted matrix."""
    return {"effective_rank_90": effective_rank_90(dw), "stable_rank": stable_rank(dw),
            "intruders": intruders(w0, dw, k, eps), "norm_ratio": norm_ratio(w0, dw)}


def method_of(run_dir: Path) -> str:
    """The method the run trained with (its config's ``method.name``, not a display label)."""
    s = summary_of(run_dir)
    return ((s.get("config") or {}).get("method") or {}).get("name") or s.get("method")


def supported_method(run_dir: Path) -> str:
    """The run's method, when it is one whose update is a change of weight matrices.

    Raises:
        RunError: bitfit, prefix or adapter runs, naming the supported methods.
    """
    method = method_of(run_dir)
    if method not in SUPPORTED:
        raise RunError(f"{run_dir}: method={method} has no weight update ΔW to analyse; "
                       f"spectrum supports the methods {', '.join(SUPPORTED)}")
    return method


def updates(run_dir: str | Path
            ) -> tuple[str, int | None, dict[Key, tuple[torch.Tensor, torch.Tensor]]]:
    """(method, LoRA rank or None, {Key: (W0, ΔW)}) of one run.

    Raises:
        RunError: a method whose update is not a change of weight matrices (bitfit, prefix,
            adapters), or a run without the saved weights.
    """
    run_dir = Path(run_dir)
    method = supported_method(run_dir)
    if method == "lora":
        factors = lora_factors(run_dir)
        w0 = pretrained_weights(run_dir, sorted(factors))
        rank = next(iter(factors.values())).A.shape[0]
        return method, rank, {k: (w0[k], f.delta_w) for k, f in sorted(factors.items())}
    # FT trains every weight: measure those the paper's LoRA would adapt, as the config names them.
    method_cfg = (summary_of(run_dir).get("config") or {}).get("method") or {}
    targets = method_cfg.get("targets") or DEFAULT_TARGETS
    weights = finetuned_weights(run_dir, targets)
    return method, None, {k: (w0, wt - w0) for k, (w0, wt) in weights.items()}


def run_table(run_dir: str | Path, k: int = INTRUDER_K, eps: float = INTRUDER_EPS) -> pd.DataFrame:
    """One row per adapted matrix of one run, with the :data:`COLUMNS`: the rows recorded beside
    the run (:mod:`analysis.measured`) when they are there, else measured from its weights and
    recorded."""
    supported_method(Path(run_dir))  # before any record is read: other methods have none
    rows = measured.cached(run_dir, "spectrum", params(k, eps),
                           lambda: measured.records(measure_run(run_dir, k, eps)))
    return pd.DataFrame(rows, columns=COLUMNS).assign(run_dir=str(run_dir))


def params(k: int = INTRUDER_K, eps: float = INTRUDER_EPS) -> dict:
    """What a run's recorded spectrum rows depend on besides the run."""
    return {"definition": DEFINITION, "k": k, "eps": eps, "share": SHARE}


def measure_run(run_dir: str | Path, k: int = INTRUDER_K, eps: float = INTRUDER_EPS) -> pd.DataFrame:
    """:func:`run_table` computed from the run's weights."""
    method, rank, deltas = updates(run_dir)
    s = summary_of(Path(run_dir))
    ids = {"run_dir": str(run_dir), "method": method, "rank": rank, "task": s.get("task"),
           "seed": s.get("seed")}
    rows = [{**ids, "layer": key.layer, "weight_type": key.weight_type, "module": key.module,
             **matrix_row(w0, dw, k, eps)} for key, (w0, dw) in deltas.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def spectrum_table(runs: list[str | Path], out: str | Path, k: int = INTRUDER_K,
                   eps: float = INTRUDER_EPS) -> pd.DataFrame:
    """The spectrum of every run's ΔW, written to ``out``: ``spectrum.csv`` (one row per run ×
    matrix), ``intruders_by_rank.png/.csv`` and ``effective_rank.png/.csv``.

    Args:
        runs: run directories of methods full_ft, ft_top2 or lora (any rank).
        out: folder to write into (created if missing).
        k: how many top singular vectors of W0 + ΔW may be intruders.
        eps: the |cosine| below which a singular vector is an intruder.

    Raises:
        RunError: a folder that is not a run, or a run of another method; nothing is written then.
        ValueError: k or eps out of range.
    """
    out = Path(out)
    check_intruder_definition(k, eps)
    # Every run is read before anything is written: one bad run leaves no half-made output.
    table = pd.concat([run_table(r, k, eps) for r in runs], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "spectrum.csv", index=False)
    intruders_by_rank_plot(per_run(table), out / "intruders_by_rank.png", k, eps)
    kinds = [kind_label(m, r) for m, r in zip(table["method"], table["rank"])]
    effective_rank_plot(table.assign(group=kinds), out / "effective_rank.png")
    return table


def per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, the mean intruders per matrix and the median effective rank over its matrices (a
    run is one sample: pooling matrices across runs would weigh a model by its number of layers).
    Intruders are a mean, as the report's verdicts read them: a median of counts that are mostly 0
    or 1 per matrix hides how many matrices have one."""
    runs = table.groupby(["run_dir", "method", "rank", "task", "seed"], dropna=False)
    return (runs["intruders"].mean().rename("intruders_per_matrix").to_frame()
            .join(runs["effective_rank_90"].median().rename("effective_rank_90_median"))
            .reset_index())


def spectrum_summary(table: pd.DataFrame, out: str | Path) -> str:
    """Console text: the per-run medians and where the files went."""
    out = Path(out)
    return "\n".join([
        "over each run's adapted matrices: mean intruders, median effective rank",
        per_run(table).to_string(index=False),
        f"wrote {out / 'spectrum.csv'}, {out / 'intruders_by_rank.png'}, "
        f"{out / 'effective_rank.png'} (each with its .csv)"])
