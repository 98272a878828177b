"""Autoregressive models of binary data: MADE, masked convolutions, a residual PixelCNN, sampling.

An autoregressive model writes log p_θ(x) = Σ_d log p_θ(x_d | x_<d) (lecture 5, eq. 5.1) and
outputs the D conditionals of one x in a single pass; here every conditional is a Bernoulli
with logit ``model(x)[..., d]``, so the exact negative log-likelihood in nats is the summed binary
cross-entropy of the logits against x (``bernoulli_nll``).

* MADE (Germain, Gregor, Murray & Larochelle 2015, ICML, arXiv:1502.03509): ``made_masks`` builds
  the masks of eq. (5.4) for a given ordering; ``MADE`` is a masked MLP on flat x (B, D).
* PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, ICML, arXiv:1601.06759): ``conv_mask``
  gives the type-A / type-B kernel masks of eq. (5.6); ``MaskedConv2d`` applies one; ``PixelCNN`` is
  a small residual stack on images (B, 1, H, W) in raster order.
* ``sample`` draws x pixel by pixel in a given order (D passes, eq. 5.5) and returns the
  log-probability of what it drew; ``receptive_field`` measures by gradients which input pixels
  an output sees; ``all_binary_patterns`` enumerates {0, 1}^D for exact checks on tiny cases.

The functions marked ``@grading.reference`` (and the classes built on them) are the course's
answers to problem set 05's problems: its check cells compare against them and later cells fall
back on them; the notebook's solution cells never call them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import grading


# ----------------------------------------------------------------------------- validation

def _check_order(order, name: str = "order") -> torch.Tensor:
    """``order`` as a 1-D int64 tensor on the CPU, checked to be a permutation of 0..D-1."""
    if not torch.is_tensor(order):
        order = torch.as_tensor(order)
    if order.ndim != 1 or order.dtype.is_floating_point or order.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor (a permutation of 0..D-1), got "
                         f"dtype {order.dtype} and shape {tuple(order.shape)}")
    order = order.long().cpu()
    if not torch.equal(order.sort().values, torch.arange(len(order))):
        raise ValueError(f"{name} must be a permutation of 0..{len(order) - 1}, got "
                         f"{order.tolist()[:12]}{' ...' if len(order) > 12 else ''}")
    return order


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def degrees_of(order) -> torch.Tensor:
    """Input degrees m(d) in 1..D from an ordering: ``order[i]`` is the coordinate generated i-th."""
    order = _check_order(order)
    degrees = torch.empty_like(order)
    degrees[order] = torch.arange(1, len(order) + 1)
    return degrees


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log p(x) in nats of independent Bernoulli(sigmoid(logits)) pixels, summed over all but
    the first dimension: (B, ...) -> (B,)."""
    if logits.shape != x.shape:
        raise ValueError(f"logits and x must have the same shape, got {tuple(logits.shape)} and "
                         f"{tuple(x.shape)}")
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


# ----------------------------------------------------------------------------- MADE

