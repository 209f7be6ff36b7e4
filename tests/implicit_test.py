"""The implicit meta-gradient (`kerameta.meta_gradients.Implicit`).

ALGORITHMS.md §8's unit tests: conjugate gradient against a direct solve;
the hypergradient of a ridge-regression head against finite differences of
its closed-form solution (ANIL split, proximal form, and both); the guard
against the detached-feature bug; the proximal form's
`(I + H / lambda)^-1 grad L_query`; memory flat in the inner steps (JAX's
compiled buffer sizes); non-convergence reported; bad input refused.
"""

import keras
import numpy as np
import pytest
from helpers import assert_keras_round_trip
from keras import ops
from methods_test import _gradients
from methods_test import _numpy

import kerameta
from kerameta.meta_gradients import Implicit

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)
IN, FEATURES, TASKS, SHOTS, QUERIES = 3, 4, 3, 8, 6
RTOL = 1e-4


# --------------------------------------------------------------------------
# A linear body and a ridge-regression head, solved in closed form
# --------------------------------------------------------------------------
def _toy(seed=0):
    rng = np.random.default_rng(seed)
    body = rng.normal(0.0, 0.5, (IN, FEATURES))
    head = rng.normal(0.0, 0.5, (FEATURES, 1))
    tasks = []
    for _ in range(TASKS):
        w = rng.normal(size=(IN, 1))
        task = {}
        for prefix, n in (("support", SHOTS), ("query", QUERIES)):
            x = rng.normal(size=(n, IN))
            task[f"{prefix}_x"] = x
            task[f"{prefix}_y"] = x @ w + 0.1 * rng.normal(size=(n, 1))
        tasks.append(task)
    return body, head, tasks


def _solution(features, y, ridge, proximal, start):
    """argmin mean((F h - y)^2) + ridge/2 |h|^2 + proximal/2 |h - start|^2."""
    n = features.shape[0]
    a = 2.0 / n * features.T @ features + (ridge + proximal) * np.eye(
        features.shape[1]
    )
    return np.linalg.solve(a, 2.0 / n * features.T @ y + proximal * start)


def _objective(body, head, tasks, ridge, proximal):
    """The meta-objective: mean query loss at each task's solution."""
    total = 0.0
    for task in tasks:
        features = (
            task["support_x"] if body is None else task["support_x"] @ body
        )
        solution = _solution(features, task["support_y"], ridge, proximal, head)
        query = task["query_x"] if body is None else task["query_x"] @ body
        total += np.mean((query @ solution - task["query_y"]) ** 2)
    return total / len(tasks)


def _finite_differences(fn, value, h=1e-6):
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        plus, minus = value.copy(), value.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (fn(plus) - fn(minus)) / (2 * h)
    return grad


def _net(body, head):
    layers = [keras.Input((IN,))]
    if body is not None:
        layers.append(keras.layers.Dense(FEATURES, use_bias=False, name="body"))
    layers.append(keras.layers.Dense(1, use_bias=False, name="head"))
    model = keras.Sequential(layers)
    values = [head] if body is None else [body, head]
    for variable, value in zip(model.trainable_variables, values):
        variable.assign(value.astype("float32"))
    return model


def _gradient_descent(body, tasks, ridge, proximal):
    """The fastest constant rate for the lower-level problems (quadratics),
    `2 / (mu + L)`, and the steps that bring them to 1e-8 of their
    solution."""
    low, high = np.inf, 0.0
    for task in tasks:
        x = task["support_x"]
        features = x if body is None else x @ body
        eigenvalues = np.linalg.eigvalsh(2.0 / SHOTS * features.T @ features)
        low = min(low, eigenvalues.min() + ridge + proximal)
        high = max(high, eigenvalues.max() + ridge + proximal)
    low = max(low, 1e-3)  # a singular problem (ridge 0, rank-deficient)
    rate = (high - low) / (high + low)
    return 2.0 / (low + high), int(np.ceil(np.log(1e-8) / np.log(rate)))


def _implicit_model(body, head, tasks, steps=None, **implicit_kwargs):
    ridge = implicit_kwargs.get("ridge", 0.0)
    proximal = implicit_kwargs.get("proximal") or 0.0
    learning_rate, converged = _gradient_descent(body, tasks, ridge, proximal)
    meta = kerameta.MAML(
        _net(body, head),
        inner_steps=converged if steps is None else steps,
        inner_learning_rate=learning_rate,
        adapted_layers=None if body is None else ["head"],
        meta_gradient=Implicit(**implicit_kwargs),
        vectorize_tasks=keras.backend.backend() != "tensorflow",
    )
    meta.compile(optimizer="sgd", loss="mse", jit_compile=False)
    return meta


