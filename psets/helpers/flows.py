"""Normalising flows: RealNVP's affine coupling, Glow's actnorm and invertible 1x1 convolution (plain
and LU), squeeze, dequantisation and the logit transform, a small multi-scale flow, bits per
dimension, and 2-D data sets whose densities are known exactly (a ring of Gaussians, two moons).

Conventions (lecture 6): a flow maps data to latent, ``f : x -> z``; every layer's ``forward``
returns ``(y, logdet)`` with ``logdet`` of shape (B,) equal to log|det dy/dx| per example, and
``inverse(y)`` returns ``x``. The base density is N(0, I).

The functions marked ``@grading.reference`` are the course's answers to problem set 06; the layers
call them through an :class:`Ops` record, so the notebook can build the same layers on the
student's own functions (``Ops(coupling_forward=my_coupling_forward, ...)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable

import torch
from torch import nn

from . import grading

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- validation

def _tensor(name: str, x, min_dim: int = 1) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}")
    return x


def _per_example_sum(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).sum(1)


# ----------------------------------------------------------------------------- problem 1: coupling

@grading.reference
def coupling_forward(x: torch.Tensor, mask: torch.Tensor, net: Callable):
    """RealNVP affine coupling, data -> latent (lecture 6, eq. 6.4).

    x: (B, D) or (B, C, H, W); mask: broadcastable to x, 1 on the coordinates kept (x_1) and 0 on
    those transformed (x_2); net(x * mask) -> (s, t), each shaped like x.
    Returns (y, logdet): y = x_1 kept, x_2 * exp(s) + t elsewhere; logdet (B,) = sum of s over x_2.
    """
    _tensor("x", x, 2)
    s, t = net(x * mask)
    s, t = s * (1 - mask), t * (1 - mask)  # only x_2 is scaled and shifted
    y = x * mask + (1 - mask) * (x * torch.exp(s) + t)
    return y, _per_example_sum(s)


@grading.reference
def coupling_inverse(y: torch.Tensor, mask: torch.Tensor, net: Callable) -> torch.Tensor:
    """Inverse of :func:`coupling_forward` (eq. 6.5): x_2 = (y_2 - t(y_1)) * exp(-s(y_1))."""
    _tensor("y", y, 2)
    s, t = net(y * mask)  # y_1 = x_1, so the networks see the same input as in the forward pass
    s, t = s * (1 - mask), t * (1 - mask)
    return y * mask + (1 - mask) * (y - t) * torch.exp(-s)


@grading.reference
def flow_forward(layers, x: torch.Tensor):
    """Run ``layers`` in order, data -> latent; return (z, logdet) with the log-dets summed (eq. 6.2)."""
    logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for layer in layers:
        x, ld = layer(x)
        logdet = logdet + ld
    return x, logdet


@grading.reference
def flow_inverse(layers, z: torch.Tensor) -> torch.Tensor:
    """Invert ``layers`` (last layer first), latent -> data."""
    for layer in reversed(list(layers)):
        z = layer.inverse(z)
    return z


# ----------------------------------------------------------------------------- problem 2: Glow

def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector (C,) shaped to broadcast over x (B, C) or (B, C, H, W)."""
    return v.reshape(1, -1, *([1] * (x.ndim - 2)))


def _positions(x: torch.Tensor) -> int:
    """Number of positions sharing one channel's parameters: H * W (1 for flat vectors)."""
    return x[0, 0].numel()


@grading.reference
def actnorm_init(x: torch.Tensor):
    """Data-dependent initialisation of actnorm (Glow): (log_a, b), each (C,), such that
    a * x + b has zero mean and unit variance per channel over the batch and positions."""
    _tensor("x", x, 2)
    per_channel = x.transpose(0, 1).flatten(1)  # (C, B * H * W)
    mean, std = per_channel.mean(1), per_channel.std(1, unbiased=False)
    log_a = -torch.log(std + 1e-6)
    return log_a, -mean * torch.exp(log_a)


@grading.reference
def actnorm_forward(x: torch.Tensor, log_a: torch.Tensor, b: torch.Tensor):
    """y = a * x + b per channel; logdet (B,) = H * W * sum_c log|a_c| (eq. 6.6)."""
    _tensor("x", x, 2)
    y = x * _channel_view(torch.exp(log_a), x) + _channel_view(b, x)
    logdet = _positions(x) * log_a.sum()
    return y, logdet.expand(x.shape[0])


