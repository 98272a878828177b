"""Datasets as uint8 tensors in memory, and a DataLoader that cuts batches by index.

Images stay uint8 (N, C, H, W) at their native side on the host (CIFAR-10's 50,000 images are
150 MB); scaling to [−1, 1], upscaling and flips happen per batch on the device
(``DiffusionModule.on_after_batch_transfer``), so no per-sample Python transform runs.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from helpers import data as hdata

MNIST_CLASSES = tuple(str(d) for d in range(10))


class DatasetUnavailable(ValueError):
    """The data set is not on disk and cannot be fetched (the message says what to do)."""


def load_images(dataset: str, split: str = "train", source: str = ""
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(x uint8 (N, C, H, W), y int64 (N,), class names) of one split.

    MNIST through ``helpers.data.load_mnist`` (its offline fallback included); CIFAR-10
    through torchvision's ``CIFAR10`` in ``DGM_DATA_DIR``. ``source`` as ``DGM_DATA``
    ("" reads it): auto, download or offline.
    """
    if split not in hdata.SPLITS:
        raise ValueError(f"split must be one of {hdata.SPLITS}, got {split!r}")
    source = source or os.environ.get("DGM_DATA", "auto").strip().lower() or "auto"
    if source not in hdata.SOURCES:
        raise ValueError(f"source (or DGM_DATA) must be one of {hdata.SOURCES}, got {source!r}")
    if dataset == "mnist":
        x, y = hdata.load_mnist(split, source=source)
        return (x * 255).round().to(torch.uint8), y.long(), MNIST_CLASSES
    if dataset == "cifar10":
        return _cifar10(split, source)
    raise ValueError(f"dataset must be 'mnist' or 'cifar10', got {dataset!r}")


def _cifar10(split: str, source: str):
    from torchvision import datasets

    root = hdata.data_dir()
    where = root / datasets.CIFAR10.base_folder
    try:
        ds = datasets.CIFAR10(str(root), train=split == "train", download=source != "offline")
    except (OSError, RuntimeError) as err:  # no network (URLError is an OSError), missing or bad files
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise DatasetUnavailable(
            f"CIFAR-10 needs a download: {where} is missing or incomplete and it could not be "
            f"fetched{' (DGM_DATA=offline)' if source == 'offline' else ''} ({reason}); run once "
            f"with internet and DGM_DATA=download, or put cifar-10-batches-py (from "
            f"{datasets.CIFAR10.url}) into DGM_DATA_DIR={root}") from None
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) → (N, 3, 32, 32)
    return x, torch.as_tensor(ds.targets, dtype=torch.long), tuple(ds.classes)


def first_per_class(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first ``n`` examples of each class in y (all classes; sorted)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    keep = [torch.nonzero(y == c).flatten()[:n] for c in torch.unique(y)]
    return torch.cat(keep).sort().values


class IndexedImages(Dataset):
    """x, y and the index of each example; a batch is cut with one indexing op (``__getitems__``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], torch.tensor(i)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx], idx


def _as_is(batch):
    """The batch ``__getitems__`` cut is already collated (module level: picklable)."""
    return batch


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, num_workers: int = 0,
           shuffle: bool = True) -> DataLoader:
    """A DataLoader of (x, y, index) batches; under DDP Lightning swaps its sampler for a
    DistributedSampler, which gives every rank its own shard."""
    return DataLoader(IndexedImages(x, y), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=_as_is, num_workers=num_workers,
                      persistent_workers=num_workers > 0)
