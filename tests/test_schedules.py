"""helpers.schedules: the warm-up + cosine rate against torch's schedulers, the per-update training
loop (order of the steps, batches, budget), the scheduler recorder and the early-stopping rule."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers import schedules


@pytest.mark.parametrize("total,warmup,floor", [(50, 5, 1e-3), (20, 0, 0.0), (7, 6, 0.05), (1, 0, 0.1)])
def test_warmup_cosine_matches_torch_sequential(total, warmup, floor):
    peak = 0.3
    torch_seq = schedules.lr_trace(lambda o: schedules.warmup_cosine_torch(o, total, warmup, floor),
                                   total + 1, lr=peak)
    ours = [schedules.warmup_cosine_lr(s, total, warmup, peak, floor) for s in range(total + 1)]
    assert ours == pytest.approx(torch_seq, rel=1e-12, abs=1e-15)
    assert ours[warmup] == pytest.approx(peak) and ours[-1] == pytest.approx(floor)
    assert all(a < b for a, b in zip(ours[:warmup], ours[1:warmup + 1]))          # rising
    assert all(a >= b for a, b in zip(ours[warmup:], ours[warmup + 1:]))           # then falling


def test_warmup_cosine_closed_form_midpoint():
    # halfway through the decay the cosine term is 0: the mean of peak and floor
    assert schedules.warmup_cosine_lr(60, 110, 10, 1.0, 0.2) == pytest.approx(0.6)
    assert schedules.warmup_cosine_lr(0, 110, 10, 1.0, 0.2) == pytest.approx(1 / 11)


@pytest.mark.parametrize("kwargs,match", [
    (dict(step=0, total_steps=10, warmup_steps=10, peak_lr=1.0), "warmup_steps must be smaller"),
    (dict(step=11, total_steps=10, warmup_steps=2, peak_lr=1.0), "step must lie in"),
    (dict(step=-1, total_steps=10, warmup_steps=2, peak_lr=1.0), "step must be an integer"),
    (dict(step=0, total_steps=10, warmup_steps=2, peak_lr=0.0), "peak_lr must be a positive"),
    (dict(step=0, total_steps=10, warmup_steps=2, peak_lr=1.0, min_lr=2.0), "min_lr must lie in"),
    (dict(step=0, total_steps=0, warmup_steps=0, peak_lr=1.0), "total_steps must be an integer >= 1"),
    (dict(step=0.5, total_steps=10, warmup_steps=0, peak_lr=1.0), "step must be an integer"),
])
def test_warmup_cosine_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedules.warmup_cosine_lr(**kwargs)


def _toy(seed=0, n=50):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.05 * torch.randn(n, 1, generator=g)
    torch.manual_seed(seed)
    return nn.Linear(3, 1), (x, y)


def _mse(model, x, y):
    return F.mse_loss(model(x), y)


def test_train_steps_budget_rates_and_order():
    model, data = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's order warning would be an error here
        hist = schedules.train_steps(model, opt, sched, _mse, data, steps=23, batch_size=8, seed=1)
    assert len(hist["loss"]) == len(hist["lr"]) == 23        # 7 batches per pass: 3 passes and 2 batches
    assert hist["lr"] == pytest.approx([0.1 * 0.5 ** (s // 5) for s in range(23)])
    assert sum(hist["loss"][-5:]) < 0.2 * sum(hist["loss"][:5])
    assert schedules.train_steps(model, opt, sched, _mse, data, steps=0, batch_size=8) == {"loss": [], "lr": []}


def test_train_steps_equals_a_hand_written_loop():
    """The same batches (one generator, one permutation per pass) and updates as written out."""
    from helpers.data import batches
    model_a, data = _toy(2)
    model_b, _ = _toy(2)
    runs = []
    for model in (model_a, model_b):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        runs.append((model, opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)))
    schedules.train_steps(*runs[0][:3], _mse, data, steps=15, batch_size=16, seed=4)
    model, opt, sched = runs[1]
    g, done = torch.Generator().manual_seed(4), 0
    while done < 15:
        for batch in batches(*data, batch_size=16, generator=g):
            if done == 15:
                break
            opt.zero_grad()
            _mse(model, *batch).backward()
            opt.step()
            sched.step()
            done += 1
    assert torch.allclose(model_a.weight, model_b.weight) and torch.allclose(model_a.bias, model_b.bias)


def test_train_steps_rejects_bad_data():
    model, _ = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="data must be a non-empty tuple of tensors"):
        schedules.train_steps(model, opt, None, _mse, [[1.0]], steps=1, batch_size=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -1"):
        schedules.train_steps(model, opt, None, _mse, (torch.zeros(2, 3),), steps=-1, batch_size=1)


def test_lr_trace_plateau_needs_metrics():
    trace = schedules.lr_trace(
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=2),
        8, lr=1.0, metrics=[1.0] * 8)
    # best at call 1; calls 2-4 bad -> after the 3rd bad call (patience 2 exceeded) the rate halves
    assert trace == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="metrics must hold one value per step"):
        schedules.lr_trace(lambda o: None, 3, metrics=[1.0])


def test_early_stopping_counts_evaluations_without_improvement():
    stop = schedules.EarlyStopping(patience=3)
    assert [stop.step(v) for v in [5, 4, 4, 4.5, 3.9, 4, 4, 4]] == [False] * 7 + [True]
    assert stop.best == 3.9


def test_early_stopping_rule_rejects_short_patience():
    with pytest.raises(ValueError, match="patience must be at least twice plateau_patience=3"):
        schedules.EarlyStopping(patience=5, plateau_patience=3)
    schedules.EarlyStopping(patience=6, plateau_patience=3)
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        schedules.EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta must be >= 0"):
        schedules.EarlyStopping(patience=2, min_delta=-1.0)


def test_warmup_cosine_torch_bad_warmup():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps must be smaller than total_steps=5"):
        schedules.warmup_cosine_torch(opt, 5, 5)
    assert math.isclose(schedules.lr_trace(lambda o: schedules.warmup_cosine_torch(o, 4, 0), 5)[2], 0.5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(step=0, total_steps=10, warmup_steps=-1, peak_lr=1.0), "warmup_steps must be an integer >= 0"),
    (dict(step=0, total_steps=10, warmup_steps=2.5, peak_lr=1.0), "warmup_steps must be an integer >= 0"),
])
def test_warmup_cosine_rejects_a_warmup_that_is_not_a_count(kwargs, match):
    """Kills a dropped check on warmup_steps: -1 would silently give a rate above the peak."""
    with pytest.raises(ValueError, match=match):
        schedules.warmup_cosine_lr(**kwargs)


def test_floor_equal_to_the_peak_is_a_constant_rate_after_warmup():
    """min_lr = peak_lr is allowed (a warm-up into a constant rate), not refused as out of range."""
    rates = [schedules.warmup_cosine_lr(s, 10, 2, 0.1, 0.1) for s in range(11)]
    assert rates[2:] == pytest.approx([0.1] * 9) and rates[0] == pytest.approx(0.1 / 3)


def test_one_warmup_step_matches_torch():
    """W = 1 is a warm-up (first update at peak / 2), not the cosine alone."""
    torch_seq = schedules.lr_trace(lambda o: schedules.warmup_cosine_torch(o, 5, 1), 6)
    assert torch_seq[0] == pytest.approx(0.5)
    assert torch_seq == pytest.approx([schedules.warmup_cosine_lr(s, 5, 1, 1.0) for s in range(6)])


@pytest.mark.parametrize("total,warmup,match", [
    (0, 0, "total_steps must be an integer >= 1"), (2.5, 0, "total_steps must be an integer >= 1"),
    (10, -1, "warmup_steps must be an integer >= 0"), (10, 1.5, "warmup_steps must be an integer >= 0")])
def test_warmup_cosine_torch_names_a_bad_count(total, warmup, match):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        schedules.warmup_cosine_torch(opt, total, warmup)


def test_lr_trace_rejects_a_negative_count():
    """A negative count must not return an empty trace as if nothing were wrong."""
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -1"):
        schedules.lr_trace(lambda o: torch.optim.lr_scheduler.StepLR(o, 1), -1)


def test_train_steps_trains_in_train_mode():
    """Kills a missing model.train(): a model left in eval mode (after an evaluation) would train
    with dropout off and batch norm frozen."""
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    torch.manual_seed(0)
    model, (x, y) = Probe(3, 1), (torch.randn(8, 3), torch.randn(8, 1))
    model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    schedules.train_steps(model, opt, sched, _mse, (x, y), steps=3, batch_size=4)
    assert seen == [True] * 3


def test_early_stopping_min_delta_and_first_evaluation():
    """An improvement must beat the best by more than min_delta; the count of evaluations without
    improvement starts at 0 (a first NaN evaluation is one, not two); plateau_patience may be 0
    and must be a count."""
    stop = schedules.EarlyStopping(patience=2, min_delta=0.1)
    assert stop.step(1.0) is False and stop.best == 1.0
    assert stop.step(0.95) is False and (stop.best, stop.bad) == (1.0, 1)  # 0.05 < min_delta
    assert stop.step(0.85) is False and (stop.best, stop.bad) == (0.85, 0)
    assert schedules.EarlyStopping(patience=2).step(math.nan) is False
    assert schedules.EarlyStopping(patience=1, plateau_patience=0).patience == 1
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="plateau_patience must be an integer >= 0"):
            schedules.EarlyStopping(patience=10, plateau_patience=bad)
