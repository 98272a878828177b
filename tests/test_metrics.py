import numpy as np
import pytest
import scipy.linalg
import torch

from helpers import data, metrics


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _random_cov(D, seed):
    a = torch.randn(D, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / D + 0.1 * torch.eye(D, dtype=torch.float64)


# ----------------------------------------------------------------------------- Fréchet distance

def test_frechet_identical_gaussians_is_zero():
    mu, cov = torch.randn(6, dtype=torch.float64), _random_cov(6, 0)
    assert metrics.frechet_distance_gaussians(mu, cov, mu, cov) == pytest.approx(0, abs=1e-9)


def test_frechet_shifted_means_is_squared_shift():
    mu, cov, d = torch.zeros(5), _random_cov(5, 1), torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    assert metrics.frechet_distance_gaussians(mu, cov, mu + d, cov) == pytest.approx(
        float(d.square().sum()), rel=1e-9)


def test_frechet_diagonal_covariances():
    s1 = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    s2 = torch.tensor([1.5, 1.0, 0.1], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = float((s1 - s2).square().sum() + (mu1 - mu2).square().sum())  # Σ(σ₁−σ₂)² + ‖Δμ‖²
    got = metrics.frechet_distance_gaussians(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_general_case_matches_scipy_sqrtm_and_is_symmetric():
    mu1, mu2 = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    c1, c2 = _random_cov(8, 2), _random_cov(8, 3)
    covmean = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy())  # the usual FID route, independent
    ref = (np.sum((mu1 - mu2).numpy() ** 2) + np.trace(c1.numpy()) + np.trace(c2.numpy())
           - 2 * np.trace(covmean).real)
    d12 = metrics.frechet_distance_gaussians(mu1, c1, mu2, c2)
    assert d12 == pytest.approx(ref, rel=1e-8)
    assert d12 == pytest.approx(metrics.frechet_distance_gaussians(mu2, c2, mu1, c1), rel=1e-9)


def test_frechet_singular_covariance_is_finite():
    """Fewer samples than dimensions give a singular covariance; the result is still real."""
    a = torch.randn(5, 20, generator=torch.Generator().manual_seed(0))
    d = metrics.frechet_distance(a, a + 1)
    assert np.isfinite(d) and d == pytest.approx(20, rel=1e-6)


def test_frechet_of_samples_estimates_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20_000, 3, generator=gen)
    b = 2 * torch.randn(20_000, 3, generator=gen) + torch.tensor([1.0, 0.0, 0.0])
    assert metrics.frechet_distance(a, b) == pytest.approx(3 * (2 - 1) ** 2 + 1, rel=0.05)


def test_gaussian_fit_is_the_unbiased_covariance():
    """Σ = Σ_i (f_i − f̄)(f_i − f̄)ᵀ / (N − 1), as numpy.cov: kills the biased 1/N estimate."""
    f = torch.tensor([[0.0, 1.0], [2.0, -1.0], [4.0, 3.0]])   # N = 3: 1/N vs 1/(N−1) is 2/3
    mu, cov = metrics.gaussian_fit(f)
    assert cov.dtype == torch.float64 and cov.shape == (2, 2)
    assert np.allclose(mu.numpy(), [2.0, 1.0])
    assert np.allclose(cov.numpy(), np.cov(f.numpy(), rowvar=False, ddof=1))
    one_d = metrics.gaussian_fit(torch.tensor([[1.0], [3.0]]))[1]  # D = 1 still gives (1, 1)
    assert one_d.shape == (1, 1) and one_d.item() == pytest.approx(2.0)


def test_frechet_errors():
    with pytest.raises(ValueError, match=r"features must be a tensor \(N, D\) with N ≥ 2, got \(1, 3\)"):
        metrics.frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"features must be a tensor \(N, D\) with N ≥ 2, got \(5,\)"):
        metrics.frechet_distance(torch.zeros(5), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="same width D, got 3 and 2"):
        metrics.frechet_distance(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\) .* got \(2, 2\)"):
        metrics.frechet_distance_gaussians(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match=r"mu2 must have shape \(3,\)"):
        metrics.frechet_distance_gaussians(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(3))


