"""The bad-input catalogue: each case fails before training with a message naming the key, the
value and what would be valid, and no run is marked "ok". (tests/test_cli.py checks that the
command line turns these errors into a short message and a non-zero exit.)"""
import json
import pickle
import shutil

import pytest
import torch
from hydra.errors import HydraException

from lora_exp.errors import ConfigError
from lora_exp.trainer import run

SMOKE = ["model=tiny_bert", "trainer=smoke"]

# (id, overrides, expected substrings of the error)
CONFIG_CASES = [
    ("unknown model", ["model=nosuch"], ["model/nosuch", "minilm"]),
    ("unknown method", ["method=nosuch"], ["method/nosuch", "lora"]),
    ("unknown task", ["task=nosuch"], ["task/nosuch", "sst2"]),
    ("unknown logger", ["logger=nosuch"], ["logger/nosuch", "wandb"]),
    ("rank zero", ["rank=0"], ["rank=0", "an integer in [1, 32]"]),
    ("rank negative", ["rank=-3"], ["rank=-3", "an integer in [1, 32]"]),
    ("rank not an integer", ["rank=abc"], ["rank='abc'", "not an integer"]),
    ("rank fractional", ["rank=2.5"], ["rank=2.5", "not an integer"]),
    ("rank above min(d, k)", ["rank=64"], ["rank=64", "an integer in [1, 32]"]),
    ("alpha zero", ["method.alpha=0"], ["method.alpha=0", "> 0"]),
    ("alpha negative", ["method.alpha=-8"], ["method.alpha=-8", "> 0"]),
    ("unknown weight type", ["method.targets=[wz]"], ["method.targets='wz'", "wq"]),
    ("no weight type", ["method.targets=[]"], ["method.targets=[]", "empty"]),
    ("weight type twice", ["method.targets=[wq,wq]"], ["method.targets", "twice"]),
    ("weight types not a list", ["method.targets=wq"], ["method.targets='wq'", "not a list", "wv"]),
    ("unknown method key", ["+method.l_p=8"],
     ["method.l_p=8", "method lora has no key l_p", "[alpha, dropout, name, rank, targets]"]),
    ("unknown top-level key", ["+foo=1"], ["foo=1", "the run config has no key foo", "run_name"]),
    ("unknown trainer key", ["+trainer.foo=1"], ["trainer.foo=1", "trainer has no key foo", "batch_size"]),
    ("adapter preset with another variant", ["method=adapter_h", "method.variant=p"],
     ["method.label='adapter_h'", "method.variant=p", "adapter_p"]),
    ("dropout above 1", ["method.dropout=1.5"], ["method.dropout=1.5", "[0, 1)"]),
    ("max_steps negative", ["trainer.max_steps=-1"], ["trainer.max_steps=-1", ">= 0"]),
    ("batch size zero", ["trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"]),
    ("grad_accum zero", ["trainer.grad_accum=0"], ["trainer.grad_accum=0", ">= 1"]),
    ("lr zero", ["trainer.lr=0"], ["trainer.lr=0", "> 0"]),
    ("lr negative", ["trainer.lr=-1e-3"], ["trainer.lr=-0.001", "> 0"]),
    ("warmup ratio above 1", ["trainer.warmup_ratio=1.5"], ["trainer.warmup_ratio=1.5", "[0, 1)"]),
    ("eval_every zero", ["trainer.eval_every=0"], ["trainer.eval_every=0", ">= 1"]),
    ("checkpoint_every zero", ["trainer.checkpoint_every=0"], ["trainer.checkpoint_every=0", ">= 1"]),
    ("unknown device", ["trainer.device=tpu"], ["trainer.device='tpu'", "cpu"]),
    ("unknown precision", ["trainer.precision=fp8"], ["trainer.precision='fp8'", "bf16"]),
    ("epochs zero", ["trainer.epochs=0"], ["trainer.epochs=0", ">= 1"]),
    ("max_train_samples zero", ["trainer.max_train_samples=0"], ["trainer.max_train_samples=0", ">= 1"]),
    ("max_eval_samples zero", ["trainer.max_eval_samples=0"], ["trainer.max_eval_samples=0", ">= 1"]),
    ("max_length too small", ["trainer.max_length=0"], ["trainer.max_length=0", ">= 8"]),
    ("fast_dropout not a bool", ["trainer.fast_dropout=maybe"], ["trainer.fast_dropout='maybe'", "[True, False]"]),
    ("fused_optimizer not a bool", ["trainer.fused_optimizer=2"], ["trainer.fused_optimizer=2", "[True, False]"]),
    ("keep_freed_memory not a bool", ["trainer.keep_freed_memory=yes please"],
     ["trainer.keep_freed_memory='yes please'", "[True, False]"]),
    ("gradient_checkpointing not a bool", ["trainer.gradient_checkpointing=maybe"],
     ["trainer.gradient_checkpointing='maybe'", "[True, False]"]),
    ("compile not a bool", ["trainer.compile=yes"], ["trainer.compile='yes'", "[True, False]"]),
    ("compile_buckets zero", ["trainer.compile_buckets=0"], ["trainer.compile_buckets=0", ">= 1"]),
    ("compile_buckets not an integer", ["trainer.compile_buckets=many"],
     ["trainer.compile_buckets='many'", "not an integer"]),
    ("merged_eval not a bool", ["trainer.merged_eval=1"], ["trainer.merged_eval=1", "[True, False]"]),
    ("group_by_length not a bool", ["trainer.group_by_length=maybe"],
     ["trainer.group_by_length='maybe'", "[True, False]"]),
    ("seed negative", ["seed=-1"], ["seed=-1", ">= 0"]),
    ("unknown selection", ["trainer.selection=dev"], ["trainer.selection='dev'", "heldout"]),
    ("heldout size zero", ["trainer.heldout_size=0", "trainer.selection=heldout"],
     ["trainer.heldout_size=0", ">= 1"]),
    ("no_decay not a bool", ["trainer.no_decay=sometimes"], ["trainer.no_decay='sometimes'", "[True, False]"]),
    ("unknown init checkpoint", ["init_checkpoint=last"], ["init_checkpoint='last'", "final"]),
    ("model dropout above 1", ["model.dropout=1.5"], ["model.dropout=1.5", "[0, 1)"]),
    ("missing data_dir", ["data_dir=/nonexistent/mirror"], ["data_dir='/nonexistent/mirror'", "null"]),
    ("init_from missing", ["init_from=/nonexistent/run"], ["init_from='/nonexistent/run'", "run directory"]),
    ("a rank the experiment has no rate for", ["experiment=table2_cpu", "method=adapter_h", "rank=16"],
     ["trainer.lr", "no entry for 16", "[8, 64]"]),
]


