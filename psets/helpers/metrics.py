"""Measures of how good a model is. (More arrive with the problem sets.)"""

from __future__ import annotations

import torch


def torus_surface_distance(points: torch.Tensor, R: float = 1.0, r: float = 0.4) -> torch.Tensor:
    """Distance of each 3-D point to the surface of the torus with radii R > r > 0 (axis z).

    The nearest point of the core circle (radius R in the xy-plane) is at distance
    sqrt((sqrt(x² + y²) − R)² + z²); the surface lies r further out, so the distance to the
    surface is the absolute difference. points: (N, 3) → (N,).
    """
    if not torch.is_tensor(points) or points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be a tensor of shape (N, 3), got "
                         f"{tuple(points.shape) if torch.is_tensor(points) else type(points).__name__}")
    if not R > r > 0:
        raise ValueError(f"radii must satisfy R > r > 0, got R={R!r}, r={r!r}")
    ring = torch.linalg.vector_norm(points[:, :2], dim=1) - R
    return (torch.sqrt(ring**2 + points[:, 2] ** 2) - r).abs()


def chamfer_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance between point sets a (N, D) and b (M, D).

    The mean distance from each point of a to its nearest point of b, plus the same from b
    to a (Euclidean distances, not squared). Compare it with the value for two independent
    samples of the true distribution of the same sizes: that floor is not zero.
    """
    for name, p in (("a", a), ("b", b)):
        if not torch.is_tensor(p) or p.ndim != 2 or len(p) == 0:
            raise ValueError(f"{name} must be a non-empty tensor of shape (N, D), got "
                             f"{tuple(p.shape) if torch.is_tensor(p) else type(p).__name__}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension D, got {a.shape[1]} and {b.shape[1]}")
    d = torch.cdist(a.float(), b.float())  # (N, M)
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()