def _f32_tasks(tasks):
    return [{k: v.astype("float32") for k, v in t.items()} for t in tasks]


def _relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


# --------------------------------------------------------------------------
# Conjugate gradient
# --------------------------------------------------------------------------
def test_conjugate_gradient_matches_a_direct_solve():
    rng = np.random.default_rng(0)
    n = 6
    matrices = []
    for _ in range(TASKS):
        q = rng.normal(size=(n, n))
        matrices.append(q @ q.T / n + np.eye(n))  # SPD, well conditioned
    matrices = np.stack(matrices)
    b = rng.normal(size=(TASKS, n))

    def hvp(vectors):
        (v,) = vectors
        return [
            ops.einsum(
                "tij,tj->ti", ops.convert_to_tensor(matrices, "float32"), v
            )
        ]

    solution, residual = Implicit(cg_steps=2 * n, tolerance=0.0)._solve(
        hvp, [ops.convert_to_tensor(b, "float32")]
    )
    expected = np.linalg.solve(matrices, b[..., None])[..., 0]
    # float32 arithmetic: a few units of its 1.2e-7 epsilon.
    for t in range(TASKS):
        error = _relative_error(_numpy(solution[0])[t], expected[t])
        assert error < 1e-5, error
    assert np.all(_numpy(residual) < 1e-4)


def test_conjugate_gradient_of_a_zero_right_hand_side_is_zero():
    def hvp(vectors):
        return [2.0 * v for v in vectors]

    b = np.zeros((TASKS, 4), "float32")
    b[1] = 1.0
    solution, residual = Implicit(cg_steps=3)._solve(
        hvp, [ops.convert_to_tensor(b)]
    )
    solution = _numpy(solution[0])
    np.testing.assert_array_equal(solution[[0, 2]], 0.0)
    np.testing.assert_allclose(solution[1], 0.5, rtol=1e-6)
    assert np.all(np.isfinite(_numpy(residual)))


def test_clip_norm_bounds_each_solution():
    def hvp(vectors):
        return [0.01 * v for v in vectors]

    b = ops.ones((TASKS, 4))
    solution, _ = Implicit(cg_steps=2, clip_norm=1.5)._solve(hvp, [b])
    norms = np.linalg.norm(_numpy(solution[0]), axis=1)
    np.testing.assert_allclose(norms, 1.5, rtol=1e-5)


# --------------------------------------------------------------------------
# The hypergradient against the closed form
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ridge, proximal", [(0.5, None), (0.0, 1.0), (0.5, 2.0)]
)
def test_anil_hypergradient_matches_the_closed_form(ridge, proximal):
    body, head, tasks = _toy()
    meta = _implicit_model(
        body, head, tasks, ridge=ridge, proximal=proximal, cg_steps=20
    )
    _, grads, aux = _gradients(meta, _f32_tasks(tasks))
    body_grad, head_grad = grads["params"]
    lam = proximal or 0.0
    expected_body = _finite_differences(
        lambda b: _objective(b, head, tasks, ridge, lam), body
    )
    expected_head = _finite_differences(
        lambda h: _objective(body, h, tasks, ridge, lam), head
    )
    assert _relative_error(body_grad, expected_body) < RTOL
    if proximal is None:
        # The solution does not depend on where the inner loop starts.
        np.testing.assert_array_equal(head_grad, 0.0)
        np.testing.assert_allclose(expected_head, 0.0, atol=1e-8)
    else:
        assert _relative_error(head_grad, expected_head) < RTOL
    # The logged loss is the plain query loss at the solutions.
    assert float(ops.mean(aux["task_losses"])) == pytest.approx(
        _objective(body, head, tasks, ridge, lam), rel=1e-4
    )


def test_the_mixed_term_reaches_the_body():
    # The detached-feature bug drops `grad_x <grad_y g, v>`, leaving the
    # query loss's direct gradient alone: the two must differ here.
    body, head, tasks = _toy()
    ridge = 0.5
    meta = _implicit_model(body, head, tasks, ridge=ridge)
    _, grads, _ = _gradients(meta, _f32_tasks(tasks))
    solutions = [
        _solution(t["support_x"] @ body, t["support_y"], ridge, 0.0, head)
        for t in tasks
    ]

    def direct(b):
        return np.mean(
            [
                np.mean((t["query_x"] @ b @ s - t["query_y"]) ** 2)
                for t, s in zip(tasks, solutions)
            ]
        )

    direct_only = _finite_differences(direct, body)
    assert _relative_error(grads["params"][0], direct_only) > 0.05


