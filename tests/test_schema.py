"""The config schema: every shipped config has only keys its parts have, an unknown key is a
ConfigError before any work, per-method experiment settings reach only their method, and a run
starts only from a run of the same method identity (adapter variants apart)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lora_exp import schema
from lora_exp.errors import ConfigError
from lora_exp.methods import METHODS, apply_method
from lora_exp.models import build_model
from lora_exp.spec import ModelSpec
from lora_exp.trainer import run
from lora_exp.validate import validate

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
GLUE = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"]


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_schema_names_every_shipped_key(make_cfg):
    """A key added to conf/config.yaml, the trainer or a logger needs its line in the schema."""
    cfg = make_cfg([])
    assert set(cfg) == set(schema.TOP_LEVEL) and set(cfg.trainer) == set(schema.TRAINER)
    for name in _names("logger"):
        assert set(make_cfg([f"logger={name}"]).logger) == set(schema.LOGGER[name]), name


def test_schema_names_every_registered_method(make_cfg):
    assert set(schema.METHODS) == set(METHODS)
    for name in _names("method"):
        method = make_cfg([f"method={name}"]).method
        allowed = set(schema.METHODS[method.name])
        assert set(method) <= allowed, name
        if name == method.name:  # a method's own file sets every key but the presets' label
            assert set(method) == allowed - {"label"}, name


def _experiment_jobs(exp: str) -> list[list[str]]:
    """The jobs an experiment file is meant for: its sweep's methods and tasks; the GLUE tasks
    for the paper's Table 2 rows, the NLG tasks for Table 3's."""
    text = yaml.safe_load((CONF / "experiment" / f"{exp}.yaml").read_text())
    params = ((text.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    methods = str(params["method"]).split(",") if "method" in params else [None]
    tasks = (str(params["task"]).split(",") if "task" in params
             else GLUE if exp.startswith("table2_") else ["e2e", "webnlg", "dart"]
             if exp.startswith("table3_") else [None])
    return [[f"experiment={exp}", *([f"method={m}"] if m else []), *([f"task={t}"] if t else [])]
            for m in methods for t in tasks]


@pytest.mark.parametrize("exp", _names("experiment"))
def test_every_experiment_job_fits_the_schema(make_cfg, exp):
    """No experiment sets a key its jobs' method, trainer or top level does not have."""
    for overrides in _experiment_jobs(exp):
        cfg = make_cfg(overrides)
        OmegaConf.to_container(cfg, resolve=True)
        schema.check(cfg)


def test_per_method_settings_reach_only_their_method(make_cfg):
    pre = make_cfg(["experiment=table2_cpu", "method=prefix_layer"])
    assert (pre.method.l_p, pre.method.l_i) == (16, 16)
    ft = make_cfg(["experiment=table2_cpu", "method=full_ft"])
    assert "l_p" not in ft.method and ft.trainer.lr != pre.trainer.lr
    adapter = make_cfg(["experiment=table2_cpu", "method=adapter_l"])
    assert (adapter.rank, adapter.method.rank, make_cfg(["experiment=table2_cpu"]).rank) == (16, 16, 8)
    # the command line still wins over the per-method file: the larger adapter row
    assert make_cfg(["experiment=table2_cpu", "method=adapter_h", "rank=64"]).method.rank == 64
    lora = make_cfg(["experiment=table3_cpu", "method=lora"])
    assert (lora.method.alpha, lora.method.dropout, lora.trainer.lr) == (32, 0.1, 1e-3)
    layer = make_cfg(["experiment=table3_cpu", "method=prefix_layer"])
    assert (layer.method.l_p, layer.method.l_i) == (8, 8) and "alpha" not in layer.method
    # Without an experiment, nothing is composed for the method.
    assert make_cfg(["method=prefix_embed"]).method.l_p == 256


