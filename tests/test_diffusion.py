import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from helpers import diffusion as dif


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# ----------------------------------------------------------------------------- schedules

def test_linear_schedule_values():
    s = dif.linear_schedule(1000)
    assert s.T == 1000 and s.beta.shape == s.alpha.shape == s.alpha_bar.shape == (1001,)
    assert s.beta[0] == 0 and s.alpha_bar[0] == 1  # index 0 is clean data
    assert s.beta[1].item() == pytest.approx(1e-4) and s.beta[1000].item() == pytest.approx(0.02)
    assert torch.allclose(s.alpha, 1 - s.beta)
    assert torch.allclose(s.alpha_bar[1:], torch.cumprod(1 - s.beta[1:], 0))
    assert s.alpha_bar[1000] < 1e-4  # ends at (almost) pure noise: ᾱ_T ≈ e^{-10}
    short = dif.linear_schedule(100)  # ends scaled by 1000 / T
    assert short.beta[1].item() == pytest.approx(1e-3) and short.beta[100].item() == pytest.approx(0.2)
    assert short.alpha_bar[100] < 1e-4


def test_cosine_schedule_values():
    T, s_ = 1000, 0.008
    s = dif.cosine_schedule(T)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 500, 900):
        assert s.alpha_bar[t].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert s.beta[1:].max() <= 0.999
    assert s.alpha_bar[T] < 1e-6
    # the cosine schedule destroys information more slowly in the middle than the linear one
    assert s.alpha_bar[500] > dif.linear_schedule(T).alpha_bar[500]


@pytest.mark.parametrize("name, T", [("linear", 50), ("linear", 1000), ("cosine", 1),
                                     ("cosine", 50), ("cosine", 1000)])
def test_alpha_bar_is_strictly_decreasing_and_log_snr_too(name, T):
    s = dif.make_schedule(name, T)
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert ((s.beta[1:] > 0) & (s.beta[1:] < 1)).all()
    snr = s.log_snr()
    assert snr.shape == (T,) and (snr[1:] < snr[:-1]).all()


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_schedules_reject_bad_T(T):
    for make in (dif.linear_schedule, dif.cosine_schedule):
        with pytest.raises(ValueError, match=r"T \(the number of diffusion steps\) must be an "
                                             r"integer ≥ 1, got " + str(T)):
            make(T)


@pytest.mark.parametrize("betas, bad", [([0.1, 1.2, 0.3], "β_2 = 1.2"), ([0.0, 0.1], "β_1 = 0"),
                                        ([0.1, -0.5], "β_2 = -0.5")])
def test_schedules_reject_betas_outside_0_1(betas, bad):
    with pytest.raises(ValueError, match=r"betas must lie in the open interval \(0, 1\), got " + bad):
        dif.NoiseSchedule.from_betas(betas)


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match=r"beta_T must lie in \(0, 1\), got 2 .*T=10"):
        dif.linear_schedule(10)  # 0.02 · 1000 / 10 = 2
    with pytest.raises(ValueError, match=r"beta_1 must lie in \(0, 1\), got 0"):
        dif.linear_schedule(100, beta_1=0.0)
    with pytest.raises(ValueError, match=r"name must be one of \('linear', 'cosine'\), got 'quad'"):
        dif.make_schedule("quad", 10)
    with pytest.raises(ValueError, match=r"betas must be 1-D .* got shape \(2, 2\)"):
        dif.NoiseSchedule.from_betas(torch.full((2, 2), 0.1))
    with pytest.raises(ValueError, match=r"max_beta must lie in \(0, 1\), got 1.5"):
        dif.cosine_schedule(10, max_beta=1.5)


def test_schedule_defaults_are_ho_et_al_T_1000():
    """Called without T, both schedules have Ho et al.'s T = 1000 steps (β from 1e-4 to 0.02)."""
    lin, cos = dif.linear_schedule(), dif.cosine_schedule()
    assert lin.T == cos.T == 1000
    assert lin.beta[1].item() == pytest.approx(1e-4) and lin.beta[-1].item() == pytest.approx(0.02)


