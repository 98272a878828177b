"""A small reverse-mode autograd engine on numpy: the reference answers of problem set 02.

The problem set has the student build this engine piece by piece; the classes and functions here
are the course's versions of each piece (marked ``@grading.reference``), used by the unit tests
(against ``torch.autograd`` and finite differences) and by the notebook as fall-backs when a
problem's check has not passed. The notebook's solution cells never call them.

The pieces, in the order of the problem set (the equation numbers are those of
``lectures/autograd.md``):

* :class:`TensorBase` (given to the student): a node of the graph. ``data`` is a numpy array
  (floats; a scalar is a 0-d array), ``grad`` an array of the same shape, ``_parents`` the tensors
  it was computed from, ``_backward`` a closure that adds this node's contribution to its
  parents' ``grad`` (a vector-Jacobian product, eq. A.3). Derived operators (``-``, ``/``, the
  reflected ones) are written with ``+``, ``*`` and ``**``.
* problem 1, :func:`unbroadcast` (eq. A.5) and :class:`ElementwiseTensor`: ``+``, ``*``, ``**``
  with numpy broadcasting, and ``backward`` in reverse topological order (eq. A.4).
* problem 2, :class:`Tensor`: ``@``, ``sum``, ``mean``, ``reshape``, ``transpose``, ``exp``,
  ``log``, ``tanh``, ``relu``, ``sigmoid``.
* problem 3, :func:`log_softmax` (a primitive with its own backward, eq. A.7), :func:`softmax`,
  :func:`cross_entropy`.
* problem 4, :class:`Linear` and :class:`MLP` (He / Xavier initialisation, eq. A.8).
* problem 5, :class:`SGD` (with momentum) and :class:`Adam` with the update rules of
  ``torch.optim`` (eq. A.9), and the training loop :func:`fit`.
* problem 6, :func:`save_mlp` / :func:`load_mlp` (``.npz``, bit-exact) and :func:`to_torch`.

Also: seeded toy data (:func:`make_moons`, :func:`make_circles`, :func:`make_spirals`,
:func:`make_regression`) and the gradient oracles the checks use (:func:`finite_difference_grads`,
:func:`engine_grads`, :func:`torch_grads`, :func:`assert_gradients`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import grading

ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = ("he", "xavier")


# ------------------------------------------------------------------------------------------------
# The graph node (given to the student)
# ------------------------------------------------------------------------------------------------


def _float_array(data, name: str = "data") -> np.ndarray:
    array = np.asarray(data)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


class TensorBase:
    """A node of the computation graph: an array, its gradient, its parents, its backward step.

    ``TensorBase(data, parents=())`` stores ``data`` as a float array (integers become float64;
    float32 stays float32) and a zero ``grad`` of the same shape. An operation creates its result
    with ``type(self)(result_data, parents)`` (so a subclass gets results of its own class) and
    sets ``result._backward`` to a closure that adds ``result.grad``'s contribution to each
    parent's ``grad``.
    """

    __array_priority__ = 100  # ndarray + Tensor calls Tensor.__radd__ instead of looping

    def __init__(self, data, parents=()):
        self.data = _float_array(data)
        self.grad = np.zeros_like(self.data)
        self._parents = tuple(parents)
        for parent in self._parents:
            if not isinstance(parent, TensorBase):
                raise TypeError(f"parents must be tensors, got {type(parent).__name__}")
        self._backward = lambda: None  # a leaf passes nothing on

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def item(self) -> float:
        return self.data.item()

    def zero_grad(self) -> None:
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        values = np.array2string(self.data, precision=4)
        return f"{type(self).__name__}({values}, shape={self.shape})"

    def _lift(self, other) -> "TensorBase":
        """``other`` as a tensor of this class (a number or an array becomes a constant leaf)."""
        if isinstance(other, TensorBase):
            return other
        return type(self)(np.asarray(other, dtype=self.data.dtype))

    # Derived operators: each is a composition of +, * and **, so its gradient comes for free.
    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return self._lift(other) + (-self)

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * self._lift(other) ** -1.0

    def __rtruediv__(self, other):
        return self._lift(other) * self ** -1.0


@grading.reference
def topological_order(root: TensorBase) -> list:
    """Every node that ``root`` depends on, each after all of its parents (iterative DFS)."""
    order, seen, stack = [], {id(root)}, [(root, iter(root._parents))]
    while stack:
        node, parents = stack[-1]
        for parent in parents:
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append((parent, iter(parent._parents)))
                break
        else:  # all parents placed: the node can follow them
            stack.pop()
            order.append(node)
    return order


# ------------------------------------------------------------------------------------------------
# Problem 1: broadcasting and elementwise arithmetic, backward
# ------------------------------------------------------------------------------------------------


@grading.reference
def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` (the gradient of a broadcast result) down to ``shape`` (eq. A.5).

    Broadcasting copies an operand along new leading axes and along its axes of length 1; every
    copy contributes to the loss, so the gradient of the operand is the sum over the copies.
    """
    grad = np.asarray(grad)
    shape = tuple(shape)
    lead = grad.ndim - len(shape)
    if lead < 0 or any(n not in (1, m) for n, m in zip(shape, grad.shape[lead:])):
        raise ValueError(f"shape {shape} does not broadcast to the gradient's shape {grad.shape}")
    grad = grad.sum(axis=tuple(range(lead)))  # the added leading axes
    repeated = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=repeated, keepdims=True) if repeated else grad


