"""Denoising diffusion: noise schedules, the forward process, its posterior, DDPM and DDIM sampling.

Notation follows Ho, Jain & Abbeel 2020 (DDPM, arXiv:2006.11239) and the course (DESIGN.md):
β_t the noise added at step t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (``alpha_bar``), ε the noise,
ε_θ(x_t, t) the network that predicts it, T the number of steps.

Steps are numbered as in the paper, t = 1..T. Every per-step tensor of a ``NoiseSchedule``
has T + 1 entries and entry 0 describes clean data: β_0 = 0, ᾱ_0 = 1. So ``alpha_bar[t]`` is
ᾱ_t, the network is called with t ∈ {1..T}, and a DDIM step that "jumps to step 0" returns its
estimate of x_0.

Shapes: images x (B, C, H, W); steps t (B,) int64; per-step coefficients are gathered into
(B, 1, 1, 1) so they broadcast over an image (``extract``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import grading

SCHEDULES = ("linear", "cosine")
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ε_θ(x_t (B,C,H,W), t (B,))


# ----------------------------------------------------------------------------- schedules

def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T (the number of diffusion steps) must be an integer ≥ 1, got {T!r}")
    return T


@dataclass(frozen=True)
class NoiseSchedule:
    """β_t, α_t and ᾱ_t for t = 0..T (float64, on the CPU; entry 0 is clean data).

    Build one with ``linear_schedule``, ``cosine_schedule`` or ``NoiseSchedule.from_betas``.
    """

    beta: torch.Tensor       # (T+1,) β_t; β_0 = 0
    alpha: torch.Tensor      # (T+1,) α_t = 1 − β_t
    alpha_bar: torch.Tensor  # (T+1,) ᾱ_t = ∏_{s=1}^t α_s; ᾱ_0 = 1

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        """From β_1..β_T (a sequence or 1-D tensor of length T ≥ 1, each in (0, 1))."""
        b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if b.ndim != 1:
            raise ValueError(f"betas must be 1-D (β_1..β_T), got shape {tuple(b.shape)}")
        _check_T(len(b))
        bad = ~((b > 0) & (b < 1))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"betas must lie in the open interval (0, 1), got β_{i + 1} = "
                             f"{b[i].item():.4g} (range of all betas: [{b.min().item():.4g}, "
                             f"{b.max().item():.4g}])")
        beta = torch.cat([b.new_zeros(1), b])          # β_0 = 0 pads index 0
        alpha = 1.0 - beta                             # α_t = 1 − β_t
        alpha_bar = torch.cumprod(alpha, dim=0)        # ᾱ_t = ∏_{s≤t} α_s, ᾱ_0 = 1
        return cls(beta, alpha, alpha_bar)

    @property
    def T(self) -> int:
        return len(self.beta) - 1

    def log_snr(self) -> torch.Tensor:
        """log SNR(t) = log(ᾱ_t / (1 − ᾱ_t)) for t = 1..T, shape (T,)."""
        ab = self.alpha_bar[1:]
        return torch.log(ab) - torch.log1p(-ab)


def linear_schedule(T: int = 1000, beta_1: float | None = None,
                    beta_T: float | None = None) -> NoiseSchedule:
    """β_t rising linearly from β_1 to β_T (Ho et al. 2020: 1e-4 to 0.02 for T = 1000).

    By default both ends are scaled by 1000 / T (as Nichol & Dhariwal 2021 do), so a shorter
    chain still ends near pure noise: ᾱ_T ≈ exp(−Σ β_t) is about the same for every T. Below
    T = 50 the scaled β_T leaves (0, 1) and a ValueError says so.
    """
    T = _check_T(T)
    scale = 1000 / T
    beta_1 = 1e-4 * scale if beta_1 is None else beta_1
    beta_T = 0.02 * scale if beta_T is None else beta_T
    for name, v in (("beta_1", beta_1), ("beta_T", beta_T)):
        if not 0 < v < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {v:.4g}"
                             + (f" (the default scaled by 1000/T for T={T}; use T ≥ 50 or the "
                                f"cosine schedule)" if v >= 1 else ""))
    return NoiseSchedule.from_betas(torch.linspace(beta_1, beta_T, T, dtype=torch.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """The cosine schedule of Nichol & Dhariwal 2021 (arXiv:2102.09672, eq. 17).

    ᾱ_t = f(t) / f(0) with f(t) = cos²(π/2 · (t/T + s) / (1 + s)); β_t = 1 − ᾱ_t / ᾱ_{t−1},
    clipped at ``max_beta`` so the last steps stay finite.
    """
    T = _check_T(T)
    if not s >= 0:
        raise ValueError(f"s (the offset of the cosine schedule) must be ≥ 0, got {s!r}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2   # f(t)
    alpha_bar = f / f[0]                                       # ᾱ_t = f(t) / f(0)
    beta = 1 - alpha_bar[1:] / alpha_bar[:-1]                  # β_t = 1 − ᾱ_t / ᾱ_{t−1}
    return NoiseSchedule.from_betas(beta.clamp(min=1e-8, max=max_beta))


def make_schedule(name: str, T: int) -> NoiseSchedule:
    """``linear_schedule(T)`` or ``cosine_schedule(T)`` by name."""
    if name not in SCHEDULES:
        raise ValueError(f"name must be one of {SCHEDULES}, got {name!r}")
    return linear_schedule(T) if name == "linear" else cosine_schedule(T)


def extract(a: torch.Tensor, t: torch.Tensor, ndim: int = 4,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gather a[t] for steps t (B,) as (B, 1, …, 1) with ``ndim`` dimensions, on t's device."""
    return a.to(dtype).to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))