def test_schedule_is_frozen_and_from_betas_checks_length_and_range():
    """A schedule whose β could be reassigned would disagree with its α and ᾱ; an empty β or a
    β_t = 1 (ᾱ = 0 from there on, the posterior divides by zero) must be refused."""
    s = dif.linear_schedule(100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.beta = 2 * s.beta
    with pytest.raises(ValueError, match=r"T \(the number of diffusion steps\) must be an "
                                         r"integer ≥ 1, got 0"):
        dif.NoiseSchedule.from_betas([])
    with pytest.raises(ValueError, match=r"open interval \(0, 1\), got β_2 = 1 "):
        dif.NoiseSchedule.from_betas([0.5, 1.0])


def test_log_snr_is_the_log_of_signal_over_noise():
    """log SNR(t) = log(ᾱ_t / (1 − ᾱ_t)), written out (kills a sign slip in log1p(−ᾱ_t))."""
    for s in (dif.linear_schedule(100), dif.cosine_schedule(100)):
        ab = s.alpha_bar[1:]
        assert torch.allclose(s.log_snr(), torch.log(ab / (1 - ab)), rtol=1e-9, atol=1e-9)


def test_schedule_bounds_at_their_edges():
    """The scaled linear β_T reaches 1 at T = 20 and passes it at T = 15: both refused by
    linear_schedule's own message (not a later one about betas); s = 0 is a valid cosine offset,
    max_beta = 0 or 1 are not."""
    with pytest.raises(ValueError, match=r"beta_T must lie in \(0, 1\), got 1 \(the default "
                                         r"scaled by 1000/T for T=20"):
        dif.linear_schedule(20)
    with pytest.raises(ValueError, match=r"beta_T must lie in \(0, 1\), got 1.333 .*T=15"):
        dif.linear_schedule(15)
    T = 10
    s = dif.cosine_schedule(T, s=0.0)
    f = [math.cos(t / T * math.pi / 2) ** 2 for t in range(T)]   # ᾱ_t = f(t) / f(0), f(0) = 1
    assert torch.allclose(s.alpha_bar[:T], torch.tensor(f, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match=r"s \(the offset of the cosine schedule\) must be ≥ 0, "
                                         r"got -0.1"):
        dif.cosine_schedule(T, s=-0.1)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"max_beta must lie in \(0, 1\), got {bad}"):
            dif.cosine_schedule(T, max_beta=bad)


def test_extract_broadcasts_over_images_by_default():
    s = dif.linear_schedule(50)
    t = torch.tensor([1, 7, 50])
    c = dif.extract(s.alpha_bar, t)
    assert c.shape == (3, 1, 1, 1) and c.dtype == torch.float32
    assert torch.equal(c.flatten(), s.alpha_bar[t].float())


# ----------------------------------------------------------------------------- forward process

def test_q_sample_matches_iterated_chain():
    """Closed form q(x_t | x_0) vs T single steps q(x_t | x_{t−1}), by Monte Carlo."""
    s = dif.cosine_schedule(40)
    torch.manual_seed(0)
    N = 10_000
    x0 = torch.tensor([-1.0, -0.3, 0.4, 1.0]).reshape(1, 1, 2, 2).expand(N, 1, 2, 2)
    x = x0.clone()
    for t in range(1, s.T + 1):
        x = dif.q_step(x, t, s)
        if t in (1, 10, 25, 40):
            direct = dif.q_sample(x0, t, s)
            ab = s.alpha_bar[t].item()
            for name, xs in (("iterated", x), ("closed form", direct)):
                mean, var = xs.mean(0), xs.var(0)
                se_mean = math.sqrt((1 - ab) / N)
                assert torch.allclose(mean, math.sqrt(ab) * x0[0], atol=5 * se_mean), \
                    f"{name} mean at t={t}: {mean.flatten()} vs {math.sqrt(ab) * x0[0].flatten()}"
                assert torch.allclose(var, torch.full_like(var, 1 - ab),
                                      rtol=5 * math.sqrt(2 / N), atol=1e-4), \
                    f"{name} variance at t={t}: {var.flatten()} vs {1 - ab}"


def test_q_sample_closed_form_with_given_noise():
    s = dif.linear_schedule(100)
    x0, eps = torch.rand(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 7, 100])
    xt = dif.q_sample(x0, t, s, eps)
    assert torch.equal(xt[0], x0[0])  # t = 0 is the data itself
    ab = s.alpha_bar[7].item()
    assert torch.allclose(xt[1], math.sqrt(ab) * x0[1] + math.sqrt(1 - ab) * eps[1], atol=1e-6)
    # the noise that q_sample used is recovered exactly from x_t and x_0, and x_0 from the noise
    assert torch.allclose(dif.eps_from_x0(xt[1:], t[1:], x0[1:], s), eps[1:], atol=1e-4)
    assert torch.allclose(dif.predict_x0_from_eps(xt[1:], t[1:], eps[1:], s), x0[1:], atol=1e-4)


