"""Write the learning-rate figures of lectures/training-practice.md into assets/.

    python scripts/make_schedule_figures.py

Every curve is recorded from torch's own scheduler (``helpers.schedules.lr_trace``: a fresh
optimizer, ``optimizer.step()`` then ``scheduler.step()`` per update), not drawn from a formula.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "psets"))
from helpers.schedules import lr_trace, warmup_cosine_torch  # noqa: E402

S = torch.optim.lr_scheduler
LR, T = 0.1, 1000  # peak rate and updates in every figure


def _plot(name: str, curves: dict, title: str, ylabel: str = "learning rate", extra=None) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    for label, ys in curves.items():
        ax.plot(range(len(ys)), ys, label=label, lw=1.6)
    ax.set(xlabel="update (optimizer step)", ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    if extra is not None:
        extra(ax)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "assets" / name, dpi=100)
    plt.close(fig)
    print("wrote", f"assets/{name}")


def main() -> None:
    _plot("lr_steplr.png", {"StepLR(step_size=300, gamma=0.3)":
                            lr_trace(lambda o: S.StepLR(o, step_size=300, gamma=0.3), T, LR)},
          "StepLR: multiply by gamma every step_size updates")
    _plot("lr_exponentiallr.png", {"ExponentialLR(gamma=0.997)":
                                   lr_trace(lambda o: S.ExponentialLR(o, gamma=0.997), T, LR)},
          "ExponentialLR: multiply by gamma every update")
    _plot("lr_cosine.png", {
        "CosineAnnealingLR(T_max=1000), no floor": lr_trace(lambda o: S.CosineAnnealingLR(o, T_max=T), T + 200, LR),
        "eta_min=0.01": lr_trace(lambda o: S.CosineAnnealingLR(o, T_max=T, eta_min=0.01), T + 1, LR)},
        "CosineAnnealingLR: 0 at T_max without eta_min, and rising after it")
    _plot("lr_onecycle.png", {
        "OneCycleLR(total_steps=1000), stepped per update": lr_trace(
            lambda o: S.OneCycleLR(o, max_lr=LR, total_steps=T), T, LR),
        "the same, stepped per epoch (20 updates per epoch)": [
            v for v in lr_trace(lambda o: S.OneCycleLR(o, max_lr=LR, total_steps=T), T // 20, LR)
            for _ in range(20)]},
        "OneCycleLR: stepped per update, and per epoch")
    _plot("lr_warmup_cosine.png", {
        "SequentialLR(LinearLR 50, CosineAnnealingLR eta_min=0.001)": lr_trace(
            lambda o: warmup_cosine_torch(o, T, 50, 1e-3), T + 1, LR)},
        "linear warm-up over 50 updates into a cosine decay")
    # a validation loss that improves, then stalls: what ReduceLROnPlateau reacts to (one eval per 50 updates)
    evals = [1.0 / (1 + 0.5 * i) if i < 6 else 0.25 + 0.01 * (i % 3) for i in range(T // 50)]
    plateau = lr_trace(lambda o: S.ReduceLROnPlateau(o, factor=0.3, patience=3, min_lr=1e-3),
                       len(evals), LR, evals)

    def loss_axis(ax):
        twin = ax.twinx()
        twin.plot([50 * i for i in range(len(evals))], evals, "k:", lw=1, label="validation loss")
        twin.set_ylabel("validation loss")
        twin.legend(fontsize=8, loc="center right")

    _plot("lr_plateau.png", {"ReduceLROnPlateau(factor=0.3, patience=3, min_lr=0.001)":
                             [v for v in plateau for _ in range(50)]},
          "ReduceLROnPlateau: stepped once per evaluation with the loss", extra=loss_axis)


if __name__ == "__main__":
    main()
