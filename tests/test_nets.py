import math

import pytest
import torch

from helpers import nets


def test_mlp_layout_and_shapes():
    m = nets.mlp([784, 256, 64, 2])
    linear = [l for l in m if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linear] == [(784, 256), (256, 64), (64, 2)]
    assert sum(isinstance(l, torch.nn.ReLU) for l in m) == 2  # none after the output layer
    assert m(torch.randn(5, 784)).shape == (5, 2)
    out = nets.mlp([3, 4], final_activation=torch.nn.Sigmoid())(torch.randn(10, 3))
    assert ((0 < out) & (out < 1)).all()


@pytest.mark.parametrize("sizes", [[784], [784, 0, 2], [784, 2.5], [True, 3]])
def test_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes must list at least two positive integers"):
        nets.mlp(sizes)


def test_sinusoidal_embedding_values():
    t = torch.tensor([0.0, 1.0, 50.0])
    e = nets.sinusoidal_embedding(t, 8)
    assert e.shape == (3, 8)
    assert torch.allclose(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    # feature k uses frequency 10000^(-k/4): check one entry by hand
    assert math.isclose(e[2, 1].item(), math.sin(50 * 10_000 ** (-1 / 4)), rel_tol=1e-5)
    assert torch.allclose(e[:, :4] ** 2 + e[:, 4:] ** 2, torch.ones(3, 4))
    with pytest.raises(ValueError, match="positive even integer, got 7"):
        nets.sinusoidal_embedding(t, 7)
    with pytest.raises(ValueError, match=r"1-D tensor \(B,\), got \(3, 1\)"):
        nets.sinusoidal_embedding(t[:, None], 8)


def test_fourier_features():
    x = torch.tensor([[0.25, -0.5]])
    f = nets.fourier_features(x, 2)
    assert f.shape == (1, 2 * (1 + 2 * 2))
    assert torch.allclose(f[0, :2], x[0])
    # sin(2^1 π · 0.25) = sin(π/2) = 1 sits at position 2 + (dim 0, freq 1) = 3
    assert math.isclose(f[0, 3].item(), 1.0, abs_tol=1e-6)
    assert torch.equal(nets.fourier_features(x, 0), x)
    with pytest.raises(ValueError, match="n_freqs must be a non-negative integer, got -1"):
        nets.fourier_features(x, -1)
    with pytest.raises(ValueError, match=r"2-D tensor \(B, D\), got \(3,\)"):
        nets.fourier_features(torch.zeros(3), 2)


def test_mlp_takes_any_iterable_and_widths_of_one():
    m = nets.mlp(n for n in (3, 4, 1))  # a generator of widths, and a scalar output
    assert [l.out_features for l in m if isinstance(l, torch.nn.Linear)] == [4, 1]


def test_embeddings_match_their_formulas_feature_by_feature():
    """Every sinusoidal frequency P^(−k/half), k = 0..half−1, and every Fourier 2^k π."""
    t = torch.tensor([0.0, 3.0, 50.0])
    for dim in (2, 8):
        half = dim // 2
        e = nets.sinusoidal_embedding(t, dim)
        freqs = torch.tensor([10_000.0 ** (-k / half) for k in range(half)])
        assert e.shape == (3, dim)
        assert torch.allclose(e, torch.cat([torch.sin(t[:, None] * freqs),
                                            torch.cos(t[:, None] * freqs)], 1), atol=1e-5)
    x = torch.tensor([[0.3, -0.7]])
    f = nets.fourier_features(x, 3)
    angles = torch.stack([x[0] * math.pi * 2.0**k for k in range(3)], 1).flatten()  # (D·F,)
    assert torch.allclose(f[0], torch.cat([x[0], torch.sin(angles), torch.cos(angles)]), atol=1e-5)
