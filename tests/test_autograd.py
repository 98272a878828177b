"""The reference autograd engine (helpers.autograd) against torch.autograd and central finite
differences in float64, on random inputs with broadcast shapes; a whole MLP against PyTorch; the
reused-node (diamond) case; the optimisers against torch.optim; the .npz round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import autograd as ag

RNG = np.random.default_rng(0)


def _inputs(*shapes, positive=False):
    rng = np.random.default_rng(len(shapes) * 100 + sum(len(s) for s in shapes))
    return [rng.uniform(0.5, 2.0, s) if positive else rng.normal(size=s) for s in shapes]


def _agree(fn, arrays, numpy_fn=None, tol_fd=1e-6):
    """fn's value and gradients: ours = torch's (1e-10), and = central differences when
    ``numpy_fn`` (the same function on numpy arrays) is given."""
    value, grads = ag.engine_grads(fn, arrays)
    t_value, t_grads = ag.torch_grads(fn, arrays)
    assert ag.max_relative_error(value, t_value) < 1e-12
    for mine, ref in zip(grads, t_grads):
        assert mine.shape == ref.shape
        assert ag.max_relative_error(mine, ref) < 1e-10
    if numpy_fn is not None:
        for mine, fd in zip(grads, ag.finite_difference_grads(numpy_fn, arrays)):
            assert ag.max_relative_error(mine, fd) < tol_fd


BROADCAST_PAIRS = [((3, 1), (1, 4)), ((8, 4), (4,)), ((), (2, 3)), ((2, 3), ()), ((), ()),
                   ((2, 1, 3), (4, 1))]
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "reflected": lambda a, b: 2.0 - a * 3.0 + 1.5 / b,
}


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_ops_with_broadcasting(name, shapes):
    fn = BINARY[name]
    _agree(fn, _inputs(*shapes, positive=True), numpy_fn=fn)


@pytest.mark.parametrize("p", [2, 3.5, -1.0, 0.5])
def test_power(p):
    fn = lambda a: a**p  # noqa: E731
    _agree(fn, _inputs((3, 4), positive=True), numpy_fn=fn)


UNARY = {  # engine/torch function, numpy function, positive inputs only
    "exp": (lambda a: a.exp(), np.exp, False),
    "log": (lambda a: a.log(), np.log, True),
    "tanh": (lambda a: a.tanh(), np.tanh, False),
    "relu": (lambda a: a.relu(), lambda a: np.maximum(a, 0), False),
    "sigmoid": (lambda a: a.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), False),
    "neg": (lambda a: -a, np.negative, False),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary_ops(name):
    fn, numpy_fn, positive = UNARY[name]
    x = _inputs((4, 5), positive=positive)
    if name == "relu":  # finite differences need a margin from the kink
        x = [np.where(np.abs(x[0]) < 0.05, 0.3, x[0])]
    _agree(fn, x, numpy_fn=numpy_fn)


def test_sigmoid_is_stable_for_large_inputs():
    x = ag.Tensor(np.array([-800.0, 0.0, 800.0]))
    y = x.sigmoid()
    y.backward(np.ones(3))
    assert np.all(np.isfinite(y.data)) and np.allclose(y.data, [0, 0.5, 1])
    assert np.allclose(x.grad, [0, 0.25, 0])


@pytest.mark.parametrize("shapes", [((5, 3), (3, 4)), ((3,), (3, 4)), ((5, 3), (3,)),
                                    ((2, 5, 3), (3, 4)), ((2, 1, 5, 3), (3, 3, 2))], ids=str)
def test_matmul(shapes):
    _agree(lambda a, b: a @ b, _inputs(*shapes), numpy_fn=np.matmul)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_reductions(reduce, axis, keepdims):
    fn = lambda a: getattr(a, reduce)(axis=axis, keepdims=keepdims)  # noqa: E731
    _agree(fn, _inputs((2, 3, 4)), numpy_fn=fn)


def test_shape_ops():
    reshaped = lambda a: a.reshape(4, 6) * 2.0  # noqa: E731
    _agree(reshaped, _inputs((2, 3, 4)), numpy_fn=reshaped)
    _agree(lambda a: a.reshape((6, 4)), _inputs((2, 3, 4)))
    _agree(lambda a: a.T, _inputs((3, 5)), numpy_fn=lambda a: a.T)
    mine = ag.engine_grads(lambda a: a.transpose((2, 0, 1)), _inputs((2, 3, 4)))
    ref = ag.torch_grads(lambda a: a.permute(2, 0, 1), _inputs((2, 3, 4)))
    assert ag.max_relative_error(mine[1][0], ref[1][0]) < 1e-12


def test_composite_network_expression():
    fn = lambda x, W, b, V: ((x @ W + b).tanh() @ V).sigmoid().mean(axis=0)  # noqa: E731
    _agree(fn, _inputs((8, 3), (3, 4), (4,), (4, 2)), numpy_fn=lambda x, W, b, V: (
        1 / (1 + np.exp(-(np.tanh(x @ W + b) @ V)))).mean(axis=0))


def test_reused_node_diamond():
    """x feeds y twice and z reuses y: a backward that overwrites instead of adding, or that
    passes a node on before all of its consumers have reported, gets this wrong."""

    def fn(x):
        y = x * x  # the same node on both sides
        a, b = y * 2.0, y + x  # two paths from y ...
        return a * b + y  # ... that meet again, and y used a third time

    _agree(fn, _inputs((3,)), numpy_fn=fn)
    x = ag.Tensor(3.0)
    (x * x).backward()
    assert x.grad == 6.0


def test_leaves_accumulate_and_zero_grad_resets():
    x = ag.Tensor(np.array([1.0, 2.0]))
    for _ in range(2):
        (x * 3.0).sum().backward()
    assert np.array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert np.array_equal(x.grad, [0.0, 0.0])


def test_inner_nodes_are_not_double_counted_when_backward_runs_twice():
    x = ag.Tensor(2.0)
    y = x * x
    z = y * 3.0
    z.backward()
    z.backward()
    assert x.grad == 24.0  # 2 × dz/dx = 2 × 12


def test_unbroadcast_against_the_definition():
    for shape, big in [((4,), (8, 4)), ((3, 1), (3, 4)), ((1, 4), (3, 4)), ((), (2, 3)),
                       ((2, 3), (2, 3)), ((3, 1), (2, 3, 4))]:
        grad = RNG.normal(size=big)
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        (x.expand(big) * torch.from_numpy(grad)).sum().backward()
        assert np.allclose(ag.unbroadcast(grad, shape), x.grad.numpy())
    with pytest.raises(ValueError, match=r"shape \(3,\) does not broadcast"):
        ag.unbroadcast(np.zeros((2, 4)), (3,))


def test_log_softmax_and_cross_entropy_against_torch():
    logits = _inputs((6, 4))[0] * 3
    value, (grad,) = ag.engine_grads(lambda z: ag.log_softmax(z, axis=1), [logits])
    t_value, (t_grad,) = ag.torch_grads(lambda z: torch.log_softmax(z, 1), [logits])
    assert ag.max_relative_error(value, t_value) < 1e-12
    assert ag.max_relative_error(grad, t_grad) < 1e-12
    t = torch.tensor(logits, requires_grad=True)
    y = np.array([0, 3, 1, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(t, torch.from_numpy(y))
    loss.backward()
    z = ag.Tensor(logits)
    mine = ag.cross_entropy(z, y)
    mine.backward()
    assert abs(mine.item() - loss.item()) < 1e-12
    assert np.allclose(z.grad, t.grad.numpy(), atol=1e-12)
    fd = ag.finite_difference_grads(lambda a: ag.cross_entropy(ag.Tensor(a), y).data, [logits])[0]
    assert ag.max_relative_error(z.grad, fd) < 1e-8
    p = ag.softmax(ag.Tensor(logits)).data
    assert np.allclose(p.sum(1), 1) and np.allclose(p, torch.softmax(t, 1).detach().numpy())


def test_log_softmax_is_stable():
    z = ag.Tensor(np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]]))
    out = ag.log_softmax(z)
    out.backward(np.ones_like(out.data))
    assert np.all(np.isfinite(out.data)) and np.all(np.isfinite(z.grad))
    assert np.allclose(out.data[1], -np.log(3))


def test_cross_entropy_rejects_bad_labels():
    z = ag.Tensor(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="y must be class labels in"):
        ag.cross_entropy(z, [0, 1, 2])
    with pytest.raises(ValueError, match="y must hold N=3 integer"):
        ag.cross_entropy(z, [0.0, 1.0, 1.0])


def _torch_mlp(model):
    return ag.to_torch(model)


@pytest.mark.parametrize("activation", ag.ACTIVATIONS)
def test_mlp_gradients_equal_pytorch(activation):
    model = ag.MLP([3, 16, 8, 4], activation=activation, seed=1)
    x, y = RNG.normal(size=(10, 3)), RNG.integers(0, 4, 10)
    loss = ag.cross_entropy(model(x), y)
    loss.backward()
    net = _torch_mlp(model)
    t_loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    t_loss.backward()
    assert abs(loss.item() - t_loss.item()) < 1e-12
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for layer, t_layer in zip(model.layers, linears):
        assert np.allclose(layer.W.grad, t_layer.weight.grad.numpy().T, rtol=1e-10, atol=1e-13)
        assert np.allclose(layer.b.grad, t_layer.bias.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("init", ag.INITS)
def test_initialisation_variance(init):
    layer = ag.Linear(300, 500, init=init, rng=np.random.default_rng(0))
    expected = 2 / 300 if init == "he" else 2 / 800
    assert abs(layer.W.data.var() / expected - 1) < 0.02  # 150,000 draws: 0.4% standard error
    assert np.array_equal(layer.b.data, np.zeros(500))


def test_same_seed_same_weights():
    a, b, c = ag.MLP([2, 5, 3], seed=4), ag.MLP([2, 5, 3], seed=4), ag.MLP([2, 5, 3], seed=5)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters()))
    assert not np.array_equal(a.layers[0].W.data, c.layers[0].W.data)


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_optimisers_follow_torch_optim(kind):
    start = RNG.normal(size=(4, 3))
    p, t = ag.Tensor(start.copy()), torch.tensor(start.copy(), requires_grad=True)
    if kind == "adam":
        ours, theirs = ag.Adam([p], lr=0.01), torch.optim.Adam([t], lr=0.01)
    else:
        mu = 0.9 if kind == "momentum" else 0.0
        ours, theirs = ag.SGD([p], lr=0.1, momentum=mu), torch.optim.SGD([t], lr=0.1, momentum=mu)
    for _ in range(5):  # a loss whose gradient changes with the parameters
        ours.zero_grad()
        ((p * p * p).sum() + (p * 2.0).sum()).backward()
        ours.step()
        theirs.zero_grad()
        ((t**3).sum() + (t * 2).sum()).backward()
        theirs.step()
    assert np.allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_training_reaches_high_accuracy_on_spirals():
    x, y = ag.make_spirals(100, 3, noise=0.1, seed=0)
    model = ag.MLP([2, 32, 32, 3], activation="relu", seed=0)
    opt = ag.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        ag.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).data.argmax(1) == y).mean() > 0.95


def test_regression_reaches_least_squares():
    x, y, w, b = ag.make_regression(200, 3, noise=0.1, seed=0)
    model = ag.MLP([3, 1], seed=0)
    opt = ag.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(300):
        opt.zero_grad()
        ((model(x).reshape(-1) - y) ** 2).mean().backward()
        opt.step()
    lstsq = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    fitted = np.r_[model.layers[0].W.data[:, 0], model.layers[0].b.data]
    assert np.allclose(fitted, lstsq, atol=1e-8)
    assert np.allclose(lstsq, np.r_[w, b], atol=0.05)  # and the data hold the true weights


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_npz_round_trip_is_bit_exact_and_torch_agrees(tmp_path, dtype):
    model = ag.MLP([3, 7, 2], activation="tanh", init="xavier", seed=3)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    path = ag.save_mlp(model, tmp_path / "m.npz")
    loaded = ag.load_mlp(path)
    assert (loaded.sizes, loaded.activation, loaded.init) == ([3, 7, 2], "tanh", "xavier")
    for p, q in zip(model.parameters(), loaded.parameters()):
        assert q.data.dtype == p.data.dtype and np.array_equal(p.data, q.data)
        assert p.data.tobytes() == q.data.tobytes()
    x = RNG.normal(size=(5, 3)).astype(dtype)
    assert np.array_equal(model(x).data, loaded(x).data)
    torch_out = ag.to_torch(loaded)(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(torch_out, model(x).data, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_save_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match="path must end in .npz"):
        ag.save_mlp(ag.MLP([2, 2]), tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="no saved model"):
        ag.load_mlp(tmp_path / "missing.npz")


def test_toy_data():
    for make in (ag.make_moons, ag.make_circles):
        x, y = make(101, seed=1)
        assert x.shape == (101, 2) and set(np.unique(y)) == {0, 1} and abs(y.sum() - 50) == 0
        assert np.array_equal(make(101, seed=1)[0], x)
        assert not np.array_equal(make(101, seed=2)[0], x)
    x, y = ag.make_circles(400, noise=0.0, factor=0.3)
    assert np.allclose(np.linalg.norm(x, axis=1), np.where(y == 0, 1.0, 0.3))
    x, y = ag.make_spirals(50, 4)
    assert x.shape == (200, 2) and np.array_equal(np.bincount(y), [50] * 4)
    assert np.all(np.linalg.norm(x, axis=1) <= 1.0 + 1e-12)
    x, yr, w, b = ag.make_regression(50, 4, noise=0.0, seed=2)
    assert np.allclose(yr, x @ w + b)


@pytest.mark.parametrize("call, match", [
    (lambda: ag.make_moons(0), "n must be a positive integer, got 0"),
    (lambda: ag.make_moons(10, noise=-1), "noise must be a number >= 0"),
    (lambda: ag.make_circles(10, factor=1.5), r"factor must be in \(0, 1\)"),
    (lambda: ag.make_spirals(10, n_classes=0), "n_classes must be a positive integer"),
    (lambda: ag.MLP([3]), "sizes must list at least 2"),
    (lambda: ag.MLP([3, 2], activation="gelu"), "activation must be one of"),
    (lambda: ag.Linear(3, 2, init="lecun"), "init must be one of"),
    (lambda: ag.Tensor(np.array(["a"])), "data must hold real numbers"),
    (lambda: ag.Tensor(np.ones(2)).backward(), "backward.. without grad needs a scalar"),
    (lambda: ag.Tensor(2.0) ** ag.Tensor(2.0), "exponent must be a Python number"),
    (lambda: ag.SGD([ag.Tensor(1.0)], lr=0), "need lr > 0"),
    (lambda: ag.Adam([]), "params must be a non-empty list"),
])
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


class _Overwrites(ag.Tensor):
    """The classic bug: a _backward that assigns instead of adding."""

    def __mul__(self, other):
        other = self._lift(other)
        out = type(self)(self.data * other.data, (self, other))

        def _backward():
            self.grad = ag.unbroadcast(out.grad * other.data, self.shape)
            other.grad = ag.unbroadcast(out.grad * self.data, other.shape)

        out._backward = _backward
        return out


def test_assert_gradients_catches_the_overwrite_bug_and_passes_the_engine():
    square = lambda a: a * a  # noqa: E731
    assert ag.assert_gradients("x*x", square, _inputs((3,)), ag.Tensor, numpy_fn=square) < 1e-12
    with pytest.raises(AssertionError, match=r"x\*x on shapes \(3,\): the gradient of operand 0"):
        ag.assert_gradients("x*x", square, _inputs((3,)), _Overwrites)


def test_fit_decreases_the_loss_and_validates():
    x, y = ag.make_moons(64, seed=0)
    model = ag.MLP([2, 8, 2], seed=0)
    opt = ag.Adam(model.parameters(), lr=0.05)
    history = ag.fit(model, opt, ag.cross_entropy, x, y, 50, batch_size=16)
    assert len(history) == 50 and history[-1] < history[0]
    with pytest.raises(ValueError, match="batch_size must be None"):
        ag.fit(model, ag.SGD(model.parameters(), lr=0.1), ag.cross_entropy, x, y, 5, batch_size=65)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        ag.fit(model, ag.SGD(model.parameters(), lr=0.1), ag.cross_entropy, x, y, 0)


def test_require_own_rejects_an_inherited_reference():
    from helpers import grading

    class Inherits(ag.Tensor):
        def sum(self, axis=None, keepdims=False):  # its own: accepted
            return ag.Tensor.sum(self, axis, keepdims)

    ag.require_own(Inherits, ["sum"])
    with pytest.raises(grading.ReferenceUsed, match=r"Inherits.exp is the course's reference"):
        ag.require_own(Inherits, ["sum", "exp"])
    with pytest.raises(AssertionError, match="Inherits has no method softplus"):
        ag.require_own(Inherits, ["softplus"])


def test_assert_gradients_uses_the_given_hint():
    square = lambda a: a * a  # noqa: E731
    with pytest.raises(AssertionError, match="accumulate with"):
        ag.assert_gradients("x*x", square, _inputs((3,)), _Overwrites, hint="accumulate with +=")


# ------------------------------------------------------------------ numbers and arrays as operands

def test_numbers_and_arrays_on_either_side():
    """A Python number or a numpy array on either side of +, -, *, /, @ is a constant: the value
    is numpy's and the gradient goes to the tensor alone (torch.autograd as the oracle)."""
    def const(a, array):  # the array as the other side's kind: a torch tensor for torch
        return torch.from_numpy(array) if torch.is_tensor(a) else array

    c, m = _inputs((3, 4), positive=True)[0], _inputs((4, 2))[0]
    for fn in (lambda a: a + 2.0, lambda a: 2.0 + a, lambda a: 3.0 * a, lambda a: 1.5 / a,
               lambda a: 2.0 - a, lambda a: a + const(a, c), lambda a: const(a, c) + a,
               lambda a: const(a, c) * a, lambda a: const(a, c) - a):
        _agree(fn, _inputs((3, 4), positive=True), numpy_fn=fn)
    _agree(lambda a: a @ const(a, m), _inputs((3, 4)), numpy_fn=lambda a: a @ m)
    _agree(lambda a: const(a, m.T) @ a, _inputs((4, 5)), numpy_fn=lambda a: m.T @ a)


