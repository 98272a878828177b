"""Regenerate the figures of lectures 02 and 03.

    python assets/make_figures_a.py

writes, next to this script:

* ``em_loglik.png``: log-likelihood per EM iteration on a 1-D two-component Gaussian mixture
  (lecture 02, equation (2.15): it never decreases);
* ``iwae_bound_vs_k.png``: the importance-weighted bound L_k against k on a linear-Gaussian model
  where log p(x) is known exactly (lecture 03, equations (3.10)-(3.11)).

Both use numpy only, are seeded, and take a few seconds on one CPU core. The models are the same
as in ``tests/test_notes_math_a.py``, which checks the equations themselves.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
LOG2PI = np.log(2 * np.pi)


def normal_logpdf(x, mean, var):
    return -0.5 * (LOG2PI + np.log(var) + (x - mean) ** 2 / var)


def em_curve(n_iter=60, seed=12, N=300):
    """Log-likelihood after each EM iteration, (2.13)-(2.14), from a poor initialisation."""
    rng = np.random.default_rng(seed)
    z = rng.random(N) < 0.35
    x = np.where(z, rng.normal(-2.0, 0.6, N), rng.normal(1.5, 1.0, N))
    pi, mu, var = np.array([0.5, 0.5]), np.array([0.5, 1.0]), np.array([0.2, 3.0])
    lls = []
    for _ in range(n_iter + 1):
        log_joint = np.log(pi) + normal_logpdf(x[:, None], mu, var)  # (N, K)
        log_px = np.logaddexp.reduce(log_joint, axis=1)
        lls.append(log_px.sum())
        r = np.exp(log_joint - log_px[:, None])  # E-step (2.13)
        Nk = r.sum(0)  # M-step (2.14)
        pi, mu = Nk / N, (r * x[:, None]).sum(0) / Nk
        var = (r * (x[:, None] - mu) ** 2).sum(0) / Nk
    return np.array(lls)


def iwae_curve(ks, seed=0):
    """Mean and standard error of L_k on the linear-Gaussian model, with log p(x) and the ELBO."""
    rng = np.random.default_rng(seed)
    d, D, s2 = 2, 5, 0.5
    W = rng.normal(size=(D, d))
    b = 0.5 * rng.normal(size=D)
    x = W @ rng.normal(size=d) + b + np.sqrt(s2) * rng.normal(size=D)
    cov_x = W @ W.T + s2 * np.eye(D)
    diff = x - b
    log_px = -0.5 * (D * LOG2PI + np.linalg.slogdet(cov_x)[1] + diff @ np.linalg.solve(cov_x, diff))
    C_post = np.linalg.inv(np.eye(d) + W.T @ W / s2)
    m_post = C_post @ W.T @ diff / s2
    m, v = m_post + np.array([0.3, -0.2]), 1.5 * np.diag(C_post)  # a deliberately imperfect q
    means, ses = [], []
    kl = 0.5 * np.sum(m**2 + v - np.log(v) - 1)  # (3.9)
    resid = x - b - W @ m
    elbo = -0.5 * D * np.log(2 * np.pi * s2) - 0.5 * (resid @ resid + np.sum(W**2 * v)) / s2 - kl  # (3.5)
    for k in ks:
        reps = max(400, 40_000 // k)  # more repeats where one estimate is noisier
        z = m + np.sqrt(v) * rng.normal(size=(reps, k, d))
        log_lik = normal_logpdf(x, z @ W.T + b, s2).sum(-1)
        log_w = log_lik + normal_logpdf(z, 0.0, 1.0).sum(-1) - normal_logpdf(z, m, v).sum(-1)
        est = np.logaddexp.reduce(log_w, axis=1) - np.log(k)  # (3.10)
        means.append(est.mean())
        ses.append(est.std() / np.sqrt(reps))
    return np.array(means), np.array(ses), log_px, elbo


def main():
    lls = em_curve()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(len(lls)), lls, marker="o", ms=3)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel(r"$\log p(x \mid \theta)$ (nats)")
    ax.set_title("EM on a 1-D two-component mixture")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "em_loglik.png", dpi=100)
    plt.close(fig)

    ks = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    means, ses, log_px, elbo = iwae_curve(ks)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(ks, means, yerr=2 * ses, marker="o", ms=3, capsize=2, label=r"$\mathcal{L}_k$ ($\pm$2 SE)")
    ax.axhline(log_px, color="k", ls="--", label=r"$\log p(x)$ (exact)")
    ax.axhline(elbo, color="gray", ls=":", label=r"ELBO $\mathcal{L}$ (closed form)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of importance samples $k$")
    ax.set_ylabel("nats")
    ax.set_title("Importance-weighted bound, linear-Gaussian model")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "iwae_bound_vs_k.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
