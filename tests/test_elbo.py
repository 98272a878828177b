"""The ELBO helpers against independent routes: torch.distributions and a model with a known log p(x)."""

import math

import pytest
import torch
from torch import distributions as D

from helpers import elbo


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(64, 8, generator=g) * 2, torch.randn(64, 8, generator=g)
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    p = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    assert torch.allclose(elbo.gaussian_kl(mu, logvar), D.kl_divergence(q, p), rtol=1e-5, atol=1e-5)
    assert torch.allclose(elbo.gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_gaussian_kl_sums_over_the_last_dimension_only():
    """Extra leading dimensions (S, B, K) stay: kills a sum over dimension 1 instead of −1."""
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    p = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    kl = elbo.gaussian_kl(mu, logvar)
    assert kl.shape == (3, 4) and torch.allclose(kl, D.kl_divergence(q, p), atol=1e-5)


def test_split_latent_halves_the_encoder_output():
    for k in (2, 3):
        h = torch.arange(4.0 * k).reshape(2, 2 * k)
        mu, logvar = elbo.split_latent(h)
        assert torch.equal(mu, h[:, :k]) and torch.equal(logvar, h[:, k:])


def test_log_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, logvar, z = (torch.randn(5, 3, generator=g) for _ in range(3))
    ref = D.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(elbo.log_normal(z, mu, logvar), ref, atol=1e-5)
    assert torch.allclose(elbo.log_standard_normal(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-6)
    x = torch.bernoulli(torch.full((4, 1, 2, 2), 0.5), generator=g)
    logits = torch.randn(3, 4, 1, 2, 2, generator=g)
    ref = D.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(2).sum(-1)
    assert torch.allclose(elbo.log_bernoulli(x, logits), ref, atol=1e-5)


def test_reparameterize_moments_and_gradients():
    mu = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    z = elbo.reparameterize(mu, logvar, 200_000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (200_000, 1, 2)
    assert torch.allclose(z.mean(0), mu.detach(), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([[1.0, 2.0]]), atol=0.02)
    z.mean().backward()  # d mean(z)/d mu = 1/2 per coordinate
    assert torch.allclose(mu.grad, torch.full((1, 2), 0.5))


# A linear-Gaussian model where everything is known in closed form:
# p(z) = N(0, I_K), p(x|z) = N(W z + b, s² I_D)  ⇒  p(x) = N(b, W Wᵀ + s² I), and the exact
# posterior p(z|x) = N(m, C) with C = (I + WᵀW/s²)⁻¹, m = C Wᵀ (x − b)/s².
K, DIM, S2 = 2, 3, 0.5


def _linear_gaussian():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(DIM, K, generator=g, dtype=torch.float64)
    b = torch.randn(DIM, generator=g, dtype=torch.float64)
    x = torch.randn(4, DIM, generator=g, dtype=torch.float64) * 2
    log_px = D.MultivariateNormal(b, W @ W.T + S2 * torch.eye(DIM)).log_prob(x)

    def log_lik(x, z):  # (S, B)
        return D.Normal(z @ W.T + b, math.sqrt(S2)).log_prob(x).sum(-1)
    C = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + W.T @ W / S2)
    m = (x - b) @ W @ C / S2  # C symmetric
    return x, log_px, log_lik, m, C


def test_elbo_estimators_equal_log_px_minus_kl_and_iw_bound_rises_with_k():
    x, log_px, log_lik, m, C = _linear_gaussian()
    torch.manual_seed(0)
    # a deliberately poor q: the ELBO lies below log p(x) by KL(q ‖ p(z|x))
    mu, logvar = torch.zeros_like(m), torch.zeros_like(m)
    a = elbo.elbo_analytic(x, mu, logvar, log_lik, n_samples=20_000)
    s = elbo.elbo_sgvb(x, mu, logvar, log_lik, n_samples=20_000)
    post = D.MultivariateNormal(m, C)
    q = D.MultivariateNormal(mu, torch.diag_embed(logvar.exp()))
    gap = D.kl_divergence(q, post)  # log p(x) − ELBO, exactly
    assert torch.allclose(a, log_px - gap, atol=0.05)
    assert torch.allclose(s, log_px - gap, atol=0.1)
    assert (a < log_px).all()
    # the IW bound increases with k and approaches log p(x)
    l1, l10, l1000 = (elbo.iw_bound(x, mu, logvar, log_lik, k) for k in (1, 10, 1000))
    assert (l10.mean() > l1.mean()) and (l1000.mean() > l10.mean())
    assert (log_px - l1000).abs().max() < 0.5 * (log_px - a).min()


def test_elbo_estimators_with_a_q_unlike_the_prior():
    """Kills an analytic ELBO that adds the KL, and an SGVB estimator without log p(z) − log q(z).

    With q = N(0, I) = p(z) both mistakes are invisible (KL = 0, log p(z) − log q(z) ≡ 0), so
    here q is shifted and rescaled away from the prior and from the posterior.
    """
    x, log_px, log_lik, m, C = _linear_gaussian()
    mu = m + 0.7
    logvar = (C.diagonal() * 2.5).log().expand_as(m) + torch.tensor([0.0, -0.8], dtype=m.dtype)
    gap = D.kl_divergence(D.MultivariateNormal(mu, torch.diag_embed(logvar.exp())),
                          D.MultivariateNormal(m, C))  # log p(x) − ELBO, exactly
    kl_prior = elbo.gaussian_kl(mu, logvar)
    assert (kl_prior > 0.5).all()  # the KL term is far from zero: a sign error shows
    torch.manual_seed(2)
    a = elbo.elbo_analytic(x, mu, logvar, log_lik, n_samples=20_000)
    s = elbo.elbo_sgvb(x, mu, logvar, log_lik, n_samples=20_000)
    assert torch.allclose(a, log_px - gap, atol=0.05)
    assert torch.allclose(s, log_px - gap, atol=0.05)


def test_reparameterize_gradient_reaches_logvar():
    """d z / d logvar = ½ σ ε: kills a ``logvar.detach()`` (or σ = exp(logvar)) in reparameterize.

    Checked against central finite differences with the same noise (same generator seed).
    """
    mu = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.5, -1.2, 0.0]], dtype=torch.float64, requires_grad=True)

    def f(lv):
        z = elbo.reparameterize(mu, lv, 4, generator=torch.Generator().manual_seed(7))
        return (z * torch.arange(1.0, 5.0, dtype=torch.float64)[:, None, None]).sum()

    f(logvar).backward()
    h = 1e-6
    fd = torch.zeros_like(logvar)
    for k in range(3):
        e = torch.zeros_like(logvar)
        e[0, k] = h
        fd[0, k] = (f(logvar.detach() + e) - f(logvar.detach() - e)) / (2 * h)
    assert logvar.grad is not None and logvar.grad.abs().min() > 1e-3
    assert torch.allclose(logvar.grad, fd, rtol=1e-6, atol=1e-8)


