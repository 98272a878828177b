"""Gaussians, maximum likelihood, Gaussian mixtures and EM (problem set 01), in NumPy float64.

* :func:`load_faithful`: the Old Faithful eruptions (R's ``datasets::faithful``, 272 rows), shipped
  with the package in ``data_files/faithful.csv`` with its provenance in the header.
* The course's reference answers to the problems of ``01_probability_em.ipynb``, marked
  ``@grading.reference`` (the notebook's checks compare against them, and later cells fall back on
  them when a problem is unsolved): the normal density, the central-limit experiment and its
  Kolmogorov-Smirnov distance, the Gaussian MLE and log-likelihood, the multivariate normal
  log-density (Cholesky) and MLE, mixture sampling and log-density (log-sum-exp), the E-step,
  M-step and EM loop.
* :func:`ellipse_points`: the points of a covariance ellipse, for figures.

Shapes: data ``x`` is (N, D); a mixture of K components has ``weights`` (K,), ``means`` (K, D) and
``covs`` (K, D, D); responsibilities ``resp`` are (N, K). Checked against scipy.stats and
sklearn.mixture.GaussianMixture in tests/test_mixtures.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import ndtr

from . import grading

FAITHFUL_CSV = Path(__file__).parent / "data_files" / "faithful.csv"
FAITHFUL_COLUMNS = ("eruptions", "waiting")  # minutes: eruption length, wait until the next one
FAITHFUL_ROWS = 272
LOG_2PI = math.log(2 * math.pi)


def load_faithful(path: str | Path | None = None) -> np.ndarray:
    """The Old Faithful data as a float64 array of shape (272, 2): eruption time and waiting time
    to the next eruption, both in minutes (columns :data:`FAITHFUL_COLUMNS`)."""
    path = Path(path) if path is not None else FAITHFUL_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"load_faithful: {path} is missing; it ships with the course in psets/helpers/"
            "data_files/ (restore it with `git checkout -- psets/helpers/data_files/faithful.csv`)"
        )
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        header = tuple(lines[0].split(","))
        values = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])
    except (ValueError, IndexError) as err:
        raise ValueError(f"load_faithful: cannot parse {path} as a CSV of numbers ({err}); "
                         "restore the file from git") from err
    if header != FAITHFUL_COLUMNS or values.shape != (FAITHFUL_ROWS, 2) or not np.isfinite(
            values).all():
        raise ValueError(
            f"load_faithful: {path} should hold columns {FAITHFUL_COLUMNS} and {FAITHFUL_ROWS} "
            f"finite rows, got columns {header} and shape {values.shape}; restore it from git"
        )
    return values


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------


def _array(value, name: str, ndim: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from err
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got {a.size - np.isfinite(a).sum()} "
                         "non-finite entries")
    return a


def _positive(value, name: str) -> np.ndarray:
    a = _array(value, name)
    if (a <= 0).any():
        raise ValueError(f"{name} must be > 0, got minimum {a.min()!r}")
    return a


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def _mixture(weights, means, covs):
    """Validated (weights (K,), means (K, D), covs (K, D, D)) of a Gaussian mixture."""
    weights = _array(weights, "weights", 1)
    means = _array(means, "means", 2)
    covs = _array(covs, "covs", 3)
    k, d = means.shape
    if weights.shape != (k,) or covs.shape != (k, d, d):
        raise ValueError(f"weights, means, covs must have shapes (K,), (K, D), (K, D, D); got "
                         f"{weights.shape}, {means.shape}, {covs.shape}")
    if (weights < 0).any() or abs(weights.sum() - 1) > 1e-8:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {weights}")
    return weights, means, covs


def _data(x, d: int | None = None) -> np.ndarray:
    x = _array(x, "x", 2)
    if d is not None and x.shape[1] != d:
        raise ValueError(f"x must have shape (N, {d}) to match the parameters, got {x.shape}")
    return x


def _cholesky(cov: np.ndarray, name: str = "cov") -> np.ndarray:
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name} must be symmetric, got {cov.tolist()}")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"{name} must be positive definite (its Cholesky factorisation failed), "
                         f"got eigenvalues {np.linalg.eigvalsh(cov)}") from err


# ------------------------------------------------------------------------------------------------
# Problem 1: the normal density and the central limit theorem
# ------------------------------------------------------------------------------------------------


@grading.reference
def normal_pdf(x, mu, sigma):
    """N(x; mu, sigma^2) elementwise (x, mu, sigma broadcast together)."""
    x, mu, sigma = _array(x, "x"), _array(mu, "mu"), _positive(sigma, "sigma")
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


@grading.reference
def clt_sample(n, trials, rng):
    """``trials`` standardised means of ``n`` Uniform(0, 1) draws, shape (trials,): each is
    (mean - 1/2) / sqrt(1 / (12 n)), so it has mean 0 and variance 1 for every n."""
    n, trials = _count(n, "n"), _count(trials, "trials")
    u = _rng(rng).random((trials, n))
    return (u.mean(axis=1) - 0.5) / math.sqrt(1 / (12 * n))


@grading.reference
def ks_to_normal(z):
    """Kolmogorov-Smirnov distance sup_t |F_N(t) - Phi(t)| between the empirical CDF of the 1-D
    sample ``z`` and the standard normal CDF."""
    z = np.sort(_array(z, "z", 1))
    if z.size == 0:
        raise ValueError("z must hold at least one value, got an empty array")
    cdf = ndtr(z)
    i = np.arange(1, z.size + 1)
    # the empirical CDF jumps at each z_(i): compare Phi with the value just after and just before
    return float(max((i / z.size - cdf).max(), (cdf - (i - 1) / z.size).max()))


# ------------------------------------------------------------------------------------------------
# Problem 2: maximum likelihood for a 1-D Gaussian
# ------------------------------------------------------------------------------------------------


@grading.reference
def gaussian_mle(x):
    """Closed-form MLE (mu, sigma) of a 1-D Gaussian from data x of shape (N,); sigma divides by N."""
    x = _array(x, "x", 1)
    if x.size < 1:
        raise ValueError("x must hold at least one value, got an empty array")
    mu = x.mean()
    return float(mu), float(np.sqrt(((x - mu) ** 2).mean()))


@grading.reference
def gaussian_loglik(x, mu, sigma):
    """sum_n log N(x_n; mu, sigma^2) for data x (N,) and parameters that broadcast together (e.g.
    grids of shape (A, B)); returns an array of the broadcast shape of mu and sigma."""
    x = _array(x, "x", 1)
    mu, sigma = _array(mu, "mu"), _positive(sigma, "sigma")
    n = x.size
    mean, second = x.mean(), (x ** 2).mean()
    # sum_n (x_n - mu)^2 = N (E[x^2] - 2 mu E[x] + mu^2): one pass over the data for a whole grid
    sq = n * (second - 2 * mu * mean + mu ** 2)
    return -0.5 * sq / sigma ** 2 - n * np.log(sigma) - 0.5 * n * LOG_2PI


# ------------------------------------------------------------------------------------------------
# Problem 3: the multivariate normal
# ------------------------------------------------------------------------------------------------


@grading.reference
def mvn_logpdf(x, mu, cov):
    """log N(x_n; mu, cov) for each row of x (N, D), with mu (D,) and a full cov (D, D): returns
    (N,). Uses the Cholesky factor L (cov = L L^T): the Mahalanobis term is |L^{-1}(x - mu)|^2 and
    log det cov = 2 sum log diag L, so no inverse or determinant is formed."""
    mu = _array(mu, "mu", 1)
    x = _data(x, mu.size)
    cov = _array(cov, "cov", 2)
    if cov.shape != (mu.size, mu.size):
        raise ValueError(f"cov must have shape ({mu.size}, {mu.size}), got {cov.shape}")
    chol = _cholesky(cov)
    v = solve_triangular(chol, (x - mu).T, lower=True)  # (D, N)
    return -0.5 * (v ** 2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * mu.size * LOG_2PI


@grading.reference
def mvn_mle(x):
    """MLE (mu (D,), cov (D, D)) of a multivariate normal from x (N, D); cov divides by N."""
    x = _data(x)
    mu = x.mean(0)
    diff = x - mu
    return mu, diff.T @ diff / len(x)


# ------------------------------------------------------------------------------------------------
# Problem 4: Gaussian mixtures
# ------------------------------------------------------------------------------------------------


@grading.reference
def gmm_sample(n, weights, means, covs, rng):
    """n draws from the mixture: returns (x (n, D), z (n,) int component labels)."""
    n = _count(n, "n")
    weights, means, covs = _mixture(weights, means, covs)
    rng = _rng(rng)
    z = rng.choice(len(weights), size=n, p=weights)
    chols = np.stack([_cholesky(c, f"covs[{k}]") for k, c in enumerate(covs)])
    eps = rng.standard_normal((n, means.shape[1]))
    return means[z] + np.einsum("nij,nj->ni", chols[z], eps), z


def _component_logpdf(x, means, covs):
    """(N, K) log N(x_n; mu_k, Sigma_k)."""
    return np.stack([mvn_logpdf.__wrapped__(x, m, c) for m, c in zip(means, covs)], axis=1)


def _logsumexp(a, axis):
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


@grading.reference
def gmm_logpdf(x, weights, means, covs):
    """log p(x_n) = log sum_k pi_k N(x_n; mu_k, Sigma_k) for each row of x (N, D): returns (N,)."""
    weights, means, covs = _mixture(weights, means, covs)
    x = _data(x, means.shape[1])
    with np.errstate(divide="ignore"):  # a zero weight is a component that never fires
        return _logsumexp(np.log(weights) + _component_logpdf(x, means, covs), axis=1)


# ------------------------------------------------------------------------------------------------
# Problem 5: EM
# ------------------------------------------------------------------------------------------------


@grading.reference
def e_step(x, weights, means, covs):
    """Responsibilities r_nk = p(z=k | x_n) (N, K) and the total log-likelihood sum_n log p(x_n)
    of the current parameters."""
    weights, means, covs = _mixture(weights, means, covs)
    x = _data(x, means.shape[1])
    with np.errstate(divide="ignore"):
        joint = np.log(weights) + _component_logpdf(x, means, covs)  # (N, K) log pi_k N_k
    log_px = _logsumexp(joint, axis=1)
    return np.exp(joint - log_px[:, None]), float(log_px.sum())


@grading.reference
def m_step(x, resp, reg_covar=1e-6):
    """The parameters that maximise the expected complete-data log-likelihood for fixed
    responsibilities resp (N, K): (weights (K,), means (K, D), covs (K, D, D)); reg_covar is added
    to each covariance's diagonal so no component can collapse onto a point."""
    x = _data(x)
    resp = _array(resp, "resp", 2)
    if resp.shape[0] != x.shape[0] or (resp < 0).any():
        raise ValueError(f"resp must be non-negative with shape ({x.shape[0]}, K), "
                         f"got shape {resp.shape}, minimum {resp.min()}")
    if not (isinstance(reg_covar, (int, float)) and reg_covar >= 0):
        raise ValueError(f"reg_covar must be a number >= 0, got {reg_covar!r}")
    nk = resp.sum(0)  # (K,) effective counts
    if (nk <= 0).any():
        raise ValueError(f"every component needs some responsibility, got counts {nk}")
    means = resp.T @ x / nk[:, None]
    diff = x[None] - means[:, None]  # (K, N, D)
    covs = np.einsum("kn,kni,knj->kij", resp.T, diff, diff) / nk[:, None, None]
    covs += reg_covar * np.eye(x.shape[1])
    return nk / nk.sum(), means, covs