def test_relu_gradient_at_zero_is_zero_as_in_torch():
    x = np.array([-1.0, 0.0, 2.0])
    _agree(lambda a: a.relu(), [x])
    t = ag.Tensor(x)
    t.relu().backward(np.ones(3))
    assert np.array_equal(t.grad, [0.0, 0.0, 1.0])


@pytest.mark.parametrize("call, match", [
    (lambda: ag.Tensor(2.0) ** np.array([1.0, 2.0]), "exponent must be a Python number"),
    (lambda: ag.Tensor(2.0) @ ag.Tensor(np.ones(3)), "@ needs operands with at least 1 axis"),
    (lambda: ag.Tensor(np.ones(3)) @ ag.Tensor(2.0), "@ needs operands with at least 1 axis"),
    (lambda: ag.log_softmax(np.zeros((2, 3))), "x must be a Tensor"),
    (lambda: ag.cross_entropy(np.zeros((2, 3)), [0, 1]), "logits must be a Tensor"),
    (lambda: ag.Linear(0, 3), "fan_in must be a positive integer"),
    (lambda: ag.Linear(3, 2.5), "fan_out must be a positive integer"),
    (lambda: ag.SGD([ag.Tensor(1.0)], lr=0.1, momentum=1.0), "momentum"),
    (lambda: ag.Adam([ag.Tensor(1.0)], lr=0.0), "need lr > 0"),
    (lambda: ag.Adam([ag.Tensor(1.0)], betas=(0.9, 1.0)), "betas in"),
    (lambda: ag.Adam([ag.Tensor(1.0)], betas=(-0.1, 0.9)), "betas in"),
    (lambda: ag.Adam([ag.Tensor(1.0)], eps=0.0), "eps > 0"),
    (lambda: ag.make_circles(10, factor=0.0), r"factor must be in \(0, 1\)"),
    (lambda: ag.make_circles(10, factor=1.0), r"factor must be in \(0, 1\)"),
    (lambda: ag.make_spirals(10, noise=-0.1), "noise must be a number >= 0"),
    (lambda: ag.make_spirals(10, turns=0.0), "turns must be a number > 0"),
    (lambda: ag.make_spirals(10, turns=-1.0), "turns must be a number > 0"),
])
def test_more_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_the_edges_of_the_checks_are_accepted():
    """The smallest and largest values each check allows."""
    assert ag.make_moons(1)[0].shape == (1, 2)
    ag.Adam([ag.Tensor(1.0)], betas=(0.0, 0.0))
    ag.SGD([ag.Tensor(1.0)], lr=0.1, momentum=0.0)
    x, y = ag.make_moons(8, seed=0)
    model = ag.MLP([2, 2], seed=0)
    opt = ag.SGD(model.parameters(), lr=0.1)
    assert len(ag.fit(model, opt, ag.cross_entropy, x, y, steps=1)) == 1
    for b in (1, 8):
        assert len(ag.fit(model, opt, ag.cross_entropy, x, y, steps=2, batch_size=b)) == 2
    with pytest.raises(ValueError, match="batch_size must be None"):
        ag.fit(model, opt, ag.cross_entropy, x, y, steps=2, batch_size=0)


