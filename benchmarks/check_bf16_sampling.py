"""Does bfloat16 autocast while sampling change the samples? A paired check.

07 samples with the network under ``torch.autocast(dtype=torch.bfloat16)`` where the CPU has bf16
instructions (``helpers.env.autocast_dtype``): the network's output is rounded to bfloat16 while
the sampler's own arithmetic stays float32. This script draws the same DDPM samples twice, from
the same starting noise and the same generator, once in float32 and once under autocast, and
scores both with the problem sets' reference classifier: the share classified with confidence
≥ 0.9, the Fréchet distance to real test digits, the class histogram, and, pairwise, the share of
samples whose predicted class is the same in both runs and the pixel differences. It also times
the network alone on batches of 25 to 200 images in both precisions.

The model is a checkpoint written by ``helpers.diffusion.save_model``; a class-conditional one (08's)
is sampled unconditionally, with the null label (w = 0).

    python benchmarks/check_bf16_sampling.py data/checkpoints/08_guided_standard.pt --n 300

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "psets")]
os.environ.setdefault("DGM_DATA", "offline")

import torch  # noqa: E402

from helpers import diffusion, metrics  # noqa: E402


def network_speed(model, batches=(25, 50, 100, 200), repeats: int = 10) -> list[str]:
    lines = []
    with torch.no_grad():
        for b in batches:
            x, t = torch.randn(b, 1, 28, 28), torch.full((b,), 200)
            per = {}
            for bf16 in (False, True):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    for _ in range(3):
                        model(x, t)
                    start = time.perf_counter()
                    for _ in range(repeats):
                        model(x, t)
                per[bf16] = (time.perf_counter() - start) / repeats / b
            lines.append(f"| {b} | {1e3 * per[False]:.2f} ms | {1e3 * per[True]:.2f} ms | "
                         f"{per[False] / per[True]:.2f}× |")
    return lines


def parse_and_load(description: str, n_help: str, argv=None, extra=()):
    """The command line shared with ddim_gap.py: (args, net(x, t), schedule, num_classes).

    A class-conditional checkpoint gives ``net`` with the null label (its unconditional model).
    ``extra``: more options, pairs (names, keyword arguments) of ``add_argument``.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("checkpoint", type=Path, help="a file written by diffusion.save_model")
    ap.add_argument("--n", type=int, default=300, help=n_help)
    ap.add_argument("--batch", type=int, default=100, help="images per sampler call")
    ap.add_argument("--seed", type=int, default=1)
    for names, kwargs in extra:
        ap.add_argument(*names, **kwargs)
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        ap.error(f"checkpoint: no such file {str(args.checkpoint)!r} (run 08_guidance first)")
    if args.n < 2 or args.batch < 1:
        ap.error(f"--n must be ≥ 2 and --batch ≥ 1, got {args.n} and {args.batch}")
    model, schedule, _ = diffusion.load_model(args.checkpoint, device="cpu")
    model.eval()
    classes = getattr(model.config, "num_classes", None)
    net = model if classes is None else (
        lambda x, t: model(x, t, torch.full((len(x),), classes, dtype=torch.long)))
    return args, net, schedule, classes


def main(argv=None):
    args, net, schedule, classes = parse_and_load(__doc__.split("\n\n")[0],
                                                  "DDPM samples per precision", argv)
    clf = metrics.reference_classifier()
    _, (x_test, _), _ = metrics.reference_splits()
    print(f"{args.checkpoint.name}: T = {schedule.T}, {'conditional, sampled with the null label' if classes is not None else 'unconditional'}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}", flush=True)

    rows, samples = [], {}
    for bf16 in (False, True):
        gen = torch.Generator().manual_seed(args.seed)
        start, chunks = time.perf_counter(), []
        for i in range(0, args.n, args.batch):
            shape = (min(args.batch, args.n - i), 1, 28, 28)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                chunks.append(diffusion.p_sample_loop(net, shape, schedule, generator=gen))
        seconds = time.perf_counter() - start
        x = ((torch.cat(chunks) + 1) / 2).clamp(0, 1)
        probs = metrics.classifier_probs(clf, x)
        samples[bf16] = (x, probs.argmax(1))
        rows.append(f"| {'bfloat16 autocast' if bf16 else 'float32'} | {seconds:.0f} s | "
                    f"{(probs.max(1).values >= 0.9).float().mean().item():.1%} | "
                    f"{metrics.fd_to_real(clf, x, x_test, args.n):.1f} | "
                    f"{torch.bincount(probs.argmax(1), minlength=10).tolist()} |")
        print(rows[-1], flush=True)
    (x32, c32), (x16, c16) = samples[False], samples[True]
    diff = (x32 - x16).abs()
    print(f"\nDDPM, n = {args.n}, the same noise in both rows:\n")
    print("| precision of the network | wall time | confident (≥ 0.9) | FD | classes |")
    print("| --- | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    print(f"\nPaired: the same predicted class for {(c32 == c16).float().mean().item():.1%} of the "
          f"samples; pixel difference (in [0, 1]) mean {diff.mean().item():.4f}, largest "
          f"{diff.max().item():.3f}.\n")
    print("| images per call | float32 per image | bfloat16 per image | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    print("\n".join(network_speed(net)))


if __name__ == "__main__":
    main()
