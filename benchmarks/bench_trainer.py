"""Training throughput (images/s) of the diffusion trainer beside the notebooks' loop.

Same model (the U-Net of 08_guidance: 16 channels, mults 1-2-2, ten classes), same data (MNIST,
offline subset unless DGM_DATA says otherwise), same loss (L_simple with label dropout 0.1), AdamW,
gradient clipping at 1, same batch size. The program also updates the EMA weights and the
learning-rate schedule every step (the notebook loop does not); its per-epoch sample grid is off.
Each side trains `--epochs` epochs; the first is a warm-up and is not counted. Runs alternate
(loop, program, loop, program, ...) and the table gives the median.

    python benchmarks/bench_trainer.py [--repeats 3] [--images 1280] [--batch-size 128]

With CUDA, `--gpu` also measures the program at fp32, bf16-mixed, bf16 + channels_last and
bf16 + channels_last + torch.compile. Not a test: nothing is asserted. Timings on a shared
machine depend on its load: the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "psets")]
os.environ.setdefault("DGM_PROGRESS", "0")

import torch  # noqa: E402

from diffusion_trainer import data as tdata  # noqa: E402
from diffusion_trainer.config import TrainConfig, defaults  # noqa: E402
from diffusion_trainer.module import unet_config  # noqa: E402
from diffusion_trainer.run import train  # noqa: E402
from helpers import diffusion, nets  # noqa: E402
from helpers import train as htrain  # noqa: E402

NOTEBOOK_NET = {"base_channels": 16, "channel_mults": (1, 2, 2), "num_res_blocks": 1,
                "attention": True, "attention_levels": (), "dropout": 0.0}


def load(n: int):
    x, y, _ = tdata.load_images("mnist", "train")
    return x[:n], y[:n]


def loop_images_per_s(cfg: TrainConfig, x, y, device) -> float:
    """helpers.train.fit on the same model and loss; images/s over the epochs after the first."""
    torch.manual_seed(cfg.seed)
    model = nets.UNet(unet_config(cfg, 1, 10)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = diffusion.make_schedule(cfg.schedule, cfg.T)
    x0 = (x.float() / 127.5 - 1).to(device)  # the notebooks keep [−1, 1] floats on the device

    def loss_fn(m, xb, yb):
        return diffusion.conditional_training_loss(m, xb, yb, schedule, p_uncond=cfg.p_uncond)

    hist = htrain.fit(model, opt, loss_fn, (x0, y.to(device)), epochs=cfg.epochs,
                      batch_size=cfg.batch_size, clip_grad_norm=cfg.grad_clip, progress=False)
    return len(x) * (cfg.epochs - 1) / sum(hist["seconds"][1:])


def program_images_per_s(cfg: TrainConfig, n: int) -> float:
    with tempfile.TemporaryDirectory() as runs:
        run_cfg = TrainConfig.from_dict({"runs_dir": runs, "name": "bench"}, cfg)
        trainer = train(run_cfg)
        hist = trainer.lightning_module.history
    return n * (cfg.epochs - 1) / sum(r["seconds"] for r in hist[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=1280)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--gpu", action="store_true", help="also the precision table (CUDA)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    on_gpu = args.gpu and torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    print(f"load average at start: {open('/proc/loadavg').read().strip()}")
    print(f"torch {torch.__version__}, {device}, {args.threads} thread(s), {args.images} MNIST "
          f"images, batch {args.batch_size}, {args.epochs} epochs (first not counted)")
    x, y = load(args.images)
    cfg = TrainConfig.from_dict(
        {**NOTEBOOK_NET, "batch_size": args.batch_size, "epochs": args.epochs,
         "sample_every_epochs": 0, "accelerator": "gpu" if on_gpu else "cpu", "devices": "1",
         "precision": "32-true", "warmup_steps": 10, "log_every_steps": 50,
         "checkpoint_every_steps": 10_000, "data_source": ""}, defaults("train", "mnist"))
    cfg = TrainConfig.from_dict({"per_class": 0}, cfg)
    # The program reads the data itself: give it the same first `images` images.
    original = tdata.load_images
    tdata.load_images = lambda *a, **k: (x, y, tdata.MNIST_CLASSES)
    try:
        loop, prog = [], []
        for _ in range(args.repeats):
            loop.append(loop_images_per_s(cfg, x, y, device))
            prog.append(program_images_per_s(cfg, args.images))
        rows = [("notebook loop (helpers.train.fit)", loop), ("diffusion_trainer (Lightning)", prog)]
        if on_gpu:
            for name, extra in (("fp32", {}), ("bf16-mixed", {"precision": "bf16-mixed"}),
                                ("bf16 + channels_last", {"precision": "bf16-mixed",
                                                          "channels_last": True}),
                                ("bf16 + channels_last + compile",
                                 {"precision": "bf16-mixed", "channels_last": True,
                                  "compile": True})):
                c = TrainConfig.from_dict(extra, cfg)
                rows.append((f"program, {name}", [program_images_per_s(c, args.images)
                                                  for _ in range(args.repeats)]))
    finally:
        tdata.load_images = original
    print(f"\n| {'training loop':<40} | images/s (median) | runs |")
    print(f"| {'-' * 40} | ----------------: | ---- |")
    for name, values in rows:
        print(f"| {name:<40} | {statistics.median(values):17.1f} | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")
    ratio = statistics.median(loop) / statistics.median(prog)
    print(f"\nprogram cost over the loop: {100 * (ratio - 1):+.1f} % time per image")
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
