"""Learning versus forgetting: what a run lost of what its base model knew (after Biderman et al.
2024, "LoRA Learns Less and Forgets Less", arXiv 2405.09673).

Each run is scored twice by one probe on data it never trained on, by the same function
(:func:`probe_score`); only the weights differ:

* ``before``: the base model of the run's own config (``build_model``: the pretrained weights, or
  for the random test models the same seeded weights the run started from).
* ``after``: the model as the run built it with its saved trained parameters loaded, by the
  trainer's own ``init_from`` path (``lora_exp.trainer.adapt`` -> ``export.load_trained``); LoRA
  is then merged into W0 (``merge_lora``); full FT's weights are its tuned ones; adapters and the
  prefix methods act through their modules and hooks. ``checkpoint`` picks the parameters: ``best``
  (default, those of the evaluation the run reports, like ``task_metric``) or ``final``. A run
  started with ``init_from`` is compared with the pretrained model too, so its forgetting
  includes the run it started from.

Probes (the model's task kind chooses):

* ``stsb_zero_shot_spearman`` (task.kind cls / reg, e.g. MiniLM, a sentence-embedding model):
  every sentence of the STS-B dev set (1,500 pairs, read by the GLUE reader of
  ``lora_exp/tasks/glue.py`` with ``conf/task/stsb.yaml``) is embedded on its own as the
  attention-mask-weighted mean of the last layer's hidden states (``[CLS]``/``[SEP]`` included,
  padding not; for the prefix methods their special positions too, which the model attends to);
  a pair's score is the cosine similarity of its two embeddings; the probe is the Spearman
  correlation of the scores with the gold similarity. No head, no training on STS-B.
  ``forgetting = before − after``.
* ``webnlg_ref_lm_loss`` (task.kind lm, e.g. SmolLM2 on E2E): the mean cross-entropy per token
  (nats, no label smoothing) of a seeded subset of distinct WebNLG *test* references (300 by
  default; DBpedia facts, another domain than E2E's restaurants), each written as an NLG row with
  an empty input (separator, " " + reference, end token; the loss covers the reference and its end
  token), by the project's validation-loss function ``nlg.lm_loss``. ``dart_ref_lm_loss`` uses
  DART's test references instead. ``forgetting = after − before``.

So in both, positive = forgot. Everything runs on CPU in float32, in eval mode, without gradients.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from analysis import measured
from analysis.runs import RunError, kind_label, summary_of
from lora_exp import REPO, export
from lora_exp.data import collate, eval_batches, row_lengths
from lora_exp.errors import ConfigError
from lora_exp.lora import merge_lora
from lora_exp.metrics import spearman
from lora_exp.models import build_model, load_tokenizer
from lora_exp.runlog import write_json
from lora_exp.tasks import glue, nlg
from lora_exp.tasks.nlg_data import NLGExample

STSB_PROBE = "stsb_zero_shot_spearman"
LM_PROBES = {"webnlg": ("webnlg", "test"), "dart": ("dart", "test")}  # name -> (task, split)
N_TEXTS = 300  # held-out references for the LM probe: ~9.5k tokens, seconds per model on CPU
# One length and batch for every run and probe, so that runs trained with different
# trainer.max_length are measured on the same tokens. STS-B sentences and WebNLG references are
# far shorter than 128 tokens: nothing is cut in practice.
MAX_LENGTH = 128
BATCH = 32
CHECKPOINTS = export.CHECKPOINTS
COLUMNS = ["run_dir", "model", "method", "rank", "task", "seed", "checkpoint", "probe",
           "probe_data", "probe_items", "before", "after", "forgetting", "task_metric_name",
           "task_metric"]
DEVICE = torch.device("cpu")
# Bump when what a record measures changes: runs' recorded records (analysis.measured) are redone.
DEFINITION = 1


@dataclass
class Probe:
    """The held-out data of one probe: STS-B pairs (``pairs``) or LM rows (``rows``)."""

    name: str
    data: str  # which file and how much of it, for the record
    items: int
    pairs: tuple[list[str], list[str], np.ndarray] | None = None
    rows: Dataset | None = None


def task_config(name: str) -> DictConfig:
    """``conf/task/<name>.yaml``: the files and columns the project's readers need."""
    return OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")


