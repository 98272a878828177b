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


# ------------------------------------------------------------------ inputs each function refuses

@pytest.mark.parametrize("call, error, match", [
    (lambda: flows.coupling_inverse([1.0, 2.0], torch.ones(2), None), TypeError, "y must be a torch.Tensor"),
    (lambda: flows.coupling_inverse(torch.ones(2), torch.ones(2), None), ValueError, "y must have at least 2"),
    (lambda: flows.actnorm_init(torch.ones(5)), ValueError, "x must have at least 2"),
    (lambda: flows.actnorm_forward(torch.ones(5), torch.zeros(5), torch.zeros(5)), ValueError, "x must have at least 2"),
    (lambda: flows.actnorm_inverse(torch.ones(5), torch.zeros(5), torch.zeros(5)), ValueError, "y must have at least 2"),
    (lambda: flows.invconv_forward(torch.ones(2, 3), torch.eye(3), torch.zeros(())), ValueError, "x must have at least 4"),
    (lambda: flows.invconv_inverse(torch.ones(2, 3), torch.eye(3)), ValueError, "y must have at least 4"),
    (lambda: flows.dequantize([0.5]), TypeError, "x must be a torch.Tensor"),
    (lambda: flows.logit_transform(torch.full((4,), 0.5)), ValueError, "x must have at least 2"),
    (lambda: flows.squeeze(torch.ones(1, 2, 2)), ValueError, "x must have at least 4"),
    (lambda: flows.unsqueeze(torch.ones(4, 2, 2)), ValueError, "x must have at least 4"),
    (lambda: flows.AffineCoupling([0.0, 1.0], flows.mlp_net(2)), TypeError, "mask must be a torch.Tensor"),
    (lambda: flows.AffineCoupling(torch.tensor([0.0, 1.0]), flows.mlp_net(2), ops="ops"), TypeError,
     "ops must be a flows.Ops"),
    (lambda: flows.InvConv1x1(0), ValueError, "channels must be a positive integer"),
    (lambda: flows.InvConv1x1(2.5), ValueError, "channels must be a positive integer"),
])
def test_each_function_names_its_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------ edges and defaults

def test_flat_vectors_and_single_channels_and_single_images():
    """The smallest shapes each function accepts: actnorm's initialisation and the logit transform
    on flat (B, D) data, a one-channel image (MNIST's), a 1x1 convolution on one channel, and
    bits per dimension of one image."""
    torch.manual_seed(0)
    x = 3 + 2 * torch.randn(256, 3)
    log_a, b = flows.actnorm_init(x)
    y, _ = flows.actnorm_forward(x, log_a, b)
    assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(3), atol=1e-4)
    check_layer(flows.ActNorm(1).double().train(), torch.randn(3, 1, 2, 2))
    check_layer(flows.InvConv1x1(1, lu=True).double(), torch.randn(2, 1, 2, 2))
    u = torch.rand(3, 4)
    y, logdet = flows.logit_transform(u)
    expected = log_abs_det_jacobian(lambda v: flows.logit_transform(v)[0], u[:1])
    assert abs(logdet[0].item() - expected.item()) < 1e-8
    model = flows.LogitNormal(torch.zeros(1, 2, 2), 1.0)
    img = torch.randint(0, 256, (1, 1, 2, 2), generator=torch.Generator().manual_seed(1)).double() / 255
    assert flows.bits_per_dim(model, img).shape == (1,)


def test_actnorm_init_of_a_constant_channel_is_finite():
    """A channel constant over the first batch (a black border pixel): std = 0, and the 1e-6
    guard must keep log_a finite (log_a = −log 1e-6) and the output at 0."""
    x = torch.randn(16, 2, 3, 3)
    x[:, 1] = 0.0
    log_a, b = flows.actnorm_init(x)
    assert torch.isfinite(log_a).all() and torch.isfinite(b).all()
    assert abs(log_a[1].item() + math.log(1e-6)) < 1e-9


