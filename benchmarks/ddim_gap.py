"""Where does DDIM's gap to DDPM come from? The sub-sequence, or the deterministic path?

One trained checkpoint (``helpers.diffusion.save_model``), the same starting noise for every
sampler, scored by the problem sets' reference classifier (confident share with its binomial
standard error, FD against real test digits, χ² p of the class histogram against uniform):

* DDPM: T ancestral steps;
* DDIM with η = 0 at S = 50 and at S = T (the deterministic path without any sub-sequence: if
  the gap stays at S = T, the skipped steps are not its cause);
* DDIM at S = 50 with η = 1 (fresh noise at each of the 50 steps).

A class-conditional checkpoint (08's) is sampled with the null label (w = 0). The network runs
under bf16 autocast where ``helpers.env.autocast_dtype`` says so, as in 07.

    python benchmarks/ddim_gap.py data/checkpoints/08_guided_standard.pt --n 300

Not a test: nothing is asserted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "psets")]
os.environ.setdefault("DGM_DATA", "offline")

import torch  # noqa: E402

from bench_diffusion import score  # noqa: E402  (benchmarks/, beside this file)
from check_bf16_sampling import parse_and_load  # noqa: E402
from helpers import diffusion, env, metrics  # noqa: E402


def main(argv=None):
    args, net, schedule, _ = parse_and_load(__doc__.split("\n\n")[0], "samples per sampler", argv)
    amp = env.autocast_dtype("cpu")
    clf = metrics.reference_classifier()
    _, (x_test, _), x_heldout = metrics.reference_splits()
    T = schedule.T
    samplers = {  # name: (network calls, sampler)
        "DDPM": (T, lambda shape, x_T, gen: diffusion.p_sample_loop(net, shape, schedule, x_T=x_T,
                                                                generator=gen)),
        "DDIM S = 50, η = 0": (50, lambda shape, x_T, gen: diffusion.ddim_sample_loop(
            net, shape, schedule, 50, x_T=x_T)),
        f"DDIM S = {T} (= T), η = 0": (T, lambda shape, x_T, gen: diffusion.ddim_sample_loop(
            net, shape, schedule, T, x_T=x_T)),
        "DDIM S = 50, η = 1": (50, lambda shape, x_T, gen: diffusion.ddim_sample_loop(
            net, shape, schedule, 50, eta=1.0, x_T=x_T, generator=gen)),
    }
    print(f"{args.checkpoint.name}: T = {T}; network in {amp or torch.float32}; n = {args.n}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print("\n| sampler | network calls | seconds | confident (± se) | FD | floor | χ² p | classes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, (calls, sample) in samplers.items():
        noise_gen = torch.Generator().manual_seed(args.seed)          # the same x_T for all
        step_gen = torch.Generator().manual_seed(args.seed + 1)
        start, chunks = time.perf_counter(), []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            for i in range(0, args.n, args.batch):
                shape = (min(args.batch, args.n - i), 1, 28, 28)
                chunks.append(sample(shape, torch.randn(shape, generator=noise_gen), step_gen))
        seconds = time.perf_counter() - start
        r = score(clf, ((torch.cat(chunks) + 1) / 2).clamp(0, 1), x_test, x_heldout)  # as the benchmark
        print(f"| {name} | {calls} | {seconds:.0f} | {r['confident']:.1%} ± {r['se']:.1%} | "
              f"{r['fd']:.1f} | {r['floor']:.1f} | {r['chi2_p']:.2g} | "
              f"{', '.join(map(str, r['classes']))} |", flush=True)


if __name__ == "__main__":
    main()