def test_q_sample_argument_errors():
    s = dif.linear_schedule(100)
    x0 = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"t must lie in 0..100 \(T = 100\), got values in \[3, 101\]"):
        dif.q_sample(x0, torch.tensor([3, 101]), s)
    with pytest.raises(ValueError, match=r"t must be an integer tensor of shape \(2,\) .* got \(3,\)"):
        dif.q_sample(x0, torch.tensor([1, 2, 3]), s)
    with pytest.raises(ValueError, match=r"t must be an integer tensor .* dtype torch.float32"):
        dif.q_sample(x0, torch.tensor([1.0, 2.0]), s)
    with pytest.raises(ValueError, match=r"noise must have the shape of x0 \(2, 1, 4, 4\), got \(2, 1, 4, 3\)"):
        dif.q_sample(x0, 5, s, torch.zeros(2, 1, 4, 3))
    with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor"):
        dif.q_sample(torch.zeros(2, 1, 4, 4, dtype=torch.long), 5, s)
    with pytest.raises(ValueError, match=r"t must lie in 1..100"):
        dif.q_step(x0, 0, s)


def test_q_step_with_given_noise_is_the_forward_step():
    """x_t = √α_t x_{t−1} + √β_t ε for the ε given: with random noise a sign slip (− √β_t ε) has
    the same distribution, with the caller's ε it does not."""
    s = dif.linear_schedule(100)
    g = torch.Generator().manual_seed(2)
    x_prev, eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).unbind(0)
    a, b = s.alpha[7].item(), s.beta[7].item()
    assert torch.allclose(dif.q_step(x_prev, 7, s, eps), math.sqrt(a) * x_prev + math.sqrt(b) * eps,
                          atol=1e-7)
    with pytest.raises(ValueError, match=r"x_prev must be a floating-point tensor"):
        dif.q_step(torch.zeros(3, 1, 2, 2, dtype=torch.long), 3, s)


def test_forward_process_and_samplers_take_points_B_D():
    """Data need not be images: (B, D) points (the 2-D toy sets) diffuse and sample too; a
    tensor without a batch dimension or a shape (B,) is refused."""
    s = dif.linear_schedule(50)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 5, 2, generator=g).unbind(0)
    ab = s.alpha_bar[10].item()
    assert torch.allclose(dif.q_sample(x0, 10, s, eps), math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps,
                          atol=1e-6)
    model = lambda x, t: 0.1 * x  # noqa: E731
    assert dif.p_sample_loop(model, (5, 2), s).shape == (5, 2)
    assert dif.ddim_sample_loop(model, (5, 2), s, S=5).shape == (5, 2)
    with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor \(B, …\)"):
        dif.q_sample(torch.zeros(5), 10, s)
    for sampler in (dif.p_sample_loop, lambda *a: dif.ddim_sample_loop(*a, S=5)):
        for shape in ((5,), (0, 1)):
            with pytest.raises(ValueError, match=r"shape must be a tuple of positive integers"):
                sampler(model, shape, s)


# ----------------------------------------------------------------------------- posterior

def _posterior_by_conditioning(s: dif.NoiseSchedule, t: int, x0: np.ndarray, xt: np.ndarray):
    """q(x_{t−1} | x_t, x_0) from the joint Gaussian of (x_{t−1}, x_t) given x_0, per pixel.

    x_{t−1} = √ᾱ_{t−1} x_0 + √(1−ᾱ_{t−1}) ε₁ and x_t = √α_t x_{t−1} + √β_t ε₂, so the joint has
    mean (√ᾱ_{t−1} x_0, √ᾱ_t x_0) and covariance [[v, √α_t v], [√α_t v, α_t v + β_t]] with
    v = 1 − ᾱ_{t−1}; then condition on x_t with the Schur complement.
    """
    ab_prev, a, b = (s.alpha_bar[t - 1].item(), s.alpha[t].item(), s.beta[t].item())
    v = 1 - ab_prev
    cov = np.array([[v, math.sqrt(a) * v], [math.sqrt(a) * v, a * v + b]])
    m1, m2 = math.sqrt(ab_prev) * x0, math.sqrt(a * ab_prev) * x0
    mean = m1 + cov[0, 1] / cov[1, 1] * (xt - m2)
    var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    assert cov[1, 1] == pytest.approx(1 - s.alpha_bar[t].item())  # the marginal of x_t
    return mean, var


