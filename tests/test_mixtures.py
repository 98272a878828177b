"""helpers.mixtures: the Old Faithful loader and the reference answers of problem set 01, against
scipy.stats and sklearn.mixture.GaussianMixture."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from helpers import mixtures as mx


@pytest.fixture
def faithful():
    return mx.load_faithful()


def random_mixture(rng, k=3, d=2):
    a = rng.standard_normal((k, d, d))
    covs = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(d)
    weights = rng.dirichlet(np.ones(k) * 2)
    return weights, 3 * rng.standard_normal((k, d)), covs


def test_faithful_is_r_datasets_faithful(faithful):
    # R: colMeans(faithful) = 3.487783 70.897059; sapply(faithful, sd) = 1.141371 13.594974
    assert faithful.shape == (272, 2) and faithful.dtype == np.float64
    np.testing.assert_allclose(faithful.mean(0), [3.487783, 70.897059], atol=1e-6)
    np.testing.assert_allclose(faithful.std(0, ddof=1), [1.141371, 13.594974], atol=1e-6)
    np.testing.assert_array_equal(faithful[:3], [[3.6, 79], [1.8, 54], [3.333, 74]])
    assert faithful[:, 0].min() == 1.6 and faithful[:, 1].max() == 96


def test_faithful_bad_files_say_which_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        mx.load_faithful(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("# comment\neruptions,waiting\n3.6,79\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*272"):
        mx.load_faithful(bad)
    bad.write_text("eruptions,waiting\n3.6,abc\n")
    with pytest.raises(ValueError, match=r"cannot parse .*bad\.csv"):
        mx.load_faithful(bad)


def test_normal_pdf_matches_scipy():
    x = np.linspace(-5, 7, 101)
    np.testing.assert_allclose(mx.normal_pdf(x, 1.5, 0.7), stats.norm.pdf(x, 1.5, 0.7), rtol=1e-12)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        mx.normal_pdf(x, 0.0, -1.0)


def test_clt_sample_is_standardised_and_ks_falls_with_n():
    rng = np.random.default_rng(0)
    z1 = mx.clt_sample(1, 50_000, rng)
    z16 = mx.clt_sample(16, 50_000, rng)
    for z in (z1, z16):
        assert abs(z.mean()) < 0.02 and abs(z.var() - 1) < 0.03
    # the standardised uniform is at KS distance ~0.058 from the normal (max of |F_U - Phi|)
    assert 0.05 < mx.ks_to_normal(z1) < 0.065
    assert mx.ks_to_normal(z16) < 0.015
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        mx.clt_sample(2, 10, 0)


def test_ks_matches_scipy():
    z = np.random.default_rng(1).standard_t(5, size=500)
    assert mx.ks_to_normal(z) == pytest.approx(stats.kstest(z, "norm").statistic, abs=1e-12)


def test_gaussian_mle_and_loglik_match_scipy():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=400)
    mu, sigma = mx.gaussian_mle(x)
    np.testing.assert_allclose((mu, sigma), stats.norm.fit(x), rtol=1e-10)
    grid_mu, grid_sigma = np.meshgrid(np.linspace(2, 4, 5), np.linspace(1, 3, 4))
    expected = stats.norm.logpdf(x[:, None, None], grid_mu, grid_sigma).sum(0)
    np.testing.assert_allclose(mx.gaussian_loglik(x, grid_mu, grid_sigma), expected, rtol=1e-10)
    # the MLE is a maximum: any step away lowers the log-likelihood
    best = mx.gaussian_loglik(x, mu, sigma)
    for dmu, ds in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        assert mx.gaussian_loglik(x, mu + dmu, sigma + ds) < best


def test_mvn_logpdf_matches_scipy_and_stays_finite_when_ill_conditioned():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 4))
    cov = a @ a.T + 0.1 * np.eye(4)
    mu = rng.standard_normal(4)
    x = rng.standard_normal((50, 4)) * 3
    np.testing.assert_allclose(mx.mvn_logpdf(x, mu, cov),
                               stats.multivariate_normal(mu, cov).logpdf(x), rtol=1e-10)
    # nearly singular (correlation r = 1 - 1e-12, condition number ~1e12; scipy refuses it): the
    # closed form of the 2-D case, with 1 - r^2 computed as (1 - r)(1 + r) to keep its digits
    r = 1 - 1e-12
    one_minus_r2 = (1 - r) * (1 + r)
    x2 = np.array([[0.3, 0.3], [0.3, 0.3 + 1e-7], [0.0, 0.0]])
    quad = (x2[:, 0] ** 2 - 2 * r * x2[:, 0] * x2[:, 1] + x2[:, 1] ** 2) / one_minus_r2
    exact = -np.log(2 * np.pi) - 0.5 * np.log(one_minus_r2) - 0.5 * quad
    got = mx.mvn_logpdf(x2, np.zeros(2), np.array([[1.0, r], [r, 1.0]]))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, exact, rtol=1e-3)  # 1 - r*r inside Cholesky loses ~5 digits
    with pytest.raises(ValueError, match="cov must be positive definite"):
        mx.mvn_logpdf(x2, np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        mx.mvn_logpdf(x2, mu, cov)


def test_mvn_mle_matches_numpy_with_bias(faithful):
    mu, cov = mx.mvn_mle(faithful)
    np.testing.assert_allclose(mu, faithful.mean(0))
    np.testing.assert_allclose(cov, np.cov(faithful.T, bias=True), rtol=1e-12)


def test_gmm_sample_matches_the_mixture_moments():
    rng = np.random.default_rng(4)
    weights, means, covs = random_mixture(rng)
    x, z = mx.gmm_sample(200_000, weights, means, covs, rng)
    assert x.shape == (200_000, 2) and z.shape == (200_000,)
    np.testing.assert_allclose(np.bincount(z, minlength=3) / len(z), weights, atol=5e-3)
    m = weights @ means
    cov = np.einsum("k,kij->ij", weights, covs + np.einsum("ki,kj->kij", means, means)) - np.outer(m, m)
    np.testing.assert_allclose(x.mean(0), m, atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.02, atol=0.03)
    for k in range(3):  # each component's draws have that component's moments
        np.testing.assert_allclose(x[z == k].mean(0), means[k], atol=0.05)


def _sklearn_gmm(weights, means, covs):
    gm = GaussianMixture(len(weights), covariance_type="full")
    gm.weights_, gm.means_, gm.covariances_ = weights, means, covs
    gm.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(covs))
    return gm


def test_gmm_logpdf_matches_sklearn_and_is_finite_far_away():
    rng = np.random.default_rng(5)
    weights, means, covs = random_mixture(rng)
    x = rng.standard_normal((100, 2)) * 4
    np.testing.assert_allclose(mx.gmm_logpdf(x, weights, means, covs),
                               _sklearn_gmm(weights, means, covs).score_samples(x), rtol=1e-10)
    far = np.array([[1e3, -1e3]])  # every exp(log N) underflows; log-sum-exp does not
    value = mx.gmm_logpdf(far, weights, means, covs)
    assert np.isfinite(value).all() and value[0] < -1e4
    with pytest.raises(ValueError, match="weights must be >= 0 and sum to 1"):
        mx.gmm_logpdf(x, weights * 2, means, covs)


def _init(x, k, seed):
    rng = np.random.default_rng(seed)
    return np.full(k, 1 / k), x[rng.choice(len(x), k, replace=False)], np.stack([np.cov(x.T)] * k)


@pytest.mark.parametrize("k", [2, 3])
def test_em_increases_loglik_and_agrees_with_sklearn(faithful, k):
    weights, means, covs = _init(faithful, k, seed=k)
    n_iter = 60
    fit = mx.em(faithful, weights, means, covs, n_iter)
    ll = np.array(fit["loglik"])
    assert len(ll) == n_iter + 1 and len(fit["history"]) == n_iter + 1
    assert (np.diff(ll) >= -1e-9).all(), "EM must never decrease the log-likelihood"
    gm = GaussianMixture(k, covariance_type="full", max_iter=n_iter, tol=0.0, reg_covar=1e-6,
                         weights_init=weights, means_init=means,
                         precisions_init=np.linalg.inv(covs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(faithful)
    assert gm.n_iter_ == n_iter
    np.testing.assert_allclose(fit["weights"], gm.weights_, atol=1e-8)
    np.testing.assert_allclose(fit["means"], gm.means_, atol=1e-6)
    np.testing.assert_allclose(fit["covs"], gm.covariances_, rtol=1e-6, atol=1e-6)
    assert ll[-1] / len(faithful) == pytest.approx(gm.score(faithful), abs=1e-9)


def test_one_m_step_of_sklearn_and_ours_agree():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((300, 3))
    resp = rng.dirichlet(np.ones(4), size=300)
    weights, means, covs = mx.m_step(x, resp, reg_covar=0.0)
    nk = resp.sum(0)
    np.testing.assert_allclose(weights, nk / 300)
    for k in range(4):  # weighted mean and covariance, one component at a time
        np.testing.assert_allclose(means[k], np.average(x, axis=0, weights=resp[:, k]))
        np.testing.assert_allclose(covs[k], np.cov(x.T, aweights=resp[:, k], bias=True))
    r, ll = mx.e_step(x, weights, means, covs)
    np.testing.assert_allclose(r.sum(1), 1.0)
    assert ll == pytest.approx(mx.gmm_logpdf(x, weights, means, covs).sum())


def test_ellipse_points_lie_on_the_mahalanobis_contour():
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    pts = mx.ellipse_points(np.array([1.0, -1.0]), cov, n_std=2.0, n=50)
    d = pts - [1.0, -1.0]
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d), 4.0)
    with pytest.raises(ValueError, match="n_std must be a number > 0"):
        mx.ellipse_points(np.zeros(2), cov, n_std=0)


# ------------------------------------------------------------------------------------------------
# Input checks: each exists so that a wrong argument is named, not failed on deep inside numpy
# ------------------------------------------------------------------------------------------------


def test_parameters_may_be_python_lists_and_a_weight_may_be_0():
    """Plain lists are arrays of numbers; a zero weight is a component that never fires (the
    mixture is then its other component)."""
    weights, means, covs = [1.0, 0.0], [[0.0, 0.0], [5.0, 5.0]], [np.eye(2).tolist()] * 2
    x = [[0.1, -0.2], [1.0, 2.0]]
    got = mx.gmm_logpdf(x, weights, means, covs)
    np.testing.assert_allclose(got, stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(x),
                               rtol=1e-12)
    resp, _ = mx.e_step(x, weights, means, covs)
    np.testing.assert_allclose(resp[:, 1], 0.0)


def test_mixture_shapes_counts_scales_and_symmetry_are_checked():
    weights, means, covs = np.array([0.5, 0.5]), np.zeros((2, 2)), np.stack([np.eye(2)] * 2)
    with pytest.raises(ValueError, match=r"weights, means, covs must have shapes \(K,\), \(K, D\), "
                                         r"\(K, D, D\); got \(3,\)"):
        mx.gmm_logpdf(np.zeros((1, 2)), np.full(3, 1 / 3), means, covs)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match=rf"n must be an integer >= 1, got {bad!r}"):
            mx.clt_sample(bad, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sigma must be > 0, got minimum"):
        mx.normal_pdf(0.0, 0.0, 0.0)
    # an asymmetric "covariance": Cholesky reads one triangle and would not notice
    with pytest.raises(ValueError, match="cov must be symmetric"):
        mx.mvn_logpdf(np.zeros((1, 2)), np.zeros(2), np.array([[2.0, 0.5], [0.3, 2.0]]))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        mx.gmm_sample(0, weights, means, covs, rng)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        mx.gmm_sample(5, weights, means, covs, 0)


def test_every_reference_takes_lists_as_arrays():
    """Data and parameters typed in by hand (lists) give what the same arrays give."""
    x1 = [1.0, 2.0, 4.0]
    assert mx.gaussian_mle(x1) == mx.gaussian_mle(np.array(x1))
    assert mx.gaussian_loglik(x1, 1.0, 2.0) == mx.gaussian_loglik(np.array(x1), 1.0, 2.0)
    x2, mu, cov = [[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]], [0.5, 0.0], [[2.0, 0.3], [0.3, 1.0]]
    np.testing.assert_array_equal(mx.mvn_logpdf(x2, mu, cov),
                                  mx.mvn_logpdf(np.array(x2), np.array(mu), np.array(cov)))
    for got, want in zip(mx.mvn_mle(x2), mx.mvn_mle(np.array(x2))):
        np.testing.assert_array_equal(got, want)


def test_one_value_is_enough_for_the_mle_and_the_ks_distance():
    assert mx.gaussian_mle([2.0]) == (2.0, 0.0)
    assert mx.ks_to_normal([0.0]) == pytest.approx(0.5)          # F_N jumps from 0 to 1 at Φ = 0.5


def test_ks_distance_where_the_sup_is_just_before_a_jump():
    """z = (−3, 2.5, 3): the largest gap is Φ(2.5) − 1/3, just before the second jump of the
    empirical CDF; scipy's kstest is the independent route."""
    z = np.array([-3.0, 2.5, 3.0])
    want = stats.kstest(z, "norm").statistic
    assert want == pytest.approx(stats.norm.cdf(2.5) - 1 / 3)
    assert mx.ks_to_normal(z) == pytest.approx(want, rel=1e-12)


