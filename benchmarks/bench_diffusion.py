"""Diffusion recipes trained for the same wall-clock budget, scored by the same classifier.

Issue 22's benchmark. Each recipe trains an unconditional noise predictor on the same training
digits (MNIST, the offline subset unless DGM_DATA says otherwise) for ``--budget`` seconds of wall
clock, then draws ``--n`` DDPM samples (T network calls each) and ``--n`` DDIM samples with
S = 50, and the reference classifier of the problem sets (``helpers.metrics``) scores them: the
share classified with confidence ≥ 0.9 (with its binomial standard error), the Fréchet distance
of its features beside the real-vs-real floor at the same n, and the χ² p-value of the predicted
class histogram against uniform.

Recipes (``--recipes``, comma-separated):

* ``first``: the first edition's standard recipe of 07_diffusion (16-channel U-Net of
  ``helpers.nets``, linear schedule with T = 400, batch 32, Adam 1e-3 at a constant rate, EMA
  0.999 with warm-up, gradient clipping at 1).
* ``second``: the second edition's recipe, as 07 runs it (the same network; warm-up and cosine
  decay of a doubled peak rate; bf16 autocast in training and sampling on a CPU with bf16
  instructions). ``warmup-cosine`` and the ``wc+…`` variants are the steps that led there;
  ``s+b32``, ``s+noattn``, ``s+b64``, ``s+v``, ``s+m124``, ``s+ss``, ``s+drop`` and ``s+p2``
  change one thing of ``second`` (a wider network, no self-attention, a larger batch at a higher
  rate, v-prediction, a wider lowest level, AdaGN conditioning, dropout 0.1, P2 loss weighting).
* ``textbook``: a peer written here from the description of a textbook's recipe (a U-Net with
  64/128/256 channels, batch norm, ReLU, max-pool and bilinear up-sampling, sinusoidal time
  features added to every block; linear schedule with T = 1000; batch 128; Adam 1e-3; no EMA;
  data in [0, 1]; no clipping of x̂_0).

The budget is spent, not counted in epochs: each recipe trains until its time is up, and its
learning-rate schedule (warm-up and cosine decay need a length) is stretched to the number of
steps that the pace so far predicts, re-estimated before every step; the table gives the steps
it made. (Until 2 December the step count was fixed from the first 30 steps' pace, which missed
the budget by up to 23 % when the pace changed.) Recipes run one after the other in one process, so the
comparison is side by side on one machine; the load average before and after each is printed.

    python benchmarks/bench_diffusion.py                        # all three, 5 min each, n = 500
    python benchmarks/bench_diffusion.py --budget 600           # 10 min each
    python benchmarks/bench_diffusion.py --recipes first,second --n 200 --json out.json
    python benchmarks/bench_diffusion.py --recipes second --steps 3250 --other-ema 0.995,0.9995
    python benchmarks/bench_diffusion.py --recipes second,s+v --steps 6500 --ddim-variants
    python benchmarks/bench_diffusion.py --recipes s+ss --steps 6500 --ddim-variants --seed 1
    python benchmarks/bench_diffusion.py --recipes second --steps 6500 --ddpm-variants --seed 1

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "psets")]
os.environ.setdefault("DGM_DATA", "offline")

import torch  # noqa: E402
from scipy import stats  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from helpers import data, diffusion, env, metrics, nets, schedules  # noqa: E402

SAMPLE_BATCH = 100  # images per sampler call (on 2 CPU cores, 100 per call draws 500 about twice
                    # as fast as 500 per call)


# ----------------------------------------------------------------------------- the textbook peer

class TextbookBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and ReLU; the step's features are added first."""

    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.time = nn.Sequential(nn.Linear(time_dim, c_in), nn.ReLU(), nn.Linear(c_in, c_in))
        self.convs = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, x, temb):
        return self.convs(x + self.time(temb)[:, :, None, None])


