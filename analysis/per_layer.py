"""The §7 analyses of run directories, one table row per adapted layer × weight type.

A weight type with several modules per block (``mlp``) gets a row per module: the tables then
have a ``module`` column and its file names end in the module (``mlp_layer0_output.dense_phi``);
with one module per weight type (wq, wv ...) neither appears.

``subspace`` also compares a LoRA run with a full fine-tuning run (:func:`subspace_of_updates`):
LoRA's top-r directions of ΔW against FT's top-r, to ask whether LoRA finds the directions full
fine-tuning moves.

``python -m analysis subspace`` / ``delta-w`` and ``report`` share these, so a report's tables
are exactly what the single commands write. Each function reads the runs (:mod:`analysis.runs`),
measures with :mod:`analysis.subspace` (φ, §7.2) or :mod:`analysis.delta_w` (Table 7, §7.3),
writes its CSV and heatmaps into the given folder and returns the table; the ``*_summary``
functions give the console text that goes with a table.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from analysis.delta_w import table7_rows
from analysis.plots import phi_heatmap
from analysis.runs import (Key, LoRAFactors, RunError, lora_factors, pretrained_weights,
                           several_modules, summary_of)
from analysis.spectrum import method_of, updates
from analysis.subspace import (grassmann_phi_w_vs_delta, phi, random_baseline, right_singular_basis,
                               subspace_similarity)


def run_label(run_dir: str | Path) -> str:
    """``r=<rank>,seed=<seed>``: how titles and console tables name a run."""
    s = summary_of(Path(run_dir))
    return f"r={s.get('rank')},seed={s.get('seed')}"


def id_columns(table: pd.DataFrame) -> list[str]:
    """The columns of a per-layer table that name a weight: layer, weight_type (, module)."""
    return [c for c in ("layer", "weight_type", "module") if c in table.columns]


def _ids(key: Key, multi: set[str]) -> dict:
    """A row's :func:`id_columns`; module only when some weight type has several modules
    (``multi``, from :func:`analysis.runs.several_modules`)."""
    return {"layer": key.layer, "weight_type": key.weight_type,
            **({"module": key.module} if multi else {})}


def _stem(key: Key, multi: set[str]) -> str:
    """File-name stem of a weight's figures: ``wq_layer0``, or ``mlp_layer0_intermediate.dense``
    for a weight type with several modules."""
    stem = f"{key.weight_type}_layer{key.layer}"
    return f"{stem}_{key.module}" if key.weight_type in multi else stem


def _weight(key: Key) -> str:
    """How a figure title names the weight: ``Wq`` as the paper, ``W mlp``."""
    wt = key.weight_type
    return f"W{wt[1:]}" if wt in ("wq", "wk", "wv", "wo") else f"W {wt}"


def _title(key: Key, multi: set[str], text: str) -> str:
    """A figure title: ``text``, and the module on a second line for a weight type with several."""
    return f"{text}\n{key.module}" if key.weight_type in multi else text


def _w_vs_delta(W: torch.Tensor, factors: LoRAFactors, stem: Path, title: str) -> float:
    """Fig. 8 for one weight: φ between W's top 10% directions and ΔW's, as ``<stem>_w_vs_delta``
    heatmap + CSV; returns φ(top 10% of W, top min(4, r) of ΔW)."""
    k = min(W.shape)
    top_w = max(1, math.ceil(0.1 * k))  # the paper reads W's top 10% of directions
    M = grassmann_phi_w_vs_delta(W, factors.delta_w, k, factors.A.shape[0])
    phi_heatmap(M[:top_w], f"{stem}_w_vs_delta.png", title, "j (ΔW direction)", "i (W direction)")
    return float(M[top_w - 1, min(4, M.shape[1]) - 1])


def subspace_per_layer(run_a: str | Path, run_b: str | Path, out: str | Path, seed: int = 0,
                       w_vs_delta: bool = True) -> pd.DataFrame:
    """φ(A_a, A_b, i, j) for every layer × weight type both runs adapt (§7.2; Figs. 3, 4, 6, 7).

    Writes into ``out``: a heatmap + CSV ``<wt>_layer<l>_phi`` per pair, ``random_phi`` (Φ of
    Gaussian random A, A' shaped as the last pair: the baseline), with ``w_vs_delta`` also
    ``<wt>_layer<l>_w_vs_delta`` (W vs ΔW of run_a, Fig. 8), and ``subspace.csv``, the table
    returned. A weight type with several modules has ``<wt>_layer<l>_<module>`` in those names.

    Args:
        run_a: run directory of the rows of Φ (e.g. the r=8 run).
        run_b: run directory of the columns of Φ (e.g. the r=64 run, or another seed).
        out: folder to write into.
        seed: seeds the Gaussian baseline.
        w_vs_delta: also compare W's and ΔW's directions (needs the pretrained W: slower).

    Returns:
        one row per shared (layer, weight type), and module if a weight type has several:
        ranks, φ(1, 1) and mean φ for the runs and for the baseline, the expected random
        φ(1, 1) = 1/k, and with ``w_vs_delta`` ``w_top10pct_vs_delta_top``.

    Raises:
        RunError: if a folder is not a LoRA run or the runs share no layer × weight type.
    """
    run_a, run_b, out = Path(run_a), Path(run_b), Path(out)
    if "lora" != method_of(run_a) or "lora" != method_of(run_b):
        return subspace_of_updates(run_a, run_b, out, seed)
    fa, fb = lora_factors(run_a), lora_factors(run_b)
    shared = sorted(set(fa) & set(fb))
    if not shared:
        raise RunError(f"no layer × weight type in common: {run_a} has "
                       f"{sorted({k[1] for k in fa})}, {run_b} has {sorted({k[1] for k in fb})}")
    la, lb = run_label(run_a), run_label(run_b)
    g = torch.Generator().manual_seed(seed)
    w0 = pretrained_weights(run_a, shared) if w_vs_delta else {}
    multi = several_modules(shared)
    rows = []
    for key in shared:
        A1, A2 = fa[key].A, fb[key].A
        Phi = subspace_similarity(A1, A2)  # (r_a, r_b)
        Phi_rand = random_baseline(A1.shape[1], A1.shape[0], A2.shape[0], generator=g)[0]
        stem = out / _stem(key, multi)
        phi_heatmap(Phi, f"{stem}_phi.png",
                    _title(key, multi, f"Δ{_weight(key)} layer {key.layer}: φ(A {la}, A' {lb})"),
                    f"j ({lb})", f"i ({la})")
        row = {**_ids(key, multi), "r_a": A1.shape[0], "r_b": A2.shape[0],
               "phi_top1": float(Phi[0, 0]), "phi_random_top1": float(Phi_rand[0, 0]),
               "expected_random_top1": 1.0 / A1.shape[1],
               "phi_mean": float(Phi.mean()), "phi_random_mean": float(Phi_rand.mean())}
        if w_vs_delta:
            row["w_top10pct_vs_delta_top"] = _w_vs_delta(
                w0[key], fa[key], stem,
                _title(key, multi, f"{_weight(key)} layer {key.layer} vs ΔW ({la})"))
        rows.append(row)
    phi_heatmap(Phi_rand, out / "random_phi.png", "Gaussian random A, A'", "j", "i")
    table = pd.DataFrame(rows)
    table.to_csv(out / "subspace.csv", index=False)
    return table


def subspace_of_updates(run_a: str | Path, run_b: str | Path, out: str | Path,
                        seed: int = 0) -> pd.DataFrame:
    """φ between the top-r right-singular directions of ΔW of a LoRA run and of a full
    fine-tuning run (full_ft, ft_top2), r the LoRA run's rank, for every weight both changed.

    The directions are those of ΔW itself (input space, as §7.2's A), ordered by ΔW's singular
    values, for both runs: for LoRA they span A's rows. Writes a heatmap + CSV per weight,
    ``random_phi`` (the Gaussian baseline) and ``subspace.csv``; the row adds φ(r, r), the
    overlap of the two r-dimensional subspaces, and its random expectation r/k.

    Raises:
        RunError: neither run is LoRA (r is LoRA's rank), a run of another method, or no
            weight in common.
    """
    run_a, run_b, out = Path(run_a), Path(run_b), Path(out)
    (ma, ra, da), (mb, rb, db) = updates(run_a), updates(run_b)
    r = ra or rb
    if r is None:
        raise RunError(f"{run_a} ({ma}) and {run_b} ({mb}): comparing directions needs a LoRA "
                       "run, whose rank r sets how many directions are compared")
    shared = sorted(set(da) & set(db))
    if not shared:
        raise RunError(f"no layer × weight type in common between {run_a} ({ma}) and {run_b} ({mb})")
    la, lb = f"{ma} {run_label(run_a)}", f"{mb} {run_label(run_b)}"
    g, multi, rows = torch.Generator().manual_seed(seed), several_modules(shared), []
    for key in shared:
        Ua, Ub = (right_singular_basis(d[key][1])[:, :r] for d in (da, db))
        Phi = phi(Ua, Ub)
        Phi_rand = random_baseline(Ua.shape[0], r, r, generator=g)[0]
        phi_heatmap(Phi, f"{out / _stem(key, multi)}_phi.png",
                    _title(key, multi, f"Δ{_weight(key)} layer {key.layer}: top-{r} directions"),
                    f"j ({lb})", f"i ({la})")
        rows.append({**_ids(key, multi), "r_a": r, "r_b": r, "phi_top1": float(Phi[0, 0]),
                     "phi_random_top1": float(Phi_rand[0, 0]), "expected_random_top1": 1.0 / Ua.shape[0],
                     "phi_top_r": float(Phi[-1, -1]), "expected_random_top_r": r / Ua.shape[0],
                     "phi_mean": float(Phi.mean()), "phi_random_mean": float(Phi_rand.mean())})
    phi_heatmap(Phi_rand, out / "random_phi.png", "Gaussian random directions", "j", "i")
    table = pd.DataFrame(rows)
    table.to_csv(out / "subspace.csv", index=False)
    return table


def subspace_summary(table: pd.DataFrame, run_a: str | Path, run_b: str | Path,
                     out: str | Path) -> str:
    """Console text for a :func:`subspace_per_layer` table: φ(1, 1) per pair and where it went."""
    out = Path(out)
    return "\n".join([
        f"top-direction similarity φ(1, 1), {run_label(run_a)} vs {run_label(run_b)} and for "
        "Gaussian random A (the baseline)",
        table[[*id_columns(table), "phi_top1", "phi_random_top1", "phi_mean"]].to_string(index=False),
        f"wrote {out / 'subspace.csv'} and the heatmaps in {out}"])


def table7_per_layer(run: str | Path, out: str | Path, seed: int = 0) -> pd.DataFrame:
    """Table 7 (§7.3) for every adapted weight of a LoRA run, written to ``out/delta_w.csv``.

    Args:
        run: run directory; r is its LoRA rank, as in the paper.
        out: folder to write into (created if missing).
        seed: seeds the random U, V of the ``proj_random`` column.

    Returns:
        one row per (layer, weight type), and module if a weight type has several, with r and
        the columns of :func:`analysis.delta_w.table7_rows`.

    Raises:
        RunError: if the folder is not a LoRA run.
    """
    run, out = Path(run), Path(out)
    factors = lora_factors(run)
    keys = sorted(factors)
    w0 = pretrained_weights(run, keys)
    g = torch.Generator().manual_seed(seed)
    r = factors[keys[0]].A.shape[0]
    stats = table7_rows([w0[k] for k in keys], [factors[k].delta_w for k in keys], r, generator=g)
    multi = several_modules(keys)
    table = pd.DataFrame([{**_ids(k, multi), "r": r, **s} for k, s in zip(keys, stats)])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "delta_w.csv", index=False)
    return table


def table7_summary(table: pd.DataFrame, run: str | Path, out: str | Path) -> str:
    """Console text for a :func:`table7_per_layer` table: the table itself and where it went."""
    return "\n".join([
        f"Table 7 ({run_label(run)}): ‖U^T W V^T‖_F with U, V from ΔW / W / random; amplification "
        "= ‖ΔW‖_F / proj_delta",
        table.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
        f"wrote {Path(out) / 'delta_w.csv'}"])