def test_m_step_edges_hard_assignments_defaults_and_errors():
    """One-hot responsibilities (zeros allowed) give each cluster's own mean and biased
    covariance, a cluster of one point included; the default reg_covar is sklearn's 1e-6; a
    component with no responsibility, a negative reg_covar or resp of another length are named."""
    x = np.array([[0.0, 0.0], [2.0, 1.0], [5.0, 5.0]])
    resp = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    weights, means, covs = mx.m_step(x.tolist(), resp.tolist())          # lists, default reg
    np.testing.assert_allclose(weights, [2 / 3, 1 / 3])
    np.testing.assert_allclose(means, [[1.0, 0.5], [5.0, 5.0]])
    reg = GaussianMixture().reg_covar                                     # 1e-6
    np.testing.assert_allclose(covs[0], np.cov(x[:2].T, bias=True) + reg * np.eye(2), rtol=1e-12)
    np.testing.assert_allclose(covs[1], reg * np.eye(2), rtol=1e-12)
    with pytest.raises(ValueError, match="every component needs some responsibility"):
        mx.m_step(x, np.c_[resp, np.zeros(3)])
    with pytest.raises(ValueError, match="reg_covar must be a number >= 0, got -1"):
        mx.m_step(x, resp, reg_covar=-1)
    with pytest.raises(ValueError, match=r"resp must be non-negative with shape \(3, K\)"):
        mx.m_step(x, np.r_[resp, [[1.0, 0.0]]])


