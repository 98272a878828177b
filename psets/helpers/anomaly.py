"""Anomaly scores of a VAE and their evaluation: ROC curve, AUC, a threshold at a false-positive rate.

The reference answers of 09_training_practice's problems 3 and 4. Convention throughout: a
HIGHER score means MORE anomalous, and label 1 marks an anomaly (the positive class). A VAE here is
any module with ``encode(x) -> (mu, logvar)`` of shape (B, K) and ``log_likelihood(x, z)`` giving
log p_θ(x|z) of shape (S, B) for z (S, B, K), as in 03_vae.
"""

from __future__ import annotations

import math

import torch

from . import grading
from .elbo import log_normal, log_standard_normal


def _scores_labels(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores, dtype=torch.float64).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of the same length, got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores must be finite (a NaN or inf score cannot be ranked)")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomaly), got values "
                         f"{sorted(set(labels.tolist()))[:5]}")
    n_pos = int(labels.sum())
    if n_pos in (0, len(labels)):
        raise ValueError(f"labels must contain both classes, got {n_pos} anomalies among "
                         f"{len(labels)}")
    return scores, labels.to(torch.float64)


@grading.reference
def roc_curve(scores, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROC curve of ``scores`` (N,) against ``labels`` (N,) in {0, 1}.

    Returns (fpr, tpr, thresholds), float64 of length (number of distinct scores) + 1: the
    thresholds are +inf then the distinct scores in decreasing order, and point i is the
    (false-positive rate, true-positive rate) of the rule "anomaly if score >= thresholds[i]".
    The first point is (0, 0), the last (1, 1). (= sklearn.metrics.roc_curve with
    drop_intermediate=False.)
    """
    scores, labels = _scores_labels(scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order]
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    last_of_tie = torch.ones_like(s, dtype=torch.bool)  # the cumulative counts count after a tie
    last_of_tie[:-1] = s[1:] != s[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    tpr = torch.cat([zero, tp[last_of_tie] / tp[-1]])
    fpr = torch.cat([zero, fp[last_of_tie] / fp[-1]])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), s[last_of_tie]])
    return fpr, tpr, thresholds


@grading.reference
def auc(fpr, tpr) -> float:
    """Area under the curve through the points (fpr[i], tpr[i]) by the trapezoidal rule.

    fpr must be non-decreasing (as roc_curve returns it). On an ROC curve this is the probability
    that a random anomaly scores above a random normal point, ties counting one half.
    """
    fpr = torch.as_tensor(fpr, dtype=torch.float64)
    tpr = torch.as_tensor(tpr, dtype=torch.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape or len(fpr) < 2:
        raise ValueError(f"fpr and tpr must be 1-D of the same length >= 2, got "
                         f"{tuple(fpr.shape)} and {tuple(tpr.shape)}")
    if (fpr[1:] < fpr[:-1]).any():
        raise ValueError("fpr must be non-decreasing (sort the points by false-positive rate)")
    return float(((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2).sum())


@grading.reference
def threshold_at_fpr(normal_scores, fpr: float) -> float:
    """The smallest threshold t among ``normal_scores`` (N,) such that the share of normal scores
    strictly above t is at most ``fpr``; the rule "anomaly if score > t" then flags at most that
    share of normal data (fewer when scores tie at t)."""
    s = torch.as_tensor(normal_scores, dtype=torch.float64).detach().cpu()
    if s.ndim != 1 or len(s) == 0 or not torch.isfinite(s).all():
        raise ValueError(f"normal_scores must be a non-empty 1-D array of finite numbers, got "
                         f"shape {tuple(s.shape)}")
    if not (isinstance(fpr, (int, float)) and 0 <= fpr < 1):
        raise ValueError(f"fpr must lie in [0, 1), got {fpr!r}")
    allowed = math.floor(fpr * len(s) + 1e-9)  # normal points that may lie above t
    return float(torch.sort(s, descending=True).values[allowed])


def rates_at(scores, labels, threshold: float) -> tuple[float, float]:
    """(detection rate = TPR, false-positive rate) of the rule "anomaly if score > threshold"."""
    scores, labels = _scores_labels(scores, labels)
    flagged = (scores > threshold).to(torch.float64)
    return (float((flagged * labels).sum() / labels.sum()),
            float((flagged * (1 - labels)).sum() / (1 - labels).sum()))


@grading.reference
@torch.no_grad()
def anomaly_scores(vae: torch.nn.Module, x: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Three anomaly scores (B,) in nats for images x (B, ...), higher = more anomalous.

    With z_1..z_k ~ q_φ(z|x) and log w_i = log p_θ(x|z_i) + log p(z_i) − log q_φ(z_i|x):
    ``neg_elbo`` = −(1/k) Σ_i log w_i (a k-sample estimate of −ELBO), ``neg_iw`` = −log (1/k) Σ_i w_i
    (minus the importance-weighted bound, from the same k draws, so neg_iw <= neg_elbo), and
    ``recon`` = −log p_θ(x | z = mu) (the reconstruction error of the encoder's mean alone).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    mu, logvar = vae.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape), device=mu.device,
                                                   dtype=mu.dtype)  # (k, B, K)
    log_w = vae.log_likelihood(x, z) + log_standard_normal(z) - log_normal(z, mu, logvar)
    return {"neg_elbo": -log_w.mean(0),
            "neg_iw": -(torch.logsumexp(log_w, 0) - math.log(k)),
            "recon": -vae.log_likelihood(x, mu.unsqueeze(0))[0]}


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (sample sd / sqrt(n)) of a list of numbers; se is NaN for one value."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"values must be a non-empty list of numbers, got {values!r}")
    se = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se