@grading.reference
def actnorm_inverse(y: torch.Tensor, log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _tensor("y", y, 2)
    return (y - _channel_view(b, y)) * _channel_view(torch.exp(-log_a), y)


@grading.reference
def lu_weight(P: torch.Tensor, L: torch.Tensor, U: torch.Tensor, log_s: torch.Tensor,
              sign_s: torch.Tensor):
    """Glow's LU parametrisation (eq. 6.8): W = P (strict_lower(L) + I) (strict_upper(U) + diag(sign_s
    exp(log_s))) and log|det W| = sum(log_s), in O(C) instead of O(C^3). Returns (W, logabsdet)."""
    eye = torch.eye(L.shape[0], dtype=L.dtype, device=L.device)
    lower = torch.tril(L, -1) + eye
    upper = torch.triu(U, 1) + torch.diag(sign_s * torch.exp(log_s))
    return P @ lower @ upper, log_s.sum()


@grading.reference
def invconv_forward(x: torch.Tensor, W: torch.Tensor, logabsdet: torch.Tensor):
    """1x1 convolution y[:, :, i, j] = W x[:, :, i, j]; logdet (B,) = H * W * log|det W| (eq. 6.7)."""
    _tensor("x", x, 4)
    y = torch.einsum("dc,bchw->bdhw", W, x)
    return y, (_positions(x) * logabsdet).expand(x.shape[0])


@grading.reference
def invconv_inverse(y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    _tensor("y", y, 4)
    return torch.einsum("dc,bchw->bdhw", torch.linalg.inv(W), y)


# ----------------------------------------------------------------------------- problem 3: data

N_LEVELS = 256  # 8-bit pixels


@grading.reference
def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation: pixels x = k / 255 (k in 0..255) -> (k + u) / 256, u ~ U[0, 1)."""
    _tensor("x", x, 1)
    k = torch.round(x * (N_LEVELS - 1))
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (k + u) / N_LEVELS


@grading.reference
def logit_transform(x: torch.Tensor, alpha: float = 0.05):
    """v = alpha + (1 - 2 alpha) x, y = log v - log(1 - v), for x in [0, 1]; logdet (B,) summed
    over pixels of log(1 - 2 alpha) - log v - log(1 - v). Returns (y, logdet)."""
    _tensor("x", x, 2)
    v = alpha + (1 - 2 * alpha) * x
    y = torch.log(v) - torch.log1p(-v)
    logdet = _per_example_sum(math.log(1 - 2 * alpha) - torch.log(v) - torch.log1p(-v))
    return y, logdet


def logit_inverse(y: torch.Tensor, alpha: float = 0.05) -> torch.Tensor:
    """Inverse of :func:`logit_transform`: x = (sigmoid(y) - alpha) / (1 - 2 alpha)."""
    return (torch.sigmoid(y) - alpha) / (1 - 2 * alpha)


@grading.reference
def bits_per_dim(flow, x: torch.Tensor, alpha: float = 0.05,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Bits per dimension of 8-bit images x = k / 255 (B, C, H, W) under ``flow`` (a model of the
    logit-space image with ``flow.log_prob``), one dequantisation draw per image: (B,).

    -log2 P(k) <= E_u[-log p(x~)] / ln 2 + D log2 256 with x~ = (k + u) / 256 and
    log p(x~) = log p_flow(logit(x~)) + log|d logit / d x~|.
    """
    x_cont = dequantize(x, generator)
    y, logdet = logit_transform(x_cont, alpha)
    log_p = flow.log_prob(y) + logdet  # density of x~ on [0, 1)^D, in nats
    D = x[0].numel()
    return -(log_p - D * math.log(N_LEVELS)) / (D * math.log(2))


# ----------------------------------------------------------------------------- layers

@dataclass(frozen=True)
class Ops:
    """The functions the layers call. Defaults: the course's references; the notebook passes the
    student's functions (or ``grading.use`` of them) to build the same layers on them."""
    coupling_forward: Callable = coupling_forward
    coupling_inverse: Callable = coupling_inverse
    flow_forward: Callable = flow_forward
    flow_inverse: Callable = flow_inverse
    actnorm_init: Callable = actnorm_init
    actnorm_forward: Callable = actnorm_forward
    actnorm_inverse: Callable = actnorm_inverse
    lu_weight: Callable = lu_weight
    invconv_forward: Callable = invconv_forward
    invconv_inverse: Callable = invconv_inverse

    def __post_init__(self):
        for f in fields(self):
            if not callable(getattr(self, f.name)):
                raise TypeError(f"Ops.{f.name} must be callable, got {getattr(self, f.name)!r}")


REFERENCE_OPS = Ops()


class _Layer(nn.Module):
    def __init__(self, ops: Ops | None):
        super().__init__()
        if ops is not None and not isinstance(ops, Ops):
            raise TypeError(f"ops must be a flows.Ops or None, got {type(ops).__name__}")
        self.ops = ops or REFERENCE_OPS


class ScaleShift(nn.Module):
    """Wraps a network whose output has twice the channels of x into net(x) -> (s, t), with
    s = scale * tanh(raw_s): bounded log-scales keep early training stable (a per-channel
    ``scale`` that starts at 1 restores the range)."""

    def __init__(self, body: nn.Module, channels: int):
        super().__init__()
        self.body = body
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        raw_s, t = self.body(x).chunk(2, dim=1)
        return _channel_view(self.scale, x) * torch.tanh(raw_s), t


def mlp_net(dim: int, hidden: int = 64, depth: int = 2) -> ScaleShift:
    """s, t networks for a coupling on (B, dim): an MLP dim -> hidden (x depth) -> 2 dim, whose
    last layer starts at zero so the coupling starts as the identity."""
    sizes = [dim] + [hidden] * depth
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    last = nn.Linear(hidden, 2 * dim)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return ScaleShift(nn.Sequential(*layers, last), dim)


def conv_net(channels: int, hidden: int = 32) -> ScaleShift:
    """s, t networks for a coupling on (B, C, H, W): 3x3 conv, 1x1 conv, zero-initialised 3x3 conv."""
    last = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    body = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last)
    return ScaleShift(body, channels)


class AffineCoupling(_Layer):
    """An affine coupling layer with a fixed mask (1 = kept) and a network net(x * mask) -> (s, t)."""

    def __init__(self, mask: torch.Tensor, net: nn.Module, ops: Ops | None = None):
        super().__init__(ops)
        _tensor("mask", mask, 1)
        if not bool(((mask == 0) | (mask == 1)).all()) or mask.min() == mask.max():
            raise ValueError("mask must hold both 0s and 1s and nothing else, got values "
                             f"{torch.unique(mask).tolist()}")
        self.register_buffer("mask", mask.float())
        self.net = net

    def forward(self, x):
        return self.ops.coupling_forward(x, self.mask.to(x.dtype), self.net)

    def inverse(self, y):
        return self.ops.coupling_inverse(y, self.mask.to(y.dtype), self.net)


class ActNorm(_Layer):
    """Actnorm with data-dependent initialisation on the first batch it sees in training mode."""

    def __init__(self, channels: int, ops: Ops | None = None):
        super().__init__(ops)
        self.log_a = nn.Parameter(torch.zeros(channels))
        self.b = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x):
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                log_a, b = self.ops.actnorm_init(x.detach())
                self.log_a.copy_(log_a)
                self.b.copy_(b)
                self.initialized.fill_(True)
        return self.ops.actnorm_forward(x, self.log_a, self.b)

    def inverse(self, y):
        return self.ops.actnorm_inverse(y, self.log_a, self.b)