def _check_steps(t: torch.Tensor, x: torch.Tensor, T: int, lowest: int = 0) -> None:
    if not torch.is_tensor(t) or t.dtype not in (torch.int32, torch.int64) or t.shape != (len(x),):
        raise ValueError(f"t must be an integer tensor of shape ({len(x)},) (one step per image), "
                         f"got {tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}"
                         f"{' of dtype ' + str(t.dtype) if torch.is_tensor(t) else ''}")
    if len(t) and (t.min() < lowest or t.max() > T):
        raise ValueError(f"t must lie in {lowest}..{T} (T = {T}), got values in "
                         f"[{t.min().item()}, {t.max().item()}]")


def _steps(t, x: torch.Tensor) -> torch.Tensor:
    """An int step (Python's or NumPy's) or a (B,) tensor of steps → a (B,) tensor on x's device."""
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return torch.full((len(x),), int(t), dtype=torch.long, device=x.device)
    return t


def _check_x(x, name: str = "x") -> None:
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"{name} must be a floating-point tensor (B, …), e.g. images "
                         f"(B, C, H, W); got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (reproducible), then moved."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


# ----------------------------------------------------------------------------- forward process

def q_step(x_prev: torch.Tensor, t, schedule: NoiseSchedule,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """One forward step: draw x_t ~ q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I). t ∈ 1..T."""
    _check_x(x_prev, "x_prev")
    t = _steps(t, x_prev)
    _check_steps(t, x_prev, schedule.T, lowest=1)
    noise = torch.randn_like(x_prev) if noise is None else noise
    return (extract(schedule.alpha, t, x_prev.ndim).sqrt() * x_prev   # √α_t x_{t−1}
            + extract(schedule.beta, t, x_prev.ndim).sqrt() * noise)  # + √β_t ε


@grading.reference
def q_sample(x0: torch.Tensor, t, schedule: NoiseSchedule,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) in one go (Ho et al. eq. 4).

    x0 (B, C, H, W); t an int or (B,) steps in 0..T; noise ε (B, C, H, W) or None to draw it.
    """
    _check_x(x0, "x0")
    t = _steps(t, x0)
    _check_steps(t, x0, schedule.T)
    noise = torch.randn_like(x0) if noise is None else noise
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got "
                         f"{tuple(noise.shape)}")
    ab = extract(schedule.alpha_bar, t, x0.ndim)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise  # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε


# ----------------------------------------------------------------------------- posterior

@grading.reference
def posterior_coefficients(schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor,
                                                                torch.Tensor]:
    """Coefficients of q(x_{t−1} | x_t, x_0) = N(c₀ x_0 + c_t x_t, β̃_t I) for t = 1..T.

    Returns (c₀, c_t, β̃), each (T+1,) float64 with entry 0 unused (set to 0) (Ho et al. eq. 7):
    c₀ = √ᾱ_{t−1} β_t / (1 − ᾱ_t), c_t = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t),
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.
    """
    beta, alpha, ab = schedule.beta[1:], schedule.alpha[1:], schedule.alpha_bar[1:]
    ab_prev = schedule.alpha_bar[:-1]                       # ᾱ_{t−1}
    coef_x0 = ab_prev.sqrt() * beta / (1 - ab)              # √ᾱ_{t−1} β_t / (1 − ᾱ_t)
    coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)       # √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    var = (1 - ab_prev) / (1 - ab) * beta                   # β̃_t
    pad = beta.new_zeros(1)
    return torch.cat([pad, coef_x0]), torch.cat([pad, coef_xt]), torch.cat([pad, var])


@grading.reference
def q_posterior_mean_variance(x0: torch.Tensor, xt: torch.Tensor, t,
                              schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, C, H, W) and variance (B, 1, 1, 1) of q(x_{t−1} | x_t, x_0), t ∈ 1..T."""
    _check_x(x0, "x0")
    if not torch.is_tensor(xt) or xt.shape != x0.shape:
        raise ValueError(f"xt must have the shape of x0 {tuple(x0.shape)}, got "
                         f"{tuple(xt.shape) if torch.is_tensor(xt) else type(xt).__name__}")
    t = _steps(t, x0)
    _check_steps(t, x0, schedule.T, lowest=1)
    c0, ct, var = posterior_coefficients(schedule)
    mean = extract(c0, t, x0.ndim) * x0 + extract(ct, t, x0.ndim) * xt  # μ̃_t(x_t, x_0)
    return mean, extract(var, t, x0.ndim)                               # β̃_t


