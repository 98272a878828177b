"""Network building blocks shared by the problem sets."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU,
        final_activation: nn.Module | None = None) -> nn.Sequential:
    """A multilayer perceptron with layer widths ``sizes`` (input first, output last).

    ``activation`` follows every hidden layer; ``final_activation`` (an instance) the last.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                 for s in sizes):
        raise ValueError(f"sizes must list at least two positive integers, got {sizes!r}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of positions or time steps t (B,) → (B, dim).

    Frequencies form a geometric sequence from 1 to 1/max_period (Vaswani et al. 2017,
    arXiv:1706.03762); the first half of the features are sines, the second half cosines.
    """
    if not torch.is_tensor(t) or t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor (B,), got "
                         f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even integer, got {dim!r}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def fourier_features(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Positional encoding of coordinates x (B, D) → (B, D · (1 + 2 · n_freqs)).

    Keeps x and appends sin(2^k π x) and cos(2^k π x) for k = 0..n_freqs−1, so that a small
    MLP can represent functions that vary quickly in x (Tancik et al. 2020, arXiv:2006.10739;
    Mildenhall et al. 2020, arXiv:2003.08934).
    """
    if not torch.is_tensor(x) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D tensor (B, D), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if isinstance(n_freqs, bool) or not isinstance(n_freqs, int) or n_freqs < 0:
        raise ValueError(f"n_freqs must be a non-negative integer, got {n_freqs!r}")
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)  # (F,)
    angles = (x[:, :, None] * freqs).flatten(1)  # (B, D·F)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1)


# ----------------------------------------------------------------------------- U-Net
# A compact DDPM-style U-Net, by default for 28 × 28 images (Ho et al. 2020, arXiv:2006.11239,
# appendix B; layout after Nichol & Dhariwal 2021, arXiv:2102.09672): residual blocks that read a
# time embedding, a down path 28 → 14 → 7 and an up path back, joined by skip connections, and
# self-attention at the lowest resolution. ``image_size``, ``in_channels`` and
# ``attention_levels`` give the larger nets of the diffusion trainer (CIFAR-10: 32 → 16 → 8 → 4
# with attention at 16 × 16, as in Ho et al.'s CIFAR-10 model); the defaults are the notebooks' net. With ``num_classes`` set, a learned class embedding
# is added to the time embedding (index ``num_classes`` is the "no class" token used by
# classifier-free guidance, Ho & Salimans 2022, arXiv:2207.12598).

@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1                        # image channels (MNIST: 1)
    base_channels: int = 32                     # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # per resolution 28, 14, 7: channels = base · mult
    num_res_blocks: int = 1                     # residual blocks per resolution (down path)
    attention: bool = True                      # self-attention at the lowest resolution
    num_heads: int = 4                          # heads of that attention
    time_dim: int | None = None                 # width of the time embedding (None: 4 · base)
    dropout: float = 0.0                        # inside residual blocks (0.1 in Ho et al.)
    groups: int = 8                             # GroupNorm groups; must divide every width
    num_classes: int | None = None              # class-conditional if set (plus one null class)
    image_size: int = 28                        # side of the (square) images; bounds the levels
    attention_levels: tuple[int, ...] = ()      # levels (0 = full resolution) whose blocks also
                                                # attend, besides the lowest (``attention``)
    scale_shift: bool = False                   # the embedding scales and shifts the second
                                                # GroupNorm (AdaGN, Dhariwal & Nichol 2021, §3)
                                                # instead of only shifting the features

    def __post_init__(self):
        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")

        for name in ("in_channels", "base_channels", "num_res_blocks", "num_heads", "groups",
                     "image_size"):
            positive_int(name, getattr(self, name))
        mults = self.channel_mults
        if not isinstance(mults, tuple) or not mults or not all(
                isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in mults):
            raise ValueError(f"UNetConfig.channel_mults must be a non-empty tuple of positive "
                             f"integers, got {mults!r}")
        sides = [self.image_size]                # each level halves the side while it is even
        while sides[-1] % 2 == 0:
            sides.append(sides[-1] // 2)
        if len(mults) > len(sides):
            size = self.image_size
            raise ValueError(f"UNetConfig.channel_mults may have at most {len(sides)} entries for "
                             f"{size} × {size} images ({' → '.join(map(str, sides))}), got "
                             f"{len(mults)}: {mults!r}")
        for m in mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"UNetConfig.groups={self.groups} must divide every width "
                                 f"base_channels · mult, got {self.base_channels} · {m}")
        lowest = self.base_channels * mults[-1]
        if self.attention and lowest % self.num_heads:
            raise ValueError(f"UNetConfig.num_heads={self.num_heads} must divide the lowest "
                             f"resolution's width {lowest}")
        levels = self.attention_levels
        if not isinstance(levels, tuple) or len(set(levels)) != len(levels) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(mults)
                for i in levels):
            raise ValueError(f"UNetConfig.attention_levels must be a tuple of distinct levels in "
                             f"0..{len(mults) - 1} (one per entry of channel_mults), got {levels!r}")
        for i in levels:
            if (self.base_channels * mults[i]) % self.num_heads:
                raise ValueError(f"UNetConfig.num_heads={self.num_heads} must divide the width "
                                 f"{self.base_channels * mults[i]} of attention level {i}")
        if self.time_dim is not None:
            positive_int("time_dim", self.time_dim)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.num_classes is not None:
            positive_int("num_classes", self.num_classes)
        if not isinstance(self.scale_shift, bool):
            raise ValueError(f"UNetConfig.scale_shift must be True or False, got "
                             f"{self.scale_shift!r}")


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, residual; between the two the embedding shifts the features
    per channel, or with ``scale_shift`` scales and shifts the second GroupNorm's output:
    (1 + s) · GroupNorm(h) + b (AdaGN, Dhariwal & Nichol 2021, arXiv:2105.05233, §3)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float,
                 scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))              # (B, C_out, H, W)
        e = self.emb(F.silu(emb))[:, :, None, None]        # (B, C_out or 2 · C_out, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H · W positions of a feature map, residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)          # each (B, heads, H·W, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)        # softmax(q kᵀ / √d) v
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.out(h)


