"""The training loop and atomic checkpoints.

``fit`` trains a model by mini-batches drawn from device-resident tensors, shows a progress
bar, records a per-epoch history and, given a checkpoint path, saves everything needed to
resume at the end of every epoch: model, optimizer, history and the random-number state, so a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .data import batches


def _progress_default() -> bool:
    return os.environ.get("DGM_PROGRESS", "1") not in ("0", "false", "no")


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
        loss_fn: Callable[..., torch.Tensor], data: tuple[torch.Tensor, ...], *,
        epochs: int, batch_size: int, eval_fn: Callable[[torch.nn.Module], float] | None = None,
        clip_grad_norm: float | None = None, scheduler=None, seed: int = 0,
        checkpoint: str | Path | None = None, resume: bool = False,
        progress: bool | None = None, desc: str = "train") -> dict[str, list[float]]:
    """Train ``model`` for ``epochs`` epochs; return the history.

    loss_fn(model, *batch) -> scalar loss, where batch is one mini-batch of ``data``.
    eval_fn(model) -> float, called after every epoch in eval mode without gradients.
    clip_grad_norm: clip the global gradient norm to this value before each step.
    scheduler: a learning-rate scheduler stepped once per epoch.
    seed: seeds the batch order (and, when not resuming, torch's global generator).
    checkpoint: path written atomically after every epoch; with ``resume=True`` and an
    existing file there, training continues from it (same parameters, optimizer state,
    history, random state) up to ``epochs`` in total.

    History: ``train_loss`` (mean over the epoch's batches), ``eval_loss`` (if eval_fn),
    ``lr`` and ``seconds`` per epoch.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, (tuple, list)) or not data or not all(torch.is_tensor(t) for t in data):
        raise TypeError("data must be a non-empty tuple of tensors, e.g. (x,) or (x, y)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    progress = _progress_default() if progress is None else progress

    history: dict[str, list[float]] = {"train_loss": [], "eval_loss": [], "lr": [], "seconds": []}
    gen = torch.Generator().manual_seed(seed)
    start = 0
    if resume and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        history = {k: list(v) for k, v in state["history"].items()}
        start = int(state["epoch"])
        gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(list(state["cuda_rng"]))
    else:
        torch.manual_seed(seed)

    n_batches = math.ceil(len(data[0]) / batch_size)
    bar = tqdm(total=(epochs - start) * n_batches, desc=desc, disable=not progress,
               dynamic_ncols=True)
    for epoch in range(start, epochs):
        model.train()
        t0, total, count = time.perf_counter(), 0.0, 0
        for batch in batches(*data, batch_size=batch_size, generator=gen):
            loss = loss_fn(model, *batch)
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            total += loss.detach() * len(batch[0])  # stays on the device: no sync per step
            count += len(batch[0])
            bar.update(1)
        history["train_loss"].append(float(total) / count)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step()
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                history["eval_loss"].append(float(eval_fn(model)))
        history["seconds"].append(time.perf_counter() - t0)
        shown = {"epoch": epoch + 1, "loss": f"{history['train_loss'][-1]:.4g}"}
        if eval_fn is not None:
            shown["eval"] = f"{history['eval_loss'][-1]:.4g}"
        bar.set_postfix(shown)
        if checkpoint is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "history": history, "epoch": epoch + 1, "batch_rng": gen.get_state(),
                     "torch_rng": torch.get_rng_state()}
            if scheduler is not None:
                state["scheduler"] = scheduler.state_dict()
            if torch.cuda.is_available():
                state["cuda_rng"] = torch.cuda.get_rng_state_all()
            save_checkpoint(checkpoint, state)
    bar.close()
    model.eval()
    return history


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    If writing fails part-way, the previous file at ``path`` (if any) is left as it was.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    return atomic_write(path, lambda f: torch.save(state, f))


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it to ``path``.

    If ``write`` raises, or the process dies part-way, ``path`` keeps its previous content (or
    stays absent) and the temporary file is removed. Used for checkpoints and written figures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (tensors only: ``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}: {err}). "
                         f"It may be from an incompatible version or corrupt; delete it and "
                         f"train again.") from err