def predict_x0_from_eps(xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                        schedule: NoiseSchedule) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t: invert q_sample given a noise estimate."""
    ab = extract(schedule.alpha_bar, t, xt.ndim)
    return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()


def eps_from_x0(xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
                schedule: NoiseSchedule) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t): the noise that takes x_0 to x_t."""
    ab = extract(schedule.alpha_bar, t, xt.ndim)
    return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()


# ----------------------------------------------------------------------------- training

@grading.reference
def training_loss(model: EpsModel, x0: torch.Tensor, schedule: NoiseSchedule,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """L_simple (Ho et al. eq. 14): E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖².

    t ~ Uniform{1..T}, ε ~ N(0, I); the mean is over pixels and batch. x0 (B, C, H, W) in
    [−1, 1]. Returns a scalar.
    """
    _check_x(x0, "x0")
    where = generator.device if generator is not None else x0.device
    t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator, device=where)
    noise = _randn(x0.shape, generator, x0.device)
    t = t.to(x0.device)
    xt = q_sample(x0, t, schedule, noise)
    return torch.mean((noise - model(xt, t)) ** 2)


def ema_of(model: torch.nn.Module, optimizer: torch.optim.Optimizer, decay: float = 0.999,
           warmup: bool = True) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights, updated after every optimizer step.

    θ_EMA ← d θ_EMA + (1 − d) θ. Ho et al. 2020 sample with such an average (d = 0.9999).
    With ``warmup`` the decay grows as d_n = min(decay, (1 + n) / (10 + n)) over the first
    updates, so a short run is not dominated by the initial weights. Sample with
    ``ema.module``.
    """
    if not 0 < decay < 1:
        raise ValueError(f"decay must lie in (0, 1), got {decay!r}")
    count = [0]  # updates so far, kept on the host: no device sync per step

    @torch.no_grad()
    def ema_update(ema_params, params, _num_averaged):
        n = count[0] = count[0] + 1
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        torch._foreach_lerp_(ema_params, params, 1 - d)   # θ_EMA += (1 − d)(θ − θ_EMA)

    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update)
    optimizer.register_step_post_hook(lambda *_: ema.update_parameters(model))
    return ema


# ----------------------------------------------------------------------------- DDPM sampling

@grading.reference
def p_mean_variance(model: EpsModel, xt: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                    clip_denoised: bool = True, variance: str = "posterior"):
    """Mean, variance and x̂_0 of p_θ(x_{t−1} | x_t) for an ε-predicting model.

    x̂_0 comes from ε_θ (and is clipped to [−1, 1] if ``clip_denoised``); the mean is the
    posterior mean μ̃_t(x_t, x̂_0), which equals (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t without clipping
    (Ho et al. eq. 11). ``variance``: ``"posterior"`` σ_t² = β̃_t or ``"beta"`` σ_t² = β_t
    (the two choices of Ho et al. §3.2).
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    eps = model(xt, t)
    x0_hat = predict_x0_from_eps(xt, t, eps, schedule)
    if clip_denoised:
        x0_hat = x0_hat.clamp(-1, 1)
    mean, post_var = q_posterior_mean_variance(x0_hat, xt, t, schedule)
    var = post_var if variance == "posterior" else extract(schedule.beta, t, xt.ndim)
    return mean, var, x0_hat


@grading.reference
@torch.no_grad()
def p_sample(model: EpsModel, xt: torch.Tensor, t, schedule: NoiseSchedule,
             generator: torch.Generator | None = None, clip_denoised: bool = True,
             variance: str = "posterior", return_x0: bool = False):
    """One ancestral step: x_{t−1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I) (no noise at t = 1).

    xt (B, C, H, W); t an int or (B,) steps in 1..T. Returns x_{t−1} (B, C, H, W), and with
    ``return_x0`` the pair (x_{t−1}, x̂_0) where x̂_0 is the (clipped) estimate the mean used.
    """
    _check_x(xt, "xt")
    t = _steps(t, xt)
    _check_steps(t, xt, schedule.T, lowest=1)
    mean, var, x0_hat = p_mean_variance(model, xt, t, schedule, clip_denoised, variance)
    z = _randn(xt.shape, generator, xt.device)
    nonzero = (t > 1).to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))  # t = 1 returns the mean
    x_prev = mean + nonzero * var.sqrt() * z
    return (x_prev, x0_hat) if return_x0 else x_prev