def test_per_task_settings_reach_only_their_task(make_cfg):
    sst2 = make_cfg(["experiment=table2_cpu", "task=sst2"])
    assert (sst2.trainer.epochs, sst2.trainer.eval_every, sst2.trainer.checkpoint_every) == (1, 1045, 1045)
    mrpc = make_cfg(["experiment=table2_cpu", "task=mrpc"])
    assert (mrpc.trainer.epochs, mrpc.trainer.eval_every, mrpc.trainer.checkpoint_every) == (8, "epoch", None)
    assert make_cfg(["task=sst2"]).trainer.epochs == 1  # no experiment: nothing composed


@pytest.mark.parametrize("spectrum_exp,twin,overrides", [
    ("spectrum_sst2", "table2_cpu", ["task=sst2", "rank=16", "seed=2"]),
    ("spectrum_sst2", "table2_cpu", ["task=sst2", "method=full_ft", "seed=1"]),
    ("spectrum_e2e", "table3_cpu", ["method=lora", "rank=64"]),
    ("spectrum_e2e", "table3_cpu", ["method=full_ft"]),
])
def test_spectrum_experiments_run_exactly_their_table_twins(make_cfg, spectrum_exp, twin, overrides):
    """So that a spectrum sweep can reuse Table 2's / Table 3's r=8 (r=4) and FT runs."""
    mine = OmegaConf.to_container(make_cfg([f"experiment={spectrum_exp}", *overrides]), resolve=True)
    theirs = OmegaConf.to_container(make_cfg([f"experiment={twin}", *overrides]), resolve=True)
    assert mine.pop("run_name") == spectrum_exp and theirs.pop("run_name") == twin
    assert mine == theirs