@pytest.mark.parametrize("name", dif.SCHEDULES)
def test_posterior_matches_gaussian_conditioning(name):
    s = dif.make_schedule(name, 200)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, size=(1, 1, 3, 3))
    xt = rng.normal(size=(1, 1, 3, 3))
    for t in (1, 2, 17, 100, 199, 200):
        mean, var = dif.q_posterior_mean_variance(torch.tensor(x0, dtype=torch.float64),
                                                  torch.tensor(xt, dtype=torch.float64), t, s)
        ref_mean, ref_var = _posterior_by_conditioning(s, t, x0, xt)
        assert np.allclose(mean.numpy(), ref_mean, atol=1e-6), f"posterior mean at t={t}"
        assert var.item() == pytest.approx(ref_var, rel=1e-6, abs=1e-12), f"posterior variance at t={t}"


def test_posterior_at_t1_returns_x0():
    s = dif.linear_schedule(100)
    x0, xt = torch.rand(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    mean, var = dif.q_posterior_mean_variance(x0, xt, 1, s)
    assert torch.allclose(mean, x0, atol=1e-6) and (var == 0).all()
    with pytest.raises(ValueError, match=r"xt must have the shape of x0"):
        dif.q_posterior_mean_variance(x0, xt[:1], 1, s)


def test_posterior_checks_x0_and_t_from_1():
    """t = 0 has no posterior q(x_{−1} | x_0, x_0): its padded coefficients (zeros) would give a
    silent mean 0 and variance 0."""
    s = dif.linear_schedule(100)
    x0 = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match=r"t must lie in 1..100 \(T = 100\), got values in \[0, 4\]"):
        dif.q_posterior_mean_variance(x0, x0, torch.tensor([0, 4]), s)
    with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor"):
        dif.q_posterior_mean_variance(x0.long(), x0.long(), 3, s)


# ----------------------------------------------------------------------------- training loss

def _gaussian_oracle(s: dif.NoiseSchedule, mu: float, sd: float):
    """The exact E[ε | x_t] when every pixel of the data is N(mu, sd²) (a known optimum)."""
    def eps_model(x, t):
        ab = dif.extract(s.alpha_bar, t, x.ndim)
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * sd**2 + 1 - ab)
    return eps_model


def test_training_loss_is_zero_for_the_oracle_of_a_point_mass():
    s = dif.cosine_schedule(100)
    x0 = torch.full((64, 1, 4, 4), 0.3)
    loss = dif.training_loss(_gaussian_oracle(s, 0.3, 0.0), x0, s)
    assert loss.ndim == 0 and loss.item() < 1e-8
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    model = lambda x, t: 0.5 * x  # noqa: E731
    assert dif.training_loss(model, x0, s, g1).item() == dif.training_loss(model, x0, s, g2).item()
    assert dif.training_loss(lambda x, t: torch.zeros_like(x), x0, s).item() == pytest.approx(1, abs=0.15)


def test_training_loss_draws_every_step_from_1_to_T():
    """t ~ Uniform{1..T}: kills t drawn from 0..T (the clean image, ᾱ_0 = 1) or from 1..T−1."""
    s = dif.linear_schedule(50)
    seen = []

    def spy(xt, t):
        seen.append(t.clone())
        return torch.zeros_like(xt)

    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        dif.training_loss(spy, torch.zeros(500, 1, 2, 2), s, g)
    t = torch.cat(seen)
    assert t.dtype == torch.int64 and t.min().item() == 1 and t.max().item() == s.T
    counts = torch.bincount(t, minlength=s.T + 1)[1:].double()   # 5,000 draws, 100 per step
    assert counts.min() > 60 and counts.max() < 145             # uniform within ±4 sd


def test_training_loss_refuses_a_batch_that_is_not_a_tensor():
    """A NumPy batch or a list of images: the message about x0, not an AttributeError."""
    for x0 in (np.zeros((4, 1, 2, 2), dtype=np.float32), np.zeros((4, 1, 2, 2)).tolist()):
        with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor"):
            dif.training_loss(lambda x, t: x, x0, dif.linear_schedule(50))


# ----------------------------------------------------------------------------- samplers

