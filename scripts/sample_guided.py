"""Draw a PNG grid of guided samples from a class-conditional diffusion checkpoint.

    python scripts/sample_guided.py CHECKPOINT --classes 0 3 7 --w 3 --out grid.png
                                    [--n-per-class 8] [--steps 50 [--eta 0] | --ddpm] [--seed 0]

CHECKPOINT is a file written by ``helpers.diffusion.save_model`` (problem set 08 writes one to
``$DGM_DATA_DIR/checkpoints/08_guided_<profile>.pt``). Each row of the grid is one class; the
guidance weight w follows the course's convention (w = 0 unconditional, w = 1 conditional, w > 1
guided). A negative w is allowed: ε̃ = ε_uncond + w (ε_cond − ε_uncond) is defined for every real
w, and w < 0 steers the samples away from the class (a diagnostic, not a way to draw it).
Sampling is DDIM with ``--steps`` steps and noise level ``--eta`` (0, the default, is
deterministic; 1 draws fresh noise at each step, which gave more accurate digits with problem set
08's standard checkpoint), or DDPM with all T steps with ``--ddpm``.
The work is done by ``helpers.diffusion.sample_grid``, the same function the notebook calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psets"))

from helpers import diffusion, env  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--w", type=float, default=3.0,
                        help="guidance weight (default 3): 0 unconditional, 1 conditional, "
                             "above 1 guided; a negative w is allowed and steers the samples "
                             "away from the class")
    parser.add_argument("--out", type=Path, default=Path("guided_samples.png"))
    parser.add_argument("--n-per-class", type=int, default=8)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, default=50, help="DDIM steps S (default 50)")
    group.add_argument("--ddpm", action="store_true", help="DDPM ancestral sampling, all T steps")
    parser.add_argument("--eta", type=float, default=0.0,
                        help="DDIM's noise level η ≥ 0 (default 0: deterministic; 1: fresh noise "
                             "at every step)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.ddpm and args.eta != 0:
        parser.error(f"--eta applies to DDIM (--steps); --ddpm has its own noise, got --eta {args.eta:g}")
    try:
        path, x = diffusion.sample_grid(args.checkpoint, args.classes, args.w, args.out,
                                        n_per_class=args.n_per_class,
                                        S=None if args.ddpm else args.steps, seed=args.seed,
                                        eta=args.eta,
                                        device=env.pick_device())
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(x)} samples, classes {args.classes}, w = {args.w:g}"
          f"{f', η = {args.eta:g}' if args.eta else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