class ElementwiseTensor(TensorBase):
    """Problem 1's reference: ``+``, ``*``, ``**`` (number exponent) and ``backward``."""

    @grading.reference
    def __add__(self, other):
        other = self._lift(other)
        out = type(self)(self.data + other.data, (self, other))

        def _backward():  # d(a+b)/da = 1: pass the gradient through, summed over copies
            self.grad += unbroadcast(out.grad, self.shape)
            other.grad += unbroadcast(out.grad, other.shape)

        out._backward = _backward
        return out

    @grading.reference
    def __mul__(self, other):
        other = self._lift(other)
        out = type(self)(self.data * other.data, (self, other))

        def _backward():  # d(ab)/da = b; += so that x * x gets both contributions
            self.grad += unbroadcast(out.grad * other.data, self.shape)
            other.grad += unbroadcast(out.grad * self.data, other.shape)

        out._backward = _backward
        return out

    @grading.reference
    def __pow__(self, exponent):
        if isinstance(exponent, TensorBase) or not np.isscalar(exponent):
            raise TypeError(f"the exponent must be a Python number, got {type(exponent).__name__}")
        out = type(self)(self.data**exponent, (self,))

        def _backward():  # d(a^p)/da = p a^(p-1)
            self.grad += out.grad * exponent * self.data ** (exponent - 1)

        out._backward = _backward
        return out

    @grading.reference
    def backward(self, grad=None) -> None:
        """Fill ``grad`` of every node ``self`` depends on (eq. A.4): leaves accumulate, inner
        nodes start from zero at each call; ``grad`` defaults to 1 for a scalar."""
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward() without grad needs a scalar, got shape {self.shape}")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=self.data.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"grad must have the tensor's shape {self.shape}, got {grad.shape}")
        order = topological_order(self)
        for node in order:
            if node._parents:
                node.grad = np.zeros_like(node.data)
        self.grad = self.grad + grad
        for node in reversed(order):  # each node's grad is complete before it is passed on
            node._backward()


# ------------------------------------------------------------------------------------------------
# Problem 2: matrix product, reductions, shapes, nonlinearities
# ------------------------------------------------------------------------------------------------


def _axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(a % ndim for a in axes)