def _eps_model(x, t):
    """A made-up ε-predictor that depends on x_t and t (not an optimum of anything)."""
    return 0.4 * torch.tanh(x) + 0.002 * t.to(x.dtype)[:, None, None, None]


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_p_mean_variance_and_p_sample_against_ho_et_al(variance):
    """Mean (Ho et al. eq. 11) and both variances σ_t² = β̃_t or β_t, then the step itself.

    Kills: β̃_t and β_t swapped, σ_t² taken at t − 1, a mean without the 1/√α_t, noise added at
    t = 1, and noise not scaled by σ_t.
    """
    s = dif.linear_schedule(100)
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 2, 40, 100])
    mean, var, x0_hat = dif.p_mean_variance(_eps_model, xt, t, s, clip_denoised=False,
                                            variance=variance)
    beta, alpha, ab = (s.beta[t].view(-1, 1, 1, 1), s.alpha[t].view(-1, 1, 1, 1),
                       s.alpha_bar[t].view(-1, 1, 1, 1))
    ab_prev = s.alpha_bar[t - 1].view(-1, 1, 1, 1)
    eps = _eps_model(xt, t)
    assert torch.allclose(mean, (xt - beta / (1 - ab).sqrt() * eps) / alpha.sqrt(), atol=1e-6)
    assert torch.allclose(x0_hat, (xt - (1 - ab).sqrt() * eps) / ab.sqrt(), atol=1e-6)
    want_var = (1 - ab_prev) / (1 - ab) * beta if variance == "posterior" else beta
    assert var.shape == (4, 1, 1, 1) and torch.allclose(var.double(), want_var, rtol=1e-5)
    # the step: x_{t−1} = mean + σ_t z with the generator's z, and no noise at t = 1
    x_prev = dif.p_sample(_eps_model, xt, t, s, generator=torch.Generator().manual_seed(3),
                          clip_denoised=False, variance=variance)
    z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x_prev[0], mean[0])
    assert torch.allclose(x_prev[1:], mean[1:] + want_var[1:].sqrt() * z[1:], atol=1e-6)


def test_ddim_step_clips_x0_to_minus1_1_and_recomputes_eps():
    """η = 0 with x̂_0 clipping, against the formula written out here (Song et al. 2021, eq. 12).

    x̂_0 = clip((x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, −1, 1), ε̂' = (x_t − √ᾱ_t x̂_0)/√(1−ᾱ_t),
    x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}) ε̂'. Kills clipping to [0, 1], and an ε̂ that is not
    recomputed after clipping.
    """
    s = dif.cosine_schedule(100)
    t, t_prev = torch.tensor([30, 80, 100]), torch.tensor([10, 40, 0])
    g = torch.Generator().manual_seed(1)
    xt = 1.5 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    ab, ab_prev = s.alpha_bar[t].view(-1, 1, 1, 1), s.alpha_bar[t_prev].view(-1, 1, 1, 1)
    raw = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert (raw > 1).any() and (raw < -1).any() and ((raw > 0) & (raw < 1)).any()  # all cases
    x0 = raw.clamp(-1, 1)
    eps_clipped = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
    want = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps_clipped
    got = dif.ddim_step(eps, xt, t, t_prev, s, eta=0.0, clip_denoised=True)
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert torch.allclose(got[2].double(), x0[2], atol=1e-5)  # a jump to t' = 0 returns x̂_0



def test_samplers_clip_x0_to_minus1_1_by_default():
    """Images live in [−1, 1]: without a clip_denoised argument every sampler clips x̂_0 (a
    default of False lets early, wild estimates of x̂_0 through)."""
    s = dif.linear_schedule(100)
    g = torch.Generator().manual_seed(4)
    xt = 2 * torch.randn(4, 1, 3, 3, generator=g)
    t = torch.tensor([1, 30, 70, 100])
    raw = dif.predict_x0_from_eps(xt, t, _eps_model(xt, t), s)
    assert raw.abs().max() > 1.5                                   # clipping has work to do
    clipped = raw.clamp(-1, 1)
    _, _, x0_hat = dif.p_mean_variance(_eps_model, xt, t, s)
    assert torch.allclose(x0_hat, clipped)
    # at t = 1 the step returns its (noise-free) mean, which is x̂_0 itself: ᾱ_0 = 1
    assert torch.allclose(dif.p_sample(_eps_model, xt[:1], 1, s), clipped[:1], atol=1e-6)
    # a DDIM jump to t' = 0 returns x̂_0
    assert torch.allclose(dif.ddim_step(_eps_model(xt, t), xt, t, 0 * t, s), clipped, atol=1e-6)
    x_T = 3 * torch.randn(4, 1, 3, 3, generator=g)
    wild = lambda x, t: -x  # noqa: E731  (x̂_0 = (1 + √(1−ᾱ_t)) x_t / √ᾱ_t: far outside)
    for sampler in (dif.p_sample_loop, lambda *a, **k: dif.ddim_sample_loop(*a, S=5, **k)):
        out = sampler(wild, x_T.shape, s, x_T=x_T, generator=torch.Generator().manual_seed(0))
        again = sampler(wild, x_T.shape, s, x_T=x_T, generator=torch.Generator().manual_seed(0),
                        clip_denoised=True)
        assert torch.equal(out, again) and out.abs().max() <= 1 + 1e-5