def test_proximal_meta_gradient_is_the_damped_solve():
    # The whole network adapts (no body): the meta-gradient of the
    # initialization is (I + H / lambda)^-1 grad L_query(phi*) per task.
    _, _, tasks = _toy(seed=1)
    head = np.random.default_rng(1).normal(0.0, 0.5, (IN, 1))
    lam = 1.5
    meta = _implicit_model(None, head, tasks, proximal=lam, cg_steps=10)
    _, grads, _ = _gradients(meta, _f32_tasks(tasks))
    expected = np.zeros_like(head)
    for task in tasks:
        x, y = task["support_x"], task["support_y"]
        hessian = 2.0 / SHOTS * x.T @ x
        phi = _solution(x, y, 0.0, lam, head)
        qx, qy = task["query_x"], task["query_y"]
        query_grad = 2.0 / QUERIES * qx.T @ (qx @ phi - qy)
        expected += np.linalg.solve(
            np.eye(IN) + hessian / lam, query_grad
        ) / len(tasks)
    assert _relative_error(grads["params"][0], expected) < RTOL


def test_meta_gradient_does_not_depend_on_the_inner_steps_once_converged():
    body, head, tasks = _toy()
    results = []
    _, converged = _gradient_descent(body, tasks, 0.5, 0.0)
    for steps in (converged, 2 * converged):
        meta = _implicit_model(body, head, tasks, steps=steps, ridge=0.5)
        results.append(_gradients(meta, _f32_tasks(tasks))[1]["params"][0])
    assert _relative_error(results[0], results[1]) < RTOL


# --------------------------------------------------------------------------
# Memory: the compiled step's buffers do not grow with the inner steps
# --------------------------------------------------------------------------
def _temporary_bytes(meta, tasks):
    jax = pytest.importorskip("jax")
    from methods_test import _batch

    from kerameta.src import backend as seam
    from kerameta.src.episodes import validate_episode

    x, y = _batch(_f32_tasks(tasks))
    episode = validate_episode(
        {k: ops.convert_to_tensor(v) for k, v in x.items()},
        ops.convert_to_tensor(y),
        require_query_y=True,
    )
    theta, non_trainable = meta._state_values()

    def step(values):
        return seam.value_and_grad(
            lambda v: meta._meta_objective(
                v, non_trainable, episode, meta.inner_steps
            ),
            has_aux=True,
        )(values)

    compiled = jax.jit(step).lower(theta).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="compiled buffer sizes are a JAX (XLA) fact; the benchmark "
    "measures peak RSS on every backend",
)
def test_compiled_memory_is_flat_in_the_inner_steps():
    rng = np.random.default_rng(0)
    tasks = []
    for _ in range(4):
        tasks.append(
            {
                "support_x": rng.normal(size=(10, 8)),
                "support_y": rng.normal(size=(10, 1)),
                "query_x": rng.normal(size=(10, 8)),
                "query_y": rng.normal(size=(10, 1)),
            }
        )

    def memory(meta_gradient, steps):
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(64, activation="tanh", name="body"),
                keras.layers.Dense(64, activation="tanh", name="body2"),
                keras.layers.Dense(1, name="head"),
            ]
        )
        meta = kerameta.MAML(
            model,
            inner_steps=steps,
            adapted_layers=["head"],
            meta_gradient=meta_gradient,
        )
        meta.compile(optimizer="sgd", loss="mse")
        return _temporary_bytes(meta, tasks)

    implicit = [memory(Implicit(cg_steps=3), k) for k in (1, 10)]
    second = [memory("second_order", k) for k in (1, 10)]
    assert implicit[1] <= 1.2 * implicit[0], implicit
    # The test can fail: the unrolled estimator's buffers do grow.
    assert second[1] > 1.5 * second[0], second


# --------------------------------------------------------------------------
# Reporting, fit, saving
# --------------------------------------------------------------------------
def _episodes(tasks):
    from methods_test import _batch

    return _batch(_f32_tasks(tasks))


def test_unconverged_solve_is_reported():
    body, head, tasks = _toy()
    meta = _implicit_model(
        body, head, tasks, steps=20, ridge=0.0, cg_steps=1, tolerance=1e-6
    )
    x, y = _episodes(tasks)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        history = meta.fit(x, y, batch_size=TASKS, epochs=1, verbose=0)
    assert history.history["cg_residual"][0] > 1e-6
    # Evaluation computes no meta-gradient, so it logs no residual.
    logs = meta.evaluate(x, y, batch_size=TASKS, verbose=0, return_dict=True)
    assert "cg_residual" not in logs


