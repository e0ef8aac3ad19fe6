"""Writes notebooks/analysis.ipynb (kept as code so the notebook's cells are reviewable).

    python notebooks/build_notebook.py
"""
from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", "# lora-exp: from run directories to the paper's §7 tables and figures\n\n"
           "Reads what `python -m analysis collect / subspace / delta-w` wrote into one folder "
           "(`LORA_EXP_ANALYSIS_DIR`, default `outputs/analysis`). Every table here is a file on disk, "
           "every figure a PNG with its CSV beside it."),
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
    ("code", "sub = pd.read_csv(ANALYSIS / 'subspace.csv')\nsub"),
    ("code", "for png in sorted(ANALYSIS.glob('*_phi.png'))[:4] + [ANALYSIS / 'random_phi.png']:\n"
             "    display(Markdown(f'`{png.name}`'), Image(filename=str(png), width=320))"),
    ("md", "## ΔW versus W (`delta-w`, §7.3, Table 7)"),
    ("code", "dw = pd.read_csv(ANALYSIS / 'delta_w.csv')\n"
             "dw[['layer', 'weight_type', 'r', 'proj_delta', 'proj_w', 'proj_random', 'norm_w', 'norm_delta', 'amplification']]"),
    ("code", "print('claim 1 (ΔW correlates with W more than random):', bool((dw.proj_delta > dw.proj_random).mean() > 0.5))\n"
             "print('claim 2 (ΔW amplifies directions not emphasised in W):', bool((dw.proj_delta < dw.proj_w).all()))\n"
             "print('median amplification factor:', float(dw.amplification.median()))"),
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
