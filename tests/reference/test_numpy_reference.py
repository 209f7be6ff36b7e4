"""Self-tests of the NumPy MAML reference (numpy + pytest only)."""

from __future__ import annotations

import numpy as np
import pytest

from . import numpy_maml as nm

SCE = nm.SPARSE_CE_FROM_LOGITS
TOL = 1e-7
LR = 0.1


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _targets(
    rng: np.random.Generator, loss: str, n: int, num_outputs: int
) -> np.ndarray:
    if loss == nm.MSE:
        return rng.normal(size=(n, num_outputs))
    return rng.integers(0, num_outputs, size=n)


def _mlp_tasks(
    rng: np.random.Generator,
    loss: str,
    num_in: int = 3,
    num_out: int = 2,
    n_tasks: int = 2,
    n_support: int = 3,
    n_query: int = 3,
) -> list[dict[str, np.ndarray]]:
    return [
        {
            "support_x": rng.normal(size=(n_support, num_in)),
            "support_y": _targets(rng, loss, n_support, num_out),
            "query_x": rng.normal(size=(n_query, num_in)),
            "query_y": _targets(rng, loss, n_query, num_out),
        }
        for _ in range(n_tasks)
    ]


def _conv_tasks(
    rng: np.random.Generator,
    loss: str,
    num_out: int = 3,
    n_tasks: int = 2,
    n_support: int = 3,
    n_query: int = 3,
) -> list[dict[str, np.ndarray]]:
    return [
        {
            "support_x": rng.normal(size=(n_support, 4, 4, 1)),
            "support_y": _targets(rng, loss, n_support, num_out),
            "query_x": rng.normal(size=(n_query, 4, 4, 1)),
            "query_y": _targets(rng, loss, n_query, num_out),
        }
        for _ in range(n_tasks)
    ]


# --------------------------------------------------------------------------
# Forward passes against naive loop implementations
# --------------------------------------------------------------------------