def test_ddim_step_defaults_to_eta_0():
    """η = 0 by default: DDIM's deterministic update (Song et al. 2021, eq. 12 with σ_t = 0)."""
    s = dif.cosine_schedule(100)
    g = torch.Generator().manual_seed(5)
    xt, eps = torch.randn(2, 3, 1, 4, 4, generator=g, dtype=torch.float64).unbind(0)
    t, t_prev = torch.tensor([50, 90, 100]), torch.tensor([20, 60, 70])
    want = dif.ddim_step(eps, xt, t, t_prev, s, eta=0.0)
    assert torch.equal(dif.ddim_step(eps, xt, t, t_prev, s), want)
    ab, ab_prev = s.alpha_bar[t].view(-1, 1, 1, 1), s.alpha_bar[t_prev].view(-1, 1, 1, 1)
    x0 = ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    eps_c = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
    assert torch.allclose(want, ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps_c, atol=1e-6)


def test_ddim_eta0_draws_no_random_numbers_beyond_x_T():
    """η = 0 is deterministic, so it must not consume random numbers: not torch's global stream
    (a seeded notebook would draw other numbers afterwards for having sampled), and of the
    caller's generator only x_T (its next use, e.g. guided_sample's next chunk, would start
    elsewhere)."""
    s = dif.cosine_schedule(50)
    xt, eps = torch.randn(2, 2, 1, 4, 4).unbind(0)
    t = torch.tensor([40, 30])
    before = torch.get_rng_state()
    dif.ddim_step(eps, xt, t, t - 10, s, eta=0.0)
    assert torch.equal(torch.get_rng_state(), before)
    g, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    dif.ddim_sample_loop(_eps_model, (2, 1, 4, 4), s, S=5, generator=g)
    torch.randn((2, 1, 4, 4), generator=ref)                    # what x_T takes
    assert torch.equal(g.get_state(), ref.get_state())


def test_ddim_with_eta_above_0_draws_its_noise_from_the_generator():
    """0 < η: the noise of every step comes from the caller's generator, so a seed repeats the
    samples (noise from torch's global stream would not)."""
    s = dif.cosine_schedule(50)
    runs = [dif.ddim_sample_loop(_eps_model, (3, 1, 4, 4), s, S=5, eta=eta,
                                 generator=torch.Generator().manual_seed(seed))
            for eta, seed in ((0.5, 1), (0.5, 1), (0.5, 2), (0.0, 1))]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2]) and not torch.allclose(runs[0], runs[3])


