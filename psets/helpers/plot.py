"""Figures used across the problem sets: image grids, loss curves, latent maps, point clouds.

Each function draws into ``ax`` if given (so figures can be composed) and returns the axes.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch


def _axes(ax, figsize, projection=None):
    if ax is not None:
        return ax
    fig = plt.figure(figsize=figsize)
    return fig.add_subplot(projection=projection)


def image_grid(x: torch.Tensor, nrow: int = 8, ax=None, title: str | None = None,
               figsize=(5, 5)):
    """Show images x (N, C, H, W) with values in [0, 1] as one grid of ``nrow`` per row."""
    from torchvision.utils import make_grid

    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be a tensor (N, C, H, W) with C = 1 or 3, got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    grid = make_grid(x.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax = _axes(ax, figsize)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def loss_curves(history: dict[str, list[float]], ax=None, logy: bool = False,
                title: str | None = None, figsize=(5, 3.2)):
    """Plot ``train_loss`` (and ``eval_loss`` when present) of a ``train.fit`` history by epoch."""
    if not isinstance(history, dict) or not history.get("train_loss"):
        raise ValueError("history must be a dict with a non-empty 'train_loss' list "
                         "(as returned by helpers.train.fit)")
    ax = _axes(ax, figsize)
    epochs = range(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], marker="o", ms=3, label="train")
    if history.get("eval_loss"):
        ax.plot(epochs, history["eval_loss"], marker="s", ms=3, label="eval")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def latent_scatter(z: torch.Tensor, labels: torch.Tensor | None = None, ax=None,
                   title: str | None = None, figsize=(5, 4.5), s: float = 4):
    """Scatter 2-D codes z (N, 2), coloured by integer labels (e.g. the digit) if given."""
    if not torch.is_tensor(z) or z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z must be a tensor of shape (N, 2), got "
                         f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
    if labels is not None and len(labels) != len(z):
        raise ValueError(f"labels must have one entry per code: {len(z)} codes, "
                         f"{len(labels)} labels")
    ax = _axes(ax, figsize)
    z = z.detach().cpu()
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=s, alpha=0.6)
    else:
        pts = ax.scatter(z[:, 0], z[:, 1], c=labels.detach().cpu(), cmap="tab10", s=s,
                         alpha=0.7, vmin=-0.5, vmax=9.5)
        ax.figure.colorbar(pts, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    return ax


def point_cloud_3d(points: torch.Tensor, ax=None, c=None, title: str | None = None,
                   figsize=(5, 4.5), s: float = 2, lim: float | None = None):
    """Draw a 3-D point cloud (N, 3), optionally coloured by ``c`` (N,)."""
    if not torch.is_tensor(points) or points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be a tensor of shape (N, 3), got "
                         f"{tuple(points.shape) if torch.is_tensor(points) else type(points).__name__}")
    ax = _axes(ax, figsize, projection="3d")
    p = points.detach().cpu()
    colour = {} if c is None else {"c": c, "cmap": "viridis"}
    ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=s, **colour)
    lim = lim or float(p.abs().max())
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim), xlabel="x", ylabel="y",
           zlabel="z")
    ax.set_box_aspect((1, 1, 1))
    if title:
        ax.set_title(title)
    return ax
