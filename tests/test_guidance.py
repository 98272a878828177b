"""Classifier-free guidance (helpers.diffusion, problem set 08): label dropout, the guidance
combination, the guided ε-model, sampling from a saved checkpoint, and the diversity metric."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from helpers import diffusion as dif
from helpers import metrics, nets

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(base_channels=8, groups=4, num_heads=2, num_classes=10)


def tiny_conditional_unet(seed=0):
    """A small class-conditional UNet whose output layer is not zero (so outputs differ by class)."""
    torch.manual_seed(seed)
    model = nets.UNet(nets.UNetConfig(**TINY))
    with torch.no_grad():
        for p in model.parameters():          # the zero-initialised layers (output, last convs)
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.1)
        model.class_emb.weight.normal_(0, 1.0)
    return model.eval()


# ----------------------------------------------------------------------------- label dropout

def test_drop_labels_rate_is_p_uncond_within_sampling_error():
    n, p = 200_000, 0.1
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(0))
    out = dif.drop_labels(y, p, null_class=10, generator=torch.Generator().manual_seed(1))
    dropped = (out == 10).double().mean().item()
    se = math.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) < 4 * se, f"dropped share {dropped:.4f}, expected {p} ± {4 * se:.4f}"
    kept = out != 10
    assert torch.equal(out[kept], y[kept])          # labels not dropped are left unchanged
    assert y.max() < 10                              # the input was not modified in place


def test_drop_labels_is_per_sample_not_per_batch():
    # Per-sample dropout: the number dropped in a batch of B is Binomial(B, p). Dropping a
    # whole batch at once would give only 0 or B, with variance B² p (1 − p) instead.
    B, p, batches = 64, 0.1, 3000
    g = torch.Generator().manual_seed(2)
    counts = torch.tensor([int((dif.drop_labels(torch.zeros(B, dtype=torch.long), p, 10, g) == 10).sum())
                           for _ in range(batches)], dtype=torch.float64)
    assert ((counts > 0) & (counts < B)).float().mean() > 0.99   # mixed batches, almost always
    assert counts.mean().item() == pytest.approx(B * p, rel=0.05)
    assert counts.var().item() == pytest.approx(B * p * (1 - p), rel=0.1)


def test_drop_labels_edge_cases_and_errors():
    y = torch.arange(10)
    assert torch.equal(dif.drop_labels(y, 0.0, 10), y)
    assert torch.equal(dif.drop_labels(y, 1.0, 10), torch.full_like(y, 10))
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    assert torch.equal(dif.drop_labels(y, 0.5, 10, g1), dif.drop_labels(y, 0.5, 10, g2))
    with pytest.raises(ValueError, match=r"p_uncond must be a probability in \[0, 1\], got 1.5"):
        dif.drop_labels(y, 1.5, 10)
    with pytest.raises(ValueError, match="y must be a 1-D integer tensor"):
        dif.drop_labels(y.float(), 0.1, 10)
    with pytest.raises(ValueError, match="null_class must be a non-negative integer, got -1"):
        dif.drop_labels(y, 0.1, -1)


def test_conditional_training_loss_feeds_dropped_labels_to_the_model():
    seen = []

    def spy(xt, t, y):
        seen.append(y.clone())
        return torch.zeros_like(xt)

    spy.config = nets.UNetConfig(**TINY)     # so the null class (10) is read from the config
    s = dif.linear_schedule(50)
    x0 = torch.rand(500, 1, 4, 4) * 2 - 1
    y = torch.arange(500) % 10
    g = torch.Generator().manual_seed(3)
    losses = [dif.conditional_training_loss(spy, x0, y, s, p_uncond=0.2, generator=g).item()
              for _ in range(20)]
    labels = torch.stack(seen)                                       # (20, 500)
    null_share = (labels == 10).double().mean().item()
    assert abs(null_share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / labels.numel())
    assert torch.equal(labels[labels != 10], y.expand(20, -1)[labels != 10])
    assert sum(losses) / len(losses) == pytest.approx(1.0, abs=0.02)   # E[ε²] for ε_θ = 0
    with pytest.raises(ValueError, match="one label per image: x0 has 500, y has 3"):
        dif.conditional_training_loss(spy, x0, y[:3], s)
    with pytest.raises(ValueError, match="class-conditional UNet"):
        dif.conditional_training_loss(lambda xt, t, y: xt, x0, y, s)



def test_drop_labels_null_class_0_and_p_uncond_0_exactly():
    """0 is a valid null class; p_uncond = 0 keeps every label even when the uniform draw is
    exactly 0 (seed 84 draws an exact 0.0 at position 96,765): the test is u < p, not u ≤ p."""
    y = torch.arange(1, 11)
    assert torch.equal(dif.drop_labels(y, 1.0, 0), torch.zeros_like(y))
    n = 100_000
    assert torch.rand(n, generator=torch.Generator().manual_seed(84))[96_765] == 0
    y = torch.ones(n, dtype=torch.long)
    assert torch.equal(dif.drop_labels(y, 0.0, 10, torch.Generator().manual_seed(84)), y)


def test_conditional_training_loss_default_drops_a_tenth_and_checks_y():
    """The default p_uncond is Ho & Salimans' 0.1; a single label (an int) is refused with the
    message about y, not a TypeError from len()."""
    seen = []

    def spy(xt, t, y):
        seen.append(y.clone())
        return torch.zeros_like(xt)

    spy.config = nets.UNetConfig(**TINY)
    s = dif.linear_schedule(50)
    x0, y = torch.zeros(1000, 1, 2, 2), torch.arange(1000) % 10
    g = torch.Generator().manual_seed(8)
    for _ in range(10):
        dif.conditional_training_loss(spy, x0, y, s, generator=g)
    share = (torch.stack(seen) == 10).double().mean().item()
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 10_000)
    with pytest.raises(ValueError, match="y must be a 1-D integer tensor of class labels"):
        dif.conditional_training_loss(spy, x0[:1], 3, s)


# ----------------------------------------------------------------------------- the combination

def test_guided_eps_special_cases_are_exact_and_match_ho_salimans():
    g = torch.Generator().manual_seed(4)
    cond, uncond = torch.randn(2, 64, 1, 28, 28, generator=g)
    assert torch.equal(dif.guided_eps(cond, uncond, 1), cond)       # w = 1: conditional
    assert torch.equal(dif.guided_eps(cond, uncond, 0), uncond)     # w = 0: unconditional
    for w in (2.0, 3.0, 5.0, 0.5, -1.0):
        w_prime = w - 1                                              # Ho & Salimans' weight
        ho_salimans = (1 + w_prime) * cond - w_prime * uncond
        assert torch.allclose(dif.guided_eps(cond, uncond, w), ho_salimans, atol=1e-5)
    # linear in w: the midpoint of w = 1 and w = 3 is w = 2
    mid = (dif.guided_eps(cond, uncond, 1) + dif.guided_eps(cond, uncond, 3)) / 2
    assert torch.allclose(mid, dif.guided_eps(cond, uncond, 2), atol=1e-5)
    with pytest.raises(ValueError, match="w .the guidance weight. must be a finite number, got nan"):
        dif.guided_eps(cond, uncond, float("nan"))
    with pytest.raises(ValueError, match="same shape"):
        dif.guided_eps(cond, uncond[:3], 2.0)


def test_guided_model_matches_separate_network_calls():
    model = tiny_conditional_unet()
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(6, 1, 28, 28, generator=g), torch.tensor([1, 5, 20, 50, 80, 100])
    y = torch.tensor([0, 1, 2, 7, 8, 9])
    null = torch.full_like(y, 10)
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, null)
        assert (cond - uncond).abs().max() > 1e-3      # the class matters in this network
        assert torch.equal(dif.Guided(model, y, 1)(x, t), cond)
        assert torch.equal(dif.Guided(model, y, 0)(x, t), uncond)
        for w in (2.0, 3.0):                          # one batched call of 2B images
            want = uncond + w * (cond - uncond)
            assert torch.allclose(dif.Guided(model, y, w)(x, t), want, atol=1e-5)
    with pytest.raises(ValueError, match="built for 6 labels but got a batch of 2"):
        dif.Guided(model, y, 2.0)(x[:2], t[:2])


def test_guided_checks_labels_at_once_and_w_0_makes_one_unconditional_call():
    """Labels are checked when Guided is built (not deep inside a sampler); w = 0 is the
    unconditional model and costs one network call on B images, not 2B."""
    with pytest.raises(ValueError, match="y must be a 1-D integer tensor"):
        dif.Guided(tiny_conditional_unet(), torch.tensor([1.0, 2.0]), 2.0)
    calls = []

    def spy(x, t, y):
        calls.append((len(x), y.clone()))
        return torch.zeros_like(x)

    spy.config = nets.UNetConfig(**TINY)
    dif.Guided(spy, torch.tensor([3, 4]), 0)(torch.zeros(2, 1, 4, 4), torch.tensor([5, 5]))
    assert len(calls) == 1 and calls[0][0] == 2 and torch.equal(calls[0][1], torch.tensor([10, 10]))


def test_unet_rejects_labels_out_of_range():
    model = tiny_conditional_unet()
    x, t = torch.zeros(2, 1, 28, 28), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"labels in 0..10 .10 = no class., got shape \(2,\), "
                                         r"dtype torch.int64, values in \[3, 11\]"):
        model(x, t, torch.tensor([3, 11]))
    with pytest.raises(ValueError, match=r"y must be an integer tensor of shape \(2,\)"):
        model(x, t, torch.tensor([1.0, 2.0]))


def test_guided_sample_shapes_and_repeatability():
    model = tiny_conditional_unet()
    s = dif.cosine_schedule(20)
    y = torch.tensor([0, 3, 3, 9, 1])
    a = dif.guided_sample(model, y, 2.0, s, S=4, generator=torch.Generator().manual_seed(0),
                          batch_size=2)
    b = dif.guided_sample(model, y, 2.0, s, S=4, generator=torch.Generator().manual_seed(0),
                          batch_size=2)
    assert a.shape == (5, 1, 28, 28) and torch.equal(a, b)
    c = dif.guided_sample(model, y, 2.0, s, S=None, generator=torch.Generator().manual_seed(0))
    assert c.shape == (5, 1, 28, 28) and torch.isfinite(c).all() and c.abs().max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        dif.guided_sample(model, y, 2.0, s, S=4, batch_size=0)
    one = dif.guided_sample(model, y[:2], 2.0, s, S=4, batch_size=1,      # one image per call
                            generator=torch.Generator().manual_seed(0))
    assert one.shape == (2, 1, 28, 28)
    none = dif.guided_sample(model, y[:0], 2.0, s, S=4)                    # no labels, no images
    assert none.shape == (0, 1, 28, 28)
    with pytest.raises(ValueError, match="y must be a 1-D integer tensor"):
        dif.guided_sample(model, [0, 3], 2.0, s, S=4)


def test_guided_sample_eta_is_ddim_noise_level():
    """eta reaches the DDIM loop: η = 1 equals ddim_sample_loop with η = 1 on the guided estimate,
    differs from η = 0, and repeats with a seeded generator; DDPM (S = None) refuses an η."""
    model = tiny_conditional_unet()
    s = dif.cosine_schedule(20)
    y = torch.tensor([0, 3, 9])
    one = dif.guided_sample(model, y, 2.0, s, S=4, eta=1.0, generator=torch.Generator().manual_seed(5))
    again = dif.guided_sample(model, y, 2.0, s, S=4, eta=1.0, generator=torch.Generator().manual_seed(5))
    direct = dif.ddim_sample_loop(dif.Guided(model, y, 2.0), (3, 1, 28, 28), s, 4, eta=1.0,
                                  generator=torch.Generator().manual_seed(5))
    zero = dif.guided_sample(model, y, 2.0, s, S=4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(one, again) and torch.allclose(one, direct, atol=1e-6)
    assert (one - zero).abs().max() > 1e-2
    for bad in (-0.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=r"eta \(DDIM's noise level\) must be a finite number ≥ 0, "
                                             rf"got {re.escape(repr(bad))}"):
            dif.guided_sample(model, y, 2.0, s, S=4, eta=bad)
    with pytest.raises(ValueError, match=r"eta applies to DDIM \(S given\); DDPM \(S = None\) has "
                                         r"its own noise, got eta=0.5"):
        dif.guided_sample(model, y, 2.0, s, S=None, eta=0.5)
    for bad in (-0.5, "1"):   # an invalid η is named as such, also where DDPM would refuse any η
        with pytest.raises(ValueError, match=r"eta \(DDIM's noise level\) must be a finite number ≥ 0, "
                                             rf"got {re.escape(repr(bad))}"):
            dif.guided_sample(model, y, 2.0, s, S=None, eta=bad)


# ----------------------------------------------------------------------------- checkpoints and grids

def test_save_and_load_model_round_trip(tmp_path):
    model = tiny_conditional_unet()
    s = dif.cosine_schedule(30)
    path = dif.save_model(tmp_path / "m.pt", model, s, epochs=3, source="test")
    loaded, s2, meta = dif.load_model(path)
    assert meta == {"epochs": 3, "source": "test"} and loaded.config == model.config
    assert torch.allclose(s2.alpha_bar, s.alpha_bar)
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 10, 30]), torch.tensor([2, 4, 10])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="was not written by helpers.diffusion.save_model"):
        dif.load_model(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="model must be a helpers.nets.UNet, got Linear"):
        dif.save_model(tmp_path / "x.pt", torch.nn.Linear(2, 2), s)


def test_sample_grid_writes_a_png_with_one_row_per_class(tmp_path):
    path = dif.save_model(tmp_path / "m.pt", tiny_conditional_unet(), dif.cosine_schedule(20))
    out, x = dif.sample_grid(path, [1, 7], w=3.0, out=tmp_path / "grid.png", n_per_class=3, S=4)
    assert out == tmp_path / "grid.png" and x.shape == (6, 1, 28, 28)
    assert 0 <= x.min() and x.max() <= 1
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "m.pt"]  # no temporaries
    _, again = dif.sample_grid(path, [1, 7], w=3.0, out=tmp_path / "grid.png", n_per_class=3, S=4)
    assert torch.equal(x, again)                                  # the seed fixes the samples
    # the images are the guided samples mapped from [−1, 1] to [0, 1] (x + 1) / 2
    model, s, _ = dif.load_model(path)
    y = torch.tensor([1, 7]).repeat_interleave(3)
    direct = dif.guided_sample(model, y, 3.0, s, S=4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, ((direct + 1) / 2).clamp(0, 1), atol=1e-6)
    # one class may be given as an int (class 0 included), and out as a string
    _, single = dif.sample_grid(path, 0, w=3.0, out=str(tmp_path / "grid.png"), n_per_class=2, S=4)
    _, listed = dif.sample_grid(path, [0], w=3.0, out=tmp_path / "grid.png", n_per_class=2, S=4)
    assert single.shape == (2, 1, 28, 28) and torch.equal(single, listed)
    # load_model puts the model on the device asked for (meta: a device every machine has)
    on_meta, _, _ = dif.load_model(path, device="meta")
    assert next(on_meta.parameters()).device.type == "meta"


def test_sample_grid_figure_shows_the_samples_with_a_label_beside_each_row(tmp_path, monkeypatch):
    """The PNG's image is the samples (0 black, 1 white, white padding), each class label sits
    at the height of its own row, and the title names the guidance weight and the sampler."""
    from matplotlib.figure import Figure

    drawn, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k)))
    path = dif.save_model(tmp_path / "m.pt", tiny_conditional_unet(), dif.cosine_schedule(20))
    classes = list(range(10))
    _, x = dif.sample_grid(path, classes, w=2.5, out=tmp_path / "g.png", n_per_class=2, S=2)
    (fig,) = drawn
    (ax,) = fig.axes
    (im,) = ax.images
    grid = im.get_array()
    assert grid.shape == (2 + 30 * 10, 2 + 30 * 2)                 # 28-pixel digits, 2 padding
    for i in range(len(x)):
        r, c = divmod(i, 2)
        assert np.allclose(grid[2 + 30 * r:30 + 30 * r, 2 + 30 * c:30 + 30 * c], x[i, 0].numpy())
    assert (grid[:2] >= 1).all() and (grid[:, :2] >= 1).all()     # the padding shows white
    assert np.allclose(im.to_rgba(np.array([0.0, 1.0]))[:, :3], [[0, 0, 0], [1, 1, 1]])
    ticks, labels = ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [str(c) for c in classes]
    centres = [2 + 30 * r + 13.5 for r in range(10)]              # middle of each row's pixels
    assert np.allclose(ticks, centres, atol=1.0)
    assert fig.get_suptitle() == "w = 2.5, DDIM S = 2"
    dif.sample_grid(path, [1], w=1.0, out=tmp_path / "g.png", n_per_class=2, S=2, eta=1.0)
    assert drawn[-1].get_suptitle() == "w = 1, DDIM S = 2, η = 1"


def test_sample_grid_defaults_are_the_scripts(tmp_path, monkeypatch):
    """The notebook calls sample_grid with its defaults and scripts/sample_guided.py with its
    own (8 per class, DDIM with 50 steps, seed 0): the same checkpoint must give the same PNG."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sample_guided", ROOT / "scripts" / "sample_guided.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = dif.save_model(tmp_path / "m.pt", tiny_conditional_unet(), dif.cosine_schedule(60))
    monkeypatch.setenv("DGM_DEVICE", "cpu")                    # sample_grid's default device
    assert script.main([str(path), "--classes", "3", "--w", "2", "--out", str(tmp_path / "a.png")]) == 0
    dif.sample_grid(path, [3], 2.0, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_sample_grid_errors_leave_nothing_behind(tmp_path, monkeypatch):
    path = dif.save_model(tmp_path / "m.pt", tiny_conditional_unet(), dif.cosine_schedule(20))
    with pytest.raises(ValueError, match=r"classes must be a non-empty list of integers in 0..9, "
                                         r"got \[3, 10\]"):
        dif.sample_grid(path, [3, 10], 1.0, tmp_path / "g.png")
    with pytest.raises(ValueError, match="out must be a path ending in .png"):
        dif.sample_grid(path, [3], 1.0, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="n_per_class must be a positive integer, got 0"):
        dif.sample_grid(path, [3], 1.0, tmp_path / "g.png", n_per_class=0)
    uncond = dif.save_model(tmp_path / "u.pt", nets.UNet(nets.UNetConfig(base_channels=8, groups=4,
                                                                          num_heads=2)),
                            dif.cosine_schedule(20))
    with pytest.raises(ValueError, match="holds an unconditional UNet"):
        dif.sample_grid(uncond, [3], 1.0, tmp_path / "g.png")

    from matplotlib.figure import Figure

    def broken_savefig(self, f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        dif.sample_grid(path, [3], 1.0, tmp_path / "g.png", n_per_class=1, S=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "u.pt"]   # no partial PNG


def test_sample_guided_script(tmp_path):
    path = dif.save_model(tmp_path / "m.pt", tiny_conditional_unet(), dif.cosine_schedule(20))
    env = {**os.environ, "DGM_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample_guided.py"), str(path),
                          "--classes", "0", "5", "--w", "2", "--n-per-class", "2", "--steps", "3",
                          "--out", str(tmp_path / "s.png")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and (tmp_path / "s.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample_guided.py"), str(path),
                          "--classes", "12", "--out", str(tmp_path / "t.png")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "classes must be a non-empty list" in bad.stderr
    assert not (tmp_path / "t.png").exists()
    eta = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample_guided.py"), str(path),
                          "--classes", "1", "--n-per-class", "2", "--steps", "3", "--eta", "1",
                          "--out", str(tmp_path / "e.png")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert eta.returncode == 0 and "η = 1)" in eta.stdout, eta.stderr
    for args, message in ((["--ddpm", "--eta", "1"], "--eta applies to DDIM"),
                          (["--eta", "-1"], "eta (DDIM's noise level) must be a finite number ≥ 0")):
        refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample_guided.py"), str(path),
                                  *args, "--out", str(tmp_path / "f.png")],
                                 capture_output=True, text=True, env=env, timeout=300)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "f.png").exists()