@grading.reference
def made_masks(order, hidden_sizes: Sequence[int],
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The masks of a MADE with the given ordering and hidden layer widths (eq. 5.4).

    order: permutation (D,) of 0..D-1, ``order[i]`` generated i-th (D >= 2).
    hidden_sizes: widths H_1..H_L (L >= 1). Hidden degrees are drawn uniformly from
    {min degree of the previous layer, ..., D - 1} with ``generator``.
    Returns L + 1 float masks shaped like ``nn.Linear`` weights: (H_1, D), ..., (D, H_L).
    """
    degrees = degrees_of(order)
    D = len(degrees)
    if D < 2:
        raise ValueError(f"order must have at least 2 coordinates, got D = {D}")
    hidden_sizes = list(hidden_sizes)
    if not hidden_sizes:
        raise ValueError("hidden_sizes must list at least one hidden layer width, got []")
    for i, h in enumerate(hidden_sizes):
        _positive_int(h, f"hidden_sizes[{i}]")
    masks, previous = [], degrees
    for h in hidden_sizes:
        low = int(previous.min())
        m = torch.randint(low, D, (h,), generator=generator)  # uniform in {low, ..., D-1}
        masks.append((m[:, None] >= previous[None, :]).float())  # unit k reads j iff m(k) >= m(j)
        previous = m
    masks.append((degrees[:, None] > previous[None, :]).float())  # output d reads k iff d > m(k)
    return masks


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation on flat binary x (B, D).

    ``forward(x)`` -> logits (B, D) of p(x_d = 1 | x_<d) in the given ordering;
    ``nll(x)`` -> exact −log p_θ(x) in nats, (B,).
    """

    def __init__(self, order, hidden_sizes: Sequence[int] = (500,),
                 generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("order", _check_order(order))
        masks = made_masks(self.order, hidden_sizes, generator)
        sizes = [len(self.order), *hidden_sizes, len(self.order)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for i, mask in enumerate(masks):
            self.register_buffer(f"mask{i}", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight * getattr(self, f"mask{i}"), layer.bias)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(self(x), x)


# ----------------------------------------------------------------------------- PixelCNN

@grading.reference
def conv_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """The (k, k) mask of eq. (5.6): 1 above the centre row and left of the centre; type 'B' also
    keeps the centre itself, type 'A' does not."""
    _positive_int(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a centre pixel), got {kernel_size}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:c] = 1  # rows above the centre
    mask[c, :c + (mask_type == "B")] = 1  # the centre row up to (A) or including (B) the centre
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution whose kernel is multiplied by ``conv_mask(kernel_size, mask_type)``
    (one mask for every pair of channels: single-channel images need no channel masking)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", conv_mask(kernel_size, mask_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """A small residual PixelCNN for binary images (B, 1, H, W), raster order.

    A type-A (k_in x k_in) masked convolution, ``n_blocks`` residual blocks
    (ReLU, 3x3 type-B masked conv, ReLU, 1x1 conv, added to the block's input), then a 1x1 head.
    ``forward(x)`` -> logits (B, 1, H, W); ``nll(x)`` -> exact −log p_θ(x) in nats, (B,).
    """

    def __init__(self, channels: int = 32, n_blocks: int = 4, in_kernel: int = 7):
        super().__init__()
        self.input = MaskedConv2d(1, channels, in_kernel, "A")
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), MaskedConv2d(channels, channels, 3, "B"), nn.ReLU(),
                          nn.Conv2d(channels, channels, 1))
            for _ in range(n_blocks))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h)  # a 1x1 conv and a type-B conv never look past the current pixel
        return self.head(h)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(self(x), x)


# ----------------------------------------------------------------------------- sampling

@grading.reference
@torch.no_grad()
def sample(model: nn.Module, n: int, shape: Sequence[int], order=None,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` samples x (n, *shape) pixel by pixel (eq. 5.5) and their log p_θ(x) (n,).

    ``model(x)`` returns logits of the shape of x; ``order`` (default 0..D-1, raster) lists the
    flat coordinates in the order they are drawn: one network pass per coordinate.
    """
    _positive_int(n, "n")
    shape = tuple(shape)
    D = math.prod(shape)
    order = torch.arange(D) if order is None else _check_order(order)
    if len(order) != D:
        raise ValueError(f"order must have prod(shape) = {D} entries, got {len(order)}")
    device = next(model.parameters()).device
    x = torch.zeros(n, D, device=device)
    log_prob = torch.zeros(n, device=device)
    for d in order.tolist():
        logit = model(x.view(n, *shape)).reshape(n, D)[:, d]  # p(x_d = 1 | x_<d) needs x_<d only
        u = torch.rand(n, generator=generator).to(device)
        x[:, d] = (u < torch.sigmoid(logit)).float()
        log_prob -= F.binary_cross_entropy_with_logits(logit, x[:, d], reduction="none")
    return x.view(n, *shape), log_prob


# ----------------------------------------------------------------------------- measuring

def all_binary_patterns(D: int) -> torch.Tensor:
    """Every x in {0, 1}^D as rows of a float tensor (2^D, D), coordinate 0 the most significant."""
    _positive_int(D, "D")
    if D > 20:
        raise ValueError(f"D must be at most 20 (2^D patterns are enumerated), got {D}")
    codes = torch.arange(2 ** D)
    return ((codes[:, None] >> torch.arange(D - 1, -1, -1)) & 1).float()


def receptive_field(model: nn.Module, shape: Sequence[int], pixel: Sequence[int],
                    n_inputs: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """|∂ logit at ``pixel`` / ∂ x| summed over ``n_inputs`` random binary images x (1, H, W):
    an (H, W) map whose non-zero entries are the pixels that output can see."""
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    r, s = pixel
    if not (0 <= r < shape[1] and 0 <= s < shape[2]):
        raise ValueError(f"pixel must lie inside the {shape[1]}x{shape[2]} image, got {pixel}")
    _positive_int(n_inputs, "n_inputs")
    device = next(model.parameters()).device
    x = torch.rand(n_inputs, *shape, generator=generator).lt(0.5).float().to(device)
    x.requires_grad_(True)
    model(x)[:, :, r, s].sum().backward()
    return x.grad.abs().sum((0, 1)).cpu()  # (H, W)


def raster_allowed(shape: Sequence[int], pixel: Sequence[int]) -> torch.Tensor:
    """(H, W) bool map of the pixels strictly before ``pixel`` in raster order (what the chain
    rule lets the output at ``pixel`` depend on)."""
    H, W = shape[-2:]
    r, s = pixel
    index = torch.arange(H * W).view(H, W)
    return index < r * W + s
