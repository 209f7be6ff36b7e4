"""The Keras workflow of `kerameta.MAML`: fit, evaluate, predict and adapt."""

import math

import keras
import numpy as np
import pytest
from helpers import maml as compiled_maml

import kerameta

TASKS = 4  # tasks per batch: small, since TensorFlow traces a loop over them

# NumPy 2.4 warns when `np.array` meets an `__array__` without a `copy`
# argument: Keras variables on JAX, torch tensors, TF variables. Keras's own
# `get_weights`, `convert_to_numpy` and torch `predict` go through it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


def _mlp(hidden=40, frozen_layer=False):
    layers = [
        keras.Input((1,)),
        keras.layers.Dense(hidden, activation="relu"),
    ]
    if frozen_layer:
        # A frozen layer gives the model non-trainable weights, which must
        # never be adapted nor meta-trained.
        layers.append(
            keras.layers.Dense(hidden, activation="relu", trainable=False)
        )
    layers += [
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(1),
    ]
    return keras.Sequential(layers)


def _sinusoids(num_batches, seed, shots=10, query_shots=None, **kwargs):
    return kerameta.data.SinusoidTasks(
        shots=shots,
        query_shots=query_shots,
        tasks_per_batch=TASKS,
        num_batches=num_batches,
        seed=seed,
        **kwargs,
    )


def _maml(model=None, optimizer=None, **kwargs):
    kwargs.setdefault("inner_learning_rate", 0.05)
    return compiled_maml(
        _mlp() if model is None else model,
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        metrics=["mae"],
        **kwargs,
    )


def _numpy(variables):
    return [
        np.array(keras.ops.convert_to_numpy(v.value), copy=True)
        for v in variables
    ]


def _unadapted_predictions(model, query_x):
    """The wrapped model's own predictions, task by task: `[T, Q, 1]`."""
    return np.stack([keras.ops.convert_to_numpy(model(q)) for q in query_x])


class _LogRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batch_logs = []
        self.epoch_logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs or {}))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs or {}))


def _fit_and_check_logs(maml, epochs, batches):
    """Fits with validation; checks the history and the callback logs."""
    recorder = _LogRecorder()
    history = maml.fit(
        _sinusoids(batches, seed=1, new_tasks_each_epoch=True),
        validation_data=_sinusoids(num_batches=2, seed=7),
        epochs=epochs,
        callbacks=[recorder],
        verbose=0,
    )
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae"}
    for key, values in history.history.items():
        assert len(values) == epochs, key
        assert all(math.isfinite(v) for v in values), (key, values)

    assert len(recorder.batch_logs) == epochs * batches
    assert all({"loss", "mae"} <= set(logs) for logs in recorder.batch_logs)
    assert len(recorder.epoch_logs) == epochs
    for logs, epoch in zip(recorder.epoch_logs, range(epochs)):
        for key in ("loss", "mae", "val_loss", "val_mae"):
            assert logs[key] == pytest.approx(history.history[key][epoch])
    return history


def test_fit_logs_history_and_callbacks():
    # The bookkeeping of `test_fit_lowers_the_adapted_query_loss` (slow) on
    # a short fit: 2 epochs of 5 meta-steps.
    _fit_and_check_logs(_maml(inner_steps=1), epochs=2, batches=5)


@pytest.mark.slow  # 400 meta-steps, the longest fit of the suite
def test_fit_lowers_the_adapted_query_loss():
    # 400 meta-steps of 4 tasks. Measured ratios after/before of the adapted
    # query MSE on these fixed test tasks: 0.32 (JAX), 0.32 (PyTorch), 0.34
    # (TensorFlow) with the test seed, at most 0.46 over 4 seeds on each
    # backend; 0.6 (40% lower) leaves a margin for other seeds and versions.
    test_tasks = _sinusoids(num_batches=10, seed=100)
    maml = _maml(inner_steps=1)
    before = maml.evaluate(test_tasks, verbose=0, return_dict=True)
    history = _fit_and_check_logs(maml, epochs=4, batches=100)
    after = maml.evaluate(test_tasks, verbose=0, return_dict=True)

    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after["mae"] < before["mae"], (before, after)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_evaluate_predict_and_adapt_leave_every_weight_unchanged():
    model = _mlp(hidden=8, frozen_layer=True)
    maml = _maml(model, inner_steps=1, evaluation_inner_steps=2)
    maml.fit(_sinusoids(3, seed=1), epochs=1, verbose=0)
    assert maml.non_trainable_weights  # the frozen layer's kernel and bias
    weights = _numpy(maml.weights)
    optimizer_variables = _numpy(maml.optimizer.variables)

    tasks = _sinusoids(2, seed=5, shots=5, query_shots=3)
    maml.evaluate(tasks, verbose=0)
    predictions = maml.predict(tasks, verbose=0)
    x, _ = tasks[0]
    adapted = maml.adapt(x["support_x"][0], x["support_y"][0])
    called = keras.ops.convert_to_numpy(maml(x))

    for before, after in zip(weights, _numpy(maml.weights)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(
        optimizer_variables, _numpy(maml.optimizer.variables)
    ):
        np.testing.assert_array_equal(before, after)

    assert predictions.shape == (2 * TASKS, 3, 1)
    np.testing.assert_allclose(
        called, predictions[:TASKS], rtol=1e-5, atol=1e-5
    )
    # The adapted copy is a plain model: trainable weights moved, frozen ones
    # did not, and it predicts what `predict` predicted for that task.
    assert isinstance(adapted, keras.Model)
    assert not isinstance(adapted, kerameta.MAML)
    for meta, own in zip(model.trainable_weights, adapted.trainable_weights):
        assert not np.allclose(*_numpy([meta, own]))
    for meta, own in zip(
        model.non_trainable_weights, adapted.non_trainable_weights
    ):
        np.testing.assert_array_equal(*_numpy([meta, own]))
    for task in range(TASKS):
        adapted = maml.adapt(x["support_x"][task], x["support_y"][task])
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(adapted(x["query_x"][task])),
            predictions[task],
            rtol=1e-5,
            atol=1e-5,
        )