class TextbookUNet(nn.Module):
    """28 → 14 → 7 with 64, 128, 256 channels; max-pool down, bilinear up, concatenated skips."""

    def __init__(self, time_dim: int = 100):
        super().__init__()
        self.time_dim = time_dim
        self.down1, self.down2 = TextbookBlock(1, 64, time_dim), TextbookBlock(64, 128, time_dim)
        self.bottom = TextbookBlock(128, 256, time_dim)
        self.up2, self.up1 = TextbookBlock(256 + 128, 128, time_dim), TextbookBlock(128 + 64, 64, time_dim)
        self.out = nn.Conv2d(64, 1, 1)

    def forward(self, x, t):
        temb = nets.sinusoidal_embedding(t, self.time_dim)
        h1 = self.down1(x, temb)
        h2 = self.down2(F.max_pool2d(h1, 2), temb)
        h = self.bottom(F.max_pool2d(h2, 2), temb)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2, mode="bilinear"), h2], 1), temb)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2, mode="bilinear"), h1], 1), temb)
        return self.out(h)


# ----------------------------------------------------------------------------- recipes

@dataclass
class Recipe:
    name: str
    make_model: object                 # () -> nn.Module, ε_θ(x_t, t)
    T: int = 400
    schedule: str = "linear"
    batch_size: int = 32
    lr: float = 1e-3                   # the (peak) learning rate
    warmup_cosine: bool = False        # linear warm-up over the first 1/15 of the steps, then
                                       # cosine decay to 0 (helpers.schedules); else constant
    ema_decay: float | None = 0.999    # None: sample with the trained weights
    min_snr_gamma: float | None = None  # Hang et al. 2023: weight min(SNR, γ) / SNR (ε-prediction)
    p2_gamma: float | None = None      # Choi et al. 2022 (P2): weight 1 / (1 + SNR)^γ on L_simple
    prediction: str = "eps"            # "eps": the net predicts ε; "v": it predicts
                                       # v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022, §4) and is
                                       # sampled through VAsEps
    data_range: tuple[float, float] = (-1.0, 1.0)
    clip_denoised: bool = True
    clip_grad_norm: float | None = 1.0
    bf16: bool = False                 # bf16 autocast for the training forward pass (CPU or CUDA)
    bf16_sampling: bool = False        # bf16 autocast for the network's calls while sampling

    def __post_init__(self):
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"Recipe.prediction must be 'eps' or 'v', got {self.prediction!r}")
        if self.min_snr_gamma is not None and self.p2_gamma is not None:
            raise ValueError("Recipe: choose one loss weighting, min_snr_gamma or p2_gamma; got "
                             f"{self.min_snr_gamma!r} and {self.p2_gamma!r}")
        if self.prediction == "v" and (self.min_snr_gamma is not None or self.p2_gamma is not None):
            raise ValueError("Recipe: min_snr_gamma and p2_gamma are written for ε-prediction; with "
                             f"prediction='v' they must be None, got {self.min_snr_gamma!r} and "
                             f"{self.p2_gamma!r}")


def unet(**kw):
    return lambda: nets.UNet(nets.UNetConfig(**kw))


NATIVE_BF16 = env.autocast_dtype("cpu") is not None   # as 07 decides (DGM_AUTOCAST overrides)

