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
    (lambda m, x: hvae.LinearGaussianHVAE(latent1=0), "latent1"),
    (lambda m, x: hvae.OneLayerVAE(latent=0), "latent"),
    (lambda m, x: hvae.hvae_elbo(m, x[:0]), "x"),
    (lambda m, x: hvae.hvae_iw_bound(object(), x, k=3), "model"),
    (lambda m, x: hvae.hvae_iw_bound(m, x[0], k=3), "x"),
    (lambda m, x: hvae.active_units(object(), x), "model"),
    (lambda m, x: hvae.active_units(m, x[0]), "x"),
    (lambda m, x: hvae.active_units(m, x, n_samples=0), "n_samples"),
])
def test_bad_arguments_are_named(call, name):
    model = hvae.LinearGaussianHVAE()
    x = _data(model, n=3)
    with pytest.raises((ValueError, TypeError), match=name):
        call(model, x)


def test_the_smallest_inputs_are_accepted():
    """The edges of the input checks: one data point is a batch; two are enough for a variance;
    beta = 0 (no KL term at all) is a valid weight."""
    model = hvae.LinearGaussianHVAE()
    x = _data(model, n=2)
    assert hvae.hvae_elbo(model, x[:1]).elbo.shape == (1,)
    assert hvae.hvae_iw_bound(model, x[:1], k=2).shape == (1,)
    a1, a2 = hvae.active_units(model, x, n_samples=2)
    assert a1.shape == (3,) and a2.shape == (2,)
    assert hvae.kl_weight(5, 10, beta=0.0) == 0.0
    rec, kl = torch.randn(4, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    assert hvae.hvae_loss(rec, kl, kl, beta=0.0) == -rec.mean()


def test_free_bits_zero_keeps_a_negative_kl_estimate():
    """kl1 is a Monte-Carlo log-ratio, so its batch mean can be negative: without free bits it
    enters the loss as it is (a floor at 0 would change the loss)."""
    rec = torch.zeros(3)
    kl1 = torch.tensor([[-0.5, 1.0], [-0.3, 1.0], [-0.1, 1.0]])
    kl2 = torch.ones(3, 1)
    assert torch.allclose(hvae.hvae_loss(rec, kl1, kl2, free_bits=0.0), torch.tensor(-0.3 + 1.0 + 1.0))


def test_elbo_default_is_one_sample():
    """hvae_elbo(model, x) is the one-sample estimator (the usual training objective)."""
    model = hvae.LinearGaussianHVAE()
    x = _data(model, n=3)
    torch.manual_seed(7)
    default = hvae.hvae_elbo(model, x)
    torch.manual_seed(7)
    one = hvae.hvae_elbo(model, x, n_samples=1)
    assert torch.equal(default.elbo, one.elbo) and torch.equal(default.kl1, one.kl1)


def test_two_layer_defaults_are_burda_et_al_s_architecture():
    """Burda et al. 2016 (ICLR, arXiv:1509.00519, appendix C): 784-200-200-100 for the bottom
    layer and 100-100-100-50 for the top, as the class's docstring states."""
    model = hvae.TwoLayerVAE()
    widths = {name: [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)]
              for name, net in (("enc1", model.enc1), ("enc2", model.enc2), ("prior1", model.prior1),
                                ("dec", model.dec))}
    assert widths == {"enc1": [(784, 200), (200, 200), (200, 200)],
                      "enc2": [(100, 100), (100, 100), (100, 100)],
                      "prior1": [(50, 100), (100, 100), (100, 200)],
                      "dec": [(100, 200), (200, 200), (200, 784)]}


def test_two_layer_sample_draws_z1_from_the_prior_p_z1_given_z2():
    """A TwoLayerVAE whose p(z1|z2) is N(1 + 2 z2_0, 4) in every dimension and whose decoder
    writes 0.1 z1_0 as the logit of every pixel: the samples' logits, read back, must have the
    law of z1_0, mean 1 and variance 4 + 4 (z2_0 ~ N(0, 1) and the prior's own variance 4)."""
    torch.manual_seed(0)
    model = hvae.TwoLayerVAE(hidden=4, latent1=2, hidden_top=4, latent2=2)
    with torch.no_grad():
        prior = torch.nn.Linear(2, 4)
        prior.weight.zero_()
        prior.weight[:2, 0] = 2.0
        prior.bias.copy_(torch.tensor([1.0, 1.0, math.log(4.0), math.log(4.0)]))
        dec = torch.nn.Linear(2, 784)
        dec.weight.zero_()
        dec.weight[:, 0] = 0.1
        dec.bias.zero_()
    model.prior1, model.dec = prior, dec
    s = model.sample(8000, generator=torch.Generator().manual_seed(3))
    z1 = 10 * torch.logit(s[:, 0, 0, 0].double())
    assert torch.equal(s, s[:, :, :1, :1].expand_as(s)), "every pixel is the same logit"
    assert abs(z1.mean() - 1.0) < 4 * math.sqrt(8 / 8000), z1.mean()
    assert abs(z1.var() - 8.0) < 4 * 8 * math.sqrt(2 / 8000), z1.var()