def run_config(run_dir: Path, checkpoint: str) -> tuple[dict, DictConfig]:
    """(summary, resolved config) of a finished run with saved trained parameters.

    Raises:
        RunError: not a run, not finished, a dry run, or no ``checkpoint`` parameters saved.
    """
    summary = summary_of(run_dir)  # RunError when there is no summary.json
    if summary.get("dry_run") or summary.get("status") != "ok":
        why = "a dry run" if summary.get("dry_run") else f"status={summary.get('status')}"
        raise RunError(f"{run_dir}: {why}; only finished runs have trained parameters to measure")
    try:
        where = export.trained_dir(Path(run_dir), checkpoint)
    except ConfigError as e:  # e.g. no best/ in a run made before best evaluations were kept
        raise RunError(f"{run_dir}: {e} (--checkpoint)") from None
    if not (where / export.WEIGHTS).is_file():
        raise RunError(f"{run_dir}: no saved trained parameters ({where / export.WEIGHTS} "
                       "missing; was it run with trainer.save_trained=false?)")
    return summary, OmegaConf.create(summary["config"])


def base_model(cfg: DictConfig) -> torch.nn.Module:
    """The run's model before fine-tuning: its model config's pretrained (or seeded) weights."""
    return build_model(cfg.model, cfg.task.kind, cfg.task.num_labels, seed=cfg.seed)


def trained_model(cfg: DictConfig, run_dir: Path, checkpoint: str) -> torch.nn.Module:
    """The run's model after fine-tuning, rebuilt by the trainer's own ``init_from`` path."""
    from lora_exp.tasks.registry import task_family
    from lora_exp.trainer import adapt  # the one place a run's model is built and loaded

    cfg = OmegaConf.merge(cfg, {"init_from": str(run_dir), "init_checkpoint": checkpoint})
    try:
        run = adapt(cfg, task_family(cfg.task))
    except RuntimeError as e:  # load_trained: keys or shapes do not fit the run's own config
        raise RunError(f"{run_dir}: {str(e).splitlines()[0]}") from None
    if run.result.mergeable:  # LoRA: W0 + (α/r)·B·A, the deployed form (§4.1)
        merge_lora(run.model)
    return run.model


@contextmanager
def seen_inputs(model: torch.nn.Module):
    """The keyword inputs the model's forward really receives, after the method's own pre-hooks
    (registered before this one): the prefix methods widen ``attention_mask`` by their special
    positions, so the mask that pools the hidden states must be the widened one."""
    seen: dict = {}
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs),
                                             with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) hidden states, (B, T) attention mask -> (B, d): the mean over real tokens only,
    as sentence-transformers pools MiniLM; padding must not move a sentence's embedding."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@torch.no_grad()
def embed(model: torch.nn.Module, tokenizer, sentences: list[str]) -> torch.Tensor:
    """(N, d) float32 mean-pooled last-layer embeddings, each sentence tokenised on its own."""
    enc = tokenizer(list(sentences), truncation=True, max_length=MAX_LENGTH)
    cols = {"input_ids": enc["input_ids"], "labels": [0.0] * len(sentences)}  # collate wants labels
    if "token_type_ids" in enc:
        cols["token_type_ids"] = enc["token_type_ids"]
    ds = Dataset.from_dict(cols)
    batches = eval_batches(row_lengths(ds), BATCH)  # similar lengths together: little padding
    out = []
    for idx in batches:
        batch = collate(ds, idx, tokenizer.pad_token_id)  # right padding, as the runs evaluate
        batch.pop("labels")
        with seen_inputs(model) as seen:
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
        out.append(mean_pool(hidden.float(), seen["attention_mask"]))
    order = np.argsort(np.concatenate(batches), kind="stable")  # back to sentence order
    return torch.cat(out)[torch.from_numpy(order)]


def cosine_spearman(a: torch.Tensor, b: torch.Tensor, gold: np.ndarray) -> float:
    """Spearman correlation of the pairs' cosine similarities with their gold scores."""
    return spearman(F.cosine_similarity(a, b, dim=-1).numpy(), np.asarray(gold))


def stsb_spearman(model: torch.nn.Module, tokenizer, pairs) -> float:
    """The STS-B probe: embed both sides of every pair, score by cosine, rank against gold."""
    first, second, gold = pairs
    e = embed(model, tokenizer, [*first, *second])  # one pass: batches sorted over both sides
    return cosine_spearman(e[:len(first)], e[len(first):], gold)


def heldout_texts(data_dir: str | Path, probe: str, n: int, seed: int) -> tuple[list[str], int]:
    """(a seeded subset of ``n`` distinct references of the probe's split in file order, how many
    there are), read by the project's NLG reader."""
    if n < 1:
        raise RunError(f"--texts={n} is invalid; valid: a count >= 1")
    task_name, split = LM_PROBES[probe]
    examples, _ = nlg.read_examples(task_config(task_name), str(data_dir), split)
    refs = list(dict.fromkeys(ex.completion for ex in examples))  # a text twice would count twice
    keep = np.sort(np.random.default_rng(seed).permutation(len(refs))[:n])
    return [refs[i] for i in keep], len(refs)


