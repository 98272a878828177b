"""Learning-rate schedules and a per-step training loop (problem set 09, part 1).

The reference answers of 09_training_practice's problems 1 and 2 (its checks compare against
them; later cells fall back on them when a check did not pass), a recorder of what a torch
scheduler does, and the early-stopping rule the notes state (patience at least twice the plateau
scheduler's). Steps are counted from 0: ``lr(s)`` is the rate used by the (s + 1)-th update.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from . import grading
from .data import batches


def _int(name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@grading.reference
def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float,
                     min_lr: float = 0.0) -> float:
    """The learning rate at ``step`` of a linear warm-up into a cosine decay.

    For s < W (W = ``warmup_steps``): peak · (s + 1) / (W + 1), rising towards the peak;
    for W <= s <= T (T = ``total_steps``): min + (peak − min) · (1 + cos(π (s − W) / (T − W))) / 2,
    from the peak at s = W down to ``min_lr`` at s = T. This is what torch's
    ``SequentialLR([LinearLR(start_factor=1/(W+1), total_iters=W), CosineAnnealingLR(T_max=T-W,
    eta_min=min)], milestones=[W])`` produces, stepped once per optimizer step.
    """
    total_steps = _int("total_steps", total_steps, 1)
    warmup_steps = _int("warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be smaller than total_steps={total_steps}, "
                         f"got {warmup_steps}")
    step = _int("step", step)
    if step > total_steps:
        raise ValueError(f"step must lie in [0, total_steps={total_steps}], got {step}")
    if not (isinstance(peak_lr, (int, float)) and peak_lr > 0):
        raise ValueError(f"peak_lr must be a positive number, got {peak_lr!r}")
    if not (isinstance(min_lr, (int, float)) and 0 <= min_lr <= peak_lr):
        raise ValueError(f"min_lr must lie in [0, peak_lr={peak_lr}], got {min_lr!r}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1 over the decay
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_torch(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                        min_lr: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's own warm-up + cosine (SequentialLR of LinearLR and CosineAnnealingLR) for an
    optimizer whose lr is the peak; the independent route to :func:`warmup_cosine_lr`."""
    total_steps = _int("total_steps", total_steps, 1)
    warmup_steps = _int("warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be smaller than total_steps={total_steps}, "
                         f"got {warmup_steps}")
    sched = torch.optim.lr_scheduler
    cosine = sched.CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=min_lr)
    if warmup_steps == 0:
        return cosine
    linear = sched.LinearLR(optimizer, start_factor=1 / (warmup_steps + 1), end_factor=1.0,
                            total_iters=warmup_steps)
    return sched.SequentialLR(optimizer, [linear, cosine], milestones=[warmup_steps])


def lr_trace(make_scheduler: Callable[[torch.optim.Optimizer], object], steps: int,
             lr: float = 1.0, metrics: list[float] | None = None) -> list[float]:
    """The learning rates a torch scheduler gives to ``steps`` consecutive updates.

    ``make_scheduler(optimizer)`` builds the scheduler on a fresh SGD optimizer of one parameter
    with learning rate ``lr``; each update is ``optimizer.step()`` then ``scheduler.step()``
    (``scheduler.step(metrics[s])`` for ReduceLROnPlateau, which needs the monitored value).
    """
    steps = _int("steps", steps)
    if metrics is not None and len(metrics) < steps:
        raise ValueError(f"metrics must hold one value per step ({steps}), got {len(metrics)}")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer)
    out = []
    for s in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: a no-op that still counts as a step for the scheduler
        scheduler.step() if metrics is None else scheduler.step(metrics[s])
    return out


@grading.reference
def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                loss_fn: Callable[..., torch.Tensor], data: tuple[torch.Tensor, ...], *,
                steps: int, batch_size: int, seed: int = 0) -> dict[str, list[float]]:
    """Train for exactly ``steps`` optimizer updates, stepping ``scheduler`` after each one.

    Mini-batches come from ``data.batches(*data, batch_size=..., generator=g)`` with
    ``g = torch.Generator().manual_seed(seed)``, one pass after another until ``steps`` updates
    are done. ``loss_fn(model, *batch)`` returns a scalar. Returns ``{"loss": [...], "lr": [...]}``,
    one entry per update: the batch's loss and the learning rate that update used.
    """
    steps = _int("steps", steps)
    if not isinstance(data, (tuple, list)) or not data or not all(torch.is_tensor(t) for t in data):
        raise TypeError("data must be a non-empty tuple of tensors, e.g. (x,) or (x, y)")
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"loss": [], "lr": []}
    model.train()
    while len(history["loss"]) < steps:
        for batch in batches(*data, batch_size=batch_size, generator=generator):
            if len(history["loss"]) == steps:
                break
            history["lr"].append(optimizer.param_groups[0]["lr"])
            loss = loss_fn(model, *batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()  # after optimizer.step(): else the first rate is skipped (torch warns)
            history["loss"].append(loss.item())
    return history


class EarlyStopping:
    """Stop when the monitored loss has not improved for ``patience`` evaluations.

    ``plateau_patience`` (the patience of a ReduceLROnPlateau scheduler in the same run, if any)
    enforces the rule of the notes: ``patience >= 2 * plateau_patience``, so that after the rate
    is lowered the run has at least as many evaluations again to profit from it.
    """

    def __init__(self, patience: int, plateau_patience: int | None = None,
                 min_delta: float = 0.0):
        self.patience = _int("patience", patience, 1)
        if plateau_patience is not None:
            _int("plateau_patience", plateau_patience, 0)
            if patience < 2 * plateau_patience:
                raise ValueError(
                    f"patience must be at least twice plateau_patience={plateau_patience} (else "
                    f"the run stops about when the rate is lowered), got {patience}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.min_delta, self.best, self.bad = min_delta, math.inf, 0

    def step(self, loss: float) -> bool:
        """Record one evaluation; return True when training should stop."""
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience
