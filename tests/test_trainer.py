"""The diffusion trainer (diffusion_trainer/): config, CIFAR-10 through torchvision's real loader,
two-process DDP, resume after a kill, generate and its errors. CPU only."""

import hashlib
import importlib.util
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusion_trainer  # noqa: F401  (puts psets/ on the path when run alone)
from diffusion_trainer import cli, data as tdata
from diffusion_trainer.config import TrainConfig, defaults
from diffusion_trainer.module import DiffusionModule, warmup_cosine

ROOT = Path(__file__).resolve().parents[1]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
PER_BATCH_FILE = 4  # images per class in each fake training batch file: 5 files → 20 per class


def _env(**extra):
    """Subprocesses: one thread each (the machine is shared), offline MNIST, no progress bars."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "DGM_DATA": "offline", "DGM_PROGRESS": "0",
            "DGM_PROFILE": "smoke", "PYTHONPATH": str(ROOT / "psets"), **extra}


# ----------------------------------------------------------------------------- config

def test_config_round_trips_through_yaml(tmp_path):
    cfg = TrainConfig.from_dict({"lr": 3e-4, "channel_mults": (1, 2, 2, 2), "flip": False,
                                 "attention_levels": (1,), "devices": "0,1"},
                                defaults("train", "cifar10"))
    back = TrainConfig.load(cfg.save(tmp_path / "c.yaml"))
    assert back == cfg and isinstance(back.channel_mults, tuple) and back.flip is False
    assert back.trainer_devices() == [0, 1]


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("dataset: cifar10\nlr: 0.001\nbatch_size: 7\n")
    args = cli.parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"),
                                    "--batch-size", "9", "--channel-mults", "1,2",
                                    "--no-attention"])
    cfg, overrides = cli.resolve("train", args)
    assert (cfg.dataset, cfg.lr, cfg.batch_size, cfg.channel_mults, cfg.attention) == (
        "cifar10", 0.001, 9, (1, 2), False)
    assert cfg.base_channels == defaults("train", "cifar10").base_channels  # untouched default
    assert set(overrides) == {"batch_size", "channel_mults", "attention"}


@pytest.mark.parametrize("values, message", [
    ({"dataset": "svhn"}, r"dataset must be one of mnist, cifar10, got 'svhn'"),
    ({"lr": -1.0}, r"lr must be a finite number > 0, got -1.0"),
    ({"p_uncond": 1.5}, r"p_uncond must lie in \[0, 1\], got 1.5"),
    ({"batch_size": "8"}, r"batch_size must be of type int, got '8'"),
    ({"learning_rate": 1.0}, r"unknown config keys \['learning_rate'\]"),
])
def test_bad_config_values(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig.from_dict(values)


def test_dry_run_keeps_full_sizes_and_caps_the_steps():
    from helpers import env

    full, dry = env.Profile("full"), env.Profile("full", dry_cap=2)
    a, b = defaults("train", "cifar10", full), defaults("train", "cifar10", dry)
    assert (b.base_channels, b.batch_size, b.channel_mults, b.precision) == (
        a.base_channels, a.batch_size, a.channel_mults, a.precision) == (
        128, 128, (1, 2, 2, 2), "bf16-mixed")
    assert (a.max_steps, b.max_steps, b.epochs, b.sample_steps) == (-1, 2, 2, 2)


def test_warmup_then_cosine():
    """Against the closed form: 1/W at step 0, 1 at the end of warm-up, (1 + r)/2 half-way through
    the decay, r at the last step; monotone on each side."""
    W, total, r = 10, 110, 0.1
    f = [warmup_cosine(s, W, total, r) for s in range(total + 1)]
    assert f[0] == pytest.approx(1 / W) and f[W - 1] == pytest.approx(1.0)
    assert f[W + 50] == pytest.approx((1 + r) / 2) and f[total] == pytest.approx(r)
    assert all(a < b for a, b in zip(f[:W - 1], f[1:W]))
    assert all(a >= b for a, b in zip(f[W:], f[W + 1:]))


# ----------------------------------------------------------------------------- CIFAR-10

def _write_cifar(root: Path) -> dict[str, str]:
    """Tiny CIFAR-10 in its python batch format: pickled dicts with 'data' (N, 3072) uint8 (the
    red, green then blue planes, row-major) and 'labels'; batches.meta with 'label_names'.
    Returns the MD5 of each file (torchvision verifies every file against an MD5 list)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {f"data_batch_{i}": PER_BATCH_FILE for i in range(1, 6)} | {"test_batch": 2}
    md5 = {}
    for name, per_class in files.items():
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        images[:, 0, :, :16] = labels[:, None, None] * 20  # a class-dependent red left half
        entry = {"batch_label": name, "labels": labels.tolist(),
                 "data": images.reshape(len(labels), 3072),
                 "filenames": [f"{name}_{i}.png" for i in range(len(labels))]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES,
                                                        "num_vis": 3072}))
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5