def test_sampler_callbacks_see_every_step_and_its_clipped_x0():
    """callback(t, x_t, x̂_0) before each step: DDPM at t = T..1, DDIM at τ_S..τ_1, with the
    x̂_0 of that step clipped to [−1, 1] (the progress figures of the notebooks draw it)."""
    s = dif.linear_schedule(40)
    wide = lambda x, t: _eps_model(x, t) - 0.5 * x  # noqa: E731  (x̂_0 spread over ±3)
    for name, run, steps in (
            ("DDPM", lambda cb: dif.p_sample_loop(wide, (6, 1, 3, 3), s, callback=cb,
                                                  generator=torch.Generator().manual_seed(0)),
             list(range(40, 0, -1))),
            ("DDIM", lambda cb: dif.ddim_sample_loop(wide, (6, 1, 3, 3), s, S=8, callback=cb,
                                                     generator=torch.Generator().manual_seed(0)),
             dif.ddim_timesteps(40, 8))):
        seen = []
        run(lambda t, x, x0: seen.append((t, x.clone(), x0.clone())))
        assert [c[0] for c in seen] == steps, name
        t, x, x0 = seen[len(seen) // 2]
        raw = dif.predict_x0_from_eps(x, torch.full((6,), t), wide(x, torch.full((6,), t)), s)
        assert ((raw > 1) & (raw < 2)).any() and ((raw < -1) & (raw > -2)).any(), name
        assert torch.allclose(x0, raw.clamp(-1, 1), atol=1e-6), name


def test_p_sample_refuses_integer_images():
    with pytest.raises(ValueError, match=r"xt must be a floating-point tensor"):
        dif.p_sample(lambda x, t: x, torch.zeros(2, 1, 4, 4, dtype=torch.long), 3,
                     dif.linear_schedule(50))

def test_ddim_timesteps():
    assert dif.ddim_timesteps(1000, 4) == [1000, 750, 500, 250]
    assert dif.ddim_timesteps(10, 10) == list(range(10, 0, -1))
    assert dif.ddim_timesteps(10, 1) == [10]                      # one jump from T to 0
    with pytest.raises(ValueError, match=r"T \(the number of diffusion steps\) must be an "
                                         r"integer ≥ 1, got 10.0"):
        dif.ddim_timesteps(10.0, 2)
    for S in (0, 11, 2.0):
        with pytest.raises(ValueError, match=r"S \(the number of DDIM steps\) must be an integer "
                                             r"in 1..T = 1..10, got " + str(S)):
            dif.ddim_timesteps(10, S)


def test_samplers_shapes_and_trajectories():
    s = dif.linear_schedule(60)
    model = lambda x, t: 0.1 * x  # noqa: E731
    x, traj = dif.p_sample_loop(model, (3, 1, 8, 8), s, keep=4)
    assert x.shape == (3, 1, 8, 8) and sorted(traj) == [0, 20, 40, 60]
    assert torch.equal(traj[0], x)
    x, traj = dif.ddim_sample_loop(model, (3, 1, 8, 8), s, S=6, keep=True)
    assert x.shape == (3, 1, 8, 8) and sorted(traj) == [0, 10, 20, 30, 40, 50, 60]
    assert dif.p_sample(model, x, 5, s).shape == (3, 1, 8, 8)


def test_ddim_eta0_is_deterministic_and_ddpm_is_not():
    s = dif.cosine_schedule(50)
    model = lambda x, t: 0.2 * torch.tanh(x) + 0.01 * t[:, None, None, None]  # noqa: E731
    x_T = torch.randn(4, 1, 6, 6)
    a = dif.ddim_sample_loop(model, x_T.shape, s, S=10, x_T=x_T,
                             generator=torch.Generator().manual_seed(1))
    b = dif.ddim_sample_loop(model, x_T.shape, s, S=10, x_T=x_T,
                             generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)  # η = 0: the output is a function of x_T alone
    c = dif.p_sample_loop(model, x_T.shape, s, x_T=x_T, generator=torch.Generator().manual_seed(1))
    d = dif.p_sample_loop(model, x_T.shape, s, x_T=x_T, generator=torch.Generator().manual_seed(1))
    e = dif.p_sample_loop(model, x_T.shape, s, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(c, d) and not torch.equal(c, e)


def test_ddim_step_with_eta1_is_the_ancestral_step():
    """η = 1, t' = t − 1: x_{t−1} = μ̃_t(x_t, x̂_0) + √β̃_t z (Song et al. 2021, §4.1)."""
    s = dif.linear_schedule(100)
    xt, eps, z = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([2, 50, 100])
    got = dif.ddim_step(eps, xt, t, t - 1, s, eta=1.0, noise=z, clip_denoised=False)
    x0_hat = dif.predict_x0_from_eps(xt, t, eps, s)
    mean, var = dif.q_posterior_mean_variance(x0_hat, xt, t, s)  # of x_{t−1}
    assert torch.allclose(got, mean + var.sqrt() * z, atol=1e-4)


def test_samplers_reproduce_a_gaussian_data_distribution():
    """With the exact ε for data N(0.3, 0.5²), both samplers must return that distribution.

    Up to their discretisation error: DDPM with σ_t² = β̃_t and DDIM with S steps both
    under-disperse slightly (about 2.5 % in the standard deviation here).
    """
    s = dif.linear_schedule(200)
    oracle = _gaussian_oracle(s, 0.3, 0.5)
    gen = torch.Generator().manual_seed(0)
    shape = (1000, 1, 2, 2)
    for name, x in (
            ("DDPM", dif.p_sample_loop(oracle, shape, s, generator=gen, clip_denoised=False)),
            ("DDIM", dif.ddim_sample_loop(oracle, shape, s, S=100, generator=gen,
                                          clip_denoised=False))):
        assert abs(x.mean().item() - 0.3) < 0.03, f"{name}: mean {x.mean().item():.3f}, expected 0.3"
        assert abs(x.std().item() - 0.5) < 0.04, f"{name}: std {x.std().item():.3f}, expected 0.5"


def test_sampler_argument_errors():
    s = dif.linear_schedule(50)
    model = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match=r"shape must be a tuple of positive integers \(B, C, H, W\), got \(0, 1\)"):
        dif.p_sample_loop(model, (0, 1), s)
    with pytest.raises(ValueError, match="variance must be 'posterior' or 'beta', got 'learned'"):
        dif.p_sample(model, torch.zeros(2, 1, 4, 4), 3, s, variance="learned")
    with pytest.raises(ValueError, match=r"t must lie in 1..50"):
        dif.p_sample(model, torch.zeros(2, 1, 4, 4), 51, s)
    calls = []
    counting = lambda x, t: calls.append(t) or x  # noqa: E731
    for bad in (-0.5, float("nan"), float("inf"), True, "1"):   # refused before any network call
        with pytest.raises(ValueError, match=rf"eta \(DDIM's noise level\) must be a finite number ≥ 0, got {re.escape(repr(bad))}"):
            dif.ddim_sample_loop(counting, (2, 1, 4, 4), s, S=5, eta=bad)
        assert not calls, f"eta={bad!r}: the network was called before eta was refused"
        with pytest.raises(ValueError, match=r"eta \(DDIM's noise level\) must be a finite number ≥ 0"):
            dif.ddim_step(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.tensor([5, 5]),
                          torch.tensor([4, 4]), s, eta=bad)
    with pytest.raises(ValueError, match=r"S \(the number of DDIM steps\) must be an integer in 1..T = 1..50, got 51"):
        dif.ddim_sample_loop(model, (2, 1, 4, 4), s, S=51)


def test_ema_follows_the_weights_with_warmup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = dif.ema_of(model, opt, decay=0.9)
    expected = model.weight.detach().clone()
    for n in range(6):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().mean().backward()
        opt.step()
        w = model.weight.detach()
        # the first update copies; then d_n = min(0.9, (1 + n) / (10 + n))
        expected = w.clone() if n == 0 else (lambda d: d * expected + (1 - d) * w)(min(0.9, (1 + n) / (10 + n)))
        assert torch.allclose(ema.module.weight, expected, atol=1e-6), f"after step {n + 1}"
    assert not torch.equal(ema.module.weight, model.weight)
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\), got 1"):
        dif.ema_of(model, opt, decay=1)


