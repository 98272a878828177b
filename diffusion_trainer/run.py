"""Train: build the data, the module, the loggers and checkpoints, and hand them to Lightning's
Trainer; resume from the run folder's last checkpoint when there is one."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from helpers.train import atomic_write

from . import data
from .config import ARCHITECTURE, TrainConfig
from .module import DiffusionModule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint files, written as the course writes them: a temporary file, then a
    rename (``helpers.train.atomic_write``), so a kill mid-write leaves the previous file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported, got {storage_options!r}")
        atomic_write(path, lambda f: torch.save(checkpoint, f))


def last_checkpoint(run_dir: Path) -> Path | None:
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def resolve_for_resume(cfg: TrainConfig, overrides: dict) -> TrainConfig:
    """If the run folder holds a run, continue it: its saved config, then the explicit flags.

    Flags that would change the network's shape are refused (the checkpoint could not load).
    """
    saved = cfg.run_dir / "config.yaml"
    if not saved.is_file() or last_checkpoint(cfg.run_dir) is None:
        return cfg
    old = TrainConfig.load(saved)
    changed = [k for k in ARCHITECTURE if k in overrides and overrides[k] != getattr(old, k)]
    if changed:
        raise ValueError(f"run {cfg.run_dir} already trains another network ({', '.join(changed)} "
                         f"differ from its config.yaml); resume without changing them or pick "
                         f"a new --name")
    return TrainConfig.from_dict(overrides, base=old)


def cpu_bf16_autocast_works() -> bool:
    """Whether bf16 autocast runs a convolution and attention on this CPU."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = torch.nn.functional.conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3))
            q = torch.randn(1, 1, 4, 2)
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return x.dtype == torch.bfloat16
    except (RuntimeError, TypeError):
        return False


def engine_precision(cfg: TrainConfig) -> str:
    """The precision to give Lightning: bf16 on a CPU only where autocast supports it."""
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto"
                                          and not torch.cuda.is_available())
    if on_cpu and cfg.precision.startswith("bf16") and not cpu_bf16_autocast_works():
        rank_zero_info(f"precision {cfg.precision} is not supported on this CPU: 32-true "
                       f"instead, with the same shapes")
        return "32-true"
    if on_cpu and cfg.precision.startswith("16"):
        rank_zero_info(f"precision {cfg.precision} needs a GPU: 32-true instead")
        return "32-true"
    return cfg.precision


def loggers(cfg: TrainConfig):
    run = cfg.run_dir
    out = [CSVLogger(str(run), name="logs")]  # a new logs/version_N per session: resumes append
    if cfg.tensorboard:
        if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
            from lightning.pytorch.loggers import TensorBoardLogger
            out.append(TensorBoardLogger(str(run), name="tensorboard"))
        else:
            warnings.warn("tensorboard=True but TensorBoard is not installed (pip install "
                          "tensorboard); logging to CSV only", stacklevel=2)
    if cfg.wandb:
        if importlib.util.find_spec("wandb"):
            from lightning.pytorch.loggers import WandbLogger
            out.append(WandbLogger(save_dir=str(run), name=cfg.run_name, offline=True,
                                   project="dgm-diffusion"))
        else:
            warnings.warn("wandb=True but Weights & Biases is not installed (pip install "
                          "wandb); logging to CSV only", stacklevel=2)
    return out


def checkpoints(cfg: TrainConfig) -> list[ModelCheckpoint]:
    where = str(cfg.run_dir / "checkpoints")
    # Lightning allows one trigger per callback: one per epoch (kept: the newest few) and one
    # every checkpoint_every_steps (kept: the newest); both refresh last.ckpt, which resume reads.
    return [ModelCheckpoint(dirpath=where, filename="epoch{epoch:04d}-step{step:07d}",
                            auto_insert_metric_name=False, every_n_epochs=1, monitor="step",
                            mode="max", save_top_k=cfg.keep_checkpoints, save_last=True,
                            save_on_train_epoch_end=True, enable_version_counter=False),
            ModelCheckpoint(dirpath=where, filename="step{step:07d}",
                            auto_insert_metric_name=False,
                            every_n_train_steps=cfg.checkpoint_every_steps, monitor="step",
                            mode="max", save_top_k=1, save_last=True,
                            enable_version_counter=False)]


def build(cfg: TrainConfig, callbacks=()) -> tuple[L.Trainer, DiffusionModule, object]:
    """The Trainer, the module and the training DataLoader of a config."""
    x, y, names = data.load_images(cfg.dataset, "train", cfg.data_source)
    if cfg.per_class:
        keep = data.first_per_class(y, cfg.per_class)
        x, y = x[keep], y[keep]
    module = DiffusionModule(cfg.to_dict(), in_channels=x.shape[1], num_classes=len(names),
                             class_names=list(names))
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.trainer_devices(), num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision=engine_precision(cfg), max_epochs=cfg.epochs,
        max_steps=cfg.max_steps, gradient_clip_val=cfg.grad_clip or None,
        log_every_n_steps=cfg.log_every_steps, logger=loggers(cfg),
        callbacks=[*checkpoints(cfg), *callbacks], plugins=[AtomicCheckpointIO()],
        default_root_dir=str(cfg.run_dir), num_sanity_val_steps=0, enable_model_summary=False,
        enable_progress_bar=os.environ.get("DGM_PROGRESS", "1") not in ("0", "false", "no"))
    return trainer, module, data.loader(x, y, cfg.batch_size, cfg.num_workers)


def train(cfg: TrainConfig, callbacks=()) -> L.Trainer:
    """Train (or continue) the run of ``cfg``; returns the Trainer after fit."""
    # The EMA copy is in eval mode on purpose (no dropout in it); Lightning warns about that.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer, module, train_loader = build(cfg, callbacks)
    resume = last_checkpoint(cfg.run_dir)
    _save_config(cfg)
    rank_zero_info(f"run {cfg.run_dir}: " + (f"resuming from {resume}" if resume else "new run")
                   + f"; {len(train_loader.dataset)} images, {cfg.dataset}, side {cfg.side}")
    trainer.fit(module, train_dataloaders=train_loader, ckpt_path=str(resume) if resume else None)
    return trainer


@rank_zero_only
def _save_config(cfg: TrainConfig) -> None:
    cfg.save(cfg.run_dir / "config.yaml")
