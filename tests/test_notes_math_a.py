"""Numerical checks of the labelled equations in lectures 01-04.

Every test names, in its docstring, the equation(s) of the notes it checks, and compares the
formula with an independent route: a library implementation (scipy, torch.distributions), a
numerical optimiser, a direct computation from definitions, or Monte Carlo. Monte-Carlo
tolerances are Z = 5 standard errors (SE) of the estimate, computed from the same samples, so a
correct formula fails with negligible probability and a wrong one is far outside the band (the
same Z as tests/test_notes_math_b.py and the rule stated in lecture 2).
Exact comparisons use tolerances at the level of float64 round-off. All randomness is seeded.

The models used throughout:

* a 1-layer linear-Gaussian latent-variable model, z ~ N(0, I_d), x | z ~ N(W z + b, s2 I_D),
  whose marginal p(x) and posterior p(z | x) are Gaussian and known in closed form;
* a 2-layer linear-Gaussian chain z2 -> z1 -> x (lecture 4);
* a 1-D diffusion with T = 4 steps and a linear-Gaussian reverse model (lecture 4).
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, linalg, optimize, stats

F64 = torch.float64
LOG2PI = math.log(2.0 * math.pi)
Z = 5.0  # number of standard errors allowed in Monte Carlo comparisons


# ----------------------------------------------------------------------------------------------
# Small shared helpers (not tests)
# ----------------------------------------------------------------------------------------------
def _mvn_logpdf(x, mean, cov):
    """log N(x; mean, cov) from the density formula (2.7), x of shape (..., D)."""
    D = mean.shape[-1]
    chol = np.linalg.cholesky(cov)
    diff = np.atleast_2d(x - mean)  # (n, D)
    sol = linalg.solve_triangular(chol, diff.T, lower=True)  # (D, n)
    maha = (sol**2).sum(0)
    logdet = 2.0 * np.log(np.diag(chol)).sum()
    out = -0.5 * (D * LOG2PI + logdet + maha)
    return out if np.ndim(x) > 1 else out[0]


def _gauss_kl(m_q, C_q, m_p, C_p):
    """KL(N(m_q, C_q) || N(m_p, C_p)) for full covariances (numpy, exact)."""
    d = m_q.shape[0]
    P = np.linalg.inv(C_p)
    diff = m_p - m_q
    return 0.5 * (np.trace(P @ C_q) + diff @ P @ diff - d
                  + np.linalg.slogdet(C_p)[1] - np.linalg.slogdet(C_q)[1])


def _linear_gaussian(seed=0, d=2, D=5, s2=0.5):
    """A linear-Gaussian model and one observation x drawn from it."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(D, d))
    b = 0.5 * rng.normal(size=D)
    x = W @ rng.normal(size=d) + b + math.sqrt(s2) * rng.normal(size=D)
    return W, b, s2, x


def _lg_log_marginal(x, W, b, s2):
    """log p(x) = log N(x; b, W W^T + s2 I): the exact evidence of the linear-Gaussian model."""
    return _mvn_logpdf(x, b, W @ W.T + s2 * np.eye(len(b)))


def _lg_posterior(x, W, b, s2, beta=1.0):
    """Mean and covariance of p(z) p(x|z)^(1/beta), normalised: (3.13); beta = 1 gives the posterior (3.2)."""
    d = W.shape[1]
    cov = np.linalg.inv(np.eye(d) + W.T @ W / (beta * s2))
    mean = cov @ W.T @ (x - b) / (beta * s2)
    return mean, cov


def _lg_elbo_closed_form(x, W, b, s2, m, C, beta=1.0):
    """E_q[log p(x|z)] - beta KL(q || N(0, I)) for q = N(m, C): the ELBO (3.5) in closed form."""
    D, d = W.shape
    resid = x - b - W @ m
    exp_loglik = -0.5 * D * math.log(2 * math.pi * s2) - 0.5 * (resid @ resid + np.trace(W @ C @ W.T)) / s2
    return exp_loglik - beta * _gauss_kl(m, C, np.zeros(d), np.eye(d))


def _lg_log_joint(z, x, W, b, s2):
    """log p(x, z) for a batch z of shape (n, d)."""
    D = len(x)
    mean = z @ W.T + b
    log_lik = -0.5 * (D * math.log(2 * math.pi * s2) + ((x - mean) ** 2).sum(-1) / s2)
    log_prior = -0.5 * (z.shape[-1] * LOG2PI + (z**2).sum(-1))
    return log_lik + log_prior


def _diag_normal_logpdf(z, m, v):
    return -0.5 * (LOG2PI + np.log(v) + (z - m) ** 2 / v).sum(-1)


