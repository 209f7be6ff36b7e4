"""Precision: `floatx` float64 and the mixed dtype policies.

float64: under `keras.config.set_floatx("float64")` the meta-gradient
that `train_on_batch` applies equals the float64 NumPy reference to 1e-10
(one float32 step anywhere leaves 1e-9 to 1e-7). Every reference here is
exact, not a finite difference: the closed form of a linear model's
second-order MAML meta-gradient, and the analytic first-order (FOMAML,
Meta-SGD) ones. JAX reads x64 when it starts, so on JAX the checks run in
a subprocess with `JAX_ENABLE_X64=1`.

The networks are built from Keras ops that compute float64 in float64 on
every backend: `EinsumDense` and ReLU, with a mean squared error written as
a sum. In Keras 3.15, `ops.matmul` (so `Dense`) on torch, `ops.mean` (so
the "mse" loss) on JAX and torch, and `ops.tanh` on JAX compute float64 in
float32 (keras-team/keras#23704); on TensorFlow the usual `Dense` + "mse"
is checked too.

Mixed precision: under `mixed_float16` and `mixed_bfloat16` a meta-model
fits a small sinusoid problem (the loss finite and decreasing), evaluates
and predicts; its variables stay float32 and so does the meta-gradient.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import to_numpy
from keras import ops
from reference import numpy_maml as nm
from reference import numpy_methods as mm

import kerameta
from kerameta.src import backend as seam
from kerameta.src.episodes import validate_episode

BACKEND = keras.backend.backend()
TOLERANCE = 1e-10
TASK_KEYS = ("support_x", "support_y", "query_x", "query_y")

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


# --------------------------------------------------------------------------
# float64: cases against an exact float64 reference
# --------------------------------------------------------------------------
def _sum_mse(y_true, y_pred):
    """Keras's "mse" without `ops.mean` (float32 on JAX and torch)."""
    return ops.sum(ops.square(y_pred - y_true), axis=-1) / y_pred.shape[-1]


def _net(sizes, dense=False):
    """A ReLU MLP (linear for two sizes) of `EinsumDense` or `Dense`."""
    layers = [keras.Input((sizes[0],))]
    for index, units in enumerate(sizes[1:]):
        activation = "relu" if index < len(sizes) - 2 else None
        if dense:
            layers.append(keras.layers.Dense(units, activation=activation))
        else:
            layers.append(
                keras.layers.EinsumDense(
                    "ab,bc->ac", units, bias_axes="c", activation=activation
                )
            )
    return keras.Sequential(layers)


def _tasks(rng, sizes, num_tasks=3, shots=5):
    return [
        {
            key: rng.normal(size=(shots, sizes[0 if key[-1] == "x" else -1]))
            for key in TASK_KEYS
        }
        for _ in range(num_tasks)
    ]


def _batch(tasks):
    x = {k: np.stack([t[k] for t in tasks]) for k in TASK_KEYS[:3]}
    return x, np.stack([t["query_y"] for t in tasks])


def _update(meta, tasks):
    """The meta-gradient `train_on_batch` applies (SGD, rate 1), by id."""
    variables = meta.trainable_variables
    before = [to_numpy(v) for v in variables]
    meta.train_on_batch(*_batch(tasks))
    assert all(v.dtype == "float64" for v in variables)
    return {id(v): b - to_numpy(v) for v, b in zip(variables, before)}


def _meta_gradient(meta, x, y, dtype):
    """The gradient of `train_step`'s objective, by variable id."""
    episode = validate_episode(x, y, require_query_y=True)
    theta, non_trainable = meta._state_values()

    def objective(values):
        return meta._meta_objective(
            values, non_trainable, episode, meta.inner_steps
        )

    (_, _), grads = seam.value_and_grad(objective, has_aux=True)(theta)
    assert all(keras.backend.standardize_dtype(g.dtype) == dtype for g in grads)
    return {id(v): to_numpy(g) for v, g in zip(meta.trainable_variables, grads)}


def _maml(sizes, params, dense=False, **kwargs):
    model = _net(sizes, dense)
    assert all(v.dtype == "float64" for v in model.weights)
    for variable, value in zip(model.trainable_variables, params):
        variable.assign(value)
    meta = kerameta.MAML(model, **kwargs)
    meta.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss="mse" if dense else _sum_mse,
        # Eager JAX dispatches every op on its own: seconds per case.
        jit_compile=BACKEND == "jax",
    )
    return meta


def _maml_second_order(dense=False):
    """A linear model: the closed-form second-order meta-gradient."""
    rng = np.random.default_rng(0)
    sizes, steps, lr = (3, 2), 2, 0.1  # 0.1 has no exact float32 value
    params = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
    tasks = _tasks(rng, sizes)
    meta = _maml(
        sizes,
        params,
        dense,
        inner_steps=steps,
        inner_learning_rate=lr,
        meta_gradient="second_order",
    )
    grads = _update(meta, tasks)
    actual = [grads[id(v)] for v in meta.model.trainable_variables]
    expected = nm.linear_regression_meta_gradient(params, tasks, steps, lr)
    return nm.relative_error(actual, expected)


def _maml_first_order():
    """A ReLU MLP: the analytic first-order meta-gradient."""
    rng = np.random.default_rng(1)
    sizes, steps, lr = (2, 8, 1), 2, 0.1
    params = nm.init_mlp_params(rng, sizes, scale=1.0)
    tasks = _tasks(rng, sizes)
    meta = _maml(
        sizes,
        params,
        inner_steps=steps,
        inner_learning_rate=lr,
        meta_gradient="first_order",
    )
    grads = _update(meta, tasks)
    actual = [grads[id(v)] for v in meta.model.trainable_variables]
    expected = nm.first_order_meta_gradient(
        nm.Net.mlp("relu"), params, tasks, nm.MSE, steps, lr
    )
    return nm.relative_error(actual, expected)