def text_rows(tokenizer, texts: list[str]) -> Dataset:
    """Each text as an NLG row with an empty input: separator, " " + text, end token, labels -100
    on the separator. The decoder runs trained on this layout, so the probe asks the fine-tuned
    model for text in the form it knows, only about another domain."""
    rows = nlg.encode_rows(tokenizer, [NLGExample("", t) for t in texts], MAX_LENGTH)
    # No prompt_len: the base model's forward would refuse it; a prefix method then puts its
    # infix after the last token, where it changes no prediction of a causal model.
    del rows["prompt_len"]
    return Dataset.from_dict(rows)


def load_probe(cfg: DictConfig, data_dir: str | Path, tokenizer, lm_probe: str, n_texts: int,
               seed: int) -> Probe:
    """The probe for the run's task kind, with its data read once for before and after."""
    if cfg.task.kind in ("cls", "reg"):
        (first, second), gold, _ = glue.load_split(task_config("stsb"), str(data_dir), "dev")
        return Probe(STSB_PROBE, "stsb dev (all pairs)", len(gold), pairs=(first, second, gold))
    if cfg.task.kind != "lm":
        raise RunError(f"task.kind={cfg.task.kind} has no forgetting probe (cls, reg, lm)")
    if cfg.task.name == LM_PROBES[lm_probe][0]:  # the probe must be text the run never saw
        raise RunError(f"the run trained on {cfg.task.name}: use another --lm-probe than "
                       f"{lm_probe}")
    texts, total = heldout_texts(data_dir, lm_probe, n_texts, seed)
    split = LM_PROBES[lm_probe][1]
    return Probe(f"{lm_probe}_ref_lm_loss",
                 f"{lm_probe} {split} references ({len(texts)} of {total}, seed {seed})",
                 len(texts), rows=text_rows(tokenizer, texts))


@torch.no_grad()
def probe_score(model: torch.nn.Module, tokenizer, probe: Probe) -> float:
    """The one function behind both ``before`` and ``after``: only the model passed differs."""
    model.to(DEVICE).float().eval()  # float32 and no dropout: the weights alone decide
    if probe.pairs is not None:
        return stsb_spearman(model, tokenizer, probe.pairs)
    return nlg.lm_loss(model, probe.rows, BATCH, tokenizer.pad_token_id, DEVICE, None)


def task_metric(summary: dict, checkpoint: str) -> tuple[str | None, float | None]:
    """(main metric name, its value at the evaluation whose parameters were measured): ``best``
    is the run's reported evaluation (``heldout`` under ``trainer.selection=heldout``, whose
    choice the best/ parameters follow), ``final`` its last."""
    metrics = summary.get("metrics") or {}
    main = metrics.get("main_metric")
    if not main:
        return None, None
    split, _, name = main.partition("/")
    which = checkpoint
    if checkpoint == "best" and metrics.get("selection") == "heldout":
        which = "heldout"
    value = ((metrics.get(split) or {}).get(which) or {}).get(name)
    return main, None if value is None else float(value)


def params(checkpoint: str = "best", lm_probe: str = "webnlg", n_texts: int = N_TEXTS,
           seed: int = 0) -> dict:
    """What a run's recorded forgetting depends on besides the run (the data mirror's location
    does not: every mirror holds the same files)."""
    return {"definition": DEFINITION, "checkpoint": checkpoint, "lm_probe": lm_probe,
            "n_texts": n_texts, "seed": seed}


def measure(run_dir: str | Path, checkpoint: str = "best", data_dir: str | Path | None = None,
            lm_probe: str = "webnlg", n_texts: int = N_TEXTS, seed: int = 0,
            before_scores: dict | None = None) -> dict:
    """One run's record (:data:`COLUMNS`): the one recorded beside the run
    (:mod:`analysis.measured`) when it is there, else :func:`measure_run`'s, recorded."""
    [record] = measured.cached(run_dir, "forgetting", params(checkpoint, lm_probe, n_texts, seed),
                               lambda: [measure_run(run_dir, checkpoint, data_dir, lm_probe,
                                                    n_texts, seed, before_scores)])
    return {**record, "run_dir": str(run_dir)}


