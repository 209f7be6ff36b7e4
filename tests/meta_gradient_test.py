"""Meta-gradient correctness: kerameta against a float64 NumPy reference.

The reference (`tests/reference/numpy_maml.py`) differentiates the whole
MAML meta-loss by central finite differences in float64. kerameta runs in
float32, so the criterion is a norm-relative error of `RTOL` = 1e-5 over the
concatenated meta-gradient (measured: at most 1.3e-6, 1e-7 to 1e-6 for most
cases), and per variable `||g_i - r_i|| <= RTOL * ||r_i|| + ATOL * ||r||`
(measured: at most 3.3e-6 relative). The absolute term, a millionth of the
whole meta-gradient, is for the conv bias: under batch normalization its
true gradient is exactly zero and float32 leaves up to 7e-8 of the norm.

Most tests read the meta-gradient at the source: the same objective
`train_step` differentiates (`MetaModel._meta_objective`), through the
backend seam's `value_and_grad`. One test goes through the public path
(`compile` with SGD and `train_on_batch`) and reads the gradient back from
the weight update.
"""

import functools
import pathlib
import warnings

import keras
import numpy as np
import pytest
from keras import ops
from reference import numpy_maml as nm

import kerameta
from kerameta.src import backend as seam
from kerameta.src.episodes import validate_episode

BACKEND = keras.backend.backend()
RTOL = 1e-5
ATOL = 1e-6
# The finite differences step over ReLU kinks and max-pool ties unless they
# are further away than this; it also keeps float32 on the same side.
MIN_KINK_MARGIN = 1e-4
FIXTURE = pathlib.Path(__file__).parent / "fixtures"
FIXTURE = FIXTURE / "meta_gradient_fixture.npz"
SCE = nm.SPARSE_CE_FROM_LOGITS
_TASK_KEYS = ("support_x", "support_y", "query_x", "query_y")


# --------------------------------------------------------------------------
# Cases: float32 weights and episodes, and their float64 reference
# --------------------------------------------------------------------------
CASES = {
    "mlp_tanh": {"net": nm.Net.mlp("tanh"), "lr": 0.3, "seed": 3},
    "mlp_relu": {"net": nm.Net.mlp("relu"), "lr": 0.3, "seed": 8},
    "conv_bn": {"net": nm.Net.conv_bn(), "lr": 0.3, "seed": 10},
}
MLP_SIZES = (2, 8, 8, 1)
IMAGE_SHAPE = (6, 6, 1)
FILTERS = 3
WAYS = 3


def _as_float32(arrays):
    """Rounds to float32 (what Keras sees) and returns float64 copies."""
    return [np.asarray(a, np.float32).astype(np.float64) for a in arrays]


def _mlp_tasks(rng, num_tasks=3, shots=5):
    tasks = []
    for _ in range(num_tasks):
        amplitude, phase = rng.uniform(0.5, 2.0), rng.uniform(0.0, 3.0)
        task = {}
        for prefix in ("support", "query"):
            x = rng.uniform(-2.0, 2.0, (shots, MLP_SIZES[0]))
            y = amplitude * np.sin(x.sum(axis=1, keepdims=True) - phase)
            task[f"{prefix}_x"], task[f"{prefix}_y"] = _as_float32([x, y])
        tasks.append(task)
    return tasks


def _image_tasks(rng, num_tasks=2, shots=2):
    tasks = []
    for _ in range(num_tasks):
        prototypes = rng.normal(size=(WAYS, *IMAGE_SHAPE))
        task = {}
        for prefix in ("support", "query"):
            y = np.repeat(np.arange(WAYS), shots)
            noise = 0.5 * rng.normal(size=(WAYS * shots, *IMAGE_SHAPE))
            task[f"{prefix}_x"] = _as_float32([prototypes[y] + noise])[0]
            task[f"{prefix}_y"] = y.astype(np.int32)
        tasks.append(task)
    return tasks


@functools.cache
def _case(name):
    """Returns `(net, float64 params, tasks, loss, inner lr)` of a case."""
    spec = CASES[name]
    rng = np.random.default_rng(spec["seed"])
    if spec["net"].kind == "mlp":
        params = nm.init_mlp_params(rng, MLP_SIZES, scale=1.0)
        return (
            spec["net"],
            _as_float32(params),
            _mlp_tasks(rng),
            nm.MSE,
            spec["lr"],
        )
    params = nm.init_conv_bn_params(rng, IMAGE_SHAPE, FILTERS, WAYS)
    return spec["net"], _as_float32(params), _image_tasks(rng), SCE, spec["lr"]