def test_sample_x_is_reproducible_from_its_generator():
    model = hvae.LinearGaussianHVAE()
    torch.manual_seed(0)
    a = model.sample_x(5, torch.Generator().manual_seed(11))
    torch.manual_seed(1)
    b = model.sample_x(5, torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


def test_exact_elbo_of_one_data_point():
    """q_joint builds the covariance of one data point from the batch's row 0: a batch of one
    must work and give that point's value in a larger batch."""
    model = hvae.LinearGaussianHVAE()
    x = _data(model, n=3)
    assert torch.allclose(model.exact_elbo(x[1:2]), model.exact_elbo(x)[1:2], atol=1e-12)


def test_linear_gaussian_model_is_the_stated_chain():
    """The default test model (d = 4, K1 = 3, K2 = 2, seed 0) against an independent build:
    its generative parameters drawn in the stated order (A ~ N(0, 1), a ~ N(0, 0.5²),
    log v1 ~ N(−0.5, 0.3²), then B, b, log v0 alike), log p(x) as the normal with mean B a + b and
    covariance B (A Aᵀ + V1) Bᵀ + V0 (torch.distributions), and with perturb = 0 the encoder's
    conditionals equal to the exact posterior's (means and variances by Gaussian conditioning)."""
    model = hvae.LinearGaussianHVAE()
    g = torch.Generator().manual_seed(0)

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    A, a, logv1 = draw(3, 2), 0.5 * draw(3), 0.3 * draw(3) - 0.5
    B, b, logv0 = draw(4, 3), 0.5 * draw(4), 0.3 * draw(4) - 0.5
    for name, ref in (("A", A), ("a", a), ("logv1", logv1), ("B", B), ("b", b), ("logv0", logv0)):
        assert torch.equal(getattr(model, name), ref), name
    cov_z1 = A @ A.T + torch.diag(logv1.exp())
    marginal = D.MultivariateNormal(B @ a + b, B @ cov_z1 @ B.T + torch.diag(logv0.exp()))
    x = _data(model, n=5)
    assert torch.allclose(model.log_px(x), marginal.log_prob(x), atol=1e-10)
    assert model.C.shape == (3, 4) and model.E.shape == (2, 3)

    exact = hvae.LinearGaussianHVAE(perturb=0.0)
    cov_xz1, cov_x = B @ cov_z1, marginal.covariance_matrix
    gain1 = cov_xz1.T @ torch.linalg.inv(cov_x)
    mu1, logvar1 = exact.q1(x)
    assert torch.allclose(mu1, a + (x - marginal.mean) @ gain1.T, atol=1e-10)
    assert torch.allclose(logvar1[0].exp(), torch.diag(cov_z1 - gain1 @ cov_xz1), atol=1e-10)
    gain2 = A.T @ torch.linalg.inv(cov_z1)  # Cov(z2, z1) = Aᵀ
    z1 = torch.randn(7, 3, generator=g, dtype=torch.float64)
    mu2, logvar2 = exact.q2(z1)
    assert torch.allclose(mu2, (z1 - a) @ gain2.T, atol=1e-10)
    assert torch.allclose(logvar2[0].exp(), torch.diag(torch.eye(2, dtype=torch.float64) - gain2 @ A),
                          atol=1e-10)
    assert torch.allclose(exact.posterior(x).mean[:, :3], mu1, atol=1e-10)


def test_hand_built_model_is_as_its_docstring_states():
    """OneInformativeOneDead's exact activities rest on its stated conditionals:
    q(z1|x) = N((x0, 3), diag(s, s)), s = 0.5 + x1²; q(z2|z1) = N((z1_0², 2 z1_1 + 1), I);
    p(z1|z2) = N(z2, I); log p(x|z1) = 0 of shape (S, B)."""
    model = hvae.OneInformativeOneDead()
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-1.0, 2.0]], dtype=torch.float64)
    mu1, logvar1 = model.q1(x)
    s = 0.5 + x[:, 1] ** 2
    assert torch.equal(mu1, torch.stack([x[:, 0], torch.full((3,), 3.0, dtype=x.dtype)], -1))
    assert torch.allclose(logvar1, s.log().unsqueeze(-1).expand(3, 2))
    z1 = torch.tensor([[[1.5, -2.0], [0.0, 0.5], [3.0, 1.0]]] * 2, dtype=torch.float64)  # (2, 3, 2)
    mu2, logvar2 = model.q2(z1)
    assert torch.equal(mu2, torch.stack([z1[..., 0] ** 2, 2 * z1[..., 1] + 1], -1))
    assert torch.equal(logvar2, torch.zeros(2, 3, 2, dtype=x.dtype))
    pmu, plogvar = model.p1(mu2)
    assert torch.equal(pmu, mu2) and torch.equal(plogvar, torch.zeros_like(mu2))
    ll = model.log_likelihood(x, z1)
    assert ll.shape == (2, 3) and torch.equal(ll, torch.zeros(2, 3, dtype=x.dtype))
