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
