"""Multi-step estimation (`kerameta.meta_gradients.MultiStep`).

The identities of the algorithm specification: a window of 1 is MAML; the
forward variant with a constant rate is MAML with fewer, larger steps; the
straight-through variant adapts exactly as MAML and its meta-gradient is the
product of one `(I - window * alpha * H)` per window, checked in closed form
on linear regression, where `H` is constant.
"""

import keras
import numpy as np
import pytest
from methods_test import _assert_close
from methods_test import _assert_same
from methods_test import _batch
from methods_test import _case
from methods_test import _gradients
from methods_test import _meta_model
from methods_test import _numpy

import kerameta
from kerameta.meta_gradients import MultiStep

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)
VARIANTS = ["forward", "straight_through"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_of_one_is_second_order(variant):
    params, tasks = _case()
    # The same computation: both loops unrolled (second order's is rolled
    # by default on JAX, which rounds in another order).
    maml = _meta_model(params, steps=3, unroll_inner_loop=True)
    multi = _meta_model(
        params, steps=3, meta_gradient=MultiStep(window=1, variant=variant)
    )
    value, grads, _ = _gradients(maml, tasks)
    multi_value, multi_grads, _ = _gradients(multi, tasks)
    assert multi_value == pytest.approx(value, rel=1e-6)
    _assert_same(multi_grads["params"], grads["params"])


@pytest.mark.parametrize("steps, window", [(4, 2), (6, 3), (3, 3)])
def test_forward_windows_are_fewer_larger_steps(steps, window):
    params, tasks = _case()
    lr = 0.1
    fewer = _meta_model(params, steps=steps // window, lr=lr * window)
    multi = _meta_model(
        params, steps=steps, lr=lr, meta_gradient=MultiStep(window=window)
    )
    value, grads, _ = _gradients(fewer, tasks)
    multi_value, multi_grads, _ = _gradients(multi, tasks)
    assert multi_value == pytest.approx(value, rel=1e-5)
    _assert_close(multi_grads["params"], grads["params"], rtol=1e-5)


@pytest.mark.parametrize("window", [2, 3, 4])
def test_straight_through_adapts_exactly_as_maml(window):
    params, tasks = _case()
    maml = _meta_model(params, steps=4, lr=0.1)
    multi = _meta_model(
        params,
        steps=4,
        lr=0.1,
        meta_gradient=MultiStep(window=window, variant="straight_through"),
    )
    value, grads, _ = _gradients(maml, tasks)
    multi_value, multi_grads, _ = _gradients(multi, tasks)
    assert multi_value == pytest.approx(value, rel=1e-5)
    x, _ = _batch(tasks)
    np.testing.assert_allclose(
        _numpy(multi.predict(x, verbose=0)),
        _numpy(maml.predict(x, verbose=0)),
        rtol=1e-5,
        atol=1e-6,
    )
    # The meta-gradient is an estimate: it differs from MAML's.
    assert np.linalg.norm(multi_grads["params"][0] - grads["params"][0]) > 1e-4


def _linear_regression_case(seed=0, num_tasks=3, features=3, shots=6):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, 1)).astype(np.float32)
    bias = rng.normal(size=(1,)).astype(np.float32)
    tasks = []
    for _ in range(num_tasks):
        slope = rng.normal(size=(features, 1))
        task = {}
        for prefix in ("support", "query"):
            x = rng.normal(size=(shots, features)).astype(np.float32)
            y = (x @ slope + rng.normal(size=(shots, 1))).astype(np.float32)
            task[f"{prefix}_x"], task[f"{prefix}_y"] = x, y
        tasks.append(task)
    return [weights, bias], tasks


def _design(x):
    return np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)