def _trust(monkeypatch, md5: dict[str, str]) -> None:
    """Point torchvision's MD5 list at our files. Its loader then runs as for the real data set:
    it verifies every file's MD5 (check_integrity), unpickles the batches, reshapes and
    transposes them; only the expected checksums are ours (the real ones are of the real files)."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]]
                                                for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, _write_cifar(root)


@pytest.fixture
def fake_cifar(cifar_dir, monkeypatch):
    root, md5 = cifar_dir
    monkeypatch.setenv("DGM_DATA_DIR", str(root))
    _trust(monkeypatch, md5)
    return root


def test_cifar10_through_torchvisions_loader(fake_cifar):
    x, y, names = tdata.load_images("cifar10", "train", source="offline")
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8 and list(names) == CIFAR_NAMES
    entry = pickle.loads((fake_cifar / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    first = torch.from_numpy(entry["data"][:40].reshape(40, 3, 32, 32))
    assert torch.equal(x[:40], first)  # channels, rows and columns where CIFAR-10 puts them
    assert y[:40].tolist() == entry["labels"] and torch.bincount(y).tolist() == [20] * 10
    assert len(tdata.load_images("cifar10", "test", source="offline")[0]) == 20


def test_cifar10_missing_or_corrupt_says_it_needs_a_download(tmp_path, monkeypatch, cifar_dir):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    with pytest.raises(tdata.DatasetUnavailable,
                       match=r"^CIFAR-10 needs a download: .*DGM_DATA_DIR=") as err:
        tdata.load_images("cifar10", "train", source="offline")
    assert "\n" not in str(err.value)
    monkeypatch.setenv("DGM_DATA_DIR", str(cifar_dir[0]))  # our files, torchvision's real MD5s
    with pytest.raises(tdata.DatasetUnavailable, match="needs a download"):
        tdata.load_images("cifar10", "train", source="offline")


def test_batches_are_scaled_flipped_and_upscaled_on_the_device():
    cfg = TrainConfig.from_dict({"dataset": "cifar10", "image_size": 64, "channel_mults": (1, 2),
                                 "base_channels": 8, "num_heads": 2})
    module = DiffusionModule(cfg.to_dict(), 3, 10, CIFAR_NAMES)

    class Training:  # what on_after_batch_transfer reads of the trainer
        training = True

    module.trainer = Training()
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    x[:, :, :, :16] = 0  # left half dark: a flipped image has its dark half on the right
    out, _, _ = module.on_after_batch_transfer((x, torch.zeros(64, dtype=torch.long),
                                                torch.arange(64)))
    assert out.shape == (64, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    flipped = out[:, :, :, 48:].amax(dim=(1, 2, 3)) <= -1 + 1e-6
    assert 10 < flipped.sum() < 54  # each image flipped with probability 1/2
    plain = torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(64, 64),
                                            mode="bilinear", align_corners=False)
    assert torch.allclose(out[~flipped], plain[~flipped])
    assert torch.allclose(out[flipped], plain[flipped].flip(-1))


def test_channels_last_batches_give_the_same_prediction(one_thread):
    values = {"dataset": "cifar10", "channel_mults": (1, 2), "base_channels": 8, "num_heads": 2}
    plain = DiffusionModule(TrainConfig.from_dict(values).to_dict(), 3, 10, CIFAR_NAMES)
    last = DiffusionModule(TrainConfig.from_dict({**values, "channels_last": True}).to_dict(),
                           3, 10, CIFAR_NAMES)
    last.model.load_state_dict(plain.model.state_dict())
    with torch.no_grad():
        for p in list(plain.model.parameters()) + list(last.model.parameters()):
            if not p.any():  # zero-initialised output layers: give them weights (same seed)
                p.copy_(torch.linspace(-0.1, 0.1, p.numel()).reshape(p.shape))
    batch = (torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([1, 2]),
             torch.arange(2))
    xa, _, _ = plain.on_after_batch_transfer(batch)
    xb, _, _ = last.on_after_batch_transfer(batch)
    assert xb.is_contiguous(memory_format=torch.channels_last) and torch.equal(xa, xb)
    t, y = torch.tensor([5, 50]), torch.tensor([1, 2])
    a, b = plain(xa, t, y), last(xb, t, y)
    assert a.abs().max() > 0.1  # the net's output is not trivially zero
    # float32 rounding of another summation order measured 1e-4 here; a layout mistake is O(1)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert "forward_fn" not in dict(last.named_modules())  # no second copy in the state dict


@pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX",
                                                               "wandb")),
                    reason="TensorBoard or W&B installed: the fallback is not reached")
def test_optional_loggers_fall_back_to_csv_with_a_warning(tmp_path):
    from diffusion_trainer.run import loggers
    from lightning.pytorch.loggers import CSVLogger

    cfg = TrainConfig.from_dict({"runs_dir": str(tmp_path), "tensorboard": True, "wandb": True})
    with pytest.warns(UserWarning) as record:
        out = loggers(cfg)
    assert [type(x) for x in out] == [CSVLogger]
    messages = " ".join(str(w.message) for w in record)
    assert "TensorBoard is not installed" in messages and "Weights & Biases" in messages


@pytest.fixture(scope="module")
def cifar_run(cifar_dir, tmp_path_factory):
    """One quick CIFAR-10 run in this process (2 epochs of 5 steps of a tiny net)."""
    from diffusion_trainer.run import train

    root, md5 = cifar_dir
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGM_DATA_DIR", str(root))
        mp.setenv("DGM_PROGRESS", "0")
        _trust(mp, md5)
        cfg = TrainConfig.from_dict(
            {"runs_dir": str(runs), "name": "c", "per_class": 1, "batch_size": 2, "epochs": 2,
             "warmup_steps": 3, "lr": 1e-3, "min_lr_ratio": 0.1, "accelerator": "cpu",
             "devices": "1", "log_every_steps": 1},
            defaults("quicktest", "cifar10"))
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            trainer = train(cfg)
        finally:
            torch.set_num_threads(before)
    return cfg, trainer


def test_cifar10_run_writes_its_monitor_and_steps_the_lr_per_step(cifar_run):
    cfg, trainer = cifar_run
    run = cfg.run_dir
    assert trainer.global_step == 10  # 10 images, batches of 2, 2 epochs
    assert (run / "config.yaml").is_file() and TrainConfig.load(run / "config.yaml") == cfg
    assert {p.name for p in (run / "samples").iterdir()} == {"epoch_0001.png", "epoch_0002.png"}
    assert (run / "loss.png").stat().st_size > 1000
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all(math.isfinite(r["loss"]) for r in history)
    import csv
    rows = list(csv.DictReader(open(run / "logs" / "version_0" / "metrics.csv")))
    lrs = {int(r["step"]): float(r["train/lr"]) for r in rows if r.get("train/lr")}
    assert len(lrs) == 10  # logged at every step; the lr in use at step s is lr · factor(s)
    for step, lr in lrs.items():
        assert lr == pytest.approx(cfg.lr * warmup_cosine(step, 3, 10, 0.1), rel=1e-5)
    import matplotlib.image
    png = matplotlib.image.imread(run / "samples" / "epoch_0002.png")
    assert png.ndim == 3 and png.shape[2] in (3, 4)


def test_status_lists_the_run(cifar_run, capsys):
    cfg, _ = cifar_run
    assert cli.main(["status", "--runs-dir", cfg.runs_dir]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["run", "epoch", "step", "loss", "ckpts"]
    fields = row.split()
    assert fields[:3] == ["c", "2", "10"] and math.isfinite(float(fields[3]))
    names = {p.name for p in (cfg.run_dir / "checkpoints").iterdir()}
    assert int(fields[4]) == len(names) and "last.ckpt" in names and fields[5] in names


# ----------------------------------------------------------------------------- generate

def _one_line_error(argv, capsys, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for f in fragments:
        assert f in err, err
    return err


def test_generate_png_and_tensors(cifar_run, tmp_path):
    cfg, _ = cifar_run
    out = tmp_path / "g.png"
    assert cli.main(["generate", "--checkpoint", str(cfg.run_dir), "--classes", "cat,1",
                     "--n-per-class", "3", "--w", "3", "--sampler", "ddim", "--steps", "4",
                     "--out", str(out), "--save-tensors"]) == 0
    saved = torch.load(tmp_path / "g.pt", weights_only=True)
    assert saved["x"].shape == (6, 3, 32, 32) and saved["y"].tolist() == [3, 3, 3, 1, 1, 1]
    assert 0 <= saved["x"].min() and saved["x"].max() <= 1 and out.stat().st_size > 500


def test_generate_errors_are_one_line(cifar_run, tmp_path, capsys):
    ckpt = str(cifar_run[0].run_dir / "checkpoints" / "last.ckpt")
    base = ["generate", "--out", str(tmp_path / "g.png"), "--steps", "2"]
    _one_line_error(base + ["--checkpoint", str(tmp_path / "none.ckpt")], capsys,
                    "does not exist")
    torch.save({"model": torch.zeros(2)}, tmp_path / "other.pt")
    _one_line_error(base + ["--checkpoint", str(tmp_path / "other.pt")], capsys,
                    "is not a diffusion_trainer checkpoint", "['model']")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    _one_line_error(base + ["--checkpoint", str(tmp_path / "text.ckpt")], capsys,
                    "could not be read")
    for classes in ("10", "horse,unicorn", "-1"):
        _one_line_error(base + ["--checkpoint", ckpt, "--classes", classes], capsys,
                        "--classes must be", repr(classes))
    for w in ("nan", "inf", "strong"):
        _one_line_error(base + ["--checkpoint", ckpt, "--w", w], capsys,
                        "--w (the guidance weight) must be a finite number", repr(w))
    _one_line_error(base + ["--checkpoint", ckpt, "--steps", "1000"], capsys, "1..T = 1..100")
    _one_line_error(base + ["--checkpoint", ckpt, "--sampler", "euler"], capsys, "--sampler")


def test_generate_reads_a_problem_set_sampler_file(tmp_path):
    """A file of helpers.diffusion.save_model (problem set 08 writes one) samples as well."""
    from helpers import diffusion, nets

    model = nets.UNet(nets.UNetConfig(base_channels=8, num_heads=2, num_classes=10))
    diffusion.save_model(tmp_path / "sampler.pt", model, diffusion.cosine_schedule(50))
    assert cli.main(["generate", "--checkpoint", str(tmp_path / "sampler.pt"), "--classes",
                     "0,9", "--n-per-class", "2", "--steps", "3", "--out",
                     str(tmp_path / "m.png"), "--save-tensors"]) == 0
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["x"].shape == (4, 1, 28, 28) and saved["y"].tolist() == [0, 0, 9, 9]


# ----------------------------------------------------------------------------- processes

def test_ddp_two_processes(tmp_path):
    """Two ranks (gloo, CPU), three steps: each rank trains on its own shard of the data, and
    after every step the weights of the two ranks are bit for bit the same (DDP averaged the
    gradients), although their losses differ (they saw different images)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_driver.py"),
                           str(tmp_path / "runs"), str(tmp_path / "out")], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    r0, r1 = ranks[0]["rows"], ranks[1]["rows"]
    assert len(r0) == len(r1) == 3
    print()
    for a, b in zip(r0, r1):
        print(f"step {a['step']}: rank 0 images {a['indices']} loss {a['loss']:.4f} weights "
              f"{a['weights']} | rank 1 images {b['indices']} loss {b['loss']:.4f} weights "
              f"{b['weights']}")
        assert a["step"] == b["step"]
        assert not set(a["indices"]) & set(b["indices"])  # disjoint shards
        assert a["weights"] == b["weights"]               # identical after the step
        assert a["loss"] != b["loss"]
    assert len({a["weights"] for a in r0}) == 3           # and the weights did change
    seen = [i for rows in (r0, r1) for row in rows for i in row["indices"]]
    assert len(seen) == len(set(seen)) == 24              # 40 images, 20 per rank, no repeats


