"""The composable methods against a float64 NumPy reference and their
special cases: gradient sharing, gradient agreement, the CML co-learner,
Meta-SGD, ANIL and Reptile.

The reference (`tests/reference/numpy_methods.py`) differentiates each
method's meta-objective by central finite differences in float64, or gives
its first-order gradient in closed form. kerameta runs in float32: the
criterion is the norm-relative error of `meta_gradient_test.py`.
"""

import functools

import keras
import numpy as np
import pytest
from helpers import mlp
from helpers import to_numpy as _numpy
from keras import ops
from reference import numpy_maml as nm
from reference import numpy_methods as mm

import kerameta
from kerameta.src import backend as seam
from kerameta.src.episodes import validate_episode

SIZES = (2, 8, 8, 1)
LR = 0.3
RTOL = 2e-5

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


# --------------------------------------------------------------------------
# A tanh MLP and its tasks, in float32 (what Keras sees) and float64
# --------------------------------------------------------------------------
def _f32(arrays):
    return [np.asarray(a, np.float32).astype(np.float64) for a in arrays]


@functools.cache
def _case(seed=0, num_tasks=3, shots=5):
    rng = np.random.default_rng(seed)
    params = _f32(nm.init_mlp_params(rng, SIZES, scale=1.0))
    tasks = []
    for _ in range(num_tasks):
        amplitude, phase = rng.uniform(0.5, 2.0), rng.uniform(0.0, 3.0)
        task = {}
        for prefix in ("support", "query"):
            x = rng.uniform(-2.0, 2.0, (shots, SIZES[0]))
            y = amplitude * np.sin(x.sum(axis=1, keepdims=True) - phase)
            task[f"{prefix}_x"], task[f"{prefix}_y"] = _f32([x, y])
        tasks.append(task)
    return params, tasks


def _batch(tasks):
    def stack(key):
        return np.stack([t[key] for t in tasks]).astype(np.float32)

    x = {k: stack(k) for k in ("support_x", "support_y", "query_x")}
    return x, stack("query_y")


def _assign(variables, values):
    assert len(variables) == len(values)
    for variable, value in zip(variables, values):
        variable.assign(np.asarray(value, np.float32).reshape(variable.shape))


def _meta_model(
    params,
    cls=kerameta.MAML,
    steps=1,
    lr=LR,
    **kwargs,
):
    model = mlp(SIZES)
    _assign(model.trainable_variables, params)
    meta = cls(
        model,
        inner_steps=steps,
        inner_learning_rate=lr,
        vectorize_tasks=True
        if keras.backend.backend() != "tensorflow"
        else False,
        **kwargs,
    )
    meta.compile(optimizer="sgd", loss="mse", jit_compile=False)
    return meta


def _gradients(meta, tasks, training=True):
    """The objective and its gradient, by group of meta-learned weights."""
    x, y = _batch(tasks)
    x = {k: ops.convert_to_tensor(v) for k, v in x.items()}
    y = ops.convert_to_tensor(y)
    episode = validate_episode(x, y, require_query_y=True)
    theta, non_trainable = meta._state_values()

    def objective(values):
        return meta._meta_objective(
            values, non_trainable, episode, meta.inner_steps, training
        )

    with seam.enable_grad():
        (value, aux), grads = seam.value_and_grad(objective, has_aux=True)(
            theta
        )
    by_id = {id(v): _numpy(g) for v, g in zip(meta.trainable_variables, grads)}
    groups = {"params": meta.model.trainable_variables}
    groups["rates"] = meta.inner_optimizer.trainable_variables
    if meta.gradient_sharing is not None:
        groups["lam_c"] = meta.gradient_sharing.concurrent_scales
        groups["lam_p"] = meta.gradient_sharing.history_scales
    if meta.co_learner is not None:
        groups["co_learner"] = meta.co_learner.head.trainable_variables
    result = {
        name: [by_id[id(v)] for v in variables if id(v) in by_id]
        for name, variables in groups.items()
    }
    return float(_numpy(value)), result, aux


def _mean_support_gradient(params, tasks):
    """The mean over tasks of the support-loss gradient at `params`."""
    mean = [np.zeros_like(p) for p in params]
    for task in tasks:
        _, grads = nm.loss_and_grad(
            "mlp_tanh", params, task["support_x"], task["support_y"], nm.MSE
        )
        for total, g in zip(mean, grads):
            total += g / len(tasks)
    return mean