# ------------------------------------------------------------------ layers, optimisers, fit

def test_linear_without_a_generator_draws_fresh_weights():
    a, b = ag.Linear(4, 3), ag.Linear(4, 3)
    assert a.W.shape == (4, 3) and not np.array_equal(a.W.data, b.W.data)


def test_linear_computes_like_numpy_on_mixed_precisions():
    """x @ W + b with numpy's type promotion: a float64 batch through float32 weights is computed
    in float64, not rounded to float32 first."""
    layer = ag.Linear(3, 2, rng=np.random.default_rng(0))
    layer.W.data, layer.b.data = layer.W.data.astype(np.float32), np.ones(2, dtype=np.float32)
    x = np.random.default_rng(1).normal(size=(4, 3))
    out = layer(x).data
    assert out.dtype == np.float64 and np.array_equal(out, x @ layer.W.data + layer.b.data)


def test_mlp_sizes_are_a_list_of_ints_whatever_sequence_came_in():
    for sizes in ((3, 4, 2), np.array([3, 4, 2])):
        model = ag.MLP(sizes)
        assert model.sizes == [3, 4, 2] and all(type(n) is int for n in model.sizes)


def test_optimisers_take_an_iterator_of_parameters():
    """Like torch.optim, an optimiser accepts any iterable of parameters (a generator too) and
    must keep them all, not an exhausted iterator."""
    for make in (lambda ps: ag.SGD(ps, lr=0.1), lambda ps: ag.Adam(ps, lr=0.1)):
        p = ag.Tensor(np.ones(2))
        opt = make(q for q in [p])
        p.grad = np.ones(2)
        opt.step()
        assert np.all(p.data < 1.0)