def _check_shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape must be a tuple of positive integers (B, C, H, W), got {shape!r}")
    return tuple(shape)


@grading.reference
@torch.no_grad()
def p_sample_loop(model: EpsModel, shape, schedule: NoiseSchedule, device=None,
                  generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                  clip_denoised: bool = True, variance: str = "posterior",
                  keep: int = 0, callback=None
                  ) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """DDPM sampling (Ho et al. algorithm 2): x_T ~ N(0, I), then p_sample for t = T..1.

    shape (B, C, H, W); x_T a given start (else drawn). Returns x_0 (B, C, H, W); with
    ``keep`` > 0 also a dict {t: x_t} at ``keep`` evenly spaced steps (on the CPU), T and 0
    included, for drawing the reverse trajectory. ``callback(t, x_t, x0_hat)``, if given, is
    called before each step t = T..1 is taken, with the x̂_0 that step estimates.
    """
    shape = _check_shape(shape)
    x = _randn(shape, generator, device) if x_T is None else x_T
    keep_at = set(torch.linspace(0, schedule.T, keep).round().long().tolist()) if keep else set()
    trajectory = {schedule.T: x.cpu()} if schedule.T in keep_at else {}
    for t in range(schedule.T, 0, -1):
        x_prev, x0_hat = p_sample(model, x, t, schedule, generator, clip_denoised, variance,
                                  return_x0=True)
        if callback is not None:
            callback(t, x, x0_hat)
        x = x_prev
        if t - 1 in keep_at:
            trajectory[t - 1] = x.cpu()
    return (x, trajectory) if keep else x


# ----------------------------------------------------------------------------- DDIM sampling

@grading.reference
def ddim_timesteps(T: int, S: int) -> list[int]:
    """S steps τ_S > … > τ_1 of 1..T, evenly spaced and ending at T (Song et al. 2021, §4.2)."""
    T = _check_T(T)
    if isinstance(S, bool) or not isinstance(S, int) or not 1 <= S <= T:
        raise ValueError(f"S (the number of DDIM steps) must be an integer in 1..T = 1..{T}, "
                         f"got {S!r}")
    return [round(i * T / S) for i in range(S, 0, -1)]  # τ_i = round(i · T / S)


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < math.inf:
        raise ValueError(f"eta (DDIM's noise level) must be a finite number ≥ 0, got {eta!r}")
    return float(eta)


