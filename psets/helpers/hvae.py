"""Two-layer hierarchical VAEs: the model, its ELBO and importance-weighted bound, diagnostics.

The generative chain p(z2) p_θ(z1|z2) p_θ(x|z1) with the bottom-up encoder q_φ(z1|x) q_φ(z2|z1)
(lecture 4, eqs. 4.1-4.2). Every model here offers the same four methods, so one estimator serves
the MNIST model and the linear-Gaussian test model alike:

* ``q1(x)`` -> mu1, logvar1 (B, K1): the encoder q_φ(z1|x);
* ``q2(z1)`` -> mu2, logvar2 (..., K2): the encoder q_φ(z2|z1), on any leading shape;
* ``p1(z2)`` -> mu, logvar (..., K1): the prior p_θ(z1|z2), on any leading shape;
* ``log_likelihood(x, z1)`` -> (S, B): log p_θ(x|z1) for z1 (S, B, K1).

The functions marked ``@grading.reference`` are the reference answers of 04_hierarchical_vae; the
notebook's check cells compare the student's versions against them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from . import elbo, grading, nets

D_MNIST = 28 * 28


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_model(model) -> None:
    missing = [m for m in ("q1", "q2", "p1", "log_likelihood") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"model must offer q1, q2, p1 and log_likelihood (a two-layer VAE); "
                        f"{type(model).__name__} lacks {', '.join(missing)}")


def _check_x(x) -> None:
    if not torch.is_tensor(x) or x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of data (B, ...), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")


def _per_dim(fn, *tensors: torch.Tensor) -> torch.Tensor:
    """Apply a helper of ``elbo`` that sums over the last dimension to each dimension on its own."""
    return fn(*(t.unsqueeze(-1) for t in tensors))


def _halves(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A network output (..., 2K) as mu (..., K) and logvar (..., K)."""
    mu, logvar = h.chunk(2, dim=-1)
    return mu, logvar


# ----------------------------------------------------------------------------- models

class TwoLayerVAE(nn.Module):
    """A two-layer VAE for 28 × 28 binary images, with MLPs for every conditional.

    q(z1|x): D → hidden → hidden → 2 K1;  q(z2|z1): K1 → hidden_top → hidden_top → 2 K2;
    p(z1|z2): K2 → hidden_top → hidden_top → 2 K1;  p(x|z1): K1 → hidden → hidden → D logits.
    (Burda et al. 2016's two-layer architecture is hidden = 200, K1 = 100, hidden_top = 100, K2 = 50.)
    """

    def __init__(self, hidden: int = 200, latent1: int = 100, hidden_top: int = 100,
                 latent2: int = 50, d: int = D_MNIST):
        super().__init__()
        for name, value in (("hidden", hidden), ("latent1", latent1), ("hidden_top", hidden_top),
                            ("latent2", latent2), ("d", d)):
            _positive_int(name, value)
        self.latent1, self.latent2 = latent1, latent2
        self.enc1 = nets.mlp([d, hidden, hidden, 2 * latent1])
        self.enc2 = nets.mlp([latent1, hidden_top, hidden_top, 2 * latent2])
        self.prior1 = nets.mlp([latent2, hidden_top, hidden_top, 2 * latent1])
        self.dec = nets.mlp([latent1, hidden, hidden, d])

    def q1(self, x):  # (B, 1, 28, 28) -> mu1, logvar1 (B, K1)
        return _halves(self.enc1(x.flatten(1)))

    def q2(self, z1):  # (..., K1) -> mu2, logvar2 (..., K2)
        return _halves(self.enc2(z1))

    def p1(self, z2):  # (..., K2) -> mean and logvar of p(z1|z2), (..., K1)
        return _halves(self.prior1(z2))

    def logits(self, z1):  # (..., K1) -> (..., D) logits of p(x|z1)
        return self.dec(z1)

    def log_likelihood(self, x, z1):  # x (B, 1, 28, 28), z1 (S, B, K1) -> (S, B)
        return elbo.log_bernoulli(x.flatten(1), self.logits(z1))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral samples z2 ~ N(0, I), z1 ~ p(z1|z2), then the pixel probabilities of p(x|z1):
        (n, 1, 28, 28) in (0, 1) (the means, not binary draws)."""
        device = next(self.parameters()).device
        z2 = torch.randn(_positive_int("n", n), self.latent2, generator=generator).to(device)
        mu, logvar = self.p1(z2)
        z1 = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator).to(device)
        return torch.sigmoid(self.logits(z1)).view(n, 1, 28, 28)


class OneLayerVAE(nn.Module):
    """The one-layer VAE of 03_vae: encoder D → hidden → hidden → 2K, Bernoulli decoder
    K → hidden → hidden → D logits; ``encode`` and ``log_likelihood`` fit ``elbo``'s estimators."""

    def __init__(self, hidden: int = 200, latent: int = 50, d: int = D_MNIST):
        super().__init__()
        for name, value in (("hidden", hidden), ("latent", latent), ("d", d)):
            _positive_int(name, value)
        self.latent = latent
        self.encoder = nets.mlp([d, hidden, hidden, 2 * latent])
        self.decoder = nets.mlp([latent, hidden, hidden, d])

    def encode(self, x):  # (B, 1, 28, 28) -> mu, logvar (B, K)
        return elbo.split_latent(self.encoder(x.flatten(1)))

    def log_likelihood(self, x, z):  # z (S, B, K) -> (S, B)
        return elbo.log_bernoulli(x.flatten(1), self.decoder(z))


