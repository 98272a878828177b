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
    with pytest.raises(ValueError, match="epochs must be a positive integer or None, got 0"):
        metrics.reference_classifier("offline", epochs=0)
