"""Runs made twice: independent runs of one resolved config, side by side.

The trainer is deterministic: one config trained twice at the same precision on the same kind of
machine gives the same numbers (tests/test_resume.py, tests/unit/test_speedups_change_nothing.py).
Across precisions (``trainer.precision=auto``: bf16 on a CPU with native bf16, fp32 on one
without) or machine kinds it need not. Every such group the sweep folders hold is shown, so that a
reader sees how exactly a command reproduces a figure, and how far the precision moves one.

A run copied into a second sweep folder (the same process: :func:`run_identity`) was made once,
and is one run here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from analysis.collect import collect
from analysis.provenance import machine_kind, run_identity, summary_of, trained_label
from lora_exp.export import WEIGHTS
from lora_exp.rerun import first_difference

# Labels that name a run and change nothing in it: two sweeps may give one config other names.
LABELS = ("run_name",)
FIGURES = {"best": "paper selection", "heldout": "held-out selection", "final": "last evaluation"}
DECIMALS = 4


def _config(run_dir: str) -> dict:
    config = dict(summary_of(run_dir).get("config") or {})
    for key in LABELS:
        config.pop(key, None)
    return config


def made_twice(runs: pd.DataFrame) -> list[list[str]]:
    """Groups (of two or more) of finished runs, each made by another process, whose resolved
    configs are the same (:func:`lora_exp.rerun.first_difference`: as a re-run sweep decides)."""
    ok = runs[runs["status"] == "ok"].drop_duplicates("run_dir")
    groups: list[list[str]] = []
    for _, same_job in ok.groupby(["task", "method", "rank", "seed"], dropna=False):
        seen: set[tuple] = set()
        classes: list[list[str]] = []
        for run_dir in sorted(same_job["run_dir"]):
            identity = run_identity(run_dir)
            if identity in seen:
                continue  # a copy of a run already here
            seen.add(identity)
            for members in classes:
                if first_difference(_config(members[0]), _config(run_dir)) is None:
                    members.append(run_dir)
                    break
            else:
                classes.append([run_dir])
        groups += [c for c in classes if len(c) > 1]
    return groups


def _weights_digest(run_dir: str) -> str | None:
    path = Path(run_dir) / WEIGHTS
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _mark(is_first: bool, same: bool | None) -> str:
    return "first" if is_first else "—" if same is None else "yes" if same else "no"


def _same_setting(a: dict, b: dict) -> bool:
    """Trained at one precision on one kind of machine; a run made before summaries recorded the
    machine matches any machine at its precision."""
    ka, kb = machine_kind(a), machine_kind(b)
    return a.get("precision") == b.get("precision") and (ka is None or kb is None or ka == kb)


def _figures_equal(a: pd.Series, b: pd.Series) -> bool:
    return all(pd.isna(a[k]) and pd.isna(b[k]) or
               round(float(a[k]), DECIMALS) == round(float(b[k]), DECIMALS) for k in FIGURES)


def table(runs: pd.DataFrame, root: Path) -> pd.DataFrame:
    """One row per run of each group made twice: where and how it ran, its main metric under each
    selection, and whether its figures (to :data:`DECIMALS`) and its saved trained weights (byte
    for byte; — where either has none) equal those of its ``reference``: the group's first run
    made at its precision on its kind of machine, which is what a command promises to give again.
    Runs are named by their folder under ``root``."""
    main = runs[runs["is_main"].fillna(False).astype(bool)].drop_duplicates("run_dir").set_index("run_dir")
    rows = []
    for number, group in enumerate(made_twice(runs), 1):
        summaries = {run_dir: summary_of(run_dir) for run_dir in group}
        for run_dir in group:
            ref = next(d for d in group if _same_setting(summaries[d], summaries[run_dir]))
            r, weights, ref_weights = main.loc[run_dir], _weights_digest(run_dir), _weights_digest(ref)
            same_weights = None if weights is None or ref_weights is None else weights == ref_weights
            rows.append({"group": number, "config": f"{r['task']} {r['method']} r={r['rank']} seed={r['seed']}",
                         "run": str(Path(run_dir).relative_to(root)),
                         "commit": (summaries[run_dir].get("git_sha") or "?")[:7],
                         "trained": trained_label(summaries[run_dir]),
                         "metric": r["metric"], **{label: r[k] for k, label in FIGURES.items()},
                         "same as the first": _mark(run_dir == ref, _figures_equal(r, main.loc[ref])),
                         "same weights": _mark(run_dir == ref, same_weights),
                         "reference": str(Path(ref).relative_to(root))})
    return pd.DataFrame(rows)


def _spread(rows: pd.DataFrame) -> float:
    """The largest difference between two of ``rows`` in one figure, in points."""
    return max((float((rows[label].max() - rows[label].min()) * 100)
                for label in FIGURES.values() if rows[label].notna().all()), default=float("nan"))


def summary_lines(t: pd.DataFrame) -> list[str]:
    """How many configs trained twice at one precision on one kind of machine agree to 4
    decimals (and have the same trained weights), and how far apart the runs of a config trained
    at two precisions or on two kinds of machine are."""
    if not len(t):
        return ["No config was trained twice in these folders."]
    lines = []
    same = [g for _, g in t.groupby(["group", "reference"]) if len(g) > 1]
    if same:
        agree = sum((g["same as the first"] != "no").all() for g in same)
        line = (f"- {len(same)} config(s) trained twice at one precision on one kind of machine: "
                f"{agree} agree to {DECIMALS} decimals in all three figures; the largest difference "
                f"is {max(map(_spread, same)):.2f} points")
        kept = [g for g in same if (g["same weights"] != "—").all()]
        if kept:
            identical = sum((g["same weights"] != "no").all() for g in kept)
            line += (f"; {identical} of the {len(kept)} with their trained weights kept have the "
                     "same weights byte for byte")
        lines.append(line + ".")
    across = [g for _, g in t.groupby("group") if g["reference"].nunique() > 1]
    if across:
        lines.append(f"- {len(across)} config(s) trained at two precisions or on two kinds of "
                     f"machine: the largest difference between their runs is "
                     f"{max(map(_spread, across)):.2f} points.")
    return lines


def section(outputs: list[Path], commands: str) -> list[str]:
    lines = ['<a id="reruns"></a>', "", "## Runs made twice", ""]
    t = pd.concat([table(collect([root]), root) for root in outputs], ignore_index=True)
    if not len(t):
        return lines + ["No config was trained twice in these folders. Commands:", "", commands, ""]
    shown = t.drop(columns="reference")
    shown = shown.astype(object).where(shown.notna(), None)  # tabulate marks None as missing, not NaN
    return lines + [
        "Independent runs (another process, often another commit) of one resolved config, as a "
        "re-run sweep compares configs (`lora_exp/rerun.py`; how-to-run keys such as "
        "`trainer.checkpoint_every` and the run's name aside); a run copied into a second sweep "
        "folder is one run. A command gives a figure again to the bit at the precision and on the "
        "kind of machine it was made at (`trainer.precision=auto` picks bf16 on a CPU with native "
        "bf16); at another precision it is another run. Each run is compared with the first of its "
        "group made at its precision on its kind of machine (a run made before summaries recorded "
        "the machine counts as made on any kind). The main metric (not ×100) under each "
        "selection:", "",
        *summary_lines(t), "", shown.to_markdown(index=False, floatfmt=f".{DECIMALS}f", missingval="—"), "",
        "Commands (the single run of one Table 2 job, beside the sweeps):", "", commands, ""]
