"""Measures of how good a model is. (More arrive with the problem sets.)"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import data, train


def torus_surface_distance(points: torch.Tensor, R: float = 1.0, r: float = 0.4) -> torch.Tensor:
    """Distance of each 3-D point to the surface of the torus with radii R > r > 0 (axis z).

    The nearest point of the core circle (radius R in the xy-plane) is at distance
    sqrt((sqrt(x² + y²) − R)² + z²); the surface lies r further out, so the distance to the
    surface is the absolute difference. points: (N, 3) → (N,).
    """
    if not torch.is_tensor(points) or points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be a tensor of shape (N, 3), got "
                         f"{tuple(points.shape) if torch.is_tensor(points) else type(points).__name__}")
    if not R > r > 0:
        raise ValueError(f"radii must satisfy R > r > 0, got R={R!r}, r={r!r}")
    ring = torch.linalg.vector_norm(points[:, :2], dim=1) - R
    return (torch.sqrt(ring**2 + points[:, 2] ** 2) - r).abs()


def chamfer_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance between point sets a (N, D) and b (M, D).

    The mean distance from each point of a to its nearest point of b, plus the same from b
    to a (Euclidean distances, not squared). Compare it with the value for two independent
    samples of the true distribution of the same sizes: that floor is not zero.
    """
    for name, p in (("a", a), ("b", b)):
        if not torch.is_tensor(p) or p.ndim != 2 or len(p) == 0:
            raise ValueError(f"{name} must be a non-empty tensor of shape (N, D), got "
                             f"{tuple(p.shape) if torch.is_tensor(p) else type(p).__name__}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension D, got {a.shape[1]} and {b.shape[1]}")
    d = torch.cdist(a.float(), b.float())  # (N, M)
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()


# ----------------------------------------------------------------------------- MNIST reference
# A small CNN classifier is the yardstick for generated digits (problem sets 2 and 3):
# its penultimate features give a Fréchet distance (the recipe of FID, Heusel et al. 2017,
# arXiv:1706.08500, with an MNIST network in place of Inception), its confidence says whether a
# sample looks like *some* digit, and its predicted labels check class-conditional samples.
# It is trained once per data source and cached under data.data_dir(). It never sees the
# held-out tail of the train split, so that tail and the test split are two disjoint real sets
# for the real-vs-real floor of the Fréchet distance.

# Bumped whenever the data a cached classifier was trained on, or the cache's format, changes
# (2: the offline splits are shuffled, so the held-out set of reference_splits holds different
# digits; 3: a SHA-256 file is stored beside the cache and checked on load).
CLASSIFIER_CACHE_VERSION = 3
CLASSIFIER_FEATURES = 128  # width of the penultimate layer (the features of the FD)