class Tensor(ElementwiseTensor):
    """Problem 2's reference, the whole engine: matrix product, reductions, shape operations and
    the nonlinearities of an MLP."""

    @grading.reference
    def __matmul__(self, other):
        other = self._lift(other)
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError(
                f"@ needs operands with at least 1 axis, got {self.shape} @ {other.shape}")
        out = type(self)(self.data @ other.data, (self, other))
        # 1-D operands act as a row (left) or a column (right); see np.matmul
        a = self.data if self.ndim > 1 else self.data[None, :]
        b = other.data if other.ndim > 1 else other.data[:, None]

        def _backward():  # C = AB: dA = dC Bᵀ, dB = Aᵀ dC (eq. A.6), summed over batch copies
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            g = out.grad.reshape(batch + (a.shape[-2], b.shape[-1]))
            ga = unbroadcast(g @ np.swapaxes(b, -1, -2), a.shape)
            gb = unbroadcast(np.swapaxes(a, -1, -2) @ g, b.shape)
            self.grad += ga.reshape(self.shape)
            other.grad += gb.reshape(other.shape)

        out._backward = _backward
        return out

    def __rmatmul__(self, other):
        return self._lift(other) @ self

    @grading.reference
    def sum(self, axis=None, keepdims=False):
        out = type(self)(self.data.sum(axis=axis, keepdims=keepdims), (self,))
        axes = _axes(axis, self.ndim)

        def _backward():  # every summand gets the gradient of the sum
            g = out.grad if keepdims else np.expand_dims(out.grad, axes)
            self.grad += np.broadcast_to(g, self.shape)

        out._backward = _backward
        return out

    @grading.reference
    def mean(self, axis=None, keepdims=False):
        count = int(np.prod([self.shape[a] for a in _axes(axis, self.ndim)]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    @grading.reference
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape
        out = type(self)(self.data.reshape(shape), (self,))

        def _backward():
            self.grad += out.grad.reshape(self.shape)

        out._backward = _backward
        return out

    @grading.reference
    def transpose(self, axes=None):
        out = type(self)(np.transpose(self.data, axes), (self,))
        inverse = None if axes is None else np.argsort(axes)

        def _backward():  # undo the permutation
            self.grad += np.transpose(out.grad, inverse)

        out._backward = _backward
        return out

    @property
    def T(self):  # noqa: N802 (numpy's name)
        return self.transpose()

    def _unary(self, value: np.ndarray, local_grad):
        """A result ``value`` = f(self) whose derivative f'(self) is ``local_grad(value)``."""
        out = type(self)(value, (self,))

        def _backward():
            self.grad += out.grad * local_grad(out.data)

        out._backward = _backward
        return out

    @grading.reference
    def exp(self):
        return self._unary(np.exp(self.data), lambda y: y)  # (e^x)' = e^x

    @grading.reference
    def log(self):
        x = self.data
        return self._unary(np.log(x), lambda y: 1.0 / x)

    @grading.reference
    def tanh(self):
        return self._unary(np.tanh(self.data), lambda y: 1.0 - y * y)

    @grading.reference
    def relu(self):
        x = self.data
        return self._unary(np.maximum(x, 0.0), lambda y: (x > 0).astype(x.dtype))

    @grading.reference
    def sigmoid(self):
        # 1 / (1 + e^-x) written so that no exp overflows: e^-|x| <= 1
        e = np.exp(-np.abs(self.data))
        value = np.where(self.data >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return self._unary(value, lambda y: y * (1.0 - y))


def require_own(cls, names) -> None:
    """Raise :class:`grading.ReferenceUsed` if a method of ``cls`` named in ``names`` is one of
    the course's references (inherited from a reference class or copied from one), and an
    AssertionError if it is missing. A check's guard only sees the student's own methods, so a
    class that merely subclasses the reference would otherwise pass."""
    for name in names:
        method = getattr(cls, name, None)
        assert callable(method), f"{cls.__name__} has no method {name}: write it in the class"
        if hasattr(method, "reference_name"):
            raise grading.ReferenceUsed(
                f"{cls.__name__}.{name} is the course's reference "
                f"({method.reference_name.removeprefix('helpers.')}): write it in your class")


def reference_methods(cls) -> list:
    """The ``@grading.reference`` methods defined on ``cls`` itself (a check's ``forbid`` list)."""
    return [v for v in vars(cls).values() if hasattr(v, "reference_name")]


# ------------------------------------------------------------------------------------------------
# Problem 3: log-softmax and cross-entropy
# ------------------------------------------------------------------------------------------------


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, TensorBase):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")


@grading.reference
def log_softmax(x: TensorBase, axis: int = -1) -> TensorBase:
    """log softmax along ``axis``, one primitive (eq. A.7): x - max - log Σ exp(x - max)."""
    _check_tensor(x, "x")
    shifted = x.data - x.data.max(axis=axis, keepdims=True)  # <= 0: exp cannot overflow
    value = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    out = type(x)(value, (x,))

    def _backward():  # vector-Jacobian product: g - softmax · Σ g
        g = out.grad
        x.grad += g - np.exp(out.data) * g.sum(axis=axis, keepdims=True)

    out._backward = _backward
    return out


@grading.reference
def softmax(x: TensorBase, axis: int = -1) -> TensorBase:
    """softmax along ``axis`` as exp(log_softmax): stable, and differentiable through both."""
    return log_softmax(x, axis).exp()


def _check_labels(y, logits_shape: tuple) -> np.ndarray:
    y = np.asarray(y)
    if len(logits_shape) != 2:
        raise ValueError(f"logits must have shape (N, K), got {logits_shape}")
    n, k = logits_shape
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(
            f"y must hold N={n} integer class labels, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"y must be class labels in [0, {k}), got values in [{y.min()}, {y.max()}]")
    return y


@grading.reference
def cross_entropy(logits: TensorBase, y) -> TensorBase:
    """Mean negative log-likelihood of integer labels ``y`` (N,) under softmax(logits) (N, K)."""
    _check_tensor(logits, "logits")
    y = _check_labels(y, logits.shape)
    one_hot = np.eye(logits.shape[1], dtype=logits.data.dtype)[y]  # picks log p(y_n | x_n)
    return -(log_softmax(logits, axis=1) * one_hot).sum() * (1.0 / len(y))


# ------------------------------------------------------------------------------------------------
# Problem 4: layers; problem 5: optimisers and the training loop
# ------------------------------------------------------------------------------------------------


def init_std(fan_in: int, fan_out: int, init: str) -> float:
    """Standard deviation of a normal initialisation (eq. A.8): He 2/fan_in, Xavier 2/(in+out)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return float(np.sqrt(2.0 / fan_in if init == "he" else 2.0 / (fan_in + fan_out)))


class Linear:
    """y = x W + b with W (fan_in, fan_out) drawn from N(0, init_std²), b zeros (fan_out,)."""

    tensor = Tensor  # the class of the parameters

    @grading.reference
    def __init__(self, fan_in: int, fan_out: int, init: str = "he", rng=None):
        for name, n in (("fan_in", fan_in), ("fan_out", fan_out)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"{name} must be a positive integer, got {n!r}")
        rng = np.random.default_rng() if rng is None else rng
        std = init_std(fan_in, fan_out, init)
        self.W = self.tensor(rng.normal(0.0, std, size=(fan_in, fan_out)))
        self.b = self.tensor(np.zeros(fan_out))

    @grading.reference
    def __call__(self, x):
        x = x if isinstance(x, TensorBase) else self.tensor(x)
        return x @ self.W + self.b

    @grading.reference
    def parameters(self) -> list:
        return [self.W, self.b]


class MLP:
    """Linear layers of ``sizes`` = [d_in, h_1, ..., d_out] with ``activation`` between them (none
    after the last). ``seed`` fixes the initial weights."""

    @grading.reference
    def __init__(self, sizes, activation: str = "relu", init: str = "he", seed: int = 0):
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least 2 positive layer widths, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.sizes, self.activation, self.init = sizes, activation, init
        rng = np.random.default_rng(seed)
        self.layers = [Linear(i, o, init, rng) for i, o in zip(sizes[:-1], sizes[1:])]

    @grading.reference
    def __call__(self, x):
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = getattr(h, self.activation)()
        return h

    @grading.reference
    def parameters(self) -> list:
        return [p for layer in self.layers for p in layer.parameters()]


def _check_params(params) -> list:
    params = list(params)
    if not params or not all(isinstance(p, TensorBase) for p in params):
        raise TypeError("params must be a non-empty list of Tensors")
    return params


class SGD:
    """torch.optim.SGD's rule: v ← μ v + g (v = g at the first step), θ ← θ − lr v."""

    @grading.reference
    def __init__(self, params, lr: float, momentum: float = 0.0):
        if not lr > 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        self.params, self.lr, self.momentum = _check_params(params), lr, momentum
        self.velocity = [None] * len(self.params)

    @grading.reference
    def step(self) -> None:
        for i, p in enumerate(self.params):
            v = self.velocity[i]
            v = p.grad.copy() if v is None else self.momentum * v + p.grad
            self.velocity[i] = v
            p.data -= self.lr * v

    @grading.reference
    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()


class Adam:
    """torch.optim.Adam's rule (Kingma & Ba 2015, arXiv:1412.6980, Algorithm 1)."""

    @grading.reference
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0 or not all(0 <= b < 1 for b in betas) or not eps > 0:
            raise ValueError(f"need lr > 0, betas in [0, 1), eps > 0, got {lr}, {betas}, {eps}")
        self.params, self.lr, self.betas, self.eps = _check_params(params), lr, tuple(betas), eps
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    @grading.reference
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            m *= b1
            m += (1 - b1) * p.grad
            v *= b2
            v += (1 - b2) * p.grad**2
            m_hat = m / (1 - b1**self.t)  # bias corrections: m and v start at 0
            v_hat = v / (1 - b2**self.t)
            p.data -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    @grading.reference
    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()


def _check_steps(steps, batch_size, n: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    whole = batch_size is None
    if not whole and not (isinstance(batch_size, (int, np.integer)) and 1 <= batch_size <= n):
        raise ValueError(
            f"batch_size must be None (full batch) or an integer in [1, {n}], got {batch_size!r}")


@grading.reference
def fit(model, optimizer, loss_fn, x, y, steps: int, batch_size=None, seed: int = 0) -> list:
    """``steps`` optimiser steps on ``loss_fn(model(x_batch), y_batch)``; returns each step's loss.

    A step draws ``batch_size`` distinct rows at random (all rows when None), zeroes the
    gradients, runs forward and backward, and updates the parameters.
    """
    _check_steps(steps, batch_size, len(x))
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(steps):
        rows = slice(None) if batch_size is None else rng.choice(len(x), batch_size, replace=False)
        optimizer.zero_grad()  # leaves accumulate: without this, old gradients leak into the step
        loss = loss_fn(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


# ------------------------------------------------------------------------------------------------
# Problem 6: save, load, the same network in PyTorch
# ------------------------------------------------------------------------------------------------


@grading.reference
def save_mlp(model, path) -> Path:
    """Write ``model``'s architecture and weights to ``path`` (.npz); returns the path written."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz, got {str(path)!r}")
    arrays = {"sizes": np.asarray(model.sizes, dtype=np.int64),
              "activation": np.asarray(model.activation), "init": np.asarray(model.init)}
    for i, layer in enumerate(model.layers):
        arrays[f"W{i}"], arrays[f"b{i}"] = layer.W.data, layer.b.data
    np.savez(path, **arrays)
    return path


@grading.reference
def load_mlp(path):
    """The model saved by :func:`save_mlp`, with the same weights bit for bit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {str(path)!r}")
    with np.load(path, allow_pickle=False) as f:
        model = MLP(f["sizes"].tolist(), str(f["activation"]), str(f["init"]))
        for i, layer in enumerate(model.layers):
            layer.W.data, layer.b.data = f[f"W{i}"].copy(), f[f"b{i}"].copy()
            layer.W.zero_grad()
            layer.b.zero_grad()
    return model


@grading.reference
def to_torch(model):
    """``model`` as a ``torch.nn.Sequential`` with the same weights (PyTorch stores Wᵀ)."""
    import torch

    modules = []
    for i, layer in enumerate(model.layers):
        W = np.asarray(layer.W.data)
        linear = torch.nn.Linear(*W.shape, dtype=torch.from_numpy(W).dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(layer.b.data)))
        modules.append(linear)
        if i < len(model.layers) - 1:
            modules.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
                            "sigmoid": torch.nn.Sigmoid}[model.activation]())
    return torch.nn.Sequential(*modules)


# ------------------------------------------------------------------------------------------------
# Toy data (seeded numpy)
# ------------------------------------------------------------------------------------------------


def _check_count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _check_noise(noise) -> float:
    if not np.isscalar(noise) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    return float(noise)


def make_moons(n: int = 200, noise: float = 0.1, seed: int = 0):
    """Two interleaved half circles: x (n, 2), y (n,) in {0, 1} (class 0 gets the extra point)."""
    n, noise = _check_count(n), _check_noise(noise)
    rng = np.random.default_rng(seed)
    y = (np.arange(n) >= (n + 1) // 2).astype(np.int64)
    angle = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    x = np.where(y[:, None] == 0, upper, lower) + noise * rng.normal(size=(n, 2))
    return x, y


def make_circles(n: int = 200, noise: float = 0.05, factor: float = 0.5, seed: int = 0):
    """Two concentric circles of radii 1 (class 0) and ``factor`` (class 1): x (n, 2), y (n,)."""
    n, noise = _check_count(n), _check_noise(noise)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor!r}")
    rng = np.random.default_rng(seed)
    y = (np.arange(n) >= (n + 1) // 2).astype(np.int64)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 0, 1.0, factor)
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    x = x + noise * rng.normal(size=(n, 2))
    return x, y


def make_spirals(n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, turns: float = 1.0,
                 seed: int = 0):
    """``n_classes`` interleaved spiral arms in the unit disc: x (n_per_class·K, 2), y labels.

    Arm k at radius r in (0, 1] has angle 2π·turns·r + 2πk/K plus Gaussian noise of std
    ``noise`` (radians), so neighbouring arms are 2π/K apart and no line separates the classes.
    """
    n, k = _check_count(n_per_class, "n_per_class"), _check_count(n_classes, "n_classes")
    noise = _check_noise(noise)
    if not np.isscalar(turns) or not turns > 0:
        raise ValueError(f"turns must be a number > 0, got {turns!r}")
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    r = np.tile(np.linspace(0.05, 1.0, n), k)
    angle = 2 * np.pi * (turns * r + y / k) + noise * rng.normal(size=n * k)
    return r[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1), y


def make_regression(n: int = 200, d: int = 3, noise: float = 0.1, seed: int = 0):
    """y = x w + b + noise·ε with x ~ N(0, I): returns x (n, d), y (n,), the true w (d,) and b."""
    n, d, noise = _check_count(n), _check_count(d, "d"), _check_noise(noise)
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=d), float(rng.normal())
    x = rng.normal(size=(n, d))
    return x, x @ w + b + noise * rng.normal(size=n), w, b


# ------------------------------------------------------------------------------------------------
# Gradient oracles for the checks and the tests
# ------------------------------------------------------------------------------------------------


def _upstream(shape: tuple, seed: int = 1234) -> np.ndarray:
    """A fixed random upstream gradient: a non-scalar output is reduced to Σ out ⊙ w, so that a
    wrong gradient cannot hide behind all-ones weights; a scalar output is taken as it is."""
    return np.ones(()) if shape == () else np.random.default_rng(seed).normal(size=shape)


def engine_grads(fn, arrays, tensor_class=Tensor):
    """Value and gradients of Σ fn(*tensors) ⊙ w in the engine ``tensor_class`` (float64)."""
    tensors = [tensor_class(np.array(a, dtype=np.float64)) for a in arrays]
    out = fn(*tensors)
    if not isinstance(out, TensorBase):
        raise TypeError(f"fn must return a Tensor, got {type(out).__name__}")
    out.backward(_upstream(out.shape))  # the vector-Jacobian product with w (eq. A.3)
    return out.data, [t.grad for t in tensors]


def torch_grads(fn, arrays):
    """Value and gradients of Σ fn(*tensors) ⊙ w by torch.autograd in float64."""
    import torch

    tensors = [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * torch.from_numpy(_upstream(tuple(out.shape)))).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def finite_difference_grads(fn, arrays, eps: float = 1e-6):
    """Gradients of Σ fn(*arrays) ⊙ w by central differences (f(x+h) - f(x-h)) / 2h, float64.
    ``fn`` takes and returns numpy arrays."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    weights = _upstream(np.shape(fn(*arrays)))
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            keep = a[i]
            a[i] = keep + eps
            up = np.sum(fn(*arrays) * weights)
            a[i] = keep - eps
            down = np.sum(fn(*arrays) * weights)
            a[i] = keep
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def max_relative_error(mine, ref) -> float:
    """max |mine - ref| / (1 + |ref|) over all entries (0-d arrays allowed)."""
    mine, ref = np.asarray(mine, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if mine.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(mine - ref) / (1 + np.abs(ref)), initial=0.0))


def assert_gradients(name: str, fn, arrays, tensor_class, numpy_fn=None, torch_fn=None,
                     tol: float = 1e-9, tol_fd: float = 1e-6, hint: str | None = None) -> float:
    """Assert that ``tensor_class`` gets ``fn``'s value and gradients right on ``arrays``.

    Compares against torch.autograd (``torch_fn``, default ``fn``) in float64 and, when
    ``numpy_fn`` is given, against central finite differences. A non-scalar output is reduced to
    Σ out ⊙ w with fixed random w. The messages name the operation, the shapes and the operand;
    ``hint`` replaces the default advice on a wrong gradient. Returns the largest relative error
    against PyTorch.
    """
    shapes = " with ".join(str(np.shape(a)) for a in arrays)
    where = f"{name} on shapes {shapes}"
    value, grads = engine_grads(fn, arrays, tensor_class)
    t_value, t_grads = torch_grads(torch_fn or fn, arrays)
    assert np.shape(value) == t_value.shape, (
        f"{where}: the result has shape {np.shape(value)}, PyTorch's has {t_value.shape}")
    err = max_relative_error(value, t_value)
    assert err < tol, f"{where}: the value differs from PyTorch's by {err:.2g} (relative)"
    worst = err
    hint = hint or "compare its _backward with the local derivative (eq. A.3)"
    fds = [None] * len(arrays) if numpy_fn is None else finite_difference_grads(numpy_fn, arrays)
    for i, (g, tg, fd) in enumerate(zip(grads, t_grads, fds)):
        assert np.shape(g) == tg.shape, (
            f"{where}: the gradient of operand {i} has shape {np.shape(g)}, but an operand's "
            f"gradient has the operand's shape {tg.shape} (sum over broadcast copies, eq. A.5)")
        err = max_relative_error(g, tg)
        assert err < tol, (
            f"{where}: the gradient of operand {i} differs from torch.autograd's by {err:.2g} "
            f"(relative); {hint}")
        worst = max(worst, err)
        if fd is not None:
            err = max_relative_error(g, fd)
            assert err < tol_fd, (
                f"{where}: the gradient of operand {i} differs from central finite differences "
                f"by {err:.2g} (relative)")
    return worst
