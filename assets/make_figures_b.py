"""Figures for lectures 07 (diffusion) and 08 (guidance).

Writes, next to this file:
- diffusion_schedules.png: alpha_bar_t and log-SNR(t) for the linear (Ho et al. 2020) and cosine
  (Nichol & Dhariwal 2021) schedules with T = 1000;
- guidance_tilted.png: the guided density p(x)^(1-w) p(x|c)^w on a 1-D three-class Gaussian mixture
  for w = 0, 1, 3 (the same mixture as tests/test_notes_math_b.py).

Run: python assets/make_figures_b.py   (numpy, scipy and matplotlib; a second or two on a CPU)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats
from scipy.special import logsumexp

OUT = Path(__file__).resolve().parent
T = 1000
DPI = 110

# 1-D mixture used for the guidance figure (kept equal to MIX_* in tests/test_notes_math_b.py)
MIX_PI = np.array([0.3, 0.4, 0.3])
MIX_MU = np.array([-2.0, 0.5, 2.5])
MIX_S = np.array([0.6, 0.7, 0.5])


def linear_alpha_bar(T: int = T, beta_1: float = 1e-4, beta_T: float = 0.02) -> np.ndarray:
    """alpha_bar_t for t = 0..T (alpha_bar_0 = 1) of the linear schedule, beta_t from beta_1 to
    beta_T."""
    return np.concatenate([[1.0], np.cumprod(1 - np.linspace(beta_1, beta_T, T))])


def cosine_alpha_bar(T: int = T, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """alpha_bar_t for t = 0..T of the cosine schedule, rebuilt from the clipped betas."""
    t = np.arange(T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], max_beta)  # clipping only touches the last step
    return np.concatenate([[1.0], np.cumprod(1 - betas)])


def schedules_figure(path: Path) -> None:
    t = np.arange(T + 1)
    curves = {
        "linear (Ho et al. 2020)": linear_alpha_bar(),
        "cosine (Nichol & Dhariwal 2021)": cosine_alpha_bar(),
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for (name, ab), style in zip(curves.items(), ("-", "--")):
        ax1.plot(t, ab, style, label=name)
        inner = slice(1, T)  # log-SNR is +inf at t = 0
        ax2.plot(t[inner], np.log(ab[inner] / (1 - ab[inner])), style, label=name)
    ax1.set(xlabel="t", ylabel=r"$\bar\alpha_t$", title=r"signal kept, $\bar\alpha_t$")
    ax2.set(
        xlabel="t", ylabel=r"$\log \mathrm{SNR}(t)$", title=r"$\log\,\bar\alpha_t/(1-\bar\alpha_t)$"
    )
    ax2.axhline(0.0, color="grey", lw=0.6)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def tilted_density(x: np.ndarray, c: int, w: float) -> np.ndarray:
    """Normalised p(x)^(1-w) p(x|c)^w on the grid x (trapezoid rule)."""
    log_cond = stats.norm(MIX_MU, MIX_S).logpdf(x[:, None])  # (n, classes)
    log_marg = logsumexp(log_cond + np.log(MIX_PI), axis=1)
    logd = (1 - w) * log_marg + w * log_cond[:, c]
    p = np.exp(logd - logd.max())
    return p / np.trapezoid(p, x)


def guidance_figure(path: Path) -> None:
    x = np.linspace(-5, 5, 2001)
    marg = np.exp(logsumexp(stats.norm(MIX_MU, MIX_S).logpdf(x[:, None]) + np.log(MIX_PI), axis=1))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, c in zip(axes, (1, 2)):
        ax.fill_between(x, marg, color="grey", alpha=0.25, label=r"data $p(x)$")
        for w, style in ((0.0, ":"), (1.0, "-"), (3.0, "--")):
            ax.plot(x, tilted_density(x, c, w), style, lw=1.6, label=f"w = {w:g}")
        for mu in MIX_MU:
            ax.axvline(mu, color="grey", lw=0.5)
        ax.set(xlabel="x", title=rf"class $c = {c}$ (mean {MIX_MU[c]:g})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"density $\propto p(x)^{1-w}\,p(x\mid c)^{w}$")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> None:
    schedules_figure(OUT / "diffusion_schedules.png")
    guidance_figure(OUT / "guidance_tilted.png")
    for name in ("diffusion_schedules.png", "guidance_tilted.png"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