@pytest.mark.parametrize("steps, window", [(4, 2), (5, 2), (3, 3)])
def test_straight_through_meta_gradient_in_closed_form(steps, window):
    (weights, bias), tasks = _linear_regression_case()
    lr = 0.05
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.set_weights([weights, bias])
    meta = kerameta.MAML(
        model,
        inner_steps=steps,
        inner_learning_rate=lr,
        meta_gradient=MultiStep(window=window, variant="straight_through"),
        vectorize_tasks=keras.backend.backend() != "tensorflow",
    )
    meta.compile(optimizer="sgd", loss="mse", jit_compile=False)
    _, grads, _ = _gradients(meta, tasks)

    theta = np.concatenate([weights[:, 0], bias]).astype(np.float64)
    expected = np.zeros_like(theta)
    for task in tasks:
        xs, ys = _design(task["support_x"]), task["support_y"][:, 0]
        xq, yq = _design(task["query_x"]), task["query_y"][:, 0]
        hessian = 2.0 * xs.T @ xs / len(xs)
        phi = theta.copy()
        for _ in range(steps):  # the exact (MAML) forward pass
            phi = phi - lr * 2.0 * xs.T @ (xs @ phi - ys) / len(xs)
        vector = 2.0 * xq.T @ (xq @ phi - yq) / len(xq)
        for start in range(0, steps, window):
            length = min(window, steps - start)
            vector = (np.eye(len(theta)) - length * lr * hessian) @ vector
        expected += vector / len(tasks)
    _assert_close(
        grads["params"],
        [expected[:-1, None], expected[-1:]],
        rtol=1e-5,
    )


class _CountingMultiStep(MultiStep):
    """Counts the differentiable gradient evaluations of the inner loop."""

    def run_inner_loop(self, loop, fast, inner_steps):
        self.calls = {True: 0, False: 0}
        gradients = loop.gradients

        def counted(fast, create_graph, step=None):
            self.calls[create_graph] += 1
            return gradients(fast, create_graph, step)

        loop.gradients = counted
        return super().run_inner_loop(loop, fast, inner_steps)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("steps, window", [(5, 2), (6, 3), (4, 4)])
def test_differentiable_gradients_are_one_per_window(variant, steps, window):
    params, tasks = _case()
    counting = _CountingMultiStep(window=window, variant=variant)
    meta = _meta_model(params, steps=steps, lr=0.1, meta_gradient=counting)
    _gradients(meta, tasks)
    windows = -(-steps // window)
    assert counting.calls[True] == windows
    expected_constant = 0 if variant == "forward" else steps - windows
    assert counting.calls[False] == expected_constant


def test_window_longer_than_the_inner_loop_is_refused():
    params, _ = _case()
    with pytest.raises(ValueError, match=r"window \(3\) is longer.*=2\)"):
        _meta_model(params, steps=2, meta_gradient=MultiStep(window=3))
    meta = _meta_model(params, steps=3, meta_gradient=MultiStep(window=3))
    with pytest.raises(ValueError, match="at most 2 steps"):
        meta.inner_steps = 2
    assert meta.inner_steps == 3


def test_bad_multi_step_arguments():
    with pytest.raises(ValueError, match="`window` must be a positive"):
        MultiStep(window=0)
    with pytest.raises(ValueError, match="`variant` must be one of"):
        MultiStep(variant="backward")


def test_multi_step_string_id_and_config():
    meta = kerameta.MAML(
        kerameta.models.mlp(), inner_steps=2, meta_gradient="multi_step"
    )
    assert isinstance(meta.meta_gradient, MultiStep)
    assert meta.meta_gradient.window == 2
    config = kerameta.meta_gradients.serialize(
        MultiStep(window=3, variant="straight_through")
    )
    restored = kerameta.meta_gradients.deserialize(config)
    assert (restored.window, restored.variant) == (3, "straight_through")


def test_multi_step_with_gradient_sharing_shares_window_starts():
    params, tasks = _case()
    meta = _meta_model(
        params,
        steps=4,
        lr=0.1,
        meta_gradient=MultiStep(window=2),
        gradient_sharing=kerameta.GradientSharing(history_decay=0.5),
    )
    x, y = _batch(tasks)
    meta.train_on_batch(x, y)
    for history in meta.gradient_sharing.history:
        rows = _numpy(history)
        assert np.any(rows[0] != 0) and np.any(rows[2] != 0)
        np.testing.assert_array_equal(rows[1], np.zeros_like(rows[1]))
        np.testing.assert_array_equal(rows[3], np.zeros_like(rows[3]))
