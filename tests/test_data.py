import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import data
from helpers.metrics import torus_surface_distance


# ----------------------------------------------------------------------------- MNIST

def test_offline_mnist_shapes_ranges_and_split():
    x, y = data.load_mnist("train", source="offline")
    xt, yt = data.load_mnist("test", source="offline")
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.99  # real digits reach full ink
    assert torch.bincount(y).tolist() == [400] * 10
    assert torch.bincount(yt).tolist() == [100] * 10
    # train and test are disjoint: no test image equals a training image
    flat, flat_t = x.flatten(1), xt.flatten(1)
    assert not (torch.cdist(flat_t[:200], flat).min(dim=1).values == 0).any()
    assert data.mnist_source(x) == "offline"


def test_offline_splits_are_shuffled_so_prefixes_hold_every_class():
    # The shipped file is sorted by class: without the shuffle x[:512] would be zeros and ones.
    for split, n in (("train", 512), ("test", 200)):
        _, y = data.load_mnist(split, source="offline")
        counts = torch.bincount(y[:n], minlength=10).double()
        expected = n / 10
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert chi2 < 27.9, f"{split}[:{n}] class counts {counts.tolist()} (chi2 {chi2:.1f}, p < 0.001)"
        assert (y[1:] != y[:-1]).float().mean() > 0.8     # neighbours usually differ in class


def test_offline_split_is_deterministic():
    a = data.load_mnist("test", source="offline")
    b = data.load_mnist("test", source="offline")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_offline_split_is_pinned():
    """The offline split and order are part of the course's results (cached reference classifier,
    notebook numbers): a change to the seeds or the split rule must be deliberate. If you change
    them on purpose, bump metrics.CLASSIFIER_CACHE_VERSION and update these fingerprints."""
    for split, labels, ink in (("train", [1, 1, 6, 2, 4, 9, 2, 7, 0, 2, 7, 4], 282.953),
                               ("test", [7, 6, 5, 9, 5, 4, 6, 2, 9, 7, 6, 4], 255.263)):
        x, y = data.load_mnist(split, source="offline")
        assert y[:12].tolist() == labels and x[:3].sum().item() == pytest.approx(ink, abs=1e-3)


def test_offline_digits_look_like_digits():
    """Real handwriting, not noise: the mean image has ink in the centre and none in the corners."""
    x, y = data.load_mnist("train", source="offline")
    mean = x.mean(0)[0]
    assert mean[10:18, 10:18].mean() > 0.3 and mean[:3, :3].max() < 0.01
    # per-class means differ clearly (a 0 is not a 1)
    m0, m1 = x[y == 0].mean(0), x[y == 1].mean(0)
    assert (m0 - m1).abs().mean() > 0.1


def _write_raw(root, split="test", n=None):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    imgs, labels = data.offline_uint8(split)
    n = n or len(labels)
    images_name, labels_name = data.IDX_FILES[split]
    data.write_idx(raw / images_name, imgs[:n])
    data.write_idx(raw / labels_name, labels[:n].astype(np.uint8))
    return raw / images_name, imgs[:n], labels[:n]


def test_torchvision_loader_reads_idx_files_written_from_shipped_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    _write_raw(tmp_path, "train", n=50)  # torchvision checks that all four files exist
    _, imgs, labels = _write_raw(tmp_path, "test")
    x, y = data.load_mnist("test", source="download")  # files present: torchvision reads them
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(imgs))
    assert torch.equal(y, torch.from_numpy(labels))
    xo, yo = data.load_mnist("test", source="offline")
    assert torch.allclose(x, xo) and torch.equal(y, yo)


def test_mnist_source_tells_the_full_splits_from_the_subset():
    assert [data.mnist_source(torch.zeros(n)) for n in (60_000, 10_000, 4_000, 1_000)] == [
        "download", "download", "offline", "offline"]