def test_actnorm_initialises_once_and_only_in_training():
    layer = flows.ActNorm(2).double().eval()
    x = 5 + 3 * torch.randn(8, 2)
    assert torch.equal(layer(x)[0], x) and not bool(layer.initialized)  # eval: identity, no init
    layer.train()
    layer(x)
    first = (layer.log_a.detach().clone(), layer.b.detach().clone())
    layer(10 * x - 4)  # a second batch with other statistics: no new initialisation
    assert torch.equal(layer.log_a, first[0]) and torch.equal(layer.b, first[1])


def test_logit_defaults_agree_with_each_other_and_with_realnvp():
    """alpha = 0.05 (Dinh et al. 2017, ICLR, arXiv:1605.08803, sec. 4.1) by default in the
    transform, its inverse and bits per dimension, so that the defaults invert each other."""
    x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(2))
    y, logdet = flows.logit_transform(x)
    assert torch.equal(y, flows.logit_transform(x, 0.05)[0])
    assert torch.allclose(flows.logit_inverse(y), x, atol=1e-12)
    model = flows.LogitNormal(torch.zeros(1, 3, 3), 1.0)
    k = torch.randint(0, 256, (2, 1, 3, 3), generator=torch.Generator().manual_seed(3)).double() / 255
    a = flows.bits_per_dim(model, k, generator=torch.Generator().manual_seed(4))
    b = flows.bits_per_dim(model, k, 0.05, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_new_couplings_start_as_the_identity():
    """The last layer of mlp_net and conv_net starts at zero: s = t = 0, y = x, logdet = 0."""
    for layer, x in ((flows.AffineCoupling(flows.alternating_masks(4, 1)[0], flows.mlp_net(4, 8)),
                      torch.randn(3, 4)),
                     (flows.AffineCoupling(flows.channel_mask(4), flows.conv_net(4, 6)),
                      torch.randn(2, 4, 3, 3))):
        y, logdet = layer.double()(x)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(len(x)))


def test_mlp_net_has_depth_hidden_layers():
    net = flows.mlp_net(3, 16, depth=3)
    widths = [(m.in_features, m.out_features) for m in net.body if isinstance(m, torch.nn.Linear)]
    assert widths == [(3, 16), (16, 16), (16, 16), (16, 6)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.body) == 3


def test_alternating_masks_start_with_the_even_coordinates():
    even, odd = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])
    masks = flows.alternating_masks(5, 4)
    assert len(masks) == 4 and all(torch.equal(m, r) for m, r in zip(masks, [even, odd, even, odd]))


def test_ops_are_used_by_the_layers_and_cannot_be_changed_in_place():
    """A layer built with ``ops`` calls those functions (the notebook's student versions); the
    shared reference record is frozen, so no notebook cell can change every layer at once."""
    calls = []

    def spy(x, mask, net):
        calls.append(x.shape)
        return flows.coupling_forward(x, mask, net)

    ops = flows.with_ops(coupling_forward=spy)
    layer = flows.AffineCoupling(flows.alternating_masks(2, 1)[0], flows.mlp_net(2, 4), ops)
    layer(torch.randn(3, 2))
    assert calls == [(3, 2)]
    import dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        flows.REFERENCE_OPS.coupling_forward = spy


def test_invconv_is_lu_parametrised_by_default():
    """Glow's LU form (O(C) log-determinant) is the default of the layer, as of glow_step."""
    assert flows.InvConv1x1(3).lu and hasattr(flows.InvConv1x1(3), "log_s")
    assert flows.glow_step(4, 8)[1].lu