@pytest.mark.parametrize("experiment,jobs", [
    # LoRA r = 1, 4, 16, 64 x 3 seeds on SST-2 (FT and r = 8 are Table 2's)
    ("spectrum_sst2", {"task": ["sst2"], "method": ["lora"], "rank": ["1", "4", "16", "64"],
                       "seed": ["0", "1", "2"]}),
    ("spectrum_e2e", {"method": ["lora"], "rank": ["4", "64"]}),  # seed 0; FT is Table 3's
])
def test_spectrum_experiments_sweep_only_their_lora_jobs(experiment, jobs):
    """The multirun grid of each spectrum experiment, as Hydra's sweeper receives it: an
    experiment's sweep params merge into those of the table it builds on, so a key it does not
    set (the table's method list) would multiply its jobs."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = hydra_compose(config_name="config", overrides=[f"experiment={experiment}"],
                            return_hydra_config=True)
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert params == jobs


def test_per_task_table_names_the_tasks_it_has(make_cfg):
    cfg = make_cfg(["experiment=table2_roberta_large_adpth_800k", "task=e2e"])
    with pytest.raises(InterpolationResolutionError,
                       match=r"trainer.epochs='e2e' is invalid.*valid: \['cola',"):
        OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("overrides,message", [
    (["+method.l_p=8"], "method.l_p=8 is invalid: method lora has no key l_p; "
                        "valid: [alpha, dropout, name, rank, targets]"),
    (["+foo=1"], "foo=1 is invalid: the run config has no key foo; valid: [data_dir, dry_run, "),
    (["+trainer.foo=1"], "trainer.foo=1 is invalid: trainer has no key foo; valid: [batch_size, "),
    (["method=bitfit", "+method.rank=4"],
     "method.rank=4 is invalid: method bitfit has no key rank; valid: [name]"),
    (["method=adapter_h", "+method.alpha=8"],
     "method adapter has no key alpha; "
     "valid: [drop_layers, label, name, nonlinearity, rank, variant]"),
    (["+logger.project=x"],
     "logger.project='x' is invalid: logger none has no key project; valid: [name]"),
    (["method=adapter_h", "method.variant=p"], "method.label='adapter_h' is invalid: the label "
     "names another variant than method.variant=p; valid: ['adapter_p']"),
])
def test_unknown_key_is_a_config_error(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(overrides))
    assert message in str(info.value)


def test_unknown_key_exits_2_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "run.py", "model=tiny_bert", "trainer=smoke",
                           "+method.l_p=8", f"hydra.run.dir={out}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "method.l_p=8 is invalid: method lora has no key l_p" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("overrides,identity", [
    ([], "lora"), (["method=full_ft"], "full_ft"), (["method=adapter_h"], "adapter_h"),
    (["method=adapter_d"], "adapter_d"), (["method=adapter", "method.variant=p"], "adapter_p"),
])
def test_method_identity(make_cfg, overrides, identity):
    assert schema.method_identity(make_cfg(overrides).method) == identity


def test_targets_are_checked_by_one_rule(make_cfg):
    """The config check and applying a method outside the trainer refuse alike."""
    for targets in ("[wz]", "[]", "[wq,wq]", "[wq,wz]"):
        cfg = make_cfg(["model=tiny_bert", f"method.targets={targets}"])
        with pytest.raises(ConfigError) as checked:
            validate(cfg)
        model = build_model(cfg.model, "cls", 2, skeleton=True)
        with pytest.raises(ConfigError) as applied:
            apply_method(model, ModelSpec.from_cfg(cfg.model, "cls"), cfg.method)
        assert str(checked.value) == str(applied.value), targets
    with pytest.raises(ConfigError, match="method.targets='wq' is invalid: not a list of weight"):
        validate(make_cfg(["method.targets=wq"]))


def test_deberta_classifier_dropout_is_table_10s(make_cfg):
    for task, p in (("rte", 0.2), ("mnli", 0.15), ("sst2", 0.0)):
        cfg = make_cfg(["experiment=table2_deberta_v2_xxlarge_lora", f"task={task}"])
        model = build_model(cfg.model, cfg.task.kind, cfg.task.num_labels, skeleton=True)
        assert model.dropout.p == p, task


def test_hf_config_reaches_pretrained_weights(make_cfg):
    """model.hf_config also applies to weights loaded with from_pretrained (embedded MiniLM)."""
    cfg = make_cfg(["+model.hf_config.classifier_dropout=0.3"])
    model = build_model(cfg.model, "cls", 3)
    assert model.dropout.p == 0.3 and model.config.num_labels == 3


@pytest.fixture(scope="module")
def adapter_h_run(tmp_path_factory, data_dir):
    """A finished tiny AdapterH run."""
    from tests.conftest import compose

    run_dir = tmp_path_factory.mktemp("adapter_h")
    run(compose(["model=tiny_bert", "trainer=smoke", "trainer.max_steps=1", "method=adapter_h",
                 f"data_dir={data_dir}"]), run_dir)
    return run_dir


def _source(run_dir: Path, tmp_path: Path, saved: str) -> Path:
    """The AdapterH run as the trainer saves it today (meta method "adapter", the variant in its
    method info), or a copy whose meta names the method identity (``adapter_h``), as the trainer
    saves it once it records schema.method_identity."""
    import shutil

    if saved == "adapter":
        return run_dir
    copy = shutil.copytree(run_dir, tmp_path / "source")
    config = json.loads((copy / "adapter_config.json").read_text())
    config["lora_exp"]["method"] = saved
    (copy / "adapter_config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("saved", ["adapter", "adapter_h"])
def test_init_from_another_variant_is_refused_before_work(make_cfg, tmp_path, data_dir,
                                                         adapter_h_run, monkeypatch, saved):
    import lora_exp.trainer as trainer_mod

    source = _source(adapter_h_run, tmp_path, saved)
    monkeypatch.setattr(trainer_mod, "build_model", lambda *a, **k: pytest.fail("model was built"))
    cfg = make_cfg(["model=tiny_bert", "trainer=smoke", "method=adapter_p", f"data_dir={data_dir}",
                    f"init_from={source}"])
    with pytest.raises(ConfigError,
                       match="trained with method=adapter_h; valid: a run of method=adapter_p"):
        run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("saved", ["adapter", "adapter_h"])
def test_init_from_the_same_variant_loads(make_cfg, tmp_path, data_dir, adapter_h_run, saved):
    cfg = make_cfg(["model=tiny_bert", "trainer=smoke", "trainer.max_steps=0", "method=adapter",
                    "method.variant=h", f"data_dir={data_dir}",
                    f"init_from={_source(adapter_h_run, tmp_path, saved)}"])
    assert run(cfg, tmp_path / "run")["status"] == "ok"