# ----------------------------------------------------------------------------------------------
# Lecture 1: introduction and evaluation
# ----------------------------------------------------------------------------------------------
def test_bayes_rule_gaussian_classes_give_logistic():
    """Checks (1.1) and (1.2): with Gaussian class-conditionals sharing one covariance, Bayes' rule
    (1.1) gives p(y=1|x) = sigmoid(w^T x + b0) with w, b0 as in (1.2). The posterior is computed
    directly from (1.1) with scipy densities; exact up to round-off."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 3))
    cov = A @ A.T + 0.5 * np.eye(3)
    mu0, mu1 = rng.normal(size=3), rng.normal(size=3)
    pi1 = 0.3
    x = rng.normal(size=(200, 3)) * 2.0
    joint1 = pi1 * stats.multivariate_normal(mu1, cov).pdf(x)
    joint0 = (1 - pi1) * stats.multivariate_normal(mu0, cov).pdf(x)
    post_bayes = joint1 / (joint1 + joint0)  # (1.1)
    P = np.linalg.inv(cov)
    w = P @ (mu1 - mu0)
    b0 = -0.5 * mu1 @ P @ mu1 + 0.5 * mu0 @ P @ mu0 + math.log(pi1 / (1 - pi1))
    post_logistic = 1.0 / (1.0 + np.exp(-(x @ w + b0)))  # (1.2)
    np.testing.assert_allclose(post_logistic, post_bayes, rtol=1e-10, atol=1e-12)


def test_bits_per_dim_from_model_likelihood():
    """Checks (1.3) and (1.4). (1.3): bits/dim = NLL_nats / (D ln 2), computed from a fitted
    model's likelihood: a factorised Bernoulli model fitted by maximum likelihood to correlated
    binary vectors, its log-likelihood taken from torch.distributions in nats. Independent route:
    for MLE frequencies the average code length per dimension equals the mean binary entropy of the
    fitted frequencies, computed in bits by scipy (no logarithm conversion on our side). A second
    model (every pixel Bernoulli(1/2)) must cost exactly 1 bit/dim whatever the data.
    (1.4): a density on data rescaled to [0, 1] gives a bits/dim bound -E log p(y)/(D ln 2) + 8
    that must lie above the exact discrete bits/dim of the distribution the density induces on the
    256 bins (Jensen), and be nearly tight where the density is smooth at the bin scale."""
    rng = np.random.default_rng(2)
    N, D = 500, 16
    # correlated binary data: thresholded Gaussian vectors with a shared factor
    x = (rng.normal(size=(N, 1)) + rng.normal(size=(N, D)) + np.linspace(-1, 1, D) > 0).astype(float)
    p_hat = x.mean(0)  # MLE of each pixel's Bernoulli parameter
    model = torch.distributions.Bernoulli(probs=torch.tensor(p_hat, dtype=F64))
    nll_nats = -model.log_prob(torch.tensor(x, dtype=F64)).sum(1)  # (N,) nats per data point
    bpd = (nll_nats / (D * math.log(2))).mean().item()  # (1.3)
    entropy_bits = np.mean([stats.entropy([q, 1 - q], base=2) for q in p_hat])
    assert bpd == pytest.approx(entropy_bits, rel=1e-10)
    assert 0.5 < bpd < 1.0  # the fitted model beats the 1-bit coin on these skewed pixels
    coin = torch.distributions.Bernoulli(probs=torch.full((D,), 0.5, dtype=F64))
    coin_bpd = (-coin.log_prob(torch.tensor(x, dtype=F64)).sum(1) / (D * math.log(2))).mean().item()
    assert coin_bpd == pytest.approx(1.0, rel=1e-12)

    # (1.4) vs the exact discrete bits/dim: a 1-D Gaussian density on y = (x + u)/256.
    mu, sd = 0.45, 0.12
    k = np.arange(256)
    P = stats.norm.cdf((k + 1) / 256, mu, sd) - stats.norm.cdf(k / 256, mu, sd)  # exact bin masses
    # E_u[log p(y)] for y = (k + u)/256, u ~ U(0, 1), is exact because log p is quadratic in y:
    # E_u[(y - mu)^2] = ((k + 1/2)/256 - mu)^2 + 1/(12 * 256^2).
    e_sq = ((k + 0.5) / 256 - mu) ** 2 + 1 / (12 * 256**2)
    e_log_p = -0.5 * math.log(2 * math.pi * sd**2) - e_sq / (2 * sd**2)
    bound_bits = -e_log_p / math.log(2) + 8.0  # (1.4) with D = 1
    exact_bits = -np.log2(P)
    assert np.all(bound_bits >= exact_bits - 1e-9)
    # ... and nearly tight where the density is smooth at the bin scale (the central bins).
    central = np.abs(k / 256 - mu) < 2 * sd
    assert np.max(bound_bits[central] - exact_bits[central]) < 1e-3


def _frechet_distance(mu1, S1, mu2, S2):
    """Squared Frechet (Wasserstein-2) distance between two Gaussians, formula (1.5)."""
    covmean = linalg.sqrtm(S1 @ S2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(S1 + S2 - 2 * np.real(covmean)))


def test_frechet_distance_known_answers():
    """Checks (1.5), the Frechet distance between Gaussians, against known answers: in 1-D it is
    (m1 - m2)^2 + (s1 - s2)^2; for commuting (diagonal) covariances it is the sum of squared
    differences of standard deviations; and for full covariances it equals the transport cost
    E||x - T(x)||^2 of the optimal linear map T, estimated by Monte Carlo (tolerance 5 SE)."""
    d2 = _frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]]))
    assert d2 == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=1e-10)

    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    d2 = _frechet_distance(np.zeros(3), np.diag(v1), np.ones(3), np.diag(v2))
    assert d2 == pytest.approx(3.0 + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2), rel=1e-10)

    rng = np.random.default_rng(3)
    A1, A2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    S1, S2 = A1 @ A1.T + 0.1 * np.eye(4), A2 @ A2.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    r1 = np.real(linalg.sqrtm(S1))
    r1inv = np.linalg.inv(r1)
    T = r1inv @ np.real(linalg.sqrtm(r1 @ S2 @ r1)) @ r1inv  # optimal map x -> mu2 + T (x - mu1)
    np.testing.assert_allclose(T @ S1 @ T, S2, atol=1e-8)  # T pushes N(mu1, S1) onto N(mu2, S2)
    x = mu1 + rng.normal(size=(200_000, 4)) @ np.linalg.cholesky(S1).T
    cost = ((x - (mu2 + (x - mu1) @ T.T)) ** 2).sum(1)
    se = cost.std() / math.sqrt(len(cost))
    assert abs(cost.mean() - _frechet_distance(mu1, S1, mu2, S2)) < Z * se


def test_frechet_mean_term_bias():
    """Checks (1.6): two independent N-sample means of the same distribution differ, on average, by
    E||mu1_hat - mu2_hat||^2 = 2 tr(Sigma) / N, so an FID estimated from finite samples of two
    identical distributions is positive. Monte Carlo over 4000 repeats; tolerance 5 SE."""
    rng = np.random.default_rng(4)
    d, N, reps = 8, 50, 4000
    sd = np.linspace(0.5, 2.0, d)
    a = rng.normal(size=(reps, N, d)) * sd
    bb = rng.normal(size=(reps, N, d)) * sd
    sq = ((a.mean(1) - bb.mean(1)) ** 2).sum(1)
    se = sq.std() / math.sqrt(reps)
    assert abs(sq.mean() - 2 * (sd**2).sum() / N) < Z * se


def test_mixture_with_noise_loses_at_most_log_100():
    """Checks (1.7): a model that is 99% noise and 1% a good model p has
    log(0.01 p + 0.99 q) >= log p - log 100 everywhere, and the bound is essentially tight where q
    is negligible next to p (a wrong constant, e.g. log 10, would be violated here)."""
    rng = np.random.default_rng(5)
    D = 100
    x = rng.normal(size=(1000, D))  # samples from the good model p = N(0, I)
    log_p = stats.norm.logpdf(x).sum(1)
    log_q = stats.norm.logpdf(x, scale=10.0).sum(1)  # broad noise model
    log_mix = np.logaddexp(math.log(0.01) + log_p, math.log(0.99) + log_q)
    assert np.all(log_mix >= log_p - math.log(100) - 1e-12)
    np.testing.assert_allclose(log_mix - log_p, -math.log(100), atol=1e-6)
    # In bits per dimension the penalty is at most log2(100)/D.
    assert np.max((log_p - log_mix) / (D * math.log(2))) <= math.log2(100) / D + 1e-12


# ----------------------------------------------------------------------------------------------
# Lecture 2: probability and maximum likelihood
# ----------------------------------------------------------------------------------------------
def test_univariate_gaussian_density():
    """Checks (2.1): the Gaussian density formula matches scipy and integrates to one."""
    mu, s2 = 0.7, 2.3
    x = np.linspace(-5, 5, 41)
    ours = -0.5 * np.log(2 * np.pi * s2) - (x - mu) ** 2 / (2 * s2)
    np.testing.assert_allclose(ours, stats.norm.logpdf(x, mu, math.sqrt(s2)), rtol=1e-12)
    mass, _ = integrate.quad(lambda t: math.exp(-0.5 * math.log(2 * math.pi * s2) - (t - mu) ** 2 / (2 * s2)),
                             -np.inf, np.inf)
    assert mass == pytest.approx(1.0, abs=1e-9)


def test_clt_standardised_mean():
    """Checks (2.2), the central limit theorem: for Exp(1) samples (skewed, mean 1, var 1) the
    standardised mean sqrt(n)(xbar - 1) is close to N(0, 1) at n = 400 and not at n = 1. The
    Kolmogorov-Smirnov distance over 10,000 repeats has sampling noise ~1.36/sqrt(1e4) = 0.014 and
    the skewness correction at n = 400 is ~0.007 (Edgeworth), so 0.03 is a safe bound; at n = 1
    the exponential itself is at KS distance ~0.16 from the normal."""
    rng = np.random.default_rng(6)
    reps = 10_000
    ks = {}
    for n in (1, 400):
        xbar = rng.exponential(size=(reps, n)).mean(1)
        zstat = math.sqrt(n) * (xbar - 1.0)  # (2.2) with mu = sigma = 1
        ks[n] = stats.kstest(zstat, "norm").statistic
    assert ks[400] < 0.03
    assert ks[1] > 0.1


def test_gaussian_mle_closed_form():
    """Checks (2.3)-(2.5): the sample mean and the biased (1/N) sample variance maximise the Gaussian
    log-likelihood (2.3); compared with scipy's numerical optimiser (to 1e-5), and the
    log-likelihood at the optimiser's answer equals (2.3) evaluated at the closed form."""
    rng = np.random.default_rng(7)
    x = rng.normal(2.0, 1.5, size=30)
    N = len(x)

    def nll(theta):
        mu, log_s2 = theta
        return 0.5 * N * (LOG2PI + log_s2) + ((x - mu) ** 2).sum() / (2 * math.exp(log_s2))  # -(2.3)

    res = optimize.minimize(nll, x0=np.array([0.0, 0.0]), method="BFGS", options={"gtol": 1e-10})
    mu_hat = x.mean()  # (2.4)
    s2_hat = ((x - mu_hat) ** 2).mean()  # (2.5)
    assert res.x[0] == pytest.approx(mu_hat, abs=1e-5)
    assert math.exp(res.x[1]) == pytest.approx(s2_hat, rel=1e-5)
    assert s2_hat != pytest.approx(x.var(ddof=1), rel=1e-3)  # the 1/(N-1) version is not the MLE
    assert nll([mu_hat, math.log(s2_hat)]) <= res.fun + 1e-9