# The run to be killed: the trainer's own command line, with one callback added that announces
# the start of step 3 (so step 2's checkpoints are on disk) and then waits to be killed. Polling
# the folder instead raced the run: step 2's file is replaced at step 4 and a 10-step run can end
# between two polls (it did, once, in CI).
_HALTING_RUN = """
import sys, time
sys.path.insert(0, {root!r})
import lightning as L
from diffusion_trainer import cli, run

class HaltAtStep(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 2:
            print("halted at step 2", flush=True)
            time.sleep(600)

_train = run.train
run.train = lambda cfg, callbacks=(): _train(cfg, [*callbacks, HaltAtStep()])
raise SystemExit(cli.main({argv!r}))
"""


def test_kill_mid_epoch_and_resume(tmp_path):
    """SIGKILL a run after its step-2 checkpoint and last.ckpt are written (each appears whole:
    written to a temporary file, then renamed; epoch 1 has 5 steps), run the same command
    again: it resumes from last.ckpt, continues the step count and the EMA's update count, and
    finishes the planned epochs."""
    argv = ["overfit", "--runs-dir", str(tmp_path), "--name", "k", "--per-class", "4",
            "--batch-size", "8", "--epochs", "2", "--checkpoint-every-steps", "2",
            "--sample-every-epochs", "0", "--base-channels", "8", "--accelerator", "cpu",
            "--devices", "1", "--T", "100"]
    cmd = [sys.executable, "-m", "diffusion_trainer", *argv]
    ckpts = tmp_path / "k" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", _HALTING_RUN.format(root=str(ROOT), argv=argv)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # ends at the halt line, or when the run exits without one
            lines.append(line)
            if line.strip() == "halted at step 2":
                break
        assert lines and lines[-1].strip() == "halted at step 2", "".join(lines)[-3000:]
        assert (ckpts / "step0000002.ckpt").exists() and (ckpts / "last.ckpt").exists()
        proc.send_signal(signal.SIGKILL)  # no cleanup can run
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert killed_at["global_step"] == 2 and killed_at["epoch"] == 0  # mid-epoch 1 (of 5 steps)
    assert not list(ckpts.glob("epoch*.ckpt"))

    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {ckpts / 'last.ckpt'}" in done.stdout + done.stderr
    final = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert final["epoch"] == 1 and final["global_step"] >= 10  # both epochs, steps continued
    assert int(final["state_dict"]["ema_updates"]) == final["global_step"]
    history = json.loads((tmp_path / "k" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


@pytest.mark.slow
def test_dry_run_of_the_full_mnist_configuration(tmp_path):
    """The program's GPU configuration for MNIST (64 channels, 2 blocks per level, batch 128,
    bf16-mixed precision, T = 1000) trains two steps and samples on the CPU: shape, dtype and
    precision mistakes at full size show here, before a GPU is lent (issue 23)."""
    cmd = [sys.executable, "-m", "diffusion_trainer", "train", "--dataset", "mnist", "--runs-dir",
           str(tmp_path), "--name", "dry", "--accelerator", "cpu", "--devices", "1"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(DGM_PROFILE="full", DGM_DRY_RUN="2"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = TrainConfig.load(tmp_path / "dry" / "config.yaml")
    assert (cfg.base_channels, cfg.num_res_blocks, cfg.batch_size, cfg.precision, cfg.T,
            cfg.max_steps) == (64, 2, 128, "bf16-mixed", 1000, 2)
    last = torch.load(tmp_path / "dry" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # two optimizer steps at full size, then the cap stops it
    samples = list((tmp_path / "dry" / "samples").iterdir())
    assert samples and all(p.stat().st_size > 1000 for p in samples)  # it sampled at full size
