"""``trainer.compile``: the training steps through ``torch.compile`` (inductor), eager on failure.

Only the training steps compile; evaluation keeps the eager model (the same parameters, so the
same outputs). Inductor specialises each graph to its input shapes, so with dynamic padding
every new batch length would compile again: with compile on, each batch is padded up to the
nearest of ``trainer.compile_buckets`` evenly spaced lengths (:func:`bucket_lengths`), which
bounds the shapes, hence the compilations. Padding never changes a row's result (attention
masks out pad positions; LM labels are padded with -100).

Dynamo compiles lazily, at a shape's first forward (and AOTAutograd the backward at its first
backward), so a compile failure (a C compiler error, an unsupported op) surfaces in the middle
of a training step. :meth:`TrainingSteps.run` therefore runs the whole step compiled and, if it
raises, discards the step's partial gradients, restores the random state the step started from
and redoes the step eagerly: the result is the eager step's, never a half-accumulated one; the
run stays eager from then on and says so in a warning and in ``summary.json``.

The CPU dropout (:mod:`lora_exp.dropout`) draws its masks with numpy, which dynamo cannot
trace: each dropout is a graph break, so one training step runs as several compiled graphs
with the masks drawn eagerly in between, from the same torch RNG state as without compile: an
eager step on the same padded batch draws the same masks and gives the same loss. Against the
eager trainer's dynamic padding the masks differ (a mask covers the padded positions too, so
another width draws other numbers): the same distribution, another random stream. Under bf16
autocast the CPU dropout steps aside for ``F.dropout``, which inductor compiles with its own
random numbers (again the same distribution, another stream).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch
from torch import nn

from lora_exp import dist

log = logging.getLogger("lora_exp")


def bucket_lengths(max_length: int, n: int) -> list[int]:
    """``n`` evenly spaced padded lengths up to ``max_length``: 32, 64, 96, 128 for (128, 4).

    Lengths round up, so the last is always ``max_length``; fewer than ``n`` when ``n`` exceeds
    ``max_length`` (no two buckets of one length).
    """
    return sorted({-(-max_length * i // n) for i in range(1, n + 1)})


def pad_length(longest: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``longest`` tokens; ``longest`` itself above the largest
    bucket (rows are cut at ``trainer.max_length``, the largest bucket, so this does not occur in
    training; if it did, it would cost one more shape, not a wrong result)."""
    return next((b for b in buckets if b >= longest), longest)


def inductor(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """The inductor backend (what ``torch.compile(backend="inductor")`` runs), by name here so
    that :class:`TrainingSteps` can count its calls and tests can make it fail."""
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs)


def describe_error(error: BaseException) -> str:
    """``Type: first line`` of the error that made compiling fail (dynamo wraps a backend's own
    error in ``BackendCompilerFailed``: the inner one names the cause)."""
    inner = getattr(error, "inner_exception", None) or error
    first_line = (str(inner).strip().splitlines() or [""])[0]
    return f"{type(inner).__name__}: {first_line}"


class _ShapeRecorder(nn.Module):
    """The compiled model, recording the (rows, length) of every batch it trains on. A module
    (not a plain callable) so that ``parameters()`` (gradient clipping) sees the model's own."""

    def __init__(self, compiled: nn.Module, shapes: set):
        super().__init__()
        self.compiled, self.shapes = compiled, shapes

    def forward(self, **batch):
        self.shapes.add(tuple(batch["input_ids"].shape))
        return self.compiled(**batch)


class TrainingSteps:
    """Runs training steps on the compiled model (``trainer.compile``) or the eager one.

    Attributes:
        graphs: how many forward graphs inductor compiled. Graph breaks (each CPU dropout) split
            one forward into several graphs, each compiled once per input shape (and again when
            a guard fails, e.g. HF sets ``config.problem_type`` at the first forward). Each has
            a backward graph, lowered at its first backward and not counted apart.
        compile_s: wall seconds of the steps in which something compiled: compilation,
            forward and backward, plus those steps' own computation.
        shapes: the distinct (rows, length) batch shapes trained compiled; each is a
            recompilation of the model (a smaller last batch of an epoch is one more shape).
    """

    def __init__(self, model: nn.Module, enabled: bool, buckets: list[int]):
        self.model, self.enabled, self._buckets = model, enabled, buckets
        self.graphs, self.compile_s, self.shapes = 0, 0.0, set()
        self.fell_back, self.error = False, None
        self.compiled = (_ShapeRecorder(torch.compile(model, backend=self._backend, dynamic=False),
                                        self.shapes) if enabled else None)

    @property
    def buckets(self) -> list[int] | None:
        """The padded lengths of the batches: None (dynamic padding) when eager, and after a
        fallback, so that the redone step and the rest are exactly the eager trainer's."""
        return None if self.compiled is None or self.fell_back else self._buckets

    @classmethod
    def from_cfg(cls, model: nn.Module, tcfg) -> "TrainingSteps":
        enabled = bool(tcfg.compile)
        if enabled and dist.enabled():
            # Under DDP a compile failure could hit one rank and not another: that rank would
            # redo its step eagerly while the others wait in the gradient all-reduce, so the
            # fallback is not safe there; DDP's bucketed hooks + graph breaks are also untested.
            log.warning("trainer.compile=true is ignored under torchrun (DDP): training eagerly")
            enabled = False
        return cls(model, enabled, bucket_lengths(tcfg.max_length, tcfg.compile_buckets))

    def _backend(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        self.graphs += 1
        return inductor(gm, example_inputs)

    def run(self, step: Callable[[nn.Module], float]) -> float:
        """``step(model)``: one optimizer step on the compiled model; on any exception there,
        the step again on the eager model from the same state (if the eager step raises too,
        the error is the step's own and propagates)."""
        if self.compiled is None or self.fell_back:
            return step(self.model)
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        graphs, start = self.graphs, time.perf_counter()
        try:
            loss = step(self.compiled)
            if self.graphs > graphs:
                self.compile_s += time.perf_counter() - start
            return loss
        except Exception as e:  # noqa: BLE001  (any failure of the compiled path: redo eagerly)
            self.fell_back, self.error = True, describe_error(e)
            log.warning("trainer.compile: compiling the training step failed (%s); training "
                        "eagerly from this step on", self.error)
        # The failed step may have accumulated part of its gradients: drop them, and replay
        # the step's random draws (dropout masks) from where it started.
        self.model.zero_grad(set_to_none=True)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        return step(self.model)

    def record(self) -> dict:
        """What ``summary.json`` keeps under ``compile`` (and the run log says, when enabled)."""
        out = {"enabled": self.enabled}
        if self.enabled:
            out |= {"fell_back": self.fell_back, "error": self.error, "graphs": self.graphs,
                    "shapes": len(self.shapes), "buckets": self._buckets,
                    "compile_s": round(self.compile_s, 3)}
            log.info("trainer.compile: %s", out)
        return out
