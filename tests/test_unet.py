import re

import pytest
import torch

from helpers import nets


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised layers random weights: at initialisation every residual branch
    and the output are zero, so the output would not depend on anything."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model.eval()


SMALL = nets.UNetConfig(base_channels=8, groups=4, num_heads=2)


@pytest.mark.parametrize("config", [SMALL, nets.UNetConfig(base_channels=8, groups=4, num_heads=2,
                                                            channel_mults=(1, 2), num_res_blocks=2,
                                                            attention=False)])
def test_shapes(config):
    model = nets.UNet(config)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([1, 500, 1000])
    assert model(x, t).shape == (3, 1, 28, 28)


def test_zero_initialised_output():
    """The output layer starts at zero, so training starts from ε_θ = 0 (loss = 1)."""
    out = nets.UNet(SMALL)(torch.randn(2, 1, 28, 28), torch.tensor([3, 4]))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_time_step():
    model = _randomised(nets.UNet(SMALL))
    x = torch.randn(1, 1, 28, 28).expand(3, 1, 28, 28)
    out = model(x, torch.tensor([1, 2, 900]))
    assert not torch.allclose(out[0], out[1], atol=1e-6)
    assert (out[0] - out[2]).abs().mean() > (out[0] - out[1]).abs().mean()  # nearer t, nearer output


def test_class_conditioning():
    cfg = nets.UNetConfig(base_channels=8, groups=4, num_heads=2, num_classes=10)
    model = _randomised(nets.UNet(cfg))
    assert model.class_emb.num_embeddings == 11  # ten digits and the null class
    x, t = torch.randn(1, 1, 28, 28).expand(2, 1, 28, 28), torch.tensor([100, 100])
    assert not torch.allclose(*model(x, t, torch.tensor([3, 7])), atol=1e-6)
    assert torch.equal(model(x, t), model(x, t, torch.tensor([10, 10])))  # None means null class
    with pytest.raises(ValueError, match="y was given but UNetConfig.num_classes is None"):
        nets.UNet(SMALL)(x, t, torch.tensor([1, 2]))


def test_class_conditional_output_depends_on_time_step():
    """A conditional net must still read t: kills a class embedding that replaces the time one."""
    cfg = nets.UNetConfig(base_channels=8, groups=4, num_heads=2, num_classes=10)
    model = _randomised(nets.UNet(cfg))
    x, y = torch.randn(1, 1, 28, 28).expand(3, 1, 28, 28), torch.tensor([4, 4, 4])
    out = model(x, torch.tensor([1, 2, 900]), y)
    assert not torch.allclose(out[0], out[1], atol=1e-6)
    assert (out[0] - out[2]).abs().mean() > (out[0] - out[1]).abs().mean()
    null = model(x, torch.tensor([1, 2, 900]))          # the null class reads t too
    assert not torch.allclose(null[0], null[2], atol=1e-6)


@pytest.mark.parametrize("c_in, c_out", [(8, 8), (8, 16)])
def test_residual_block_is_the_identity_path_at_initialisation(c_in, c_out):
    """Its last conv starts at zero, so a fresh block returns skip(x) whatever the embedding."""
    torch.manual_seed(0)
    block = nets.ResBlock(c_in, c_out, emb_dim=12, groups=4, dropout=0.0)
    x, emb = torch.randn(2, c_in, 7, 7), torch.randn(2, 12)
    assert torch.equal(block(x, emb), block.skip(x))
    if c_in == c_out:
        assert torch.equal(block(x, emb), x)


def test_residual_block_computes_ho_et_al_block_with_its_layers():
    """x ↦ skip(x) + conv2(drop(SiLU(norm2(conv1(SiLU(norm1(x))) + Linear(SiLU(emb)))))), written
    out with the block's own trained layers: a sign slip in the embedding shift or the residual
    sum changes what every saved network computes."""
    torch.manual_seed(1)
    for c_in, c_out in ((8, 8), (8, 16)):
        block = _randomised(nets.ResBlock(c_in, c_out, emb_dim=12, groups=4, dropout=0.0))
        x, emb = torch.randn(2, c_in, 7, 7), torch.randn(2, 12)
        F = torch.nn.functional
        h = block.conv1(F.silu(block.norm1(x))) + block.emb(F.silu(emb))[:, :, None, None]
        want = block.skip(x) + block.conv2(F.silu(block.norm2(h)))
        assert torch.allclose(block(x, emb), want, atol=1e-5)


