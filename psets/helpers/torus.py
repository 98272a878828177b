"""Output parametrisation of a point decoder (problem 5 of 03_vae): raw network outputs to valid
spherical coordinates, then to a point of R³.

A decoder's last layer gives three raw, unconstrained numbers per point. The polar head maps them
to spherical coordinates with the ranges the coordinates need,

* radius ρ = softplus(raw_0) > 0 (a negative radius would be a second name for the opposite point),
* azimuth θ = raw_1 wrapped to (−π, π]: periodic, so the network may let raw_1 run over any
  interval and the point goes round the z axis as many times as it likes, with no seam of its own,
* polar angle φ = π · sigmoid(raw_2) ∈ (0, π), measured from the +z axis,

and returns (ρ sin φ cos θ, ρ sin φ sin θ, ρ cos φ). For points of a torus around the z axis, θ is
the ring angle, so one loop of the ring is a straight line in θ, and its sine and cosine come
from the head instead of being drawn by the network.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from . import grading


def _check_raw(raw) -> None:
    if not torch.is_tensor(raw) or raw.ndim < 1 or raw.shape[-1] != 3:
        raise ValueError(f"raw must be a tensor of shape (..., 3), got "
                         f"{tuple(raw.shape) if torch.is_tensor(raw) else type(raw).__name__}")


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """theta wrapped to (−π, π] (the same direction, gradient 1 almost everywhere)."""
    return theta - 2 * math.pi * torch.ceil((theta - math.pi) / (2 * math.pi))


@grading.reference
def polar_coordinates(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs (..., 3) → (rho, theta, phi), each (...): rho > 0, theta ∈ (−π, π], phi ∈ (0, π)."""
    _check_raw(raw)
    return F.softplus(raw[..., 0]), wrap_angle(raw[..., 1]), math.pi * torch.sigmoid(raw[..., 2])


@grading.reference
def polar_head(raw: torch.Tensor) -> torch.Tensor:
    """Raw outputs (..., 3) → points (..., 3) through the spherical coordinates above."""
    rho, theta, phi = polar_coordinates(raw)
    return torch.stack([rho * torch.sin(phi) * torch.cos(theta),
                        rho * torch.sin(phi) * torch.sin(theta),
                        rho * torch.cos(phi)], dim=-1)
