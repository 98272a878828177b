"""Network building blocks shared by the problem sets."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU,
        final_activation: nn.Module | None = None) -> nn.Sequential:
    """A multilayer perceptron with layer widths ``sizes`` (input first, output last).

    ``activation`` follows every hidden layer; ``final_activation`` (an instance) the last.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                 for s in sizes):
        raise ValueError(f"sizes must list at least two positive integers, got {sizes!r}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of positions or time steps t (B,) → (B, dim).

    Frequencies form a geometric sequence from 1 to 1/max_period (Vaswani et al. 2017,
    arXiv:1706.03762); the first half of the features are sines, the second half cosines.
    """
    if not torch.is_tensor(t) or t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor (B,), got "
                         f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even integer, got {dim!r}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def fourier_features(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Positional encoding of coordinates x (B, D) → (B, D · (1 + 2 · n_freqs)).

    Keeps x and appends sin(2^k π x) and cos(2^k π x) for k = 0..n_freqs−1, so that a small
    MLP can represent functions that vary quickly in x (Tancik et al. 2020, arXiv:2006.10739;
    Mildenhall et al. 2020, arXiv:2003.08934).
    """
    if not torch.is_tensor(x) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D tensor (B, D), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if isinstance(n_freqs, bool) or not isinstance(n_freqs, int) or n_freqs < 0:
        raise ValueError(f"n_freqs must be a non-negative integer, got {n_freqs!r}")
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)  # (F,)
    angles = (x[:, :, None] * freqs).flatten(1)  # (B, D·F)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1)