def test_fit_full_batch_equals_torch_sgd():
    """fit with batch_size=None: every step zeroes the gradients, runs forward and backward on all
    rows and updates; the same network in PyTorch with torch.optim.SGD (momentum, so a missing
    zero_grad or a skipped step shows) gives the same losses and weights."""
    x, y = ag.make_moons(40, seed=3)
    model = ag.MLP([2, 6, 2], activation="tanh", seed=2)
    net = ag.to_torch(model)
    history = ag.fit(model, ag.SGD(model.parameters(), lr=0.2, momentum=0.9), ag.cross_entropy,
                     x, y, steps=4)
    opt, t_history = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9), []
    for _ in range(4):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        t_history.append(loss.item())
    assert np.allclose(history, t_history, rtol=1e-12, atol=0)
    for layer, t_layer in zip(model.layers, [m for m in net if isinstance(m, torch.nn.Linear)]):
        assert np.allclose(layer.W.data, t_layer.weight.detach().numpy().T, rtol=1e-12, atol=1e-14)


def test_fit_batches_are_distinct_rows_or_all_rows():
    x = np.random.default_rng(0).normal(size=(20, 2))
    rows, model = [], ag.MLP([2, 1], seed=0)

    def loss_fn(out, yb):  # y holds each row's index, so the batch names its rows
        rows.append(yb.copy())
        return (out * out).mean()

    opt = ag.SGD(model.parameters(), lr=0.01)
    ag.fit(model, opt, loss_fn, x, np.arange(20), steps=30, batch_size=10, seed=1)
    assert all(len(r) == 10 and len(set(r.tolist())) == 10 for r in rows), "rows drawn twice"
    assert len(set(np.concatenate(rows).tolist())) == 20
    rows.clear()
    ag.fit(model, opt, loss_fn, x, np.arange(20), steps=2)
    assert all(np.array_equal(r, np.arange(20)) for r in rows)


