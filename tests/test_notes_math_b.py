"""Numerical checks of the labelled equations in lectures 05-08.

Each test checks labelled equations of lectures/05-autoregressive.md, 06-flows.md,
07-diffusion.md or 08-guidance.md against an independent route (autograd Jacobians, Gaussian
conditioning with matrices, Monte Carlo, scipy densities, quadrature). Its docstring names the
equation. Every test is seeded, uses float64 and runs well under two seconds on one CPU core.

Monte Carlo tolerances are five standard errors, estimated from the samples themselves (or from
the known variance), so a correct equation fails with probability below 1e-6 per comparison while
an error of a few percent is caught. Deterministic identities use tolerances near float64 round-off.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import linalg as sla
from scipy import stats

DT = torch.float64  # explicit dtype everywhere; the global default is left alone for other tests
Z = 5.0  # number of standard errors allowed in Monte Carlo comparisons


@pytest.fixture(autouse=True)
def _single_thread():
    """These tensors are tiny: one intra-op thread avoids thread start-up and contention on a
    shared CPU. The previous setting is restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _assert_mc(estimate: float, target: float, se: float, what: str) -> None:
    assert abs(estimate - target) < Z * se, (
        f"{what}: {estimate:.6g} vs {target:.6g} (5 SE = {Z * se:.3g})"
    )


def _assert_close(actual, expected, rtol=0.0, atol=0.0) -> None:
    """Max-abs-error comparison of tensors or numbers (torch.testing is slow to import)."""
    a = torch.as_tensor(actual, dtype=DT)
    e = torch.as_tensor(expected, dtype=DT)
    assert a.shape == e.shape, f"shape {tuple(a.shape)} vs {tuple(e.shape)}"
    err = (a - e).abs().max().item()
    tol = atol + rtol * e.abs().max().item()
    assert err <= tol, f"max abs error {err:.3g} exceeds {tol:.3g}"


# =============================================================================================
# Lecture 05: autoregressive models
# =============================================================================================


def test_chain_rule_factorisation():
    """(5.1) p(x) = prod_d p(x_d | x_<d), built from marginals of a random joint table."""
    rng = np.random.default_rng(0)
    K, D = 3, 3
    joint = rng.dirichlet(np.ones(K**D)).reshape((K,) * D)

    def product_of_conditionals(p):
        prod = np.ones_like(p)
        for d in range(D):
            upto_d = p.sum(axis=tuple(range(d + 1, D)))  # p(x_1..x_d), shape K^(d+1)
            before_d = p.sum(axis=tuple(range(d, D)))  # p(x_<d), shape K^d
            cond = upto_d / np.expand_dims(before_d, -1)  # p(x_d | x_<d)
            prod = prod * cond.reshape(cond.shape + (1,) * (D - d - 1))
        return prod

    np.testing.assert_allclose(product_of_conditionals(joint), joint, rtol=1e-12)
    # any ordering works: factorise the reversed variables and reverse back
    rev = product_of_conditionals(joint.transpose(2, 1, 0)).transpose(2, 1, 0)
    np.testing.assert_allclose(rev, joint, rtol=1e-12)
    # negative control: dropping the conditioning (product of marginals) is wrong for this joint
    marg = [joint.sum(axis=tuple(j for j in range(D) if j != d)) for d in range(D)]
    indep = np.einsum("i,j,k->ijk", *marg)
    assert np.abs(indep - joint).max() > 1e-3


def _nade_params(D=8, H=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(H, D, generator=g, dtype=DT)
    V = torch.randn(D, H, generator=g, dtype=DT)
    b = torch.randn(D, generator=g, dtype=DT)
    c = torch.randn(H, generator=g, dtype=DT)
    return W, V, b, c


def _nade_direct(x, W, V, b, c):
    """p(x_d = 1 | x_<d) for every d, recomputing each hidden layer from scratch: O(D^2 H)."""
    out = []
    for d in range(x.shape[1]):
        h = torch.sigmoid(c + x[:, :d] @ W[:, :d].T)  # (B, H)
        out.append(torch.sigmoid(b[d] + h @ V[d]))
    return torch.stack(out, 1)


def _nade_recursive(x, W, V, b, c):
    """Same conditionals with the running pre-activation a_{d+1} = a_d + W[:, d] x_d: O(D H)."""
    a = c.expand(x.shape[0], -1).clone()
    out = []
    for d in range(x.shape[1]):
        out.append(torch.sigmoid(b[d] + torch.sigmoid(a) @ V[d]))
        a = a + x[:, d : d + 1] * W[:, d]
    return torch.stack(out, 1)


def test_nade_conditionals_normalise():
    """(5.2) NADE's product of Bernoulli conditionals sums to one over all 2^D binary vectors."""
    D = 8
    W, V, b, c = _nade_params(D)
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=DT)  # (256, D)
    p1 = _nade_direct(x, W, V, b, c)
    log_px = (x * torch.log(p1) + (1 - x) * torch.log1p(-p1)).sum(1)
    assert abs(torch.logsumexp(log_px, 0).item()) < 1e-12
    # negative control: letting h_d see x_d itself breaks normalisation
    leaky = []
    for d in range(D):
        h = torch.sigmoid(c + x[:, : d + 1] @ W[:, : d + 1].T)
        leaky.append(torch.sigmoid(b[d] + h @ V[d]))
    leaky = torch.stack(leaky, 1)
    log_leaky = (x * torch.log(leaky) + (1 - x) * torch.log1p(-leaky)).sum(1)
    assert abs(torch.logsumexp(log_leaky, 0).item()) > 1e-3


def test_nade_recursion_matches_direct():
    """(5.3) the O(DH) recursion a_{d+1} = a_d + W_{:,d} x_d gives the same conditionals as
    (5.2)."""
    W, V, b, c = _nade_params(D=8)
    x = (torch.rand(64, 8, generator=torch.Generator().manual_seed(1), dtype=DT) < 0.5).to(DT)
    _assert_close(_nade_recursive(x, W, V, b, c), _nade_direct(x, W, V, b, c), rtol=0, atol=1e-13)


def _made_masks(D, hidden, rng, strict_output=True):
    """MADE masks (5.4): degrees m(k) in {min m_prev, ..., D-1}; hidden M = [m(k) >= m_prev(j)],
    output M = [d > m(k)] (or [d >= m(k)] when strict_output is False, the wrong rule)."""
    m_prev = np.arange(1, D + 1)
    masks = []
    for H in hidden:
        m = rng.integers(m_prev.min(), D, size=H)  # upper bound D excluded, so values <= D-1
        masks.append((m[:, None] >= m_prev[None, :]).astype(float))
        m_prev = m
    d = np.arange(1, D + 1)[:, None]
    masks.append(((d > m_prev[None, :]) if strict_output else (d >= m_prev[None, :])).astype(float))
    return [torch.tensor(M, dtype=DT) for M in masks]


def _made_forward(x, masks, weights):
    h = x
    for M, (W, b) in zip(masks[:-1], weights[:-1]):
        h = torch.tanh(h @ (M * W).T + b)
    W, b = weights[-1]
    return h @ (masks[-1] * W).T + b  # one logit per dimension


def _made_weights(masks, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(M.shape, generator=g, dtype=DT),
            torch.randn(M.shape[0], generator=g, dtype=DT),
        )
        for M in masks
    ]