def test_single_sample_defaults_and_l1_is_the_elbo():
    """By default one z per data point; L_1 equals the one-sample SGVB ELBO drawn with the same
    seed, and the analytic ELBO uses the same z (a fixed seed reproduces them by hand)."""
    x, _, log_lik, m, C = _linear_gaussian()
    mu, logvar = m + 0.3, C.diagonal().log().expand_as(m)
    torch.manual_seed(5)
    z = mu + (0.5 * logvar).exp() * torch.randn(1, *mu.shape, dtype=mu.dtype)
    assert elbo.reparameterize(mu, logvar).shape == (1, *mu.shape)
    by_hand = (log_lik(x, z) + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
               - D.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1))[0]
    for estimate in (lambda: elbo.elbo_sgvb(x, mu, logvar, log_lik),
                     lambda: elbo.iw_bound(x, mu, logvar, log_lik, k=1)):
        torch.manual_seed(5)
        assert torch.allclose(estimate(), by_hand, atol=1e-10)
    torch.manual_seed(5)
    analytic = elbo.elbo_analytic(x, mu, logvar, log_lik)
    assert torch.allclose(analytic, log_lik(x, z)[0] - elbo.gaussian_kl(mu, logvar), atol=1e-10)


def test_iw_bound_draws_exactly_k_samples_in_chunks():
    sizes = []

    def log_lik(x, z):
        sizes.append(z.shape[0])
        return torch.zeros(z.shape[:2])

    elbo.iw_bound(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 1), log_lik, k=17, chunk=5)
    assert sizes == [5, 5, 5, 2]


