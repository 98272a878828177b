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


def test_figures_carry_their_labels_scales_and_limits():
    """What a reader of each figure relies on: titles, axis labels, log scale, legend, the grid's
    grey scale pinned to [0, 1], the 3-D box symmetric around the cloud, a colorbar per digit."""
    x = torch.full((3, 1, 4, 4), 0.5)
    ax = plot.image_grid(x, nrow=2, title="samples")
    img = ax.images[0]
    assert img.get_clim() == (0, 1) and img.get_cmap().name == "gray" and not ax.axison
    assert ax.get_title() == "samples" and img.get_array()[0, 0, 0] == 1.0   # white padding
    assert img.get_array().shape[:2] == (2 + 2 * 6, 2 + 2 * 6)               # 2 rows of 2
    assert img.get_array()[2, 2, 0] == 0.5                                   # the image itself
    assert plot.image_grid(x).get_title() == ""
    assert plot.image_grid(x, nrow=1).images[0].get_array().shape[:2] == (2 + 3 * 6, 2 + 6)
    rgb = torch.rand(16, 3, 4, 4) * 3 - 1                                    # out of range: clipped
    arr = plot.image_grid(rgb).images[0].get_array()                         # default: 8 per row
    assert arr.shape == (2 + 2 * 6, 2 + 8 * 6, 3) and arr.min() >= 0 and arr.max() <= 1

    ax = plot.loss_curves({"train_loss": [3, 2, 1], "eval_loss": [4, 3, 2]}, logy=True, title="L")
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "eval"]
    assert list(ax.lines[1].get_ydata()) == [4, 3, 2] and ax.get_title() == "L"
    assert plot.loss_curves({"train_loss": [1.0]}).get_yscale() == "linear"
    assert len(plot.loss_curves({"train_loss": [1.0], "eval_loss": []}).lines) == 1

    z = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]], requires_grad=True)
    ax = plot.latent_scatter(z, torch.tensor([0, 9, 4]), title="codes")
    pts = ax.collections[0]
    assert pts.get_offsets().tolist() == [[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]]
    assert pts.get_clim() == (-0.5, 9.5) and list(pts.get_array()) == [0, 9, 4]
    cbar = ax.figure.axes[-1]
    assert list(cbar.get_yticks()) == list(range(10)) and cbar.get_ylabel() == "label"
    assert ax.get_xlabel() == "$z_1$" and ax.get_ylabel() == "$z_2$" and ax.get_title() == "codes"
    assert ax.get_aspect() == 1.0
    ax = plot.latent_scatter(z)
    assert ax.collections[0].get_offsets().shape == (3, 2) and len(ax.figure.axes) == 1

    cloud = torch.tensor([[0.5, -2.0, 1.0], [0.0, 1.0, -0.5]])
    ax = plot.point_cloud_3d(cloud, c=torch.tensor([0.0, 1.0]), title="torus")
    assert ax.get_xlim() == ax.get_ylim() == ax.get_zlim() == (-2.0, 2.0)
    assert ax.get_title() == "torus" and ax.get_xlabel() == "x" and ax.get_zlabel() == "z"
    assert ax.collections[0].get_cmap().name == "viridis"
    assert plot.point_cloud_3d(cloud, lim=3.0).get_xlim() == (-3.0, 3.0)


def test_plots_draw_into_a_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert plot.image_grid(torch.zeros(1, 1, 4, 4), ax=axes[0]) is axes[0]
    assert plot.loss_curves({"train_loss": [1.0, 0.5]}, ax=axes[1]) is axes[1]
    assert len(fig.axes) == 2


def test_scatter_and_cloud_draw_the_given_coordinates_and_colours():
    """Kills a swapped or repeated column (z[:, 1] for z[:, 0], y for x in 3-D) and a colour
    argument that is dropped: the figure must show exactly the points and values passed in."""
    z = torch.tensor([[0.0, 1.0], [2.0, -1.0], [3.0, 0.5]])
    pts = plot.latent_scatter(z).collections[0]
    assert pts.get_offsets().tolist() == z.tolist()
    cloud = torch.tensor([[0.5, -2.0, 1.0], [0.0, 1.0, -0.5], [1.5, 0.25, 0.75]])
    colour = torch.tensor([0.0, 0.5, 1.0])
    drawn = plot.point_cloud_3d(cloud, c=colour).collections[0]
    xs, ys, zs = (list(map(float, v)) for v in drawn._offsets3d)  # what the 3-D axes project
    assert [xs, ys, zs] == cloud.T.tolist()
    assert drawn.get_array().tolist() == colour.tolist()
    assert plot.point_cloud_3d(cloud).collections[0].get_array() is None  # no colour: one colour


def test_point_cloud_box_is_a_cube():
    """Kills a dropped or changed box aspect: matplotlib's default 3-D box (4:4:3) squashes z, so a
    torus of the right shape would look flattened, and the figure would mislead."""
    aspect = plot.point_cloud_3d(torch.randn(20, 3)).get_box_aspect()
    assert aspect[0] == pytest.approx(aspect[1]) == pytest.approx(aspect[2])