# ----------------------------------------------------------------------------- classifier

class _FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)]


def test_confident_share_counts_probabilities_above_threshold():
    logits = torch.tensor([[10.0] + [0.0] * 9, [0.0] * 10, [3.0, 3.0] + [0.0] * 8, [0.0] * 9 + [8.0]])
    model = _FixedLogits(logits)
    x = torch.zeros(4, 1, 28, 28)
    assert metrics.confident_share(model, x) == 0.5  # rows 0 and 3 exceed 0.9
    assert metrics.confident_share(model, x, threshold=0.05) == 1.0
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\), got 1.5"):
        metrics.confident_share(model, x, threshold=1.5)


def test_classifier_probs_are_a_softmax_over_classes_per_image():
    """Each row sums to 1 and equals softmax(logits row): kills a softmax over the batch axis."""
    logits = torch.tensor([[2.0, 0.0] + [-1.0] * 8, [0.0] * 10, [5.0] * 5 + [0.0] * 5])
    p = metrics.classifier_probs(_FixedLogits(logits), torch.zeros(3, 1, 28, 28))
    assert p.shape == (3, 10)
    assert torch.allclose(p.sum(1), torch.ones(3))
    e = logits.exp()
    assert torch.allclose(p, e / e.sum(1, keepdim=True))


def test_reference_splits_are_disjoint_and_sized():
    """The FD floor compares the held-out set with the test split: neither may be seen in training.

    Offline: 3,000 training, 1,000 held-out (both from the train split, together all of it) and
    the 1,000 test images in a shuffled order; labels stay with their images.
    """
    x, y = data.load_mnist("train", source="offline")
    xt, yt = data.load_mnist("test", source="offline")
    (x_tr, y_tr), (x_te, y_te), x_held = metrics.reference_splits("offline")
    assert len(x_tr) == len(y_tr) == 3000 and len(x_held) == 1000 and len(x_te) == len(y_te) == 1000

    def rows(a):
        return [bytes(r) for r in (a.flatten(1) * 255).round().to(torch.uint8).numpy()]

    label_of = dict(zip(rows(x), y.tolist()))
    train_rows, held_rows = rows(x_tr), rows(x_held)
    assert not set(train_rows) & set(held_rows)                        # disjoint
    assert sorted(train_rows + held_rows) == sorted(rows(x))           # together: the train split
    assert [label_of[r] for r in train_rows] == y_tr.tolist()          # labels follow their images
    test_label_of = dict(zip(rows(xt), yt.tolist()))
    assert sorted(rows(x_te)) == sorted(rows(xt))                      # the whole test split
    assert [test_label_of[r] for r in rows(x_te)] == y_te.tolist()
    assert not torch.equal(y_te, yt)                                   # in a shuffled order
    again = metrics.reference_splits("offline")
    assert torch.equal(again[2], x_held) and torch.equal(again[1][1], y_te)   # fixed


def test_classifier_shapes_and_errors():
    model = metrics.MNISTClassifier()
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10) and model.features(x).shape == (3, metrics.CLASSIFIER_FEATURES)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\) .* got \(3, 1, 32, 32\)"):
        model.features(torch.rand(3, 1, 32, 32))
    with pytest.raises(ValueError, match=r"n must be an integer in 2..len\(generated\) = 2..3, got 5"):
        metrics.fd_to_real(model, x, torch.rand(10, 1, 28, 28), n=5)


def test_classifier_layout_is_the_documented_one():
    """28 → 14 → 7 with 16 and 32 channels, 128 features: the network the cached classifiers
    and the problem sets' FD numbers are for (a change needs a new CLASSIFIER_CACHE_VERSION)."""
    model = metrics.MNISTClassifier()
    x = torch.rand(2, 1, 28, 28)
    assert model.body[:3](x).shape == (2, 16, 14, 14) and model.body[:6](x).shape == (2, 32, 7, 7)
    assert metrics.CLASSIFIER_FEATURES == 128 and model.features(x).shape == (2, 128)