def test_self_attention_matches_torch_multihead_attention():
    """Against torch.nn.MultiheadAttention with the same weights: the 1×1 qkv conv is its
    in-projection (q, k, v stacked, heads of C/heads consecutive channels), the out conv its
    out-projection, over the H·W positions of the normalised map; plus the residual x."""
    torch.manual_seed(2)
    C, heads = 16, 4
    attn = nets.SelfAttention(C, heads=heads, groups=4).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    mha = torch.nn.MultiheadAttention(C, heads, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight.view(3 * C, C))
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.out.weight.view(C, C))
        mha.out_proj.bias.copy_(attn.out.bias)
    x = torch.randn(2, C, 5, 6)                               # H ≠ W: rows and columns apart
    seq = attn.norm(x).flatten(2).transpose(1, 2)             # (B, H·W, C)
    with torch.no_grad():
        out, _ = mha(seq, seq, seq, need_weights=False)
        want = x + out.transpose(1, 2).reshape(2, C, 5, 6)
        assert torch.allclose(attn(x), want, atol=1e-5)


def test_self_attention_is_the_identity_at_initialisation():
    torch.manual_seed(0)
    attn = nets.SelfAttention(16, heads=2, groups=4)
    x = torch.randn(2, 16, 7, 7)
    assert torch.equal(attn(x), x)
    with torch.no_grad():                                 # and is not once its output is trained
        attn.out.weight.normal_(0, 0.1)
    assert not torch.allclose(attn(x), x, atol=1e-4)


def test_parameter_count_is_configurable():
    n = {c: nets.count_parameters(nets.UNet(nets.UNetConfig(base_channels=c))) for c in (16, 32)}
    assert 3.5 < n[32] / n[16] < 4.1  # almost all weights are convolutions: ∝ channels²
    without = nets.count_parameters(nets.UNet(nets.UNetConfig(base_channels=16, attention=False)))
    assert without < n[16]
    assert nets.count_parameters(nets.UNet(nets.UNetConfig(base_channels=16, num_res_blocks=2))) > n[16]