class LinearGaussianHVAE:
    """A two-layer model where every density is Gaussian and linear, so log p(x) is exact.

    p(z2) = N(0, I);  p(z1|z2) = N(A z2 + a, diag v1);  p(x|z1) = N(B z1 + b, diag v0);
    q(z1|x) = N(C x + c, diag s1);  q(z2|z1) = N(E z1 + e, diag s2).
    The generative parameters are drawn at random from ``seed`` (float64); the encoder is the exact
    posterior's conditionals made diagonal and perturbed by noise of scale ``perturb``. ``log_px(x)`` is the exact
    log-evidence (a multivariate normal in x), ``exact_elbo(x)`` the exact ELBO of this q,
    log p(x) − KL(q(z1, z2|x) ‖ p(z1, z2|x)), both through ``torch.distributions``.
    """

    def __init__(self, d: int = 4, latent1: int = 3, latent2: int = 2, seed: int = 0,
                 perturb: float = 0.1):
        for name, value in (("d", d), ("latent1", latent1), ("latent2", latent2)):
            _positive_int(name, value)
        if not perturb >= 0:
            raise ValueError(f"perturb must be a non-negative number, got {perturb!r}")
        g = torch.Generator().manual_seed(seed)

        def rand(*shape, scale=1.0):
            return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

        self.d, self.latent1, self.latent2 = d, latent1, latent2
        self.A, self.a = rand(latent1, latent2), rand(latent1, scale=0.5)
        self.logv1 = rand(latent1, scale=0.3) - 0.5
        self.B, self.b = rand(d, latent1), rand(d, scale=0.5)
        self.logv0 = rand(d, scale=0.3) - 0.5
        # the encoder: the exact posterior's conditionals made diagonal, then perturbed by
        # ``perturb``, so that its ELBO has a gap (diagonal q) that importance weighting closes
        m, S = self._joint()
        k2, z = latent2, latent1 + latent2
        gain1 = S[k2:z, z:] @ torch.linalg.inv(S[z:, z:])            # z1 | x
        self.C = gain1 + rand(latent1, d, scale=perturb)
        self.c = m[k2:z] - gain1 @ m[z:] + rand(latent1, scale=perturb)
        self.logs1 = torch.diag(S[k2:z, k2:z] - gain1 @ S[z:, k2:z]).log() + rand(latent1, scale=perturb)
        gain2 = S[:k2, k2:z] @ torch.linalg.inv(S[k2:z, k2:z])      # z2 | z1 (x adds nothing)
        self.E = gain2 + rand(latent2, latent1, scale=perturb)
        self.e = -gain2 @ self.a + rand(latent2, scale=perturb)
        self.logs2 = torch.diag(S[:k2, :k2] - gain2 @ S[k2:z, :k2]).log() + rand(latent2, scale=perturb)

    def q1(self, x):
        mu = x @ self.C.T + self.c
        return mu, self.logs1.expand_as(mu)

    def q2(self, z1):
        mu = z1 @ self.E.T + self.e
        return mu, self.logs2.expand_as(mu)

    def p1(self, z2):
        mu = z2 @ self.A.T + self.a
        return mu, self.logv1.expand_as(mu)

    def log_likelihood(self, x, z1):  # Gaussian p(x|z1): (S, B)
        return elbo.log_normal(x, z1 @ self.B.T + self.b, self.logv0)

    def sample_x(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of x from the model's marginal p(x): (n, d) float64."""
        dist = torch.distributions.MultivariateNormal(*self._marginal_x())
        if generator is None:
            return dist.sample((n,))
        eps = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        return dist.loc + eps @ dist.scale_tril.T

    def _joint(self):
        """Mean and covariance of (z2, z1, x) as a linear map of independent standard normals."""
        k1, k2, d = self.latent1, self.latent2, self.d
        n = k2 + k1 + d
        M = torch.zeros(n, n, dtype=torch.float64)  # (z2, z1, x) = M (ξ2, ξ1, ξ0) + m
        M[:k2, :k2] = torch.eye(k2, dtype=torch.float64)
        M[k2:k2 + k1, :k2] = self.A
        M[k2:k2 + k1, k2:k2 + k1] = torch.diag((0.5 * self.logv1).exp())
        M[k2 + k1:] = self.B @ M[k2:k2 + k1]
        M[k2 + k1:, k2 + k1:] += torch.diag((0.5 * self.logv0).exp())
        m = torch.cat([torch.zeros(k2, dtype=torch.float64), self.a, self.B @ self.a + self.b])
        return m, M @ M.T

    def _marginal_x(self):
        m, S = self._joint()
        z = self.latent1 + self.latent2
        return m[z:], S[z:, z:]

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) for x (B, d): (B,)."""
        return torch.distributions.MultivariateNormal(*self._marginal_x()).log_prob(x)

    def posterior(self, x: torch.Tensor) -> torch.distributions.MultivariateNormal:
        """The exact p(z1, z2 | x) by Gaussian conditioning, over the vector (z1, z2): batch (B,)."""
        m, S = self._joint()
        k2, z = self.latent2, self.latent1 + self.latent2
        order = torch.cat([torch.arange(k2, z), torch.arange(k2)])  # (z1, z2), as q orders them
        Szz, Szx, Sxx = S[:z, :z][order][:, order], S[:z, z:][order], S[z:, z:]
        gain = Szx @ torch.linalg.inv(Sxx)
        mean = m[:z][order] + (x - m[z:]) @ gain.T
        return torch.distributions.MultivariateNormal(mean, Szz - gain @ Szx.T)

    def q_joint(self, x: torch.Tensor) -> torch.distributions.MultivariateNormal:
        """The encoder's joint q(z1, z2 | x) = q(z1|x) q(z2|z1), a Gaussian over (z1, z2)."""
        mu1, logs1 = self.q1(x)
        S1 = torch.diag(logs1[0].exp())
        cov = torch.cat([torch.cat([S1, S1 @ self.E.T], 1),
                         torch.cat([self.E @ S1, self.E @ S1 @ self.E.T + torch.diag(self.logs2.exp())], 1)])
        mean = torch.cat([mu1, mu1 @ self.E.T + self.e], -1)
        return torch.distributions.MultivariateNormal(mean, cov)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The exact ELBO of this encoder: log p(x) − KL(q(z1, z2|x) ‖ p(z1, z2|x)), (B,)."""
        kl = torch.distributions.kl_divergence(self.q_joint(x), self.posterior(x))
        return self.log_px(x) - kl


class OneInformativeOneDead:
    """A hand-built two-layer model for x (N, 2) whose activities are known in closed form.

    q(z1|x) = N((x0, 3), diag(s(x), s(x))) with s(x) = 0.5 + x1²: z1's first dimension follows the
    data, its second is dead (a constant mean). q(z2|z1) = N((z1_0², 2 z1_1 + 1), I), so
    E[z2_0 | x] = x0² + s(x): a mean over q(z1|x), not the square of mu1, and z2_1 is dead.
    p(z1|z2) = N(z2, I) and log p(x|z1) = 0 complete the interface.
    """

    def q1(self, x):
        mu = torch.stack([x[:, 0], torch.full_like(x[:, 0], 3.0)], -1)
        return mu, (0.5 + x[:, 1:2] ** 2).log().expand_as(mu)

    def q2(self, z1):
        mu = torch.stack([z1[..., 0] ** 2, 2 * z1[..., 1] + 1], -1)
        return mu, torch.zeros_like(mu)

    def p1(self, z2):
        return z2, torch.zeros_like(z2)

    def log_likelihood(self, x, z1):
        return torch.zeros(z1.shape[:-1], dtype=z1.dtype, device=z1.device)

    @staticmethod
    def activity(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact activities (a1 (2,), a2 (2,)) over the data x, variances with N − 1."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return (torch.stack([x[:, 0].var(), zero]),
                torch.stack([(x[:, 0] ** 2 + 0.5 + x[:, 1] ** 2).var(), zero]))


# ----------------------------------------------------------------------------- estimators

class Terms(NamedTuple):
    """The terms of a two-layer ELBO, each averaged over the S samples.

    elbo (B,); rec (B,) = E log p(x|z1); kl1 (B, K1) per dimension of z1, log q(z1|x) − log p(z1|z2)
    (a Monte-Carlo estimate); kl2 (B, K2) per dimension of z2, KL(q(z2|z1) ‖ N(0, I)) (closed form
    given z1). elbo = rec − kl1.sum(-1) − kl2.sum(-1).
    """

    elbo: torch.Tensor
    rec: torch.Tensor
    kl1: torch.Tensor
    kl2: torch.Tensor


def _path(model, x: torch.Tensor, n_samples: int):
    """Draw z1 ~ q(z1|x) and z2 ~ q(z2|z1) by reparameterisation, with every distribution's
    parameters: z1 (S, B, K1), z2 (S, B, K2)."""
    mu1, logvar1 = model.q1(x)
    z1 = elbo.reparameterize(mu1, logvar1, n_samples)        # (S, B, K1)
    mu2, logvar2 = model.q2(z1)                               # (S, B, K2)
    z2 = mu2 + (0.5 * logvar2).exp() * torch.randn_like(mu2)  # one z2 per z1
    pmu1, plogvar1 = model.p1(z2)                             # (S, B, K1)
    return z1, mu1, logvar1, z2, mu2, logvar2, pmu1, plogvar1


@grading.reference
def hvae_elbo(model, x: torch.Tensor, n_samples: int = 1) -> Terms:
    """The two-layer ELBO (lecture 4, eq. 4.3) with the bottom-up encoder, and its terms.

    The top layer's KL against N(0, I) is in closed form given z1; the bottom layer compares
    q(z1|x) with p(z1|z2), conditioned on different things, so its term is the Monte-Carlo
    log-ratio. Returns Terms(elbo (B,), rec (B,), kl1 (B, K1), kl2 (B, K2)), averaged over S.
    """
    _check_model(model)
    _check_x(x)
    _positive_int("n_samples", n_samples)
    z1, mu1, logvar1, z2, mu2, logvar2, pmu1, plogvar1 = _path(model, x, n_samples)
    rec = model.log_likelihood(x, z1).mean(0)                                     # (B,)
    kl1 = (_per_dim(elbo.log_normal, z1, mu1, logvar1)
           - _per_dim(elbo.log_normal, z1, pmu1, plogvar1)).mean(0)               # (B, K1)
    kl2 = _per_dim(elbo.gaussian_kl, mu2, logvar2).mean(0)                        # (B, K2)
    return Terms(rec - kl1.sum(-1) - kl2.sum(-1), rec, kl1, kl2)


@grading.reference
def hvae_iw_bound(model, x: torch.Tensor, k: int, chunk: int = 100) -> torch.Tensor:
    """The importance-weighted bound L_k of a two-layer VAE, sampling both layers from q:
    log (1/k) Σ_i p(x, z1_i, z2_i) / q(z1_i, z2_i | x). Drawn ``chunk`` samples at a time with a
    running log-sum-exp. Returns (B,)."""
    _check_model(model)
    _check_x(x)
    _positive_int("k", k)
    _positive_int("chunk", chunk)
    total, done = None, 0
    while done < k:
        s = min(chunk, k - done)
        z1, mu1, logvar1, z2, mu2, logvar2, pmu1, plogvar1 = _path(model, x, s)
        log_w = (model.log_likelihood(x, z1) + elbo.log_normal(z1, pmu1, plogvar1)
                 + elbo.log_standard_normal(z2)
                 - elbo.log_normal(z1, mu1, logvar1) - elbo.log_normal(z2, mu2, logvar2))  # (s, B)
        part = torch.logsumexp(log_w, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        done += s
    return total - math.log(k)


@grading.reference
def active_units(model, x: torch.Tensor, n_samples: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Activity of every latent dimension (Burda et al. 2016, sec. 5.2): A_u = Var_x(E_q[u | x]).

    For z1 the inner mean is mu1(x); for z2 it is E_{q(z1|x)}[mu2(z1)], estimated with
    ``n_samples`` draws of z1. The variance runs over the N data points (torch's default, N − 1).
    Returns (a1 (K1,), a2 (K2,)); a unit is called active when its activity exceeds 0.01.
    """
    _check_model(model)
    _check_x(x)
    _positive_int("n_samples", n_samples)
    if len(x) < 2:
        raise ValueError(f"x must hold at least 2 data points for a variance over data, got {len(x)}")
    mu1, logvar1 = model.q1(x)
    mean2 = model.q2(elbo.reparameterize(mu1, logvar1, n_samples))[0].mean(0)  # (B, K2)
    return mu1.var(0), mean2.var(0)


