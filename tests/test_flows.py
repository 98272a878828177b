"""helpers.flows against independent routes: autograd Jacobians for every log-determinant, exact
inverses, numerical integration of densities, torch.distributions, scipy's LU and the exact
discrete likelihood of a logit-normal model for bits per dimension."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from helpers import flows

@pytest.fixture(autouse=True)
def _float64():
    """Exact inverses and Jacobians to round-off; the default dtype is restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def random_net(net, std=0.5, seed=0):
    """A zero-initialised s/t network with random weights, so the layer is not the identity."""
    return flows.perturb_(net, std, seed)


log_abs_det_jacobian = flows.log_abs_det_jacobian


def check_layer(layer, x, atol=1e-5):
    """inverse(forward(x)) = x, and each example's logdet equals the autograd log|det J|."""
    y, logdet = layer(x)
    assert logdet.shape == (x.shape[0],)
    assert torch.allclose(layer.inverse(y), x, atol=atol)
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        expected = log_abs_det_jacobian(lambda v: layer(v)[0], xi)
        assert abs(logdet[i].item() - expected.item()) < 1e-6, (logdet[i].item(), expected.item())


def test_coupling_on_vectors_and_images():
    torch.manual_seed(0)
    for mask in flows.alternating_masks(5, 2):
        check_layer(flows.AffineCoupling(mask, random_net(flows.mlp_net(5, 8)).double()),
                    torch.randn(3, 5))
    layer = flows.AffineCoupling(flows.channel_mask(4), random_net(flows.conv_net(4, 6)).double())
    check_layer(layer, torch.randn(2, 4, 2, 3))


def test_coupling_keeps_masked_coordinates_and_is_not_trivial():
    mask = flows.alternating_masks(4, 1)[0]
    layer = flows.AffineCoupling(mask, random_net(flows.mlp_net(4, 8)).double())
    x = torch.randn(6, 4)
    y, logdet = layer(x)
    assert torch.equal(y[:, mask == 1], x[:, mask == 1])
    assert (y[:, mask == 0] - x[:, mask == 0]).abs().max() > 0.1
    assert logdet.abs().max() > 0.01


def test_actnorm_init_logdet_and_inverse():
    torch.manual_seed(1)
    x = 3 + 2 * torch.randn(64, 3, 4, 4)
    layer = flows.ActNorm(3).double().train()
    y, _ = layer(x)
    assert bool(layer.initialized)
    per_channel = y.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-4)
    # after initialisation it is an ordinary affine layer: logdet = H W sum log|a| (eq. 6.6)
    check_layer(layer.eval(), torch.randn(2, 3, 2, 2))
    check_layer(flows.ActNorm(3).double().eval(), torch.randn(2, 3))  # flat vectors too


@pytest.mark.parametrize("lu", [False, True])
def test_invconv_logdet_and_inverse(lu):
    layer = flows.InvConv1x1(3, lu=lu, generator=torch.Generator().manual_seed(2)).double()
    with torch.no_grad():  # move away from a rotation (|det| = 1) so the log-det is not 0
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    check_layer(layer, torch.randn(2, 3, 2, 2))
    W, logabsdet = layer.weight()
    assert abs(logabsdet.item()) > 0.01
    assert abs(logabsdet.item() - torch.linalg.slogdet(W)[1].item()) < 1e-10


def test_lu_weight_against_scipy():
    A = np.random.default_rng(4).normal(size=(5, 5))
    P, L, U = scipy.linalg.lu(A)  # A = P L U
    s = np.diag(U)
    W, logabsdet = flows.lu_weight(*(torch.tensor(m) for m in (P, L, U)),
                                   torch.tensor(np.log(np.abs(s))), torch.tensor(np.sign(s)))
    assert np.allclose(W.numpy(), A, atol=1e-12)
    assert abs(logabsdet.item() - np.linalg.slogdet(A)[1]) < 1e-10


def test_squeeze_is_a_permutation():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
    y = flows.squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    assert torch.equal(flows.unsqueeze(y), x)
    assert y[0, :4, 0, 0].tolist() == [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]
    with pytest.raises(ValueError, match="even height and width"):
        flows.squeeze(torch.zeros(1, 1, 3, 4))


def test_logit_transform_logdet_and_inverse():
    x = torch.rand(3, 1, 2, 2)
    y, logdet = flows.logit_transform(x, 0.05)
    assert torch.allclose(flows.logit_inverse(y, 0.05), x, atol=1e-12)
    for i in range(3):
        expected = log_abs_det_jacobian(lambda v: flows.logit_transform(v, 0.05)[0], x[i:i + 1])
        assert abs(logdet[i].item() - expected.item()) < 1e-8


def test_dequantize_stays_in_its_bin_and_is_uniform():
    k = torch.randint(0, 256, (20_000,), generator=torch.Generator().manual_seed(5)).double()
    x = flows.dequantize(k / 255, torch.Generator().manual_seed(6))
    assert torch.equal(torch.floor(x * 256), k)
    u = x * 256 - k
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005