def test_made_jacobian_strictly_lower_triangular():
    """(5.4) MADE masks make output d depend only on x_<d: the Jacobian is strictly
    lower-triangular."""
    D, hidden = 6, (20, 20)
    rng = np.random.default_rng(0)
    masks = _made_masks(D, hidden, rng)
    weights = _made_weights(masks)
    x = torch.randn(D, dtype=DT, generator=torch.Generator().manual_seed(2))
    J = torch.autograd.functional.jacobian(lambda v: _made_forward(v[None], masks, weights)[0], x)
    assert torch.all(torch.triu(J) == 0), "output d depends on x_d or a later input"
    # the network is not trivially disconnected: most allowed entries are non-zero
    below = J[torch.tril(torch.ones(D, D, dtype=torch.bool), -1)]
    assert (below.abs() > 1e-8).float().mean() > 0.5
    # path counts from the mask product give the same structure, independently of the weights
    paths = masks[2] @ masks[1] @ masks[0]
    assert torch.all(torch.triu(paths) == 0)
    # negative control: the non-strict output rule [d >= m(k)] lets x_d reach output d
    bad = _made_masks(D, hidden, np.random.default_rng(0), strict_output=False)
    Jb = torch.autograd.functional.jacobian(lambda v: _made_forward(v[None], bad, weights)[0], x)
    assert torch.diagonal(Jb).abs().max() > 1e-6


def test_made_sequential_sampling_matches_one_pass_likelihood():
    """(5.5) sampling x_d ~ p(x_d | x_<d) with D network passes draws from the density that one pass
    evaluates; frequencies over all 2^D outcomes agree within 5 binomial standard errors."""
    D, n = 4, 40_000
    masks = _made_masks(D, (12,), np.random.default_rng(3))
    weights = _made_weights(masks, seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.zeros(n, D, dtype=DT)
    for d in range(D):  # pass d fixes coordinate d; later passes cannot change it (masks)
        logits = _made_forward(x, masks, weights)
        x[:, d] = (torch.rand(n, generator=g, dtype=DT) < torch.sigmoid(logits[:, d])).to(DT)
    allx = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=DT)
    logits = _made_forward(allx, masks, weights)  # a single pass gives every conditional
    logp = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, allx, reduction="none"
    ).sum(1)
    p = logp.exp()
    assert abs(p.sum().item() - 1) < 1e-12
    codes = (x * 2 ** torch.arange(D - 1, -1, -1, dtype=DT)).sum(1).long()
    freq = torch.bincount(codes, minlength=2**D).to(DT) / n
    se = torch.sqrt(p * (1 - p) / n)
    assert torch.all((freq - p).abs() < Z * se + 1e-12), (freq, p)


def _pixelcnn_mask(k, kind):
    """Mask A excludes the centre pixel, mask B includes it; both hide the rows below and the
    pixels to the right in the centre row (raster order)."""
    m = torch.zeros(k, k, dtype=DT)
    c = k // 2
    m[:c, :] = 1
    m[c, :c] = 1
    if kind == "B":
        m[c, c] = 1
    return m


def test_pixelcnn_masked_convs_causal_with_blind_spot():
    """(5.6) a stack of one mask-A and several mask-B 3x3 convolutions never sees the current or
    later pixels, and misses some earlier pixels up and to the right (the blind spot)."""
    L, size = 5, 13
    g = torch.Generator().manual_seed(0)
    kernels = [
        torch.randn(1, 1, 3, 3, generator=g, dtype=DT) * _pixelcnn_mask(3, "A" if i == 0 else "B")
        for i in range(L)
    ]
    x = torch.randn(1, 1, size, size, dtype=DT, generator=g, requires_grad=True)
    h = x
    for k in kernels:  # linear stack: the gradient's support is exactly the receptive field
        h = torch.nn.functional.conv2d(h, k, padding=1)
    r = s = size // 2
    (grad,) = torch.autograd.grad(h[0, 0, r, s], x)
    dep = grad[0, 0].abs() > 1e-12
    order = torch.arange(size * size).reshape(size, size)
    assert not dep[order >= r * size + s].any(), "depends on the current or a later pixel"
    assert dep[r, s - 1] and dep[r - 1, s] and dep[r - 1, s + 1] and dep[r - L, s]
    # blind spot: earlier pixels inside the L-step window that no path reaches
    assert not dep[r - 1, s + 2] and not dep[r - 2, s + 3]
    window = torch.zeros_like(dep)
    window[r - L : r + 1, s - L : s + L + 1] = True
    blind = window & (order < r * size + s) & ~dep
    assert blind.sum() >= 10


# =============================================================================================
# Lecture 06: normalising flows
# =============================================================================================


def test_change_of_variables_affine():
    """(6.1) log p_X(x) = log p_Z(f(x)) + log|det df/dx| for f(x) = A x + b, Z ~ N(0, I), against
    scipy's density of X = A^{-1}(Z - b) ~ N(-A^{-1} b, A^{-1} A^{-T})."""
    rng = np.random.default_rng(0)
    D = 3
    A = rng.normal(size=(D, D)) + 2 * np.eye(D)
    b = rng.normal(size=D)
    x = rng.normal(size=(6, D))
    z = x @ A.T + b
    logp = stats.multivariate_normal(np.zeros(D), np.eye(D)).logpdf(z) + np.log(
        abs(np.linalg.det(A))
    )
    Ainv = np.linalg.inv(A)
    ref = stats.multivariate_normal(-Ainv @ b, Ainv @ Ainv.T).logpdf(x)
    np.testing.assert_allclose(logp, ref, rtol=0, atol=1e-10)
    assert np.abs(np.log(abs(np.linalg.det(A)))) > 0.1  # the log-det term matters here


def test_change_of_variables_1d_lognormal():
    """(6.1) with the bijection f(x) = log x and Z ~ N(0,1), p_X is the standard log-normal; the
    derivative comes from autograd."""
    x = torch.linspace(0.05, 6.0, 50, dtype=DT, requires_grad=True)
    z = torch.log(x)
    (dz_dx,) = torch.autograd.grad(z.sum(), x)  # elementwise map, so this is the diagonal Jacobian
    logp = torch.distributions.Normal(0.0, 1.0).log_prob(z) + torch.log(dz_dx.abs())
    ref = stats.lognorm(s=1.0).logpdf(x.detach().numpy())
    np.testing.assert_allclose(logp.detach().numpy(), ref, rtol=0, atol=1e-12)


