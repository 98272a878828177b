"""Shared helpers for the problem-set notebooks.

One concern per module (see DESIGN.md): ``env`` (device, seeding, run profile), ``data``
(MNIST with an offline fallback, torus point clouds, batching), ``train`` (the training loop and
atomic checkpoints), ``plot`` (figures) and ``grading`` (guarded checks and reference fall-backs);
one module per model family holds the reference answers of its problem set (``mixtures``,
``autograd``, ``autoencoder``, ``elbo``, ``torus``, ``autoregressive``, ``flows``, ``diffusion``),
with ``nets`` and ``metrics`` shared. Notebooks import what they need, e.g.
``from helpers import env, data``.
"""

from . import env, data, train, plot  # noqa: F401

__all__ = ["env", "data", "train", "plot"]