def test_classifier_cache_follows_the_data_source(monkeypatch):
    """No source given: $DGM_DATA decides; 'auto' resolves by the digits load_mnist returns
    (here the offline subset, as on a machine where the download failed)."""
    monkeypatch.setenv("DGM_DATA", "offline")
    assert "_offline_" in metrics.classifier_path(epochs=1).name
    offline = data.load_mnist("test", source="offline")
    monkeypatch.setattr(data, "load_mnist", lambda split, source=None, device=None: offline)
    monkeypatch.setenv("DGM_DATA", "auto")
    assert "_offline_" in metrics.classifier_path(epochs=1).name
    assert "_full_" in metrics.classifier_path("download", epochs=1).name
    for source in ("offline", "download"):                 # epochs None: the source's budget
        budget = metrics.REFERENCE_EPOCHS["offline" if source == "offline" else "full"]
        assert metrics.classifier_path(source) == metrics.classifier_path(source, epochs=budget)


def test_reference_split_is_the_one_the_cached_classifiers_never_saw():
    """The held-out digits are a permutation of seed 0 (what CLASSIFIER_CACHE_VERSION 3 caches
    were trained without): another seed, unless the version is bumped, would evaluate the FD floor
    on digits a cached classifier trained on."""
    x, _ = data.load_mnist("train", source="offline")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert torch.equal(metrics.reference_splits("offline")[2], x[perm[:1000]])


def test_reference_training_is_seeded_and_uses_the_source_budget(monkeypatch):
    """Same seed, same classifier (whatever torch's global stream did before); epochs None
    trains the source's REFERENCE_EPOCHS."""
    gen = torch.Generator().manual_seed(1)
    xs, ys = torch.rand(64, 1, 28, 28, generator=gen), torch.arange(64) % 10
    monkeypatch.setattr(metrics, "reference_splits",  # a tiny stand-in for the digits
                        lambda source=None, device=None: ((xs, ys), (xs[:16], ys[:16]), xs[16:32]))
    monkeypatch.setitem(metrics.REFERENCE_EPOCHS, "offline", 2)
    torch.manual_seed(123)
    a = metrics.train_reference_classifier("offline", batch_size=32, progress=False)
    torch.randn(10)
    b = metrics.train_reference_classifier("offline", batch_size=32, progress=False)
    assert a.meta["epochs"] == 2 and not a.training
    torch.manual_seed(0)
    assert not torch.equal(a.head.weight, metrics.MNISTClassifier().head.weight)   # it trained
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_classifier_cache_round_trip(tmp_path, monkeypatch):
    """Trained once (on a tiny slice here), cached under data_dir(), loaded without retraining."""
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(128, 1, 28, 28, generator=gen), torch.arange(128) % 10
    monkeypatch.setattr(metrics, "reference_splits",  # a tiny stand-in for the digits
                        lambda source=None, device=None: ((xs, ys), (xs[:32], ys[:32]), xs[32:64]))

    path = metrics.classifier_path("offline", epochs=1)
    assert path.parent.parent == tmp_path and "offline" in path.name and "e1" in path.name
    assert metrics.classifier_path("download", epochs=1) != path  # the sources never mix
    assert metrics.classifier_path("offline", epochs=2) != path  # nor do training budgets
    first = metrics.reference_classifier("offline", epochs=1, progress=False)
    assert path.exists() and first.meta["source"] == "offline" and first.meta["n_train"] == 128
    assert 0 <= first.meta["test_accuracy"] <= 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded, not retrained")

    with monkeypatch.context() as m:
        m.setattr(metrics, "train_reference_classifier", no_training)
        second = metrics.reference_classifier("offline", epochs=1)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(first(x), second(x)) and second.meta == first.meta
    assert not second.training
    on_meta = metrics.reference_classifier("offline", epochs=1, device="meta")   # any device
    assert next(on_meta.parameters()).device.type == "meta"
    with pytest.raises(ValueError, match="epochs must be a positive integer or None, got 0"):
        metrics.reference_classifier("offline", epochs=0)


# ----------------------------------------------------------------------------- augmentation

