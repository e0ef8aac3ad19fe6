"""The paper's numbers, read from the project's one transcription of them: ``docs/paper.md``.

Each table there follows an explicit anchor (``<a id="table2"></a>``); :func:`paper_table` reads
the first Markdown table after an anchor. Cells keep their text (``95.1±.2``); :func:`value`
reads the number in front of the ``±``. Nothing here holds a copy of a paper figure.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

PAPER_MD = Path(__file__).resolve().parents[1] / "docs" / "paper.md"


def paper_table(anchor: str, path: Path = PAPER_MD) -> pd.DataFrame:
    """The first Markdown table after ``<a id="{anchor}"></a>``, all cells as text, the header
    row as column names."""
    text = path.read_text(encoding="utf-8")
    start = text.find(f'<a id="{anchor}"></a>')
    if start < 0:
        raise KeyError(f"{path}: no anchor {anchor!r}")
    rows = []
    for line in text[start:].splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break  # the table ended
    if len(rows) < 3:
        raise KeyError(f"{path}: no table after anchor {anchor!r}")
    header, body = rows[0], [r for r in rows[2:]]  # rows[1] is the |---| rule
    return pd.DataFrame(body, columns=header)


def value(cell: str) -> float | None:
    """``"95.1±.2"`` -> 95.1; ``"**73.7**"`` -> 73.7; no number -> None."""
    m = re.match(r"\s*\**\s*(-?\d+(?:\.\d+)?)", str(cell))
    return float(m.group(1)) if m else None


def row(table: pd.DataFrame, first_column: str, **cells: str) -> pd.Series:
    """The one row whose first column, stripped of ``**`` emphasis, equals ``first_column`` (and
    whose other named cells equal ``cells``, e.g. ``params="0.3M"``)."""
    key = table.iloc[:, 0].str.replace("**", "", regex=False).str.strip()
    hit = table[key == first_column]
    for column, text in cells.items():
        hit = hit[hit[column] == text]
    if len(hit) != 1:
        raise KeyError(f"{len(hit)} rows match {first_column!r} {cells or ''} in the paper's table")
    return hit.iloc[0]