class MNISTClassifier(nn.Module):
    """Two conv blocks (28 → 14 → 7) and a 128-wide hidden layer; images in [0, 1] → 10 logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(), nn.Linear(32 * 7 * 7, CLASSIFIER_FEATURES), nn.ReLU())  # (B, 128)
        self.head = nn.Linear(CLASSIFIER_FEATURES, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, 128) of images x (B, 1, 28, 28) in [0, 1]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x must be MNIST images of shape (B, 1, 28, 28) with values in "
                             f"[0, 1], got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 10) logits


def _source_tag(source: str | None) -> str:
    """'offline' or 'full' (the downloaded set), so the two caches never mix."""
    source = source or os.environ.get("DGM_DATA", "auto").strip().lower() or "auto"
    if source == "auto":  # resolve by what load_mnist actually returns
        source = data.mnist_source(data.load_mnist("test", source="auto")[0])
    return "offline" if source == "offline" else "full"


def reference_splits(source: str | None = None, device=None):
    """(x_train, y_train), (x_test, y_test), x_heldout for the reference classifier.

    The held-out set is a fixed random subset of the train split as large as the test split
    (offline: 1,000 of 4,000; full: 10,000 of 60,000); the classifier trains on the rest. The
    test split comes in a fixed random order, so its first n images are a fair sample.
    Images (N, 1, 28, 28) in [0, 1]; labels (N,).
    """
    x, y = data.load_mnist("train", device=device, source=source)
    xt, yt = data.load_mnist("test", device=device, source=source)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    held, keep = perm[:len(xt)], perm[len(xt):]
    shuffle = torch.randperm(len(xt), generator=gen).to(x.device)  # any prefix: a random sample
    return (x[keep], y[keep]), (xt[shuffle], yt[shuffle]), x[held]


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small affine jitter (±10° rotation, ±2 px shift, ±10 % scale), one per image."""
    B = len(x)
    u = torch.rand(B, 4, generator=generator).to(x.device) * 2 - 1    # (B, 4) in [−1, 1]
    ang, scale = u[:, 0] * math.pi / 18, 1 + 0.1 * u[:, 1]
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * 2 / 14], 1),
                         torch.stack([sin, cos, u[:, 3] * 2 / 14], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


REFERENCE_EPOCHS = {"offline": 30, "full": 5}  # training budget per source: ~25k Adam steps ÷ 10


def _epochs(epochs: int | None, source: str | None) -> int:
    epochs = REFERENCE_EPOCHS[_source_tag(source)] if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer or None, got {epochs!r}")
    return epochs


def train_reference_classifier(source: str | None = None, device=None, epochs: int | None = None,
                               batch_size: int = 64, seed: int = 0,
                               progress: bool | None = None) -> MNISTClassifier:
    """Train the reference CNN on the classifier's part of the train split (see reference_splits).

    Adam with a cosine-decaying learning rate and random affine jitter, for ``epochs`` (None:
    the reference budget of the data source, REFERENCE_EPOCHS). Returns the model in eval
    mode, with ``meta`` (source, epochs, n_train, test_accuracy) attached.
    """
    epochs = _epochs(epochs, source)
    device = torch.device(device or "cpu")
    (x, y), (xt, yt), _ = reference_splits(source, device)
    torch.manual_seed(seed)
    model = MNISTClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(m, xb, yb):
        return F.cross_entropy(m(_augment(xb, gen)), yb)

    train.fit(model, opt, loss_fn, (x, y), epochs=epochs, batch_size=batch_size, seed=seed,
              scheduler=sched, progress=progress, desc="reference classifier")
    model.eval()
    model.meta = {"source": _source_tag(source), "epochs": epochs, "n_train": len(x),
                  "test_accuracy": classifier_accuracy(model, xt, yt)}
    return model


def classifier_path(source: str | None = None, epochs: int | None = None) -> Path:
    """Where the reference classifier for this data source and budget is cached.

    The name carries the source (offline or full), the epochs and CLASSIFIER_CACHE_VERSION,
    so caches never mix.
    """
    return (data.data_dir() / "checkpoints"
            / f"mnist_reference_classifier_v{CLASSIFIER_CACHE_VERSION}_{_source_tag(source)}"
              f"_e{_epochs(epochs, source)}.pt")


def reference_classifier(source: str | None = None, device=None, epochs: int | None = None,
                         retrain: bool = False, progress: bool | None = None) -> MNISTClassifier:
    """The reference classifier for ``source``: loaded from its cache, or trained and cached.

    ``epochs`` None means the reference budget of the source (REFERENCE_EPOCHS); tests and
    the smoke profile pass a smaller one, which is cached under its own name. The model comes
    back in eval mode on ``device`` with ``meta`` (source, epochs, n_train, test_accuracy).
    The cache is stored with its SHA-256 (``<file>.sha256``) and verified on every load; a cache
    that fails the check is retrained with a warning.
    """
    path = classifier_path(source, epochs)
    if path.exists() and not retrain:
        try:  # the cache is checked against the SHA-256 written with it: a flipped byte shows
            state = train.load_checkpoint(path, required=("model", "meta"), checksum=True)
            model = MNISTClassifier()
            model.load_state_dict(state["model"])
            model.meta = dict(state["meta"])
            return model.to(device or "cpu").eval()
        except (ValueError, RuntimeError) as err:
            warnings.warn(f"The cached reference classifier cannot be used ({err}); training "
                          f"it again (a few minutes) and replacing the cache.", RuntimeWarning,
                          stacklevel=2)
    model = train_reference_classifier(source, device, epochs=epochs, progress=progress)
    train.save_checkpoint(path, {"model": model.state_dict(), "meta": model.meta}, checksum=True)
    return model


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def classifier_accuracy(model: MNISTClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of images x (N, 1, 28, 28) in [0, 1] whose predicted digit equals y (N,)."""
    model.eval()
    return (_batched(model, x).argmax(1) == y).float().mean().item()


@torch.no_grad()
def classifier_probs(model: MNISTClassifier, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, 10) of images x (N, 1, 28, 28) in [0, 1]."""
    model.eval()
    return _batched(model, x.clamp(0, 1)).softmax(dim=1)


def confident_share(model: MNISTClassifier, x: torch.Tensor, threshold: float = 0.9) -> float:
    """Share of images x (N, 1, 28, 28) in [0, 1] classified with probability ≥ ``threshold``."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    return (classifier_probs(model, x).max(dim=1).values >= threshold).float().mean().item()


@torch.no_grad()
def classifier_features(model: MNISTClassifier, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (N, 128) of images x (N, 1, 28, 28) in [0, 1]."""
    model.eval()
    return _batched(model.features, x.clamp(0, 1))


# ----------------------------------------------------------------------------- Fréchet distance

def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D) with N ≥ 2."""
    if not torch.is_tensor(features) or features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be a tensor (N, D) with N ≥ 2, got "
                         f"{tuple(features.shape) if torch.is_tensor(features) else type(features).__name__}")
    f = features.detach().double().cpu()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by its eigen-decomposition."""
    lam, V = torch.linalg.eigh((a + a.T) / 2)
    return (V * lam.clamp(min=0).sqrt()) @ V.T


def frechet_distance_gaussians(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                               sigma2: torch.Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}) (Dowson & Landau 1982).
    The matrix square roots go through symmetric eigen-decompositions (negative round-off
    eigenvalues clamped to 0), so no complex parts arise. mu (D,), sigma (D, D).
    """
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    D = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, v, shape in (("mu1", mu1, (D,)), ("mu2", mu2, (D,)), ("sigma1", s1, (D, D)),
                           ("sigma2", s2, (D, D))):
        if D < 1 or tuple(v.shape) != shape:
            raise ValueError(f"{name} must have shape {shape if D > 0 else '(D,)'} (means (D,), "
                             f"covariances (D, D)), got {tuple(v.shape)}")
    r1 = _sqrtm_psd(s1)                                                   # Σ₁^{1/2}
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp(min=0).sqrt().sum()  # Tr((Σ₁^½Σ₂Σ₁^½)^½)
    d2 = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross
    return max(d2.item(), 0.0)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (N, D) and (M, D)."""
    (mu1, s1), (mu2, s2) = gaussian_fit(features_a), gaussian_fit(features_b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"features_a and features_b must have the same width D, got "
                         f"{mu1.shape[0]} and {mu2.shape[0]}")
    return frechet_distance_gaussians(mu1, s1, mu2, s2)