RECIPES = {
    "first": Recipe("first edition (07, standard)", unet(base_channels=16)),
    # the first change (1 December): warm-up and cosine decay of a doubled peak rate
    "warmup-cosine": Recipe("warm-up + cosine, lr 2e-3", unet(base_channels=16), lr=2e-3,
                            warmup_cosine=True),
    # variants of "warmup-cosine" that the benchmark tried (1 December): one change each
    "wc+minsnr": Recipe("warm-up + cosine + min-SNR-5 weighting", unet(base_channels=16), lr=2e-3,
                        warmup_cosine=True, min_snr_gamma=5.0),
    "wc+cosine": Recipe("warm-up + cosine + cosine noise schedule", unet(base_channels=16),
                        lr=2e-3, warmup_cosine=True, schedule="cosine"),
    "wc+b64": Recipe("warm-up + cosine + batch 64", unet(base_channels=16), lr=2e-3,
                     warmup_cosine=True, batch_size=64),
    "wc+bf16": Recipe("warm-up + cosine + bf16 autocast in training", unet(base_channels=16),
                      lr=2e-3, warmup_cosine=True, bf16=True),
    # the second edition as committed in 07 (2 December): warm-up + cosine, and bf16 autocast in
    # training and sampling where the CPU has bf16 instructions (helpers.env.autocast_dtype)
    "second": Recipe("second edition (07, standard" + (", bf16)" if NATIVE_BF16 else ", float32)"),
                     unet(base_channels=16), lr=2e-3, warmup_cosine=True, bf16=NATIVE_BF16,
                     bf16_sampling=NATIVE_BF16),
    # variants of "second" screened on 2 December at equal wall-clock time (one change each)
    "s+b32": Recipe("second + 32 base channels (1.06M parameters)", unet(base_channels=32),
                    lr=2e-3, warmup_cosine=True, bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16),
    "s+noattn": Recipe("second without the 7 × 7 self-attention",
                       unet(base_channels=16, attention=False), lr=2e-3, warmup_cosine=True,
                       bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16),
    "s+b64": Recipe("second + batch 64, peak rate 3e-3", unet(base_channels=16), lr=3e-3,
                    batch_size=64, warmup_cosine=True, bf16=NATIVE_BF16,
                    bf16_sampling=NATIVE_BF16),
    "s+v": Recipe("second with v-prediction", unet(base_channels=16), lr=2e-3,
                  warmup_cosine=True, bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16,
                  prediction="v"),
    # a wider lowest level (7 × 7: 64 channels, not 32): 2.4× the parameters, ~9 % more time
    "s+m124": Recipe("second with channel multipliers (1, 2, 4)",
                     unet(base_channels=16, channel_mults=(1, 2, 4)), lr=2e-3, warmup_cosine=True,
                     bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16),
    # AdaGN: the time embedding scales and shifts the second GroupNorm of each block
    "s+ss": Recipe("second with scale-shift conditioning (AdaGN)",
                   unet(base_channels=16, scale_shift=True), lr=2e-3, warmup_cosine=True,
                   bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16),
    # dropout 0.1 inside the residual blocks (Ho et al. 2020 used 0.1 on CIFAR-10)
    "s+drop": Recipe("second with dropout 0.1", unet(base_channels=16, dropout=0.1), lr=2e-3,
                     warmup_cosine=True, bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16),
    # P2 weighting (Choi et al. 2022): less weight on the low-noise steps, where only details
    # are left to decide, more (relatively) on the noisy ones that settle which digit it is
    "s+p2": Recipe("second with P2 weighting (γ = 1, k = 1)", unet(base_channels=16), lr=2e-3,
                   warmup_cosine=True, bf16=NATIVE_BF16, bf16_sampling=NATIVE_BF16, p2_gamma=1.0),
    "textbook": Recipe("textbook-style peer", TextbookUNet, T=1000, batch_size=128, lr=1e-3,
                       ema_decay=None, data_range=(0.0, 1.0), clip_denoised=False,
                       clip_grad_norm=None),
}


def learning_rate(recipe: Recipe, step: int, total: int) -> float:
    """The rate at optimizer step ``step`` (0-based) of ``total`` (as 07 sets it up)."""
    if not recipe.warmup_cosine:
        return recipe.lr
    return schedules.warmup_cosine_lr(step, total, total // 15, recipe.lr)


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule) -> torch.Tensor:
    """v = √ᾱ_t ε − √(1−ᾱ_t) x_0, the velocity of Salimans & Ho (2022, arXiv:2202.00512, §4)."""
    ab = diffusion.extract(schedule.alpha_bar, t, x0.ndim)
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