def test_save_and_load_take_a_string_path_and_refuse_pickles(tmp_path):
    model = ag.MLP([2, 3, 2], seed=1)
    path = ag.save_mlp(model, str(tmp_path / "m.npz"))
    loaded = ag.load_mlp(str(path))
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), loaded.parameters()))
    # an object array needs pickle to load, which can run code: load_mlp must refuse it
    bad = tmp_path / "bad.npz"
    np.savez(bad, sizes=np.array([2, 2], dtype=object), activation=np.asarray("relu"),
             init=np.asarray("he"), W0=np.zeros((2, 2)), b0=np.zeros(2))
    with pytest.raises(ValueError, match="allow_pickle"):
        ag.load_mlp(bad)


def test_loaded_float32_model_has_float32_zero_gradients(tmp_path):
    """grad has the data's shape and dtype (TensorBase): after loading float32 weights into a fresh
    (float64) MLP, the gradients must be reset to float32 zeros, not left as float64."""
    model = ag.MLP([3, 2], seed=0)
    for p in model.parameters():
        p.data = p.data.astype(np.float32)
    loaded = ag.load_mlp(ag.save_mlp(model, tmp_path / "m.npz"))
    for p in loaded.parameters():
        assert p.grad.dtype == np.float32 and p.grad.shape == p.data.shape and not p.grad.any()