def _expect_failure(make_cfg, tmp_path, overrides, needles, data_dir, exc=(ConfigError,)):
    with pytest.raises(exc) as info:
        cfg = make_cfg([*SMOKE, f"data_dir={data_dir}", *overrides])
        run(cfg, tmp_path)
    text = str(info.value)
    for needle in needles:
        assert needle in text, (needle, text)
    summary = tmp_path / "summary.json"
    if summary.exists():
        assert json.loads(summary.read_text())["status"] == "failed"
    assert not (tmp_path / "adapter_model.safetensors").exists()  # no work was done
    return text


@pytest.mark.parametrize("name,overrides,needles", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(make_cfg, tmp_path, data_dir, name, overrides, needles):
    exc = (ConfigError, HydraException) if name.startswith("unknown") and "=" in overrides[0] \
        and overrides[0].split("=")[0] in ("model", "method", "task", "logger") else (ConfigError,)
    _expect_failure(make_cfg, tmp_path, overrides, needles, data_dir, exc)


@pytest.fixture
def mirror(tmp_path, data_dir):
    """A writable copy of the SST-2 part of the mirror, to break on purpose."""
    root = tmp_path / "mirror"
    (root / "sst2").mkdir(parents=True)
    lines = (data_dir / "sst2" / "dev.tsv").read_text().splitlines()[:41]
    (root / "sst2" / "dev.tsv").write_text("\n".join(lines) + "\n")
    (root / "sst2" / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


DATA_CASES = [
    ("task folder missing", lambda r: shutil.rmtree(r / "sst2"), ["task.files.train", "holds"]),
    ("train file missing", lambda r: (r / "sst2" / "train.tsv").unlink(), ["task.files.train", "dev.tsv"]),
    ("train file empty", lambda r: (r / "sst2" / "train.tsv").write_text(""), ["task.files.train", "empty"]),
    ("header only", lambda r: (r / "sst2" / "train.tsv").write_text("sentence\tlabel\n"), ["no rows"]),
    ("column missing", lambda r: (r / "sst2" / "train.tsv").write_text("text\tlabel\nhi\t1\n"),
     ["columns ['sentence'] are missing", "text"]),
    ("label outside the label set", lambda r: (r / "sst2" / "train.tsv").write_text(
        "sentence\tlabel\ngood\t1\nbad\t7\n"), ["label", "'7'", "[0, 1]"]),
    ("malformed rows", lambda r: (r / "sst2" / "dev.tsv").write_text(
        "sentence\tlabel\na\tb\tc\td\n"), ["not a readable TSV"]),
]


@pytest.mark.parametrize("name,breaker,needles", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(make_cfg, tmp_path, mirror, name, breaker, needles):
    breaker(mirror)
    _expect_failure(make_cfg, tmp_path / "run", [], needles, mirror)


def test_regression_label_not_a_number(make_cfg, tmp_path, data_dir):
    root = tmp_path / "mirror" / "stsb"
    root.mkdir(parents=True)
    header = (data_dir / "stsb" / "dev.tsv").read_text().splitlines()[0]
    row = "\t".join(["0", "g", "f", "y", "0", "n", "n", "a b", "c d", "high"])
    for split in ("train", "dev"):
        (root / f"{split}.tsv").write_text(f"{header}\n{row}\n")
    _expect_failure(make_cfg, tmp_path / "run", ["task=stsb"], ["non-numeric score"], tmp_path / "mirror")


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, data_dir):
    """Three finished runs to point init_from at: tiny_bert LoRA, tiny_bert full FT, tiny_gpt2 LoRA."""
    from tests.conftest import compose

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for key, overrides in {"bert_lora": ["model=tiny_bert"], "bert_ft": ["model=tiny_bert", "method=full_ft"],
                           "gpt2_lora": ["model=tiny_gpt2"]}.items():
        run(compose([*overrides, "trainer=smoke", "trainer.max_steps=1", f"data_dir={data_dir}"]), root / key)
        runs[key] = root / key
    return runs


def test_init_from_other_model(make_cfg, tmp_path, data_dir, trained_runs):
    _expect_failure(make_cfg, tmp_path, [f"init_from={trained_runs['gpt2_lora']}"],
                    ["init_from=", "model=tiny_bert", "trained with model=tiny_gpt2"], data_dir)


def test_init_from_other_method(make_cfg, tmp_path, data_dir, trained_runs):
    _expect_failure(make_cfg, tmp_path, [f"init_from={trained_runs['bert_ft']}"],
                    ["method=lora", "trained with method=full_ft"], data_dir)


def test_init_from_without_checkpoint(make_cfg, tmp_path, data_dir):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    _expect_failure(make_cfg, tmp_path / "run", [f"init_from={empty}"],
                    ["init_from=", "adapter_config.json is missing"], data_dir)


def test_init_from_pickle_is_refused(make_cfg, tmp_path, data_dir, trained_runs):
    """A pickle where the safetensors file should be is never unpickled."""
    fake = tmp_path / "fake_run"
    shutil.copytree(trained_runs["bert_lora"], fake)
    for weights in fake.rglob("adapter_model.safetensors"):  # the final and the best parameters
        with open(weights, "wb") as f:
            pickle.dump({"x": torch.zeros(2)}, f)
    _expect_failure(make_cfg, tmp_path / "run", [f"init_from={fake}"],
                    ["not a safetensors file", "pickled checkpoints are refused"], data_dir)


def _keys_validate_checks(make_cfg, monkeypatch) -> set[str]:
    """Every config key lora_exp.validate checks: the literal keys it passes to the shared check
    helpers or to ConfigError (read from its source), and the keys the helpers receive while it
    validates a default config (which catches keys built at run time, e.g. f"trainer.{key}")."""
    import ast
    import inspect

    import lora_exp.validate as validate_mod

    keys = set()
    for node in ast.walk(ast.parse(inspect.getsource(validate_mod))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args \
                and (node.func.id == "ConfigError" or node.func.id.startswith("check_")) \
                and isinstance(node.args[0], ast.Constant):
            keys.add(node.args[0].value)

    def recording(check):
        def wrapper(key, *args, **kwargs):
            if isinstance(key, str):  # check_targets takes the value first; its key is literal
                keys.add(key)
            return check(key, *args, **kwargs)
        return wrapper

    for name in [n for n in vars(validate_mod) if n.startswith("check_")]:
        monkeypatch.setattr(validate_mod, name, recording(getattr(validate_mod, name)))
    validate_mod.validate(make_cfg(["model=tiny_bert", "data_dir=null"]))
    return keys


def test_every_checked_key_has_a_case(make_cfg, monkeypatch):
    """A new check in validate comes with a case here that shows its message."""
    checked = _keys_validate_checks(make_cfg, monkeypatch)
    assert {"rank", "trainer.lr", "trainer.fast_dropout", "init_from"} <= checked  # the scan works
    with_case = {overrides[0].split("=")[0] for _, overrides, _ in CONFIG_CASES}
    assert checked <= with_case, f"no bad-input case for {sorted(checked - with_case)}"