@pytest.mark.parametrize("lu", [False, True])
def test_multiscale_flow_inverse_and_logdet(lu):
    flow = flows.MultiScaleFlow((1, 4, 4), n_scales=2, steps=2, hidden=4, lu=lu).double()
    for scale in flow.scales:
        for layer in scale:
            if isinstance(layer, flows.AffineCoupling):
                random_net(layer.net)
    flow.train()
    flow(torch.randn(16, 1, 4, 4))  # actnorm's data-dependent initialisation
    flow.eval()
    x = torch.randn(2, 1, 4, 4)
    z, logdet = flow(x)
    assert z.shape == (2, 16)
    assert torch.allclose(flow.inverse(z), x, atol=1e-5)
    for i in range(2):
        expected = log_abs_det_jacobian(lambda v: flow(v)[0], x[i:i + 1])
        assert abs(logdet[i].item() - expected.item()) < 1e-6


def test_flow_2d_density_integrates_to_one_and_matches_its_samples():
    flow = flows.coupling_flow(2, 6, 16)
    for i, layer in enumerate(flow.layers):
        random_net(layer.net, std=0.3, seed=i)
    flow = flow.double()
    mass = flows.grid_mass(flow.log_prob, lim=8, n=400)
    assert abs(mass - 1) < 0.01, mass
    # sampling is the inverse map: pushing samples back through f gives the base draws
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(8))
    x = flow.sample(5, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(flow(x)[0], z, atol=1e-5)


def test_ring_density_against_torch_distributions_and_grid():
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(8)),
        torch.distributions.Independent(torch.distributions.Normal(
            flows.ring_centres(), flows.RING_STD * torch.ones(8, 2)), 1))
    x = flows.sample_ring(500, torch.Generator().manual_seed(9)).double()
    assert torch.allclose(flows.ring_log_density(x), mix.log_prob(x), atol=1e-10)
    assert abs(flows.grid_mass(flows.ring_log_density, lim=4, n=400) - 1) < 1e-3


def test_moons_density_integrates_to_one_and_matches_a_kde():
    assert abs(flows.grid_mass(flows.moons_log_density, lim=4, n=160) - 1) < 1e-3
    x = flows.sample_moons(20_000, torch.Generator().manual_seed(10)).double().numpy()
    kde = scipy.stats.gaussian_kde(x.T, bw_method=0.05)
    probe = flows.sample_moons(300, torch.Generator().manual_seed(11)).double()
    exact = flows.moons_log_density(probe).numpy()
    estimated = np.log(kde(probe.numpy().T))
    # a KDE smooths the density a little, so compare on average and loosely
    assert abs(np.mean(exact - estimated)) < 0.1, np.mean(exact - estimated)


def test_entropy_mc_of_a_single_gaussian_limit():
    # far apart modes of std s: H = log 8 + log(2 pi e s^2) up to tiny overlaps
    H, se = flows.entropy_mc("ring", n=100_000)
    closed = math.log(8) + math.log(2 * math.pi * math.e * flows.RING_STD ** 2)
    assert abs(H - closed) < 4 * se + 1e-3, (H, closed, se)


def test_bits_per_dim_bounds_the_exact_discrete_likelihood():
    gen = torch.Generator().manual_seed(12)
    x = torch.randint(0, 256, (4, 1, 6, 6), generator=gen).double() / 255
    model = flows.LogitNormal(torch.zeros(1, 6, 6), 1.5, alpha=0.05)
    exact = model.exact_bits_per_dim(x)
    mc = torch.stack([flows.bits_per_dim(model, x, 0.05, gen) for _ in range(400)]).mean(0)
    assert (mc >= exact - 1e-3).all()
    assert torch.allclose(mc, exact, atol=0.01), (mc, exact)


def test_validation_messages():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        flows.coupling_forward([1.0, 2.0], torch.ones(2), None)
    with pytest.raises(ValueError, match="mask must hold both 0s and 1s"):
        flows.AffineCoupling(torch.ones(3), flows.mlp_net(3))
    with pytest.raises(ValueError, match="divisible by"):
        flows.MultiScaleFlow((1, 6, 6), n_scales=2)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        flows.sample_ring(0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        flows.ring_log_density(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="temperature must be positive"):
        flows.coupling_flow().sample(2, temperature=0)
    with pytest.raises(TypeError, match="Ops.lu_weight must be callable"):
        flows.Ops(lu_weight=3)


def test_log_abs_det_jacobian_of_a_linear_map():
    A = torch.randn(4, 4, generator=torch.Generator().manual_seed(13))
    got = flows.log_abs_det_jacobian(lambda v: v @ A.T, torch.randn(1, 4))
    assert abs(got.item() - torch.linalg.slogdet(A)[1].item()) < 1e-10
    with pytest.raises(ValueError, match="one example"):
        flows.log_abs_det_jacobian(lambda v: v, torch.zeros(2, 4))


def test_logit_normal_exact_likelihood_far_in_the_tails():
    # a narrow model centred on black pixels, scored on white ones: the bin mass underflows a
    # plain difference of CDFs, yet must come out finite and agree with scipy's log survival
    alpha, mean, std = 0.05, -2.9, 0.02
    model = flows.LogitNormal(torch.full((1, 2, 2), mean), std, alpha)
    x = torch.ones(1, 1, 2, 2)
    got = model.exact_bits_per_dim(x).item()
    edge = lambda v: (math.log(alpha + (1 - 2 * alpha) * v) - math.log(1 - alpha - (1 - 2 * alpha) * v) - mean) / std
    lo, hi = edge(255 / 256), edge(1.0)
    log_mass = scipy.stats.norm.logsf(lo) + np.log1p(-np.exp(scipy.stats.norm.logsf(hi) - scipy.stats.norm.logsf(lo)))
    assert math.isfinite(got) and abs(got - (-log_mass / math.log(2))) < 1e-6 * abs(got)
