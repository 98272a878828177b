"""Where does DDIM's gap to DDPM come from? The sub-sequence, or the deterministic path?

One trained checkpoint (``helpers.diffusion.save_model``), the same starting noise for every
sampler, scored by the problem sets' reference classifier (confident share with its binomial
standard error, FD against real test digits, χ² p of the class histogram against uniform):

* DDPM: T ancestral steps;
* DDIM with η = 0 at S = 50 and at S = T (the deterministic path without any sub-sequence: if
  the gap stays at S = T, the skipped steps are not its cause);
* DDIM at S = 50 with η = 1 (fresh noise at each of the 50 steps).

A class-conditional checkpoint (08's) is sampled with the null label (w = 0), or, with ``--w W``,
guided towards the labels 0, 1, …, 9, 0, 1, … with weight W (``diffusion.Guided``); then each row
also gives the conditional accuracy (the share classified as the label asked for), 08's measure.
``--samplers`` picks rows (default: all four above); names: ``ddpm``, ``ddimS`` (η = 0, S steps,
e.g. ``ddim50``, ``ddimT`` for S = T) and ``ddimS-eta1``. The network runs under bf16 autocast
where ``helpers.env.autocast_dtype`` says so, as in 07.

    python benchmarks/ddim_gap.py data/checkpoints/08_guided_standard.pt --n 300
    python benchmarks/ddim_gap.py data/checkpoints/08_guided_standard.pt --n 500 --w 1 \
        --samplers ddim20,ddim50,ddim50-eta1,ddpm

Not a test: nothing is asserted.
"""

from __future__ import annotations

import math
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


def sampler_rows(names: str, T: int) -> dict:
    """{row name: (network calls, S, η)} from e.g. "ddpm,ddim50,ddimT,ddim50-eta1"; DDPM's S and η
    are None (it takes all T steps and draws its own noise)."""
    rows = {}
    for name in names.split(","):
        if name == "ddpm":
            rows["DDPM"] = (T, None, None)
            continue
        steps, _, eta = name.removeprefix("ddim").partition("-eta")
        if not name.startswith("ddim") or not (steps == "T" or steps.isdigit()) or eta not in ("", "1"):
            raise SystemExit(f"--samplers: unknown sampler {name!r}; expected ddpm, ddimS, ddimT or "
                             f"ddimS-eta1 (S an integer in 1..{T})")
        S = T if steps == "T" else int(steps)
        if not 1 <= S <= T:
            raise SystemExit(f"--samplers: {name!r} asks for S = {S}; S must lie in 1..T = 1..{T}")
        eta = float(eta or 0)
        rows[f"DDIM S = {S}{' (= T)' if S == T else ''}, η = {eta:g}"] = (S, S, eta)
    return rows


def main(argv=None):
    args, net, schedule, classes = parse_and_load(
        __doc__.split("\n\n")[0], "samples per sampler", argv,
        extra=[(("--w",), dict(type=float, default=None,
                               help="guide towards labels 0..9 (cycled) with this weight")),
               (("--samplers",), dict(default="ddpm,ddim50,ddimT,ddim50-eta1",
                                      help="comma-separated rows: ddpm, ddimS, ddimT, ddimS-eta1"))])
    T = schedule.T
    rows = sampler_rows(args.samplers, T)
    if args.w is not None and classes is None:
        raise SystemExit(f"--w needs a class-conditional checkpoint; {args.checkpoint} is unconditional")
    model = diffusion.load_model(args.checkpoint, device="cpu")[0].eval() if args.w is not None else None
    labels = torch.arange(args.n) % 10
    amp = env.autocast_dtype("cpu")
    clf = metrics.reference_classifier()
    _, (x_test, _), x_heldout = metrics.reference_splits()
    guided = f"guided to labels 0..9 with w = {args.w:g}" if args.w is not None else "null label"
    print(f"{args.checkpoint.name} ({guided if classes is not None else 'unconditional'}): T = {T}; "
          f"network in {amp or torch.float32}; n = {args.n}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    accuracy = " conditional accuracy (± se) |" if args.w is not None else ""
    print(f"\n| sampler | network calls | seconds |{accuracy} confident (± se) | FD | floor | χ² p | classes |")
    print(f"| --- | ---: | ---: |{' ---: |' if accuracy else ''} ---: | ---: | ---: | ---: | --- |")
    for name, (calls, S, eta) in rows.items():
        noise_gen = torch.Generator().manual_seed(args.seed)          # the same x_T for all
        step_gen = torch.Generator().manual_seed(args.seed + 1)
        start, chunks = time.perf_counter(), []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            for i in range(0, args.n, args.batch):
                shape = (min(args.batch, args.n - i), 1, 28, 28)
                eps = net if model is None else diffusion.Guided(model, labels[i:i + shape[0]], args.w)
                x_T = torch.randn(shape, generator=noise_gen)
                chunks.append(diffusion.p_sample_loop(eps, shape, schedule, x_T=x_T, generator=step_gen)
                              if S is None else diffusion.ddim_sample_loop(
                                  eps, shape, schedule, S, eta=eta, x_T=x_T, generator=step_gen))
        seconds = time.perf_counter() - start
        x = ((torch.cat(chunks) + 1) / 2).clamp(0, 1)
        r = score(clf, x, x_test, x_heldout)                          # as the benchmark
        if model is not None:
            acc = metrics.classifier_accuracy(clf, x, labels)
            acc = f" {acc:.1%} ± {math.sqrt(acc * (1 - acc) / args.n):.1%} |"
        print(f"| {name} | {calls} | {seconds:.0f} |{acc if model is not None else ''} "
              f"{r['confident']:.1%} ± {r['se']:.1%} | {r['fd']:.1f} | {r['floor']:.1f} | "
              f"{r['chi2_p']:.2g} | {', '.join(map(str, r['classes']))} |", flush=True)


if __name__ == "__main__":
    main()