def _assert_close(actual, expected, rtol=RTOL):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == np.shape(e), (a.shape, np.shape(e))
        assert np.all(np.isfinite(a))
    error = nm.relative_error(actual, [np.asarray(e) for e in expected])
    assert error <= rtol, f"relative error {error:.2e}"


def _assert_same(first, second, rtol=1e-6):
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-7)


# --------------------------------------------------------------------------
# Reference meta-gradients
# --------------------------------------------------------------------------
def _reference(order, params, tasks, config):
    """The NumPy meta-gradients: finite differences, or first order."""
    if order == "second_order":
        return mm.meta_gradients("mlp_tanh", params, tasks, nm.MSE, config)
    return mm.first_order_meta_gradients(
        "mlp_tanh", params, tasks, nm.MSE, config
    )


def _sharing_values(params, steps, granularity, seed):
    rng = np.random.default_rng(seed)
    shapes = [np.shape(p) for p in params]

    def scale(shape):
        full = (steps,) + (shape if granularity == "element" else ())
        return _f32([rng.uniform(-0.5, 0.8, full)])[0]

    lam_c = [scale(s) for s in shapes]
    lam_p = [scale(s) for s in shapes]
    history = _f32([0.3 * rng.normal(size=(steps, *s)) for s in shapes])
    return lam_c, lam_p, history


def _with_sharing(meta, lam_c, lam_p, history):
    sharing = meta.gradient_sharing
    _assign(sharing.concurrent_scales, lam_c)
    _assign(sharing.history_scales, lam_p)
    _assign(sharing.history, history)


@pytest.mark.parametrize("order", ["second_order", "first_order"])
@pytest.mark.parametrize(
    "concurrent, granularity",
    [("mean", "tensor"), ("leave_one_out", "element")],
)
def test_sharing_meta_gradient_matches_reference(
    order, concurrent, granularity
):
    params, tasks = _case()
    steps = 2
    lam_c, lam_p, history = _sharing_values(params, steps, granularity, 1)
    meta = _meta_model(
        params,
        steps=steps,
        meta_gradient=order,
        gradient_sharing=kerameta.GradientSharing(
            concurrent=concurrent, granularity=granularity
        ),
    )
    _with_sharing(meta, lam_c, lam_p, history)
    config = mm.MethodConfig(
        inner_steps=steps,
        learning_rate=LR,
        sharing=mm.GradientSharing(
            lam_c, lam_p, history, concurrent, granularity
        ),
    )
    reference = _reference(order, params, tasks, config)
    value, grads, _ = _gradients(meta, tasks)
    assert value == pytest.approx(
        mm.objective("mlp_tanh", params, tasks, nm.MSE, config), rel=1e-5
    )
    for group in ("params", "lam_c", "lam_p"):
        _assert_close(grads[group], reference[group])


@pytest.mark.parametrize("order", ["second_order", "first_order"])
def test_meta_sgd_meta_gradient_matches_reference(order):
    params, tasks = _case()
    rng = np.random.default_rng(2)
    rates = _f32([rng.uniform(0.05, 0.4, np.shape(p)) for p in params])
    meta = _meta_model(
        params, steps=2, meta_gradient=order, inner_optimizer="meta_sgd"
    )
    _assign(meta.inner_optimizer.trainable_variables, rates)
    config = mm.MethodConfig(inner_steps=2, learning_rate=LR, rates=rates)
    reference = _reference(order, params, tasks, config)
    _, grads, _ = _gradients(meta, tasks)
    _assert_close(grads["params"], reference["params"])
    _assert_close(grads["rates"], reference["rates"])


@pytest.mark.parametrize("order", ["second_order", "first_order"])
@pytest.mark.parametrize("apply_to", ["total", "meta_loss"])
def test_co_learner_meta_gradient_matches_reference(order, apply_to):
    params, tasks = _case()
    rng = np.random.default_rng(3)
    co_params = _f32([rng.normal(size=(SIZES[2], 1)), rng.normal(size=(1,))])
    head = keras.layers.Dense(1)
    meta = _meta_model(
        params,
        steps=2,
        meta_gradient=order,
        co_learner=kerameta.CoLearner(head, "hidden2", loss_weight=0.7),
        # Uniform weights, applied to the total or the query loss only.
        task_weighting=kerameta.TaskWeighting(apply_to=apply_to),
    )
    _assign(head.trainable_variables, co_params)
    weighting = "total" if apply_to == "total" else "meta_only"
    config = mm.MethodConfig(
        inner_steps=2,
        learning_rate=LR,
        co_learner=mm.CoLearner(2, co_params, 0.7, weighting),
    )
    reference = _reference(order, params, tasks, config)
    _, grads, _ = _gradients(meta, tasks)
    _assert_close(grads["params"], reference["params"])
    _assert_close(grads["co_learner"], reference["co_learner"])


