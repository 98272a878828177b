"""helpers.autoregressive: MADE's masks by the Jacobian, PixelCNN's receptive field by gradients
against a combinatorial oracle, exact normalisation on 2x2 images, and sampling against the
model's own probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from helpers import autoregressive as ar

ORDERS = {
    "identity": torch.arange(6),
    "reversed": torch.arange(5, -1, -1),
    "random1": torch.randperm(6, generator=torch.Generator().manual_seed(1)),
    "random2": torch.randperm(6, generator=torch.Generator().manual_seed(2)),
    "interleaved": torch.tensor([1, 3, 5, 0, 2, 4]),
}


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _jacobian(model, D, seed=0):
    x = torch.rand(D, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x)  # (D out, D in)


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("hidden", [[64], [48, 48]])
def test_made_jacobian_respects_the_ordering(name, hidden):
    order = ORDERS[name]
    torch.manual_seed(0)
    model = ar.MADE(order, hidden, generator=torch.Generator().manual_seed(3))
    J = _jacobian(model, 6)
    m = ar.degrees_of(order)
    forbidden = m[None, :] >= m[:, None]  # input d' at or after output d in the ordering
    assert (J[forbidden] == 0).all(), f"{name}: an output depends on itself or a later input"
    allowed = ~forbidden
    # wide hidden layers hold every degree, so (almost) every allowed path exists
    assert (J[allowed] != 0).float().mean() > 0.9, f"{name}: masks cut allowed connections"


def test_made_masks_shapes_and_rules():
    order = ORDERS["random1"]
    masks = ar.made_masks(order, [7, 5], generator=torch.Generator().manual_seed(0))
    assert [tuple(m.shape) for m in masks] == [(7, 6), (5, 7), (6, 5)]
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    # the connectivity (product of masks) is zero on and above the diagonal in the ordering
    conn = masks[2] @ masks[1] @ masks[0]
    m = ar.degrees_of(order)
    assert (conn[m[None, :] >= m[:, None]] == 0).all()
    # the first coordinate in the ordering reads nothing: its row of the output mask is zero
    assert masks[2][order[0]].sum() == 0


def test_output_mask_must_be_strict():
    """The check above can fail: the >= bug in the output mask shows on the Jacobian's diagonal."""
    model = ar.MADE(torch.arange(6), [64])
    m = ar.degrees_of(torch.arange(6))
    h = torch.randint(1, 6, (64,), generator=torch.Generator().manual_seed(0))
    model.mask0 = (h[:, None] >= m[None, :]).float()  # the correct hidden rule
    model.mask1 = (m[:, None] >= h[None, :]).float()  # the bug: >= where eq. (5.4) has >
    assert (_jacobian(model, 6).diagonal() != 0).any()


def test_made_nll_is_the_bernoulli_log_likelihood():
    model = ar.MADE(torch.arange(10), [20])
    x = torch.rand(5, 10).lt(0.5).float()
    ref = -torch.distributions.Bernoulli(logits=model(x)).log_prob(x).sum(1)
    assert torch.allclose(model.nll(x), ref, atol=1e-5)


def _total_probability(model, shape):
    x = ar.all_binary_patterns(math.prod(shape)).view(-1, *shape).double()
    with torch.no_grad():
        return torch.exp(-model.double().nll(x)).sum().item()


@pytest.mark.parametrize("seed", [0, 1])
def test_probabilities_of_the_16_patterns_sum_to_one(seed):
    torch.manual_seed(seed)
    assert _total_probability(ar.PixelCNN(8, 2), (1, 2, 2)) == pytest.approx(1.0, abs=1e-9)
    made = ar.MADE(torch.tensor([2, 0, 3, 1]), [16, 16], generator=torch.Generator().manual_seed(seed))
    assert _total_probability(made, (4,)) == pytest.approx(1.0, abs=1e-9)


def test_a_pixelcnn_that_sees_its_own_pixel_is_not_normalised():
    """The normalisation check can fail: a type-B first layer lets each output read its input."""
    torch.manual_seed(0)
    model = ar.PixelCNN(8, 1, in_kernel=3)
    model.input.mask = ar.conv_mask(3, "B")
    for p in model.parameters():
        p.data.mul_(3)
    assert abs(_total_probability(model, (1, 2, 2)) - 1.0) > 1e-3


def test_conv_masks():
    A, B = ar.conv_mask(5, "A"), ar.conv_mask(5, "B")
    assert A.sum() == 12 and B.sum() == 13  # (k^2 - 1) / 2 earlier positions, + the centre
    assert A[2, 2] == 0 and B[2, 2] == 1 and (A[3:] == 0).all() and (A[2, 3:] == 0).all()