# ----------------------------------------------------------------------------- diversity

def test_mean_pairwise_distance_known_answers():
    assert metrics.mean_pairwise_distance(torch.tensor([[0.0], [3.0]])) == pytest.approx(3.0)
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    assert metrics.mean_pairwise_distance(triangle) == pytest.approx(1.0)
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # 4 sides, 2 diagonals
    assert metrics.mean_pairwise_distance(square) == pytest.approx((4 + 2 * math.sqrt(2)) / 6)
    with pytest.raises(ValueError, match=r"features must be a tensor \(N, D\) with N ≥ 2"):
        metrics.mean_pairwise_distance(torch.zeros(1, 3))


def test_within_class_diversity_is_zero_for_copies_and_grows_with_spread():
    clf = metrics.MNISTClassifier().eval()
    g = torch.Generator().manual_seed(6)
    base = torch.rand(2, 1, 28, 28, generator=g)
    copies = base.repeat_interleave(5, dim=0)                       # 5 copies of each of 2 images
    y = torch.tensor([0] * 5 + [1] * 5)
    assert metrics.within_class_diversity(clf, copies, y) == pytest.approx(0.0, abs=1e-9)
    varied = torch.rand(10, 1, 28, 28, generator=g)
    assert metrics.within_class_diversity(clf, varied, y) > 0
    with pytest.raises(ValueError, match="one label per image"):
        metrics.within_class_diversity(clf, varied, y[:4])
    with pytest.raises(ValueError, match="at least one class with 2 or more images"):
        metrics.within_class_diversity(clf, varied[:2], torch.tensor([0, 1]))