class VAsEps(torch.nn.Module):
    """A v-predicting network seen as an ε-predictor, so that every sampler of helpers.diffusion
    draws from it unchanged: with x_t = √ᾱ x_0 + √(1−ᾱ) ε and v as above, ε = √(1−ᾱ) x_t + √ᾱ v."""

    def __init__(self, net: torch.nn.Module, schedule):
        super().__init__()
        self.net, self.schedule = net, schedule

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = diffusion.extract(self.schedule.alpha_bar, t, xt.ndim)
        return (1 - ab).sqrt() * xt + ab.sqrt() * self.net(xt, t)


def loss_fn(recipe: Recipe, model, x0, schedule, gen):
    if recipe.min_snr_gamma is None and recipe.p2_gamma is None and recipe.prediction == "eps":
        return diffusion.training_loss(model, x0, schedule, gen)   # L_simple, as in 07
    t = torch.randint(1, schedule.T + 1, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    xt = diffusion.q_sample(x0, t, schedule, noise)
    target = v_target(x0, noise, t, schedule) if recipe.prediction == "v" else noise
    per_image = ((target - model(xt, t)) ** 2).flatten(1).mean(1)
    snr = (schedule.alpha_bar / (1 - schedule.alpha_bar))[t].float()
    if recipe.min_snr_gamma is not None:
        per_image = per_image * snr.clamp(max=recipe.min_snr_gamma) / snr
    if recipe.p2_gamma is not None:   # k = 1: Choi et al. 2022 (arXiv:2204.00227), eq. 8
        per_image = per_image / (1 + snr) ** recipe.p2_gamma
    return per_image.mean()


def train(recipe: Recipe, x0: torch.Tensor, budget_s: float | None, seed: int = 0,
          steps: int | None = None, other_decays: tuple[float, ...] = (), other_warmup: bool = True):
    """Train until ``budget_s`` seconds of wall clock are spent or, if ``steps`` is given, for
    exactly that many steps. On a budget, the learning-rate schedule's length is re-estimated
    before every step from the pace so far (steps done × budget / time spent), so that the decay
    ends when the time does even if the pace changes. ``other_decays``: more EMAs of the same
    run, returned as {decay: network} in the info dict's "others" (one training, several
    averages)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    schedule = diffusion.make_schedule(recipe.schedule, recipe.T)
    model = recipe.make_model()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    ema = diffusion.ema_of(model, opt, decay=recipe.ema_decay) if recipe.ema_decay else None
    others = {d: diffusion.ema_of(model, opt, decay=d, warmup=other_warmup) for d in other_decays}
    model.train()
    start, step, losses = time.perf_counter(), 0, []
    while True:
        spent = time.perf_counter() - start
        if steps is not None:
            total = steps
        elif spent >= budget_s:
            break
        else:  # the schedule's length from the pace so far (a guess of 10^9 before the first step)
            total = max(step + 2, round(step * budget_s / spent)) if step else 10**9
        if step >= total:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(recipe, step, total)
        idx = torch.randint(0, len(x0), (recipe.batch_size,), generator=gen)
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = loss_fn(recipe, model, x0[idx], schedule, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 500 == 0:
            print(f"  {recipe.name}: step {step}/{total}, loss {sum(losses[-500:]) / 500:.4f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    net = (ema.module if ema is not None else model).eval()
    as_eps = (lambda m: VAsEps(m, schedule).eval()) if recipe.prediction == "v" else (lambda m: m)
    return as_eps(net), schedule, dict(steps=step, train_s=seconds, ms_per_step=1e3 * seconds / step,
                                       final_loss=sum(losses[-200:]) / len(losses[-200:]),
                                       others={d: as_eps(e.module.eval()) for d, e in others.items()})


def to_unit(recipe: Recipe, x: torch.Tensor) -> torch.Tensor:
    lo, hi = recipe.data_range
    return ((x - lo) / (hi - lo)).clamp(0, 1)


@torch.no_grad()
def draw(recipe, net, schedule, sampler: str, n: int, batch: int, seed: int, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    start, chunks = time.perf_counter(), []
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16_sampling)
    for i in range(0, n, batch):
        shape = (min(batch, n - i), 1, 28, 28)
        if sampler == "DDPM":
            with amp:
                x = diffusion.p_sample_loop(net, shape, schedule, generator=gen,
                                            clip_denoised=recipe.clip_denoised, **kwargs)
        else:
            with amp:
                opts = {"clip_denoised": recipe.clip_denoised, **kwargs}
                x = diffusion.ddim_sample_loop(net, shape, schedule, opts.pop("steps", 50),
                                               generator=gen, **opts)
        chunks.append(to_unit(recipe, x))
    return torch.cat(chunks), time.perf_counter() - start


def score(clf, x, x_test, x_heldout):
    n = len(x)
    probs = metrics.classifier_probs(clf, x)
    confident = (probs.max(1).values >= 0.9).float().mean().item()
    classes = torch.bincount(probs.argmax(1), minlength=10)
    return dict(n=n, confident=confident, se=math.sqrt(confident * (1 - confident) / n),
                fd=metrics.fd_to_real(clf, x, x_test, n),
                floor=metrics.fd_real_floor(clf, x_test, x_heldout, n),
                chi2_p=float(stats.chisquare(classes.numpy()).pvalue), classes=classes.tolist())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="first,second,textbook",
                    help=f"comma-separated, from {sorted(RECIPES)}")
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per recipe")
    ap.add_argument("--n", type=int, default=500, help="samples per sampler and recipe")
    ap.add_argument("--n-peer", type=int, default=None,
                    help="DDPM samples of the textbook peer (default --n; its T = 1000 calls of a "
                         "2.2M-parameter net cost about 40x ours per sample on a CPU)")
    ap.add_argument("--n-ddpm", type=int, default=None,
                    help="DDPM samples per recipe (default --n): DDPM costs T = 400 calls per "
                         "sample, DDIM-50 fifty, so a quick screen can draw fewer")
    ap.add_argument("--steps", type=int, default=None,
                    help="train every recipe for this many steps instead of --budget seconds")
    ap.add_argument("--ddim-variants", action="store_true",
                    help="also score DDIM-50 without clipping of x̂_0 and with η = 0.5, 1")
    ap.add_argument("--ddpm-variants", action="store_true",
                    help="also score DDPM with σ_t² = β_t (Ho et al.'s other choice; the default "
                         "is β̃_t) and DDIM with S = 100, η = 1, on the same network")
    ap.add_argument("--other-ema", default="",
                    help="comma-separated EMA decays in (0, 1) kept beside each recipe's own during "
                         "the same training and scored as extra rows (e.g. 0.995,0.9995). With the "
                         "warm-up of diffusion.ema_of a decay d only takes effect after "
                         "9 d / (1 - d) updates (8,991 for 0.999): shorter runs give "
                         "identical rows for all larger decays")
    ap.add_argument("--other-ema-no-warmup", action="store_true",
                    help="the --other-ema averages use their decay from the first update on "
                         "(diffusion.ema_of(warmup=False)) instead of the warm-up")
    ap.add_argument("--train-digits", type=int, default=None,
                    help="train on the first N training digits only (default: all); with a "
                         "smaller N at the same steps the benchmark asks whether data limits quality")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    names = args.recipes.split(",")
    unknown = [r for r in names if r not in RECIPES]
    if unknown:
        ap.error(f"--recipes: unknown {unknown}; choose from {sorted(RECIPES)}")
    if args.budget <= 0 or args.n < 2:
        ap.error(f"--budget must be > 0 and --n ≥ 2, got {args.budget} and {args.n}")
    for flag, value in (("--n-ddpm", args.n_ddpm), ("--n-peer", args.n_peer)):
        if value is not None and value < 2:
            ap.error(f"{flag} must be ≥ 2 (a share and its standard error need samples), got {value}")
    try:
        other_decays = tuple(float(d) for d in args.other_ema.split(",") if d.strip())
    except ValueError:
        ap.error(f"--other-ema must be comma-separated numbers in (0, 1), got {args.other_ema!r}")
    if not all(0 < d < 1 for d in other_decays):
        ap.error(f"--other-ema: every decay must lie in (0, 1), got {args.other_ema!r}")
    if args.threads:
        torch.set_num_threads(args.threads)

    x_train, _ = data.load_mnist("train")            # (N, 1, 28, 28) in [0, 1]
    if args.train_digits is not None:
        if not 2 <= args.train_digits <= len(x_train):
            ap.error(f"--train-digits must be between 2 and {len(x_train)} (the training digits "
                     f"loaded), got {args.train_digits}")
        x_train = x_train[:args.train_digits]
    clf = metrics.reference_classifier()
    _, (x_test, _), x_heldout = metrics.reference_splits()
    n_real = min(len(x_test), len(x_heldout))
    for flag, value in (("--n", args.n), ("--n-ddpm", args.n_ddpm), ("--n-peer", args.n_peer)):
        if value is not None and value > n_real:
            ap.error(f"{flag} must be ≤ {n_real} (the real digits the FD floor compares), "
                     f"got {value}")
    print(f"{len(x_train)} training digits ({data.mnist_source(x_train)}); torch threads "
          f"{torch.get_num_threads()}; "
          f"{f'{args.steps} steps' if args.steps else f'budget {args.budget:.0f} s'} per recipe; n = {args.n}", flush=True)

    rows = []
    for key in names:
        recipe = RECIPES[key]
        lo, hi = recipe.data_range
        load0 = os.getloadavg()[0]
        net, schedule, info = train(recipe, x_train * (hi - lo) + lo, args.budget, args.seed, args.steps,
                                    other_decays if recipe.ema_decay else (),
                                    not args.other_ema_no_warmup)
        others = info.pop("others")
        variants = {"DDPM": {}, "DDIM-50": {}}
        if args.ddim_variants:
            variants.update({"DDIM-50 no clip": dict(clip_denoised=False),
                             "DDIM-50 η=0.5": dict(eta=0.5), "DDIM-50 η=1": dict(eta=1.0)})
        if args.ddpm_variants:
            variants.update({"DDPM σ²=β": dict(variance="beta"),
                             "DDIM-100 η=1": dict(eta=1.0, steps=100)})
        label = f" (EMA {recipe.ema_decay:g})" if others else ""
        for name, model in [(recipe.name + label, net)] + [
                (f"{recipe.name} (EMA {d:g}{', no warm-up' if args.other_ema_no_warmup else ''}, same run)", m)
                for d, m in others.items()]:
            row = dict(recipe=key, name=name, params=nets.count_parameters(model), **info)
            for sampler, kwargs in variants.items():
                n = args.n
                if sampler == "DDPM":
                    n = (args.n_peer if key == "textbook" and args.n_peer else args.n_ddpm) or n
                x, secs = draw(recipe, model, schedule, sampler.split(" ")[0], n, SAMPLE_BATCH,
                               args.seed + 1, **kwargs)
                row[sampler] = dict(samples_per_s=n / secs, **score(clf, x, x_test, x_heldout))
            row["load"] = (load0, os.getloadavg()[0])
            rows.append(row)
            print(json.dumps(row), flush=True)

    lines = [(f"{args.steps} training steps" if args.steps else f"Budget {args.budget:.0f} s of training")
             + f" per recipe, n = {args.n} samples per sampler, "
             f"torch threads {torch.get_num_threads()}.", "",
             "| recipe | parameters | steps | ms/step | sampler | samples/s | confident (± se) | "
             "FD | floor (same n) | χ² p (classes) | load before → after |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        for sampler in [k for k in r if k.startswith("DD")]:
            s = r[sampler]
            lines.append(f"| {r['name']} | {r['params']:,} | {r['steps']} | {r['ms_per_step']:.1f} | "
                         f"{sampler} | {s['samples_per_s']:.2f} | {s['confident']:.1%} ± {s['se']:.1%} | "
                         f"{s['fd']:.1f} (n = {s['n']}) | {s['floor']:.1f} | {s['chi2_p']:.2g} | "
                         f"{r['load'][0]:.2f} → {r['load'][1]:.2f} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
