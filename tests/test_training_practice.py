"""The claims of lectures/training-practice.md, each shown on the real torch objects.

Scheduler sequences against their closed forms; each rule with the failure it prevents (the order
warning and the skipped first rate, OneCycleLR stepped per epoch, a schedule without a floor, Adam's
first step without warm-up, early-stopping patience against the plateau scheduler's); the loss
conventions (BCEWithLogitsLoss against sigmoid + BCELoss at large logits, CrossEntropyLoss as
log-softmax + NLL, Bernoulli and Gaussian likelihoods against torch.distributions, the normaliser a
Huber loss lacks).
"""

import math
import warnings

import pytest
import torch
from scipy import integrate
from torch import nn
from torch.nn import functional as F

from helpers import schedules

LR = 0.4
sched = torch.optim.lr_scheduler


# --------------------------------------------------------------------------- schedulers: closed forms

def test_steplr_and_exponentiallr_closed_forms():
    assert schedules.lr_trace(lambda o: sched.StepLR(o, step_size=7, gamma=0.3), 30, LR) == pytest.approx(
        [LR * 0.3 ** (s // 7) for s in range(30)], rel=1e-12)
    assert schedules.lr_trace(lambda o: sched.ExponentialLR(o, gamma=0.9), 30, LR) == pytest.approx(
        [LR * 0.9 ** s for s in range(30)], rel=1e-12)


def test_cosine_annealing_closed_form_with_floor():
    T, floor = 40, 0.01
    got = schedules.lr_trace(lambda o: sched.CosineAnnealingLR(o, T_max=T, eta_min=floor), T + 1, LR)
    want = [floor + (LR - floor) * (1 + math.cos(math.pi * s / T)) / 2 for s in range(T + 1)]
    assert got == pytest.approx(want, rel=1e-10)


def _onecycle_closed_form(s, total, max_lr, pct=0.3, div=25.0, final_div=1e4):
    """torch's two-phase cosine one-cycle: initial -> max over the first pct of steps, -> min after."""
    initial, low = max_lr / div, max_lr / div / final_div
    up_end = pct * total - 1
    if s <= up_end:
        a, b, frac = initial, max_lr, s / up_end
    else:
        a, b, frac = max_lr, low, (s - up_end) / (total - 1 - up_end)
    return b + (a - b) * (1 + math.cos(math.pi * frac)) / 2


def test_onecycle_closed_form():
    total = 100
    got = schedules.lr_trace(lambda o: sched.OneCycleLR(o, max_lr=LR, total_steps=total), total, LR)
    assert got == pytest.approx([_onecycle_closed_form(s, total, LR) for s in range(total)], rel=1e-9)
    assert max(got) == pytest.approx(LR) and got[-1] == pytest.approx(LR / 25 / 1e4)


def test_reduce_on_plateau_and_its_min_lr():
    metrics = [1.0, 0.9] + [0.9] * 12            # improves once, then a long plateau
    got = schedules.lr_trace(lambda o: sched.ReduceLROnPlateau(o, factor=0.5, patience=3, min_lr=0.05),
                             len(metrics), LR, metrics)
    # best at call 2; four bad calls (3..6) exceed patience 3 -> halve; cooldown 0, counter reset
    assert got == pytest.approx([LR] * 6 + [LR / 2] * 4 + [LR / 4] * 4)
    long = schedules.lr_trace(lambda o: sched.ReduceLROnPlateau(o, factor=0.5, patience=0, min_lr=0.05),
                              30, LR, [1.0] * 30)
    assert min(long) == pytest.approx(0.05)  # the floor holds however long the plateau


# --------------------------------------------------------------------------- rule 1: the order

def test_scheduler_step_before_optimizer_step_warns_and_skips_the_first_rate():
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=LR)
    s = sched.StepLR(opt, step_size=1, gamma=0.5)
    used = []
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        for _ in range(3):
            s.step()                      # wrong order: the scheduler moves before the first update
            used.append(opt.param_groups[0]["lr"])
            p.grad = torch.ones(1)
            opt.step()
    assert used == pytest.approx([LR / 2, LR / 4, LR / 8])  # the rate LR was never used
    right = schedules.lr_trace(lambda o: sched.StepLR(o, step_size=1, gamma=0.5), 3, LR)
    assert right == pytest.approx([LR, LR / 2, LR / 4])


def test_right_order_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schedules.lr_trace(lambda o: sched.OneCycleLR(o, max_lr=LR, total_steps=10), 10, LR)


# --------------------------------------------------------------------------- rule 2: per batch

def test_onecycle_stepped_per_epoch_never_peaks():
    epochs, batches = 10, 50
    per_batch = schedules.lr_trace(
        lambda o: sched.OneCycleLR(o, max_lr=LR, total_steps=epochs * batches), epochs * batches, LR)
    # the same scheduler stepped once per epoch: the rate each epoch's batches use
    per_epoch = schedules.lr_trace(
        lambda o: sched.OneCycleLR(o, max_lr=LR, total_steps=epochs * batches), epochs, LR)
    assert max(per_batch) == pytest.approx(LR) and per_batch[-1] < LR / 1e5
    assert max(per_epoch) < 0.05 * LR          # still near max_lr / 25 when the run ends
    assert per_epoch == sorted(per_epoch)      # only the start of the warm-up: no annealing at all


# --------------------------------------------------------------------------- rule 3: a floor

def test_cosine_without_floor_reaches_zero_and_then_rises():
    T = 20
    no_floor = schedules.lr_trace(lambda o: sched.CosineAnnealingLR(o, T_max=T), 2 * T, LR)
    assert no_floor[T] == 0.0                  # an update with rate 0: a wasted step
    assert no_floor[T + 5] > 0.05 * LR         # and past T_max the cosine climbs back up
    floored = schedules.lr_trace(lambda o: sched.CosineAnnealingLR(o, T_max=T, eta_min=1e-3), T + 1, LR)
    assert min(floored) == pytest.approx(1e-3)
    # a floor in the problem set's own schedule
    assert schedules.warmup_cosine_lr(T, T, 2, LR) == 0.0
    assert schedules.warmup_cosine_lr(T, T, 2, LR, min_lr=1e-3) == pytest.approx(1e-3)


def test_plateau_without_min_lr_decays_to_nothing():
    no_min = schedules.lr_trace(lambda o: sched.ReduceLROnPlateau(o, factor=0.1, patience=0), 12, LR,
                                [1.0] * 12)
    assert no_min[-1] < 1e-7 * LR              # tenfold cuts until the rate is negligible: no learning


# --------------------------------------------------------------------------- rule 4: warm-up

def _attention_entropy(w_q, w_k, x):
    logits = (x @ w_q) @ (x @ w_k).transpose(-1, -2) / math.sqrt(x.shape[-1])
    a = logits.softmax(-1)
    return -(a * a.clamp_min(1e-30).log()).sum(-1).mean().item()


def _first_adam_step(lr, grad_scale=1.0):
    torch.manual_seed(0)
    d = 32
    x = torch.randn(4, 16, d)
    w_q = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
    w_k = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
    before = _attention_entropy(w_q, w_k, x)
    opt = torch.optim.Adam([w_q, w_k], lr=lr)
    # a loss that rewards sharper attention (the direction real training often pushes early)
    logits = (x @ w_q) @ (x @ w_k).transpose(-1, -2) / math.sqrt(d)
    (-grad_scale * logits.softmax(-1).max(-1).values.mean()).backward()
    w_before = w_q.detach().clone()
    opt.step()
    return before, _attention_entropy(w_q, w_k, x), (w_q.detach() - w_before).abs()


def test_adams_first_step_ignores_the_gradients_scale():
    _, _, step_big = _first_adam_step(1e-2, grad_scale=1.0)
    _, _, step_tiny = _first_adam_step(1e-2, grad_scale=1e-3)
    moved = step_big > 0
    # m / sqrt(v) = g / |g| at the first step: every weight with a gradient moves by ~lr
    assert torch.allclose(step_big[moved], torch.full_like(step_big[moved], 1e-2), rtol=1e-2)
    # gradients 1000 times smaller move the weights about as far (Adam's eps = 1e-8 aside)
    assert step_tiny.mean() > 0.95 * step_big.mean()


def test_full_rate_first_step_collapses_attention_warm_up_does_not():
    lr, warmup = 0.1, 100
    before, after_full, _ = _first_adam_step(lr)
    _, after_warm, _ = _first_adam_step(lr / (warmup + 1))   # eq. (1)'s first rate
    uniform = math.log(16)
    assert before > 0.5 * uniform
    assert after_full < 0.4 * before                         # one step: attention far sharper
    assert abs(after_warm - before) < 0.05 * before          # the warm-up's first step: barely moved


# --------------------------------------------------------------------------- rule 5: patience

def _plateau_run(stop_patience, plateau_patience, evals=60):
    """Validation loss that is flat while the rate is the initial one and falls once it is lowered
    (a run that needs the reduction). Returns (evaluations done, rate was lowered, best loss)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = sched.ReduceLROnPlateau(opt, factor=0.3, patience=plateau_patience)
    stop = schedules.EarlyStopping(stop_patience)
    loss = 1.0
    for i in range(evals):
        if opt.param_groups[0]["lr"] < 1.0:
            loss -= 0.01                       # the lower rate makes progress
        opt.step()
        plateau.step(loss)
        if stop.step(loss):
            return i + 1, opt.param_groups[0]["lr"] < 1.0, stop.best
    return evals, opt.param_groups[0]["lr"] < 1.0, stop.best


@pytest.mark.parametrize("p", [2, 5])
def test_early_stopping_patience_at_least_twice_plateau_patience(p):
    n, lowered, best = _plateau_run(stop_patience=p, plateau_patience=p)
    assert best == 1.0 and n <= p + 2          # stopped as (or before) the rate came down: no gain
    n, lowered, best = _plateau_run(stop_patience=2 * p, plateau_patience=p)
    assert lowered and best < 0.9 and n == 60  # lowered in time, and still improving at the end
    with pytest.raises(ValueError, match="at least twice plateau_patience"):
        schedules.EarlyStopping(p, plateau_patience=p)


# --------------------------------------------------------------------------- loss conventions

def test_bce_with_logits_vs_sigmoid_then_bce_at_large_logits():
    logits = torch.tensor([-200.0, -30.0, 0.0, 30.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 1.0, 0.0])
    exact = F.softplus(-logits) * y + F.softplus(logits) * (1 - y)   # -log sigmoid(±x)
    stable = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert torch.allclose(stable, exact.detach()) and stable[0].item() == pytest.approx(200.0)
    naive = F.binary_cross_entropy(torch.sigmoid(logits), y, reduction="none")
    assert naive[0].item() == 100.0                              # log clamped at -100: half the loss
    by_hand = -(y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log(1 - torch.sigmoid(logits)))
    assert math.isinf(by_hand[0].item()) and math.isinf(by_hand[3].item())  # log(0) in float32
    g_stable, = torch.autograd.grad(stable.sum(), logits)
    g_naive, = torch.autograd.grad(naive.sum(), logits)
    assert g_stable[0].item() == pytest.approx(-1.0)             # sigmoid(x) - y: full-size gradient
    assert g_naive[0].item() == 0.0                              # the saturated sigmoid passes nothing


def test_cross_entropy_is_log_softmax_plus_nll():
    torch.manual_seed(0)
    logits = torch.randn(64, 10) * 5
    y = torch.randint(0, 10, (64,))
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(ce, F.nll_loss(F.log_softmax(logits, 1), y))
    assert torch.allclose(ce, -(logits.gather(1, y[:, None]).squeeze(1) - logits.logsumexp(1)).mean())
    big = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert F.cross_entropy(big, torch.tensor([1])).item() == pytest.approx(1000.0)
    naive = -torch.log(torch.softmax(big, 1))[0, 1]                # softmax underflows to 0
    assert math.isinf(naive.item())
    # CrossEntropyLoss on probabilities (softmax applied twice) cannot reward confidence: for a
    # certain, correct prediction it stays at log(e + 9) - 1 instead of 0
    certain = torch.tensor([[1000.0] + [-1000.0] * 9])
    assert F.cross_entropy(certain, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)
    assert F.cross_entropy(certain.softmax(1), torch.tensor([0])).item() == pytest.approx(math.log(math.e + 9) - 1)


def test_bernoulli_decoder_loss_is_bce_summed_in_nats():
    torch.manual_seed(1)
    logits, x = torch.randn(5, 784), torch.bernoulli(torch.full((5, 784), 0.2))
    nll = -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(1)
    assert torch.allclose(F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1), nll)
    mean_bce = F.binary_cross_entropy_with_logits(logits, x)       # the default mean: per PIXEL
    assert torch.allclose(mean_bce * 784, nll.mean())              # 784 times smaller than nats/image


def test_gaussian_decoder_loss_is_scaled_mse_plus_constant():
    torch.manual_seed(2)
    d, sigma = 784, 0.3
    x, mean = torch.rand(5, d, dtype=torch.float64), torch.rand(5, d, dtype=torch.float64)
    nll = -torch.distributions.Normal(mean, sigma).log_prob(x).sum(1)
    sse = ((x - mean) ** 2).sum(1)
    assert torch.allclose(nll, sse / (2 * sigma**2) + d / 2 * math.log(2 * math.pi * sigma**2), rtol=1e-5)
    # F.mse_loss (a mean over pixels) is this NLL only for sigma^2 = d / 2, up to its constant
    s2 = d / 2
    nll_big = -torch.distributions.Normal(mean, math.sqrt(s2)).log_prob(x).sum(1)
    mse = F.mse_loss(mean, x, reduction="none").mean(1)
    assert torch.allclose(nll_big - d / 2 * math.log(2 * math.pi * s2), mse, rtol=1e-4)


def test_huber_is_not_a_normalised_log_density():
    def huber(r, delta):
        return F.huber_loss(torch.tensor(r), torch.tensor(0.0), delta=delta).item()

    for delta in (0.5, 1.0, 2.0):
        z, _ = integrate.quad(lambda r: math.exp(-huber(r, delta)), -60, 60, limit=200)
        closed = (math.sqrt(2 * math.pi) * math.erf(delta / math.sqrt(2))
                  + 2 * math.exp(-delta**2 / 2) / delta)
        assert z == pytest.approx(closed, rel=1e-6)
        assert abs(math.log(z)) > 0.5                   # exp(-huber) integrates to Z != 1
    # so -huber is a log-density only after subtracting log Z(delta), which depends on delta:
    # losses at two deltas are not comparable nats, and a learnt scale would be pushed wrongly.
    z1 = integrate.quad(lambda r: math.exp(-huber(r, 1.0)), -60, 60, limit=200)[0]
    z2 = integrate.quad(lambda r: math.exp(-huber(r, 2.0)), -60, 60, limit=200)[0]
    assert abs(math.log(z1) - math.log(z2)) > 0.1