def test_anil_meta_gradient_matches_reference():
    params, tasks = _case()
    meta = _meta_model(params, steps=3, adapted_layers=["head"])
    config = mm.MethodConfig(
        inner_steps=3,
        learning_rate=LR,
        adapted=mm.last_layer_indices(params),
    )
    reference = mm.meta_gradients("mlp_tanh", params, tasks, nm.MSE, config)
    _, grads, _ = _gradients(meta, tasks)
    _assert_close(grads["params"], reference["params"])


@pytest.mark.parametrize("form", ["paper", "book"])
def test_gradient_agreement_meta_gradient_matches_reference(form):
    params, tasks = _case(seed=4, num_tasks=4)
    meta = _meta_model(
        params,
        steps=2,
        task_weighting=kerameta.GradientAgreement(form=form),
    )
    config = mm.MethodConfig(inner_steps=2, learning_rate=LR)
    weights, reference = mm.gradient_agreement_meta_gradients(
        "mlp_tanh", params, tasks, nm.MSE, config, form=form
    )
    # The test needs weights that differ from uniform.
    assert np.ptp(weights) > 0.05
    value, grads, aux = _gradients(meta, tasks)
    losses = _numpy(aux["task_losses"])
    assert value == pytest.approx(float(np.sum(weights * losses)), rel=1e-5)
    _assert_close(grads["params"], reference["params"])


def test_every_switch_together_matches_reference():
    """ANIL + Meta-SGD + gradient sharing + agreement + co-learner."""
    params, tasks = _case(seed=5, num_tasks=3)
    steps = 2
    adapted = mm.last_layer_indices(params)
    head_params = [params[i] for i in adapted]
    lam_c, lam_p, history = _sharing_values(head_params, steps, "tensor", 6)
    rng = np.random.default_rng(7)
    rates = _f32([rng.uniform(0.05, 0.4, np.shape(p)) for p in head_params])
    co_params = _f32([rng.normal(size=(SIZES[1], 1)), rng.normal(size=(1,))])
    head = keras.layers.Dense(1)
    meta = _meta_model(
        params,
        steps=steps,
        adapted_layers=["head"],
        inner_optimizer="meta_sgd",
        gradient_sharing=kerameta.GradientSharing(),
        task_weighting="gradient_agreement",
        co_learner=kerameta.CoLearner(head, "hidden1", loss_weight=0.5),
    )
    _with_sharing(meta, lam_c, lam_p, history)
    _assign(meta.inner_optimizer.trainable_variables, rates)
    _assign(head.trainable_variables, co_params)
    config = mm.MethodConfig(
        inner_steps=steps,
        learning_rate=LR,
        adapted=adapted,
        sharing=mm.GradientSharing(lam_c, lam_p, history),
        rates=rates,
        co_learner=mm.CoLearner(1, co_params, 0.5),
    )
    _, reference = mm.gradient_agreement_meta_gradients(
        "mlp_tanh", params, tasks, nm.MSE, config
    )
    _, grads, _ = _gradients(meta, tasks)
    for group in ("params", "rates", "lam_c", "lam_p", "co_learner"):
        _assert_close(grads[group], reference[group])


@pytest.mark.parametrize("weighting", [None, "gradient_agreement"])
def test_reptile_pseudo_gradient_matches_reference(weighting):
    params, tasks = _case(seed=8, num_tasks=4)
    meta = _meta_model(
        params, cls=kerameta.Reptile, steps=3, task_weighting=weighting
    )
    config = mm.MethodConfig(inner_steps=3, learning_rate=LR)
    if weighting is not None:
        updates = mm.task_updates("mlp_tanh", params, tasks, nm.MSE, config)
        config = mm.MethodConfig(
            inner_steps=3,
            learning_rate=LR,
            task_weights=mm.gradient_agreement_weights(updates),
        )
    reference = mm.reptile_pseudo_gradient(
        "mlp_tanh", params, tasks, nm.MSE, config
    )
    _, grads, _ = _gradients(meta, tasks)
    _assert_close(grads["params"], reference)