def _naive_conv_same(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    n, height, width, cin = x.shape
    kh, kw, _, filters = kernel.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    out = np.zeros((n, height, width, filters))
    for b in range(n):
        for i in range(height):
            for j in range(width):
                for f in range(filters):
                    acc = bias[f]
                    for di in range(kh):
                        for dj in range(kw):
                            r, c = i + di - top, j + dj - left
                            if 0 <= r < height and 0 <= c < width:
                                acc += x[b, r, c, :] @ kernel[di, dj, :, f]
                    out[b, i, j, f] = acc
    return out


def _naive_max_pool(x: np.ndarray) -> np.ndarray:
    n, height, width, channels = x.shape
    out = np.zeros((n, height // 2, width // 2, channels))
    for b in range(n):
        for i in range(height // 2):
            for j in range(width // 2):
                for c in range(channels):
                    out[b, i, j, c] = x[
                        b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c
                    ].max()
    return out


@pytest.mark.parametrize("kernel_size", [3, 2])
def test_conv_forward_matches_naive_loops(kernel_size: int) -> None:
    rng = _rng(0)
    x = rng.normal(size=(2, 4, 6, 3))
    kernel = rng.normal(size=(kernel_size, kernel_size, 3, 2))
    bias = rng.normal(size=(2,))
    np.testing.assert_allclose(
        nm.conv2d_same_forward(x, kernel, bias),
        _naive_conv_same(x, kernel, bias),
        rtol=1e-12,
        atol=1e-12,
    )


def test_conv_bn_forward_matches_naive_pipeline() -> None:
    rng = _rng(1)
    params = nm.init_conv_bn_params(rng, (4, 6, 2), filters=3, num_outputs=2)
    assert [p.shape for p in params] == [
        (3, 3, 2, 3),
        (3,),
        (3,),
        (3,),
        (2 * 3 * 3, 2),
        (2,),
    ]
    x = rng.normal(size=(5, 4, 6, 2))
    kernel, bias, gamma, beta, dense_w, dense_b = params
    conv = _naive_conv_same(x, kernel, bias)
    mean = conv.mean(axis=(0, 1, 2))
    var = ((conv - mean) ** 2).mean(axis=(0, 1, 2))
    bn = gamma * (conv - mean) / np.sqrt(var + 1e-3) + beta
    pooled = _naive_max_pool(np.maximum(bn, 0.0))
    out = np.zeros((5, 2))
    for b in range(5):
        for i in range(2):
            for j in range(3):
                for c in range(3):
                    row = (i * 3 + j) * 3 + c  # channels_last flatten
                    out[b] += pooled[b, i, j, c] * dense_w[row]
    out += dense_b
    np.testing.assert_allclose(
        nm.conv_bn_forward(params, x), out, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        nm.forward(nm.Net.conv_bn(), params, x), out, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_forward_matches_manual(activation: str) -> None:
    rng = _rng(2)
    params = nm.init_mlp_params(rng, [3, 4, 5, 2])
    assert [p.shape for p in params] == [
        (3, 4),
        (4,),
        (4, 5),
        (5,),
        (5, 2),
        (2,),
    ]
    x = rng.normal(size=(6, 3))
    act = (lambda z: np.maximum(z, 0)) if activation == "relu" else np.tanh
    h = act(x @ params[0] + params[1])
    h = act(h @ params[2] + params[3])
    expected = h @ params[4] + params[5]
    np.testing.assert_allclose(
        nm.mlp_forward(params, x, activation), expected, rtol=1e-13
    )


def test_losses_match_definitions() -> None:
    rng = _rng(3)
    y_pred = rng.normal(size=(4, 3))
    y = rng.normal(size=(4, 3))
    assert nm.compute_loss(nm.MSE, y_pred, y) == pytest.approx(
        np.mean((y_pred - y) ** 2), rel=1e-14
    )
    labels = np.array([0, 2, 1, 2])
    probs = np.exp(y_pred) / np.exp(y_pred).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probs[np.arange(4), labels]))
    assert nm.compute_loss(SCE, y_pred, labels) == pytest.approx(
        expected, rel=1e-13
    )
    # Stable for huge logits.
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    value, grad = nm.loss_and_output_grad(SCE, big, np.array([0, 0]))
    assert value == pytest.approx(500.0, rel=1e-12)
    assert np.all(np.isfinite(grad))
    with pytest.raises(ValueError):
        nm.compute_loss(nm.MSE, y_pred, y[:, :1])
    with pytest.raises(ValueError):
        nm.compute_loss("hinge", y_pred, y)


# --------------------------------------------------------------------------
# Backprop against central finite differences
# --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [nm.MSE, SCE])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_backprop_matches_finite_differences(
    loss: str, activation: str
) -> None:
    rng = _rng(4)
    net = nm.Net.mlp(activation)
    params = nm.init_mlp_params(rng, [3, 4, 3])
    x = rng.normal(size=(5, 3))
    y = _targets(rng, loss, 5, 3)
    value, grads = nm.loss_and_grad(net, params, x, y, loss)
    assert value == pytest.approx(nm.loss_value(net, params, x, y, loss))
    assert [g.shape for g in grads] == [p.shape for p in params]
    numeric = nm.numerical_loss_grad(net, params, x, y, loss)
    assert nm.relative_error(grads, numeric) < TOL


@pytest.mark.parametrize("loss", [nm.MSE, SCE])
def test_conv_bn_backprop_matches_finite_differences(loss: str) -> None:
    rng = _rng(5)
    params = nm.init_conv_bn_params(rng, (4, 4, 1), filters=2, num_outputs=3)
    x = rng.normal(size=(4, 4, 4, 1))
    y = _targets(rng, loss, 4, 3)
    value, grads = nm.loss_and_grad("conv_bn", params, x, y, loss)
    assert value == pytest.approx(nm.loss_value("conv_bn", params, x, y, loss))
    assert [g.shape for g in grads] == [p.shape for p in params]
    numeric = nm.numerical_loss_grad("conv_bn", params, x, y, loss)
    assert nm.relative_error(grads, numeric) < TOL
    # Every parameter, including gamma/beta and the conv bias (which BN
    # cancels exactly: its true gradient is ~0), is checked per array.
    for g, n in zip(grads, numeric, strict=True):
        assert np.max(np.abs(g - n)) < 1e-8


def test_conv_backward_matches_finite_differences() -> None:
    rng = _rng(6)
    x = rng.normal(size=(2, 4, 4, 2))
    kernel = rng.normal(size=(3, 3, 2, 2))
    bias = rng.normal(size=(2,))
    r = rng.normal(size=(2, 4, 4, 2))
    dx, dk, db = nm.conv2d_same_backward(x, kernel, r)

    def objective(p: list[np.ndarray]) -> float:
        return float(np.sum(r * nm.conv2d_same_forward(*p)))

    numeric = nm.central_difference_gradient(objective, [x, kernel, bias])
    assert nm.relative_error([dx, dk, db], numeric) < TOL


def test_batch_norm_backward_matches_finite_differences() -> None:
    rng = _rng(7)
    x = 2.0 + 3.0 * rng.normal(size=(3, 2, 2, 2))
    gamma = rng.normal(size=(2,))
    beta = rng.normal(size=(2,))
    r = rng.normal(size=x.shape)
    y, cache = nm.batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = nm.batch_norm_backward(r, cache)

    def objective(p: list[np.ndarray]) -> float:
        return float(np.sum(r * nm.batch_norm_forward(*p)[0]))

    numeric = nm.central_difference_gradient(objective, [x, gamma, beta])
    for analytic, fd in zip([dx, dgamma, dbeta], numeric, strict=True):
        assert nm.relative_error([analytic], [fd]) < TOL
    # Non-trivial: ignoring the batch statistics gives a very different dx,
    # and the true dx sums to zero per channel (shift invariance, i.e. the
    # mean path).  With epsilon = 0 the output is also invariant to scaling
    # each channel, so dx is orthogonal to x_hat (the variance path).
    naive_dx = r * gamma * cache["inv_std"]
    assert nm.relative_error([dx], [naive_dx]) > 0.1
    np.testing.assert_allclose(dx.sum(axis=(0, 1, 2)), 0.0, atol=1e-12)
    _, cache0 = nm.batch_norm_forward(x, gamma, beta, epsilon=0.0)
    dx0, _, _ = nm.batch_norm_backward(r, cache0)
    np.testing.assert_allclose(
        (dx0 * cache0["x_hat"]).sum(axis=(0, 1, 2)), 0.0, atol=1e-12
    )
    # Forward uses the batch mean and the biased variance.
    x_hat = (y - beta) / gamma
    np.testing.assert_allclose(x_hat.mean(axis=(0, 1, 2)), 0.0, atol=1e-12)
    var = x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(
        (x_hat**2).mean(axis=(0, 1, 2)), var / (var + 1e-3), rtol=1e-12
    )


def test_max_pool_forward_backward_and_ties() -> None:
    rng = _rng(8)
    x = rng.normal(size=(2, 4, 6, 3))
    out, argmax = nm.max_pool_forward(x)
    np.testing.assert_array_equal(out, _naive_max_pool(x))
    r = rng.normal(size=out.shape)
    dx = nm.max_pool_backward(r, argmax)

    def objective(p: list[np.ndarray]) -> float:
        return float(np.sum(r * nm.max_pool_forward(p[0])[0]))

    numeric = nm.central_difference_gradient(objective, [x])
    assert nm.relative_error([dx], numeric) < TOL
    # Exactly one non-zero per window, at the window max.
    assert np.count_nonzero(dx) == out.size
    # Ties: the first max in row-major window order gets the gradient.
    window = np.array([[1.0, 5.0], [5.0, 5.0]]).reshape(1, 2, 2, 1)
    _, tie_arg = nm.max_pool_forward(window)
    assert tie_arg.item() == 1
    tie_dx = nm.max_pool_backward(np.ones((1, 1, 1, 1)), tie_arg)
    np.testing.assert_array_equal(
        tie_dx[0, :, :, 0], np.array([[0.0, 1.0], [0.0, 0.0]])
    )
    all_equal = np.full((1, 2, 2, 1), 2.0)
    _, arg = nm.max_pool_forward(all_equal)
    assert arg.item() == 0
    with pytest.raises(ValueError):
        nm.max_pool_forward(np.zeros((1, 3, 4, 1)))


# --------------------------------------------------------------------------
# MAML
# --------------------------------------------------------------------------


def test_adapt_is_plain_sgd() -> None:
    rng = _rng(9)
    params = nm.init_mlp_params(rng, [3, 4, 2])
    task = _mlp_tasks(rng, nm.MSE, n_tasks=1)[0]
    sx, sy = task["support_x"], task["support_y"]
    phi0 = nm.adapt("mlp_tanh", params, sx, sy, nm.MSE, 0, LR)
    for p, q in zip(phi0, params, strict=True):
        np.testing.assert_array_equal(p, q)
        assert p is not q
    manual = [p.copy() for p in params]
    for _ in range(2):
        _, g = nm.loss_and_grad("mlp_tanh", manual, sx, sy, nm.MSE)
        manual = [p - LR * gi for p, gi in zip(manual, g, strict=True)]
    phi2 = nm.adapt("mlp_tanh", params, sx, sy, nm.MSE, 2, LR)
    assert nm.relative_error(phi2, manual) == 0.0


@pytest.mark.parametrize("inner_steps", [0, 1, 3])
def test_linear_regression_closed_form_matches_finite_differences(
    inner_steps: int,
) -> None:
    rng = _rng(10)
    params = nm.init_mlp_params(rng, [3, 2])
    tasks = _mlp_tasks(rng, nm.MSE)
    exact = nm.linear_regression_meta_gradient(params, tasks, inner_steps, LR)
    assert [g.shape for g in exact] == [(3, 2), (2,)]
    numeric = nm.second_order_meta_gradient(
        nm.Net.mlp(), params, tasks, nm.MSE, inner_steps, LR
    )
    assert nm.relative_error(exact, numeric) < TOL
    hvp = nm.hvp_meta_gradient("mlp", params, tasks, nm.MSE, inner_steps, LR)
    assert nm.relative_error(exact, hvp) < TOL


def test_linear_regression_first_order_matches_formula() -> None:
    rng = _rng(11)
    w, b = nm.init_mlp_params(rng, [3, 2])
    tasks = _mlp_tasks(rng, nm.MSE)
    expected = np.zeros((4, 2))
    for task in tasks:
        xs = np.hstack([task["support_x"], np.ones((3, 1))])
        xq = np.hstack([task["query_x"], np.ones((3, 1))])
        wa = np.vstack([w, b])
        for _ in range(3):
            wa = wa - LR * 2.0 / 6.0 * xs.T @ (xs @ wa - task["support_y"])
        expected += 2.0 / 6.0 * xq.T @ (xq @ wa - task["query_y"])
    expected /= len(tasks)
    fo = nm.first_order_meta_gradient("mlp", [w, b], tasks, nm.MSE, 3, LR)
    np.testing.assert_allclose(fo[0], expected[:3], rtol=1e-12)
    np.testing.assert_allclose(fo[1], expected[3], rtol=1e-12)
    so = nm.linear_regression_meta_gradient([w, b], tasks, 3, LR)
    assert nm.relative_error(so, fo) > 1e-3  # FOMAML drops the Jacobian


@pytest.mark.parametrize(
    ("net", "loss"),
    [("mlp_relu", SCE), ("mlp_tanh", nm.MSE), ("conv_bn", SCE)],
)
def test_zero_inner_steps_meta_gradient_is_query_gradient(
    net: str, loss: str
) -> None:
    rng = _rng(12)
    if net == "conv_bn":
        params = nm.init_conv_bn_params(rng, (4, 4, 1), 2, 3)
        tasks = _conv_tasks(rng, loss)
    else:
        params = nm.init_mlp_params(rng, [3, 4, 3])
        tasks = _mlp_tasks(rng, loss, num_out=3)
    grads = [
        nm.loss_and_grad(net, params, t["query_x"], t["query_y"], loss)[1]
        for t in tasks
    ]
    expected = [sum(gs) / len(tasks) for gs in zip(*grads, strict=True)]
    numeric = nm.second_order_meta_gradient(net, params, tasks, loss, 0, LR)
    assert nm.relative_error(expected, numeric) < TOL
    fo = nm.first_order_meta_gradient(net, params, tasks, loss, 0, LR)
    assert nm.relative_error(expected, fo) < 1e-14
    assert nm.meta_loss(net, params, tasks, loss, 0, LR) == pytest.approx(
        np.mean(
            [
                nm.loss_value(net, params, t["query_x"], t["query_y"], loss)
                for t in tasks
            ]
        ),
        rel=1e-14,
    )


@pytest.mark.parametrize(
    ("net", "loss"), [("mlp_tanh", nm.MSE), ("conv_bn", SCE)]
)
def test_nonlinear_meta_gradient_fd_matches_hvp_recursion(
    net: str, loss: str
) -> None:
    rng = _rng(13)
    if net == "conv_bn":
        params = nm.init_conv_bn_params(rng, (4, 4, 1), 2, 3)
        tasks = _conv_tasks(rng, loss)
    else:
        params = nm.init_mlp_params(rng, [3, 4, 3])
        tasks = _mlp_tasks(rng, loss, num_out=3)
    numeric = nm.second_order_meta_gradient(net, params, tasks, loss, 2, LR)
    hvp = nm.hvp_meta_gradient(net, params, tasks, loss, 2, LR)
    assert nm.relative_error(numeric, hvp) < TOL
    fo = nm.first_order_meta_gradient(net, params, tasks, loss, 2, LR)
    assert nm.relative_error(numeric, fo) > 1e-3


def test_net_descriptions() -> None:
    assert nm.as_net("mlp") == nm.Net.mlp("relu")
    assert nm.as_net("mlp_tanh") == nm.Net("mlp", "tanh")
    assert nm.as_net(nm.Net.conv_bn()).kind == "conv_bn"
    with pytest.raises(ValueError):
        nm.as_net("resnet")
    with pytest.raises(ValueError):
        nm.Net("mlp", "gelu")  # type: ignore[arg-type]


def test_kink_margin() -> None:
    rng = _rng(14)
    tasks = _mlp_tasks(rng, nm.MSE)
    params = nm.init_mlp_params(rng, [3, 4, 2])
    assert nm.kink_margin("mlp_tanh", params, tasks, nm.MSE, 2, LR) == np.inf
    margin = nm.kink_margin("mlp_relu", params, tasks, nm.MSE, 2, LR)
    assert 0.0 < margin < np.inf
    # A hidden unit whose pre-activation is exactly 0 on a query example.
    shifted = [p.copy() for p in params]
    x0 = tasks[0]["query_x"][0]
    shifted[1][0] = -(x0 @ shifted[0][:, 0])
    assert nm.kink_margin("mlp_relu", shifted, tasks, nm.MSE, 0, LR) < 1e-12
    conv_tasks = _conv_tasks(rng, SCE)
    conv_params = nm.init_conv_bn_params(rng, (4, 4, 1), 2, 3)
    assert nm.kink_margin("conv_bn", conv_params, conv_tasks, SCE, 1, LR) > 0