def test_iw_bound_near_log_px_with_diagonal_posterior_proposal_and_chunking_does_not_matter():
    x, log_px, log_lik, m, C = _linear_gaussian()
    # q with the posterior's mean and marginal variances (a diagonal approximation, not the exact
    # correlated posterior): close enough that L_k with k = 2000 is within 0.02 of log p(x)
    mu, logvar = m, C.diagonal().log().expand_as(m)
    torch.manual_seed(1)
    a = elbo.iw_bound(x, mu, logvar, log_lik, k=2000, chunk=2000)
    torch.manual_seed(1)
    b = elbo.iw_bound(x, mu, logvar, log_lik, k=2000, chunk=7)
    assert torch.allclose(a, log_px, atol=0.02)
    assert torch.allclose(b, log_px, atol=0.02)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="output size must be even.*got 5"):
        elbo.split_latent(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"2-D tensor \(B, 2K\)"):
        elbo.split_latent(torch.zeros(4))
    with pytest.raises(ValueError, match="mu and logvar must be tensors of the same shape"):
        elbo.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mu and logvar must be tensors of the same shape"):
        elbo.gaussian_kl(torch.zeros(2, 3), [[0.0] * 3] * 2)
    for fn in (lambda mu, lv: elbo.reparameterize(mu, lv),
               lambda mu, lv: elbo.iw_bound(torch.zeros(2, 3), mu, lv, lambda x, z: z.sum(-1), 3)):
        with pytest.raises(ValueError, match="mu and logvar must be tensors of the same shape"):
            fn(torch.zeros(2, 3), torch.zeros(2, 4))
        with pytest.raises(ValueError, match="mu and logvar must be tensors of the same shape"):
            fn([[0.0] * 3] * 2, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_samples must be a positive integer, got 0"):
        elbo.reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        elbo.iw_bound(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 1), lambda x, z: z.sum(-1), 0)


def _gaussian_lik(x, z):  # a decoder N(z, I) on x (B, K): (S, B)
    return D.Normal(z, 1.0).log_prob(x).sum(-1)


@pytest.mark.parametrize("estimate", [
    lambda x, mu, lv: elbo.elbo_sgvb(x, mu, lv, _gaussian_lik),
    lambda x, mu, lv: elbo.elbo_analytic(x, mu, lv, _gaussian_lik),
    lambda x, mu, lv: elbo.iw_bound(x, mu, lv, _gaussian_lik, k=3),
], ids=["sgvb", "analytic", "iw"])
def test_estimators_refuse_x_of_another_batch(estimate):
    """x must hold the B data points of mu: a wrong batch would otherwise broadcast silently
    (x (1, K) against z (S, B, K)) or fail inside the model with an unnamed error."""
    mu = lv = torch.zeros(4, 2)
    for x in (torch.zeros(3, 2), torch.zeros(1, 2), torch.tensor(1.0), [[0.0, 0.0]] * 4):
        with pytest.raises(ValueError, match="x and mu must hold the same batch"):
            estimate(x, mu, lv)
    assert estimate(torch.zeros(4, 2), mu, lv).shape == (4,)


def test_one_number_per_data_point_is_a_batch():
    """x (B,): B data points of one number each (x.ndim = 1 is allowed)."""
    mu, lv = torch.zeros(5, 1), torch.zeros(5, 1)
    x = torch.randn(5)
    out = elbo.elbo_analytic(x, mu, lv, lambda x, z: D.Normal(z[..., 0], 1.0).log_prob(x))
    assert out.shape == (5,)


def test_log_bernoulli_shape_checks_and_broadcasting():
    """logits (..., B, D...) must end in x's shape, where x may have size 1 (broadcast)."""
    g = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((4, 3), 0.5), generator=g)
    logits = torch.randn(4, 3, generator=g)  # as many dimensions as x: no sample dimension
    ref = D.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(elbo.log_bernoulli(x, logits), ref, atol=1e-6)
    one = x[:1]  # one image against logits of four
    ref = D.Bernoulli(logits=logits).log_prob(one.expand(4, 3)).sum(-1)
    assert torch.allclose(elbo.log_bernoulli(one, logits), ref, atol=1e-6)
    for bad_x, bad_logits in ((x, torch.zeros(3)), (x, torch.zeros(2, 4, 5)), (x.tolist(), logits),
                              (x, logits.tolist())):
        with pytest.raises(ValueError, match="logits must end in the shape of x"):
            elbo.log_bernoulli(bad_x, bad_logits)


def test_iw_bound_chunk_is_checked_and_one_at_a_time_works():
    mu = lv = torch.zeros(2, 1)
    for chunk in (0, 2.5, True):
        with pytest.raises(ValueError, match="chunk .samples drawn at a time. must be a positive integer"):
            elbo.iw_bound(torch.zeros(2, 1), mu, lv, _gaussian_lik, k=3, chunk=chunk)
    sizes = []

    def lik(x, z):
        sizes.append(z.shape[0])
        return _gaussian_lik(x, z)

    assert elbo.iw_bound(torch.zeros(2, 1), mu, lv, lik, k=3, chunk=1).shape == (2,) and sizes == [1, 1, 1]