@pytest.mark.parametrize("jit_compile", [False, "auto"])
def test_fit_logs_a_converged_residual(jit_compile):
    body, head, tasks = _toy()
    meta = _implicit_model(body, head, tasks, steps=30, ridge=0.5)
    meta.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    x, y = _episodes(tasks)
    history = meta.fit(x, y, batch_size=TASKS, epochs=3, verbose=0)
    assert all(r <= 1e-5 for r in history.history["cg_residual"])
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The head's initialization gets no meta-gradient: Adam leaves it.
    np.testing.assert_allclose(
        _numpy(meta.model.get_layer("head").kernel), head, rtol=1e-6, atol=1e-7
    )


def test_round_trip(tmp_path):
    body, head, tasks = _toy()
    meta = _implicit_model(
        body,
        head,
        tasks,
        steps=5,
        ridge=0.25,
        proximal=0.5,
        cg_steps=7,
        tolerance=1e-3,
        clip_norm=10.0,
    )
    x, y = _episodes(tasks)
    loaded = assert_keras_round_trip(
        meta, tmp_path / "implicit.keras", x, batch_size=TASKS
    )
    assert isinstance(loaded.meta_gradient, Implicit)
    assert loaded.meta_gradient.get_config() == meta.meta_gradient.get_config()


def test_string_id():
    body, head, _ = _toy()
    meta = kerameta.MAML(
        _net(body, head), adapted_layers=["head"], meta_gradient="implicit"
    )
    assert isinstance(meta.meta_gradient, Implicit)
    assert meta.meta_gradient.get_config()["cg_steps"] == 20


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"cg_steps": 0},
            r"`cg_steps` must be a positive integer\. "
            r"Received: cg_steps=0",
        ),
        ({"cg_steps": 2.5}, r"`cg_steps` must be a positive integer"),
        (
            {"ridge": -1.0},
            r"`ridge` must be a finite number >= 0\.0\. "
            r"Received: ridge=-1\.0",
        ),
        (
            {"proximal": 0.0},
            r"`proximal` must be a finite number > 0\. "
            r"Received: proximal=0\.0",
        ),
        ({"clip_norm": -2}, r"`clip_norm` must be a finite number"),
        ({"tolerance": float("nan")}, r"`tolerance` must be a finite number"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Implicit(**kwargs)


def test_nothing_meta_learned_is_refused():
    body, head, _ = _toy()
    with pytest.raises(
        ValueError,
        match=r"cannot be used here: every trainable weight is adapted, so "
        r"nothing would be meta-learned .*adapted_layers=\[\.\.\.\]`.*"
        r"Implicit\(proximal=\.\.\.\)",
    ):
        kerameta.MAML(_net(body, head), meta_gradient="implicit")
    # The proximal form adapts every weight.
    kerameta.MAML(_net(body, head), meta_gradient=Implicit(proximal=1.0))


def test_nothing_to_adapt_is_refused():
    body, head, _ = _toy()
    with pytest.raises(ValueError, match=r"adapted_layers"):
        kerameta.MAML(
            _net(body, head), adapted_layers=[], meta_gradient="implicit"
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"inner_optimizer": "meta_sgd"},
            r"inner optimizer \('meta_sgd'\) has learned weights, which get "
            r"no implicit meta-gradient: use inner_optimizer=\"sgd\"",
        ),
        (
            {"gradient_sharing": "gradient_sharing"},
            r"gradient sharing is not supported with it yet",
        ),
    ],
)
def test_unsupported_combinations_are_refused(kwargs, message):
    body, head, _ = _toy()
    with pytest.raises(ValueError, match=message):
        kerameta.MAML(
            _net(body, head),
            adapted_layers=["head"],
            meta_gradient="implicit",
            **kwargs,
        )


def test_co_learner_is_refused():
    body, head, _ = _toy()
    co_learner = kerameta.CoLearner(keras.layers.Dense(1), feature_layer="body")
    with pytest.raises(ValueError, match=r"co-learner is not supported"):
        kerameta.MAML(
            _net(body, head),
            adapted_layers=["head"],
            meta_gradient="implicit",
            co_learner=co_learner,
        )


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="TensorFlow always loops over the tasks",
)
def test_task_loop_equals_the_vectorized_solve():
    body, head, tasks = _toy()
    grads = []
    for vectorize in (True, False):
        meta = _implicit_model(body, head, tasks, steps=30, ridge=0.5)
        meta.vectorize_tasks = vectorize
        grads.append(_gradients(meta, _f32_tasks(tasks))[1]["params"][0])
    assert _relative_error(grads[1], grads[0]) < 1e-5
