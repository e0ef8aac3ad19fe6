"""The learning-rate schedule (paper App. D): linear warmup to the peak, then linear decay to 0.

lr_lambda(warmup, total)(step) is the factor on the peak LR for optimizer step ``step``
(0-based): (step + 1) / warmup during warmup, so the first step already moves and step
warmup − 1 reaches the peak; then (total − step) / (total − warmup), which is 1 at step warmup,
1 / (total − warmup) at the last step (total − 1) and exactly 0 at step total, where the run
ends (as transformers' get_linear_schedule_with_warmup decays).
"""
import pytest
import torch

from lora_exp.optim import lr_lambda

# warmup 10, total 110: 100 decay steps.
WARMUP, TOTAL = 10, 110


@pytest.mark.parametrize("step,factor", [
    (0, 1 / 10),             # (0 + 1) / 10
    (4, 5 / 10),             # (4 + 1) / 10: halfway up
    (WARMUP - 1, 1.0),       # (9 + 1) / 10: the peak
    (WARMUP, 1.0),           # (110 − 10) / (110 − 10): decay starts from the peak
    (60, 0.5),               # midpoint of the decay: (110 − 60) / 100
    (TOTAL - 1, 1 / 100),    # the last optimizer step: (110 − 109) / 100
    (TOTAL, 0.0),            # (110 − 110) / 100: exactly 0, not a floor
    (TOTAL + 5, 0.0),        # never negative past the end
])
def test_factor_at_step(step, factor):
    assert lr_lambda(WARMUP, TOTAL)(step) == pytest.approx(factor, abs=1e-12)


def test_no_warmup_starts_at_the_peak():
    # warmup 0, total 4: (4 − s) / 4 for s = 0..4
    assert [lr_lambda(0, 4)(s) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0],
                                                                   abs=1e-12)


def test_warmup_rises_and_decay_falls_linearly():
    f = lr_lambda(WARMUP, TOTAL)
    up = [f(s) - f(s - 1) for s in range(1, WARMUP)]
    down = [f(s) - f(s - 1) for s in range(WARMUP + 1, TOTAL + 1)]
    assert up == pytest.approx([1 / 10] * (WARMUP - 1), abs=1e-12)  # + 1/warmup per step
    assert down == pytest.approx([-1 / 100] * (TOTAL - WARMUP), abs=1e-12)  # − 1/(total − warmup)


def test_lr_applied_by_adamw_at_each_step():
    """Through torch's LambdaLR, as the trainer builds it: the LR each AdamW step uses, read from
    the optimizer and seen in the parameter's move.

    With a constant gradient g = 1 and no weight decay, AdamW's bias-corrected moments are
    m̂ = g and v̂ = g² at every step, so each step moves the parameter by exactly
    −lr_t · g / (sqrt(v̂) + eps) = −lr_t / (1 + eps).
    """
    peak, eps = 1e-3, 1e-8
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.AdamW([w], lr=peak, weight_decay=0.0, eps=eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(2, 6))
    # warmup 2, total 6: factors (0+1)/2, (1+1)/2, then (6 − s)/4 for s = 2..5: 4/4 3/4 2/4 1/4
    expected = [peak * x for x in (0.5, 1.0, 1.0, 0.75, 0.5, 0.25)]
    applied, moves = [], []
    for _ in range(6):
        applied.append(opt.param_groups[0]["lr"])
        before = w.item()
        w.grad = torch.ones_like(w)
        opt.step()
        sched.step()
        moves.append(before - w.item())
    assert applied == pytest.approx(expected, rel=1e-12)
    assert moves == pytest.approx([lr / (1 + eps) for lr in expected], rel=1e-9)
    assert opt.param_groups[0]["lr"] == 0.0  # after the last step: 6 − 6 = 0
