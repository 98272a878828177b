"""The LightningModule: a class-conditional ε-prediction U-Net trained with L_simple and label
dropout, an EMA of its weights, AdamW with warm-up and cosine decay per optimizer step."""

from __future__ import annotations

import copy
import json
import math
import time

import lightning as L
import torch
import torch.nn.functional as F

from helpers import diffusion, nets
from helpers.train import atomic_write

from .config import TrainConfig
from .figures import save_grid, save_loss_curve

KIND = "dgm-diffusion-trainer"  # marks this program's checkpoints (``generate`` checks it)


def unet_config(cfg: TrainConfig, in_channels: int, num_classes: int) -> nets.UNetConfig:
    return nets.UNetConfig(in_channels=in_channels, image_size=cfg.side,
                           base_channels=cfg.base_channels, channel_mults=cfg.channel_mults,
                           num_res_blocks=cfg.num_res_blocks, attention=cfg.attention,
                           attention_levels=cfg.attention_levels, num_heads=cfg.num_heads,
                           dropout=cfg.dropout, num_classes=num_classes)


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor at optimizer step ``step`` (0-based): linear warm-up over ``warmup``
    steps to 1, then cosine decay to ``min_ratio`` at step ``total`` (Loshchilov & Hutter 2017,
    SGDR, arXiv:1608.03983, without restarts)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay_at(update: int, decay: float) -> float:
    """The EMA decay at the n-th update (1-based): min(decay, (1 + n) / (10 + n)), the warm-up
    of ``helpers.diffusion.ema_of``, so short runs are not dominated by the initial weights."""
    return min(decay, (1 + update) / (10 + update))