def _oracle_field(n_blocks, in_kernel, size, pixel):
    """Pixels reachable backwards from ``pixel`` through the masks' supports (no gradients)."""
    reach = torch.zeros(1, 1, size, size)
    reach[0, 0, pixel[0], pixel[1]] = 1
    for _ in range(n_blocks):  # residual: a block adds its masked 3x3 neighbourhood
        spread = F.conv_transpose2d(reach, ar.conv_mask(3, "B")[None, None], padding=1)
        reach = ((reach + spread) > 0).float()
    spread = F.conv_transpose2d(reach, ar.conv_mask(in_kernel, "A")[None, None],
                                padding=in_kernel // 2)
    return spread[0, 0] > 0


@pytest.mark.parametrize("n_blocks", [0, 1, 3])
def test_pixelcnn_receptive_field_by_gradients(n_blocks):
    torch.manual_seed(0)
    model = ar.PixelCNN(16, n_blocks, in_kernel=5)
    size, pixel = 15, (9, 7)
    field = ar.receptive_field(model, (1, size, size), pixel, n_inputs=16,
                               generator=torch.Generator().manual_seed(0))
    seen = field > 0
    assert not (seen & ~ar.raster_allowed((size, size), pixel)).any(), "sees itself or later"
    assert torch.equal(seen, _oracle_field(n_blocks, 5, size, pixel))
    if n_blocks:  # the blind spot: one row up and beyond the first layer's reach to the right
        r, s = pixel
        assert not seen[r - 1, s + 3] and seen[r - 2, s + 3]
        assert (~seen & ar.raster_allowed((size, size), pixel))[r - n_blocks - 2:r, :].sum() > 0


def _empirical_vs_exact(model, shape, order, n, seed):
    gen = torch.Generator().manual_seed(seed)
    x, log_prob = ar.sample(model, n, shape, order, generator=gen)
    D = math.prod(shape)
    with torch.no_grad():
        assert torch.allclose(log_prob, -model.nll(x), atol=1e-4), "log-prob of the draws"
        patterns = ar.all_binary_patterns(D)
        p = torch.exp(-model.nll(patterns.view(-1, *shape)))
    codes = (x.view(n, D) * (2 ** torch.arange(D - 1, -1, -1))).sum(1).long()
    freq = torch.bincount(codes, minlength=2 ** D).float() / n
    z = (freq - p) / torch.sqrt(p * (1 - p) / n)
    return z.abs().max().item(), p


def _sharpen(model):
    for q in model.parameters():
        q.data.mul_(3)  # far-from-uniform conditionals that depend on earlier pixels
    return model


def test_sampling_reproduces_the_models_probabilities():
    torch.manual_seed(0)
    pixelcnn = _sharpen(ar.PixelCNN(8, 1, in_kernel=3))
    zmax, p = _empirical_vs_exact(pixelcnn, (1, 2, 2), None, 40_000, 0)
    assert p.max() > 3 * p.min(), "the test model should be far from uniform"
    assert zmax < 5
    made = _sharpen(ar.MADE(torch.tensor([2, 0, 3, 1]), [16], generator=torch.Generator().manual_seed(0)))
    zmax, _ = _empirical_vs_exact(made, (4,), made.order, 40_000, 1)
    assert zmax < 5


def test_sampling_in_the_wrong_order_is_detected():
    """The sampling test can fail: drawing a MADE in raster order when it was built for another."""
    torch.manual_seed(0)
    made = _sharpen(ar.MADE(torch.tensor([3, 2, 1, 0]), [16], generator=torch.Generator().manual_seed(0)))
    gen = torch.Generator().manual_seed(0)
    x, log_prob = ar.sample(made, 20_000, (4,), torch.arange(4), generator=gen)
    with torch.no_grad():
        assert not torch.allclose(log_prob, -made.nll(x), atol=1e-3)


def test_all_binary_patterns():
    P = ar.all_binary_patterns(3)
    assert P.shape == (8, 3) and len({tuple(r) for r in P.tolist()}) == 8
    assert P[5].tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("call, match", [
    (lambda: ar.made_masks(torch.tensor([0, 0, 1]), [4]), "permutation"),
    (lambda: ar.made_masks(torch.arange(4.0), [4]), "integer"),
    (lambda: ar.made_masks(torch.arange(1), [4]), "at least 2"),
    (lambda: ar.made_masks(torch.arange(4), []), "hidden_sizes"),
    (lambda: ar.made_masks(torch.arange(4), [4, 0]), r"hidden_sizes\[1\]"),
    (lambda: ar.conv_mask(4, "A"), "odd"),
    (lambda: ar.conv_mask(3, "C"), "mask_type"),
    (lambda: ar.sample(ar.MADE(torch.arange(4), [4]), 0, (4,)), "n must"),
    (lambda: ar.sample(ar.MADE(torch.arange(4), [4]), 2, (4,), torch.arange(3)), "prod"),
    (lambda: ar.all_binary_patterns(0), "D must"),
    (lambda: ar.bernoulli_nll(torch.zeros(2, 3), torch.zeros(2, 4)), "same shape"),
    (lambda: ar.receptive_field(ar.PixelCNN(4, 1), (1, 5, 5), (5, 0)), "pixel"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_orders_as_lists_or_int32_and_the_smallest_sizes():
    """An ordering may be a list or an int32 tensor (degrees come back int64 either way); D = 2,
    a hidden width of 1 and n = 1 sample are valid sizes; hidden widths may come from any
    iterable, a generator included."""
    want = ar.degrees_of(torch.tensor([2, 0, 1]))
    for order in ([2, 0, 1], torch.tensor([2, 0, 1], dtype=torch.int32)):
        got = ar.degrees_of(order)
        assert got.dtype == torch.int64 and torch.equal(got, want)
    masks = ar.made_masks([1, 0], [1], generator=torch.Generator().manual_seed(0))
    assert [tuple(m.shape) for m in masks] == [(1, 2), (2, 1)]
    made = ar.MADE([1, 0], [4])
    x, log_prob = ar.sample(made, 1, (2,))
    assert x.shape == (1, 2) and log_prob.shape == (1,)
    a = ar.made_masks(torch.arange(5), [7, 5], generator=torch.Generator().manual_seed(4))
    b = ar.made_masks(torch.arange(5), (h for h in (7, 5)), generator=torch.Generator().manual_seed(4))
    assert len(a) == len(b) == 3 and all(torch.equal(p, q) for p, q in zip(a, b))
    with pytest.raises(ValueError, match="kernel_size must be a positive integer, got -1"):
        ar.conv_mask(-1, "A")


def test_made_is_non_linear():
    """ReLUs between the masked layers: the logits are not an affine function of x (without
    them MADE would be a logistic-regression chain), with one hidden layer or two."""
    torch.manual_seed(0)
    for hidden in ([32], [32, 32]):
        made = ar.MADE(torch.arange(6), hidden, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(_jacobian(made, 6, seed=0), _jacobian(made, 6, seed=1)), hidden


def test_pixelcnn_computes_its_residual_blocks_written_out():
    """logits = head(h_K), h_k = h_{k−1} + block_k(h_{k−1}), h_0 = input(x): with the model's
    own layers (a sign slip in the residual sum changes what a trained PixelCNN computes)."""
    torch.manual_seed(0)
    model = ar.PixelCNN(channels=8, n_blocks=2, in_kernel=5)
    x = torch.rand(2, 1, 6, 6).lt(0.5).float()
    h = model.input(x)
    for block in model.blocks:
        h = h + block(h)
    with torch.no_grad():
        assert torch.allclose(model(x), model.head(h), atol=1e-6)


class _Certain(torch.nn.Module):
    """A model sure that every pixel is 0: p(x_d = 1) = sigmoid(−1e4) = 0 exactly in float32."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.full_like(x, -1e4) + 0 * self.w


def test_sampling_never_draws_a_pixel_of_probability_0():
    """x_d = 1 iff u < p with u ~ U[0, 1): p = 0 never gives 1, even when u is exactly 0 (seed 84
    draws an exact 0.0 at position 96,765)."""
    n = 100_000
    assert torch.rand(n, generator=torch.Generator().manual_seed(84))[96_765] == 0
    x, log_prob = ar.sample(_Certain(), n, (1,), generator=torch.Generator().manual_seed(84))
    assert x.sum() == 0 and torch.isfinite(log_prob).all()


def test_receptive_field_arguments_and_its_probe_images():
    """Pixels are (row, column) inside an H × W image that need not be square, (0, 0) included;
    n_inputs must be a positive count; the probe images are fair coin flips (x² has gradient 2x,
    so the map is twice the number of probes with each pixel on)."""
    model = ar.PixelCNN(4, 1)
    assert ar.receptive_field(model, (1, 6, 4), (5, 3)).shape == (6, 4)
    assert ar.receptive_field(model, [1, 6, 4], (0, 0)).sum() == 0   # the first pixel sees nothing
    for bad in ((0, 4), (6, 0), (-1, 0)):
        with pytest.raises(ValueError, match="pixel must lie inside the 6x4 image"):
            ar.receptive_field(model, (1, 6, 4), bad)
    with pytest.raises(ValueError, match="n_inputs must be a positive integer, got 0"):
        ar.receptive_field(model, (1, 6, 4), (1, 1), n_inputs=0)

    class Square(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return (self.w * x.square()).sum((2, 3), keepdim=True).expand_as(x)

    n = 4000
    share_on = ar.receptive_field(Square(), (1, 3, 3), (1, 1), n_inputs=n,
                                  generator=torch.Generator().manual_seed(0)) / (2 * n)
    assert (share_on - 0.5).abs().max() < 4 * (0.25 / n) ** 0.5


def test_raster_allowed_known_answer_and_channel_shapes():
    """Strictly before (1, 2) in a 3 × 4 raster: the 4 pixels of row 0 and 2 of row 1; a
    (C, H, W) shape reads its last two entries."""
    want = torch.zeros(3, 4, dtype=torch.bool)
    want[0] = True
    want[1, :2] = True
    assert torch.equal(ar.raster_allowed((3, 4), (1, 2)), want)
    assert torch.equal(ar.raster_allowed((1, 3, 4), (1, 2)), want)


def test_all_binary_patterns_stops_above_20():
    with pytest.raises(ValueError, match="D must be at most 20"):
        ar.all_binary_patterns(21)