def _meta_sgd_first_order():
    """Meta-SGD, one step: the analytic gradients of weights and rates."""
    rng = np.random.default_rng(2)
    sizes = (2, 8, 1)
    params = nm.init_mlp_params(rng, sizes, scale=1.0)
    rates = [rng.uniform(0.05, 0.4, np.shape(p)) for p in params]
    tasks = _tasks(rng, sizes)
    meta = _maml(
        sizes,
        params,
        inner_steps=1,
        meta_gradient="first_order",
        inner_optimizer="meta_sgd",
    )
    for variable, value in zip(meta.inner_optimizer.trainable_variables, rates):
        assert variable.dtype == "float64"
        variable.assign(value)
    grads = _update(meta, tasks)
    actual = [
        grads[id(v)]
        for v in meta.model.trainable_variables
        + meta.inner_optimizer.trainable_variables
    ]
    config = mm.MethodConfig(inner_steps=1, rates=rates)
    expected = mm.first_order_meta_gradients(
        nm.Net.mlp("relu"), params, tasks, nm.MSE, config
    )
    return nm.relative_error(actual, expected["params"] + expected["rates"])


CASES = {
    "maml_second_order": _maml_second_order,
    "maml_first_order": _maml_first_order,
    "meta_sgd_first_order": _meta_sgd_first_order,
}
if BACKEND == "tensorflow":
    CASES["dense_mse_maml_second_order"] = lambda: _maml_second_order(True)


def _float64_errors():
    """Runs every case under floatx float64; relative errors by name."""
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        errors = {}
        for name, case in CASES.items():
            keras.backend.clear_session(free_memory=False)
            errors[name] = case()
        return errors
    finally:
        keras.config.set_floatx(floatx)


@pytest.fixture(scope="module")
def float64_errors():
    if BACKEND != "jax":
        return _float64_errors()
    # JAX reads x64 when it starts: a fresh interpreter with x64 on and
    # this process's environment (so the same kerameta).
    tests = pathlib.Path(__file__).parent
    env = dict(os.environ, JAX_ENABLE_X64="1", KERAS_BACKEND=BACKEND)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tests), *filter(None, [env.get("PYTHONPATH")])]
    )
    script = (
        "import json, dtype_test as t; print(json.dumps(t._float64_errors()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tests,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_meta_gradient_matches_reference(float64_errors, name):
    error = float64_errors[name]
    assert error <= TOLERANCE, f"{name}: relative error {error:.1e}"


# --------------------------------------------------------------------------
# Mixed precision
# --------------------------------------------------------------------------
@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed_policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def _sinusoid_maml(optimizer):
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    meta = kerameta.MAML(model, inner_steps=1, inner_learning_rate=0.01)
    meta.compile(optimizer=optimizer, loss="mse")
    return meta


def test_mixed_policy_trains(mixed_policy):
    meta = _sinusoid_maml(keras.optimizers.SGD(0.03))
    compute = mixed_policy.removeprefix("mixed_")
    assert meta.model.layers[0].compute_dtype == compute
    # Sinusoids close to one another: a few steps learn their mean.
    tasks = kerameta.data.SinusoidTasks(
        shots=5,
        tasks_per_batch=4,
        num_batches=5,
        amplitude_range=(1.0, 2.0),
        phase_range=(0.0, 0.5),
        input_range=(-2.0, 2.0),
    )
    x, y = tasks[0]
    if BACKEND != "jax":  # `jax.grad` gives each gradient its input's dtype
        grads = _meta_gradient(meta, x, y, dtype="float32")  # (JAX: slow)
        assert all(np.all(np.isfinite(g)) for g in grads.values())

    losses = meta.fit(tasks, epochs=6, verbose=0).history["loss"]
    assert len(losses) == 6 and np.all(np.isfinite(losses))
    assert np.all(np.diff(losses) < 0), losses
    # SGD: the update is the meta-gradient at its true scale (one left
    # scaled by the loss scale would leave the loss flat).
    assert losses[-1] < 0.5 * losses[0], losses
    assert {v.dtype for v in meta.weights if "float" in v.dtype} == {"float32"}
    logs = meta.evaluate(tasks, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])
    predictions = meta.predict(x, verbose=0)
    assert predictions.shape == (4, 5, 1)
    assert np.all(np.isfinite(np.asarray(predictions, np.float32)))


@pytest.mark.parametrize("mixed_policy", ["mixed_float16"], indirect=True)
def test_overflowing_loss_scale_skips_the_step(mixed_policy):
    # float16 gradients of a loss scaled by 2**40 overflow: the
    # `LossScaleOptimizer` skips the step and halves its scale, and the
    # meta-model reports the (finite) loss, no divergence.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.03), initial_scale=2.0**40
    )
    meta = _sinusoid_maml(optimizer)
    x, y = kerameta.data.SinusoidTasks(shots=5, tasks_per_batch=4)[0]
    before = [to_numpy(v) for v in meta.trainable_variables]
    logs = meta.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    for variable, value in zip(meta.trainable_variables, before):
        np.testing.assert_array_equal(to_numpy(variable), value)
    assert to_numpy(optimizer.dynamic_scale) == 2.0**39