class DiffusionModule(L.LightningModule):
    def __init__(self, config: dict, in_channels: int, num_classes: int,
                 class_names: list[str]):
        super().__init__()
        self.save_hyperparameters()  # plain types only: the checkpoint loads with weights_only
        self.cfg = cfg = TrainConfig.from_dict(config)
        self.num_classes = num_classes
        self.model = nets.UNet(unet_config(cfg, in_channels, num_classes))
        # The EMA copy is a submodule (checkpointed, moved with the model) without gradients,
        # so DDP leaves it out of the gradient all-reduce. Own code rather than ema_of: its
        # update count lives in a closure, and a resumed run must continue the warm-up.
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.schedule = diffusion.make_schedule(cfg.schedule, cfg.T)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Kept out of the submodules (no second copy of the weights in the state dict, so a
        # checkpoint of a compiled run loads without compile and the other way round).
        object.__setattr__(self, "forward_fn", torch.compile(self.model) if cfg.compile
                           else self.model)
        self.history: list[dict] = []  # one row per epoch: epoch, step, loss, seconds
        self._loss_sum = self._count = None     # this epoch's Σ loss · B and Σ B on this rank
        self._pending_sums = None               # those sums from a checkpoint, until fit starts
        self._epoch_start = 0.0

    def forward(self, x, t, y=None):
        return self.forward_fn(x, t, y)

    # ------------------------------------------------------------------ data on the device
    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        x, y, idx = batch
        x = x.float().div_(127.5).sub_(1.0)                      # uint8 → [−1, 1], (B, C, H, W)
        if x.shape[-1] != self.cfg.side:                         # upscaled resolution option
            x = F.interpolate(x, size=(self.cfg.side, self.cfg.side), mode="bilinear",
                              align_corners=False)
        if self.cfg.flips and self._trainer is not None and self.trainer.training:
            flip = torch.rand(len(x), device=x.device) < 0.5     # one coin per image
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, idx

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self):  # not called when a run resumes mid-epoch
        self._reset_epoch_sums()

    def _reset_epoch_sums(self, loss_sum: float = 0.0, count: float = 0.0):
        self._loss_sum = torch.tensor(loss_sum, device=self.device, dtype=torch.float64)
        self._count = torch.tensor(count, device=self.device, dtype=torch.float64)
        self._epoch_start = time.perf_counter()

    def training_step(self, batch, batch_idx):
        x0, y, _ = batch
        if self._loss_sum is None:  # resumed mid-epoch from a checkpoint without its sums
            self._reset_epoch_sums()
        # L_simple with per-sample label dropout (Ho & Salimans 2022, algorithm 1)
        loss = diffusion.conditional_training_loss(self, x0, y, self.schedule,
                                                   p_uncond=self.cfg.p_uncond,
                                                   null_class=self.num_classes)
        self._loss_sum += loss.detach().double() * len(x0)  # on the device: no sync per step
        self._count += len(x0)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=len(x0))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True,
                 on_epoch=False, batch_size=len(x0))
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self._update_ema()

    @torch.no_grad()
    def _update_ema(self):
        self.ema_updates += 1
        d = ema_decay_at(int(self.ema_updates), self.cfg.ema_decay)
        ema, live = list(self.ema.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(ema, live, 1 - d)               # θ_EMA += (1 − d)(θ − θ_EMA)
        for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
            b_ema.copy_(b)

    def on_train_epoch_end(self):
        total = self.trainer.strategy.reduce(self._loss_sum, reduce_op="sum")
        count = self.trainer.strategy.reduce(self._count, reduce_op="sum")
        if count.item() == 0:
            return
        row = {"epoch": self.current_epoch + 1, "step": self.global_step,
               "loss": total.item() / count.item(),
               "seconds": time.perf_counter() - self._epoch_start}
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"the mean loss of epoch {row['epoch']} is {row['loss']} "
                                     f"(step {row['step']}); try a smaller lr or grad_clip")
        self.history.append(row)
        self.log("train/loss_epoch", row["loss"], on_step=False, on_epoch=True, sync_dist=False)
        if self.trainer.is_global_zero:
            self.write_monitor(row["epoch"])

    def configure_optimizers(self):
        cfg = self.cfg
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)

        def factor(step):  # a plain function: LambdaLR checkpoints no state for it
            return warmup_cosine(step, cfg.warmup_steps, total, cfg.min_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint):
        checkpoint["dgm_kind"] = KIND
        checkpoint["dgm_history"] = [dict(r) for r in self.history]
        if self._loss_sum is not None:  # this rank's sums so far: a mid-epoch resume keeps them
            checkpoint["dgm_epoch_sums"] = [float(self._loss_sum), float(self._count)]

    def on_load_checkpoint(self, checkpoint):
        self.history = [dict(r) for r in checkpoint.get("dgm_history", [])]
        self._pending_sums = checkpoint.get("dgm_epoch_sums")

    def on_train_start(self):
        # Lightning seeds every rank alike; each rank draws its own t, ε and dropped labels,
        # and a resumed run does not replay the noise of the steps it already took.
        torch.manual_seed(self.cfg.seed + 100_003 * self.global_rank + self.global_step)
        if self._pending_sums is not None:  # rank 0's; the others start at 0
            self._reset_epoch_sums(*self._pending_sums if self.global_rank == 0 else (0, 0))

    # ------------------------------------------------------------------ monitor
    def write_monitor(self, epoch: int):
        """history.json, loss.png and (every sample_every_epochs) samples/epoch_NNNN.png."""
        run = self.cfg.run_dir
        text = json.dumps(self.history, indent=1).encode()
        atomic_write(run / "history.json", lambda f: f.write(text))
        save_loss_curve(self.history, run / "loss.png", title=self.cfg.run_name)
        every = self.cfg.sample_every_epochs
        if every and (epoch % every == 0 or epoch == self.trainer.max_epochs):
            names = self.hparams.class_names
            classes = list(range(min(self.num_classes, 10)))
            x = self.sample(classes, self.cfg.sample_per_class, self.cfg.sample_w,
                            S=self.cfg.sample_steps, seed=self.cfg.seed)
            save_grid(x, self.cfg.sample_per_class, [names[c] for c in classes],
                      run / "samples" / f"epoch_{epoch:04d}.png",
                      title=f"epoch {epoch}, EMA, w = {self.cfg.sample_w:g}, "
                            f"DDIM S = {self.cfg.sample_steps}")

    @torch.no_grad()
    def sample(self, classes, n_per_class: int, w: float, S: int | None, seed: int = 0,
               use_ema: bool = True) -> torch.Tensor:
        """Images in [0, 1] (len(classes) · n_per_class, C, H, W), one row per class."""
        return sample_images(self.ema if use_ema else self.model, self.schedule, classes,
                             n_per_class, w, S, seed)


def sample_images(model: nets.UNet, schedule, classes, n_per_class: int, w: float,
                  S: int | None, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Guided samples (DDIM with S steps, or DDPM with all T if S is None) in [0, 1]."""
    device = next(model.parameters()).device
    cfg = model.config
    gen = torch.Generator(device=device).manual_seed(seed)
    y = torch.as_tensor(classes, device=device).repeat_interleave(n_per_class)
    was_training = model.training
    model.eval()
    x = diffusion.guided_sample(model, y, w, schedule, S=S, generator=gen, batch_size=batch_size,
                                image_shape=(cfg.in_channels, cfg.image_size, cfg.image_size))
    model.train(was_training)
    return ((x.float() + 1) / 2).clamp(0, 1).cpu()

