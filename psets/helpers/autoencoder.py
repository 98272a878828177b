"""A deterministic autoencoder with a low-dimensional code, and its reconstruction losses.

The reference answers of the autoencoder problem in 03_vae (its check compares against them and
later cells fall back on them when the check did not pass). Shapes: x (B, 1, 28, 28) images in
[0, 1], flattened to D = 784 pixels; codes c (B, code).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import grading, nets

D_MNIST = 28 * 28


class _AutoEncoder(nn.Module):
    """encoder D → hidden → hidden → code, decoder code → hidden → hidden → D with a sigmoid."""

    def __init__(self, hidden: int, code: int = 2, d: int = D_MNIST):
        super().__init__()
        for name, value in (("hidden", hidden), ("code", code), ("d", d)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.encoder = nets.mlp([d, hidden, hidden, code])
        self.decoder = nets.mlp([code, hidden, hidden, d], final_activation=nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, code)
        return self.encoder(x.flatten(1))

    def decode(self, c: torch.Tensor) -> torch.Tensor:  # (B, code) -> (B, D) in (0, 1)
        return self.decoder(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, D)
        return self.decode(self.encode(x))


@grading.reference
def autoencoder(hidden: int, code: int = 2) -> nn.Module:
    """The reference autoencoder for 28 × 28 images: ``encode`` (B, 1, 28, 28) → (B, code),
    ``decode`` (B, code) → (B, 784) pixel values in (0, 1), ``forward`` = decode ∘ encode."""
    return _AutoEncoder(hidden, code)


@grading.reference
def ae_loss(model: nn.Module, x: torch.Tensor, y=None) -> torch.Tensor:
    """Mean squared error between the flattened images and their reconstructions (mean over
    pixels and images); ``y`` (labels) is ignored, so the function fits ``train.fit``."""
    return F.mse_loss(model(x), x.flatten(1))


@grading.reference
def bce_per_image(x_hat: torch.Tensor, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Binary cross-entropy in nats per image, summed over pixels and averaged over images.

    x_hat (B, D) pixel probabilities, clamped to [eps, 1 − eps] so that a saturated sigmoid gives
    a finite loss; x (B, ...) targets in [0, 1] (grey levels are allowed). Returns a scalar.
    """
    if not (torch.is_tensor(x_hat) and torch.is_tensor(x)) or x_hat.shape != x.flatten(1).shape:
        raise ValueError(f"x_hat must have the shape of the flattened x, got "
                         f"{tuple(getattr(x_hat, 'shape', ()))} and {tuple(getattr(x, 'shape', ()))}")
    p = x_hat.clamp(eps, 1 - eps)
    t = x.flatten(1)
    return -(t * p.log() + (1 - t) * (1 - p).log()).sum(1).mean()