def test_variance_mle_bias():
    """Checks (2.6): E[s2_hat] = (N-1)/N sigma^2. With N = 5, sigma^2 = 4 the expectation is 3.2
    (the unbiased value 4 is 0.8 away); Monte Carlo over 200,000 repeats, tolerance 5 SE (~0.025)."""
    rng = np.random.default_rng(8)
    N, s2, reps = 5, 4.0, 200_000
    x = rng.normal(0.0, math.sqrt(s2), size=(reps, N))
    s2_hat = x.var(axis=1)  # 1/N normalisation
    se = s2_hat.std() / math.sqrt(reps)
    assert abs(s2_hat.mean() - (N - 1) / N * s2) < Z * se


def test_multivariate_normal_density():
    """Checks (2.7): the multivariate normal log-density matches scipy."""
    rng = np.random.default_rng(9)
    A = rng.normal(size=(4, 4))
    cov, mean = A @ A.T + 0.3 * np.eye(4), rng.normal(size=4)
    x = rng.normal(size=(10, 4))
    np.testing.assert_allclose(_mvn_logpdf(x, mean, cov), stats.multivariate_normal(mean, cov).logpdf(x),
                               rtol=1e-10)


def test_multivariate_normal_mle():
    """Checks (2.8): at mu_hat = sample mean and Sigma_hat = (1/N) sum (x - mu_hat)(x - mu_hat)^T the
    gradient of the log-likelihood with respect to mu and to a Cholesky factor of Sigma vanishes
    (autograd, to 1e-8), while at the 1/(N-1) covariance it does not."""
    rng = np.random.default_rng(10)
    N = 40
    X = torch.tensor(rng.normal(size=(N, 3)) @ rng.normal(size=(3, 3)), dtype=F64)

    def grads(cov):
        mu = X.mean(0).clone().requires_grad_(True)
        L = torch.linalg.cholesky(cov).clone().requires_grad_(True)
        dist = torch.distributions.MultivariateNormal(mu, scale_tril=torch.tril(L))
        dist.log_prob(X).sum().backward()
        return mu.grad.abs().max().item(), torch.tril(L.grad).abs().max().item()

    Xc = X - X.mean(0)
    g_mu, g_L = grads(Xc.T @ Xc / N)  # (2.8)
    assert g_mu < 1e-8 and g_L < 1e-8
    _, g_L_unbiased = grads(Xc.T @ Xc / (N - 1))
    assert g_L_unbiased > 1e-3


def test_gaussian_marginal_and_conditional():
    """Checks (2.9) and (2.10). Direct computation: for a random 5-D Gaussian split into a (2 dims)
    and b (3 dims), log p(x_a | x_b) from (2.10) plus log p(x_b) from (2.9) must equal the joint
    log-density log p(x_a, x_b) at random points (exact up to round-off). Monte Carlo: samples of
    the joint whose x_b lies near a fixed value have x_a mean and covariance close to (2.10)."""
    rng = np.random.default_rng(11)
    A = rng.normal(size=(5, 5))
    S = A @ A.T + 0.5 * np.eye(5)
    mu = rng.normal(size=5)
    a, b_ = slice(0, 2), slice(2, 5)
    Saa, Sab, Sbb = S[a, a], S[a, b_], S[b_, b_]

    def conditional(xb):
        K = Sab @ np.linalg.inv(Sbb)
        return mu[a] + K @ (xb - mu[b_]), Saa - K @ Sab.T  # (2.10)

    for _ in range(5):
        x = rng.normal(size=5) * 2
        m_c, S_c = conditional(x[b_])
        lhs = _mvn_logpdf(x[a], m_c, S_c) + _mvn_logpdf(x[b_], mu[b_], Sbb)  # (2.10) + (2.9)
        assert lhs == pytest.approx(_mvn_logpdf(x, mu, S), abs=1e-10)

    # Monte Carlo: a 3-D joint conditioned on its last coordinate lying in a thin window.
    S3, mu3 = S[2:, 2:], mu[2:]
    samples = mu3 + rng.normal(size=(400_000, 3)) @ np.linalg.cholesky(S3).T
    xb0 = mu3[2] + 0.3
    sel = samples[np.abs(samples[:, 2] - xb0) < 0.02][:, :2]
    K = S3[:2, 2] / S3[2, 2]
    m_c = mu3[:2] + K * (xb0 - mu3[2])
    S_c = S3[:2, :2] - np.outer(K, S3[2, :2])
    se_mean = np.sqrt(np.diag(S_c) / len(sel))
    assert np.all(np.abs(sel.mean(0) - m_c) < Z * se_mean + 0.02 * np.abs(K))  # + window width
    np.testing.assert_allclose(np.cov(sel.T), S_c, rtol=0.05, atol=0.02 * np.abs(S_c).max())


