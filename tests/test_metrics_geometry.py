import pytest
import torch

from helpers import data
from helpers.metrics import chamfer_distance


def test_chamfer_known_values():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 0.5]])
    # a→b: 0.5 and sqrt(1.25); b→a: 0.5
    expected = (0.5 + 1.25**0.5) / 2 + 0.5
    assert chamfer_distance(a, b).item() == pytest.approx(expected, rel=1e-6)
    assert chamfer_distance(a, a).item() == 0.0
    assert chamfer_distance(a, b).item() == pytest.approx(chamfer_distance(b, a).item())


def test_chamfer_floor_shrinks_with_sample_size_and_detects_a_shift():
    small = chamfer_distance(data.sample_torus(200, seed=0), data.sample_torus(200, seed=1))
    large = chamfer_distance(data.sample_torus(2000, seed=0), data.sample_torus(2000, seed=1))
    assert large < 0.5 * small  # the floor scales like n^(-1/2) on a 2-D surface
    shifted = data.sample_torus(2000, seed=1) + torch.tensor([0.0, 0.0, 0.2])
    assert chamfer_distance(data.sample_torus(2000, seed=0), shifted) > 2 * large


def test_chamfer_rejects_bad_input():
    with pytest.raises(ValueError, match="same dimension D, got 2 and 3"):
        chamfer_distance(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"b must be a non-empty tensor of shape \(N, D\)"):
        chamfer_distance(torch.zeros(3, 2), torch.zeros(0, 2))
