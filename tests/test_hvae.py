"""The two-layer VAE helpers against independent routes.

The oracle is the linear-Gaussian chain, where log p(x) is the log-density of a multivariate normal
(torch.distributions.MultivariateNormal) and the exact ELBO of a Gaussian encoder is
log p(x) − KL(q ‖ posterior) between two multivariate normals (torch.distributions.kl_divergence).
Per-dimension KL terms are compared with torch.distributions.kl_divergence of univariate normals;
active units with a hand-built model whose encoder means are known.
"""

import math

import pytest
import torch
from torch import distributions as D

from helpers import hvae

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(model, n=6, seed=1):
    return model.sample_x(n, torch.Generator().manual_seed(seed))


def test_exact_encoder_gives_log_px_for_every_sample():
    """With one dimension per layer, the diagonal encoder can equal the posterior: then every
    importance weight equals p(x), so L_k (any k, any chunk) is log p(x) exactly. (The ELBO
    estimator has the top KL in closed form, which breaks that cancellation: it is exact only in
    expectation, tested below.)"""
    model = hvae.LinearGaussianHVAE(d=3, latent1=1, latent2=1, seed=4, perturb=0.0)
    x = _data(model)
    log_px = model.log_px(x)
    assert torch.allclose(model.exact_elbo(x), log_px, atol=1e-9)
    torch.manual_seed(0)
    assert torch.allclose(hvae.hvae_iw_bound(model, x, k=7, chunk=3), log_px, atol=1e-9)


def test_elbo_estimator_is_unbiased_for_the_exact_elbo():
    model = hvae.LinearGaussianHVAE(seed=0)
    x = _data(model)
    exact = model.exact_elbo(x)
    assert (exact < model.log_px(x) - 0.1).all(), "the diagonal encoder must leave a gap"
    torch.manual_seed(0)
    means = torch.stack([hvae.hvae_elbo(model, x, n_samples=2000).elbo for _ in range(20)])
    se = means.std(0) / math.sqrt(len(means))
    assert ((means.mean(0) - exact).abs() < 5 * se + 1e-6).all(), (means.mean(0), exact, se)


def test_elbo_terms_add_up_and_have_the_right_shapes():
    model = hvae.LinearGaussianHVAE(d=5, latent1=3, latent2=2, seed=2)
    x = _data(model, n=4)
    t = hvae.hvae_elbo(model, x, n_samples=5)
    assert t.elbo.shape == t.rec.shape == (4,) and t.kl1.shape == (4, 3) and t.kl2.shape == (4, 2)
    assert torch.allclose(t.elbo, t.rec - t.kl1.sum(-1) - t.kl2.sum(-1))


def test_top_kl_is_closed_form_against_torch_distributions():
    """With q(z2|z1) independent of z1, the top layer's KL per dimension is exact (no noise)."""
    model = hvae.LinearGaussianHVAE(d=4, latent1=3, latent2=2, seed=3)
    model.E = torch.zeros_like(model.E)
    x = _data(model)
    kl2 = hvae.hvae_elbo(model, x, n_samples=4).kl2
    ref = D.kl_divergence(D.Normal(model.e, (0.5 * model.logs2).exp()), D.Normal(0.0, 1.0))
    assert torch.allclose(kl2, ref.expand_as(kl2), atol=1e-10)


def test_bottom_kl_estimates_the_kl_to_the_prior_of_z1():
    """With p(z1|z2) independent of z2, E[log q(z1|x) − log p(z1|z2)] per dimension is the closed-form
    KL(q(z1|x) ‖ p(z1)); the Monte-Carlo estimate must agree within its standard error."""
    model = hvae.LinearGaussianHVAE(d=4, latent1=3, latent2=2, seed=5)
    model.A = torch.zeros_like(model.A)
    x = _data(model, n=3)
    torch.manual_seed(1)
    reps = torch.stack([hvae.hvae_elbo(model, x, n_samples=4000).kl1 for _ in range(10)])
    mu1, logvar1 = model.q1(x)
    ref = D.kl_divergence(D.Normal(mu1, (0.5 * logvar1).exp()),
                          D.Normal(model.a, (0.5 * model.logv1).exp()))
    se = reps.std(0) / math.sqrt(len(reps))
    assert ((reps.mean(0) - ref).abs() < 5 * se + 1e-6).all(), (reps.mean(0), ref)


