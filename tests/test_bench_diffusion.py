"""The diffusion benchmark's v-prediction recipe (benchmarks/bench_diffusion.py, issue 22): the
target, its conversion to ε for the samplers, and the recipe's refusals."""

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from helpers import diffusion as dif

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_diffusion",
                                               ROOT / "benchmarks" / "bench_diffusion.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_diffusion"] = bench  # dataclasses look their module up there
_data_before = os.environ.get("DGM_DATA")
_spec.loader.exec_module(bench)
if _data_before is None:  # the script defaults DGM_DATA to offline; keep it out of other tests
    os.environ.pop("DGM_DATA", None)


class _Oracle(torch.nn.Module):
    """Returns a fixed tensor whatever it is asked: a network that knows the answer."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, xt, t):
        return self.out


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_a_perfect_v_predictor_seen_as_eps_returns_the_noise(name):
    """Independent route: x_t from helpers.diffusion.q_sample with known x_0 and ε; a network
    returning the exact v of those, wrapped by VAsEps, must give back ε, at every step; and
    √ᾱ x_t − √(1−ᾱ) v gives back x_0 (the README's x̂_0 from v)."""
    torch.manual_seed(0)
    schedule = dif.make_schedule(name, 400)
    x0 = torch.rand(8, 1, 6, 6, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    for step in (1, 2, 100, 399, 400):
        t = torch.full((8,), step)
        xt = dif.q_sample(x0, t, schedule, noise)
        v = bench.v_target(x0, noise, t, schedule)
        eps = bench.VAsEps(_Oracle(v), schedule)(xt, t)
        torch.testing.assert_close(eps, noise, rtol=0, atol=1e-6)
        ab = dif.extract(schedule.alpha_bar, t, 4)  # as v_target has it; x̂_0 = √ᾱ x_t − √(1−ᾱ) v
        torch.testing.assert_close(ab.sqrt() * xt - (1 - ab).sqrt() * v, x0, rtol=0, atol=1e-6)


def test_v_is_a_rotation_of_noise_and_data():
    """v and x_t are (x_0, ε) rotated by the angle φ with cos φ = √ᾱ: their norms match (for
    each pixel v² + x_t² = x_0² + ε²), the check of Salimans & Ho's definition by a second route."""
    torch.manual_seed(1)
    schedule = dif.make_schedule("linear", 400)
    x0 = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.randint(1, 401, (16,))
    xt = dif.q_sample(x0, t, schedule, noise)
    v = bench.v_target(x0, noise, t, schedule)
    torch.testing.assert_close(v**2 + xt**2, x0**2 + noise**2)


def test_the_v_recipe_trains_and_samples_through_the_eps_samplers():
    """Two training steps of a small v-predicting U-Net: the returned network is wrapped, its
    ε has the images' shape, and DDIM draws finite images from it."""
    recipe = dataclasses.replace(bench.RECIPES["s+v"],
                                 make_model=bench.unet(base_channels=8, groups=4, num_heads=2),
                                 bf16=False, bf16_sampling=False)
    x0 = torch.rand(16, 1, 28, 28) * 2 - 1
    net, schedule, info = bench.train(recipe, x0, None, seed=0, steps=2)
    assert isinstance(net, bench.VAsEps) and info["steps"] == 2
    x, _ = bench.draw(recipe, net, schedule, "DDIM", 4, 4, seed=1)
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()


def test_a_recipe_with_an_unknown_prediction_or_v_with_min_snr_is_refused():
    """Refused when the recipe is made, not at its first training step."""
    with pytest.raises(ValueError, match=r"Recipe.prediction must be 'eps' or 'v', got 'x0'"):
        dataclasses.replace(bench.RECIPES["second"], prediction="x0")
    with pytest.raises(ValueError, match=r"min_snr_gamma .* must be None, got 5.0"):
        dataclasses.replace(bench.RECIPES["s+v"], min_snr_gamma=5.0)


def test_every_recipe_builds_the_network_it_names():
    """Each recipe's network is made and maps images to images; the one-change variants of
    ``second`` differ from it in the setting they name (checked on the built network)."""
    nets_ = {name: recipe.make_model() for name, recipe in bench.RECIPES.items()}
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 300])
    for name, net in nets_.items():
        assert net(x, t).shape == x.shape, name
    assert nets_["s+m124"].config.channel_mults == (1, 2, 4)
    assert nets_["s+ss"].config.scale_shift and not nets_["second"].config.scale_shift
    assert nets_["s+drop"].config.dropout == 0.1 and nets_["second"].config.dropout == 0.0
    for name in ("s+m124", "s+ss", "s+drop"):
        a, b = bench.RECIPES[name], bench.RECIPES["second"]
        assert (a.lr, a.warmup_cosine, a.batch_size, a.T) == (b.lr, b.warmup_cosine, b.batch_size, b.T)