@functools.cache
def _reference(name, order, steps, lr=None):
    """The float64 meta-gradient of a case (cached across tests)."""
    net, params, tasks, loss, case_lr = _case(name)
    lr = case_lr if lr is None else lr
    if order == "second_order":
        return nm.second_order_meta_gradient(
            net, params, tasks, loss, steps, lr
        )
    return nm.first_order_meta_gradient(net, params, tasks, loss, steps, lr)


def _batch(tasks, data_format="channels_last"):
    """Stacks a list of task dicts into kerameta's `(x, query_y)`."""

    def stack(key):
        values = np.stack([t[key] for t in tasks])
        if key.endswith("_y") and values.dtype.kind == "f":
            return values.astype(np.float32)
        if key.endswith("_x"):
            values = values.astype(np.float32)
            if data_format == "channels_first":
                values = np.moveaxis(values, -1, 2)
        return values

    x = {k: stack(k) for k in ("support_x", "support_y", "query_x")}
    return x, stack("query_y")


# --------------------------------------------------------------------------
# Keras models matching the reference networks
# --------------------------------------------------------------------------
def _keras_net(net, data_format="channels_last"):
    if net.kind == "mlp":
        layers = [keras.Input((MLP_SIZES[0],))]
        layers += [
            keras.layers.Dense(units, activation=net.activation)
            for units in MLP_SIZES[1:-1]
        ]
        layers.append(keras.layers.Dense(MLP_SIZES[-1]))
        return keras.Sequential(layers)
    height, width, channels = IMAGE_SHAPE
    first = data_format == "channels_first"
    shape = (channels, height, width) if first else IMAGE_SHAPE
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(
                FILTERS, 3, padding="same", data_format=data_format
            ),
            keras.layers.BatchNormalization(axis=1 if first else -1),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2, data_format=data_format),
            # Flattens in (h, w, c) order, like the reference.
            keras.layers.Flatten(data_format=data_format),
            keras.layers.Dense(WAYS),
        ]
    )


def _keras_loss(loss):
    if loss == SCE:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return "mse"


def _numpy(tensor):
    """A float64 NumPy copy of a backend tensor."""
    with warnings.catch_warnings():
        # torch 2.13's `Tensor.__array__` has no `copy` keyword, so NumPy 2
        # warns inside `keras.ops.convert_to_numpy`.
        warnings.filterwarnings(
            "ignore", "__array__ implementation", DeprecationWarning
        )
        return np.array(ops.convert_to_numpy(tensor), np.float64)


def _default_vectorize(net):
    # On JAX, "auto" runs convolutions in `lax.map`, which eager mode
    # recompiles at every call (seconds each); that path is checked compiled,
    # in `test_jit_compiled_train_on_batch_applies_reference_meta_gradient`.
    if BACKEND == "jax" and net.kind == "conv_bn":
        return True
    return "auto"


def _set_weights(model, params):
    variables = model.trainable_variables
    assert [tuple(v.shape) for v in variables] == [p.shape for p in params]
    for variable, value in zip(variables, params):
        variable.assign(np.asarray(value, np.float32))


def _maml(
    name,
    order,
    steps,
    lr=None,
    data_format="channels_last",
    vectorize_tasks=None,
):
    net, params, _, loss, case_lr = _case(name)
    model = _keras_net(net, data_format)
    _set_weights(model, params)
    if vectorize_tasks is None:
        vectorize_tasks = _default_vectorize(net)
    maml = kerameta.MAML(
        model,
        inner_steps=steps,
        inner_learning_rate=case_lr if lr is None else lr,
        meta_gradient=order,
        vectorize_tasks=vectorize_tasks,
    )
    maml.compile(optimizer="sgd", loss=_keras_loss(loss), jit_compile=False)
    return maml


def _meta_gradient(maml, x, y):
    """The meta-loss and meta-gradient of `maml.train_step`'s objective."""
    episode = validate_episode(x, y, require_query_y=True)
    theta, non_trainable = maml._state_values()

    def objective(values):
        return maml._meta_objective(
            values, non_trainable, episode, maml.inner_steps
        )

    (loss, _), grads = seam.value_and_grad(objective, has_aux=True)(theta)
    return float(_numpy(loss)), [_numpy(g) for g in grads]


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------
def _norm(arrays):
    return float(np.sqrt(sum(np.sum(np.square(a)) for a in arrays)))


