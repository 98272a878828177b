"""Device choice, seeding and the run profile.

The run profile is one of ``smoke`` (CI, seconds), ``standard`` (a laptop CPU, minutes) and
``full`` (one GPU, the paper-grade numbers). It comes from the environment variable
``DGM_PROFILE``; without it, a machine with CUDA runs ``full`` and any other runs ``standard``.
Sizes that depend on the profile are chosen in one visible place::

    profile = env.get_profile()
    hidden = profile.pick(smoke=64, standard=256, full=512)   # a size: model, batch, data
    epochs = profile.steps(smoke=1, standard=8, full=100)     # a count: loop lengths, samples

A *dry run* (``DGM_DRY_RUN=n``, a positive integer) keeps every size of the profile but caps every
count chosen with ``steps`` at ``n``: ``DGM_PROFILE=full DGM_DRY_RUN=2`` builds the full models,
batches and data pipeline and runs two steps of each loop, which finds shape, dtype, device and
memory mistakes at full size on a CPU in minutes. Results reached in a dry run mean nothing;
``profile.dry`` tells a notebook to skip the asserts about them.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

import numpy as np
import torch

PROFILES = ("smoke", "standard", "full")
DRY_RUN_VAR = "DGM_DRY_RUN"


def pick_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the environment variable ``DGM_DEVICE``) forces one, e.g. ``"cpu"``. As for
    the other ``DGM_*`` variables, case and surrounding spaces do not matter and an empty value
    means unset.
    """
    name = "prefer"
    if prefer is None:
        name, prefer = "DGM_DEVICE", os.environ.get("DGM_DEVICE", "").strip().lower() or None
    if prefer is not None:
        if not isinstance(prefer, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", prefer):
            raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:<index>' or 'mps', "
                             f"got {prefer!r}")
        if prefer.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"{name}={prefer!r} but CUDA is not available on this machine")
        if prefer == "mps" and not _mps_available():
            raise ValueError(f"{name}='mps' but MPS is not available on this machine")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (all devices); return a seeded CPU generator.

    Two runs that call this with the same seed and then do the same work draw the same numbers.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Profile:
    """A run profile; ``pick`` chooses the value for this profile among three."""

    name: str
    dry_cap: int | None = None  # a dry run caps every ``steps`` count at this; None: no cap

    def __post_init__(self):
        if self.name not in PROFILES:
            raise ValueError(
                f"profile must be one of {', '.join(PROFILES)}; got {self.name!r}")
        cap = self.dry_cap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"dry_cap must be None or a positive integer, got {cap!r}")

    @property
    def dry(self) -> bool:
        """True in a dry run: sizes as the profile says, counts capped, results meaningless."""
        return self.dry_cap is not None

    def pick(self, *, smoke, standard, full):
        """Return the argument named after this profile (a size: never capped)."""
        return {"smoke": smoke, "standard": standard, "full": full}[self.name]

    def steps(self, *, smoke, standard, full):
        """Like ``pick``, for a count (epochs, steps, samples): capped at ``dry_cap`` in a dry run.

        Integers and ``None`` (no count) only, so a size cannot be capped by mistake.
        """
        value = self.pick(smoke=smoke, standard=standard, full=full)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(
                f"steps({self.name}=...) must be a non-negative integer or None, got {value!r}")
        value = int(value)
        return value if self.dry_cap is None else min(value, self.dry_cap)

    def __str__(self) -> str:
        return self.name if self.dry_cap is None else f"{self.name} (dry run: counts capped at {self.dry_cap})"


def get_profile(name: str | None = None) -> Profile:
    """The run profile: ``name`` if given, else ``$DGM_PROFILE``, else full on CUDA, standard otherwise."""
    if name is None:
        name = os.environ.get("DGM_PROFILE", "").strip().lower() or None
        if name is None:
            name = "full" if torch.cuda.is_available() else "standard"
        elif name not in PROFILES:
            raise ValueError(
                f"DGM_PROFILE must be one of {', '.join(PROFILES)}; got {name!r}")
    return Profile(name, dry_cap=_dry_cap_from_env())


def _dry_cap_from_env() -> int | None:
    """``$DGM_DRY_RUN`` as a cap: unset, empty or 0 means no dry run."""
    raw = os.environ.get(DRY_RUN_VAR, "").strip()
    if raw in ("", "0"):
        return None
    if not raw.isdigit():
        raise ValueError(f"{DRY_RUN_VAR} must be a positive integer (the cap on every loop), got {raw!r}")
    return int(raw)


def describe(device: torch.device | None = None, profile: Profile | None = None) -> str:
    """One line naming torch's version, the device and the profile (for notebook headers)."""
    device = device or pick_device()
    profile = profile or get_profile()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"torch {torch.__version__} | device {where} | profile {profile}"


# ----------------------------------------------------------------------------- mixed precision
AUTOCAST_VAR = "DGM_AUTOCAST"


def _cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX; Arm BF16).

    Read from the Linux CPU flags or, on macOS, from sysctl; anything else counts as no.
    """
    try:
        with open(cpuinfo) as f:
            flags = set(" ".join(line.split(":", 1)[1] for line in f
                                 if line.startswith(("flags", "Features")) and ":" in line).split())
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    import platform
    import subprocess
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            return out == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    return False


def autocast_dtype(device: torch.device | str | None = None) -> torch.dtype | None:
    """The dtype for ``torch.autocast`` where it makes this device faster, else None (float32).

    bfloat16 on a CUDA GPU that supports it and on a CPU with bf16 in hardware (there the
    diffusion U-Net trains about 1.4× and samples about 1.7× faster, measured on an AMD EPYC
    with AVX512-BF16, 2 December 2026); None elsewhere (a CPU without it emulates bfloat16 and
    may be slower; on Apple's MPS we have not measured it). ``$DGM_AUTOCAST`` forces the choice:
    ``bf16`` or ``off``. Use it as
    ``torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)``.
    """
    device = torch.device(device) if device is not None else pick_device()
    raw = os.environ.get(AUTOCAST_VAR, "").strip().lower()
    if raw not in ("", "bf16", "off"):
        raise ValueError(f"{AUTOCAST_VAR} must be 'bf16', 'off' or unset, got {raw!r}")
    if raw == "off" or device.type not in ("cpu", "cuda"):
        return None
    if raw == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if _cpu_has_native_bf16() else None