# --------------------------------------------------------------------------
# Special cases
# --------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["second_order", "first_order"])
def test_sharing_at_zero_equals_maml(order):
    params, tasks = _case()
    maml = _meta_model(params, steps=2, meta_gradient=order)
    shared = _meta_model(
        params,
        steps=2,
        meta_gradient=order,
        gradient_sharing=kerameta.GradientSharing(),
    )
    value, grads, aux = _gradients(maml, tasks)
    shared_value, shared_grads, shared_aux = _gradients(shared, tasks)
    assert shared_value == pytest.approx(value, rel=1e-6)
    _assert_same(shared_grads["params"], grads["params"])
    x, _ = _batch(tasks)
    np.testing.assert_allclose(
        _numpy(shared.predict(x, verbose=0)),
        _numpy(maml.predict(x, verbose=0)),
        rtol=1e-6,
    )


def test_sharing_with_one_task_is_a_larger_step():
    params, tasks = _case()
    maml = _meta_model(params, steps=2, lr=LR * 1.5)
    shared = _meta_model(
        params,
        steps=2,
        gradient_sharing=kerameta.GradientSharing(concurrent_initial=0.5),
    )
    value, grads, _ = _gradients(maml, tasks[:1])
    with pytest.warns(UserWarning, match="one task per batch"):
        shared_value, shared_grads, _ = _gradients(shared, tasks[:1])
    assert shared_value == pytest.approx(value, rel=1e-5)
    _assert_close(shared_grads["params"], grads["params"], rtol=1e-5)