def test_torchvision_loader_gets_the_split_after_our_download(tmp_path, monkeypatch):
    """The split reaches torchvision, which reads (download=False) the raw files that
    helpers.data fetched with torchvision's own mirrors and checksums (kills a swapped split or
    a download that bypasses the bounded fetch)."""
    calls, fetched = [], []

    class FakeMNIST:
        mirrors, resources = ["http://mirror.invalid/"], [("f-ubyte.gz", "0" * 32)]

        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data, self.targets = torch.zeros(3, 28, 28, dtype=torch.uint8), torch.arange(3)

    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    monkeypatch.setattr(data, "_download_mnist", lambda *args: fetched.append(args))
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    _write_raw(tmp_path, "train", n=50)
    _write_raw(tmp_path, "test")
    x, y = data.load_mnist("test", source="download")
    assert calls == [(str(tmp_path), False, False)] and x.shape == (3, 1, 28, 28)
    assert fetched == [(tmp_path / "MNIST" / "raw", FakeMNIST.mirrors, FakeMNIST.resources)]
    data.load_mnist("train", source="download")
    assert calls[1] == (str(tmp_path), True, False)


def test_truncated_idx_file_names_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    _write_raw(tmp_path, "train", n=50)
    path, _, _ = _write_raw(tmp_path, "test")
    path.write_bytes(path.read_bytes()[:-500])
    for source in ("download", "auto"):  # auto must not hide a corrupt file behind the fallback
        with pytest.raises(data.MNISTFileError, match=r"t10k-images-idx3-ubyte.*truncated.*Delete"):
            data.load_mnist("test", source=source)


def test_over_long_idx_file_is_reported(tmp_path):
    """A file longer than its header promises (two downloads appended, say) is corrupt too."""
    path = tmp_path / "t10k-labels-idx1-ubyte"
    data.write_idx(path, np.arange(10, dtype=np.uint8))
    data.check_idx_file(path)                                   # the exact size passes
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(data.MNISTFileError, match=r"t10k-labels-idx1-ubyte has 19 bytes but its "
                                                  r"header promises 18 \(shape \(10,\)\)"):
        data.check_idx_file(path)


def test_garbage_idx_file_is_reported(tmp_path):
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(data.MNISTFileError, match="train-labels-idx1-ubyte is not an MNIST IDX"):
        data.check_idx_file(bad)


def test_auto_falls_back_to_offline_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))

    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setattr(data, "_torchvision_mnist", no_network)
    monkeypatch.setattr(data, "_DOWNLOAD_FAILED", set())
    with pytest.warns(RuntimeWarning, match=r"Could not download MNIST.*offline subset.*DGM_DATA=offline") as record:
        x, y = data.load_mnist("train", source="auto")
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert x.shape == (4000, 1, 28, 28)
    with warnings.catch_warnings():  # the test split neither retries nor warns again
        warnings.simplefilter("error")
        assert data.load_mnist("test", source="auto")[0].shape == (1000, 1, 28, 28)