def _first(x: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= len(x):
        raise ValueError(f"n must be an integer in 2..len({name}) = 2..{len(x)}, got {n!r}")
    return x[:n]


def fd_to_real(model: MNISTClassifier, generated: torch.Tensor, real: torch.Tensor,
               n: int | None = None) -> float:
    """FD between the classifier features of n generated and n real images (both in [0, 1])."""
    n = min(len(generated), len(real)) if n is None else n
    return frechet_distance(classifier_features(model, _first(generated, n, "generated")),
                            classifier_features(model, _first(real, n, "real")))


def fd_real_floor(model: MNISTClassifier, real_a: torch.Tensor, real_b: torch.Tensor,
                  n: int | None = None) -> float:
    """FD between n images of two disjoint real sets: what a perfect generator would score."""
    return fd_to_real(model, real_b, real_a, n)


# ----------------------------------------------------------------------------- diversity

def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over all distinct pairs of rows of features (N, D), N ≥ 2."""
    if not torch.is_tensor(features) or features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be a tensor (N, D) with N ≥ 2, got "
                         f"{tuple(features.shape) if torch.is_tensor(features) else type(features).__name__}")
    f = features.detach().double()
    n = len(f)
    return (torch.cdist(f, f).sum() / (n * (n - 1))).item()   # the diagonal is zero


def within_class_diversity(model: MNISTClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Diversity of images x (N, 1, 28, 28) in [0, 1] that share a label in y (N,).

    The mean over the classes present (with ≥ 2 images) of the mean pairwise distance between
    the classifier features of that class's images. Identical copies score 0; for generated
    digits, compare with the same number computed on real digits.
    """
    if not torch.is_tensor(y) or y.shape != (len(x),):
        raise ValueError(f"y must be a tensor of shape ({len(x)},), one label per image, got "
                         f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
    feats = classifier_features(model, x)
    y = y.to(feats.device)
    per_class = [mean_pairwise_distance(feats[y == c]) for c in torch.unique(y).tolist()
                 if int((y == c).sum()) >= 2]
    if not per_class:
        raise ValueError("within_class_diversity needs at least one class with 2 or more images")
    return sum(per_class) / len(per_class)
