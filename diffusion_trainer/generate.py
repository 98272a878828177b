"""Generate: samples of chosen classes from a checkpoint, guided with weight w, as a PNG grid
(and optionally the tensors)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from helpers import diffusion, nets
from helpers.train import load_checkpoint, save_checkpoint

from .config import TrainConfig
from .figures import save_grid
from .module import KIND, sample_images, unet_config

SAMPLERS = ("ddpm", "ddim")


def load_sampler(checkpoint, use_ema: bool = True, device="cpu"):
    """(model, schedule, class names) from this program's checkpoint (a .ckpt file or a run
    folder, whose last.ckpt is read) or from a ``helpers.diffusion.save_model`` file."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give a .ckpt file of a run, "
                                f"or a run folder with checkpoints/last.ckpt)")
    state = load_checkpoint(path)  # weights_only: a damaged or foreign file is a ValueError
    if isinstance(state, dict) and state.get("dgm_kind") == KIND:
        hp = state["hyper_parameters"]
        cfg = TrainConfig.from_dict(hp["config"])
        model = nets.UNet(unet_config(cfg, hp["in_channels"], hp["num_classes"]))
        prefix = "ema." if use_ema else "model."
        model.load_state_dict({k[len(prefix):]: v for k, v in state["state_dict"].items()
                               if k.startswith(prefix)})
        return model.to(device).eval(), diffusion.make_schedule(cfg.schedule, cfg.T), \
            list(hp["class_names"])
    if isinstance(state, dict) and state.get("kind") == "dgm-unet-sampler":
        model, schedule, _ = diffusion.load_model(path, device)
        if model.config.num_classes is None:
            raise ValueError(f"checkpoint {path} holds an unconditional UNet; generate needs a "
                             f"class-conditional one")
        return model, schedule, [str(c) for c in range(model.config.num_classes)]
    keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
    raise ValueError(f"checkpoint {path} is not a diffusion_trainer checkpoint nor a "
                     f"helpers.diffusion.save_model file (it holds {keys})")


def parse_classes(text: str, names: list[str]) -> list[int]:
    """'all', or comma-separated class indices or names ('0,3,7', 'cat,dog')."""
    if text.strip() == "all":
        return list(range(len(names)))
    out = []
    for item in (s.strip() for s in text.split(",")):
        if item.isdigit() and int(item) < len(names):
            out.append(int(item))
        elif item in names and not item.isdigit():
            out.append(names.index(item))
        else:
            raise ValueError(f"--classes must be 'all' or a comma-separated list of class indices "
                             f"0..{len(names) - 1} or names ({', '.join(names)}), got {text!r}")
    return out


def parse_w(text) -> float:
    try:
        w = float(text)
    except (TypeError, ValueError):
        w = math.nan
    if not math.isfinite(w):
        raise ValueError(f"--w (the guidance weight) must be a finite number, got {text!r}")
    return w


def generate(checkpoint, classes: str = "all", n_per_class: int = 8, w="2.0",
             sampler: str = "ddim", steps: int = 50, out="samples.png",
             save_tensors: bool = False, seed: int = 0, use_ema: bool = True,
             device: str = "cpu") -> tuple[Path, torch.Tensor]:
    """Write the PNG grid (one row per class) and, with ``save_tensors``, ``<out>.pt`` holding
    x (N, C, H, W) in [0, 1] and y (N,). Returns (png path, x)."""
    w = parse_w(w)
    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"--n-per-class must be a positive integer, got {n_per_class!r}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a path ending in .png, got {str(out)!r}")
    model, schedule, names = load_sampler(checkpoint, use_ema, device)
    ids = parse_classes(classes, names)
    if sampler == "ddim" and not (isinstance(steps, int) and 1 <= steps <= schedule.T):
        raise ValueError(f"--steps (DDIM's S) must be an integer in 1..T = 1..{schedule.T}, "
                         f"got {steps!r}")
    S = steps if sampler == "ddim" else None
    x = sample_images(model, schedule, ids, n_per_class, w, S, seed)
    how = f"DDIM S = {S}" if S else f"DDPM T = {schedule.T}"
    png = save_grid(x, n_per_class, [names[c] for c in ids], out, title=f"w = {w:g}, {how}")
    if save_tensors:
        y = torch.tensor(ids).repeat_interleave(n_per_class)
        save_checkpoint(out.with_suffix(".pt"), {"x": x, "y": y, "w": w, "sampler": sampler,
                                                 "steps": S or schedule.T})
    return png, x