@grading.reference
def ddim_step(eps: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
              schedule: NoiseSchedule, eta: float = 0.0, noise: torch.Tensor | None = None,
              clip_denoised: bool = True) -> torch.Tensor:
    """One DDIM update from step t to an earlier step t_prev (Song et al. 2021, eq. 12).

    x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) ε̂ + σ_t z with
    σ_t = η √((1 − ᾱ_{t'}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{t'}). η = 0 is deterministic;
    η = 1 with t' = t − 1 is DDPM's ancestral step. eps, xt (B, C, H, W); t, t_prev (B,).
    """
    eta = _check_eta(eta)
    ab, ab_prev = extract(schedule.alpha_bar, t, xt.ndim), extract(schedule.alpha_bar, t_prev, xt.ndim)
    x0_hat = predict_x0_from_eps(xt, t, eps, schedule)
    if clip_denoised:
        x0_hat = x0_hat.clamp(-1, 1)
        eps = eps_from_x0(xt, t, x0_hat, schedule)      # keep ε̂ consistent with clipped x̂_0
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + sigma * (torch.randn_like(xt) if noise is None else noise)
    return x_prev


@grading.reference
@torch.no_grad()
def ddim_sample_loop(model: EpsModel, shape, schedule: NoiseSchedule, S: int, eta: float = 0.0,
                     device=None, generator: torch.Generator | None = None,
                     x_T: torch.Tensor | None = None, clip_denoised: bool = True,
                     keep: bool = False, callback=None):
    """DDIM sampling with S ≪ T network calls: x_T ~ N(0, I), then ddim_step along τ.

    The last step goes to t' = 0, where ᾱ_0 = 1, so it returns x̂_0. Returns x_0 (B, C, H, W);
    with ``keep`` also the dict {τ_i: x_{τ_i}} of every visited step (on the CPU).
    ``callback(t, x_t, x0_hat)``, if given, is called at each visited step t = τ_S..τ_1 with the
    (clipped) x̂_0 of that step.
    """
    shape = _check_shape(shape)
    eta = _check_eta(eta)
    x = _randn(shape, generator, device) if x_T is None else x_T
    taus = ddim_timesteps(schedule.T, S) + [0]
    trajectory = {taus[0]: x.cpu()}
    for t, t_prev in zip(taus[:-1], taus[1:]):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        tp = torch.full_like(tt, t_prev)
        z = _randn(shape, generator, x.device) if eta > 0 else None
        eps = model(x, tt)
        if callback is not None:
            x0_hat = predict_x0_from_eps(x, tt, eps, schedule)
            callback(t, x, x0_hat.clamp(-1, 1) if clip_denoised else x0_hat)
        x = ddim_step(eps, x, tt, tp, schedule, eta, z, clip_denoised)
        if keep:
            trajectory[t_prev] = x.cpu()
    return (x, trajectory) if keep else x


# ----------------------------------------------------------------------------- classifier-free guidance
# Ho & Salimans 2022 (arXiv:2207.12598). One network ε_θ(x_t, t, c) learns the conditional and,
# with the label replaced by a "null" class ∅, the unconditional noise predictor. Convention of
# this course (lecture 8, eq. 8.6):
#     ε̃ = ε_θ(x_t, t, ∅) + w (ε_θ(x_t, t, c) − ε_θ(x_t, t, ∅)),
# so w = 0 is the unconditional model, w = 1 the conditional one and w > 1 guides. Ho & Salimans
# write ε̃ = (1 + w') ε_θ(x_t, t, c) − w' ε_θ(x_t, t, ∅): the same with w = 1 + w'.

def _check_labels(y, name: str = "y") -> None:
    if not torch.is_tensor(y) or y.ndim != 1 or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor of class labels (B,), got "
                         f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}"
                         f"{' of dtype ' + str(y.dtype) if torch.is_tensor(y) else ''}")


