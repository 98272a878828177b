import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_image_grid_draws_the_images():
    x = torch.zeros(4, 1, 28, 28)
    x[1] = 1.0
    ax = plot.image_grid(x, nrow=2, title="t")
    img = ax.images[0].get_array()
    assert img.shape[:2] == (2 + 2 * 30, 2 + 2 * 30)  # 2 x 2 tiles with padding 2
    assert img.max() == 1.0 and ax.get_title() == "t"


def test_loss_curves_and_latent_and_cloud():
    ax = plot.loss_curves({"train_loss": [3, 2, 1], "eval_loss": [3.5, 2.5, 1.5]})
    assert len(ax.lines) == 2 and list(ax.lines[0].get_xdata()) == [1, 2, 3]
    ax = plot.latent_scatter(torch.randn(50, 2), torch.randint(0, 10, (50,)))
    assert ax.collections[0].get_offsets().shape == (50, 2)
    ax = plot.point_cloud_3d(torch.randn(30, 3))
    assert ax.name == "3d"


def test_plot_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"x must be a tensor \(N, C, H, W\).*\(28, 28\)"):
        plot.image_grid(torch.zeros(28, 28))
    with pytest.raises(ValueError, match="nrow must be a positive integer"):
        plot.image_grid(torch.zeros(2, 1, 4, 4), nrow=0)
    with pytest.raises(ValueError, match="non-empty 'train_loss'"):
        plot.loss_curves({})
    with pytest.raises(ValueError, match=r"shape \(N, 2\), got \(5, 3\)"):
        plot.latent_scatter(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="one entry per code: 5 codes, 4 labels"):
        plot.latent_scatter(torch.zeros(5, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(N, 3\), got \(5, 2\)"):
        plot.point_cloud_3d(torch.zeros(5, 2))
