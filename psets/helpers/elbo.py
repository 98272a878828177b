"""Log-likelihoods, the Gaussian KL, and three estimators of a VAE's bound on log p(x).

Shapes: x (B, ...) data; mu, logvar (B, K) the Gaussian encoder q_φ(z|x) = N(mu, diag exp(logvar));
z (S, B, K) S latent samples per data point. ``log_likelihood(x, z)`` is a function of the
model, returning log p_θ(x|z) of shape (S, B): it lets one estimator serve a Bernoulli decoder on
MNIST and a Gaussian decoder on 3-D points alike.

These are the reference versions that the problem sets' check cells compare against.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

from . import grading

LOG_2PI = math.log(2 * math.pi)
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def split_latent(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an encoder output (B, 2K) into mu (B, K) and logvar (B, K)."""
    if not torch.is_tensor(h) or h.ndim != 2:
        raise ValueError(f"h must be a 2-D tensor (B, 2K), got "
                         f"{tuple(h.shape) if torch.is_tensor(h) else type(h).__name__}")
    if h.shape[1] % 2:
        raise ValueError(f"the encoder's output size must be even (mean and log-variance of a "
                         f"K-dimensional latent, 2K values), got {h.shape[1]}")
    mu, logvar = h.chunk(2, dim=1)
    return mu, logvar


def _shape(t) -> str:
    return str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__


def _check_batch(x: torch.Tensor, mu: torch.Tensor) -> None:
    """x and the encoder's mu must describe the same B data points."""
    if not torch.is_tensor(x) or x.ndim < 1 or len(x) != len(mu):
        raise ValueError(f"x and mu must hold the same batch of B data points: x (B, ...) and mu "
                         f"(B, K); got x {_shape(x)} and mu {_shape(mu)}")


def _check_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if not (torch.is_tensor(mu) and torch.is_tensor(logvar)) or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must be tensors of the same shape, got "
                         f"{getattr(mu, 'shape', type(mu))} and {getattr(logvar, 'shape', type(logvar))}")


@grading.reference
def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + σ ⊙ ε with ε ~ N(0, I): (S, B, K) samples that carry gradients to mu and logvar."""
    _check_gaussian(mu, logvar)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    eps = torch.randn((n_samples, *mu.shape), device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps  # σ = exp(½ log σ²)


@grading.reference
def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last dimension."""
    # −½ Σ_k [log 2π + log σ_k² + (z_k − μ_k)² / σ_k²]
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


@grading.reference
def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over all but the leading batch dimensions.

    x (B, D...) with values in [0, 1]; logits (..., B, D...) broadcast against x.
    """
    if not (torch.is_tensor(x) and torch.is_tensor(logits)) or logits.ndim < x.ndim or any(
            a not in (1, b) for a, b in zip(x.shape, logits.shape[logits.ndim - x.ndim:])):
        raise ValueError(f"logits must end in the shape of x, (..., B, D...) for x (B, D...); got "
                         f"x {_shape(x)} and logits {_shape(logits)}")
    ll = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return ll.flatten(start_dim=logits.ndim - x.ndim + 1).sum(-1)


@grading.reference
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag σ²) ‖ N(0, I)) in closed form, summed over the last dimension: (B,).

    KL = ½ Σ_k (μ_k² + σ_k² − log σ_k² − 1)   (lecture 3, derived there).
    """
    _check_gaussian(mu, logvar)
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1)


@grading.reference
def elbo_sgvb(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              log_likelihood: LogLikelihood, n_samples: int = 1) -> torch.Tensor:
    """Monte-Carlo ELBO: mean over S samples of log p(x|z) + log p(z) − log q(z|x). (B,)"""
    _check_gaussian(mu, logvar)
    _check_batch(x, mu)
    z = reparameterize(mu, logvar, n_samples)  # (S, B, K)
    return (log_likelihood(x, z) + log_standard_normal(z) - log_normal(z, mu, logvar)).mean(0)


@grading.reference
def elbo_analytic(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  log_likelihood: LogLikelihood, n_samples: int = 1) -> torch.Tensor:
    """ELBO with the KL in closed form: mean over S of log p(x|z), minus KL(q ‖ p). (B,)"""
    _check_gaussian(mu, logvar)
    _check_batch(x, mu)
    z = reparameterize(mu, logvar, n_samples)
    return log_likelihood(x, z).mean(0) - gaussian_kl(mu, logvar)


@grading.reference
def iw_bound(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             log_likelihood: LogLikelihood, k: int, chunk: int = 100) -> torch.Tensor:
    """Importance-weighted bound L_k = log (1/k) Σ_i p(x, z_i) / q(z_i|x), z_i ~ q (Burda et al. 2015).

    L_1 is the ELBO; L_k grows with k towards log p(x). Samples are drawn ``chunk`` at a time
    and combined with a running log-sum-exp, so memory does not grow with k. Returns (B,).
    """
    _check_gaussian(mu, logvar)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk (samples drawn at a time) must be a positive integer, got "
                         f"{chunk!r}")
    _check_batch(x, mu)
    total = torch.full(mu.shape[:1], -math.inf, device=mu.device, dtype=mu.dtype)
    done = 0
    while done < k:
        s = min(chunk, k - done)
        z = reparameterize(mu, logvar, s)
        log_w = log_likelihood(x, z) + log_standard_normal(z) - log_normal(z, mu, logvar)  # (s, B)
        total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        done += s
    return total - math.log(k)