@grading.reference
def kl_weight(step: int, warmup_steps: int, beta: float = 1.0) -> float:
    """KL warm-up: the weight of the KL terms after ``step`` optimiser steps, rising linearly
    from 0 to ``beta`` over ``warmup_steps`` steps and staying there (no warm-up when 0)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if not beta >= 0:
        raise ValueError(f"beta must be a non-negative number, got {beta!r}")
    return float(beta) if warmup_steps == 0 else float(beta) * min(1.0, step / warmup_steps)


@grading.reference
def hvae_loss(rec: torch.Tensor, kl1: torch.Tensor, kl2: torch.Tensor, beta: float = 1.0,
              free_bits: float = 0.0) -> torch.Tensor:
    """The training loss −E[rec] + beta Σ_layers Σ_dims KL̃_d, a scalar.

    rec (B,), kl1 (B, K1), kl2 (B, K2) as returned by ``hvae_elbo``. Without free bits, KL̃_d is the
    batch mean of dimension d's KL; with free bits λ > 0 it is max(λ, batch mean) (the "free
    bits" of Kingma et al. 2016, NeurIPS, arXiv:1606.04934, one group per dimension), so a
    dimension whose mean KL is below λ gets no gradient from it. With beta = 1 and free_bits = 0 the loss is the negative mean ELBO.
    """
    if not all(torch.is_tensor(t) for t in (rec, kl1, kl2)) or rec.ndim != 1 or kl1.ndim != 2 \
            or kl2.ndim != 2 or not len(rec) == len(kl1) == len(kl2):
        raise ValueError(f"rec, kl1, kl2 must be tensors (B,), (B, K1), (B, K2), got "
                         f"{[tuple(t.shape) if torch.is_tensor(t) else type(t).__name__ for t in (rec, kl1, kl2)]}")
    if not beta >= 0:
        raise ValueError(f"beta must be a non-negative number, got {beta!r}")
    if not free_bits >= 0:
        raise ValueError(f"free_bits must be a non-negative number of nats, got {free_bits!r}")
    kl = torch.cat([kl1.mean(0), kl2.mean(0)])  # (K1 + K2,) batch-mean KL per dimension
    if free_bits > 0:
        kl = kl.clamp(min=free_bits)
    return -rec.mean() + beta * kl.sum()
