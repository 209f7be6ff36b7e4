"""Batch normalization under MAML: batch statistics, frozen moving ones."""

import keras
import numpy as np
import pytest

import kerameta

WAYS = 3
TASKS = 2  # tasks per batch: small, since TensorFlow traces a loop over them

# NumPy 2.4 warns when `np.array` meets an `__array__` without a `copy`
# argument: Keras variables on JAX, torch tensors, TF variables. Keras's own
# `get_weights`, `convert_to_numpy` and torch `predict` go through it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


def _conv_bn_net():
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, padding="same"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(WAYS),
        ]
    )


def _episodes(num_tasks, seed, shots=2, query_shots=2):
    """Random 3-way classification episodes of 6x6 images."""
    rng = np.random.default_rng(seed)

    def images(n):
        return rng.normal(size=(num_tasks, n, 6, 6, 1)).astype("float32")

    def labels(n):
        return np.tile(np.arange(WAYS), (num_tasks, n))

    return kerameta.data.EpisodeDataset(
        images(WAYS * shots),
        labels(shots),
        images(WAYS * query_shots),
        labels(query_shots),
        tasks_per_batch=TASKS,
    )


def _value(variable):
    return np.array(keras.ops.convert_to_numpy(variable.value), copy=True)


def test_adaptation_uses_batch_statistics_and_keeps_moving_ones():
    net = _conv_bn_net()
    bn = net.get_layer("bn")
    # Moving statistics away from their initial values, to see any reset.
    bn.moving_mean.assign(np.full((3,), 0.3, "float32"))
    bn.moving_variance.assign(np.full((3,), 2.0, "float32"))
    moving = [_value(bn.moving_mean), _value(bn.moving_variance)]
    gamma, beta = _value(bn.gamma), _value(bn.beta)

    maml = kerameta.MAML(net, inner_steps=1, inner_learning_rate=0.1)
    maml.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = maml.fit(_episodes(4, seed=1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    def assert_moving_statistics_unchanged():
        np.testing.assert_array_equal(_value(bn.moving_mean), moving[0])
        np.testing.assert_array_equal(_value(bn.moving_variance), moving[1])

    assert_moving_statistics_unchanged()
    # The meta-gradient reaches gamma and beta (Adam moves a weight only
    # where its gradient was nonzero at some step).
    assert np.all(_value(bn.gamma) != gamma)
    assert np.all(_value(bn.beta) != beta)
    trained = [_value(v) for v in maml.weights]

    tasks = _episodes(TASKS, seed=2)
    results = maml.evaluate(tasks, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    predictions = maml.predict(tasks, verbose=0)
    assert predictions.shape == (TASKS, WAYS * 2, WAYS)
    x, _ = tasks[0]
    adapted = maml.adapt(x["support_x"][0], x["support_y"][0])
    adapted_bn = adapted.get_layer("bn")
    assert_moving_statistics_unchanged()
    for before, variable in zip(trained, maml.weights):
        np.testing.assert_array_equal(_value(variable), before)

    # The inner loop adapts gamma and beta too.
    assert not np.allclose(_value(adapted_bn.gamma), _value(bn.gamma))
    assert not np.allclose(_value(adapted_bn.beta), _value(bn.beta))
    # The adapted copy holds the meta-model's moving statistics, and with
    # `training=True` (batch statistics) reproduces `predict`.
    np.testing.assert_array_equal(_value(adapted_bn.moving_mean), moving[0])
    np.testing.assert_array_equal(_value(adapted_bn.moving_variance), moving[1])
    adapted_predictions = keras.ops.convert_to_numpy(
        adapted(x["query_x"][0], training=True)
    )
    np.testing.assert_allclose(
        adapted_predictions, predictions[0], rtol=1e-4, atol=1e-5
    )
    # ... and not with the moving statistics (inference mode).
    inference = keras.ops.convert_to_numpy(
        adapted(x["query_x"][0], training=False)
    )
    assert not np.allclose(inference, predictions[0], atol=1e-3)