def test_ema_warmup_sets_the_decay_until_update_8991_for_0_999():
    """07's text: with warm-up, decays 0.999 and 0.9995 give the same weights until d_n = (1 + n) /
    (10 + n) reaches 0.999 (n = 8,990 averaging steps after the first update, which copies), so a
    3,250-update run cannot tell them apart; 0.995 is reached after 1,791 updates."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    emas = {d: dif.ema_of(model, opt, decay=d) for d in (0.995, 0.999, 0.9995)}
    x = torch.randn(9000, 4, 1)
    for step in range(1, 8993):
        opt.zero_grad()
        model(x[step]).square().mean().backward()
        opt.step()
        if step in (1791, 3250, 8991):
            assert torch.equal(emas[0.999].module.weight, emas[0.9995].module.weight), f"update {step}"
        if step == 1790:
            assert torch.equal(emas[0.995].module.weight, emas[0.999].module.weight)
        if step == 1792:
            assert not torch.equal(emas[0.995].module.weight, emas[0.999].module.weight)
    assert not torch.equal(emas[0.999].module.weight, emas[0.9995].module.weight), "update 8,992"


def test_ema_decay_at_07s_last_update_is_about_0_9989():
    """07's text: its 8,000-update run ends with the warm-up's d_n ≈ 0.9989 (the update copies
    first, so the last update averages with n = 7,999: 8,000 / 8,009), an average over roughly the
    last 1 / (1 − d_n) ≈ 890 updates. Measured from the average itself: d = (e1 − θ) / (e0 − θ)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ema = dif.ema_of(model, opt, decay=0.999)
    x = torch.randn(8000, 4, 1, dtype=torch.float64)
    for step in range(8000):
        if step == 7999:
            e0 = ema.module.weight.item()
        opt.zero_grad()
        (model(x[step]) - 3.0).square().mean().backward()
        opt.step()
    theta, e1 = model.weight.item(), ema.module.weight.item()
    d = (e1 - theta) / (e0 - theta)
    assert abs(d - 8000 / 8009) < 1e-9, d
    assert round(d, 4) == 0.9989 and 880 < 1 / (1 - d) < 900


def test_ema_default_decay_is_0_999_and_decay_0_is_refused():
    """Without warm-up the average is d θ_EMA + (1 − d) θ with the documented default d = 0.999
    (a default outside (0, 1) would make ema_of(model, opt) itself fail)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = dif.ema_of(model, opt, warmup=False)
    seen = []
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 2)).square().mean().backward()
        opt.step()
        seen.append(model.weight.detach().clone())
    assert torch.allclose(ema.module.weight, 0.999 * seen[0] + 0.001 * seen[1], atol=1e-7)
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\), got 0"):
        dif.ema_of(model, opt, decay=0)
