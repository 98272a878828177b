"""PNG figures of a run: sample grids (one row per class) and the loss curve, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

from helpers import plot
from helpers.train import atomic_write


def save_grid(x: torch.Tensor, n_per_row: int, row_labels, path, title: str = "") -> Path:
    """Images x (N, C, H, W) in [0, 1], ``n_per_row`` per row, a label left of each row."""
    from torchvision.utils import make_grid

    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be a tensor (N, C, H, W) with C = 1 or 3, got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    side = x.shape[-1] + 2
    grid = make_grid(x.float().clamp(0, 1), nrow=n_per_row, padding=2, pad_value=1.0)
    rows = len(row_labels)
    scale = max(0.45, x.shape[-1] / 64)  # inches per image
    fig = Figure(figsize=(scale * n_per_row + 1.0, scale * rows + 0.5))
    ax = fig.add_axes((0.12, 0.0, 0.86, 0.9))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([side * i + side / 2 for i in range(rows)], [str(r) for r in row_labels],
                  fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=8)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def save_loss_curve(history: list[dict], path, title: str = "") -> Path:
    """The mean training loss per epoch (``helpers.plot.loss_curves``) as a PNG."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    plot.loss_curves({"train_loss": [r["loss"] for r in history]}, ax=ax, logy=True, title=title)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
