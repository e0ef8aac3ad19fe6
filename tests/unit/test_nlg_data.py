"""E2E, WebNLG and DART as the trainer reads them (the task config names each split's file,
lora_exp.tasks.nlg picks the reader): the real mirror (PROVENANCE.md counts) and tiny files."""
import json

import pytest

from lora_exp.errors import ConfigError
from lora_exp.tasks import nlg
from lora_exp.tasks.nlg_data import NLGExample, group_references, seen_flags


def _read(make_cfg, task, data_dir, split, *overrides):
    cfg = make_cfg([f"task={task}", "model=tiny_gpt2", *overrides])
    examples, _ = nlg.read_examples(cfg.task, str(data_dir), split)
    return examples


@pytest.mark.parametrize("split, n_refs, n_mrs", [
    ("train", 42_061, 4_862), ("valid", 4_672, 547), ("test", 4_693, 630)])
def test_e2e_counts(make_cfg, data_dir, split, n_refs, n_mrs):
    examples = _read(make_cfg, "e2e", data_dir, split)
    contexts, refs = group_references(examples)
    assert len(examples) == n_refs
    assert len(contexts) == n_mrs
    assert sum(len(r) for r in refs) == n_refs


def test_e2e_context_and_completion_as_lora(make_cfg, data_dir):
    first = _read(make_cfg, "e2e", data_dir, "valid")[0]
    # valid.txt line 1 is "MR||text " (trailing space): LoRA's line.strip() drops that space.
    assert first == NLGExample(
        context="name : Alimentum | area : city centre | family friendly : no",
        completion="There is a place in the city centre , Alimentum , that is not family - "
                   "friendly .")


def test_webnlg_test_seen_unseen_counts(make_cfg, data_dir):
    examples = _read(make_cfg, "webnlg", data_dir, "test")
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
def test_webnlg_keeps_only_good_lexicalisations_all_seen(make_cfg, data_dir, split, n_good):
    examples = _read(make_cfg, "webnlg", data_dir, split)
    assert len(examples) == n_good
    assert all(e.seen for e in examples)


@pytest.mark.parametrize("split, n_refs, n_inputs",
                         [("dev", 6_980, 2_721), ("test", 12_552, 4_159)])
def test_dart_counts(make_cfg, data_dir, split, n_refs, n_inputs):
    examples = _read(make_cfg, "dart", data_dir, split)
    contexts, _ = group_references(examples)
    assert len(examples) == n_refs
    # Fewer inputs than the 2,768 / 5,097 triple sets: identical triple sets share one context
    # and so one prediction, as LoRA's gpt2_decode.py groups them.
    assert len(contexts) == n_inputs


def test_dart_context_as_lora(make_cfg, data_dir):
    first = _read(make_cfg, "dart", data_dir, "dev")[0]
    assert first == NLGExample(
        "Mars Hill College : joined : 1973 | "
        "Mars Hill College : location : Mars Hill, North Carolina",
        "A school from Mars Hill, North Carolina, joined in 1973.")


def test_evaluation_sets_group_references_by_input(make_cfg, data_dir, tmp_path, monkeypatch):
    """nlg.eval_set, as the trainer builds an evaluation split: one entry per unique input with
    all its references, and one LM row per reference."""
    from lora_exp.models import load_tokenizer

    monkeypatch.setenv("LORA_EXP_CACHE", str(tmp_path))  # the token cache stays in the test
    cfg = make_cfg(["task=webnlg", "model=tiny_gpt2"])
    tokenizer = load_tokenizer(cfg.model)
    ev = nlg.eval_set(cfg.task, str(data_dir), "test", tokenizer, 512, None)
    assert len(ev) == len(ev.references) == 1_862 and sum(map(len, ev.references)) == 4_928
    assert (ev.seen.count(True), ev.seen.count(False)) == (971, 891)
    assert len(ev.rows) == 4_928  # at 512 tokens (Table 11) no row loses its completion


def test_dart_train_is_not_in_the_mirror(make_cfg, data_dir):
    with pytest.raises(ConfigError, match="only dev and test") as err:
        _read(make_cfg, "dart", data_dir, "train")
    assert str(data_dir / "dart") in str(err.value)


def test_unknown_format_or_split_names_the_choices(make_cfg, data_dir):
    with pytest.raises(ConfigError, match=r"task.format='e2e_nlg'.*\['dart', 'e2e', 'webnlg'\]"):
        _read(make_cfg, "e2e", data_dir, "test", "task.format=e2e_nlg")
    # Splits are named as in task.files: E2E's validation split is "valid", not "dev".
    for split in ("validation", "dev"):
        with pytest.raises(ConfigError, match=rf"task.files.{split}.*\['test', 'train', 'valid'\]"):
            _read(make_cfg, "e2e", data_dir, split)


def test_dart_lowercases_the_property(make_cfg, tmp_path):
    (tmp_path / "dart").mkdir()
    rows = [{"tripleset": [["Mars Hill", "LOCATION", "NC"], ["[TABLECONTEXT]", "[TITLE]", "X"]],
             "annotations": [{"source": "s", "text": "one"}, {"source": "s", "text": "two"}]}]
    (tmp_path / "dart" / "dart-v1.1.1-full-dev.json").write_text(json.dumps(rows))
    assert _read(make_cfg, "dart", tmp_path, "dev") == [
        NLGExample("Mars Hill : location : NC | [TABLECONTEXT] : [title] : X", "one"),
        NLGExample("Mars Hill : location : NC | [TABLECONTEXT] : [title] : X", "two")]


def test_malformed_e2e_line_names_path_and_line(make_cfg, tmp_path):
    (tmp_path / "e2e").mkdir()
    path = tmp_path / "e2e" / "valid.txt"
    path.write_text("name : A||A is here . \nname : B without a separator\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: expected 'MR\|\|text'"):
        _read(make_cfg, "e2e", tmp_path, "valid")


def test_missing_file_names_the_path(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "webnlg" / "test.json")):
        _read(make_cfg, "webnlg", tmp_path, "test")


def test_group_references_keeps_first_appearance_order():
    examples = [NLGExample("b", "b1"), NLGExample("a", "a1"), NLGExample("b", "b2")]
    assert group_references(examples) == (["b", "a"], [["b1", "b2"], ["a1"]])