def _affine_of_augment(B: int, seed: int) -> torch.Tensor:
    """The affine map (B, 2, 3) that _augment applied to each of B images, read off exactly.

    Two channels hold the normalised x and y coordinate of every pixel centre (ramps); bilinear
    sampling reproduces a linear function exactly, so at the central pixels (never sampled from
    outside the image) channel c of the output is row c of the map applied to the pixel's
    coordinates; a least-squares fit recovers it.
    """
    c = (2 * torch.arange(28, dtype=torch.float64) + 1) / 28 - 1      # pixel centres
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    ramps = torch.stack([xx, yy]).float()[None].expand(B, 2, 28, 28).contiguous()
    out = metrics._augment(ramps, torch.Generator().manual_seed(seed)).double()
    inner = slice(7, 21)                                              # |coordinate| ≤ 0.5
    A = torch.stack([xx[inner, inner], yy[inner, inner], torch.ones(14, 14, dtype=torch.float64)],
                    -1).reshape(-1, 3)                                # (196, 3)
    target = out[:, :, inner, inner].reshape(B, 2, -1).transpose(1, 2)  # (B, 196, 2)
    theta = torch.linalg.lstsq(A.expand(B, -1, -1), target).solution.transpose(1, 2)  # (B, 2, 3)
    assert (A @ theta.transpose(1, 2) - target).abs().max() < 1e-4     # exactly affine
    return theta


def test_augment_is_a_small_random_similarity_transform():
    """Each image gets its own rotation in ±10°, scale in ±10 % and shift in ±2 px (28 px span
    2 normalised units), drawn independently and uniformly: the map is a rotation times a scale
    (no shear, no reflection), the ranges are filled up to their ends, and the four draws are
    uncorrelated."""
    theta = _affine_of_augment(2000, seed=0)
    a, b = theta[:, 0, 0], theta[:, 1, 0]
    assert torch.allclose(theta[:, 1, 1], a, atol=1e-4) and torch.allclose(theta[:, 0, 1], -b, atol=1e-4)
    angle = torch.rad2deg(torch.atan2(b, a))                 # θ = R(angle) / scale
    scale = 1 / torch.sqrt(a**2 + b**2)
    shift = theta[:, :, 2] * 14                              # in pixels
    params = {"angle": (angle, 10.0), "scale − 1": ((scale - 1) * 100, 10.0),
              "x shift": (shift[:, 0], 2.0), "y shift": (shift[:, 1], 2.0)}
    for name, (v, end) in params.items():
        assert v.abs().max() <= end * 1.001, f"{name} beyond ±{end}: {v.abs().max():.3f}"
        assert v.abs().max() >= end * 0.95, f"{name} never near ±{end}: {v.abs().max():.3f}"
        assert abs(v.mean()) < 0.1 * end and abs(v.std() - end / 3**0.5) < 0.1 * end, name
    values = torch.stack([v for v, _ in params.values()])
    corr = torch.corrcoef(values)
    assert (corr - torch.eye(4, dtype=corr.dtype)).abs().max() < 0.1, f"correlated draws: {corr}"


# ----------------------------------------------------------------------------- classifier-based measures

def test_classifier_accuracy_is_the_share_of_correct_predictions():
    logits = torch.tensor([[5.0] + [0.0] * 9, [0.0, 5.0] + [0.0] * 8, [0.0] * 9 + [5.0]])
    acc = metrics.classifier_accuracy(_FixedLogits(logits), torch.zeros(3, 1, 28, 28),
                                      torch.tensor([0, 1, 3]))
    assert acc == pytest.approx(2 / 3)


def test_classifier_measures_run_in_eval_mode():
    """A classifier left in training mode (dropout on) would give random answers: accuracy,
    probabilities and features are computed in eval mode, the same on every call."""
    torch.manual_seed(0)
    model = metrics.MNISTClassifier()
    model.body.append(torch.nn.Dropout(0.5))
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    results = []
    for _ in range(2):
        measures = (lambda: metrics.classifier_accuracy(model, x, y),
                    lambda: metrics.classifier_probs(model, x),
                    lambda: metrics.classifier_features(model, x))
        results.append([(model.train(), measure())[1] for measure in measures])
    with torch.no_grad():
        want = model.eval().features(x)                 # each measure starts in training mode
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1]) and torch.equal(results[0][2], want)


