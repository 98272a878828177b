"""The training loop and atomic checkpoints.

``fit`` trains a model by mini-batches drawn from device-resident tensors, shows a progress
bar, records a per-epoch history and, given a checkpoint path, saves everything needed to
resume at the end of every epoch: model, optimizer, history and the random-number state, so a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import secrets
import time
import warnings
import zipfile
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
        max_batches: int | None = None, checkpoint: str | Path | None = None, resume: bool = False,
        progress: bool | None = None, desc: str = "train",
        scheduler_interval: str = "epoch",
        autocast: torch.dtype | None = None) -> dict[str, list[float]]:
    """Train ``model`` for ``epochs`` epochs; return the history.

    loss_fn(model, *batch) -> scalar loss, where batch is one mini-batch of ``data``.
    eval_fn(model) -> float, called after every epoch in eval mode without gradients.
    clip_grad_norm: clip the global gradient norm to this value before each step.
    scheduler: a learning-rate scheduler, stepped once per epoch, or after every optimizer step
    with ``scheduler_interval="step"`` (warm-up and cosine decay over a run's updates).
    autocast: ``torch.bfloat16`` runs loss_fn under ``torch.autocast`` on the data's device
    (mixed precision: matrix products in bfloat16, the weights and their updates in float32);
    None (the default) runs it in the weights' precision. ``env.autocast_dtype`` says where it
    pays.
    seed: seeds the batch order (and, when not resuming, torch's global generator).
    max_batches: end each epoch after this many batches (None: all of them). A dry run passes
    ``profile.dry_cap``, so full-size data and models take a step or two per epoch.
    checkpoint: path written atomically after every epoch; with ``resume=True`` and an
    existing file there, training continues from it (same parameters, optimizer state,
    history, random state) up to ``epochs`` in total (a warning says so when there is no file
    yet and training starts afresh). The model and optimizer must be of the kind that wrote it.

    A loss that is NaN or infinite stops training with a FloatingPointError naming the epoch
    and the step; the checkpoint keeps the last epoch that finished with finite losses.

    History: ``train_loss`` (mean over the epoch's batches), ``eval_loss`` (if eval_fn),
    ``lr`` (the rate at the epoch's end) and ``seconds`` per epoch.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, (tuple, list)) or not data or not all(torch.is_tensor(t) for t in data):
        raise TypeError("data must be a non-empty tuple of tensors, e.g. (x,) or (x, y)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if autocast is not None and autocast is not torch.bfloat16:
        raise ValueError(f"autocast must be torch.bfloat16 or None, got {autocast!r} (float16 "
                         f"would need a gradient scaler)")
    per_step = scheduler is not None and scheduler_interval == "step"
    progress = _progress_default() if progress is None else progress

    history: dict[str, list[float]] = {"train_loss": [], "eval_loss": [], "lr": [], "seconds": []}
    gen = torch.Generator().manual_seed(seed)
    start = 0
    if resume and not Path(checkpoint).exists():
        warnings.warn(f"resume=True but checkpoint {checkpoint} does not exist (yet): training "
                      f"starts from scratch and will write it", stacklevel=2)
    if resume and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, required=_RESUME_KEYS)
        _restore(model, optimizer, state, checkpoint, epochs)
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
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    bar = tqdm(total=(epochs - start) * n_batches, desc=desc, disable=not progress,
               dynamic_ncols=True)
    for epoch in range(start, epochs):
        model.train()
        t0, total, count, losses = time.perf_counter(), 0.0, 0, []
        for step, batch in enumerate(batches(*data, batch_size=batch_size, generator=gen)):
            if step == n_batches:
                break
            with torch.autocast(batch[0].device.type, dtype=torch.bfloat16,  # the only one allowed
                                enabled=autocast is not None):
                loss = loss_fn(model, *batch)
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            if per_step:
                scheduler.step()
            total += loss.detach() * len(batch[0])  # stays on the device: no sync per step
            count += len(batch[0])
            losses.append(loss.detach())  # to name the step, should the total not be finite
            bar.update(1)
        bad = [] if math.isfinite(float(total)) else (  # a NaN or ±inf reaches the total
            (~torch.isfinite(torch.stack(losses))).nonzero().flatten().tolist())
        if bad:
            bar.close()
            step = bad[0] + 1
            kept = (f"the checkpoint {checkpoint} still holds epoch {epoch}" if checkpoint
                    is not None and epoch > 0 else "nothing was saved")
            raise FloatingPointError(
                f"the loss became {losses[bad[0]].item()} at epoch {epoch + 1}, step {step} "
                f"(of {len(losses)}); training stopped and {kept}. Try a smaller learning "
                f"rate, clip_grad_norm, or look for a log of zero or a division by zero in "
                f"loss_fn")
        history["train_loss"].append(float(total) / count)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        if scheduler is not None and not per_step:
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
                     "optimizer_class": type(optimizer).__name__, "history": history,
                     "epoch": epoch + 1, "batch_rng": gen.get_state(),
                     "torch_rng": torch.get_rng_state()}
            if scheduler is not None:
                state["scheduler"] = scheduler.state_dict()
            if torch.cuda.is_available():
                state["cuda_rng"] = torch.cuda.get_rng_state_all()
            save_checkpoint(checkpoint, state)
    bar.close()
    model.eval()
    return history


_RESUME_KEYS = ("model", "optimizer", "history", "epoch", "batch_rng", "torch_rng")


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
             checkpoint, epochs: int) -> None:
    """Load a fit checkpoint's model and optimizer, with errors that name the file."""
    if int(state["epoch"]) > epochs:
        raise ValueError(f"checkpoint {checkpoint} has already trained {int(state['epoch'])} "
                         f"epochs, more than epochs={epochs}; pass epochs >= "
                         f"{int(state['epoch'])} to continue it, or another checkpoint path")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {checkpoint} holds another model than the one given "
                         f"({type(model).__name__}): {str(err).strip()}") from err
    saved = state.get("optimizer_class")
    if saved is not None and saved != type(optimizer).__name__:
        raise ValueError(f"checkpoint {checkpoint} was written with optimizer {saved}, but fit "
                         f"got {type(optimizer).__name__}; resume with {saved} or use another "
                         f"checkpoint path")
    try:
        # Another optimizer class would take the saved hyper-parameters and fail at its first
        # step (Adam after SGD: KeyError 'betas'); compare them first (files without the class).
        # Keys a learning-rate scheduler adds (initial_lr, ...) may differ when a run resumes with
        # or without one; the optimizer's own hyper-parameters must all be there.
        saved_keys = set(state["optimizer"]["param_groups"][0]) & set(optimizer.defaults)
        given_keys = set(optimizer.defaults)
        if saved_keys != given_keys:
            raise ValueError(f"its hyper-parameters are {sorted(saved_keys)}, the optimizer's "
                             f"are {sorted(given_keys)}")
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"checkpoint {checkpoint} holds an optimizer state that does not fit "
                         f"the {type(optimizer).__name__} given ({type(err).__name__}: {err})"
                         ) from err