def test_offline_source_does_not_touch_the_network(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("offline must not call torchvision")
    monkeypatch.setattr(data, "_torchvision_mnist", fail)
    monkeypatch.setenv("DGM_DATA", "offline")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load_mnist("train")


def test_load_mnist_rejects_bad_arguments(monkeypatch):
    with pytest.raises(ValueError, match="split must be one of.*'valid'"):
        data.load_mnist("valid")
    with pytest.raises(ValueError, match="source.*must be one of.*'cloud'"):
        data.load_mnist("train", source="cloud")
    monkeypatch.setenv("DGM_DATA", "internet")
    with pytest.raises(ValueError, match="DGM_DATA.*'internet'"):
        data.load_mnist("train")


def test_data_dir_defaults_to_data_at_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    assert data.data_dir() == Path(__file__).resolve().parents[1] / "data"
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path


def test_load_mnist_places_tensors_on_device():
    x, y = data.load_mnist("test", device="cpu", source="offline")
    assert x.device.type == "cpu" and y.device.type == "cpu"
    x, y = data.load_mnist("test", device="meta", source="offline")  # any device but the CPU
    assert x.device.type == "meta" and y.device.type == "meta"


def test_write_idx_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8 with 1 or 3 dimensions"):
        data.write_idx(tmp_path / "f", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 with 1 or 3 dimensions, got int64"):
        data.write_idx(tmp_path / "f", [1, 2, 3])  # a list is read as an array first


def test_check_idx_file_takes_a_string_and_spots_a_short_header(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    data.write_idx(path, np.zeros((2, 28, 28), dtype=np.uint8))
    data.check_idx_file(str(path))
    path.write_bytes(path.read_bytes()[:12])  # magic + two of the three sizes
    with pytest.raises(data.MNISTFileError, match="truncated inside its header"):
        data.check_idx_file(str(path))


# ----------------------------------------------------------------------------- binarisation

def test_binarize_is_bernoulli_of_the_intensity():
    x = torch.full((200_000,), 0.3)
    b = data.binarize(x, generator=torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    se = math.sqrt(0.3 * 0.7 / len(x))
    assert abs(b.mean().item() - 0.3) < 5 * se
    # dynamic: a second draw differs
    assert not torch.equal(b, data.binarize(x, generator=torch.Generator().manual_seed(1)))


def test_binarize_keeps_zero_and_one():
    x = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.equal(data.binarize(x, generator=torch.Generator().manual_seed(0)), x)


def test_binarize_rejects_bad_input():
    with pytest.raises(TypeError, match="floating-point tensor"):
        data.binarize(torch.ones(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*255"):
        data.binarize(torch.tensor([0.0, 255.0]))
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
            data.binarize(torch.tensor([0.5, bad]))


# ----------------------------------------------------------------------------- batching

def test_batches_cover_every_index_once_per_epoch():
    x = torch.arange(10).float()
    y = torch.arange(10) * 10
    seen = []
    for bx, by in data.batches(x, y, batch_size=4, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(by, bx.long() * 10)  # rows stay aligned across tensors
        seen += bx.long().tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    sizes = [len(b[0]) for b in data.batches(x, batch_size=4, drop_last=True)]
    assert sizes == [4, 4]
    assert [len(b[0]) for b in data.batches(x, batch_size=3, drop_last=True)] == [3, 3, 3]
    eleven = torch.arange(11)
    assert [len(b[0]) for b in data.batches(eleven, batch_size=4, drop_last=True)] == [4, 4]
    assert [len(b[0]) for b in data.batches(x, batch_size=3)] == [3, 3, 3, 1]
    singles = [b[0] for b in data.batches(x, batch_size=1, shuffle=False)]
    assert torch.equal(torch.cat(singles), x)


def test_batches_same_generator_same_order():
    x = torch.arange(100)
    a = [b[0] for b in data.batches(x, batch_size=7, generator=torch.Generator().manual_seed(3))]
    b = [b[0] for b in data.batches(x, batch_size=7, generator=torch.Generator().manual_seed(3))]
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_batches_reject_bad_arguments():
    with pytest.raises(ValueError, match="same length.*tensors\\[1\\] has 3"):
        next(data.batches(torch.ones(4), torch.ones(3), batch_size=2))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(data.batches(torch.ones(4), batch_size=0))
    with pytest.raises(TypeError, match="tensors\\[0\\] must be a tensor"):
        next(data.batches([1, 2, 3], batch_size=2))
    with pytest.raises(ValueError, match="at least one tensor"):
        next(data.batches(batch_size=2))


# ----------------------------------------------------------------------------- torus

def test_torus_points_lie_on_the_surface():
    R, r = 1.0, 0.4
    pts = data.sample_torus(20_000, R=R, r=r, seed=0)
    assert pts.shape == (20_000, 3) and pts.dtype == torch.float32
    assert torus_surface_distance(pts, R, r).max() < 1e-5
    # an independent check of the surface equation (sqrt(x²+y²) − R)² + z² = r²
    p = pts.double()
    eq = (p[:, :2].norm(dim=1) - R) ** 2 + p[:, 2] ** 2 - r**2
    assert eq.abs().max() < 1e-5


def test_torus_tube_angle_follows_the_area_density():
    """φ has density (R + r cos φ)/(2πR), CDF (Rφ + r sin φ)/(2πR); θ is uniform."""
    R, r = 1.0, 0.6
    _, theta, phi = data.sample_torus(20_000, R=R, r=r, seed=1, return_angles=True)
    phi, theta = phi.double().numpy(), theta.double().numpy()
    cdf = lambda v: (R * v + r * np.sin(v)) / (2 * np.pi * R)  # noqa: E731
    assert stats.kstest(phi, cdf).pvalue > 0.01
    assert stats.kstest(theta, stats.uniform(0, 2 * np.pi).cdf).pvalue > 0.01
    # the uniform-φ sampler (the common mistake) is rejected by the same test
    wrong = np.random.default_rng(0).uniform(0, 2 * np.pi, 20_000)
    assert stats.kstest(wrong, cdf).pvalue < 1e-6


def test_torus_points_are_built_from_the_returned_angles():
    R, r = 1.0, 0.6
    pts, theta, phi = data.sample_torus(300, R=R, r=r, seed=2, return_angles=True)
    ring = R + r * torch.cos(phi.double())
    want = torch.stack([ring * torch.cos(theta.double()), ring * torch.sin(theta.double()),
                        r * torch.sin(phi.double())], 1)
    assert torch.allclose(pts.double(), want, atol=1e-5)
    assert ((0 <= phi) & (phi < 2 * math.pi)).all() and ((0 <= theta) & (theta < 2 * math.pi)).all()


def test_torus_default_radii_are_1_and_0_4():
    assert data.sample_torus(1).shape == (1, 3)
    assert torch.equal(data.sample_torus(50), data.sample_torus(50, seed=0))  # default seed 0
    pts = data.sample_torus(500)
    assert torus_surface_distance(pts, R=1.0, r=0.4).max() < 1e-5
    assert torus_surface_distance(pts).max() < 1e-5  # the metric's defaults are the same torus


def test_torus_seed_reproducible_and_distinct():
    assert torch.equal(data.sample_torus(100, seed=5), data.sample_torus(100, seed=5))
    assert not torch.equal(data.sample_torus(100, seed=5), data.sample_torus(100, seed=6))


@pytest.mark.parametrize("R,r", [(0.4, 1.0), (1.0, 0.0), (1.0, 1.0), (1.0, -0.1)])
def test_torus_rejects_bad_radii(R, r):
    with pytest.raises(ValueError, match="R > r > 0"):
        data.sample_torus(10, R=R, r=r)
    with pytest.raises(ValueError, match="R > r > 0"):
        torus_surface_distance(torch.zeros(2, 3), R=R, r=r)


def test_torus_rejects_bad_n_and_points():
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        data.sample_torus(0)
    with pytest.raises(ValueError, match=r"shape \(N, 3\), got \(4, 2\)"):
        torus_surface_distance(torch.zeros(4, 2))


def test_surface_distance_of_known_points():
    pts = torch.tensor([[1.4, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    d = torus_surface_distance(pts, R=1.0, r=0.4)
    assert torch.allclose(d, torch.tensor([0.0, 0.6, 0.4, 0.6]), atol=1e-6)


def test_a_download_that_fails_everywhere_names_each_mirror_s_error(tmp_path, monkeypatch):
    """When no mirror gives a file, the OSError lists every mirror with its own error."""
    def refuse(url, deadline):
        raise ConnectionRefusedError(f"refused by {url.split('/')[2]}")

    monkeypatch.setattr(data, "_fetch", refuse)
    with pytest.raises(OSError) as seen:
        data._download_mnist(tmp_path, ["http://a.example/", "http://b.example/"], [("f.gz", "0")])
    message = str(seen.value)
    assert "Error downloading f.gz" in message
    for host in ("a.example", "b.example"):
        assert f"http://{host}/: ConnectionRefusedError: refused by {host}" in message