def _mlp(d_in, d_out, seed, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(8, d_in, generator=g, dtype=DT) * scale
    W2 = torch.randn(d_out, 8, generator=g, dtype=DT) * scale
    return lambda u: torch.tanh(u @ W1.T) @ W2.T


def _affine_coupling(x, s_net, t_net, d):
    x1, x2 = x[..., :d], x[..., d:]
    s = s_net(x1)
    return torch.cat([x1, x2 * torch.exp(s) + t_net(x1)], -1), s.sum(-1)


def _affine_coupling_inverse(y, s_net, t_net, d):
    y1, y2 = y[..., :d], y[..., d:]
    return torch.cat([y1, (y2 - t_net(y1)) * torch.exp(-s_net(y1))], -1)


def test_additive_coupling_volume_preserving():
    """(6.3) NICE additive coupling y2 = x2 + m(x1) has log|det| = 0 and inverse x2 = y2 - m(y1)."""
    D, d = 6, 3
    m = _mlp(d, D - d, seed=0, scale=1.0)
    f = lambda v: torch.cat([v[:d], v[d:] + m(v[:d])])
    x = torch.randn(D, dtype=DT, generator=torch.Generator().manual_seed(1))
    J = torch.autograd.functional.jacobian(f, x)
    sign, logdet = torch.linalg.slogdet(J)
    assert sign > 0 and abs(logdet.item()) < 1e-12
    assert J[d:, :d].abs().max() > 1e-3  # the coupling is not trivial
    y = f(x)
    x_rec = torch.cat([y[:d], y[d:] - m(y[:d])])
    _assert_close(x_rec, x, rtol=0, atol=1e-14)


def test_affine_coupling_logdet_is_sum_of_s():
    """(6.4) RealNVP affine coupling: the autograd Jacobian is block-triangular with diagonal
    exp(s), and its log|det| equals sum(s)."""
    D, d = 6, 2
    s_net, t_net = _mlp(d, D - d, 0), _mlp(d, D - d, 1)
    x = torch.randn(D, dtype=DT, generator=torch.Generator().manual_seed(2))
    J = torch.autograd.functional.jacobian(lambda v: _affine_coupling(v, s_net, t_net, d)[0], x)
    _, s_sum = _affine_coupling(x, s_net, t_net, d)
    sign, logdet = torch.linalg.slogdet(J)
    assert sign > 0
    _assert_close(logdet, s_sum, rtol=0, atol=1e-12)
    assert torch.all(J[:d, d:] == 0)  # y1 = x1 does not depend on x2
    _assert_close(torch.diagonal(J[d:, d:]), torch.exp(s_net(x[:d])), rtol=0, atol=1e-14)
    assert abs(s_sum.item()) > 1e-2  # the log-det is not zero by accident


def test_affine_coupling_inverse():
    """(6.5) the inverse (y2 - t(y1)) * exp(-s(y1)) recovers x without inverting s or t."""
    D, d = 6, 3
    s_net, t_net = _mlp(d, D - d, 3), _mlp(d, D - d, 4)
    x = torch.randn(10, D, dtype=DT, generator=torch.Generator().manual_seed(5))
    y, _ = _affine_coupling(x, s_net, t_net, d)
    _assert_close(_affine_coupling_inverse(y, s_net, t_net, d), x, rtol=0, atol=1e-13)


def test_flow_composition_logdet_adds():
    """(6.2) the log-det of a composition is the sum of the layers' log-dets (chain rule)."""
    D, d = 4, 2
    s1, t1, s2, t2 = (_mlp(d, D - d, k) for k in range(4))
    perm = torch.tensor([2, 3, 0, 1])

    def layers(v):
        y, ld1 = _affine_coupling(v, s1, t1, d)
        y = y[perm]  # a permutation has |det| = 1
        y, ld2 = _affine_coupling(y, s2, t2, d)
        return y, ld1 + ld2

    x = torch.randn(D, dtype=DT, generator=torch.Generator().manual_seed(6))
    J = torch.autograd.functional.jacobian(lambda v: layers(v)[0], x)
    _assert_close(torch.linalg.slogdet(J)[1], layers(x)[1], rtol=0, atol=1e-12)


def test_actnorm_logdet_and_init():
    """(6.6) actnorm y = s * x + b per channel has log|det| = H W sum_c log|s_c|; the data-dependent
    initialisation gives zero-mean, unit-variance channels on the initial batch."""
    C, H, W = 3, 2, 3
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([0.5, -1.7, 2.2], dtype=DT)  # a negative scale checks the absolute value
    b = torch.randn(C, dtype=DT, generator=g)
    f = lambda v: (s[:, None, None] * v.reshape(C, H, W) + b[:, None, None]).reshape(-1)
    J = torch.autograd.functional.jacobian(f, torch.randn(C * H * W, dtype=DT, generator=g))
    _assert_close(torch.linalg.slogdet(J)[1], H * W * torch.log(s.abs()).sum(), rtol=0, atol=1e-12)
    batch = 3.0 + 2.0 * torch.randn(16, C, H, W, dtype=DT, generator=g)
    mean, std = batch.mean((0, 2, 3)), batch.std((0, 2, 3), unbiased=False)
    out = (batch - mean[:, None, None]) / std[:, None, None]
    _assert_close(out.mean((0, 2, 3)), torch.zeros(C, dtype=DT), rtol=0, atol=1e-12)
    _assert_close(out.std((0, 2, 3), unbiased=False), torch.ones(C, dtype=DT), rtol=0, atol=1e-12)


def test_invertible_1x1_conv_logdet():
    """(6.7) a 1x1 convolution with C x C matrix W on a C x H x W tensor has log|det| = H W
    log|det W| (autograd Jacobian of the whole map on a tiny tensor)."""
    C, H, Wd = 3, 2, 3
    g = torch.Generator().manual_seed(0)
    Wm = torch.randn(C, C, dtype=DT, generator=g)
    f = lambda v: torch.einsum("oc,chw->ohw", Wm, v.reshape(C, H, Wd)).reshape(-1)
    J = torch.autograd.functional.jacobian(f, torch.randn(C * H * Wd, dtype=DT, generator=g))
    _assert_close(
        torch.linalg.slogdet(J)[1], H * Wd * torch.linalg.slogdet(Wm)[1], rtol=0, atol=1e-11
    )
    assert abs(torch.linalg.slogdet(Wm)[1].item()) > 1e-2


def test_lu_parameterisation_logdet():
    """(6.8) W = P L (U + diag(s)) with unit-lower L and strictly upper U has log|det W| = sum
    log|s|; scipy's LU of a random W gives the same numbers."""
    rng = np.random.default_rng(0)
    C = 5
    P = np.eye(C)[rng.permutation(C)]
    Lm = np.tril(rng.normal(size=(C, C)), -1) + np.eye(C)
    U = np.triu(rng.normal(size=(C, C)), 1)
    s = rng.normal(size=C)
    W = P @ Lm @ (U + np.diag(s))
    np.testing.assert_allclose(np.linalg.slogdet(W)[1], np.log(np.abs(s)).sum(), rtol=0, atol=1e-12)
    W2 = rng.normal(size=(C, C))
    P2, L2, U2 = sla.lu(W2)  # W2 = P2 L2 U2, and U2's diagonal plays the role of s
    np.testing.assert_allclose(P2 @ L2 @ U2, W2, atol=1e-12)
    np.testing.assert_allclose(
        np.log(np.abs(np.diag(U2))).sum(), np.linalg.slogdet(W2)[1], atol=1e-12
    )


def _spectral_norm_power(W, iters=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(W.shape[1], dtype=DT, generator=g)
    for _ in range(iters):
        u = W @ v
        u = u / u.norm()
        v = W.T @ u
        v = v / v.norm()
    return u @ W @ v


def _spectral_normalise(W, kappa):
    """(6.10): rescale W to spectral norm kappa when its estimated norm exceeds kappa, else keep it."""
    sigma_hat = _spectral_norm_power(W)
    return kappa * W / sigma_hat if kappa / sigma_hat < 1 else W


def test_spectral_normalisation_both_branches():
    """(6.10) power iteration estimates ||W||_2; a matrix with norm above kappa is rescaled to norm
    kappa (the clipping branch), and one already below kappa is returned unchanged."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 5, dtype=DT, generator=g)
    exact = torch.linalg.matrix_norm(W, ord=2)
    _assert_close(_spectral_norm_power(W), exact, rtol=1e-10, atol=0)
    kappa = 0.9
    assert exact > kappa  # a standard normal 7x5 matrix has norm near sqrt(7) + sqrt(5)
    clipped = _spectral_normalise(W, kappa)
    _assert_close(torch.linalg.matrix_norm(clipped, ord=2), torch.tensor(kappa, dtype=DT), rtol=1e-10)
    small = 0.5 * kappa * W / exact  # norm 0.45 < kappa: the "otherwise" branch
    assert _spectral_normalise(small, kappa) is small
    # a matrix whose norm sits just above kappa is still clipped, to kappa exactly
    near = 1.01 * kappa * W / exact
    _assert_close(torch.linalg.matrix_norm(_spectral_normalise(near, kappa), ord=2),
                  torch.tensor(kappa, dtype=DT), rtol=1e-10)


def _iresnet_block(D=5, kappa=0.7, seed=0):
    """g(x) = W2 tanh(W1 x + b) with ||W1||_2 = ||W2||_2 = sqrt(kappa), so Lip(g) <= kappa."""
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(16, D, dtype=DT, generator=g)
    W2 = torch.randn(D, 16, dtype=DT, generator=g)
    W1 = W1 * math.sqrt(kappa) / torch.linalg.matrix_norm(W1, ord=2)
    W2 = W2 * math.sqrt(kappa) / torch.linalg.matrix_norm(W2, ord=2)
    b = torch.randn(16, dtype=DT, generator=g)
    return lambda x: torch.tanh(x @ W1.T + b) @ W2.T


def test_iresnet_fixed_point_inversion():
    """(6.9) y = x + g(x) with Lip(g) <= kappa < 1 is inverted by x_{k+1} = y - g(x_k), and the
    error shrinks at least geometrically, ||x_k - x|| <= kappa^k ||x_0 - x|| (Banach)."""
    kappa = 0.7
    gfun = _iresnet_block(kappa=kappa)
    x = 2.0 * torch.randn(5, dtype=DT, generator=torch.Generator().manual_seed(1))
    y = x + gfun(x)
    xk = y.clone()
    e0 = (xk - x).norm()
    assert e0 > 0.1
    for k in range(1, 60):
        xk = y - gfun(xk)
        assert (xk - x).norm() <= kappa**k * e0 + 1e-13, k
    assert (xk - x).norm() < 1e-9


def _series_logdet(J, n):
    out, P = 0.0, torch.eye(J.shape[0], dtype=DT)
    for k in range(1, n + 1):
        P = P @ J
        out = out + (-1) ** (k + 1) * torch.trace(P) / k
    return out


def test_power_series_logdet():
    """(6.11) log det(I + J) = sum_k (-1)^(k+1) tr(J^k)/k for ||J||_2 < 1, and (6.12) truncation
    after n terms errs by at most -D (log(1 - kappa) + sum_{k<=n} kappa^k / k), kappa = ||J||_2."""
    D, rho = 5, 0.6
    J = torch.randn(D, D, dtype=DT, generator=torch.Generator().manual_seed(0))
    J = J * rho / torch.linalg.matrix_norm(J, ord=2)
    sign, exact = torch.linalg.slogdet(torch.eye(D, dtype=DT) + J)
    assert sign > 0  # eigenvalues of I + J have positive real part, so det > 0
    _assert_close(_series_logdet(J, 80), exact, rtol=0, atol=1e-13)
    for n in range(1, 12):
        bound = -D * (math.log(1 - rho) + sum(rho**k / k for k in range(1, n + 1)))
        assert abs(_series_logdet(J, n) - exact) <= bound + 1e-14
    assert abs(_series_logdet(J, 1) - exact) > 1e-3  # one term is not enough: the series matters


def test_hutchinson_trace_unbiased_and_variance():
    """(6.13) E[v^T A v] = tr(A) for Rademacher and Gaussian probes; (6.14) their variances are
    2(||S||_F^2 - sum_i S_ii^2) and 2 ||S||_F^2 with S = (A + A^T)/2."""
    rng = np.random.default_rng(0)
    D, n = 5, 200_000
    A = rng.normal(size=(D, D))
    S = (A + A.T) / 2
    var_formula = {
        "rademacher": 2 * ((S**2).sum() - (np.diag(S) ** 2).sum()),
        "gaussian": 2 * (S**2).sum(),
    }
    for kind in ("rademacher", "gaussian"):
        v = (
            rng.choice([-1.0, 1.0], size=(n, D))
            if kind == "rademacher"
            else rng.normal(size=(n, D))
        )
        q = np.einsum("ni,ij,nj->n", v, A, v)
        _assert_mc(q.mean(), np.trace(A), q.std() / math.sqrt(n), f"{kind} mean")
        # relative standard error of a sample variance is below sqrt((kurtosis - 1)/n) < 2 %
        assert abs(q.var() / var_formula[kind] - 1) < 0.03, kind


def test_stochastic_logdet_estimator_with_vjps():
    """(6.15) v^T [sum_k (-1)^(k+1) J_g^k / k] v with v ~ Rademacher, built from vector-Jacobian
    products of an i-ResNet block, is unbiased for the truncated series of (6.11)."""
    D, n, terms = 5, 20_000, 8
    gfun = _iresnet_block(D=D, kappa=0.7, seed=2)
    x0 = torch.randn(D, dtype=DT, generator=torch.Generator().manual_seed(3))
    J = torch.autograd.functional.jacobian(gfun, x0)
    target = _series_logdet(J, terms).item()
    xb = x0.expand(n, D).clone().requires_grad_(True)
    gx = gfun(xb)
    v = (torch.randint(0, 2, (n, D), generator=torch.Generator().manual_seed(4)) * 2 - 1).to(DT)
    w, est = v, torch.zeros(n, dtype=DT)
    for k in range(1, terms + 1):
        (w,) = torch.autograd.grad((gx * w).sum(), xb, retain_graph=True)  # w^T J, one row each
        est = est + (-1) ** (k + 1) * (w * v).sum(1) / k
    _assert_mc(est.mean().item(), target, est.std().item() / math.sqrt(n), "stochastic log-det")


# =============================================================================================
# Lecture 07: diffusion
# =============================================================================================


def linear_betas(T=1000, beta_1=1e-4, beta_T=0.02):
    return np.linspace(beta_1, beta_T, T)  # betas[t-1] = beta_t


def alpha_bar_from_betas(betas):
    return np.concatenate([[1.0], np.cumprod(1 - betas)])  # alpha_bar[t], alpha_bar[0] = 1


def cosine_betas(T=1000, s=0.008, max_beta=0.999):
    t = np.arange(T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta), f / f[0]


def posterior(x0, xt, t, betas):
    """(7.3)-(7.4): mean and variance of q(x_{t-1} | x_t, x_0)."""
    ab = alpha_bar_from_betas(betas)
    beta, alpha = betas[t - 1], 1 - betas[t - 1]
    mean = (
        np.sqrt(ab[t - 1]) * beta / (1 - ab[t]) * x0
        + np.sqrt(alpha) * (1 - ab[t - 1]) / (1 - ab[t]) * xt
    )
    return mean, (1 - ab[t - 1]) * beta / (1 - ab[t])


def gaussian_condition(mean, cov, n1, x2):
    """Mean and covariance of the first n1 coordinates of N(mean, cov) given the rest equal x2."""
    S11, S12, S22 = cov[:n1, :n1], cov[:n1, n1:], cov[n1:, n1:]
    K = np.linalg.solve(S22, S12.T).T
    return mean[:n1] + K @ (x2 - mean[n1:]), S11 - K @ S12.T


def test_forward_closed_form_matches_iteration():
    """(7.2) iterating q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) from fixed x_0 gives
    the mean sqrt(alpha_bar_t) x_0 and variance 1 - alpha_bar_t (5 SE; SE of a variance v is v
    sqrt(2/n))."""
    rng = np.random.default_rng(0)
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    x0 = np.array([-1.5, 0.3, 2.0])[:, None]
    n = 5_000
    x = np.repeat(x0, n, axis=1)
    checkpoints = {1, 10, 100, 500, 1000}
    for t in range(1, len(betas) + 1):
        x = np.sqrt(1 - betas[t - 1]) * x + np.sqrt(betas[t - 1]) * rng.standard_normal(x.shape)
        if t in checkpoints:
            var = 1 - ab[t]
            for i in range(3):
                _assert_mc(
                    x[i].mean(), np.sqrt(ab[t]) * x0[i, 0], math.sqrt(var / n), f"mean t={t}"
                )
                _assert_mc(x[i].var(), var, var * math.sqrt(2 / n), f"var t={t}")


def test_posterior_matches_gaussian_conditioning():
    """(7.3), (7.4) mu_tilde and beta_tilde equal the conditional of the joint Gaussian (x_{t-1},
    x_t) | x_0, built as a linear map of two noise vectors and conditioned with matrices."""
    rng = np.random.default_rng(1)
    D = 3
    for betas in (linear_betas(), cosine_betas()[0]):
        ab = alpha_bar_from_betas(betas)
        for t in (1, 2, 50, 500, 999, 1000):
            x0, xt = rng.normal(size=D), rng.normal(size=D)
            a, alpha = math.sqrt(1 - ab[t - 1]), 1 - betas[t - 1]
            I, O = np.eye(D), np.zeros((D, D))
            Lmap = np.block([[a * I, O], [math.sqrt(alpha) * a * I, math.sqrt(betas[t - 1]) * I]])
            mean = np.concatenate([math.sqrt(ab[t - 1]) * x0, math.sqrt(alpha * ab[t - 1]) * x0])
            m_ref, C_ref = gaussian_condition(mean, Lmap @ Lmap.T, D, xt)
            m, v = posterior(x0, xt, t, betas)
            np.testing.assert_allclose(m, m_ref, rtol=0, atol=1e-9)
            np.testing.assert_allclose(C_ref, v * I, rtol=0, atol=1e-12)


def test_vlb_decomposition():
    """(7.5) E_q[-log p(x_{0:T}) / q(x_{1:T}|x_0)] = L_T + sum_{t>=2} L_{t-1} + L_0, on a 1-D
    linear-Gaussian model where each term has a closed form; Monte Carlo over 400k trajectories.
    Negative controls: the same sum with beta_t in place of beta_tilde_t in the KLs, or without
    L_T, is more than Z standard errors away from the Monte Carlo value."""
    rng = np.random.default_rng(2)
    betas = np.array([0.1, 0.2, 0.3, 0.5])
    T, ab = len(betas), alpha_bar_from_betas(betas)
    x0, n = 0.7, 400_000
    # reverse model p(x_{t-1} | x_t) = N(a_t x_t + b_t, sig_t^2), deliberately not optimal
    a = np.array([1.1, 0.9, 0.8, 0.6])
    b = np.array([0.05, -0.1, 0.2, 0.0])
    sig = np.array([0.3, 0.4, 0.5, 0.6])
    xs = [np.full(n, x0)]
    for t in range(1, T + 1):
        xs.append(
            np.sqrt(1 - betas[t - 1]) * xs[-1] + np.sqrt(betas[t - 1]) * rng.standard_normal(n)
        )
    logp = stats.norm.logpdf(xs[T])
    logq = 0.0
    for t in range(1, T + 1):
        logp = logp + stats.norm.logpdf(xs[t - 1], a[t - 1] * xs[t] + b[t - 1], sig[t - 1])
        logq = logq + stats.norm.logpdf(
            xs[t], np.sqrt(1 - betas[t - 1]) * xs[t - 1], np.sqrt(betas[t - 1])
        )
    integrand = logq - logp
    se = integrand.std() / math.sqrt(n)

    # closed forms: every term is an expectation of a quadratic under q(x_t | x_0) = N(m_t, v_t)
    def kl(m1, v1, m2, v2):
        return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)

    m = lambda t: np.sqrt(ab[t]) * x0
    v = lambda t: 1 - ab[t]

    def closed_form(posterior_variance="tilde", with_L_T=True):
        total = kl(m(T), v(T), 0.0, 1.0) if with_L_T else 0.0
        for t in range(2, T + 1):
            c0, ct = (
                np.sqrt(ab[t - 1]) * betas[t - 1] / v(t),
                np.sqrt(1 - betas[t - 1]) * v(t - 1) / v(t),
            )
            bt = v(t - 1) * betas[t - 1] / v(t) if posterior_variance == "tilde" else betas[t - 1]
            # mu_tilde - mu_theta = (c0 x0 - b) + (ct - a) x_t, with x_t ~ N(m_t, v_t)
            off, slope = c0 * x0 - b[t - 1], ct - a[t - 1]
            sq = (off + slope * m(t)) ** 2 + slope**2 * v(t)
            total += 0.5 * (np.log(sig[t - 1] ** 2 / bt) + (bt + sq) / sig[t - 1] ** 2 - 1)
        # L_0 = E[-log N(x0; a_1 x_1 + b_1, sig_1^2)]
        sq0 = (x0 - b[0] - a[0] * m(1)) ** 2 + a[0] ** 2 * v(1)
        return total + 0.5 * np.log(2 * np.pi * sig[0] ** 2) + sq0 / (2 * sig[0] ** 2)

    _assert_mc(integrand.mean(), closed_form(), se, "L_vlb")
    for wrong in (closed_form(posterior_variance="beta"), closed_form(with_L_T=False)):
        assert abs(integrand.mean() - wrong) > Z * se, (integrand.mean(), wrong, se)


def test_equal_variance_gaussian_kl():
    """(7.6) KL(N(mu_tilde, beta_tilde I) || N(mu_theta, sigma^2 I)) = ||mu_tilde -
    mu_theta||^2/(2 sigma^2) + C, with C independent of mu_theta (torch.distributions computes
    the KL)."""
    D = 4
    g = torch.Generator().manual_seed(0)
    mu_t = torch.randn(D, dtype=DT, generator=g)
    bt, s2 = 0.03, 0.05
    C = 0.5 * D * (math.log(s2 / bt) + bt / s2 - 1)
    for _ in range(5):
        mu_theta = mu_t + torch.randn(D, dtype=DT, generator=g)
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu_t, math.sqrt(bt)),
            torch.distributions.Normal(mu_theta, math.sqrt(s2)),
        ).sum()
        _assert_close(kl, (mu_t - mu_theta).pow(2).sum() / (2 * s2) + C, rtol=0, atol=1e-12)


def test_eps_parameterisation_of_mean():
    """(7.7) with x_t = sqrt(ab) x_0 + sqrt(1-ab) eps, (x_t - beta/sqrt(1-ab) eps)/sqrt(alpha) =
    mu_tilde(x_t, x_0)."""
    rng = np.random.default_rng(3)
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    for t in (1, 2, 10, 300, 1000):
        x0, eps = rng.normal(size=5), rng.normal(size=5)
        xt = np.sqrt(ab[t]) * x0 + np.sqrt(1 - ab[t]) * eps
        mu_eps = (xt - betas[t - 1] / np.sqrt(1 - ab[t]) * eps) / np.sqrt(1 - betas[t - 1])
        np.testing.assert_allclose(mu_eps, posterior(x0, xt, t, betas)[0], rtol=0, atol=1e-10)
        wrong = (xt - betas[t - 1] / np.sqrt(1 - ab[t]) * (eps + 0.1)) / np.sqrt(1 - betas[t - 1])
        assert np.abs(wrong - mu_eps).max() > 1e-6


def test_eps_loss_weight():
    """(7.8) ||mu_tilde - mu_theta||^2/(2 sigma_t^2) = beta_t^2 / (2 sigma_t^2 alpha_t (1-ab_t))
    ||eps - eps_theta||^2."""
    rng = np.random.default_rng(4)
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    for t in (2, 50, 700):
        beta, alpha = betas[t - 1], 1 - betas[t - 1]
        s2 = beta
        x0, eps, eps_theta = rng.normal(size=(3, 6))
        xt = np.sqrt(ab[t]) * x0 + np.sqrt(1 - ab[t]) * eps
        mu_theta = (xt - beta / np.sqrt(1 - ab[t]) * eps_theta) / np.sqrt(alpha)
        lhs = ((posterior(x0, xt, t, betas)[0] - mu_theta) ** 2).sum() / (2 * s2)
        rhs = beta**2 / (2 * s2 * alpha * (1 - ab[t])) * ((eps - eps_theta) ** 2).sum()
        np.testing.assert_allclose(lhs, rhs, rtol=1e-9)


def test_lsimple_minimised_by_posterior_mean_noise():
    """(7.9) at a fixed t, L_simple is minimised by eps*(x_t) = E[eps | x_t] of (7.18): along any
    direction h(x_t) the Monte Carlo derivative of the loss at eps* vanishes (5 SE), while a shifted
    predictor has a clearly non-zero derivative."""
    rng = np.random.default_rng(11)
    ab = alpha_bar_from_betas(linear_betas())[200]
    data, probs = np.array([-1.5, 0.2, 2.0]), np.array([0.5, 0.3, 0.2])
    n = 400_000
    x0 = data[rng.choice(3, size=n, p=probs)]
    eps = rng.standard_normal(n)
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps  # the input of eps_theta in (7.9)
    logr = np.log(probs) + stats.norm.logpdf(xt[:, None], np.sqrt(ab) * data, np.sqrt(1 - ab))
    r = np.exp(logr - logr.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)  # q(x_0 = data_i | x_t)
    eps_star = (r * (xt[:, None] - np.sqrt(ab) * data)).sum(1) / np.sqrt(1 - ab)
    for h in (np.tanh(xt), np.cos(xt), xt):
        g = 2 * (eps_star - eps) * h  # d/dlambda ||eps - (eps* + lambda h)||^2 at lambda = 0
        _assert_mc(g.mean(), 0.0, g.std() / math.sqrt(n), "derivative at eps*")
        g_shift = 2 * (eps_star + 0.2 * h - eps) * h
        assert abs(g_shift.mean()) > Z * g_shift.std() / math.sqrt(n)


def test_schedules():
    """(7.10) linear schedule ends with alpha_bar_T ~ 4e-5; (7.11) the cosine schedule's betas
    rebuild f(t)/f(0) through the product of (1 - beta), clipping only the last step, and
    sqrt(beta_1) sits just below the pixel bin width 1/127.5 (Nichol & Dhariwal's choice of s)."""
    ab_lin = alpha_bar_from_betas(linear_betas())
    assert 1e-5 < ab_lin[-1] < 1e-4
    betas, ab_target = cosine_betas()
    ab = alpha_bar_from_betas(betas)
    np.testing.assert_allclose(ab[:-1], ab_target[:-1], rtol=1e-9, atol=0)
    assert ab_target[-1] == 0 or ab_target[-1] < 1e-30  # f(T) = cos^2(pi/2)
    clipped = np.flatnonzero(betas >= 0.999) + 1
    assert list(clipped) == [1000]
    assert 0.5 / 127.5 < math.sqrt(betas[0]) < 1 / 127.5
    # cosine keeps more signal in the middle: alpha_bar(T/2) is larger than the linear one
    assert ab[500] > 5 * ab_lin[500]


def test_reverse_variance_extremes():
    """(7.13) the true reverse q(x_{t-1}|x_t) has variance beta_t when x_0 ~ N(0, I) and
    beta_tilde_t when x_0 is a point, by Gaussian conditioning of (x_{t-1}, x_t)."""
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    for t in (2, 20, 400, 1000):
        beta, alpha = betas[t - 1], 1 - betas[t - 1]
        for v0, expect in ((1.0, beta), (0.0, (1 - ab[t - 1]) * beta / (1 - ab[t]))):
            V1 = ab[t - 1] * v0 + 1 - ab[t - 1]
            cov = np.array(
                [[V1, math.sqrt(alpha) * V1], [math.sqrt(alpha) * V1, alpha * V1 + beta]]
            )
            _, C = gaussian_condition(np.zeros(2), cov, 1, np.array([0.3]))
            np.testing.assert_allclose(C[0, 0], expect, rtol=1e-9)


def test_ddpm_ancestral_sampling_exact_for_standard_normal_data():
    """(7.12) with data N(0,1) the exact noise predictor is sqrt(1-ab_t) x_t; ancestral sampling
    with sigma_t^2 = beta_t then returns N(0,1) samples (mean and variance within 5 SE)."""
    rng = np.random.default_rng(5)
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    n = 10_000
    x = rng.standard_normal(n)
    for t in range(len(betas), 0, -1):
        eps_hat = np.sqrt(1 - ab[t]) * x  # E[eps | x_t] for N(0,1) data
        mu = (x - betas[t - 1] / np.sqrt(1 - ab[t]) * eps_hat) / np.sqrt(1 - betas[t - 1])
        x = mu + (np.sqrt(betas[t - 1]) * rng.standard_normal(n) if t > 1 else 0.0)
    # the last step adds no noise: the exact x_0 | x_1 has variance beta_1, so var = 1 - beta_1
    _assert_mc(x.mean(), 0.0, math.sqrt(1 / n), "mean")
    _assert_mc(x.var(), 1 - betas[0], math.sqrt(2 / n), "variance")


def ddim_step(xt, eps, t, t_prev, ab, eta, rng):
    """(7.15) one DDIM update from t to t_prev with sigma from (7.16)."""
    sigma = eta * np.sqrt((1 - ab[t_prev]) / (1 - ab[t]) * (1 - ab[t] / ab[t_prev]))
    x0_hat = (xt - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
    noise = sigma * rng.standard_normal(np.shape(xt)) if eta > 0 else 0.0
    return np.sqrt(ab[t_prev]) * x0_hat + np.sqrt(1 - ab[t_prev] - sigma**2) * eps + noise


def test_ddim_eta_one_recovers_ddpm_posterior():
    """(7.14), (7.16) at eta = 1 the non-Markovian posterior q_sigma(x_{t-1}|x_t,x_0) has variance
    beta_tilde_t and mean mu_tilde_t; at eta = 0 its variance is zero."""
    rng = np.random.default_rng(6)
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    for t in (2, 10, 250, 1000):
        sig2 = (1 - ab[t - 1]) / (1 - ab[t]) * (1 - ab[t] / ab[t - 1])
        x0, xt = rng.normal(size=(2, 4))
        mean_sigma = np.sqrt(ab[t - 1]) * x0 + np.sqrt(1 - ab[t - 1] - sig2) * (
            xt - np.sqrt(ab[t]) * x0
        ) / np.sqrt(1 - ab[t])
        m, v = posterior(x0, xt, t, betas)
        np.testing.assert_allclose(sig2, v, rtol=1e-10)
        np.testing.assert_allclose(mean_sigma, m, rtol=0, atol=1e-10)


def test_ddim_preserves_marginals_for_any_sigma():
    """(7.14) if x_t ~ q(x_t|x_0) and x_s ~ q_sigma(x_s | x_t, x_0), then x_s ~ N(sqrt(ab_s) x_0,
    1 - ab_s) whatever eta; checked by running a 10-step DDIM chain (7.15) with the exact noise
    of a one-point data set, where x0_hat = x_0, for eta in {0, 0.5, 1}."""
    rng = np.random.default_rng(7)
    betas = linear_betas()
    ab = alpha_bar_from_betas(betas)
    x0_star, n = 1.3, 40_000
    tau = np.linspace(0, 1000, 11).astype(int)
    for eta in (0.0, 0.5, 1.0):
        x = np.sqrt(ab[1000]) * x0_star + np.sqrt(1 - ab[1000]) * rng.standard_normal(n)
        eps_T = (x - np.sqrt(ab[1000]) * x0_star) / np.sqrt(1 - ab[1000])
        for i in range(10, 1, -1):
            t, tp = tau[i], tau[i - 1]
            eps = (x - np.sqrt(ab[t]) * x0_star) / np.sqrt(1 - ab[t])  # exact for one data point
            x = ddim_step(x, eps, t, tp, ab, eta, rng)
            var = 1 - ab[tp]
            _assert_mc(
                x.mean(), np.sqrt(ab[tp]) * x0_star, math.sqrt(var / n), f"mean eta={eta} t={tp}"
            )
            _assert_mc(x.var(), var, var * math.sqrt(2 / n), f"var eta={eta} t={tp}")
        if eta == 0.0:  # deterministic: the implied noise never changes along the path
            eps = (x - np.sqrt(ab[tau[1]]) * x0_star) / np.sqrt(1 - ab[tau[1]])
            np.testing.assert_allclose(eps, eps_T, rtol=0, atol=1e-9)


def test_score_of_forward_kernel():
    """(7.17) grad_{x_t} log q(x_t|x_0) = -eps / sqrt(1 - ab_t), by autograd of the Gaussian
    log-density."""
    betas = linear_betas()
    ab = torch.tensor(alpha_bar_from_betas(betas), dtype=DT)
    g = torch.Generator().manual_seed(8)
    for t in (1, 100, 900):
        x0, eps = torch.randn(2, 6, dtype=DT, generator=g)
        xt = (ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps).requires_grad_(True)
        logq = torch.distributions.Normal(ab[t].sqrt() * x0, (1 - ab[t]).sqrt()).log_prob(xt).sum()
        (score,) = torch.autograd.grad(logq, xt)
        _assert_close(score, -eps / (1 - ab[t]).sqrt(), rtol=1e-9, atol=1e-9)


def test_marginal_score_is_posterior_mean_noise():
    """(7.18) for data on a few points, -sqrt(1-ab_t) grad log q_t(x_t) equals E[eps | x_t], the
    minimiser of L_simple: autograd of the mixture density vs posterior-weighted noise."""
    g = torch.Generator().manual_seed(9)
    data = torch.randn(4, 2, dtype=DT, generator=g) * 2
    logpi = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DT))
    ab = torch.tensor(alpha_bar_from_betas(linear_betas()), dtype=DT)
    for t in (20, 200, 600):
        xt = torch.randn(7, 2, dtype=DT, generator=g).requires_grad_(True)
        comp = torch.distributions.Normal(ab[t].sqrt() * data, (1 - ab[t]).sqrt())  # (4, 2)
        logk = comp.log_prob(xt[:, None, :]).sum(-1) + logpi  # (7, 4)
        (score,) = torch.autograd.grad(torch.logsumexp(logk, 1).sum(), xt)
        r = torch.softmax(logk.detach(), 1)  # p(x_0 = data_i | x_t)
        eps_i = (xt.detach()[:, None, :] - ab[t].sqrt() * data) / (1 - ab[t]).sqrt()
        post_eps = (r[..., None] * eps_i).sum(1)
        _assert_close(-(1 - ab[t]).sqrt() * score, post_eps, rtol=1e-9, atol=1e-10)


# =============================================================================================
# Lecture 08: guidance. A 1-D, three-class Gaussian mixture noised to time t stays a mixture:
# p_t(x | c) = N(sqrt(ab) mu_c, ab s_c^2 + 1 - ab), so every score has a closed form or autograd.
# =============================================================================================

MIX_PI = torch.tensor([0.3, 0.4, 0.3], dtype=DT)
MIX_MU = torch.tensor([-2.0, 0.5, 2.5], dtype=DT)
MIX_S = torch.tensor([0.6, 0.7, 0.5], dtype=DT)


def _mix_logs(x, ab):
    """log p_t(x | c) for each class (B, 3), log p_t(x) (B,) and log p_t(c | x) (B, 3)."""
    comp = torch.distributions.Normal(ab.sqrt() * MIX_MU, (ab * MIX_S**2 + 1 - ab).sqrt())
    log_cond = comp.log_prob(x[:, None])
    log_marg = torch.logsumexp(log_cond + MIX_PI.log(), 1)
    return log_cond, log_marg, log_cond + MIX_PI.log() - log_marg[:, None]


def _score(ab, c=0, marg=0.0, cond=0.0, cls=0.0, x=None):
    """Autograd gradient in x of marg log p_t(x) + cond log p_t(x|c) + cls log p_t(c|x)."""
    x = (X_TEST if x is None else x).detach().clone().requires_grad_(True)
    log_cond, log_marg, log_cls = _mix_logs(x, ab)
    logd = marg * log_marg + cond * log_cond[:, c] + cls * log_cls[:, c]
    (gx,) = torch.autograd.grad(logd.sum(), x)
    return gx


def _eps_star(x, ab):
    """Optimal noise predictors by Tweedie (posterior means), without autograd:
    E[eps|x_t,c] per class (B, 3) and E[eps|x_t] (B,)."""
    var_c = ab * MIX_S**2 + 1 - ab
    eps_c = (1 - ab).sqrt() * (x[:, None] - ab.sqrt() * MIX_MU) / var_c  # regression per class
    with torch.no_grad():
        r = torch.exp(_mix_logs(x, ab)[2])
    return eps_c, (r * eps_c).sum(1)


AB_TEST = torch.tensor([0.999, 0.6, 0.2], dtype=DT)  # early, middle and late noise levels
X_TEST = torch.linspace(-4, 4, 41, dtype=DT)


def test_bayes_rule_on_scores():
    """(8.3) grad log p_t(x|c) = grad log p_t(x) + grad log p_t(c|x), autograd of each
    log-density."""
    for ab in AB_TEST:
        for c in range(3):
            s_cond, s_marg = _score(ab, c, cond=1.0), _score(ab, marg=1.0)
            s_cls = _score(ab, c, cls=1.0)
            _assert_close(s_cond, s_marg + s_cls, rtol=0, atol=1e-10)
            assert s_cls.abs().max() > 1e-2  # the classifier gradient is not zero


def test_eps_is_scaled_score():
    """(8.2) E[eps | x_t, c] = -sqrt(1-ab) grad log p_t(x|c), and likewise unconditionally."""
    for ab in AB_TEST:
        eps_c, eps_u = _eps_star(X_TEST, ab)
        for c in range(3):
            expect = -(1 - ab).sqrt() * _score(ab, c, cond=1.0)
            _assert_close(eps_c[:, c], expect, rtol=0, atol=1e-10)
        expect = -(1 - ab).sqrt() * _score(ab, marg=1.0)
        _assert_close(eps_u, expect, rtol=0, atol=1e-10)


def test_classifier_guidance():
    """(8.4) eps_hat = eps(x_t) - gamma sqrt(1-ab) grad log p_t(c|x_t): gamma = 1 gives the
    conditional noise E[eps|x_t,c]; any gamma gives -sqrt(1-ab) times the score of
    p_t(x) p_t(c|x)^gamma."""
    c = 1
    for ab in AB_TEST:
        eps_c, eps_u = _eps_star(X_TEST, ab)
        g_cls = _score(ab, c, cls=1.0)
        _assert_close(eps_u - (1 - ab).sqrt() * g_cls, eps_c[:, c], rtol=0, atol=1e-10)
        for gamma in (0.0, 2.5, 10.0):
            eps_hat = eps_u - gamma * (1 - ab).sqrt() * g_cls
            expect = -(1 - ab).sqrt() * _score(ab, c, marg=1.0, cls=gamma)
            _assert_close(eps_hat, expect, rtol=0, atol=1e-9)


def test_implicit_classifier_gradient():
    """(8.5) grad log p_t(c|x) = -(E[eps|x,c] - E[eps|x]) / sqrt(1-ab): the difference of the two
    noise predictions is a classifier gradient."""
    for ab in AB_TEST:
        eps_c, eps_u = _eps_star(X_TEST, ab)
        for c in range(3):
            implicit = -(eps_c[:, c] - eps_u) / (1 - ab).sqrt()
            _assert_close(implicit, _score(ab, c, cls=1.0), rtol=0, atol=1e-9)


def test_cfg_is_score_of_tilted_density():
    """(8.6)-(8.7) eps_tilde = eps(∅) + w (eps(c) - eps(∅)) equals
    -sqrt(1-ab) grad log[p_t(x)^(1-w) p_t(x|c)^w] for several w (autograd of the tilted
    log-density); w = 1 gives the conditional model, w = 0 the unconditional one."""
    c = 1
    for ab in AB_TEST:
        eps_c, eps_u = _eps_star(X_TEST, ab)
        for w in (0.0, 1.0, 3.0, 7.5):
            eps_tilde = eps_u + w * (eps_c[:, c] - eps_u)
            expect = -(1 - ab).sqrt() * _score(ab, c, marg=1 - w, cond=w)
            _assert_close(eps_tilde, expect, rtol=0, atol=1e-9)
        guided = {w: eps_u + w * (eps_c[:, c] - eps_u) for w in (0.0, 1.0, 3.0)}
        _assert_close(guided[1.0], eps_c[:, c], rtol=0, atol=1e-12)
        _assert_close(guided[0.0], eps_u, rtol=0, atol=1e-12)
        assert (guided[3.0] - eps_c[:, c]).abs().max() > 1e-2


def test_ho_salimans_form():
    """(8.8) (1 + w') eps(c) - w' eps(∅) is the course's eps(∅) + w (eps(c) - eps(∅)) with w = 1
    + w'."""
    eps_c, eps_u = _eps_star(X_TEST, AB_TEST[1])
    for w_prime in (0.0, 0.3, 2.0):
        hs = (1 + w_prime) * eps_c[:, 2] - w_prime * eps_u
        ours = eps_u + (1 + w_prime) * (eps_c[:, 2] - eps_u)
        _assert_close(hs, ours, rtol=0, atol=1e-12)
        wrong = eps_u + w_prime * (eps_c[:, 2] - eps_u)  # forgetting the shift by one
        assert (wrong - hs).abs().max() > 1e-3


def test_label_dropout_unconditional_target():
    """(8.9) with labels dropped at random, the best prediction for input ∅ is
    sum_c p_t(c|x_t) E[eps|x_t,c] = E[eps|x_t]; Monte Carlo regression on dropped samples near a
    fixed x_t agrees (5 SE), and weighting by the prior p(c) instead would not."""
    ab = AB_TEST[1]
    x_star, h = 0.8, 0.05
    eps_c, eps_u = _eps_star(torch.tensor([x_star], dtype=DT), ab)
    post = torch.exp(_mix_logs(torch.tensor([x_star], dtype=DT), ab)[2])[0]
    _assert_close((post * eps_c[0]).sum(), eps_u[0], rtol=0, atol=1e-12)
    # simulate training pairs, drop labels with p_uncond = 0.2,
    # and keep the dropped ones whose x_t lies near x_star
    g = torch.Generator().manual_seed(10)
    n, p_uncond = 400_000, 0.2
    cls = torch.multinomial(MIX_PI, n, replacement=True, generator=g)
    x0 = MIX_MU[cls] + MIX_S[cls] * torch.randn(n, dtype=DT, generator=g)
    eps = torch.randn(n, dtype=DT, generator=g)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    dropped = torch.rand(n, dtype=DT, generator=g) < p_uncond
    sel = dropped & ((xt - x_star).abs() < h)
    e = eps[sel]
    # the window of half-width h adds a bias of order h^2 (symmetric window), far inside 5 SE
    _assert_mc(
        e.mean().item(),
        eps_u[0].item(),
        e.std().item() / math.sqrt(sel.sum().item()),
        "dropout target",
    )
    prior_weighted = (MIX_PI * eps_c[0]).sum().item()
    assert abs(prior_weighted - eps_u[0].item()) > Z * e.std().item() / math.sqrt(sel.sum().item())


def test_tilted_density_two_forms():
    """(8.10) p(x)^(1-w) p(x|c)^w is proportional to p(x|c) p(c|x)^(w-1): the log-ratio is
    constant in x."""
    ab = torch.tensor(1.0, dtype=DT)
    log_cond, log_marg, log_cls = _mix_logs(X_TEST, ab)
    for w in (0.0, 3.0):
        a = (1 - w) * log_marg + w * log_cond[:, 0]
        b = log_cond[:, 0] + (w - 1) * log_cls[:, 0]
        diff = a - b
        assert (diff - diff[0]).abs().max() < 1e-10
        _assert_close(diff[0], (1 - w) * MIX_PI[0].log(), rtol=0, atol=1e-10)


def _gauss_moments_on_grid(logdens, grid):
    p = torch.exp(logdens - logdens.max())
    p = p / torch.trapezoid(p, grid)
    mean = torch.trapezoid(grid * p, grid)
    return mean, torch.trapezoid((grid - mean) ** 2 * p, grid)


def test_gaussian_tilt_sharpens():
    """(8.11) for p(x|c) = N(mu_c, s^2) and p(x) = N(m, tau^2), tau > s, the tilted density is
    Gaussian with precision w/s^2 + (1-w)/tau^2 and mean s_w^2 (w mu_c/s^2 + (1-w) m/tau^2),
    checked by quadrature; for w > 1 the variance drops below s^2 and the mean moves past mu_c
    away from m."""
    m, tau, mu_c, s = 0.0, 2.0, 1.0, 0.8
    grid = torch.linspace(-15, 15, 30_001, dtype=DT)
    N = torch.distributions.Normal
    prev_var = None
    for w in (0.0, 1.0, 3.0, 6.0):
        logd = (1 - w) * N(m, tau).log_prob(grid) + w * N(mu_c, s).log_prob(grid)
        mean, var = _gauss_moments_on_grid(logd, grid)
        var_w = 1 / (w / s**2 + (1 - w) / tau**2)
        mean_w = var_w * (w * mu_c / s**2 + (1 - w) * m / tau**2)
        assert abs(var.item() - var_w) < 1e-6 and abs(mean.item() - mean_w) < 1e-6, w
        if prev_var is not None:
            assert var < prev_var
        prev_var = var
        if w > 1:
            assert var_w < s**2 and mean_w > mu_c


def test_guidance_is_not_noised_tilt():
    """(8.12) guiding at every t tilts the noised densities, which is not the noised version of
    the tilted clean density: in the Gaussian case of (8.11) the variances agree for w in {0, 1}
    only. Stronger: the initial variance implied by the guided variance at step t,
    (v_w(t) - (1 - alpha_bar_t)) / alpha_bar_t, is constant in t for w in {0, 1} (any single
    diffusion) and not for w = 3 (the values quoted in lecture 8)."""
    tau, s = 2.0, 0.8  # the variances do not depend on the means
    ab = 0.3
    for w, should_match in ((0.0, True), (1.0, True), (3.0, False)):
        var0 = 1 / (w / s**2 + (1 - w) / tau**2)
        noised_tilt = ab * var0 + 1 - ab
        st2, tt2 = ab * s**2 + 1 - ab, ab * tau**2 + 1 - ab
        tilt_noised = 1 / (w / st2 + (1 - w) / tt2)
        assert (abs(noised_tilt - tilt_noised) < 1e-12) == should_match, w

    abs_ = np.array([1.0, 0.7, 0.3, 0.05])

    def implied_initial_variance(w):
        st2, tt2 = abs_ * s**2 + 1 - abs_, abs_ * tau**2 + 1 - abs_
        return (1 / (w / st2 + (1 - w) / tt2) - (1 - abs_)) / abs_

    np.testing.assert_allclose(implied_initial_variance(0.0), tau**2, rtol=1e-12)
    np.testing.assert_allclose(implied_initial_variance(1.0), s**2, rtol=1e-12)
    np.testing.assert_allclose(implied_initial_variance(3.0), [0.2388, -0.0041, -0.8907, -3.8008], atol=1e-4)


def test_mixture_guidance_sharpens_figure_example():
    """(8.10) on the figure's 1-D mixture (assets/make_figures_b.py): raising w from 1 to 3
    lowers the variance of the tilted density for class c = 1 and moves mass away from the other
    classes."""
    grid = torch.linspace(-8, 8, 8001, dtype=DT)
    log_cond, log_marg, _ = _mix_logs(grid, torch.tensor(1.0, dtype=DT))
    out = {}
    for w in (1.0, 3.0):
        logd = (1 - w) * log_marg + w * log_cond[:, 1]
        p = torch.exp(logd - logd.max())
        p = p / torch.trapezoid(p, grid)
        _, var = _gauss_moments_on_grid(logd, grid)
        far = torch.trapezoid(p * ((grid < -1.0) | (grid > 2.0)), grid)
        out[w] = (var.item(), far.item())
    assert abs(out[1.0][0] - MIX_S[1].item() ** 2) < 1e-6  # w = 1 is the class-conditional itself
    assert 0.55 * out[1.0][0] < out[3.0][0] < 0.65 * out[1.0][0]  # about 40 % narrower
    assert out[3.0][1] < 0.05 * out[1.0][1]  # over 95 % of the far mass removed
