"""E2E, WebNLG and DART readers: data-to-text examples as context/completion pairs (§5.4).

Each reader gives the same ``context`` string that microsoft/LoRA's
``examples/NLG/src/format_converting_{e2e,webnlg,dart}.py`` writes into its jsonl
(docs/paper.md#reference-nlg), so prompts, and the unique-input grouping the paper's scores
rely on, match the reference pipeline:

* E2E: ``line.strip().split('||')``: the MR as it stands in the file
  (``name : Alimentum | area : city centre | family friendly : no``); the reference is the
  rest of the line without the trailing space.
* WebNLG: ``subject : property : object`` per triple of the ``modifiedtripleset``, joined
  with `` | ``; one example per lexicalisation with ``comment == "good"``.
* DART: like WebNLG but with the property lower-cased; one example per annotation.

Each reader takes the path of one split's file; which file a split is comes from
``conf/task/<task>.yaml`` (:mod:`lora_exp.files`), and :func:`lora_exp.tasks.nlg.read_examples`
picks the reader by ``task.format``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The 10 DBpedia categories of the WebNLG 2017 training data; the test set adds 5 unseen ones
# (Artist, Athlete, CelestialBody, MeanOfTransportation, Politician). Same list as LoRA's
# format_converting_webnlg.py, which stores `category in seen` as the `cate` flag.
WEBNLG_SEEN_CATEGORIES = frozenset({
    "Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument",
    "SportsTeam", "University", "WrittenWork",
})


class DataError(ValueError):
    """A data file is malformed (the message names the path and the line or entry)."""


@dataclass(frozen=True)
class NLGExample:
    """One (input, reference) pair; an input with k references gives k examples.

    Attributes:
        context: The linearised input (E2E meaning representation or triples).
        completion: One reference text.
        category: WebNLG DBpedia category; None for E2E and DART.
        seen: WebNLG only: whether the category is one of the 10 training categories.
    """

    context: str
    completion: str
    category: str | None = None
    seen: bool | None = None


def group_references(examples: list[NLGExample]) -> tuple[list[str], list[list[str]]]:
    """Group examples by context, as LoRA's gpt2_decode.py does before scoring.

    Args:
        examples: One split's examples, as a reader gives them.

    Returns:
        ``(unique_contexts, references)``: the contexts in order of first appearance (the order
        predictions must be written in) and, for each, all its completions in file order.
    """
    refs: dict[str, list[str]] = {}
    for ex in examples:
        refs.setdefault(ex.context, []).append(ex.completion)
    return list(refs), list(refs.values())


def seen_flags(examples: list[NLGExample]) -> list[bool]:
    """The WebNLG ``seen`` flag of each unique context, aligned with :func:`group_references`.

    Raises:
        ValueError: An example has no flag (not WebNLG), or one context has both flags.
    """
    flags: dict[str, bool] = {}
    for ex in examples:
        if ex.seen is None:
            raise ValueError(f"example without a seen flag (not WebNLG?): {ex.context!r}")
        if flags.setdefault(ex.context, ex.seen) != ex.seen:
            raise ValueError(f"context is both seen and unseen: {ex.context!r}")
    return list(flags.values())


def _read_e2e(path: Path) -> list[NLGExample]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            # LoRA: items = line.strip().split('||'); context = items[0]; completion = items[1]
            parts = line.strip().split("||")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise DataError(f"{path}:{lineno}: expected 'MR||text', got {line[:80]!r}")
            out.append(NLGExample(context=parts[0], completion=parts[1]))
    return out


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e


def _read_webnlg(path: Path) -> list[NLGExample]:
    data = _load_json(path)
    if not isinstance(data, dict) or "entries" not in data:
        raise DataError(f"{path}: expected a JSON object with an 'entries' list")
    out = []
    for i, wrapped in enumerate(data["entries"], start=1):
        where = f"{path}: entry {i}"
        # Each entry is {"<1-based index>": {...}}; LoRA reads example[str(i + 1)].
        if not isinstance(wrapped, dict) or str(i) not in wrapped:
            raise DataError(f"{where}: expected an object keyed by {str(i)!r}")
        entry = wrapped[str(i)]
        try:
            triples = [(t["subject"], t["property"], t["object"])
                       for t in entry["modifiedtripleset"]]
            category = entry["category"]
            lexs = [(lex["comment"], lex["lex"]) for lex in entry["lexicalisations"]]
        except (KeyError, TypeError) as e:
            raise DataError(f"{where}: missing or malformed field {e}") from e
        context = _linearise(triples)
        seen = category in WEBNLG_SEEN_CATEGORIES
        out += [NLGExample(context, text, category, seen)
                for comment, text in lexs if comment == "good"]
    return out


def _read_dart(path: Path) -> list[NLGExample]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of triple sets")
    out = []
    for i, entry in enumerate(data, start=1):
        where = f"{path}: entry {i}"
        try:
            triples = [tuple(t) for t in entry["tripleset"]]
            texts = [a["text"] for a in entry["annotations"]]
        except (KeyError, TypeError) as e:
            raise DataError(f"{where}: missing or malformed field {e}") from e
        if any(len(t) != 3 for t in triples):
            raise DataError(f"{where}: every triple must be [subject, property, object]")
        # LoRA's format_converting_dart.py lower-cases the property (DART mixes "NAME", "name").
        context = _linearise([(s, p.lower(), o) for s, p, o in triples])
        out += [NLGExample(context, text) for text in texts]
    return out


def _linearise(triples: list[tuple[str, str, str]]) -> str:
    return " | ".join(f"{s} : {p} : {o}" for s, p, o in triples)