def test_classifier_inputs_are_clipped_to_0_1():
    """A decoder's output a little outside [0, 1] is read as the clipped image."""
    torch.manual_seed(1)
    model = metrics.MNISTClassifier().eval()
    x = 2 * torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(metrics.classifier_probs(model, x), model(x.clamp(0, 1)).softmax(1))
        assert torch.allclose(metrics.classifier_features(model, x), model.features(x.clamp(0, 1)))


def test_confident_share_counts_a_probability_equal_to_the_threshold():
    """'≥ threshold': two tied logits give exactly 0.5 each; 0 and 1 are not thresholds."""
    logits = torch.full((2, 10), -1e4)
    logits[0, :2] = 0.0                                   # p = (0.5, 0.5, 0, …) exactly
    logits[1, 0] = 0.0                                    # p = (1, 0, …)
    model, x = _FixedLogits(logits), torch.zeros(2, 1, 28, 28)
    assert metrics.confident_share(model, x, threshold=0.5) == 1.0
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"threshold must lie in \(0, 1\), got {bad}"):
            metrics.confident_share(model, x, threshold=bad)


class _TwoPixels(torch.nn.Module):
    """A stand-in classifier whose features are the first two pixels of an image."""

    def features(self, x):
        return x.flatten(1)[:, :2]

    def forward(self, x):
        return torch.zeros(len(x), 10)


def test_within_class_diversity_known_answer():
    """Class 0: two points 0.5 apart; class 1: three points with distances 0.5, 0.5 and 1
    (mean 2/3); class 2: a single image (skipped). Mean over the classes: (0.5 + 2/3) / 2."""
    pts = torch.tensor([[0.0, 0.0], [0.3, 0.4], [1.0, 0.0], [1.0, 0.5], [1.0, 1.0], [0.2, 0.2]])
    x = torch.zeros(6, 1, 28, 28)
    x.view(6, -1)[:, :2] = pts
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    assert metrics.within_class_diversity(_TwoPixels(), x, y) == pytest.approx((0.5 + 2 / 3) / 2)


def test_fd_to_real_uses_the_first_n_of_each_set():
    """n None: as many as the smaller set; n from 2 to the set's size, counted from the start."""
    torch.manual_seed(2)
    model = metrics.MNISTClassifier().eval()
    gen, real = torch.rand(6, 1, 28, 28), torch.rand(9, 1, 28, 28)
    feats = lambda v: metrics.classifier_features(model, v)  # noqa: E731
    assert metrics.fd_to_real(model, gen, real) == pytest.approx(
        metrics.frechet_distance(feats(gen), feats(real[:6])), rel=1e-9)
    for n in (2, 6):
        assert metrics.fd_to_real(model, gen, real, n=n) == pytest.approx(
            metrics.frechet_distance(feats(gen[:n]), feats(real[:n])), rel=1e-9)
    with pytest.raises(ValueError, match=r"n must be an integer in 2..len\(generated\) = 2..6, got 1"):
        metrics.fd_to_real(model, gen, real, n=1)


def test_frechet_in_one_dimension_and_a_mean_that_is_not_a_vector():
    """D = 1: (μ₁ − μ₂)² + (σ₁ − σ₂)²; a mean of shape (1, 3) is named as not (D,)."""
    got = metrics.frechet_distance_gaussians(torch.tensor([1.0]), torch.tensor([[4.0]]),
                                             torch.tensor([-1.0]), torch.tensor([[9.0]]))
    assert got == pytest.approx(2.0**2 + (2.0 - 3.0) ** 2)
    with pytest.raises(ValueError, match=r"mu1 must have shape \(D,\)"):
        metrics.frechet_distance_gaussians(torch.zeros(1, 3), torch.eye(3), torch.zeros(3), torch.eye(3))