def test_gradients_reach_every_parameter():
    model = _randomised(nets.UNet(SMALL)).train()
    model(torch.randn(2, 1, 28, 28), torch.tensor([5, 50])).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("kwargs, message", [
    ({"base_channels": 0}, r"UNetConfig.base_channels must be a positive integer, got 0"),
    ({"channel_mults": ()}, r"channel_mults must be a non-empty tuple of positive integers, got \(\)"),
    ({"channel_mults": [1, 2]}, r"channel_mults must be a non-empty tuple"),
    ({"channel_mults": (1, 2, 2, 2)}, r"at most 3 entries for 28 × 28 images"),
    ({"base_channels": 12}, r"groups=8 must divide every width base_channels · mult, got 12 · 1"),
    ({"num_heads": 3}, r"num_heads=3 must divide the lowest resolution's width 64"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"num_classes": 0}, r"num_classes must be a positive integer, got 0"),
    ({"time_dim": -1}, r"time_dim must be a positive integer, got -1"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nets.UNetConfig(**kwargs)


def test_default_network_is_the_one_the_notebooks_describe():
    """UNetConfig() is the network of the diffusion notebooks (their timings and results): 32
    channels, mults (1, 2, 2), one block per level, attention at 7 × 7."""
    cfg = nets.UNetConfig()
    assert (cfg.base_channels, cfg.channel_mults, cfg.num_res_blocks, cfg.attention) == (
        32, (1, 2, 2), 1, True)
    assert nets.count_parameters(nets.UNet()) == 1_062_497


def test_config_accepts_valid_edge_cases_and_rejects_a_zero_mult():
    nets.UNetConfig(base_channels=8, groups=8, channel_mults=(1, 2), num_heads=2)  # 8·2 % 8 == 0
    with pytest.raises(ValueError, match="non-empty tuple of positive integers"):
        nets.UNetConfig(channel_mults=(1, 0))


def test_config_is_immutable():
    """A model's config describes its layers: changing it afterwards would make it lie (and
    save_model would write the wrong network)."""
    cfg = nets.UNetConfig(base_channels=8, groups=4, num_heads=2)
    with pytest.raises(AttributeError):
        cfg.base_channels = 16


def test_num_heads_must_divide_the_width_of_the_last_level():
    """Attention runs at the lowest resolution, whose width is base · channel_mults[-1]."""
    nets.UNetConfig(base_channels=8, groups=4, channel_mults=(1, 2, 4), num_heads=32)  # 32 | 32
    nets.UNetConfig(base_channels=8, groups=4, channel_mults=(2,), num_heads=16)       # one level
    with pytest.raises(ValueError, match=r"num_heads=12 must divide the lowest resolution's "
                                         r"width 32"):
        nets.UNetConfig(base_channels=8, groups=4, channel_mults=(1, 2, 4), num_heads=12)


def test_class_and_time_embeddings_enter_as_a_sum():
    """emb = time_mlp(t) + class_emb(y): give class a the time embedding of t₁ and class b that
    of t₂, and (t₂, a) and (t₁, b) must give the same output (a difference would not)."""
    cfg = nets.UNetConfig(base_channels=8, groups=4, num_heads=2, num_classes=10)
    model = _randomised(nets.UNet(cfg))
    t1, t2 = torch.tensor([30]), torch.tensor([700])
    with torch.no_grad():
        for row, t in ((2, t1), (5, t2)):
            model.class_emb.weight[row] = model.time_mlp(nets.sinusoidal_embedding(t, 8))[0]
        x = torch.randn(1, 1, 28, 28)
        a = model(x, t2, torch.tensor([2]))
        b = model(x, t1, torch.tensor([5]))
    assert (a - model(x, t1, torch.tensor([2]))).abs().max() > 1e-3   # t matters here
    assert torch.allclose(a, b, atol=1e-5)


def test_images_need_not_be_square():
    """H and W are checked one by one: 28 × 32 works, 28 × 30 and 30 × 28 are refused."""
    model = _randomised(nets.UNet(SMALL))
    assert model(torch.randn(2, 1, 28, 32), torch.tensor([1, 2])).shape == (2, 1, 28, 32)
    for shape in ((2, 1, 28, 30), (2, 1, 30, 28)):
        with pytest.raises(ValueError, match=r"H and W\s+divisible by 4, got " + re.escape(str(shape))):
            model(torch.zeros(shape), torch.tensor([1, 2]))


def test_bad_inputs():
    model = nets.UNet(SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\) .* got \(2, 3, 28, 28\)"):
        model(torch.zeros(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(2,\) .* got \(1,\)"):
        model(torch.zeros(2, 1, 28, 28), torch.tensor([1]))


# ----------------------------------------------------------------------------- other sizes
# The diffusion trainer's nets: C channels, other image sizes, attention at more levels. The
# defaults above stay the notebooks' net; these only add.

CIFAR_SMALL = nets.UNetConfig(in_channels=3, image_size=32, base_channels=8, groups=4, num_heads=2,
                              channel_mults=(1, 2, 2, 2), attention_levels=(1,), num_classes=10)


def test_colour_images_of_another_size():
    model = _randomised(nets.UNet(CIFAR_SMALL)).train()
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 900]), torch.tensor([3, 10])
    out = model(x, t, y)
    assert out.shape == (2, 3, 32, 32)
    out.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"


def test_attention_levels_add_one_attention_per_block_of_the_level():
    """Level 1 has num_res_blocks blocks down and num_res_blocks + 1 up; each gains a
    SelfAttention of width base · mult: 2c (GroupNorm) + 3c² + 3c (qkv) + c² + c (out)."""
    plain = nets.UNetConfig(**{**CIFAR_SMALL.__dict__, "attention_levels": ()})
    c, blocks = 8 * 2, 2 * CIFAR_SMALL.num_res_blocks + 1
    extra = blocks * (2 * c + 3 * c * c + 3 * c + c * c + c)
    assert (nets.count_parameters(nets.UNet(CIFAR_SMALL))
            - nets.count_parameters(nets.UNet(plain))) == extra
    kinds = [type(m).__name__ for m in nets.UNet(CIFAR_SMALL).modules()]
    assert kinds.count("AttentionResBlock") == blocks


def test_image_size_bounds_the_number_of_levels():
    nets.UNetConfig(image_size=32, channel_mults=(1, 1, 1, 1, 1, 1))  # 32 → 16 → 8 → 4 → 2 → 1
    with pytest.raises(ValueError, match=r"at most 6 entries for 32 × 32 images \(32 → 16 → 8 → 4 → 2 → 1\)"):
        nets.UNetConfig(image_size=32, channel_mults=(1,) * 7)
    model = nets.UNet(nets.UNetConfig(image_size=32, in_channels=3, channel_mults=(1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\) with H and W divisible by 8, got \(1, 3, 28, 28\)"):
        model(torch.zeros(1, 3, 28, 28), torch.tensor([1]))


@pytest.mark.parametrize("kwargs, message", [
    ({"attention_levels": (3,)}, r"attention_levels must be a tuple of distinct levels in 0..2"),
    ({"attention_levels": [0]}, r"attention_levels must be a tuple"),
    ({"attention_levels": (0, 0)}, r"distinct levels"),
    ({"image_size": 0}, r"image_size must be a positive integer, got 0"),
    ({"num_heads": 3, "attention": False, "attention_levels": (0,)},
     r"num_heads=3 must divide the width 32 of attention level 0"),
])
def test_bad_new_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nets.UNetConfig(**kwargs)


def test_saved_sampler_keeps_the_new_options(tmp_path):
    from helpers import diffusion

    model = nets.UNet(CIFAR_SMALL)
    path = diffusion.save_model(tmp_path / "m.pt", model, diffusion.cosine_schedule(50))
    loaded, schedule, _ = diffusion.load_model(path)
    assert loaded.config == CIFAR_SMALL and schedule.T == 50
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))


def test_scale_shift_block_matches_adagn_written_out():
    """With scale_shift the block is conv2(SiLU((1 + s) · GroupNorm(conv1(SiLU(GN(x)))) + b)) + x,
    where (s, b) = Linear(SiLU(emb)) split in two (AdaGN, Dhariwal & Nichol 2021, §3); computed
    here with torch.nn.functional from the block's weights, not through its forward."""
    torch.manual_seed(1)
    block = _randomised(nets.ResBlock(8, 8, emb_dim=12, groups=4, dropout=0.0, scale_shift=True))
    x, emb = torch.randn(3, 8, 7, 7), torch.randn(3, 12)
    F = torch.nn.functional
    h = F.conv2d(F.silu(F.group_norm(x, 4, block.norm1.weight, block.norm1.bias)),
                 block.conv1.weight, block.conv1.bias, padding=1)
    e = F.linear(F.silu(emb), block.emb.weight, block.emb.bias)
    s, b = e[:, :8, None, None], e[:, 8:, None, None]
    h = (1 + s) * F.group_norm(h, 4, block.norm2.weight, block.norm2.bias) + b
    want = x + F.conv2d(F.silu(h), block.conv2.weight, block.conv2.bias, padding=1)
    torch.testing.assert_close(block(x, emb), want, rtol=1e-5, atol=1e-5)
    # without scale_shift the same weights (the shift half) give the plain block's shift only
    plain = nets.ResBlock(8, 8, emb_dim=12, groups=4, dropout=0.0)
    assert plain.emb.out_features == 8 and block.emb.out_features == 16


def test_scale_shift_net_trains_saves_and_refuses_a_non_bool(tmp_path):
    from helpers import diffusion

    cfg = nets.UNetConfig(base_channels=8, groups=4, num_heads=2, scale_shift=True)
    model = _randomised(nets.UNet(cfg)).train()
    plain = nets.count_parameters(nets.UNet(SMALL))
    # one extra output per channel in each block's embedding layer: E · C_out + C_out more
    extra = sum(m.emb.out_features // 2 * (m.emb.in_features + 1)
                for m in model.modules() if isinstance(m, nets.ResBlock))
    assert nets.count_parameters(model) == plain + extra
    model(torch.randn(2, 1, 28, 28), torch.tensor([5, 50])).square().mean().backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())
    path = diffusion.save_model(tmp_path / "ss.pt", model, diffusion.linear_schedule(50))
    loaded, _, _ = diffusion.load_model(path)
    assert loaded.config.scale_shift is True
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 40])
    torch.testing.assert_close(loaded.eval()(x, t), model.eval()(x, t))
    with pytest.raises(ValueError, match=r"UNetConfig.scale_shift must be True or False, got 1"):
        nets.UNetConfig(scale_shift=1)