def test_iw_bound_starts_at_the_elbo_and_rises_to_log_px():
    model = hvae.LinearGaussianHVAE(seed=0)
    x = _data(model, n=4)
    log_px, exact = model.log_px(x), model.exact_elbo(x)
    torch.manual_seed(2)
    means = {}
    for k in (1, 10, 100, 2000):
        reps = torch.stack([hvae.hvae_iw_bound(model, x, k, chunk=300) for _ in range(40)])
        means[k] = reps.mean(0)
        se = reps.std(0) / math.sqrt(len(reps))
        assert (means[k] < log_px + 5 * se + 1e-6).all(), f"k={k}: L_k above log p(x)"
        if k == 1:
            assert ((means[k] - exact).abs() < 5 * se).all(), "L_1 must be the ELBO"
    assert (means[1] < means[10]).all() and (means[10] < means[100]).all() and (means[100] < means[2000]).all()
    assert ((log_px - means[2000]) < 0.1 * (log_px - exact)).all(), "L_k must approach log p(x)"


def test_iw_bound_chunking_does_not_change_its_distribution():
    model = hvae.LinearGaussianHVAE(seed=6)
    x = _data(model, n=3)
    torch.manual_seed(3)
    a = torch.stack([hvae.hvae_iw_bound(model, x, 50, chunk=50) for _ in range(200)])
    b = torch.stack([hvae.hvae_iw_bound(model, x, 50, chunk=7) for _ in range(200)])
    se = (a.var(0) / 200 + b.var(0) / 200).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 5 * se).all()


def test_active_units_on_a_hand_built_model():
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = hvae.OneInformativeOneDead()
    exact1, exact2 = model.activity(x)
    # the stated activities, by brute force: average many draws of z2 itself (not of its mean)
    torch.manual_seed(5)
    mu1, logvar1 = model.q1(x)
    z1 = mu1 + (0.5 * logvar1).exp() * torch.randn(20_000, *mu1.shape, dtype=x.dtype)
    mu2, logvar2 = model.q2(z1)
    brute2 = (mu2 + (0.5 * logvar2).exp() * torch.randn_like(mu2)).mean(0).var(0)
    assert abs(brute2[0] - exact2[0]) < 0.03 * exact2[0] and brute2[1] < 0.01
    torch.manual_seed(4)
    a1, a2 = hvae.active_units(model, x, n_samples=4000)
    assert torch.allclose(a1, exact1)
    assert abs(a2[0] - exact2[0]) < 0.03 * exact2[0], (a2, exact2)
    assert abs(a2[0] - (x[:, 0] ** 2).var()) > 0.1 * exact2[0], "must average mu2 over q(z1|x)"
    # the second top unit depends on z1_1, whose mean is constant: only Monte-Carlo noise remains
    assert a2[1] < 0.01 and (a1 > 0.01).tolist() == [True, False]


def test_kl_weight_warms_up_linearly():
    assert hvae.kl_weight(0, 100) == 0.0
    assert hvae.kl_weight(25, 100, beta=2.0) == 0.5
    assert hvae.kl_weight(100, 100) == 1.0 and hvae.kl_weight(500, 100, beta=3.0) == 3.0
    assert hvae.kl_weight(0, 0, beta=4.0) == 4.0


def test_loss_without_free_bits_is_the_negative_elbo_and_beta_scales_the_kl():
    g = torch.Generator().manual_seed(0)
    rec, kl1, kl2 = torch.randn(8, generator=g), torch.rand(8, 5, generator=g), torch.rand(8, 3, generator=g)
    elbo = rec - kl1.sum(-1) - kl2.sum(-1)
    assert torch.allclose(hvae.hvae_loss(rec, kl1, kl2), -elbo.mean())
    kl = kl1.sum(-1).mean() + kl2.sum(-1).mean()
    assert torch.allclose(hvae.hvae_loss(rec, kl1, kl2, beta=3.0), -rec.mean() + 3 * kl)