def _check_probability(p, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


@grading.reference
def drop_labels(y: torch.Tensor, p_uncond: float, null_class: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label of y (B,) by ``null_class`` independently with probability p_uncond.

    Drawn per sample (not once per batch), so every batch trains the conditional and the
    unconditional predictor side by side. Returns a new tensor; y is left as it was.
    """
    _check_labels(y)
    p_uncond = _check_probability(p_uncond, "p_uncond")
    if isinstance(null_class, bool) or not isinstance(null_class, int) or null_class < 0:
        raise ValueError(f"null_class must be a non-negative integer, got {null_class!r}")
    where = generator.device if generator is not None else y.device
    drop = torch.rand(y.shape, generator=generator, device=where).to(y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, null_class), y)


def _null_class(model) -> int:
    cfg = getattr(model, "config", None)
    if getattr(cfg, "num_classes", None) is None:
        raise ValueError("the model must be a class-conditional UNet (UNetConfig.num_classes set); "
                         "pass null_class explicitly for other models")
    return cfg.num_classes


@grading.reference
def conditional_training_loss(model, x0: torch.Tensor, y: torch.Tensor, schedule: NoiseSchedule,
                              p_uncond: float = 0.1, null_class: int | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """L_simple for ε_θ(x_t, t, c) with per-sample label dropout (Ho & Salimans, algorithm 1).

    x0 (B, C, H, W) in [−1, 1], y (B,) labels; each label becomes the null class with
    probability ``p_uncond``. ``null_class`` defaults to the UNet's ``config.num_classes``.
    """
    _check_labels(y)
    if len(y) != len(x0):
        raise ValueError(f"y must hold one label per image: x0 has {len(x0)}, y has {len(y)}")
    null_class = _null_class(model) if null_class is None else null_class
    y_in = drop_labels(y, p_uncond, null_class, generator)
    return training_loss(lambda xt, t: model(xt, t, y_in), x0, schedule, generator)


def _check_w(w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"w (the guidance weight) must be a finite number, got {w!r}")
    return float(w)


@grading.reference
def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """ε̃ = ε_uncond + w (ε_cond − ε_uncond) (eq. 8.6).

    Computed with ``torch.lerp``, which returns ε_uncond exactly at w = 0 and ε_cond exactly
    at w = 1 (no rounding), so the two special cases hold bit for bit.
    """
    w = _check_w(w)
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(f"eps_cond and eps_uncond must have the same shape, got "
                         f"{tuple(eps_cond.shape)} and {tuple(eps_uncond.shape)}")
    return torch.lerp(eps_uncond, eps_cond, w)


class Guided:
    """An ε-model (x_t, t) → ε̃ for the samplers: ``model`` guided towards labels y with weight w.

    y (B,) fixes one class per image of the batch being sampled. For w ∉ {0, 1} the conditional
    and the unconditional predictions come from one network call on a batch of 2B; w = 1 needs
    only the conditional call and w = 0 only the unconditional one.
    """

    def __init__(self, model, y: torch.Tensor, w: float, null_class: int | None = None):
        _check_labels(y)
        self.model, self.y, self.w = model, y, _check_w(w)
        self.null_class = _null_class(model) if null_class is None else null_class

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if len(xt) != len(self.y):
            raise ValueError(f"Guided was built for {len(self.y)} labels but got a batch of "
                             f"{len(xt)} images")
        y = self.y.to(xt.device)
        null = torch.full_like(y, self.null_class)
        if self.w == 1:
            return self.model(xt, t, y)
        if self.w == 0:
            return self.model(xt, t, null)
        both = self.model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([y, null]))
        eps_cond, eps_uncond = both.chunk(2)
        return guided_eps(eps_cond, eps_uncond, self.w)


@torch.no_grad()
@grading.reference
def guided_sample(model, y: torch.Tensor, w: float, schedule: NoiseSchedule, S: int | None = None,
                  generator: torch.Generator | None = None, batch_size: int = 500,
                  image_shape: tuple[int, ...] = (1, 28, 28), eta: float = 0.0) -> torch.Tensor:
    """Samples x_0 (N, *image_shape) in [−1, 1], one per label of y (N,), guided with weight w.

    DDIM with S steps if S is given (``eta`` as in ``ddim_step``: 0 deterministic, 1 fresh noise
    at each step), else DDPM ancestral sampling with all T steps (``eta`` must then be left at 0).
    Drawn in chunks of ``batch_size`` on the model's device; the generator makes it repeatable.
    """
    _check_labels(y)
    eta = _check_eta(eta)
    if S is None and eta != 0:
        raise ValueError(f"eta applies to DDIM (S given); DDPM (S = None) has its own noise, got eta={eta!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = next(model.parameters()).device
    y = y.to(device)
    chunks = []
    for i in range(0, len(y), batch_size):
        yb = y[i:i + batch_size]
        eps = Guided(model, yb, w)
        shape = (len(yb), *image_shape)
        if S is None:
            chunks.append(p_sample_loop(eps, shape, schedule, device=device, generator=generator))
        else:
            chunks.append(ddim_sample_loop(eps, shape, schedule, S=S, eta=eta, device=device,
                                           generator=generator))
    return torch.cat(chunks) if chunks else torch.empty(0, *image_shape, device=device)


# ----------------------------------------------------------------------------- checkpoints of a sampler

def save_model(path, model, schedule: NoiseSchedule, **meta) -> "Path":
    """Save a UNet (its config and weights) with its noise schedule, atomically, for sampling later.

    ``meta`` holds plain extra facts (epochs, data source, …). Load with ``load_model``.
    """
    from dataclasses import asdict
    from pathlib import Path

    from . import nets, train

    if not isinstance(model, nets.UNet):
        raise TypeError(f"model must be a helpers.nets.UNet, got {type(model).__name__}")
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
    state = {"kind": "dgm-unet-sampler", "config": config,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "betas": schedule.beta[1:].clone(), "meta": dict(meta)}
    return train.save_checkpoint(Path(path), state)


def load_model(path, device=None):
    """(model, schedule, meta) from a file written by ``save_model``; the model in eval mode."""
    from . import nets, train

    state = train.load_checkpoint(path)
    if not isinstance(state, dict) or state.get("kind") != "dgm-unet-sampler":
        raise ValueError(f"checkpoint {path} was not written by helpers.diffusion.save_model "
                         f"(it has no 'kind': 'dgm-unet-sampler' entry)")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()}
    model = nets.UNet(nets.UNetConfig(**config))
    model.load_state_dict(state["model"])
    return model.to(device or "cpu").eval(), NoiseSchedule.from_betas(state["betas"]), state["meta"]


def sample_grid(checkpoint, classes, w: float, out, n_per_class: int = 8, S: int | None = 50,
                seed: int = 0, device=None, batch_size: int = 500, eta: float = 0.0):
    """Load a class-conditional sampler, draw ``n_per_class`` digits per class, write a PNG grid.

    One row per class in ``classes`` (integers in 0..num_classes−1), guided with weight w,
    DDIM with S steps and noise level ``eta`` (None: DDPM with all T steps). The PNG is written
    atomically to ``out``.
    Returns (path, samples) with samples (len(classes) · n_per_class, 1, 28, 28) in [0, 1].
    """
    from pathlib import Path

    from matplotlib.figure import Figure
    from torchvision.utils import make_grid

    from . import train

    model, schedule, _ = load_model(checkpoint, device)
    num_classes = model.config.num_classes
    if num_classes is None:
        raise ValueError(f"checkpoint {checkpoint} holds an unconditional UNet; sample_grid needs "
                         f"a class-conditional one")
    classes = [classes] if isinstance(classes, int) and not isinstance(classes, bool) else list(classes)
    bad = [c for c in classes
           if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes]
    if not classes or bad:
        raise ValueError(f"classes must be a non-empty list of integers in 0..{num_classes - 1}, "
                         f"got {classes!r}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out must be a path ending in .png, got {str(out)!r}")

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    y = torch.tensor(classes, device=device).repeat_interleave(n_per_class)
    x = ((guided_sample(model, y, w, schedule, S=S, generator=gen, batch_size=batch_size, eta=eta)
          + 1) / 2).clamp(0, 1).cpu()

    grid = make_grid(x, nrow=n_per_class, padding=2, pad_value=1.0)[0].numpy()
    fig = Figure(figsize=(0.5 * n_per_class + 0.6, 0.5 * len(classes) + 0.4))
    ax = fig.add_axes((0.08, 0.0, 0.92, 0.92))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([30 * i + 15 for i in range(len(classes))], [str(c) for c in classes])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(f"w = {w:g}, " + (f"DDIM S = {S}" + (f", η = {eta:g}" if eta else "") if S
                                    else f"DDPM T = {schedule.T}"),
                 fontsize=9)
    return train.atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100)), x