def _gmm_log_joint(x, pi, mu, var):
    """log pi_k + log N(x_n; mu_k, var_k), shape (N, K), for a 1-D mixture."""
    return np.log(pi) + stats.norm.logpdf(x[:, None], mu, np.sqrt(var))


def _gmm_loglik(x, pi, mu, var):
    """sum_n log p(x_n), the mixture log-likelihood (2.11)."""
    return float(np.logaddexp.reduce(_gmm_log_joint(x, pi, mu, var), axis=1).sum())


def _e_step(x, pi, mu, var):
    lj = _gmm_log_joint(x, pi, mu, var)
    return np.exp(lj - np.logaddexp.reduce(lj, axis=1, keepdims=True))  # (2.13)


def _m_step(x, r):
    Nk = r.sum(0)
    mu = (r * x[:, None]).sum(0) / Nk
    var = (r * (x[:, None] - mu) ** 2).sum(0) / Nk
    return Nk / len(x), mu, var  # (2.14)


def _free_energy(x, r, pi, mu, var):
    """F(q, theta) = E_q[log p(x, z | theta)] + H(q), first line of (2.12)."""
    lj = _gmm_log_joint(x, pi, mu, var)
    ent = -np.sum(np.where(r > 0, r * np.log(np.clip(r, 1e-300, None)), 0.0))
    return float((r * lj).sum() + ent)


def _mixture_data(seed=12, N=300):
    rng = np.random.default_rng(seed)
    z = rng.random(N) < 0.35
    return np.where(z, rng.normal(-2.0, 0.6, N), rng.normal(1.5, 1.0, N))


def test_em_free_energy_identity():
    """Checks (2.11), (2.12) and (2.13): for arbitrary q, E_q[log p(x,z)] + H(q) equals
    log p(x) - KL(q || p(z|x)), where log p(x) is the mixture log-likelihood (2.11) and p(z|x) is
    the responsibility (2.13); and F = log p(x) exactly when q is the responsibilities."""
    x = _mixture_data()
    rng = np.random.default_rng(13)
    pi, mu, var = np.array([0.5, 0.3, 0.2]), np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 2.0])
    q = rng.dirichlet(np.ones(3), size=len(x))
    post = _e_step(x, pi, mu, var)
    kl = float((q * (np.log(q) - np.log(post))).sum())
    ll = _gmm_loglik(x, pi, mu, var)
    assert _free_energy(x, q, pi, mu, var) == pytest.approx(ll - kl, rel=1e-12)
    assert kl > 1.0  # the check is not vacuous
    assert _free_energy(x, post, pi, mu, var) == pytest.approx(ll, rel=1e-12)