# ------------------------------------------------------------------ toy data against their definitions

def test_moons_and_circles_class_sizes():
    """Class 0 takes the first ceil(n / 2) points (the extra one when n is odd)."""
    for make in (ag.make_moons, ag.make_circles):
        for n in (100, 101):
            y = make(n, seed=0)[1]
            assert np.array_equal(y, (np.arange(n) >= (n + 1) // 2).astype(np.int64))
            assert np.bincount(y).tolist() == [(n + 1) // 2, n // 2]


def _noise_of(make, noise, **kw):
    """The noise a generator adds: the same seed with and without noise (the clean points are
    drawn first, so they are the same)."""
    return make(2000, noise=noise, seed=5, **kw)[0] - make(2000, noise=0.0, seed=5, **kw)[0]


def test_moons_lie_on_their_half_circles_with_uniform_angles_and_gaussian_noise():
    x, y = ag.make_moons(2000, noise=0.0, seed=4)
    up, low = x[y == 0], x[y == 1] - [1.0, 0.5]
    assert np.allclose(np.linalg.norm(up, axis=1), 1) and np.all(up[:, 1] >= -1e-12)
    assert np.allclose(np.linalg.norm(low, axis=1), 1) and np.all(low[:, 1] <= 1e-12)
    for angle in (np.arctan2(up[:, 1], up[:, 0]), np.arctan2(-low[:, 1], -low[:, 0])):
        angle = np.mod(angle, 2 * np.pi)  # both half circles run over [0, pi]
        assert angle.min() < 0.02 and angle.max() > np.pi - 0.02 and angle.max() <= np.pi + 1e-9
        assert abs(angle.mean() - np.pi / 2) < 4 * np.pi / np.sqrt(12 * len(angle))
    e = _noise_of(ag.make_moons, 0.1)
    assert abs(e.std() - 0.1) < 0.005 and abs(e.mean()) < 0.01


def test_circles_angles_are_uniform_on_the_whole_circle_and_noise_is_gaussian():
    x, y = ag.make_circles(2000, noise=0.0, seed=4)
    angle = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi)
    assert angle.min() < 0.02 and angle.max() > 2 * np.pi - 0.02
    assert abs(np.mean(angle < np.pi) - 0.5) < 0.05
    e = _noise_of(ag.make_circles, 0.05)
    assert abs(e.std() - 0.05) < 0.003 and abs(e.mean()) < 0.005


def test_spiral_arms_follow_their_stated_angle():
    """Arm k at radius r: angle 2π(turns r + k / K), plus Gaussian noise of std ``noise`` radians."""
    x, y = ag.make_spirals(60, 3, noise=0.0, turns=1.5, seed=0)
    r = np.linalg.norm(x, axis=1)
    assert np.allclose(r, np.tile(np.linspace(0.05, 1.0, 60), 3))
    expected = 2 * np.pi * (1.5 * r + y / 3)
    assert np.allclose(np.angle(np.exp(1j * (np.arctan2(x[:, 1], x[:, 0]) - expected))), 0, atol=1e-9)
    noisy, _ = ag.make_spirals(700, 3, noise=0.2, seed=1)
    clean, _ = ag.make_spirals(700, 3, noise=0.0, seed=1)
    e = np.angle(np.exp(1j * (np.arctan2(noisy[:, 1], noisy[:, 0]) - np.arctan2(clean[:, 1], clean[:, 0]))))
    assert abs(e.std() - 0.2) < 0.01 and abs(e.mean()) < 0.015