def test_em_with_zero_iterations_and_a_negative_count():
    """n_iter = 0 returns the starting parameters and their log-likelihood; −1 is refused."""
    x = np.array([[0.0, 0.0], [2.0, 1.0], [5.0, 5.0]])
    start = (np.array([0.5, 0.5]), np.array([[0.0, 0.0], [5.0, 5.0]]), np.stack([np.eye(2)] * 2))
    out = mx.em(x, *start, n_iter=0)
    np.testing.assert_array_equal(out["means"], start[1])
    assert out["loglik"] == [pytest.approx(mx.gmm_logpdf(x, *start).sum())]
    with pytest.raises(ValueError, match="n_iter must be an integer >= 0, got -1"):
        mx.em(x, *start, n_iter=-1)


def test_ellipse_is_a_closed_curve_of_n_points_at_2_sd_by_default():
    """The default contour is the 2-standard-deviation one; the curve starts and ends at the same
    point (angles 0..2π) with n ≥ 3 points; lists are arrays; mean and cov shapes are named."""
    mean, cov = [1.0, -1.0], [[2.0, 0.8], [0.8, 1.0]]
    pts = mx.ellipse_points(mean, cov)
    d = pts - mean
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d), 4.0)
    np.testing.assert_allclose(pts[0], pts[-1], atol=1e-12)
    angles = np.unwrap(np.arctan2(*np.linalg.solve(np.linalg.cholesky(cov), d.T)[::-1]))
    assert abs(angles[-1] - angles[0]) == pytest.approx(2 * np.pi)       # once round
    assert mx.ellipse_points(mean, cov, n_std=1, n=3).shape == (3, 2)
    with pytest.raises(ValueError, match=r"mean and cov must have shapes \(2,\) and \(2, 2\)"):
        mx.ellipse_points([0.0, 0.0, 0.0], cov)