def test_gmm_m_step_maximises_expected_complete_loglik():
    """Checks (2.14): with the responsibilities fixed, the M-step parameters are a stationary point
    of Q(theta) = sum_n sum_k r_nk log(pi_k N(x_n; mu_k, var_k)) (autograd gradient < 1e-8 in
    unconstrained coordinates: softmax logits, mu, log var), and beat 50 random perturbations."""
    x = _mixture_data()
    r = _e_step(x, np.array([0.5, 0.5]), np.array([-1.0, 1.0]), np.array([1.0, 1.0]))
    pi, mu, var = _m_step(x, r)
    xt, rt = torch.tensor(x, dtype=F64), torch.tensor(r, dtype=F64)

    def Q(logits, m, logv):
        logpi = torch.log_softmax(logits, 0)
        lj = logpi - 0.5 * (LOG2PI + logv) - (xt[:, None] - m) ** 2 / (2 * torch.exp(logv))
        return (rt * lj).sum()

    params = [torch.tensor(np.log(pi), dtype=F64, requires_grad=True),
              torch.tensor(mu, dtype=F64, requires_grad=True),
              torch.tensor(np.log(var), dtype=F64, requires_grad=True)]
    q_star = Q(*params)
    q_star.backward()
    for p in params:
        assert p.grad.abs().max().item() < 1e-8
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(50):
            pert = [p + 0.05 * torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
            assert Q(*pert) < q_star


def test_em_log_likelihood_never_decreases():
    """Checks (2.15): running EM (2.13)-(2.14) on a 1-D two-component mixture from a poor start, the
    log-likelihood never decreases (up to round-off, 1e-9), F(q_t, theta_t) = log p(x | theta_t)
    after each E-step, and the run ends far above where it started."""
    x = _mixture_data()
    pi, mu, var = np.array([0.5, 0.5]), np.array([0.5, 1.0]), np.array([0.2, 3.0])
    lls = [_gmm_loglik(x, pi, mu, var)]
    for _ in range(60):
        r = _e_step(x, pi, mu, var)
        assert _free_energy(x, r, pi, mu, var) == pytest.approx(lls[-1], rel=1e-12)
        pi, mu, var = _m_step(x, r)
        assert _free_energy(x, r, pi, mu, var) <= _gmm_loglik(x, pi, mu, var) + 1e-9  # F <= log p
        lls.append(_gmm_loglik(x, pi, mu, var))
    assert np.all(np.diff(lls) >= -1e-9)
    assert lls[-1] - lls[0] > 100.0
    assert sorted(mu) == pytest.approx([-2.0, 1.5], abs=0.3)


# ----------------------------------------------------------------------------------------------
# Lecture 3: VAEs
# ----------------------------------------------------------------------------------------------
def test_linear_gaussian_marginal_and_posterior():
    """Checks (3.2): for z ~ N(0, I), x | z ~ N(W z + b, s2 I), log p(x) = log N(x; b, W W^T + s2 I),
    compared with the integral (3.1) done by quadrature on a fine 2-D grid (the integrand is smooth
    and negligible outside the box, so the error is far below the 1e-6 tolerance); and the posterior
    N(m, C) satisfies log p(x, z) - log p(x) = log N(z; m, C) at random z (exact)."""
    W, b, s2, x = _linear_gaussian()
    log_px = _lg_log_marginal(x, W, b, s2)
    g = np.linspace(-8, 8, 401)
    Z = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_integrand = _lg_log_joint(Z, x, W, b, s2)
    log_quad = np.logaddexp.reduce(log_integrand) + 2 * math.log(g[1] - g[0])
    assert log_quad == pytest.approx(log_px, abs=1e-6)

    m, C = _lg_posterior(x, W, b, s2)
    z = np.random.default_rng(23).normal(size=(20, 2)) * 2
    np.testing.assert_allclose(_lg_log_joint(z, x, W, b, s2) - log_px, _mvn_logpdf(z, m, C), atol=1e-10)


def test_elbo_kl_decomposition_linear_gaussian():
    """Checks (3.3), (3.4) and (3.5) on the linear-Gaussian model. For an arbitrary diagonal q:
    the closed-form ELBO in the form (3.5) plus KL(q || p(z|x)) equals log p(x) exactly (3.4);
    the Monte-Carlo average of log p(x,z) - log q(z) (definition (3.3)) agrees with it within 5 SE;
    and L < log p(x), with equality when q is the exact posterior."""
    W, b, s2, x = _linear_gaussian()
    m_post, C_post = _lg_posterior(x, W, b, s2)
    log_px = _lg_log_marginal(x, W, b, s2)
    m, v = m_post + np.array([0.4, -0.3]), np.array([0.5, 0.2])
    elbo = _lg_elbo_closed_form(x, W, b, s2, m, np.diag(v))
    kl_post = _gauss_kl(m, np.diag(v), m_post, C_post)
    assert elbo + kl_post == pytest.approx(log_px, abs=1e-10)
    assert elbo < log_px - 0.1

    rng = np.random.default_rng(14)
    z = m + np.sqrt(v) * rng.normal(size=(100_000, 2))
    terms = _lg_log_joint(z, x, W, b, s2) - _diag_normal_logpdf(z, m, v)
    assert abs(terms.mean() - elbo) < Z * terms.std() / math.sqrt(len(terms))

    assert _lg_elbo_closed_form(x, W, b, s2, m_post, C_post) == pytest.approx(log_px, abs=1e-10)


def test_reparameterisation_gradient():
    """Checks (3.6): gradients through z = mu + sigma * eps are unbiased for the gradient of
    E_q[f(z)]. With f(z) = sum z^3, E f = sum(mu^3 + 3 mu sigma^2), so the exact gradients are
    3 mu^2 + 3 sigma^2 and 6 mu sigma. Autograd through the reparameterised samples matches them
    within 5 SE (SE from the per-sample gradients 3 z^2 and 3 z^2 eps)."""
    gen = torch.Generator().manual_seed(15)
    mu = torch.tensor([0.5, -1.0, 0.2], dtype=F64, requires_grad=True)
    sigma = torch.tensor([0.8, 0.3, 1.5], dtype=F64, requires_grad=True)
    n = 200_000
    eps = torch.randn(n, 3, generator=gen, dtype=F64)
    z = mu + sigma * eps  # (3.6)
    (z**3).sum(1).mean().backward()
    with torch.no_grad():
        exact_mu = 3 * mu**2 + 3 * sigma**2
        exact_sigma = 6 * mu * sigma
        se_mu = (3 * z**2).std(0) / math.sqrt(n)
        se_sigma = (3 * z**2 * eps).std(0) / math.sqrt(n)
    assert torch.all((mu.grad - exact_mu).abs() < Z * se_mu)
    assert torch.all((sigma.grad - exact_sigma).abs() < Z * se_sigma)


def test_sgvb_estimators_unbiased_and_their_variance():
    """Checks (3.7) and (3.8) on the linear-Gaussian model. Both estimators are unbiased for the
    closed-form ELBO (within 5 SE). Their variances compare as the notes say: (i) when q is the
    exact posterior, every term of (3.7) equals log p(x), so its variance is zero while (3.8)'s is
    not; (ii) with many latent dimensions that the decoder ignores and q slightly off the prior in
    them (a common state of a trained VAE), the analytic-KL estimator (3.8) has the lower variance."""
    rng = np.random.default_rng(16)
    W, b, s2, x = _linear_gaussian()
    m_post, C_post = _lg_posterior(x, W, b, s2)

    def estimators(Wz, m, v, n=20_000):
        z = m + np.sqrt(v) * rng.normal(size=(n, len(m)))
        log_joint = _lg_log_joint(z, x, Wz, b, s2)
        sgvb_a = log_joint - _diag_normal_logpdf(z, m, v)  # (3.7), one sample per term
        log_lik = log_joint + 0.5 * (len(m) * LOG2PI + (z**2).sum(1))
        kl = 0.5 * np.sum(m**2 + v - np.log(v) - 1)
        sgvb_b = log_lik - kl  # (3.8)
        return sgvb_a, sgvb_b, _lg_elbo_closed_form(x, Wz, b, s2, m, np.diag(v))

    # (i) a model whose posterior is diagonal: rotate W so that W^T W is diagonal.
    _, _, Vt = np.linalg.svd(W, full_matrices=False)
    Wd = W @ Vt.T
    md, Cd = _lg_posterior(x, Wd, b, s2)
    assert np.abs(Cd - np.diag(np.diag(Cd))).max() < 1e-12
    a, bb, elbo = estimators(Wd, md, np.diag(Cd))
    assert a.var() < 1e-20 and bb.var() > 0.1
    assert abs(bb.mean() - elbo) < Z * bb.std() / math.sqrt(len(bb))

    # (ii) 2 active latent dimensions and 30 the decoder ignores.
    W32 = np.concatenate([W, np.zeros((W.shape[0], 30))], axis=1)
    m = np.concatenate([m_post, np.full(30, 0.3)])
    v = np.concatenate([np.diag(C_post), np.full(30, 0.6)])
    a, bb, elbo = estimators(W32, m, v)
    for est in (a, bb):
        assert abs(est.mean() - elbo) < Z * est.std() / math.sqrt(len(est))
    assert bb.var() < 0.8 * a.var()  # variance estimates are good to ~2% at n = 20,000


def test_gaussian_kl_closed_form():
    """Checks (3.9): KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - log sigma^2 - 1),
    computed from mu and logvar, against torch.distributions.kl_divergence (to 1e-10), and against
    a Monte-Carlo estimate of E_q[log q - log p] (within 5 SE)."""
    gen = torch.Generator().manual_seed(17)
    mu = torch.randn(16, 8, generator=gen, dtype=F64) * 2
    logvar = torch.randn(16, 8, generator=gen, dtype=F64)
    ours = 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1)  # (3.9)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)

    z = q.sample((2000,))  # (2000, 16, 8)
    terms = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    se = terms.std(0) / math.sqrt(terms.shape[0])
    assert torch.all((terms.mean(0) - ours).abs() < Z * se)


def _iwae_estimates(x, W, b, s2, m, v, k, reps, rng):
    """reps independent single-sample estimates of L_k (3.10), each from k importance samples."""
    z = m + np.sqrt(v) * rng.normal(size=(reps, k, len(m)))
    log_w = _lg_log_joint(z, x, W, b, s2) - _diag_normal_logpdf(z, m, v)  # (reps, k)
    return np.logaddexp.reduce(log_w, axis=1) - math.log(k)