def test_free_bits_floor_each_dimension_and_stop_its_gradient():
    g = torch.Generator().manual_seed(1)
    rec = torch.randn(8, generator=g)
    kl1 = (torch.rand(8, 4, generator=g) * torch.tensor([0.1, 2.0, 0.1, 2.0])).requires_grad_()
    kl2 = (torch.rand(8, 2, generator=g) * torch.tensor([0.1, 2.0])).requires_grad_()
    lam = 0.5
    loss = hvae.hvae_loss(rec, kl1, kl2, beta=2.0, free_bits=lam)
    means = torch.cat([kl1.mean(0), kl2.mean(0)]).detach()
    assert torch.allclose(loss, -rec.mean() + 2.0 * means.clamp(min=lam).sum())
    loss.backward()
    below = torch.tensor([True, False, True, False])
    assert (kl1.grad[:, below] == 0).all() and torch.allclose(kl1.grad[:, ~below], torch.full((8, 2), 2.0 / 8))
    assert (kl2.grad[:, 0] == 0).all() and torch.allclose(kl2.grad[:, 1], torch.full((8,), 2.0 / 8))


def test_mnist_models_shapes_and_gradients():
    torch.manual_seed(0)
    model = hvae.TwoLayerVAE(hidden=16, latent1=6, hidden_top=8, latent2=3)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    t = hvae.hvae_elbo(model, x, n_samples=2)
    assert t.kl1.shape == (5, 6) and t.kl2.shape == (5, 3) and torch.isfinite(t.elbo).all()
    (-t.elbo.mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert hvae.hvae_iw_bound(model, x, k=5, chunk=2).shape == (5,)
    s = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, 1, 28, 28) and ((s > 0) & (s < 1)).all()
    a1, a2 = hvae.active_units(model, x, n_samples=3)
    assert a1.shape == (6,) and a2.shape == (3,)
    vae = hvae.OneLayerVAE(hidden=16, latent=4)
    mu, logvar = vae.encode(x)
    assert mu.shape == (5, 4) and vae.log_likelihood(x, mu.unsqueeze(0)).shape == (1, 5)


@pytest.mark.parametrize("call, name", [
    (lambda m, x: hvae.hvae_elbo(object(), x), "model"),
    (lambda m, x: hvae.hvae_elbo(m, x, n_samples=0), "n_samples"),
    (lambda m, x: hvae.hvae_elbo(m, [1.0]), "x"),
    (lambda m, x: hvae.hvae_iw_bound(m, x, k=0), "k"),
    (lambda m, x: hvae.hvae_iw_bound(m, x, k=5, chunk=2.5), "chunk"),
    (lambda m, x: hvae.active_units(m, x[:1]), "x"),
    (lambda m, x: hvae.kl_weight(-1, 10), "step"),
    (lambda m, x: hvae.kl_weight(1, -10), "warmup_steps"),
    (lambda m, x: hvae.kl_weight(1, 10, beta=-1.0), "beta"),
    (lambda m, x: hvae.hvae_loss(torch.zeros(3), torch.zeros(3, 2), torch.zeros(2, 2)), "rec, kl1, kl2"),
    (lambda m, x: hvae.hvae_loss(torch.zeros(3), torch.zeros(3, 2), torch.zeros(3, 2), free_bits=-0.1), "free_bits"),
    (lambda m, x: hvae.hvae_loss(torch.zeros(3), torch.zeros(3, 2), torch.zeros(3, 2), beta=float("nan")), "beta"),
    (lambda m, x: hvae.TwoLayerVAE(latent2=0), "latent2"),
    (lambda m, x: hvae.LinearGaussianHVAE(perturb=-1.0), "perturb"),
])
def test_bad_arguments_are_named(call, name):
    model = hvae.LinearGaussianHVAE()
    x = _data(model, n=3)
    with pytest.raises((ValueError, TypeError), match=name):
        call(model, x)
