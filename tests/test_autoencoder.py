"""helpers.autoencoder: shapes and ranges of the reference autoencoder, and its losses against
torch's own binary cross-entropy and mean squared error."""

import pytest
import torch
from torch.nn import functional as F

from helpers import autoencoder


def test_shapes_and_pixel_range():
    torch.manual_seed(0)
    model = autoencoder.autoencoder(hidden=8, code=2)
    x = torch.rand(5, 1, 28, 28)
    assert model.encode(x).shape == (5, 2)
    out = model(x)
    assert out.shape == (5, 784) and ((out > 0) & (out < 1)).all()


def test_losses_match_torch():
    torch.manual_seed(1)
    model = autoencoder.autoencoder(hidden=8)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(autoencoder.ae_loss(model, x), F.mse_loss(model(x), x.flatten(1)))
    p = torch.rand(4, 784) * 0.98 + 0.01
    ref = F.binary_cross_entropy(p, x.flatten(1), reduction="sum") / 4
    assert torch.allclose(autoencoder.bce_per_image(p, x), ref, rtol=1e-5)
    saturated = torch.ones(4, 784)  # clamped: finite
    assert torch.isfinite(autoencoder.bce_per_image(saturated, x))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="hidden must be a positive integer, got 0"):
        autoencoder.autoencoder(hidden=0)
    with pytest.raises(ValueError, match="x_hat must have the shape of the flattened x"):
        autoencoder.bce_per_image(torch.rand(3, 10), torch.rand(3, 1, 28, 28))


def test_default_code_is_2_d_and_widths_of_1_are_valid():
    """The default code is the 2-D one whose latent map 03_vae draws; width 1 is a valid size."""
    torch.manual_seed(2)
    x = torch.rand(3, 1, 28, 28)
    assert autoencoder.autoencoder(hidden=8).encode(x).shape == (3, 2)
    tiny = autoencoder.autoencoder(hidden=1, code=1)
    assert tiny.encode(x).shape == (3, 1) and tiny(x).shape == (3, 784)


def test_bce_refuses_a_numpy_x_hat():
    with pytest.raises(ValueError, match="x_hat must have the shape of the flattened x"):
        autoencoder.bce_per_image(torch.rand(3, 784).numpy(), torch.rand(3, 1, 28, 28))
