"""One configuration with every hyper-parameter of a run, its defaults per profile and mode.

Precedence, lowest first: the dataclass defaults → the defaults of the run profile and mode
(``defaults``) → a YAML file (``--config``) → the config saved in the run folder (on resume) →
command-line flags. The run folder keeps the resolved config as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from helpers import env
from helpers.train import atomic_write

DATASETS = ("mnist", "cifar10")
MODES = ("train", "overfit", "quicktest")
SCHEDULES = ("linear", "cosine")
# Fields that fix the network's shape: a resumed run may not change them.
ARCHITECTURE = ("dataset", "image_size", "base_channels", "channel_mults", "num_res_blocks",
                "attention", "attention_levels", "num_heads", "schedule", "T")


@dataclass
class TrainConfig:
    # run
    mode: str = "train"                 # train | overfit | quicktest (chose the defaults)
    name: str = ""                      # run folder under runs_dir ("": <dataset>-<mode>)
    runs_dir: str = "runs"              # where run folders live
    seed: int = 0
    # data
    dataset: str = "mnist"              # mnist | cifar10
    image_size: int = 0                 # 0: native side (28, 32); else upscaled to this side
    flip: typing.Optional[bool] = None  # random horizontal flips (None: CIFAR-10 only)
    data_source: str = ""               # MNIST: auto | download | offline ("": $DGM_DATA)
    per_class: int = 0                  # keep the first N training images per class (0: all)
    # model: ε_θ(x_t, t, c), a helpers.nets.UNet
    base_channels: int = 32
    channel_mults: tuple = (1, 2, 2)    # one entry per resolution level
    num_res_blocks: int = 1
    attention: bool = True              # self-attention at the lowest resolution
    attention_levels: tuple = ()        # and in the blocks of these levels (0 = full size)
    num_heads: int = 4
    dropout: float = 0.0
    # diffusion
    schedule: str = "cosine"            # cosine (Nichol & Dhariwal 2021) | linear (Ho et al. 2020)
    T: int = 1000
    p_uncond: float = 0.1               # label dropout for classifier-free guidance
    # optimisation: AdamW, linear warm-up into cosine decay, per optimizer step
    batch_size: int = 128               # per device
    lr: float = 2e-4                    # peak learning rate
    min_lr_ratio: float = 0.0           # the cosine ends at lr · min_lr_ratio
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0              # global gradient norm; 0 turns clipping off
    ema_decay: float = 0.999            # sample with the EMA weights
    epochs: int = 10
    max_steps: int = -1                 # -1: only epochs bound the run
    # monitor
    log_every_steps: int = 50
    checkpoint_every_steps: int = 500   # besides one checkpoint per epoch
    keep_checkpoints: int = 3           # newest epoch checkpoints kept
    sample_every_epochs: int = 1        # sample grid (EMA weights) every so many epochs; 0: never
    sample_per_class: int = 8
    sample_steps: int = 50              # DDIM steps of that grid
    sample_w: float = 2.0               # its guidance weight
    tensorboard: bool = False           # if installed
    wandb: bool = False                 # if installed; offline mode
    # engine, passed to Lightning's Trainer
    accelerator: str = "auto"
    devices: str = "auto"               # "auto", a count ("2") or device ids ("0,1")
    num_nodes: int = 1
    strategy: str = "auto"              # e.g. ddp
    precision: str = "32-true"          # e.g. bf16-mixed
    channels_last: bool = False
    compile: bool = False               # torch.compile the network's forward
    num_workers: int = 0                # DataLoader workers (data are in memory already)

    def __post_init__(self):
        for f in fields(self):  # YAML and CLI give lists and ints where tuples and floats are meant
            value = getattr(self, f.name)
            if f.type == "tuple" and isinstance(value, list):
                setattr(self, f.name, tuple(value))
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
        self.validate()

    def validate(self) -> None:
        def choice(name, options):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}, got "
                                 f"{getattr(self, name)!r}")

        choice("mode", MODES)
        choice("dataset", DATASETS)
        choice("schedule", SCHEDULES)
        choice("data_source", ("", "auto", "download", "offline"))
        for f in fields(self):
            value = getattr(self, f.name)
            kind = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple}.get(f.type)
            if kind is not None and (not isinstance(value, kind)
                                     or (kind is int and isinstance(value, bool))):
                raise TypeError(f"{f.name} must be of type {f.type}, got {value!r}")
        for name in ("base_channels", "num_res_blocks", "num_heads", "T", "batch_size",
                     "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                     "sample_per_class", "sample_steps", "num_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("image_size", "per_class", "warmup_steps", "epochs", "sample_every_epochs",
                     "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
        if self.max_steps < -1 or self.max_steps == 0:
            raise ValueError(f"max_steps must be -1 (no cap) or positive, got {self.max_steps!r}")
        for name, lo, hi in (("p_uncond", 0, 1), ("ema_decay", 0, 1), ("min_lr_ratio", 0, 1),
                             ("dropout", 0, 0.999)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must lie in [{lo}, {hi}], got {getattr(self, name)!r}")
        for name, low in (("lr", 0.0), ("weight_decay", 0.0), ("grad_clip", 0.0),
                          ("sample_w", -math.inf)):
            value = getattr(self, name)
            if not math.isfinite(value) or value < low or (name == "lr" and value == 0):
                raise ValueError(f"{name} must be a finite number"
                                 f"{' > 0' if name == 'lr' else ' ≥ 0' if low == 0 else ''}, "
                                 f"got {value!r}")
        if self.sample_steps > self.T:
            raise ValueError(f"sample_steps must be at most T = {self.T}, got {self.sample_steps}")

    # --------------------------------------------------------------------- derived
    @property
    def run_name(self) -> str:
        return self.name or f"{self.dataset}-{self.mode}"

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run_name

    @property
    def side(self) -> int:
        """The side of the images the network sees."""
        return self.image_size or NATIVE_SIDE[self.dataset]

    @property
    def flips(self) -> bool:
        return self.dataset == "cifar10" if self.flip is None else self.flip

    def trainer_devices(self):
        """``devices`` as Lightning takes it: "auto", an int, or a list of ids."""
        d = self.devices.strip()
        if d.isdigit():
            return int(d)
        if "," in d:
            return [int(i) for i in d.split(",") if i.strip()]
        return d

    # --------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def save(self, path) -> Path:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False).encode()
        return atomic_write(path, lambda f: f.write(text))

    @classmethod
    def from_dict(cls, values: dict, base: "TrainConfig | None" = None) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return dataclasses.replace(base or cls(), **values)

    @classmethod
    def load(cls, path, base: "TrainConfig | None" = None) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text())
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys to values, got "
                             f"{type(values).__name__}")
        return cls.from_dict(values, base)


NATIVE_SIDE = {"mnist": 28, "cifar10": 32}


def defaults(mode: str = "train", dataset: str = "mnist",
             profile: env.Profile | None = None) -> TrainConfig:
    """The defaults of a mode and dataset under a run profile (sizes by ``pick``, counts by
    ``steps``, so a dry run keeps the sizes and caps the counts)."""
    profile = profile or env.get_profile()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    p, s = profile.pick, profile.steps
    if dataset == "mnist":  # standard: the notebooks' net (08_guidance: 16 channels)
        model = dict(base_channels=p(smoke=8, standard=16, full=64), channel_mults=(1, 2, 2),
                     attention_levels=(), num_res_blocks=p(smoke=1, standard=1, full=2),
                     dropout=p(smoke=0.0, standard=0.0, full=0.1))
        epochs = s(smoke=1, standard=5, full=100)
    else:  # full: Ho et al.'s CIFAR-10 net (128 channels, 1-2-2-2, 2 blocks, attention at 16²)
        model = dict(base_channels=p(smoke=8, standard=32, full=128), channel_mults=(1, 2, 2, 2),
                     attention_levels=p(smoke=(), standard=(1,), full=(1,)),
                     num_res_blocks=p(smoke=1, standard=1, full=2),
                     dropout=p(smoke=0.0, standard=0.1, full=0.1))
        epochs = s(smoke=1, standard=20, full=2000)  # full: ≈ 780k steps at batch 128
    values = dict(
        mode=mode, dataset=dataset, **model,
        T=p(smoke=100, standard=1000, full=1000),
        batch_size=p(smoke=16, standard=128, full=128),
        precision=p(smoke="32-true", standard="32-true", full="bf16-mixed"),
        warmup_steps=s(smoke=10, standard=200, full=5000),
        epochs=epochs,
        sample_per_class=s(smoke=2, standard=8, full=8),
        sample_steps=s(smoke=5, standard=50, full=100),
        checkpoint_every_steps=p(smoke=50, standard=500, full=2000),
        log_every_steps=p(smoke=1, standard=20, full=50),
    )
    if mode != "train":  # the debugging mode of 08_guidance: a few images per class, learnt by heart
        values.update(per_class=p(smoke=2, standard=8, full=8), warmup_steps=s(smoke=2,
                      standard=20, full=20), log_every_steps=1,
                      batch_size=p(smoke=16, standard=80, full=80))
        values["epochs"] = (s(smoke=2, standard=2, full=2) if mode == "quicktest"
                            else s(smoke=5, standard=300, full=1000))
        if mode == "quicktest":  # seconds: the smallest net of the dataset, few samples
            values.update(base_channels=8, num_res_blocks=1, attention_levels=(), T=100,
                          sample_per_class=2, sample_steps=5, precision="32-true")
    if profile.dry:
        values["max_steps"] = profile.dry_cap  # a dry run: a couple of optimizer steps at full size
    return TrainConfig(**values)