class AttentionResBlock(ResBlock):
    """A ResBlock followed by self-attention (the blocks of ``UNetConfig.attention_levels``)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float,
                 heads: int, scale_shift: bool = False):
        super().__init__(c_in, c_out, emb_dim, groups, dropout, scale_shift)
        self.attn = SelfAttention(c_out, heads, groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(super().forward(x, emb))


class UNet(nn.Module):
    """ε_θ(x_t, t[, y]): predicts the noise in x_t (B, C, H, W) at integer steps t (B,).

    y (B,) holds class labels in 0..num_classes−1, or num_classes for "no class"; it is only
    accepted when the config sets ``num_classes`` (y=None then means "no class" for all).
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        cfg = self.config = config or UNetConfig()
        C, G = cfg.base_channels, cfg.groups
        emb_dim = cfg.time_dim or 4 * C
        self.time_mlp = nn.Sequential(nn.Linear(C, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = (nn.Embedding(cfg.num_classes + 1, emb_dim)
                          if cfg.num_classes is not None else None)
        plain = functools.partial(ResBlock, emb_dim=emb_dim, groups=G, dropout=cfg.dropout,
                                  scale_shift=cfg.scale_shift)
        attending = functools.partial(AttentionResBlock, emb_dim=emb_dim, groups=G,
                                      dropout=cfg.dropout, heads=cfg.num_heads,
                                      scale_shift=cfg.scale_shift)

        self.conv_in = nn.Conv2d(cfg.in_channels, C, 3, padding=1)
        widths = [C * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()      # ResBlocks and Downsample convs, in order
        skips, ch = [C], C               # channels of each tensor kept for the up path
        for level, w in enumerate(widths):
            block = attending if level in cfg.attention_levels else plain
            for _ in range(cfg.num_res_blocks):
                self.down.append(block(ch, w))
                ch = w
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halve H and W
                skips.append(ch)
        self.mid1 = plain(ch, ch)
        self.mid_attn = SelfAttention(ch, cfg.num_heads, G) if cfg.attention else nn.Identity()
        self.mid2 = plain(ch, ch)
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            block = attending if level in cfg.attention_levels else plain
            for _ in range(cfg.num_res_blocks + 1):  # one more: also eats the level's first skip
                self.up.append(block(ch + skips.pop(), w))
                ch = w
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
        self.norm_out = nn.GroupNorm(G, ch)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start by predicting ε = 0
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        cfg = self.config
        k = 2 ** max(len(cfg.channel_mults) - 1, 2)  # 4 for the default three levels, as before
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W) with H and W "
                             f"divisible by {k}, got {tuple(x.shape)}")
        if not torch.is_tensor(t) or t.shape != (x.shape[0],):
            raise ValueError(f"t must be a tensor of shape ({x.shape[0]},) (one step per image), "
                             f"got {tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        emb = self.time_mlp(sinusoidal_embedding(t, cfg.base_channels))  # (B, E)
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, cfg.num_classes, dtype=torch.long)  # the null class
            elif (not torch.is_tensor(y) or y.shape != t.shape or y.is_floating_point()
                  or (len(y) and (y.min() < 0 or y.max() > cfg.num_classes))):
                raise ValueError(f"y must be an integer tensor of shape ({len(t)},) with labels in "
                                 f"0..{cfg.num_classes} ({cfg.num_classes} = no class), got "
                                 f"{_describe(y)}")
            emb = emb + self.class_emb(y)                                 # (B, E)
        elif y is not None:
            raise ValueError("y was given but UNetConfig.num_classes is None (unconditional net)")

        h = self.conv_in(x)                                               # (B, C, H, W)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)                                                  # down to the lowest side
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)              # (B, C·m_last, 7, 7) at 28
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)           # skip joins channels
            else:
                h = layer(h)                                              # double H and W
        return self.conv_out(F.silu(self.norm_out(h)))                    # (B, C_in, H, W)


def _describe(y) -> str:
    if not torch.is_tensor(y):
        return type(y).__name__
    values = f", values in [{y.min().item()}, {y.max().item()}]" if y.numel() else ""
    return f"shape {tuple(y.shape)}, dtype {y.dtype}{values}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
