"""helpers.anomaly: ROC curve and AUC against sklearn.metrics, the threshold at a false-positive
rate, the detection rates, the VAE scores against helpers.elbo's estimators, mean and standard error."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from helpers import anomaly, elbo, nets


def _data(n, ties=None, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + 1.5 * y
    return (np.round(s * ties) if ties else s), y


@pytest.mark.parametrize("n,ties", [(200, None), (500, 2), (30, 1), (1000, 10)])
def test_roc_curve_and_auc_match_sklearn(n, ties):
    s, y = _data(n, ties)
    fpr, tpr, th = anomaly.roc_curve(torch.tensor(s), torch.tensor(y))
    f_sk, t_sk, th_sk = skm.roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr.numpy(), f_sk) and np.allclose(tpr.numpy(), t_sk)
    assert math.isinf(th[0]) and np.allclose(th.numpy()[1:], th_sk[1:])
    assert anomaly.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_auc_is_the_pairwise_ranking_probability():
    s, y = _data(80, ties=1, seed=3)
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    fpr, tpr, _ = anomaly.roc_curve(s, y)
    assert anomaly.auc(fpr, tpr) == pytest.approx(pairs, abs=1e-12)


def test_roc_reversed_scores_give_one_minus_auc():
    s, y = _data(300)
    a = anomaly.auc(*anomaly.roc_curve(s, y)[:2])
    b = anomaly.auc(*anomaly.roc_curve(-s, y)[:2])
    assert a + b == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("scores,labels,match", [
    ([0.1, 0.2], [1, 1], "both classes"),
    ([0.1, 0.2, 0.3], [0, 1], "1-D of the same length"),
    ([0.1, float("nan")], [0, 1], "must be finite"),
    ([0.1, 0.2], [0, 2], "labels must be 0 .normal. or 1"),
])
def test_roc_curve_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        anomaly.roc_curve(scores, labels)


def test_auc_bad_input():
    with pytest.raises(ValueError, match="non-decreasing"):
        anomaly.auc([0.0, 0.5, 0.2], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="same length >= 2"):
        anomaly.auc([0.0], [0.0])


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.5, 0.999])
def test_threshold_at_fpr_is_the_smallest_that_keeps_the_rate(fpr):
    s = torch.tensor(np.random.default_rng(1).normal(size=777))
    t = anomaly.threshold_at_fpr(s, fpr)
    allowed = math.floor(fpr * len(s) + 1e-9)
    assert int((s > t).sum()) <= allowed < int((s >= t).sum())
    # sklearn's ROC route: the largest FPR among thresholds whose FPR (with >=) stays within fpr
    y = np.r_[np.zeros(len(s)), [1]]
    f_sk, _, th_sk = skm.roc_curve(y, np.r_[s.numpy(), 10.0], drop_intermediate=False)
    assert t == pytest.approx(th_sk[np.flatnonzero(f_sk > allowed / len(s))[0]])


def test_threshold_with_ties_and_bad_input():
    assert anomaly.threshold_at_fpr([1.0] * 50 + [2.0] * 50, 0.2) == 2.0
    with pytest.raises(ValueError, match="fpr must lie in"):
        anomaly.threshold_at_fpr([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="normal_scores must be a non-empty"):
        anomaly.threshold_at_fpr([], 0.1)


def test_rates_at():
    det, fp = anomaly.rates_at([0.1, 0.2, 0.9, 0.8, 0.3], [0, 0, 1, 1, 1], 0.25)
    assert (det, fp) == (1.0, 0.0)
    assert anomaly.rates_at([0.1, 0.2, 0.9, 0.8, 0.3], [0, 0, 1, 1, 1], 0.85) == (pytest.approx(1 / 3), 0.0)


class _TinyVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = nets.mlp([12, 16, 4]), nets.mlp([2, 16, 12])

    def encode(self, x):
        return elbo.split_latent(self.encoder(x.flatten(1)))

    def log_likelihood(self, x, z):
        return elbo.log_bernoulli(x.flatten(1), self.decoder(z))


def test_anomaly_scores_against_elbo_estimators():
    torch.manual_seed(0)
    vae = _TinyVAE()
    x = torch.bernoulli(torch.full((6, 12), 0.3))
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        elbo_ref = elbo.elbo_analytic(x, mu, logvar, vae.log_likelihood, n_samples=20000)
        iw_ref = elbo.iw_bound(x, mu, logvar, vae.log_likelihood, k=20000)
    got = anomaly.anomaly_scores(vae, x, 20000)
    assert {k: v.shape for k, v in got.items()} == {k: (6,) for k in ("neg_elbo", "neg_iw", "recon")}
    assert torch.allclose(got["neg_elbo"], -elbo_ref, atol=0.05)
    assert torch.allclose(got["neg_iw"], -iw_ref, atol=0.02)
    assert (got["neg_iw"] <= got["neg_elbo"]).all()
    assert torch.allclose(got["recon"], -vae.log_likelihood(x, mu[None])[0])
    one = anomaly.anomaly_scores(vae, x, 1)
    assert torch.allclose(one["neg_iw"], one["neg_elbo"])
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        anomaly.anomaly_scores(vae, x, 0)


def test_mean_se():
    m, se = anomaly.mean_se([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3) and se == pytest.approx(np.std([1, 2, 4], ddof=1) / math.sqrt(3))
    assert math.isnan(anomaly.mean_se([0.7])[1])
    with pytest.raises(ValueError, match="non-empty list"):
        anomaly.mean_se([])


def test_one_anomaly_is_enough_to_rank():
    """Both classes present is the rule: a single anomaly among normals is a valid ROC input."""
    fpr, tpr, _ = anomaly.roc_curve([0.1, 0.2, 0.9], [0, 0, 1])
    assert anomaly.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score([0, 0, 1], [0.1, 0.2, 0.9]))
    assert anomaly.auc([0.0, 1.0], [0.0, 1.0]) == pytest.approx(0.5)  # two points: the chance line


def test_rates_at_counts_strictly_above_and_both_rates():
    """"anomaly if score > threshold": a score equal to the threshold is not flagged; the
    false-positive rate is flagged normals over all normals (checked by hand on 3 + 2 points)."""
    scores, labels = [0.1, 0.5, 0.7, 0.5, 0.9], [0, 0, 0, 1, 1]
    det, fp = anomaly.rates_at(scores, labels, 0.5)
    assert det == pytest.approx(1 / 2) and fp == pytest.approx(1 / 3)
    det, fp = anomaly.rates_at(scores, labels, 0.05)
    assert (det, fp) == (1.0, 1.0)


def test_mean_se_of_two_values():
    m, se = anomaly.mean_se([1.0, 3.0])  # sd = sqrt(2), se = sqrt(2) / sqrt(2)
    assert (m, se) == (pytest.approx(2.0), pytest.approx(1.0))
