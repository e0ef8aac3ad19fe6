"""Writes notebooks/analysis.ipynb (kept as code so the notebook's cells are reviewable).

    python notebooks/build_notebook.py
"""
from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", "# lora-exp: from run directories to the paper's §7 tables and figures\n\n"
           "Reads what `python -m analysis report` (or `collect`, `subspace`, `delta-w` with one "
           "`--out`) wrote into a folder: `LORA_EXP_ANALYSIS_DIR`, default `outputs/analysis`; "
           "e.g. `docs/generated/analysis_sst2`. Every table here is a file on disk, every figure "
           "a PNG with its CSV beside it."),
    ("code", "import os\nfrom pathlib import Path\n\nimport pandas as pd\nfrom IPython.display import Image, Markdown, display\n\n"
             "ANALYSIS = Path(os.environ.get('LORA_EXP_ANALYSIS_DIR', 'outputs/analysis'))\n"
             "assert ANALYSIS.is_dir(), f'{ANALYSIS} does not exist: run python -m analysis ... --out {ANALYSIS}'\n"
             "sorted(p.name for p in ANALYSIS.iterdir())[:20]"),
    ("md", "## All runs (`collect`)\nOne row per run × eval split × metric; failed and unfinished runs keep their status."),
    ("code", "runs = pd.read_parquet(ANALYSIS / 'runs.parquet')\n"
             "print(runs['status'].value_counts().to_dict())\nruns.head(10)"),
    ("md", "## Median over seeds (the GLUE protocol) with the spread"),
    ("code", "ok = runs[(runs.status == 'ok') & runs.metric.notna()]\n"
             "table = (ok.groupby(['task', 'method', 'rank', 'targets', 'split', 'metric'], dropna=False)['best']\n"
             "           .agg(['median', 'min', 'max', 'count']).reset_index())\ntable"),
    ("code", "import matplotlib.pyplot as plt\n\n"
             "acc = table[table.metric == table.metric.iloc[0]].sort_values('rank')\n"
             "fig, ax = plt.subplots(figsize=(4, 3))\n"
             "for targets, g in acc.groupby('targets'):\n"
             "    ax.errorbar(g['rank'], g['median'], yerr=[g['median'] - g['min'], g['max'] - g['median']],\n"
             "                marker='o', capsize=3, label=targets)\n"
             "ax.set_xscale('log', base=2); ax.set_xlabel('rank r'); ax.set_ylabel(f\"dev {acc.metric.iloc[0]} (median, min-max)\")\n"
             "ax.legend(title='targets'); fig.tight_layout(); plt.show()"),
    ("md", "## Subspace similarity φ (`subspace`, §7.2, Figs. 3/4/6/7)"),
    ("code", "SUB = sorted(ANALYSIS.rglob('subspace.csv'))[-1].parent  # the folder itself, or report's subspace_r8_r64\n"
             "print(SUB)\nsub = pd.read_csv(SUB / 'subspace.csv')\nsub"),
    ("code", "for png in sorted(SUB.glob('*_phi.png'))[:4] + [SUB / 'random_phi.png']:\n"
             "    display(Markdown(f'`{png.name}`'), Image(filename=str(png), width=320))"),
    ("md", "## ΔW versus W (`delta-w`, §7.3, Table 7)"),
    ("code", "dw = pd.concat([pd.read_csv(f).assign(source=f.parent.name)  # every delta-w table found\n"
             "                for f in sorted(ANALYSIS.rglob('delta_w.csv'))])\n"
             "ids = ['layer', 'weight_type'] + (['module'] if 'module' in dw else [])  # module: a type with several (mlp)\n"
             "dw[['source', *ids, 'r', 'proj_delta', 'proj_w', 'proj_random', 'norm_w', 'norm_delta', 'amplification']]"),
    ("code", "# The share of adapted weights for which each §7.3 claim holds (report.md calls a claim\n"
             "# holding when it is true for all of them).\n"
             "print(f'claim 1, proj_delta > proj_random: {(dw.proj_delta > dw.proj_random).mean():.0%} of weights')\n"
             "print(f'claim 2, proj_delta < proj_w: {(dw.proj_delta < dw.proj_w).mean():.0%} of weights')\n"
             "dw.groupby(['source', 'r'])['amplification'].median().rename('median amplification')"),
    ("md", "## Beyond §7: intruder dimensions, effective rank, forgetting (`spectrum`, `forgetting`)\n"
           "One row per run × adapted matrix (`spectrum.csv`) and one record per run "
           "(`forgetting.json`); `report` writes both when FT runs sit beside the LoRA runs."),
    ("code", "spec_files = sorted(ANALYSIS.rglob('spectrum.csv'))\n"
             "if not spec_files:\n"
             "    print(f'no spectrum.csv under {ANALYSIS}: python -m analysis spectrum RUN ... --out DIR')\n"
             "else:\n"
             "    spec = pd.concat([pd.read_csv(f) for f in spec_files])\n"
             "    kind = spec['method'] + spec['rank'].map(lambda r: '' if pd.isna(r) else f' r={int(r)}')\n"
             "    # A run is one sample: its matrices first, then the median over seeds.\n"
             "    per_run = spec.assign(kind=kind).groupby(['kind', 'run_dir'])[\n"
             "        ['intruders', 'effective_rank_90', 'stable_rank', 'norm_ratio']].mean()\n"
             "    display(per_run.groupby('kind').median())\n"
             "    for png in sorted(p for f in spec_files for p in f.parent.glob('*.png')):\n"
             "        display(Markdown(f'`{png.name}`'), Image(filename=str(png), width=420))"),
    ("code", "import json\n\n"
             "forget_files = sorted(ANALYSIS.rglob('forgetting.json'))\n"
             "if not forget_files:\n"
             "    print(f'no forgetting.json under {ANALYSIS}: python -m analysis forgetting RUN ... --out DIR')\n"
             "else:\n"
             "    forget = pd.DataFrame([r for f in forget_files for r in json.loads(f.read_text())])\n"
             "    display(forget[['method', 'rank', 'task', 'seed', 'probe', 'before', 'after', 'forgetting',\n"
             "                    'task_metric_name', 'task_metric']])\n"
             "    for png in sorted(p for f in forget_files for p in f.parent.glob('learning_vs_forgetting.png')):\n"
             "        display(Image(filename=str(png), width=420))"),
]


def build() -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                for kind, src in CELLS]
    return nb


if __name__ == "__main__":
    path = Path(__file__).with_name("analysis.ipynb")
    nbf.write(build(), path)
    print(f"wrote {path}")
