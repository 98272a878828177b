"""python -m diffusion_trainer {train,overfit,quicktest,generate,status} ..."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import yaml

from .config import MODES, TrainConfig, defaults

# Errors of the user's input (config, flags, files): one line, no traceback. Errors inside
# training itself keep their traceback.
INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError)


def _int_tuple(text: str) -> tuple:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--num-nodes`` for num_nodes); unset flags stay None."""
    p.add_argument("--config", help="YAML file of config values (flags override it)")
    for f in fields(TrainConfig):
        if f.name == "mode":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", "typing.Optional[bool]"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str, "tuple": _int_tuple}[f.type]
            p.add_argument(flag, dest=f.name, type=kind, default=None,
                           metavar=f.name.upper(), help=f"default {f.default!r}"
                           if not callable(f.default) else None)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m diffusion_trainer", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    helps = {"train": "train (or resume) a run on the whole training set",
             "overfit": "learn per_class images of each class by heart (debugging)",
             "quicktest": "a couple of epochs of overfit with a tiny net (seconds)"}
    for mode in MODES:
        _add_config_flags(sub.add_parser(mode, help=helps[mode]))
    g = sub.add_parser("generate", help="samples from a checkpoint → PNG grid")
    g.add_argument("--checkpoint", required=True, help="a .ckpt file or a run folder")
    g.add_argument("--classes", default="all", help="'all', or indices/names: 0,3,7 or cat,dog")
    g.add_argument("--n-per-class", type=int, default=8)
    g.add_argument("--w", default="2.0", help="guidance weight (0 unconditional, 1 conditional)")
    g.add_argument("--sampler", default="ddim", help="ddim (S steps) or ddpm (all T steps)")
    g.add_argument("--steps", type=int, default=50, help="S, DDIM's number of steps")
    g.add_argument("--out", default="samples.png")
    g.add_argument("--save-tensors", action="store_true", help="also write <out>.pt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")
    g.add_argument("--device", default="cpu")
    s = sub.add_parser("status", help="runs, their last epoch, loss and checkpoints")
    s.add_argument("--runs-dir", default="runs")
    return top


def resolve(mode: str, args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    """The run's config: defaults(mode, dataset) ← --config file ← flags; and the flags given."""
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    file_values = {}
    if args.config:
        file_values = TrainConfig.load(args.config).to_dict()  # validates the file alone
        with open(args.config) as fh:  # only the keys the file sets override the defaults
            file_values = {k: file_values[k] for k in yaml.safe_load(fh)}
    dataset = overrides.get("dataset") or file_values.get("dataset") or "mnist"
    base = TrainConfig.from_dict({**file_values, "mode": mode}, defaults(mode, dataset))
    return TrainConfig.from_dict(overrides, base), overrides


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "status":
            from .status import table
            print(table(args.runs_dir))
            return 0
        if args.command == "generate":
            from .generate import generate
            png, x = generate(args.checkpoint, args.classes, args.n_per_class, args.w,
                              args.sampler, args.steps, args.out, args.save_tensors, args.seed,
                              not args.no_ema, args.device)
            print(f"wrote {png} ({len(x)} images)")
            return 0
        from .data import DatasetUnavailable
        from .run import resolve_for_resume, train
        cfg, overrides = resolve(args.command, args)
        cfg = resolve_for_resume(cfg, overrides)
    except INPUT_ERRORS as err:
        return _fail(err)
    try:
        train(cfg)
    except DatasetUnavailable as err:
        return _fail(err)
    return 0


def _fail(err: Exception) -> int:
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2