@pytest.mark.parametrize("call, match", [
    (lambda: flows.alternating_masks(1, 2), "dim must be an integer >= 2"),
    (lambda: flows.alternating_masks(2.0, 2), "dim must be an integer >= 2"),
    (lambda: flows.alternating_masks(True, 2), "dim must be an integer >= 2"),
    (lambda: flows.channel_mask(1), "at least 2 channels"),
    (lambda: flows.MultiScaleFlow((1, 8, 6), n_scales=2), "divisible by"),
    (lambda: flows.MultiScaleFlow((1, 12, 12), n_scales=3), "divisible by"),
    (lambda: flows.sample_ring(1.5), "n must be a positive integer"),
    (lambda: flows.ring_log_density([[0.0, 0.0]]), "x must be a torch.Tensor"),
    (lambda: flows.ring_log_density(torch.zeros(3, 2, 3)), r"x must have shape \(N, 2\)"),
    (lambda: flows.moons_log_density([[0.0, 0.0]]), "x must be a torch.Tensor"),
    (lambda: flows.log_abs_det_jacobian(lambda v: v, [[1.0, 2.0]]), "x must be a torch.Tensor"),
    (lambda: flows.log_abs_det_jacobian(lambda v: v, torch.ones(3)), "x must have at least 2"),
    (lambda: flows.grid(0.0, 10), "lim > 0"),
    (lambda: flows.grid(1.0, 1), "n >= 2"),
    (lambda: flows.grid(1.0, 2.0), "n >= 2"),
])
def test_more_bad_inputs_are_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_masks_of_the_smallest_sizes():
    assert [m.tolist() for m in flows.alternating_masks(2, 2)] == [[1.0, 0.0], [0.0, 1.0]]
    for c, kept in ((2, [1, 0]), (3, [1, 0, 0]), (4, [1, 1, 0, 0])):  # the first floor(C / 2)
        assert flows.channel_mask(c).flatten().tolist() == kept


def _multiscale(shape, n_scales):
    flow = flows.MultiScaleFlow(shape, n_scales=n_scales, steps=1, hidden=4).double()
    for scale in flow.scales:
        for layer in scale:
            if isinstance(layer, flows.AffineCoupling):
                random_net(layer.net)
    flow.train()
    flow(torch.randn(8, *shape))  # actnorm's initialisation
    return flow.eval()


def test_multiscale_flow_with_three_scales_two_channels_and_rectangles():
    """Three scales (two factored-out parts), a two-channel image in a batch of three (the batch
    and channel sizes differ), and H != W: inverse(forward(x)) = x, logdet by autograd."""
    for shape, n_scales in (((1, 8, 8), 3), ((2, 4, 4), 2), ((1, 4, 8), 2)):
        flow = _multiscale(shape, n_scales)
        x = torch.randn(3, *shape)
        z, logdet = flow(x)
        assert z.shape == (3, math.prod(shape)) and logdet.shape == (3,)
        assert torch.allclose(flow.inverse(z), x, atol=1e-8)
        expected = log_abs_det_jacobian(lambda v: flow(v)[0], x[:1])
        assert abs(logdet[0].item() - expected.item()) < 1e-6


def test_multiscale_flow_samples_images_and_takes_z_of_any_shape():
    flow = _multiscale((1, 4, 8), 2)
    assert flow.event_shape == (32,)
    x = flow.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 4, 8)
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(flow(x)[0], z, atol=1e-8)
    assert torch.equal(flow.inverse(z.reshape(3, 1, 4, 8)), flow.inverse(z))


def test_ring_is_eight_modes_on_a_circle_of_radius_two_and_its_samples_follow_it():
    """sample_ring's docstring: an equal mixture of 8 isotropic Gaussians of std 0.25 whose
    centres sit at angles 2πk/8 on a circle of radius 2."""
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    assert torch.allclose(flows.ring_centres(), 2 * torch.stack([angles.cos(), angles.sin()], 1))
    assert flows.sample_ring(1).shape == (1, 2)
    x = flows.sample_ring(16_000, torch.Generator().manual_seed(1)).double()
    d = torch.cdist(x, flows.ring_centres())
    nearest = d.argmin(1)  # neighbours are 1.53 apart, 6 std: the nearest is the mode drawn
    e = x - flows.ring_centres()[nearest]
    assert abs(e.std().item() - 0.25) < 0.005 and e.mean(0).abs().max() < 0.006
    counts = torch.bincount(nearest, minlength=8).double()
    assert ((counts - 2000).abs() < 4 * math.sqrt(2000 * 7 / 8)).all(), counts