def measure_run(run_dir: str | Path, checkpoint: str = "best", data_dir: str | Path | None = None,
                lm_probe: str = "webnlg", n_texts: int = N_TEXTS, seed: int = 0,
                before_scores: dict | None = None) -> dict:
    """One run's record (:data:`COLUMNS`), measured from its weights.

    Args:
        data_dir: the data mirror of the probe; default: the run's own ``data_dir``.
        lm_probe: ``webnlg`` or ``dart``: whose test references the LM probe reads.
        n_texts, seed: how many references the LM probe keeps, and which (seeded subset).
        before_scores: ``before`` of the base models already scored, by model config and probe
            (filled here): the runs of a sweep share one base model, scored once.
    """
    run_dir = Path(run_dir)
    summary, cfg = run_config(run_dir, checkpoint)
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    if data_dir is None:
        raise RunError(f"{run_dir}: its config has data_dir=null: pass --data-dir (a local mirror)")
    tokenizer = load_tokenizer(cfg.model)
    probe = load_probe(cfg, data_dir, tokenizer, lm_probe, n_texts, seed)
    # Pretrained weights are the same for every seed; the random test models' are seeded.
    weights_seed = cfg.seed if cfg.model.source == "random" else None
    key = (OmegaConf.to_yaml(cfg.model), weights_seed, probe.name, probe.data, probe.items,
           str(data_dir))
    cache = before_scores if before_scores is not None else {}
    if key not in cache:
        cache[key] = probe_score(base_model(cfg), tokenizer, probe)
    before = cache[key]
    after = probe_score(trained_model(cfg, run_dir, checkpoint), tokenizer, probe)
    # Positive = forgot: a lower Spearman, or a higher loss, than the base model's.
    forgot = before - after if probe.pairs is not None else after - before
    name, value = task_metric(summary, checkpoint)
    return {"run_dir": str(run_dir), "model": summary.get("model"), "method": summary.get("method"),
            "rank": cfg.method.get("rank"),  # LoRA's r, an adapter's bottleneck; None for FT
            "task": summary.get("task"), "seed": summary.get("seed"), "checkpoint": checkpoint,
            "probe": probe.name, "probe_data": probe.data, "probe_items": probe.items,
            "before": before, "after": after, "forgetting": forgot,
            "task_metric_name": name, "task_metric": value}


def write_forgetting(runs: list[str | Path], out: Path, **kwargs) -> pd.DataFrame:
    """:func:`measure` every run; write ``out/forgetting.json`` (a list of records) and
    ``out/forgetting.csv`` (the same rows). All runs are measured before anything is written."""
    before_scores: dict = {}
    records = [measure(run, before_scores=before_scores, **kwargs)
               for run in tqdm(runs, desc="forgetting", unit="run", disable=len(runs) < 2)]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "forgetting.json", records)
    table = pd.DataFrame(records, columns=COLUMNS).astype({"rank": "Int64"})  # 8, not 8.0
    table.to_csv(out / "forgetting.csv", index=False)
    return table


def summary_text(table: pd.DataFrame, out: Path) -> str:
    """What the CLI prints: one line per run, then the files written."""
    lines = [f"{kind_label(r['method'], r['rank'])} {r['task']} seed {r['seed']}: {r['probe']} "
             f"before {r['before']:.4f} after {r['after']:.4f} forgetting {r['forgetting']:+.4f}; "
             f"{r['task_metric_name']} {r['task_metric']}" for _, r in table.iterrows()]
    return "\n".join([*lines, f"wrote {out / 'forgetting.json'} and {out / 'forgetting.csv'}"])


def find_records(outputs: list[str | Path]) -> pd.DataFrame:
    """Every record of every ``forgetting.json`` under the folders, with its ``label``. A run
    measured in several files (same probe and checkpoint) is kept once: the last file found.

    Raises:
        RunError: no forgetting.json under any of them.
    """
    files = []
    for root in map(Path, outputs):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        files += sorted(root.rglob("forgetting.json"))
    if not files:
        raise RunError(f"no forgetting.json under {', '.join(map(str, outputs))}: run `python -m "
                       "analysis forgetting RUN ... --out DIR` into one of them first")
    table = pd.DataFrame([r for f in files for r in json.loads(f.read_text())])
    table = table.drop_duplicates(["run_dir", "probe", "checkpoint"], keep="last").astype(
        {"rank": "Int64"})
    for col in ("before", "after", "forgetting", "task_metric"):  # write_json keeps NaN as "nan"
        table[col] = pd.to_numeric(table[col], errors="coerce")
    labels = [kind_label(m, r) for m, r in zip(table["method"], table["rank"])]
    return table.assign(label=labels).reset_index(drop=True)


# The x axis of the learning-vs-forgetting plot, per probe: what "forgetting" is a difference of.
AXIS = {STSB_PROBE: "forgetting: STS-B zero-shot Spearman, before − after",
        **{f"{p}_ref_lm_loss": f"forgetting: {p} reference LM loss, after − before (nats/token)"
           for p in LM_PROBES}}