def save_checkpoint(path: str | Path, state: dict, checksum: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    If writing fails part-way, the previous file at ``path`` (if any) is left as it was.
    ``checksum``: also write its SHA-256 beside it, for ``load_checkpoint(..., checksum=True)``.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = atomic_write(path, lambda f: torch.save(state, f))
    if checksum:
        write_checksum(path)
    return path


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it to ``path``.

    If ``write`` raises, or the process dies part-way, ``path`` keeps its previous content (or
    stays absent) and the temporary file is removed (after a kill: by the next write of
    ``path``). The file's mode follows the umask, as for any other new file. Used for
    checkpoints, downloads and written figures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    # The writer's process id in the name tells a live writer's file from a dead one's.
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # 0o666 minus the umask, unlike mkstemp's 0o600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of ``path`` left by writers that are no longer running."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]+\.tmp")
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        m = pattern.fullmatch(tmp.name)
        if m and not _process_alive(int(m.group(1))):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would end the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def load_checkpoint(path: str | Path, map_location="cpu", required: tuple[str, ...] = (),
                    checksum: bool = False) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (tensors only: ``weights_only=True``).

    ``required``: keys the checkpoint must hold (else a ValueError naming the file and what it
    holds). ``checksum``: verify the file against the SHA-256 that ``save_checkpoint(...,
    checksum=True)`` wrote beside it (``ChecksumError`` if it differs or is missing).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder, not a checkpoint file; give "
                                f"the path of the .pt file")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if checksum:
        verify_checksum(path)
    # Say what is wrong in our words: torch's own messages suggest weights_only=False, which
    # would run whatever code a file holds, and our checkpoints never need it.
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"checkpoint {path} could not be read: it is not a complete PyTorch "
                         f"file (truncated, corrupt or another format). If it is a checkpoint "
                         f"of a run, delete it and train again")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"checkpoint {path} could not be read: it holds Python objects other "
                         f"than tensors, numbers, strings and containers (or is damaged), so "
                         f"these helpers did not write it. It is not loaded, since unpickling "
                         f"arbitrary objects can run code") from err
    except Exception as err:
        first = (str(err).splitlines() or [""])[0].split(". ")[0]
        raise ValueError(f"checkpoint {path} could not be read: it is damaged "
                         f"({type(err).__name__}: {first}). If it is a checkpoint of a run, "
                         f"delete it and train again") from err
    if required:
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        if missing:
            holds = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"checkpoint {path} lacks {', '.join(map(repr, missing))}: it holds "
                             f"{holds}, so it is not the kind of file expected here")
    return state


class ChecksumError(ValueError):
    """A file does not match the checksum stored beside it."""


def checksum_path(path: str | Path) -> Path:
    """Where the SHA-256 of ``path`` is kept: ``path`` + ``.sha256`` (``sha256sum -c`` reads it)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(path: str | Path) -> Path:
    """Write the SHA-256 of ``path`` beside it (``checksum_path``), atomically."""
    line = f"{_sha256(Path(path))}  {Path(path).name}\n".encode()
    return atomic_write(checksum_path(path), lambda f: f.write(line))


def verify_checksum(path: str | Path) -> None:
    """Raise ``ChecksumError`` naming ``path`` unless it matches the checksum stored beside it."""
    path, stored = Path(path), checksum_path(path)
    if not stored.is_file():
        raise ChecksumError(f"{path} has no checksum file {stored.name} beside it, so it cannot "
                            f"be verified")
    expected = stored.read_text(encoding="ascii", errors="replace").split()[:1]
    if expected != [_sha256(path)]:
        raise ChecksumError(f"{path} does not match its checksum in {stored.name}: the file "
                            f"changed after it was written (corrupt or partly overwritten)")