def test_moons_density_against_sklearn_arcs():
    """The arcs of sklearn.datasets.make_moons (noise 0), shifted by (−0.5, −0.25) and scaled by 2,
    integrated by the trapezoidal rule on 2,001 nodes per arc, against moons_log_density (512
    midpoint nodes by default), at random points and at the ends of both arcs."""
    from sklearn.datasets import make_moons

    m = 2001
    arcs, labels = make_moons(2 * m, noise=0.0, shuffle=False)
    arcs = torch.tensor(2 * (arcs - [0.5, 0.25]))
    w = torch.full((m,), 1.0 / (m - 1))
    w[[0, -1]] /= 2  # trapezoid weights of (1/pi) int_0^pi d theta
    probe = torch.cat([flows.sample_moons(200, torch.Generator().manual_seed(14)).double(),
                       arcs[[0, m - 1, m, 2 * m - 1]], torch.tensor([[0.0, 0.0], [3.0, -2.0]])])
    d2 = ((probe[:, None, :] - arcs) ** 2).sum(-1)
    dens = torch.exp(-0.5 * d2 / 0.15 ** 2) / (2 * math.pi * 0.15 ** 2)
    ref = torch.log(0.5 * (dens[:, :m] @ w + dens[:, m:] @ w))
    got = flows.moons_log_density(probe)
    assert torch.allclose(got, ref, atol=2e-3), (got - ref).abs().max()
    assert torch.equal(got, flows.moons_log_density(probe, 512))
    single = probe.float()
    got32 = flows.moons_log_density(single)  # computed in float64 whatever x's dtype
    assert got32.dtype == torch.float64 and torch.equal(got32, flows.moons_log_density(single.double()))


def test_entropy_mc_standard_error_matches_the_spread_over_seeds():
    runs = [flows.entropy_mc("ring", n=2000, seed=s) for s in range(30)]
    spread = np.std([h for h, _ in runs], ddof=1)
    se = np.mean([s for _, s in runs])
    assert 0.6 < spread / se < 1.4, (spread, se)


def test_grid_midpoints_and_order():
    pts, h = flows.grid(1.0, 4)
    c = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64)
    assert h == 0.5 and torch.equal(pts[:, 0], c.repeat_interleave(4)) and torch.equal(pts[:, 1], c.repeat(4))
    pts, h = flows.grid(0.5, 2)  # the smallest grid
    assert h == 0.5 and torch.equal(pts[0], torch.tensor([-0.25, -0.25], dtype=torch.float64))


def test_logit_normal_defaults_are_the_transform_s():
    """LogitNormal's default alpha is the logit transform's: the dequantised estimate with every
    default must bound and approach its exact discrete bits per dimension."""
    gen = torch.Generator().manual_seed(15)
    x = torch.randint(0, 256, (2, 1, 3, 3), generator=gen).double() / 255
    model = flows.LogitNormal(torch.zeros(1, 3, 3), 1.5)
    exact = model.exact_bits_per_dim(x)
    mc = torch.stack([flows.bits_per_dim(model, x, generator=gen) for _ in range(300)]).mean(0)
    assert (mc >= exact - 2e-3).all() and torch.allclose(mc, exact, atol=0.02), (mc, exact)


def test_multiscale_flow_defaults_to_mnist_images_with_lu_convolutions():
    flow = flows.MultiScaleFlow()
    assert flow.image_shape == (1, 28, 28) and flow.event_shape == (784,)
    convs = [m for m in flow.modules() if isinstance(m, flows.InvConv1x1)]
    assert convs and all(m.lu for m in convs)