def test_sharing_history_moves_after_the_outer_step_by_the_moving_average():
    params, tasks = _case()
    decay = 0.8
    meta = _meta_model(
        params,
        gradient_sharing=kerameta.GradientSharing(
            concurrent_initial=0.3, history_decay=decay
        ),
    )
    history = meta.gradient_sharing.history
    assert not any(
        id(v) in {id(t) for t in meta.trainable_variables} for v in history
    )
    start = [0.5 * np.ones(v.shape) for v in history]
    _assign(history, start)
    mean_grads = _mean_support_gradient(params, tasks)
    x, y = _batch(tasks)
    meta.train_on_batch(x, y)
    for variable, old, mean in zip(history, start, mean_grads):
        expected = decay * old + (1 - decay) * mean[None]
        np.testing.assert_allclose(
            _numpy(variable), expected, rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize("evaluation_sharing", ["history", "none", "all"])
def test_sharing_at_evaluation_is_per_task_by_default(evaluation_sharing):
    params, tasks = _case(num_tasks=3)
    meta = _meta_model(
        params,
        steps=2,
        gradient_sharing=kerameta.GradientSharing(
            evaluation_sharing=evaluation_sharing
        ),
    )
    lam_c, lam_p, history = _sharing_values(params, 2, "tensor", 9)
    _with_sharing(meta, lam_c, lam_p, history)
    x, _ = _batch(tasks)
    permuted, _ = _batch([tasks[2], tasks[0], tasks[1]])
    first = _numpy(meta.predict(x, batch_size=3, verbose=0))[0]
    moved = _numpy(meta.predict(permuted, batch_size=3, verbose=0))[1]
    alone = _numpy(meta.predict(_batch(tasks[:1])[0], verbose=0))[0]
    if evaluation_sharing == "all":
        assert not np.allclose(first, alone, atol=1e-4)
    else:
        np.testing.assert_allclose(moved, first, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone, first, rtol=1e-5, atol=1e-6)


def _weights(updates, **kwargs):
    tensors = [ops.convert_to_tensor(np.asarray(updates, np.float32))]
    return _numpy(kerameta.GradientAgreement(**kwargs).weights(tensors))


@pytest.mark.parametrize("form", ["paper", "book"])
def test_gradient_agreement_weights_closed_forms(form):
    orthogonal = [[3.0, 0.0], [0.0, 1.0]]
    np.testing.assert_allclose(
        _weights(orthogonal, form=form), [0.9, 0.1], rtol=1e-6
    )
    expected = [0.0, 1.0] if form == "paper" else [0.0, 0.2]
    np.testing.assert_allclose(
        _weights([[1.0, 0.0], [-1.0, 1.0]], form=form), expected, atol=1e-7
    )
    opposite = _weights([[1.0, 2.0], [-1.0, -2.0]], form=form)
    np.testing.assert_array_equal(opposite, [0.0, 0.0])
    np.testing.assert_array_equal(_weights([[1e-9, 0.0]], form=form), [1.0])
    halved = _weights(orthogonal, form=form, divide_by_batch=True)
    np.testing.assert_allclose(halved, [0.45, 0.05], rtol=1e-6)


def test_gradient_agreement_paper_weights_have_unit_absolute_sum():
    rng = np.random.default_rng(0)
    for _ in range(5):
        weights = _weights(rng.normal(size=(6, 10)))
        assert np.sum(np.abs(weights)) == pytest.approx(1.0, rel=1e-5)


def test_gradient_agreement_with_one_task_equals_maml():
    params, tasks = _case()
    maml = _meta_model(params, steps=2)
    agreement = _meta_model(
        params, steps=2, task_weighting="gradient_agreement"
    )
    value, grads, _ = _gradients(maml, tasks[:1])
    agreement_value, agreement_grads, _ = _gradients(agreement, tasks[:1])
    assert agreement_value == value
    _assert_same(agreement_grads["params"], grads["params"])


def test_gradient_agreement_of_identical_tasks_equals_maml():
    params, tasks = _case()
    same = [tasks[0]] * 3
    maml = _meta_model(params, steps=2)
    agreement = _meta_model(
        params, steps=2, task_weighting="gradient_agreement"
    )
    _, grads, _ = _gradients(maml, same)
    _, agreement_grads, _ = _gradients(agreement, same)
    _assert_same(agreement_grads["params"], grads["params"], rtol=1e-5)


@pytest.mark.parametrize("order", ["second_order", "first_order"])
def test_co_learner_with_zero_weight_leaves_the_meta_gradient(order):
    params, tasks = _case()
    maml = _meta_model(params, steps=2, meta_gradient=order)
    co = _meta_model(
        params,
        steps=2,
        meta_gradient=order,
        co_learner=kerameta.CoLearner(
            keras.layers.Dense(1), "hidden2", loss_weight=0.0
        ),
    )
    value, grads, _ = _gradients(maml, tasks)
    co_value, co_grads, aux = _gradients(co, tasks)
    assert co_value == pytest.approx(value, rel=1e-6)
    _assert_same(co_grads["params"], grads["params"])
    for g in co_grads["co_learner"]:
        np.testing.assert_array_equal(g, np.zeros_like(g))
    assert np.all(_numpy(aux["co_losses"]) > 0)


def test_co_learner_is_never_adapted_and_reaches_the_inner_loop():
    params, tasks = _case()
    head = keras.layers.Dense(1)

    def co_gradient(order, lr):
        meta = _meta_model(
            params,
            lr=lr,
            meta_gradient=order,
            co_learner=kerameta.CoLearner(head, "hidden2"),
        )
        adapted = {id(v) for v in meta.adapted_variables}
        assert not adapted & {id(v) for v in head.trainable_variables}
        co_only = _gradients(meta, tasks)[1]["params"]
        meta.co_learner.loss_weight = 0.0
        without = _gradients(meta, tasks)[1]["params"]
        return [a - b for a, b in zip(co_only, without)]

    second = co_gradient("second_order", LR)
    first = co_gradient("first_order", LR)
    assert nm.relative_error(second, first) > 1e-3
    assert nm.relative_error(co_gradient("second_order", 0.1), second) > 1e-3


def test_without_co_learner_predicts_bit_identically():
    params, tasks = _case()
    co = _meta_model(
        params,
        steps=2,
        co_learner=kerameta.CoLearner(keras.layers.Dense(1), "hidden2"),
    )
    x, y = _batch(tasks)
    co.train_on_batch(x, y)
    plain = co.without_co_learner()
    assert plain.co_learner is None
    assert len(plain.weights) == len(co.weights) - 2
    np.testing.assert_array_equal(
        _numpy(plain.predict(x, verbose=0)), _numpy(co.predict(x, verbose=0))
    )
    reference = _meta_model(
        [_numpy(v) for v in co.model.trainable_variables], steps=2
    )
    np.testing.assert_array_equal(
        _numpy(reference.predict(x, verbose=0)),
        _numpy(plain.predict(x, verbose=0)),
    )
    assert plain.evaluate(x, y, verbose=0) == pytest.approx(
        co.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    )


@pytest.mark.parametrize("order", ["second_order", "first_order"])
def test_meta_sgd_with_rates_at_the_inner_rate_equals_maml(order):
    params, tasks = _case()
    maml = _meta_model(params, steps=2, meta_gradient=order)
    meta_sgd = _meta_model(
        params, steps=2, meta_gradient=order, inner_optimizer="meta_sgd"
    )
    for rate in meta_sgd.inner_optimizer.trainable_variables:
        np.testing.assert_array_equal(
            _numpy(rate), np.full(rate.shape, np.float32(LR))
        )
    value, grads, _ = _gradients(maml, tasks)
    sgd_value, sgd_grads, _ = _gradients(meta_sgd, tasks)
    assert sgd_value == pytest.approx(value, rel=1e-6)
    _assert_same(sgd_grads["params"], grads["params"])


def test_anil_with_every_layer_equals_maml():
    params, tasks = _case()
    maml = _meta_model(params, steps=2)
    every = _meta_model(
        params, steps=2, adapted_layers=["hidden1", "hidden2", "head"]
    )
    value, grads, _ = _gradients(maml, tasks)
    every_value, every_grads, _ = _gradients(every, tasks)
    assert every_value == value
    _assert_same(every_grads["params"], grads["params"])


def test_anil_leaves_the_body_unchanged():
    params, tasks = _case()
    meta = _meta_model(params, steps=3, adapted_layers=["head"])
    assert len(meta.adapted_variables) == 2
    task = tasks[0]
    adapted = meta.adapt(task["support_x"], task["support_y"])
    weights = [_numpy(v) for v in adapted.trainable_variables]
    for before, after in zip(params[:4], weights[:4]):
        np.testing.assert_array_equal(after, np.float32(before))
    assert not np.allclose(weights[4], params[4])


def test_reptile_one_step_pseudo_gradient_is_the_mean_support_gradient():
    params, tasks = _case()
    meta = _meta_model(params, cls=kerameta.Reptile, steps=1)
    meta.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss="mse",
        jit_compile=False,
    )
    mean_grads = _mean_support_gradient(params, tasks)
    x, y = _batch(tasks)
    meta.train_on_batch(x, y)
    for before, variable, g in zip(
        params, meta.model.trainable_variables, mean_grads
    ):
        np.testing.assert_allclose(
            before - _numpy(variable), LR * g, rtol=1e-4, atol=1e-6
        )


