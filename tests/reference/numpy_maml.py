"""Pure-NumPy float64 reference implementation of MAML meta-gradients.

This module is a test oracle for kerameta.  It only depends on NumPy and does
every computation in float64.  It provides

* two small networks whose parameter lists follow Keras's
  ``model.trainable_variables`` order and shapes (an MLP of ``Dense`` layers
  and a ``Conv2D -> BatchNormalization -> ReLU -> MaxPooling2D -> Flatten ->
  Dense`` net, channels_last, BN always in training mode),
* the two losses used by the tests (mean reduction over examples),
* hand-written backpropagation for both networks,
* MAML helpers: the inner-loop adaptation, the meta-loss, the second-order
  meta-gradient by central finite differences, the first-order (FOMAML)
  meta-gradient, and the exact closed-form meta-gradient for linear
  regression.

Networks are described by a :class:`Net` value (or one of the strings
``"mlp"``, ``"mlp_relu"``, ``"mlp_tanh"``, ``"conv_bn"``).  Tasks are
mappings with keys ``support_x``, ``support_y``, ``query_x``, ``query_y``.

Finite differences assume the meta-loss is smooth around ``params``; ReLU
kinks and max-pool ties are measure-zero events for random float64 data.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Literal

import numpy as np

Array = np.ndarray
Params = Sequence[Array]
Task = Mapping[str, Any]
Activation = Literal["relu", "tanh"]

MSE = "mse"
SPARSE_CE_FROM_LOGITS = "sparse_categorical_crossentropy_from_logits"
LOSSES = (MSE, SPARSE_CE_FROM_LOGITS)

#: Keras ``BatchNormalization`` default epsilon.
BN_EPSILON = 1e-3
#: Default step of the central finite differences.  Measured relative
#: error of the meta-gradient in float64 (params and losses O(1)): ~1e-10 to
#: 1e-9 at h = 1e-6 and ~1e-11 to 1e-10 at h = 1e-5 (the smooth optimum;
#: rounding ~1e-16/h, truncation ~h**2).  1e-6 is the default because a
#: smaller step is less likely to straddle a ReLU kink or a max-pool tie;
#: see :func:`kink_margin`.
DEFAULT_FD_STEP = 1e-6


# --------------------------------------------------------------------------
# Network description
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """Which reference network to run.

    ``kind`` is ``"mlp"`` (``Dense`` stack, ``activation`` on hidden layers,
    linear output; a single layer ``[W, b]`` is a linear model) or
    ``"conv_bn"`` (``Conv2D(F, 3, padding="same")`` -> ``BatchNormalization``
    (training mode) -> ``ReLU`` -> ``MaxPooling2D(2)`` -> ``Flatten`` ->
    ``Dense``).  ``activation`` is ignored for ``"conv_bn"``.
    """

    kind: Literal["mlp", "conv_bn"]
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "conv_bn"):
            raise ValueError(f"unknown network kind {self.kind!r}")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"unknown activation {self.activation!r}")

    @classmethod
    def mlp(cls, activation: Activation = "relu") -> Net:
        """Return an MLP description with the given hidden activation."""
        return cls("mlp", activation)

    @classmethod
    def conv_bn(cls) -> Net:
        """Return the Conv2D+BatchNorm+ReLU+MaxPool+Dense description."""
        return cls("conv_bn")


_NET_ALIASES = {
    "mlp": Net("mlp", "relu"),
    "mlp_relu": Net("mlp", "relu"),
    "mlp_tanh": Net("mlp", "tanh"),
    "conv_bn": Net("conv_bn"),
}


def as_net(net: Net | str) -> Net:
    """Normalise a :class:`Net` or one of its string aliases to a ``Net``."""
    if isinstance(net, Net):
        return net
    try:
        return _NET_ALIASES[net]
    except KeyError:
        raise ValueError(f"unknown network {net!r}") from None


def _f64(params: Params) -> list[Array]:
    return [np.asarray(p, dtype=np.float64) for p in params]


# --------------------------------------------------------------------------
# Parameter initialisation (for tests; any values work)
# --------------------------------------------------------------------------


def init_mlp_params(
    rng: np.random.Generator, layer_sizes: Sequence[int], scale: float = 0.5
) -> list[Array]:
    """Random ``[W1, b1, ..., Wn, bn]`` for sizes ``[in, h1, ..., out]``.

    Kernels are ``(in, out)``; weights ~ N(0, scale**2 / fan_in) and biases
    ~ N(0, 0.1**2) so that ReLU units are not exactly at their kink.
    """
    params: list[Array] = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
        w = rng.normal(0.0, scale / np.sqrt(fan_in), (fan_in, fan_out))
        params += [w, rng.normal(0.0, 0.1, (fan_out,))]
    return params


def init_conv_bn_params(
    rng: np.random.Generator,
    input_shape: tuple[int, int, int],
    filters: int,
    num_outputs: int,
) -> list[Array]:
    """Random conv_bn params for per-example ``input_shape = (H, W, Cin)``.

    Returns ``[conv_kernel (3, 3, Cin, F), conv_bias (F,), gamma (F,),
    beta (F,), dense_kernel (H/2 * W/2 * F, num_outputs), dense_bias]``.
    """
    height, width, in_channels = input_shape
    flat = (height // 2) * (width // 2) * filters
    return [
        rng.normal(
            0.0, 1.0 / np.sqrt(9 * in_channels), (3, 3, in_channels, filters)
        ),
        rng.normal(0.0, 0.1, (filters,)),
        1.0 + rng.normal(0.0, 0.1, (filters,)),
        rng.normal(0.0, 0.1, (filters,)),
        rng.normal(0.0, 1.0 / np.sqrt(flat), (flat, num_outputs)),
        rng.normal(0.0, 0.1, (num_outputs,)),
    ]


# --------------------------------------------------------------------------
# Layers: forward and backward
# --------------------------------------------------------------------------


def _activate(z: Array, activation: str) -> Array:
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "tanh":
        return np.tanh(z)
    raise ValueError(f"unknown activation {activation!r}")


def _activation_grad(z: Array, activation: str) -> Array:
    if activation == "relu":
        return (z > 0.0).astype(np.float64)
    if activation == "tanh":
        return 1.0 - np.tanh(z) ** 2
    raise ValueError(f"unknown activation {activation!r}")


def _same_padding(kernel: int) -> tuple[int, int]:
    """TF/Keras "same" padding for stride 1: extra pixel goes after."""
    total = kernel - 1
    return total // 2, total - total // 2


def _im2col(x: Array, kh: int, kw: int) -> Array:
    """Patches ``(N, H, W, kh, kw, C)`` of ``x`` with "same" zero padding."""
    n, height, width, channels = x.shape
    (top, bottom), (left, right) = _same_padding(kh), _same_padding(kw)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    cols = np.empty((n, height, width, kh, kw, channels))
    for di in range(kh):
        for dj in range(kw):
            cols[:, :, :, di, dj, :] = xp[:, di : di + height, dj : dj + width]
    return cols


def conv2d_same_forward(x: Array, kernel: Array, bias: Array) -> Array:
    """Keras ``Conv2D(padding="same", strides=1)`` (cross-correlation).

    ``x`` is ``(N, H, W, Cin)``, ``kernel`` ``(kh, kw, Cin, F)``, ``bias``
    ``(F,)``; returns ``(N, H, W, F)``.
    """
    kh, kw, cin, filters = kernel.shape
    n, height, width, _ = x.shape
    cols = _im2col(x, kh, kw).reshape(n * height * width, kh * kw * cin)
    out = cols @ kernel.reshape(kh * kw * cin, filters) + bias
    return out.reshape(n, height, width, filters)


def conv2d_same_backward(
    x: Array, kernel: Array, dout: Array
) -> tuple[Array, Array, Array]:
    """Backward of :func:`conv2d_same_forward`: ``(dx, dkernel, dbias)``."""
    kh, kw, cin, filters = kernel.shape
    n, height, width, _ = x.shape
    cols = _im2col(x, kh, kw).reshape(n * height * width, kh * kw * cin)
    dout2 = dout.reshape(n * height * width, filters)
    dkernel = (cols.T @ dout2).reshape(kernel.shape)
    dbias = dout2.sum(axis=0)
    dcols = (dout2 @ kernel.reshape(kh * kw * cin, filters).T).reshape(
        n, height, width, kh, kw, cin
    )
    (top, bottom), (left, right) = _same_padding(kh), _same_padding(kw)
    dxp = np.zeros((n, height + top + bottom, width + left + right, cin))
    for di in range(kh):
        for dj in range(kw):
            dxp[:, di : di + height, dj : dj + width] += dcols[:, :, :, di, dj]
    dx = dxp[:, top : top + height, left : left + width]
    return dx, dkernel, dbias


def batch_norm_forward(
    x: Array, gamma: Array, beta: Array, epsilon: float = BN_EPSILON
) -> tuple[Array, dict[str, Array]]:
    """Training-mode batch norm over every axis but the last.

    Uses the batch mean and the biased batch variance (as Keras does in
    training mode).  Returns ``(y, cache)`` where ``cache`` feeds
    :func:`batch_norm_backward`.
    """
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    centred = x - mean
    var = (centred**2).mean(axis=axes)
    inv_std = 1.0 / np.sqrt(var + epsilon)
    x_hat = centred * inv_std
    cache = {"x_hat": x_hat, "inv_std": inv_std, "gamma": gamma}
    return gamma * x_hat + beta, cache


def batch_norm_backward(
    dy: Array, cache: dict[str, Array]
) -> tuple[Array, Array, Array]:
    """Full backward of :func:`batch_norm_forward`: ``(dx, dgamma, dbeta)``.

    Includes the paths through the batch mean and through the mean inside
    the variance:
    ``dx = inv_std / m * (m * dxh - sum(dxh) - x_hat * sum(dxh * x_hat))``.
    """
    x_hat, inv_std, gamma = cache["x_hat"], cache["inv_std"], cache["gamma"]
    axes = tuple(range(dy.ndim - 1))
    m = dy.size // dy.shape[-1]
    dgamma = (dy * x_hat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dx_hat = dy * gamma
    dx = (inv_std / m) * (
        m * dx_hat
        - dx_hat.sum(axis=axes)
        - x_hat * (dx_hat * x_hat).sum(axis=axes)
    )
    return dx, dgamma, dbeta


def _pool_windows(x: Array) -> Array:
    """``(N, H, W, C)`` -> ``(N, H/2, W/2, C, 4)``, windows row-major."""
    n, height, width, channels = x.shape
    if height % 2 or width % 2:
        raise ValueError("max pooling reference needs even H and W")
    w = x.reshape(n, height // 2, 2, width // 2, 2, channels)
    w = w.transpose(0, 1, 3, 5, 2, 4)
    return w.reshape(n, height // 2, width // 2, channels, 4)


def max_pool_forward(x: Array) -> tuple[Array, Array]:
    """Keras ``MaxPooling2D(pool_size=2)`` (stride 2, valid, even H/W).

    Returns ``(out, argmax)``; ``argmax`` holds the winning position 0..3 of
    each window in row-major ``(di, dj)`` order, the first one on ties.
    """
    windows = _pool_windows(x)
    argmax = windows.argmax(axis=-1)
    out = np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
    return out, argmax


def max_pool_backward(dout: Array, argmax: Array) -> Array:
    """Route ``dout`` to the argmax of each 2x2 window (zeros elsewhere)."""
    n, h2, w2, channels = dout.shape
    onehot = argmax[..., None] == np.arange(4)
    dwin = np.where(onehot, dout[..., None], 0.0)
    dwin = dwin.reshape(n, h2, w2, channels, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return dwin.reshape(n, 2 * h2, 2 * w2, channels)


# --------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------


def _mlp_forward_cache(
    params: Params, x: Array, activation: str
) -> tuple[Array, list[Array], list[Array]]:
    if len(params) % 2 or not params:
        raise ValueError("MLP params must be [W1, b1, ..., Wn, bn]")
    n_layers = len(params) // 2
    inputs: list[Array] = []
    pre_acts: list[Array] = []
    h = x
    for i in range(n_layers):
        inputs.append(h)
        z = h @ params[2 * i] + params[2 * i + 1]
        pre_acts.append(z)
        h = _activate(z, activation) if i < n_layers - 1 else z
    return h, inputs, pre_acts


def mlp_forward(params: Params, x: Array, activation: str) -> Array:
    """Forward pass of a ``Dense`` stack.

    ``params = [W1, b1, ..., Wn, bn]`` with ``W`` shaped ``(in, out)``;
    ``activation`` (``"relu"`` or ``"tanh"``) is applied on hidden layers
    only.  ``x`` is ``(N, in)``; returns ``(N, out)``.
    """
    x = np.asarray(x, dtype=np.float64)
    return _mlp_forward_cache(_f64(params), x, activation)[0]


def _mlp_backward(
    params: Params,
    inputs: list[Array],
    pre_acts: list[Array],
    dout: Array,
    activation: str,
) -> list[Array]:
    n_layers = len(params) // 2
    grads: list[Array] = [np.empty(0)] * len(params)
    dz = dout
    for i in reversed(range(n_layers)):
        grads[2 * i] = inputs[i].T @ dz
        grads[2 * i + 1] = dz.sum(axis=0)
        if i > 0:
            dh = dz @ params[2 * i].T
            dz = dh * _activation_grad(pre_acts[i - 1], activation)
    return grads


def _conv_bn_forward_cache(
    params: Params, x: Array
) -> tuple[Array, dict[str, Any]]:
    kernel, bias, gamma, beta, dense_w, dense_b = params
    conv = conv2d_same_forward(x, kernel, bias)
    bn, bn_cache = batch_norm_forward(conv, gamma, beta)
    relu = np.maximum(bn, 0.0)
    pooled, argmax = max_pool_forward(relu)
    flat = pooled.reshape(pooled.shape[0], -1)
    out = flat @ dense_w + dense_b
    cache = {
        "x": x,
        "bn": bn,
        "bn_cache": bn_cache,
        "argmax": argmax,
        "pooled_shape": pooled.shape,
        "flat": flat,
    }
    return out, cache


def conv_bn_forward(params: Params, x: Array) -> Array:
    """Forward pass of the Conv2D+BN(train)+ReLU+MaxPool+Flatten+Dense net.

    ``params = [conv_kernel (3, 3, Cin, F), conv_bias (F,), gamma (F,),
    beta (F,), dense_kernel (H/2*W/2*F, out), dense_bias (out,)]`` and
    ``x`` is ``(N, H, W, Cin)``.  Flatten is row-major over ``(h, w, c)``
    like Keras channels_last.  Returns ``(N, out)``.
    """
    x = np.asarray(x, dtype=np.float64)
    return _conv_bn_forward_cache(_f64(params), x)[0]


def _conv_bn_backward(
    params: Params, cache: dict[str, Any], dout: Array
) -> list[Array]:
    kernel, _, _, _, dense_w, _ = params
    d_dense_w = cache["flat"].T @ dout
    d_dense_b = dout.sum(axis=0)
    dpooled = (dout @ dense_w.T).reshape(cache["pooled_shape"])
    drelu = max_pool_backward(dpooled, cache["argmax"])
    dbn = drelu * (cache["bn"] > 0.0)
    dconv, dgamma, dbeta = batch_norm_backward(dbn, cache["bn_cache"])
    _, dkernel, dbias = conv2d_same_backward(cache["x"], kernel, dconv)
    return [dkernel, dbias, dgamma, dbeta, d_dense_w, d_dense_b]


def forward(net: Net | str, params: Params, x: Array) -> Array:
    """Run the network described by ``net`` on ``x`` (float64 logits)."""
    net = as_net(net)
    if net.kind == "mlp":
        return mlp_forward(params, x, net.activation)
    return conv_bn_forward(params, x)


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------


def loss_and_output_grad(
    loss: str, y_pred: Array, y: Array
) -> tuple[float, Array]:
    """Loss value (mean over examples) and its gradient wrt ``y_pred``.

    ``"mse"``: mean over all elements of ``(y_pred - y)**2``; ``y`` must
    have ``y_pred``'s shape.  ``"sparse_categorical_crossentropy_from_logits"``:
    ``y`` holds integer labels ``(N,)`` and ``y_pred`` logits ``(N, K)``;
    the mean over ``N`` of ``-log_softmax(y_pred)[n, y[n]]``.
    """
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if loss == MSE:
        y = np.asarray(y, dtype=np.float64)
        if y.shape != y_pred.shape:
            raise ValueError(
                f"mse needs y shaped like y_pred: {y.shape} vs {y_pred.shape}"
            )
        diff = y_pred - y
        return float(np.mean(diff**2)), 2.0 * diff / diff.size
    if loss == SPARSE_CE_FROM_LOGITS:
        labels = np.asarray(y).astype(np.int64).reshape(-1)
        n = y_pred.shape[0]
        if y_pred.ndim != 2 or labels.shape != (n,):
            raise ValueError("sparse CE needs logits (N, K) and labels (N,)")
        shifted = y_pred - y_pred.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_norm
        value = -float(np.mean(log_probs[np.arange(n), labels]))
        grad = np.exp(log_probs)
        grad[np.arange(n), labels] -= 1.0
        return value, grad / n
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def compute_loss(loss: str, y_pred: Array, y: Array) -> float:
    """Loss value only (see :func:`loss_and_output_grad`)."""
    return loss_and_output_grad(loss, y_pred, y)[0]


def loss_value(
    net: Net | str, params: Params, x: Array, y: Array, loss: str
) -> float:
    """``loss(net(params, x), y)`` as a Python float."""
    return compute_loss(loss, forward(net, params, x), y)


def loss_and_grad(
    net: Net | str, params: Params, x: Array, y: Array, loss: str
) -> tuple[float, list[Array]]:
    """Loss and its analytic gradient wrt every parameter (hand backprop).

    Returns ``(loss, grads)`` with ``grads[i].shape == params[i].shape``.
    """
    net = as_net(net)
    params = _f64(params)
    x = np.asarray(x, dtype=np.float64)
    if net.kind == "mlp":
        out, inputs, pre_acts = _mlp_forward_cache(params, x, net.activation)
        value, dout = loss_and_output_grad(loss, out, y)
        grads = _mlp_backward(params, inputs, pre_acts, dout, net.activation)
    else:
        out, cache = _conv_bn_forward_cache(params, x)
        value, dout = loss_and_output_grad(loss, out, y)
        grads = _conv_bn_backward(params, cache, dout)
    return value, grads


def central_difference_gradient(
    fn: Callable[[list[Array]], float],
    params: Params,
    step: float = DEFAULT_FD_STEP,
) -> list[Array]:
    """Central finite-difference gradient of a scalar ``fn(params)``.

    ``g[j] = (fn(theta + h e_j) - fn(theta - h e_j)) / (2 h)`` for every
    element ``j`` of every array; returns arrays shaped like ``params``.
    """
    base = _f64(params)
    grads: list[Array] = []
    for i, p in enumerate(base):
        g = np.zeros_like(p)
        flat_g = g.reshape(-1)
        for j in range(p.size):
            values = []
            for sign in (1.0, -1.0):
                shifted = p.copy()
                shifted.reshape(-1)[j] += sign * step
                values.append(fn(base[:i] + [shifted] + base[i + 1 :]))
            flat_g[j] = (values[0] - values[1]) / (2.0 * step)
        grads.append(g)
    return grads


# --------------------------------------------------------------------------
# MAML
# --------------------------------------------------------------------------


def adapt(
    net: Net | str,
    params: Params,
    support_x: Array,
    support_y: Array,
    loss: str,
    inner_steps: int,
    learning_rate: float,
) -> list[Array]:
    """Fast weights after ``inner_steps`` plain SGD steps on the support set.

    ``phi_0 = params``; ``phi_{k+1} = phi_k - learning_rate * grad L_S(phi_k)``.
    """
    phi = [p.copy() for p in _f64(params)]
    for _ in range(inner_steps):
        _, grads = loss_and_grad(net, phi, support_x, support_y, loss)
        phi = [p - learning_rate * g for p, g in zip(phi, grads, strict=True)]
    return phi


def meta_loss(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    inner_steps: int,
    learning_rate: float,
) -> float:
    """MAML objective: mean over tasks of ``L_Q(adapt(params, support))``."""
    total = 0.0
    for task in tasks:
        phi = adapt(
            net,
            params,
            task["support_x"],
            task["support_y"],
            loss,
            inner_steps,
            learning_rate,
        )
        total += loss_value(net, phi, task["query_x"], task["query_y"], loss)
    return total / len(tasks)


def second_order_meta_gradient(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    inner_steps: int,
    learning_rate: float,
    step: float = DEFAULT_FD_STEP,
) -> list[Array]:
    """Full (second-order) MAML meta-gradient by central differences.

    Every parameter element ``theta_j`` gets
    ``(meta_loss(theta + h e_j) - meta_loss(theta - h e_j)) / (2 h)``.
    Costs ``2 * num_params`` meta-loss evaluations, so keep models tiny.
    """

    def objective(trial: list[Array]) -> float:
        return meta_loss(net, trial, tasks, loss, inner_steps, learning_rate)

    return central_difference_gradient(objective, params, step)


def hvp_meta_gradient(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    inner_steps: int,
    learning_rate: float,
    step: float = DEFAULT_FD_STEP,
) -> list[Array]:
    """Second-order MAML meta-gradient by reverse accumulation.

    An independent cross-check of :func:`second_order_meta_gradient` that
    is much cheaper: ``v = grad L_Q(phi_K)`` and then, for ``k = K-1..0``,
    ``v <- v - lr * H_S(phi_k) v``, where the Hessian-vector product is a
    central difference of the analytic gradient along ``v``:
    ``(g(phi + s v) - g(phi - s v)) / (2 s)`` with ``s = step / ||v||``.
    Returns the mean of ``v`` over tasks.
    """
    theta = _f64(params)
    total = [np.zeros_like(p) for p in theta]
    for task in tasks:
        sx, sy = task["support_x"], task["support_y"]
        trajectory = [theta]
        for _ in range(inner_steps):
            _, grads = loss_and_grad(net, trajectory[-1], sx, sy, loss)
            trajectory.append(
                [
                    p - learning_rate * g
                    for p, g in zip(trajectory[-1], grads, strict=True)
                ]
            )
        _, v = loss_and_grad(
            net, trajectory[-1], task["query_x"], task["query_y"], loss
        )
        for phi in reversed(trajectory[:-1]):
            norm = np.sqrt(sum(float(np.sum(vi**2)) for vi in v))
            if norm == 0.0:
                break
            s = step / norm
            plus = [p + s * vi for p, vi in zip(phi, v, strict=True)]
            minus = [p - s * vi for p, vi in zip(phi, v, strict=True)]
            _, g_plus = loss_and_grad(net, plus, sx, sy, loss)
            _, g_minus = loss_and_grad(net, minus, sx, sy, loss)
            v = [
                vi - learning_rate * (gp - gm) / (2.0 * s)
                for vi, gp, gm in zip(v, g_plus, g_minus, strict=True)
            ]
        total = [t + vi for t, vi in zip(total, v, strict=True)]
    return [t / len(tasks) for t in total]


def first_order_meta_gradient(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    inner_steps: int,
    learning_rate: float,
) -> list[Array]:
    """FOMAML meta-gradient: mean over tasks of ``grad L_Q`` at ``phi_K``.

    Uses the analytic backprop; the Jacobian ``d phi_K / d theta`` is
    replaced by the identity.  Equals the full gradient when K = 0.
    """
    total = [np.zeros_like(p) for p in _f64(params)]
    for task in tasks:
        phi = adapt(
            net,
            params,
            task["support_x"],
            task["support_y"],
            loss,
            inner_steps,
            learning_rate,
        )
        _, grads = loss_and_grad(
            net, phi, task["query_x"], task["query_y"], loss
        )
        total = [t + g for t, g in zip(total, grads, strict=True)]
    return [t / len(tasks) for t in total]


def _linear_design(x: Array) -> Array:
    x = np.asarray(x, dtype=np.float64)
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


def _linear_hessian_and_offset(
    x: Array, y: Array, num_outputs: int
) -> tuple[Array, Array]:
    """MSE support loss is ``0.5 t^T A t - c^T t + const`` in ``t = (w, b)``."""
    xa = _linear_design(x)
    y = np.asarray(y, dtype=np.float64)
    scale = 2.0 / (xa.shape[0] * num_outputs)
    # t is vec(Wa) row-major with Wa = [w; b] of shape (in + 1, out), so the
    # gradient scale * Xa^T (Xa Wa - Y) becomes A t - c with a Kronecker A.
    hessian = scale * np.kron(xa.T @ xa, np.eye(num_outputs))
    offset = scale * (xa.T @ y).reshape(-1)
    return hessian, offset


def linear_regression_meta_gradient(
    params: Params,
    tasks: Sequence[Task],
    inner_steps: int,
    learning_rate: float,
) -> list[Array]:
    """Exact MAML meta-gradient of ``y = x @ w + b`` with MSE loss.

    ``params = [w (in, out), b (out,)]`` (a one-layer ``Net.mlp``).  With
    ``t = (vec(w), b)`` the support gradient is ``A t - c`` with constant
    Hessian ``A``, so every inner step has Jacobian ``J = I - lr * A`` and
    ``d phi_K / d theta = J**K``.  The meta-gradient is
    ``mean_tasks (J**K)^T grad L_Q(phi_K)``, returned as ``[dw, db]``.
    """
    w, b = _f64(params)
    num_in, num_out = w.shape
    theta = np.concatenate([w.reshape(-1), b.reshape(-1)])
    total = np.zeros_like(theta)
    for task in tasks:
        a_s, c_s = _linear_hessian_and_offset(
            task["support_x"], task["support_y"], num_out
        )
        a_q, c_q = _linear_hessian_and_offset(
            task["query_x"], task["query_y"], num_out
        )
        step_jac = np.eye(theta.size) - learning_rate * a_s
        jacobian = np.eye(theta.size)
        phi = theta.copy()
        for _ in range(inner_steps):
            phi = phi - learning_rate * (a_s @ phi - c_s)
            jacobian = step_jac @ jacobian
        total += jacobian.T @ (a_q @ phi - c_q)
    total /= len(tasks)
    return [
        total[: num_in * num_out].reshape(num_in, num_out),
        total[num_in * num_out :].copy(),
    ]


# --------------------------------------------------------------------------
# Utilities
# --------------------------------------------------------------------------


def kink_margin(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    inner_steps: int,
    learning_rate: float,
) -> float:
    """Smallest distance to a non-differentiable point in the meta-loss.

    Over every forward pass that :func:`meta_loss` runs (support sets at
    ``phi_0 .. phi_{K-1}``, query sets at ``phi_K``) this is the minimum of
    ``|pre-activation|`` of ReLU units and, for ``conv_bn``, of the gap
    between the largest and second largest entry of each 2x2 pooling window
    with a positive max.  Finite differences (and :func:`hvp_meta_gradient`)
    are only trustworthy when this is well above the step; ``inf`` for
    smooth nets (tanh MLPs).
    """
    net = as_net(net)
    if net.kind == "mlp" and net.activation == "tanh":
        return float("inf")
    margin = float("inf")

    def visit(phi: list[Array], x: Array) -> float:
        x = np.asarray(x, dtype=np.float64)
        if net.kind == "mlp":
            _, _, pre_acts = _mlp_forward_cache(phi, x, net.activation)
            hidden = pre_acts[:-1]
            if not hidden:
                return float("inf")
            return min(float(np.min(np.abs(z))) for z in hidden)
        _, cache = _conv_bn_forward_cache(phi, x)
        bn = cache["bn"]
        windows = np.sort(_pool_windows(np.maximum(bn, 0.0)), axis=-1)
        gaps = (windows[..., -1] - windows[..., -2])[windows[..., -1] > 0]
        pool_gap = float(np.min(gaps)) if gaps.size else float("inf")
        return min(float(np.min(np.abs(bn))), pool_gap)

    for task in tasks:
        phi = _f64(params)
        sx, sy = task["support_x"], task["support_y"]
        for _ in range(inner_steps):
            margin = min(margin, visit(phi, sx))
            _, grads = loss_and_grad(net, phi, sx, sy, loss)
            phi = [
                p - learning_rate * g for p, g in zip(phi, grads, strict=True)
            ]
        margin = min(margin, visit(phi, task["query_x"]))
    return margin


def relative_error(a: Params, b: Params) -> float:
    """``||a - b|| / max(||a||, ||b||, 1e-300)`` over all arrays jointly."""
    fa = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in a])
    fb = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in b])
    denom = max(np.linalg.norm(fa), np.linalg.norm(fb), 1e-300)
    return float(np.linalg.norm(fa - fb) / denom)


def numerical_loss_grad(
    net: Net | str,
    params: Params,
    x: Array,
    y: Array,
    loss: str,
    step: float = DEFAULT_FD_STEP,
) -> list[Array]:
    """Central finite-difference gradient of ``loss_value`` (for checks)."""

    def objective(trial: list[Array]) -> float:
        return loss_value(net, trial, x, y, loss)

    return central_difference_gradient(objective, params, step)