@grading.reference
def em(x, weights, means, covs, n_iter, reg_covar=1e-6):
    """n_iter EM iterations from the given parameters. Returns a dict: ``weights``, ``means``,
    ``covs`` (final), ``loglik`` (n_iter + 1 totals: of the initial parameters and after each
    iteration) and ``history`` (the n_iter + 1 parameter triples those totals belong to)."""
    n_iter = _count(n_iter, "n_iter", 0)
    params = _mixture(weights, means, covs)
    history, loglik = [], []
    for _ in range(n_iter):
        resp, ll = e_step.__wrapped__(x, *params)
        history.append(params)
        loglik.append(ll)
        params = m_step.__wrapped__(x, resp, reg_covar)
    history.append(params)
    loglik.append(e_step.__wrapped__(x, *params)[1])
    return {"weights": params[0], "means": params[1], "covs": params[2], "loglik": loglik,
            "history": history}


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def ellipse_points(mean, cov, n_std: float = 2.0, n: int = 100) -> np.ndarray:
    """(n, 2) points on the ellipse {x : (x - mean)^T cov^{-1} (x - mean) = n_std^2} of a 2-D
    Gaussian (the curve to draw for a component)."""
    mean = _array(mean, "mean", 1)
    cov = _array(cov, "cov", 2)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"mean and cov must have shapes (2,) and (2, 2), got {mean.shape} "
                         f"and {cov.shape}")
    if not (isinstance(n_std, (int, float)) and n_std > 0):
        raise ValueError(f"n_std must be a number > 0, got {n_std!r}")
    t = np.linspace(0, 2 * np.pi, _count(n, "n", 3))
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    return mean + n_std * circle @ _cholesky(cov).T