def test_p2_weighting_with_gamma_one_weights_each_image_by_one_minus_alpha_bar():
    """Independent route: with k = 1 and γ = 1, 1 / (1 + SNR_t) = 1 − ᾱ_t (SNR = ᾱ / (1 − ᾱ)).
    The same generator seed gives the reference the loss function's t and ε; the network is an
    oracle returning a fixed tensor, so each image's squared error is known."""
    recipe = bench.RECIPES["s+p2"]
    schedule = dif.make_schedule(recipe.schedule, recipe.T)
    x0 = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    loss = bench.loss_fn(recipe, _Oracle(out), x0, schedule, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    t = torch.randint(1, schedule.T + 1, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    per_image = ((noise - out) ** 2).mean(dim=(1, 2, 3))
    expected = (per_image * (1 - schedule.alpha_bar[t].float())).mean()
    assert torch.allclose(loss, expected, rtol=1e-5), (loss.item(), expected.item())
    plain = bench.loss_fn(bench.RECIPES["second"], _Oracle(out), x0, schedule,
                          torch.Generator().manual_seed(7))
    assert torch.allclose(plain, per_image.mean(), rtol=1e-5)   # the same draws, unweighted
    with pytest.raises(ValueError, match=r"choose one loss weighting.* got 5.0 and 1.0"):
        dataclasses.replace(recipe, min_snr_gamma=5.0)


def test_train_digits_out_of_range_is_refused_naming_the_flag(capsys, monkeypatch):
    monkeypatch.setenv("DGM_DATA", "offline")
    with pytest.raises(SystemExit):
        bench.main(["--recipes", "second", "--steps", "1", "--train-digits", "1"])
    assert "--train-digits must be between 2 and 4000" in capsys.readouterr().err


class _CountingZero(torch.nn.Module):
    """Predicts ε = 0 and counts its calls (the number of steps a sampler took)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, xt, t):
        self.calls += 1
        return torch.zeros_like(xt)


def test_draw_passes_each_variants_options_to_every_chunk(monkeypatch):
    """The defect mended on 3 December: draw() rebound its options inside the chunk loop, so a
    DDIM variant with steps = 100 drew only its first chunk with S = 100 and the rest with 50.
    250 samples in chunks of 100 are 3 chunks; each must take S = 100 network calls."""
    recipe = bench.RECIPES["second"]
    schedule = dif.make_schedule(recipe.schedule, recipe.T)
    net = _CountingZero()
    x, _ = bench.draw(recipe, net, schedule, "DDIM", n=250, batch=100, seed=0, steps=100, eta=1.0)
    assert x.shape == (250, 1, 28, 28)
    assert net.calls == 3 * 100, f"{net.calls} network calls for 3 chunks of S = 100"
    net.calls = 0
    bench.draw(recipe, net, schedule, "DDIM", n=250, batch=100, seed=0)   # the default S = 50
    assert net.calls == 3 * 50, net.calls
    seen = []

    def recorder(model, shape, schedule, **kw):
        seen.append((shape[0], kw.get("variance")))
        return torch.zeros(shape)

    monkeypatch.setattr(bench.diffusion, "p_sample_loop", recorder)
    bench.draw(recipe, net, schedule, "DDPM", n=250, batch=100, seed=0, variance="beta")
    assert seen == [(100, "beta"), (100, "beta"), (50, "beta")], seen