def random_rotation(channels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random orthogonal C x C matrix (QR of a Gaussian matrix, signs fixed), Glow's initial W."""
    q, r = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


class InvConv1x1(_Layer):
    """Glow's invertible 1x1 convolution, plain (W learned, log|det W| by slogdet, O(C^3)) or with
    the LU parametrisation (P fixed; L, U, log_s learned; log|det W| = sum log_s, O(C))."""

    def __init__(self, channels: int, lu: bool = True, ops: Ops | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(ops)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        W = random_rotation(channels, generator)
        self.lu = lu
        if lu:
            P, L, U = torch.linalg.lu(W)
            s = torch.diagonal(U)
            self.register_buffer("P", P)
            self.register_buffer("sign_s", torch.sign(s))
            self.L = nn.Parameter(L)
            self.U = nn.Parameter(U)
            self.log_s = nn.Parameter(torch.log(s.abs()))
        else:
            self.W = nn.Parameter(W)

    def weight(self):
        """(W, log|det W|)."""
        if self.lu:
            return self.ops.lu_weight(self.P, self.L, self.U, self.log_s, self.sign_s)
        return self.W, torch.linalg.slogdet(self.W)[1]

    def forward(self, x):
        W, logabsdet = self.weight()
        return self.ops.invconv_forward(x, W, logabsdet)

    def inverse(self, y):
        return self.ops.invconv_inverse(y, self.weight()[0])


# ----------------------------------------------------------------------------- squeeze

def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels (a permutation
    of the coordinates, so log|det| = 0)."""
    _tensor("x", x, 4)
    B, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"squeeze needs even height and width, got shape {tuple(x.shape)}")
    x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    _tensor("x", x, 4)
    B, C4, H, W = x.shape
    if C4 % 4:
        raise ValueError(f"unsqueeze needs channels divisible by 4, got shape {tuple(x.shape)}")
    x = x.reshape(B, C4 // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(B, C4 // 4, 2 * H, 2 * W)


# ----------------------------------------------------------------------------- flows

def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the batch dimension: (B,)."""
    return -0.5 * _per_example_sum(z ** 2 + LOG_2PI)


class Flow(nn.Module):
    """A stack of layers over a N(0, I) base: forward (x -> z, logdet), inverse, log_prob, sample."""

    def __init__(self, layers, event_shape: tuple[int, ...], ops: Ops | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.event_shape = tuple(event_shape)
        self.ops = ops or REFERENCE_OPS

    def forward(self, x):
        return self.ops.flow_forward(self.layers, x)

    def inverse(self, z):
        return self.ops.flow_inverse(self.layers, z)

    def log_prob(self, x):
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet  # eq. 6.2

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None):
        """x = f^{-1}(z) with z ~ N(0, temperature^2 I)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        device = next(self.parameters()).device
        z = temperature * torch.randn((n, *self.event_shape), generator=generator).to(device)
        return self.inverse(z)


def alternating_masks(dim: int, n: int) -> list[torch.Tensor]:
    """n masks over dim coordinates: even coordinates kept, then odd ones, alternately."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    even = (torch.arange(dim) % 2 == 0).float()
    return [even if i % 2 == 0 else 1 - even for i in range(n)]


def coupling_flow(dim: int = 2, n_layers: int = 8, hidden: int = 64, ops: Ops | None = None) -> Flow:
    """RealNVP on R^dim: n_layers affine couplings with alternating masks and MLP networks."""
    layers = [AffineCoupling(m, mlp_net(dim, hidden), ops) for m in alternating_masks(dim, n_layers)]
    return Flow(layers, (dim,), ops)


def channel_mask(channels: int) -> torch.Tensor:
    """(1, C, 1, 1) mask keeping the first half of the channels."""
    if channels < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got {channels}")
    return (torch.arange(channels) < channels // 2).float().reshape(1, -1, 1, 1)


def glow_step(channels: int, hidden: int, ops: Ops | None = None, lu: bool = True,
              generator: torch.Generator | None = None) -> list[nn.Module]:
    """One step of flow (Glow): actnorm, invertible 1x1 convolution, affine coupling."""
    return [ActNorm(channels, ops), InvConv1x1(channels, lu, ops, generator),
            AffineCoupling(channel_mask(channels), conv_net(channels, hidden), ops)]


class MultiScaleFlow(Flow):
    """RealNVP's multi-scale architecture with Glow steps. Per scale: squeeze, ``steps`` steps of
    flow, and (except at the last scale) half the channels factored out to the base density.
    forward returns z flattened to (B, C * H * W) and the summed logdet."""

    def __init__(self, shape=(1, 28, 28), n_scales: int = 2, steps: int = 4, hidden: int = 32,
                 ops: Ops | None = None, lu: bool = True, seed: int = 0):
        C, H, W = shape
        if H % 2 ** n_scales or W % 2 ** n_scales:
            raise ValueError(f"shape {tuple(shape)}: height and width must be divisible by "
                             f"2**n_scales = {2 ** n_scales}")
        gen = torch.Generator().manual_seed(seed)
        scales, shapes = [], []
        for i in range(n_scales):
            C, H, W = 4 * C, H // 2, W // 2  # after the squeeze
            scales.append(nn.ModuleList(
                [layer for _ in range(steps) for layer in glow_step(C, hidden, ops, lu, gen)]))
            shapes.append((C, H, W))
            if i < n_scales - 1:
                C = C // 2  # half factored out
        super().__init__([], (shape[0] * shape[1] * shape[2],), ops)
        self.scales = nn.ModuleList(scales)
        self.shapes = shapes
        self.image_shape = tuple(shape)

    def forward(self, x):
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        out, h = [], x
        for i, layers in enumerate(self.scales):
            h, ld = self.ops.flow_forward(layers, squeeze(h))
            logdet = logdet + ld
            if i < len(self.scales) - 1:
                h, z_i = h.chunk(2, dim=1)
                out.append(z_i.flatten(1))
        out.append(h.flatten(1))
        return torch.cat(out, 1), logdet

    def inverse(self, z):
        z = z.flatten(1)
        sizes = [C * H * W // 2 for C, H, W in self.shapes[:-1]] + [math.prod(self.shapes[-1])]
        parts = list(z.split(sizes, 1))
        C, H, W = self.shapes[-1]
        h = parts[-1].reshape(-1, C, H, W)
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                C, H, W = self.shapes[i]
                h = torch.cat([h, parts[i].reshape(-1, C // 2, H, W)], 1)
            h = unsqueeze(self.ops.flow_inverse(self.scales[i], h))
        return h


def with_ops(ops: Ops | None = None, **changes) -> Ops:
    """``ops`` (default: the references) with some functions replaced."""
    return replace(ops or REFERENCE_OPS, **changes)


# ----------------------------------------------------------------------------- 2-D data

RING_MODES, RING_RADIUS, RING_STD = 8, 2.0, 0.25
MOONS_STD = 0.15


def _n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def _points(name: str, x) -> torch.Tensor:
    _tensor(name, x, 2)
    if x.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {tuple(x.shape)}")
    return x


def ring_centres() -> torch.Tensor:
    angles = 2 * math.pi * torch.arange(RING_MODES, dtype=torch.float64) / RING_MODES
    return RING_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], 1)


def sample_ring(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points from an equal mixture of 8 isotropic Gaussians (std 0.25) on a circle of radius 2."""
    k = torch.randint(RING_MODES, (_n(n),), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (ring_centres()[k] + RING_STD * noise).float()


def ring_log_density(x: torch.Tensor) -> torch.Tensor:
    """Exact log density of :func:`sample_ring`: log (1/8) sum_k N(x; m_k, 0.25^2 I), (N,)."""
    x = _points("x", x).double()
    d2 = ((x[:, None, :] - ring_centres().to(x.device)) ** 2).sum(-1)  # (N, 8)
    log_n = -0.5 * d2 / RING_STD ** 2 - math.log(2 * math.pi * RING_STD ** 2)
    return torch.logsumexp(log_n, 1) - math.log(RING_MODES)


def _moon_arcs(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two noiseless half circles at angle theta in [0, pi], centred and scaled by 2."""
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], -1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], -1)
    shift = torch.tensor([0.5, 0.25], dtype=theta.dtype, device=theta.device)
    return 2 * (upper - shift), 2 * (lower - shift)


def sample_moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two moons: each point picks a half circle (prob. 1/2 each), an angle theta ~ U[0, pi], and
    isotropic Gaussian noise of std 0.15 (after the arcs are scaled by 2)."""
    which = torch.rand(_n(n), generator=generator) < 0.5
    theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    upper, lower = _moon_arcs(theta)
    base = torch.where(which[:, None], upper, lower)
    return (base + MOONS_STD * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def moons_log_density(x: torch.Tensor, n_quad: int = 512) -> torch.Tensor:
    """Log density of :func:`sample_moons`, (N,): p(x) = 1/2 sum_arcs (1/pi) int_0^pi
    N(x; arc(theta), 0.15^2 I) d theta, the integral by the midpoint rule with n_quad nodes (the
    integrand is smooth: 512 nodes put neighbours 0.012 apart on arcs blurred by noise of std 0.15)."""
    x = _points("x", x).double()
    theta = (torch.arange(n_quad, dtype=torch.float64, device=x.device) + 0.5) * math.pi / n_quad
    arcs = torch.cat(_moon_arcs(theta), 0)  # (2 n_quad, 2)
    out = []
    for chunk in x.split(4096):
        d2 = ((chunk[:, None, :] - arcs) ** 2).sum(-1)
        log_n = -0.5 * d2 / MOONS_STD ** 2 - math.log(2 * math.pi * MOONS_STD ** 2)
        out.append(torch.logsumexp(log_n, 1) - math.log(2 * n_quad))  # mean over both arcs' nodes
    return torch.cat(out)


TOY_DATA = {"ring": (sample_ring, ring_log_density), "moons": (sample_moons, moons_log_density)}


def entropy_mc(name: str, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Differential entropy H = -E[log p(x)] of a TOY_DATA set by Monte Carlo with its exact
    density: (estimate, standard error), in nats."""
    if name not in TOY_DATA:
        raise ValueError(f"name must be one of {sorted(TOY_DATA)}, got {name!r}")
    sample, log_density = TOY_DATA[name]
    lp = log_density(sample(_n(n), torch.Generator().manual_seed(seed)))
    return -lp.mean().item(), lp.std().item() / math.sqrt(n)


def grid(lim: float = 5.0, n: int = 300) -> tuple[torch.Tensor, float]:
    """The midpoints of an n x n grid over [-lim, lim]^2, (n * n, 2) float64 (row i * n + j has
    x = c_i, y = c_j), and the cell side h."""
    if not lim > 0 or isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"grid needs lim > 0 and an integer n >= 2, got lim={lim!r}, n={n!r}")
    h = 2 * lim / n
    c = -lim + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.cartesian_prod(c, c), h


@torch.no_grad()
def grid_mass(log_prob: Callable, lim: float = 5.0, n: int = 300) -> float:
    """Riemann sum of exp(log_prob) over [-lim, lim]^2 with an n x n midpoint grid."""
    pts, h = grid(lim, n)
    return float(torch.exp(log_prob(pts).double()).sum() * h * h)


# ----------------------------------------------------------------------------- checking tools

@torch.no_grad()
def perturb_(module: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Overwrite every parameter of ``module`` with std * N(0, 1) draws (in place), so that a layer
    that starts as the identity (zero-initialised last layers) can be checked away from it."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.copy_(std * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p))
    return module


def log_abs_det_jacobian(fn: Callable, x: torch.Tensor) -> torch.Tensor:
    """log|det d fn(x)/dx| for ONE example x of shape (1, ...), from the full Jacobian computed by
    autograd (O(D^3): for small D only). An independent route to a layer's log-determinant."""
    _tensor("x", x, 2)
    if x.shape[0] != 1:
        raise ValueError(f"x must hold one example (shape (1, ...)), got shape {tuple(x.shape)}")
    J = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(x.shape)).flatten(), x.flatten())
    return torch.linalg.slogdet(J)[1]


class LogitNormal:
    """A per-pixel Gaussian N(mean, std^2) on the logit-space image: a model simple enough that the
    probability of each 8-bit value k has a closed form, P(k) = Phi((g((k + 1) / 256) - mean) / std)
    - Phi((g(k / 256) - mean) / std) with g the (increasing) logit transform, so its exact discrete
    bits per dimension can be compared with the dequantised estimate of :func:`bits_per_dim`."""

    def __init__(self, mean: torch.Tensor, std: float | torch.Tensor = 1.0, alpha: float = 0.05):
        self.normal = torch.distributions.Normal(mean, std)
        self.alpha = alpha

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        return _per_example_sum(self.normal.log_prob(y))

    def exact_bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """-log2 P(k) / D for images x = k / 255 (B, C, H, W): (B,)."""
        k = torch.round(x * (N_LEVELS - 1))
        standardise = lambda v: (logit_transform(v, self.alpha)[0] - self.normal.loc) / self.normal.scale  # noqa: E731
        lo, hi = standardise(k / N_LEVELS), standardise((k + 1) / N_LEVELS)
        # log(Phi(hi) - Phi(lo)) without underflow far in either tail: by symmetry, work in the
        # lower tail, log Phi(b) + log(1 - Phi(a) / Phi(b)) with a < b both <= the bin's far side
        upper = lo > 0
        a, b = torch.where(upper, -hi, lo), torch.where(upper, -lo, hi)
        log_b = torch.special.log_ndtr(b)
        log_mass = log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b))
        return -_per_example_sum(log_mass) / (x[0].numel() * math.log(2))
