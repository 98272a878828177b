"""helpers.torus: the polar output head against independent routes (numpy's arctan2 and norms,
finite differences of the wrap, and a round trip through scipy-free inverse formulas)."""

import math

import numpy as np
import pytest
import torch

from helpers import torus


def test_wrap_angle_is_the_same_direction_in_range():
    theta = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    w = torus.wrap_angle(theta)
    assert (w > -math.pi).all() and (w <= math.pi + 1e-12).all()
    # same direction: numpy's arctan2 of (sin, cos) is an independent route to the wrapped angle
    ref = np.arctan2(np.sin(theta.numpy()), np.cos(theta.numpy()))
    assert np.allclose(w.numpy(), ref, atol=1e-9)
    assert torus.wrap_angle(torch.tensor(math.pi, dtype=torch.float64)) == pytest.approx(math.pi)


def test_coordinates_have_their_ranges_even_for_huge_raw_values():
    raw = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)) * 50
    rho, theta, phi = torus.polar_coordinates(raw)
    assert rho.shape == theta.shape == phi.shape == (1000,)
    assert (rho >= 0).all() and (theta > -math.pi).all() and (theta <= math.pi).all()
    assert (phi >= 0).all() and (phi <= math.pi).all()


def test_head_inverts_to_its_coordinates():
    g = torch.Generator().manual_seed(1)
    raw = torch.randn(500, 3, generator=g, dtype=torch.float64) * 2
    p = torus.polar_head(raw).numpy()
    rho, theta, phi = (t.numpy() for t in torus.polar_coordinates(raw))
    assert np.allclose(np.linalg.norm(p, axis=1), rho)
    assert np.allclose(np.arccos(p[:, 2] / rho), phi)
    assert np.allclose(np.arctan2(p[:, 1], p[:, 0]), theta)


def test_known_points_and_periodicity():
    inv_softplus = lambda y: math.log(math.expm1(y))  # noqa: E731
    raw = torch.tensor([[inv_softplus(2.0), 0.0, 0.0],      # phi = pi/2: on the equator
                        [inv_softplus(1.0), math.pi / 2, 0.0]])
    assert torch.allclose(torus.polar_head(raw), torch.tensor([[2.0, 0, 0], [0, 1.0, 0]]), atol=1e-6)
    shifted = raw + torch.tensor([0.0, 2 * math.pi, 0.0])
    assert torch.allclose(torus.polar_head(shifted), torus.polar_head(raw), atol=1e-5)


def test_gradient_matches_finite_differences():
    raw = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2),
                      requires_grad=True)
    assert torch.autograd.gradcheck(torus.polar_head, (raw,))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"raw must be a tensor of shape \(\.\.\., 3\), got \(4, 2\)"):
        torus.polar_head(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="raw must be a tensor"):
        torus.polar_coordinates([1.0, 2.0, 3.0])


def test_any_leading_shape_one_point_or_a_batch_of_sets():
    """raw (..., 3): a single point (3,) and sets of points (2, 5, 3) give points of the same
    leading shape, each the head of its own raw triple."""
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    out = torus.polar_head(raw)
    assert out.shape == (2, 5, 3)
    assert torch.allclose(out.reshape(10, 3), torus.polar_head(raw.reshape(10, 3)))
    assert torch.allclose(torus.polar_head(raw[1, 2]), out[1, 2])
    rho, theta, phi = torus.polar_coordinates(raw[0, 0])
    assert rho.shape == theta.shape == phi.shape == ()