def _assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    """Norm-relative errors, concatenated and per variable (see top)."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert np.all(np.isfinite(a))
    total = nm.relative_error(actual, expected)
    assert total <= rtol, f"meta-gradient relative error {total:.2e}"
    scale = _norm(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        error = _norm([a - e])
        bound = rtol * _norm([e]) + atol * scale
        assert error <= bound, (
            f"variable {i}: error {error:.2e} > {bound:.2e} "
            f"(gradient norm {_norm([e]):.2e}, total {scale:.2e})"
        )
    return total


def _check_kinks(name, steps, lr=None):
    net, params, tasks, loss, case_lr = _case(name)
    lr = case_lr if lr is None else lr
    margin = nm.kink_margin(net, params, tasks, loss, steps, lr)
    assert margin > MIN_KINK_MARGIN, (
        f"{name}: a ReLU kink or max-pool tie is {margin:.1e} away; pick "
        "another seed"
    )


ORDERS = ["second_order", "first_order"]


# --------------------------------------------------------------------------
# 1. kerameta equals the NumPy reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_meta_gradient_matches_reference(name, order, steps):
    _check_kinks(name, steps)
    net, params, tasks, loss, lr = _case(name)
    maml = _maml(name, order, steps)
    meta_loss, grads = _meta_gradient(maml, *_batch(tasks))

    expected = _reference(name, order, steps)
    _assert_close(grads, expected)
    expected_loss = nm.meta_loss(net, params, tasks, loss, steps, lr)
    np.testing.assert_allclose(meta_loss, expected_loss, rtol=1e-5)
    # The case separates the estimators: a wrong `order` cannot pass.
    other = ORDERS[1 - ORDERS.index(order)]
    assert nm.relative_error(expected, _reference(name, other, steps)) > 0.1


def _train_on_batch_update(maml, x, y, learning_rate):
    variables = maml.model.trainable_variables
    before = [_numpy(v.value) for v in variables]
    maml.train_on_batch(x, y)
    after = [_numpy(v.value) for v in variables]
    update = [(b - a) / learning_rate for b, a in zip(before, after)]
    return before, update


def _public_path_tolerances(before, expected, learning_rate):
    # `new = fl(old - lr * g)` is rounded to float32, so `old - new`
    # recovers `lr * g` only up to half an ulp of the new weights,
    # 2**-24 * (|w| + lr * |g|) per element: relative to the whole update,
    # at most 2**-24 * (||w|| + lr * ||g||) / (lr * ||g||). It is added to
    # both tolerances (about 1e-6 here).
    update = learning_rate * _norm(expected)
    cancellation = 2.0**-24 * (_norm(before) + update) / update
    return RTOL + cancellation, ATOL + cancellation


def _train_on_batch_check(name, order, jit_compile, vectorize_tasks=None):
    steps, learning_rate = 3, 1.0
    _check_kinks(name, steps)
    _, _, tasks, loss, _ = _case(name)
    maml = _maml(name, order, steps, vectorize_tasks=vectorize_tasks)
    maml.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss=_keras_loss(loss),
        jit_compile=jit_compile,
    )
    x, y = _batch(tasks)
    before, update = _train_on_batch_update(maml, x, y, learning_rate)
    expected = _reference(name, order, steps)
    rtol, atol = _public_path_tolerances(before, expected, learning_rate)
    _assert_close(update, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "name,order",
    [
        ("mlp_tanh", "second_order"),
        ("mlp_tanh", "first_order"),
        ("conv_bn", "second_order"),
    ],
)
def test_train_on_batch_applies_reference_meta_gradient(name, order):
    if BACKEND == "jax":
        pytest.skip(
            "JAX runs the public path jit-compiled (Keras's default there, "
            "tested below); eager JAX compiles every op once, seconds per net"
        )
    _train_on_batch_check(name, order, jit_compile=False)


@pytest.mark.parametrize("name", ["mlp_tanh", "conv_bn"])
def test_jit_compiled_train_on_batch_applies_reference_meta_gradient(name):
    if BACKEND == "torch" and name == "conv_bn":
        pytest.skip(
            "torch.compile cannot differentiate twice through the per-task "
            "loop of channels_last convolutions; compile refuses it "
            "(errors_test.py)"
        )
    if BACKEND == "tensorflow" and name == "mlp_tanh":
        pytest.skip(
            "each XLA compile of a second-order step takes ~10 s on TF; the "
            "conv case (with the batch-norm second-order fix) covers XLA"
        )
    # "auto": on JAX the conv net runs its tasks in a compiled `lax.map`.
    _train_on_batch_check(
        name, "second_order", jit_compile=True, vectorize_tasks="auto"
    )


# --------------------------------------------------------------------------
# 2. Vectorized over tasks equals looped over tasks
# --------------------------------------------------------------------------
@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="the TensorFlow backend always loops over tasks and rejects "
    "vectorize_tasks=True",
)
@pytest.mark.parametrize(
    "name,data_format,order",
    [
        ("mlp_tanh", "channels_last", "second_order"),
        ("mlp_tanh", "channels_last", "first_order"),
        ("conv_bn", "channels_last", "second_order"),
        ("conv_bn", "channels_first", "second_order"),
    ],
)
def test_vectorized_equals_looped(name, data_format, order):
    if BACKEND == "jax" and order == "first_order":
        pytest.skip(
            "on JAX first order is the caller's `stop_gradient`, the same "
            "code on both paths, and each eager `lax.map` costs seconds"
        )
    if name == "conv_bn" and BACKEND == "jax":
        pytest.skip(
            "on JAX, eager `lax.map` over conv tasks recompiles at every "
            "call; the looped conv path is checked against the reference "
            "jit-compiled, the vectorized one in the reference matrix"
        )
    if name == "conv_bn" and data_format == "channels_last":
        pytest.skip(
            "torch.vmap cannot run channels_last Conv2D with per-task "
            "kernels (DESIGN.md section 3); the channels_first case runs"
        )
    steps = 1
    _check_kinks(name, steps)
    tasks = _case(name)[2]
    x, y = _batch(tasks, data_format)
    grads = {}
    for vectorize in (True, False):
        maml = _maml(
            name,
            order,
            steps,
            data_format=data_format,
            vectorize_tasks=vectorize,
        )
        assert maml.vectorize_tasks is vectorize
        _, grads[vectorize] = _meta_gradient(maml, x, y)
    _assert_close(grads[True], grads[False])
    _assert_close(grads[True], _reference(name, order, steps))


# --------------------------------------------------------------------------
# 3. One checked-in case, the same numbers on every backend
# --------------------------------------------------------------------------
def _load_fixture():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def _fixture_params(data, prefix):
    count = 2 * (len(data["layer_sizes"]) - 1)
    return [data[f"{prefix}_{i}"] for i in range(count)]


@pytest.mark.parametrize("order", ORDERS)
def test_meta_gradient_matches_checked_in_fixture(order):
    data = _load_fixture()
    sizes = [int(s) for s in data["layer_sizes"]]
    activation = str(data["activation"])
    model = keras.Sequential(
        [keras.Input((sizes[0],))]
        + [keras.layers.Dense(u, activation=activation) for u in sizes[1:-1]]
        + [keras.layers.Dense(sizes[-1])]
    )
    _set_weights(model, _fixture_params(data, "param"))
    maml = kerameta.MAML(
        model,
        inner_steps=int(data["inner_steps"]),
        inner_learning_rate=float(data["inner_learning_rate"]),
        meta_gradient=order,
    )
    maml.compile(optimizer="sgd", loss="mse", jit_compile=False)
    x = {k: data[k] for k in ("support_x", "support_y", "query_x")}
    meta_loss, grads = _meta_gradient(maml, x, data["query_y"])

    _assert_close(grads, _fixture_params(data, order))
    np.testing.assert_allclose(meta_loss, data["meta_loss"], rtol=1e-5)


def test_checked_in_fixture_is_current():
    """The stored numbers are what the NumPy reference computes today.

    The second-order check uses the reference's reverse-mode HVP form, an
    independent (and cheaper) route to the stored finite differences.
    """
    data = _load_fixture()
    net = nm.Net.mlp(str(data["activation"]))
    params = [p.astype(np.float64) for p in _fixture_params(data, "param")]
    tasks = [
        {k: data[k][t].astype(np.float64) for k in _TASK_KEYS}
        for t in range(data["support_x"].shape[0])
    ]
    args = (
        net,
        params,
        tasks,
        nm.MSE,
        int(data["inner_steps"]),
        float(data["inner_learning_rate"]),
    )
    for name, fn in (
        ("second_order", nm.hvp_meta_gradient),
        ("first_order", nm.first_order_meta_gradient),
    ):
        expected = _fixture_params(data, name)
        assert nm.relative_error(fn(*args), expected) < 1e-8
    assert nm.meta_loss(*args) == pytest.approx(float(data["meta_loss"]))


# --------------------------------------------------------------------------
# 4. Identities
# --------------------------------------------------------------------------
def _linear_tasks(rng, num_tasks=3, shots=4, num_in=3, num_out=2):
    return [
        {
            key: _as_float32([rng.normal(size=(shots, size))])[0]
            for key, size in (
                ("support_x", num_in),
                ("support_y", num_out),
                ("query_x", num_in),
                ("query_y", num_out),
            )
        }
        for _ in range(num_tasks)
    ]


def _linear_maml(params, steps, lr, order, loss):
    model = keras.Sequential(
        [keras.Input((params[0].shape[0],)), keras.layers.Dense(2)]
    )
    _set_weights(model, params)
    maml = kerameta.MAML(
        model, inner_steps=steps, inner_learning_rate=lr, meta_gradient=order
    )
    maml.compile(optimizer="sgd", loss=loss, jit_compile=False)
    return maml


@pytest.mark.parametrize("steps", [1, 3])
def test_linear_regression_matches_closed_form(steps):
    rng = np.random.default_rng(7)
    params = _as_float32(nm.init_mlp_params(rng, (3, 2)))
    tasks = _linear_tasks(rng)
    lr = 0.2
    maml = _linear_maml(params, steps, lr, "second_order", "mse")
    _, grads = _meta_gradient(maml, *_batch(tasks))
    expected = nm.linear_regression_meta_gradient(params, tasks, steps, lr)
    _assert_close(grads, expected)
    # The Hessian term is not negligible here.
    first = nm.first_order_meta_gradient("mlp", params, tasks, "mse", steps, lr)
    assert nm.relative_error(expected, first) > 0.1


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", ["mlp_tanh", "conv_bn"])
def test_zero_inner_learning_rate_gives_query_gradient(name, order):
    """With a zero inner step the meta-gradient is grad L_Q at theta."""
    _check_kinks(name, 2, lr=0.0)
    net, params, tasks, loss, _ = _case(name)
    maml = _maml(name, order, steps=2, lr=0.0)
    _, grads = _meta_gradient(maml, *_batch(tasks))
    per_task = [
        nm.loss_and_grad(net, params, t["query_x"], t["query_y"], loss)[1]
        for t in tasks
    ]
    expected = [np.mean(g, axis=0) for g in zip(*per_task)]
    _assert_close(grads, expected)


def _linear_in_prediction_loss(y_true, y_pred):
    return ops.mean(y_true * y_pred, axis=-1)


def test_first_order_equals_second_order_for_a_linear_loss():
    """A loss linear in the weights has zero Hessian: FOMAML is exact.

    A `Dense` layer with the loss `mean(y * prediction)` is linear in its
    weights, so every inner gradient is constant, the inner loop's Jacobian
    is the identity and both estimators give the query gradient at theta,
    `mean_tasks [x_q^T y_q, sum(y_q)] / (Q * outputs)`.
    """
    rng = np.random.default_rng(11)
    params = _as_float32(nm.init_mlp_params(rng, (3, 2)))
    tasks = _linear_tasks(rng)
    x, y = _batch(tasks)
    grads = {}
    for order in ORDERS:
        maml = _linear_maml(params, 3, 0.5, order, _linear_in_prediction_loss)
        _, grads[order] = _meta_gradient(maml, x, y)
    _assert_close(grads["second_order"], grads["first_order"])
    scale = 1.0 / (y.shape[1] * y.shape[2])
    expected = [
        np.mean([t["query_x"].T @ t["query_y"] for t in tasks], 0) * scale,
        np.mean([t["query_y"].sum(0) for t in tasks], 0) * scale,
    ]
    _assert_close(grads["second_order"], expected)
