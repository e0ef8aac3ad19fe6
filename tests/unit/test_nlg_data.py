"""E2E, WebNLG and DART readers on the real mirror (PROVENANCE.md counts) and on tiny files."""
import json
import os
from pathlib import Path

import pytest

from lora_exp.tasks.nlg_data import (DataError, NLGExample, group_references, load_nlg_split,
                                     seen_flags)

DATA_DIR = Path(os.environ.get("LORA_EXP_DATA_DIR",
                               Path(__file__).resolve().parents[2].parent / "shared" / "data"))


@pytest.mark.parametrize("split, n_refs, n_mrs", [
    ("train", 42_061, 4_862), ("valid", 4_672, 547), ("test", 4_693, 630)])
def test_e2e_counts(split, n_refs, n_mrs):
    examples = load_nlg_split("e2e", DATA_DIR, split)
    contexts, refs = group_references(examples)
    assert len(examples) == n_refs
    assert len(contexts) == n_mrs
    assert sum(len(r) for r in refs) == n_refs


def test_e2e_context_and_completion_as_lora():
    first = load_nlg_split("e2e", DATA_DIR, "valid")[0]
    # valid.txt line 1 is "MR||text " (trailing space): LoRA's line.strip() drops that space.
    assert first == NLGExample(
        context="name : Alimentum | area : city centre | family friendly : no",
        completion="There is a place in the city centre , Alimentum , that is not family - "
                   "friendly .")


def test_webnlg_test_seen_unseen_counts():
    examples = load_nlg_split("webnlg", DATA_DIR, "test")
    contexts, refs = group_references(examples)
    seen = seen_flags(examples)
    assert len(examples) == 4_928
    assert len(contexts) == 1_862
    assert (seen.count(True), seen.count(False)) == (971, 891)  # PROVENANCE: 891 unseen
    assert sorted({e.category for e in examples if not e.seen}) == [
        "Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"]
    assert examples[0] == NLGExample(
        context="Abilene_Regional_Airport : cityServed : Abilene,_Texas",
        completion="Abilene, Texas is served by the Abilene regional airport.",
        category="Airport", seen=True)


@pytest.mark.parametrize("split, n_good", [("train", 18_025), ("dev", 2_258)])
def test_webnlg_keeps_only_good_lexicalisations_all_seen(split, n_good):
    examples = load_nlg_split("webnlg", DATA_DIR, split)
    assert len(examples) == n_good
    assert all(e.seen for e in examples)


def test_valid_and_dev_name_the_same_split():
    assert load_nlg_split("webnlg", DATA_DIR, "valid") == load_nlg_split("webnlg", DATA_DIR, "dev")
    assert load_nlg_split("e2e", DATA_DIR, "dev") == load_nlg_split("e2e", DATA_DIR, "valid")


@pytest.mark.parametrize("split, n_refs, n_inputs",
                         [("dev", 6_980, 2_721), ("test", 12_552, 4_159)])
def test_dart_counts(split, n_refs, n_inputs):
    examples = load_nlg_split("dart", DATA_DIR, split)
    contexts, _ = group_references(examples)
    assert len(examples) == n_refs
    # Fewer inputs than the 2,768 / 5,097 triple sets: identical triple sets share one context
    # and so one prediction, as LoRA's gpt2_decode.py groups them.
    assert len(contexts) == n_inputs


def test_dart_context_as_lora():
    first = load_nlg_split("dart", DATA_DIR, "dev")[0]
    assert first == NLGExample(
        "Mars Hill College : joined : 1973 | "
        "Mars Hill College : location : Mars Hill, North Carolina",
        "A school from Mars Hill, North Carolina, joined in 1973.")


def test_dart_train_is_not_in_the_mirror():
    with pytest.raises(DataError, match="only dev and test") as err:
        load_nlg_split("dart", DATA_DIR, "train")
    assert str(DATA_DIR / "dart") in str(err.value)


def test_unknown_task_or_split_names_the_choices():
    with pytest.raises(ValueError, match=r"task='e2e_nlg'.*\['dart', 'e2e', 'webnlg'\]"):
        load_nlg_split("e2e_nlg", DATA_DIR, "test")
    with pytest.raises(ValueError, match=r"split='validation'.*\['test', 'train', 'valid'\]"):
        load_nlg_split("e2e", DATA_DIR, "validation")


def test_dart_lowercases_the_property(tmp_path):
    (tmp_path / "dart").mkdir()
    rows = [{"tripleset": [["Mars Hill", "LOCATION", "NC"], ["[TABLECONTEXT]", "[TITLE]", "X"]],
             "annotations": [{"source": "s", "text": "one"}, {"source": "s", "text": "two"}]}]
    (tmp_path / "dart" / "dart-v1.1.1-full-dev.json").write_text(json.dumps(rows))
    assert load_nlg_split("dart", tmp_path, "dev") == [
        NLGExample("Mars Hill : location : NC | [TABLECONTEXT] : [title] : X", "one"),
        NLGExample("Mars Hill : location : NC | [TABLECONTEXT] : [title] : X", "two")]


def test_malformed_e2e_line_names_path_and_line(tmp_path):
    (tmp_path / "e2e").mkdir()
    path = tmp_path / "e2e" / "valid.txt"
    path.write_text("name : A||A is here . \nname : B without a separator\n")
    with pytest.raises(DataError, match=rf"{path}:2: expected 'MR\|\|text'"):
        load_nlg_split("e2e", tmp_path, "valid")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "webnlg" / "test.json")):
        load_nlg_split("webnlg", tmp_path, "test")


def test_group_references_keeps_first_appearance_order():
    examples = [NLGExample("b", "b1"), NLGExample("a", "a1"), NLGExample("b", "b2")]
    assert group_references(examples) == (["b", "a"], [["b1", "b2"], ["a1"]])