def test_importance_weighted_bound():
    """Checks (3.10) and (3.11) on the linear-Gaussian model with a diagonal q that differs from the
    exact posterior. L_1 equals the closed-form ELBO; L_k increases with k; every L_k <= log p(x);
    and L_k approaches log p(x): the gap at k = 1024 is below 2% of the gap at k = 1. Comparisons are
    within 5 SE of the Monte-Carlo estimates."""
    W, b, s2, x = _linear_gaussian()
    m_post, C_post = _lg_posterior(x, W, b, s2)
    m, v = m_post + np.array([0.3, -0.2]), 1.5 * np.diag(C_post)
    log_px = _lg_log_marginal(x, W, b, s2)
    elbo = _lg_elbo_closed_form(x, W, b, s2, m, np.diag(v))
    rng = np.random.default_rng(18)
    ks = [1, 4, 16, 64, 256, 1024]
    means, ses = [], []
    for k in ks:
        est = _iwae_estimates(x, W, b, s2, m, v, k, reps=max(200, 20_000 // k), rng=rng)
        means.append(est.mean())
        ses.append(est.std() / math.sqrt(len(est)))
    means, ses = np.array(means), np.array(ses)
    assert abs(means[0] - elbo) < Z * ses[0]  # L_1 = ELBO
    assert np.all(np.diff(means) > -Z * np.hypot(ses[1:], ses[:-1]))  # increasing in k
    assert means[1] - means[0] > Z * np.hypot(ses[0], ses[1])  # strictly, at small k
    assert np.all(means < log_px + Z * ses)  # every L_k is a lower bound
    assert log_px - means[-1] < 0.02 * (log_px - elbo) + Z * ses[-1]  # -> log p(x)


def test_iw_bound_single_mode_encoder_stays_loose():
    """The corrected argument of question 3 in readings/iwae-burda-2015.md: with posterior
    1/2 N(-3,1) + 1/2 N(3,1) and encoder q = N(3,1), every weight is at least p(x)/2, so the gap
    L_k - log p(x) lies in [-log 2, 0]; it is -0.689 at k = 1 (quadrature, an independent route
    from the Monte Carlo) and still about -0.67 at k = 100. A broad encoder N(0, 3.5^2) has a worse
    ELBO but a gap under 0.06 at k = 10 and under 0.02 at k = 100. log p(x) = 0 without loss of
    generality (the gap does not depend on it)."""
    rng = np.random.default_rng(5)

    def log_post(z):
        return np.logaddexp(stats.norm.logpdf(z, -3, 1), stats.norm.logpdf(z, 3, 1)) + math.log(0.5)

    def gap(k, reps, loc, scale):
        z = rng.normal(loc, scale, size=(reps, k))
        log_w = log_post(z) - stats.norm.logpdf(z, loc, scale)
        est = np.logaddexp.reduce(log_w, axis=1) - math.log(k)
        return est.mean(), est.std() / math.sqrt(reps)

    exact_k1, _ = integrate.quad(
        lambda z: np.logaddexp(math.log(0.5), math.log(0.5) - 6 * z) * stats.norm.pdf(z, 3, 1), -10, 16
    )
    assert exact_k1 == pytest.approx(-0.6893, abs=1e-3)
    z = rng.normal(3.0, 1.0, size=100_000)
    assert np.all(log_post(z) - stats.norm.logpdf(z, 3, 1) >= -math.log(2) - 1e-12)  # w >= p(x)/2
    m1, se1 = gap(1, 200_000, 3.0, 1.0)
    assert abs(m1 - exact_k1) < Z * se1
    m100, se100 = gap(100, 4000, 3.0, 1.0)
    assert -math.log(2) <= m100 < -0.6 and se100 < 0.01  # still loose at k = 100
    broad1, _ = gap(1, 200_000, 0.0, 3.5)
    broad10, _ = gap(10, 20_000, 0.0, 3.5)
    broad100, _ = gap(100, 4000, 0.0, 3.5)
    assert broad1 < m1  # the ELBO prefers the one-mode encoder ...
    assert broad10 > -0.06 and broad100 > -0.02  # ... the k-sample bound the broad one


def test_beta_vae_optimal_encoder():
    """Checks (3.12) and (3.13): the Gaussian q maximising the beta-VAE objective (3.12) on the
    linear-Gaussian model, found by L-BFGS over a mean and a Cholesky factor, equals the tempered
    posterior (3.13), proportional to p(z) p(x|z)^(1/beta); its KL to the prior shrinks as beta
    grows, and with a decoder that ignores z (W = 0) the optimum is the prior itself (collapse)."""
    W, b, s2, x = _linear_gaussian()
    d = W.shape[1]
    tril = np.tril_indices(d)

    def fit(Wm, beta):
        def negobj(theta):
            m, L = theta[:d], np.zeros((d, d))
            L[tril] = theta[d:]
            return -_lg_elbo_closed_form(x, Wm, b, s2, m, L @ L.T + 1e-12 * np.eye(d), beta)  # -(3.12)

        theta0 = np.concatenate([np.zeros(d), np.eye(d)[tril]])
        res = optimize.minimize(negobj, theta0, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
        L = np.zeros((d, d))
        L[tril] = res.x[d:]
        return res.x[:d], L @ L.T

    kls = []
    for beta in (0.5, 1.0, 4.0):
        m, C = fit(W, beta)
        m_star, C_star = _lg_posterior(x, W, b, s2, beta)  # (3.13)
        np.testing.assert_allclose(m, m_star, atol=1e-4)
        np.testing.assert_allclose(C, C_star, atol=1e-4)
        kls.append(_gauss_kl(m_star, C_star, np.zeros(d), np.eye(d)))
    assert kls[0] > kls[1] > kls[2]

    m, C = fit(np.zeros_like(W), 1.0)
    np.testing.assert_allclose(m, 0.0, atol=1e-4)
    np.testing.assert_allclose(C, np.eye(d), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Lecture 4: hierarchical VAEs and the bridge to diffusion
# ----------------------------------------------------------------------------------------------
def _two_layer_chain(seed=19, d2=2, d1=3, D=4, v1=0.5, v0=0.3):
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2, v1 I), x | z1 ~ N(B z1, v0 I), and one observed x."""
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(d1, d2)), rng.normal(size=(D, d1))
    # Joint covariance of u = (z2, z1, x) from the linear recursions.
    S22 = np.eye(d2)
    S12 = A @ S22
    S11 = A @ A.T + v1 * np.eye(d1)
    Sx2, Sx1 = B @ S12, B @ S11
    Sxx = B @ S11 @ B.T + v0 * np.eye(D)
    S = np.block([[S22, S12.T, Sx2.T], [S12, S11, Sx1.T], [Sx2, Sx1, Sxx]])
    x = rng.multivariate_normal(np.zeros(len(S)), S)[d2 + d1:]
    return dict(A=A, B=B, v1=v1, v0=v0, S=S, x=x, d2=d2, d1=d1, D=D)


def _exact_top_down_posterior(c):
    """The true posterior in top-down form: p(z2|x) = N(m2, S2), p(z1|z2,x) = N(K z2 + k0, S1)."""
    d2, d1, S, x = c["d2"], c["d1"], c["S"], c["x"]
    z, o = slice(0, d2 + d1), slice(d2 + d1, None)
    G = S[z, o] @ np.linalg.inv(S[o, o])
    m_z, C_z = G @ x, S[z, z] - G @ S[o, z]  # (2.10): p(z2, z1 | x)
    m2, C22 = m_z[:d2], C_z[:d2, :d2]
    K = C_z[d2:, :d2] @ np.linalg.inv(C22)  # (2.10) again, within p(z1, z2 | x)
    return m2, C22, K, m_z[d2:] - K @ m2, C_z[d2:, d2:] - K @ C_z[:d2, d2:]


def _two_layer_elbo_exact(c, m2, S2, K, k0, S1):
    """E_q[log p(x, z1, z2)] + H(q) computed from the joint Gaussian moments of q (no sampling)."""
    d2, d1, S, x = c["d2"], c["d1"], c["S"], c["x"]
    mq = np.concatenate([m2, K @ m2 + k0])
    Cq = np.block([[S2, S2 @ K.T], [K @ S2, K @ S2 @ K.T + S1]])
    mu_u = np.concatenate([mq, x])
    C_u = np.zeros_like(S)
    C_u[: d2 + d1, : d2 + d1] = Cq
    P = np.linalg.inv(S)
    n = len(S)
    e_log_joint = -0.5 * (n * LOG2PI + np.linalg.slogdet(S)[1] + mu_u @ P @ mu_u + np.trace(P @ C_u))
    entropy = 0.5 * ((d2 + d1) * (1 + LOG2PI) + np.linalg.slogdet(Cq)[1])
    return e_log_joint + entropy


def test_two_layer_elbo():
    """Checks (4.2), (4.3) and (4.4) on a 2-layer linear-Gaussian chain z2 -> z1 -> x with a
    top-down Gaussian q(z2|x) q(z1|z2,x). (4.2): by conditioning the joint Gaussian with (2.10),
    p(z2|z1,x) does not depend on x (bottom-up form exact), but p(z1|z2,x) does. (a) With q the true posterior, the ELBO (computed exactly from the
    moments of q) equals log p(x) to 1e-9; with a perturbed q it is strictly smaller. (b) The
    KL form (4.4), with its inner expectation over z2 done exactly, equals the exact ELBO to 1e-9.
    (c) The Monte-Carlo average of the log-ratio in (4.3) agrees with it within 5 SE, and has zero
    variance at the true posterior."""
    c = _two_layer_chain()
    A, B, v1, v0, x, d2, d1, D = (c[k] for k in ("A", "B", "v1", "v0", "x", "d2", "d1", "D"))

    # (4.2): in the chain, p(z2 | z1, x) = p(z2 | z1), so the bottom-up factorisation is exact too.
    S = c["S"]
    given = slice(d2, None)  # condition on (z1, x)
    G_full = S[:d2, given] @ np.linalg.inv(S[given, given])  # (2.10)
    G_z1 = S[:d2, d2:d2 + d1] @ np.linalg.inv(S[d2:d2 + d1, d2:d2 + d1])
    np.testing.assert_allclose(G_full[:, d1:], 0.0, atol=1e-12)  # x carries no extra information
    np.testing.assert_allclose(G_full[:, :d1], G_z1, atol=1e-12)
    # ... whereas z1 still depends on x given z2 (the top-down form must condition on x).
    idx = [*range(d2), *range(d2 + d1, len(S))]  # condition z1 on (z2, x)
    G_top = S[d2:d2 + d1, idx] @ np.linalg.inv(S[np.ix_(idx, idx)])
    assert np.abs(G_top[:, d2:]).max() > 0.1
    log_px = _mvn_logpdf(x, np.zeros(D), c["S"][d2 + d1:, d2 + d1:])
    post = _exact_top_down_posterior(c)
    assert _two_layer_elbo_exact(c, *post) == pytest.approx(log_px, abs=1e-9)

    rng = np.random.default_rng(20)
    m2, S2, K, k0, S1 = post
    q = (m2 + 0.3, 1.5 * S2, K + 0.2 * rng.normal(size=K.shape), k0 - 0.2, 0.7 * S1)
    elbo = _two_layer_elbo_exact(c, *q)
    assert elbo < log_px - 0.05

    def kl_form(m2, S2, K, k0, S1):  # (4.4)
        m1 = K @ m2 + k0  # reconstruction term: E||x - B z1||^2 with z1 ~ q(z1|x) = N(m1, V1)
        V1 = K @ S2 @ K.T + S1
        rec = -0.5 * (D * math.log(2 * math.pi * v0) + (np.sum((x - B @ m1) ** 2) + np.trace(B @ V1 @ B.T)) / v0)
        kl_top = _gauss_kl(m2, S2, np.zeros(d2), np.eye(d2))
        # E_{z2~q(z2|x)} KL(N(K z2 + k0, S1) || N(A z2, v1 I)); the mean gap is (K - A) z2 + k0.
        G = K - A
        gap_mean = G @ m2 + k0
        e_quad = (gap_mean @ gap_mean + np.trace(G @ S2 @ G.T)) / v1
        kl_mid = 0.5 * (np.trace(S1) / v1 + e_quad - d1 + d1 * math.log(v1) - np.linalg.slogdet(S1)[1])
        return rec - kl_top - kl_mid

    assert kl_form(*q) == pytest.approx(elbo, abs=1e-9)
    assert kl_form(*post) == pytest.approx(log_px, abs=1e-9)

    def mc_terms(m2, S2, K, k0, S1, n=50_000):
        z2 = m2 + rng.normal(size=(n, d2)) @ np.linalg.cholesky(S2).T
        z1 = z2 @ K.T + k0 + rng.normal(size=(n, d1)) @ np.linalg.cholesky(S1).T
        log_p = (_mvn_logpdf(z2, np.zeros(d2), np.eye(d2))
                 + _mvn_logpdf(z1 - z2 @ A.T, np.zeros(d1), v1 * np.eye(d1))
                 + _mvn_logpdf(x - z1 @ B.T, np.zeros(D), v0 * np.eye(D)))
        log_q = _mvn_logpdf(z2, m2, S2) + _mvn_logpdf(z1 - z2 @ K.T, k0, S1)
        return log_p - log_q  # the integrand of (4.3)

    t = mc_terms(*q)
    assert abs(t.mean() - elbo) < Z * t.std() / math.sqrt(len(t))
    t = mc_terms(*post)
    assert t.std() < 1e-9 and t.mean() == pytest.approx(log_px, abs=1e-9)


def test_precision_weighted_merge():
    """Checks (4.5): the normalised product of N(mu_a, s_a^2) and N(mu_b, s_b^2) is N(mu_q, s_q^2)
    with precisions adding and the mean precision-weighted. Direct check: log N_a + log N_b - log N_q
    is constant in z (to 1e-10) on a grid, and N_q integrates to one."""
    mu_a, va, mu_b, vb = 1.2, 0.5, -0.7, 2.0
    vq = 1.0 / (1.0 / va + 1.0 / vb)
    mq = vq * (mu_a / va + mu_b / vb)  # (4.5)
    z = np.linspace(-4, 4, 33)
    diff = (stats.norm.logpdf(z, mu_a, math.sqrt(va)) + stats.norm.logpdf(z, mu_b, math.sqrt(vb))
            - stats.norm.logpdf(z, mq, math.sqrt(vq)))
    assert np.ptp(diff) < 1e-10


def test_nvae_residual_normal_kl():
    """Checks (4.6): for q = N(mu_p + dmu, (sigma_p dsigma)^2) and p = N(mu_p, sigma_p^2),
    KL(q || p) = 1/2 (dmu^2 / sigma_p^2 + dsigma^2 - log dsigma^2 - 1), against
    torch.distributions.kl_divergence (to 1e-10)."""
    gen = torch.Generator().manual_seed(21)
    mu_p = torch.randn(100, generator=gen, dtype=F64)
    sig_p = torch.exp(torch.randn(100, generator=gen, dtype=F64))
    dmu = torch.randn(100, generator=gen, dtype=F64)
    dsig = torch.exp(0.5 * torch.randn(100, generator=gen, dtype=F64))
    ours = 0.5 * (dmu**2 / sig_p**2 + dsig**2 - torch.log(dsig**2) - 1)  # (4.6)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu_p + dmu, sig_p * dsig),
                                            torch.distributions.Normal(mu_p, sig_p))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def _forward_moments(x0, betas):
    """Means m[t], variances V[t] and lag-one covariances c[t] = Cov(x_{t-1}, x_t) of the forward
    chain x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps, from the recursion (t = 0..T)."""
    T = len(betas)
    m, V, c = np.zeros(T + 1), np.zeros(T + 1), np.zeros(T + 1)
    m[0] = x0
    for t in range(1, T + 1):
        a = 1 - betas[t - 1]
        m[t] = math.sqrt(a) * m[t - 1]
        V[t] = a * V[t - 1] + betas[t - 1]
        c[t] = math.sqrt(a) * V[t - 1]
    return m, V, c


def test_diffusion_forward_marginal_and_posterior():
    """Checks (4.7) and (4.8). (4.7): q(x_t|x_0) = N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) against
    the moments of the step-by-step recursion (exact). (4.8): the posterior q(x_{t-1}|x_t, x_0)
    mean and variance against conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0 with
    (2.10) (exact)."""
    betas = np.array([0.05, 0.1, 0.2, 0.3])
    alpha_bar = np.cumprod(1 - betas)
    x0 = 1.3
    m, V, c = _forward_moments(x0, betas)
    np.testing.assert_allclose(m[1:], np.sqrt(alpha_bar) * x0, rtol=1e-12)  # (4.7)
    np.testing.assert_allclose(V[1:], 1 - alpha_bar, rtol=1e-12)
    ab_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    for t in range(2, 5):
        xt = -0.4
        coef_x0 = math.sqrt(ab_prev[t - 1]) * betas[t - 1] / (1 - alpha_bar[t - 1])
        coef_xt = math.sqrt(1 - betas[t - 1]) * (1 - ab_prev[t - 1]) / (1 - alpha_bar[t - 1])
        mu_tilde = coef_x0 * x0 + coef_xt * xt  # (4.8)
        beta_tilde = (1 - ab_prev[t - 1]) * betas[t - 1] / (1 - alpha_bar[t - 1])
        mu_c = m[t - 1] + c[t] / V[t] * (xt - m[t])  # (2.10)
        var_c = V[t - 1] - c[t] ** 2 / V[t]
        assert mu_tilde == pytest.approx(mu_c, abs=1e-12)
        assert beta_tilde == pytest.approx(var_c, abs=1e-12)


def test_diffusion_elbo_is_hierarchical_elbo():
    """Checks (4.9): for a 1-D diffusion with T = 4 and a linear-Gaussian reverse model
    p(x_{t-1}|x_t) = N(a_t x_t + e_t, v_t), p(x_T) = N(0, 1), the KL form of the ELBO (4.9), built
    from the posterior (4.8), equals the hierarchical ELBO E_q[log p(x_{0:T}) - log q(x_{1:T}|x_0)]
    computed directly from the forward chain's moments (both exact; agreement to 1e-10), and is
    below the model's exact log p(x_0)."""
    betas = np.array([0.05, 0.1, 0.2, 0.3])
    T = len(betas)
    alpha_bar = np.cumprod(1 - betas)
    ab = np.concatenate([[1.0], alpha_bar])  # ab[t] = alpha_bar_t with alpha_bar_0 = 1
    rng = np.random.default_rng(22)
    a = 1 + 0.3 * rng.normal(size=T + 1)  # a[t], e[t], v[t] parameterise p(x_{t-1} | x_t), t >= 1
    e = 0.1 * rng.normal(size=T + 1)
    v = np.exp(0.3 * rng.normal(size=T + 1)) * 0.2
    x0 = 0.8
    m, V, c = _forward_moments(x0, betas)

    # Direct: E_q log p(x_T) + sum_t E_q log p(x_{t-1}|x_t) - E_q log q(x_{1:T}|x_0).
    e_log_p = -0.5 * (LOG2PI + m[T] ** 2 + V[T])
    for t in range(1, T + 1):
        resid2 = (m[t - 1] - a[t] * m[t] - e[t]) ** 2 + V[t - 1] + a[t] ** 2 * V[t] - 2 * a[t] * c[t]
        e_log_p += -0.5 * (math.log(2 * math.pi * v[t]) + resid2 / v[t])
    e_log_q = -0.5 * np.sum(np.log(2 * math.pi * betas) + 1)  # each step's residual has variance beta_t
    elbo_direct = e_log_p - e_log_q

    # KL form (4.9).
    rec = -0.5 * (math.log(2 * math.pi * v[1]) + ((x0 - a[1] * m[1] - e[1]) ** 2 + a[1] ** 2 * V[1]) / v[1])
    kl_T = 0.5 * (m[T] ** 2 + V[T] - math.log(V[T]) - 1)
    kl_sum = 0.0
    for t in range(2, T + 1):
        coef_x0 = math.sqrt(ab[t - 1]) * betas[t - 1] / (1 - ab[t])
        coef_xt = math.sqrt(1 - betas[t - 1]) * (1 - ab[t - 1]) / (1 - ab[t])
        beta_tilde = (1 - ab[t - 1]) * betas[t - 1] / (1 - ab[t])  # (4.8)
        gap_mean = coef_x0 * x0 + (coef_xt - a[t]) * m[t] - e[t]  # mean over x_t of mu_tilde - a x_t - e
        e_gap2 = gap_mean**2 + (coef_xt - a[t]) ** 2 * V[t]
        kl_sum += 0.5 * (math.log(v[t] / beta_tilde) + (beta_tilde + e_gap2) / v[t] - 1)
    elbo_kl = rec - kl_T - kl_sum
    assert elbo_kl == pytest.approx(elbo_direct, abs=1e-10)

    # The reverse model's exact marginal of x_0 (ancestral recursion from x_T ~ N(0, 1)).
    mean, var = 0.0, 1.0
    for t in range(T, 0, -1):
        mean, var = a[t] * mean + e[t], a[t] ** 2 * var + v[t]
    log_px0 = stats.norm.logpdf(x0, mean, math.sqrt(var))
    assert elbo_kl < log_px0