def test_evaluation_inner_steps_is_honoured():
    maml = _maml(inner_steps=1, evaluation_inner_steps=0)
    tasks = _sinusoids(1, seed=5, shots=5, query_shots=4)
    x, query_y = tasks[0]
    unadapted = _unadapted_predictions(maml.model, x["query_x"])
    unadapted_mse = float(np.mean((unadapted - query_y) ** 2))

    # Zero steps: `predict` and `evaluate` score the meta-learned model as is.
    np.testing.assert_allclose(
        maml.predict(tasks, verbose=0), unadapted, rtol=1e-5, atol=1e-6
    )
    result = maml.evaluate(tasks, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(unadapted_mse, rel=1e-5)
    adapted = maml.adapt(x["support_x"][0], x["support_y"][0])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(adapted(x["query_x"][0])),
        unadapted[0],
        rtol=1e-5,
        atol=1e-6,
    )

    # Changed after compiling, the step count reaches the next call.
    maml.evaluation_inner_steps = 3
    assert maml.inner_steps == 1
    three_steps = maml.predict(tasks, verbose=0)
    assert not np.allclose(three_steps, unadapted, atol=1e-3)
    for task in range(TASKS):
        adapted = maml.adapt(x["support_x"][task], x["support_y"][task])
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(adapted(x["query_x"][task])),
            three_steps[task],
            rtol=1e-5,
            atol=1e-5,
        )
    one_step = maml.adapt(x["support_x"][0], x["support_y"][0], inner_steps=1)
    assert not np.allclose(
        keras.ops.convert_to_numpy(one_step(x["query_x"][0])),
        three_steps[0],
        atol=1e-4,
    )
    result = maml.evaluate(tasks, verbose=0, return_dict=True)
    mse = float(np.mean((three_steps - query_y) ** 2))
    assert result["loss"] == pytest.approx(mse, rel=1e-5)
    assert result["loss"] < unadapted_mse


def test_jit_compile(backend):
    if backend == "torch":
        # The looped path (forced here; `auto` vectorizes an MLP on torch)
        # cannot go through torch.compile with second order.
        maml = kerameta.MAML(_mlp(hidden=8), vectorize_tasks=False)
        with pytest.raises(
            ValueError, match=r"jit_compile=True.*cannot differentiate twice"
        ):
            maml.compile(optimizer="adam", loss="mse", jit_compile=True)
        return

    weights = {}
    for jit_compile in (True, False):
        history, weights[jit_compile], iterations = _fit_small(
            num_batches=2, jit_compile=jit_compile
        )
        assert math.isfinite(history["loss"][0])
        assert iterations == 2
    for compiled, eager in zip(weights[True], weights[False]):
        np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def _fit_small(num_batches, **compile_kwargs):
    """One epoch of a small, seeded fit: (history, weights, iterations)."""
    keras.utils.set_random_seed(3)
    maml = kerameta.MAML(_mlp(hidden=8), inner_steps=2)
    maml.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="mse",
        metrics=["mae"],
        **compile_kwargs,
    )
    history = maml.fit(
        _sinusoids(num_batches, seed=1, shots=5), verbose=0, shuffle=False
    )
    iterations = int(keras.ops.convert_to_numpy(maml.optimizer.iterations))
    return history.history, _numpy(maml.weights), iterations


def test_steps_per_execution(backend):
    if backend == "torch":
        pytest.skip("Keras requires steps_per_execution=1 on PyTorch.")
    results = {
        steps_per_execution: _fit_small(
            num_batches=4, steps_per_execution=steps_per_execution
        )
        for steps_per_execution in (1, 2)
    }
    (history_1, weights_1, iterations_1), (history_2, weights_2, iter_2) = (
        results[1],
        results[2],
    )
    assert iterations_1 == iter_2 == 4
    for key in ("loss", "mae"):
        assert history_2[key][0] == pytest.approx(history_1[key][0], rel=1e-5)
    for one, two in zip(weights_1, weights_2):
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