def test_fit_and_evaluate_log_the_method_diagnostics():
    params, tasks = _case(num_tasks=4)
    meta = _meta_model(
        params,
        task_weighting="gradient_agreement",
        co_learner=kerameta.CoLearner(keras.layers.Dense(1), "hidden2"),
    )
    x, y = _batch(tasks)
    logs = meta.fit(x, y, batch_size=4, verbose=0).history
    expected = {"loss", "co_learner_loss"} | {
        f"task_weight_{name}" for name in ("min", "max", "sum")
    }
    assert set(logs) == expected
    assert logs["task_weight_min"][0] <= logs["task_weight_max"][0]
    assert abs(logs["task_weight_sum"][0]) <= 1 + 1e-6
    evaluated = meta.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert set(evaluated) == expected
    plain = _meta_model(params)
    assert set(plain.fit(x, y, batch_size=4, verbose=0).history) == {"loss"}


def test_compiled_step_equals_eager_step_with_every_switch():
    params, tasks = _case(seed=5, num_tasks=3)
    x, y = _batch(tasks)
    weights = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        meta = _meta_model(
            params,
            steps=2,
            adapted_layers=["hidden2", "head"],
            inner_optimizer="meta_sgd",
            gradient_sharing=kerameta.GradientSharing(concurrent_initial=0.3),
            task_weighting="gradient_agreement",
            co_learner=kerameta.CoLearner(keras.layers.Dense(1), "hidden1"),
        )
        meta.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
        for _ in range(2):
            meta.train_on_batch(x, y)
        weights.append([_numpy(v) for v in meta.weights])
    for eager, compiled in zip(*weights):
        np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
