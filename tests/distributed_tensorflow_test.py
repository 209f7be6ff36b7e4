"""Data parallelism on TensorFlow: `tf.distribute.MirroredStrategy`.

One subprocess (the logical devices must be set before TensorFlow starts)
splits the host CPU into 2 logical devices and trains each case twice,
for two SGD meta-steps: on one device and under a `MirroredStrategy` over
both, where each replica adapts half of the tasks. The weights and the
logged loss must agree to 1e-6. The cases cover what couples the tasks or
the replicas: plain second-order MAML on a dense net with Dropout (the
per-task masks) and a Keras `Loss` object (which Keras divides by the
replicas), a conv net with batch normalization and the accuracy metric,
and gradient sharing with gradient agreement (batch means, the sharing
history, weights over the whole batch). A non-finite task on one replica
stops the update on both; a batch that does not split evenly over the
replicas, and gradient clipping (Keras clips each replica's share), are
refused.
"""

import os

import keras
import pytest
from helpers import run_result_script

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="tf.distribute is TensorFlow's",
)

_SCRIPT = r"""
import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras
import numpy as np

import kerameta

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def dense(dropout=False):
    layers = [keras.Input((1,)), keras.layers.Dense(16, activation="tanh")]
    if dropout:
        layers.append(keras.layers.Dropout(0.25))
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def conv():
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])


def sinusoids(tasks_per_batch=4):
    return kerameta.data.SinusoidTasks(
        shots=5, tasks_per_batch=tasks_per_batch, num_batches=2, seed=3
    )


def images():
    rng = np.random.default_rng(0)
    x = {
        "support_x": rng.normal(size=(8, 6, 6, 6, 1)).astype("float32"),
        "support_y": np.tile(np.arange(3).repeat(2), (8, 1)),
        "query_x": rng.normal(size=(8, 6, 6, 6, 1)).astype("float32"),
    }
    return x, np.tile(np.arange(3).repeat(2), (8, 1))


CASES = {
    "dense": dict(
        network=lambda: dense(dropout=True),
        maml=dict(inner_learning_rate=0.1),
        loss=keras.losses.MeanSquaredError,
        data=lambda: (sinusoids(),),
    ),
    "conv": dict(
        network=conv,
        maml=dict(inner_learning_rate=0.1),
        loss=lambda: keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        ),
        metrics=["accuracy"],
        data=lambda: (*images(), 4),
    ),
    "sharing_agreement": dict(
        network=dense,
        maml=dict(
            inner_learning_rate=0.1,
            gradient_sharing=lambda: kerameta.GradientSharing(
                concurrent_initial=0.3, history_initial=0.2
            ),
            task_weighting="gradient_agreement",
        ),
        loss=lambda: "mse",
        data=lambda: (sinusoids(),),
    ),
}


def train(case, strategy):
    keras.utils.set_random_seed(7)
    with strategy.scope():
        settings = {
            k: v() if callable(v) else v for k, v in case["maml"].items()
        }
        maml = kerameta.MAML(case["network"](), **settings)
        maml.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=case["loss"](),
            metrics=case.get("metrics"),
        )
    initial = [v.numpy() for v in maml.trainable_variables]
    data = case["data"]()
    x, y, batch_size = (data + (None, None))[:3]
    history = maml.fit(
        x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0
    )
    weights = [v.numpy() for v in maml.trainable_variables]
    update = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, initial))
    weights += [v.numpy() for v in maml.non_trainable_variables]
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    return weights, logs, update


result = {}
for name, case in CASES.items():
    one, one_logs, update = train(case, tf.distribute.get_strategy())
    two, two_logs, _ = train(case, STRATEGY)
    result[name] = {
        "weights": max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)),
        "update": update,
        "one_device": one_logs,
        "mirrored": two_logs,
    }

# A non-finite task on the second replica only: neither applies the update.
with STRATEGY.scope():
    maml = kerameta.MAML(dense())
    maml.compile(optimizer="sgd", loss="mse")
x, y = sinusoids()[0]
x["support_y"][3, 0] = np.nan
initial = [v.numpy() for v in maml.trainable_variables]
history = maml.fit(x, y, batch_size=4, verbose=0)
result["non_finite"] = {
    "loss": history.history["loss"],
    "moved": [
        float(np.max(np.abs(replica.numpy() - start)))
        for v, start in zip(maml.trainable_variables, initial)
        for replica in v.value.values
    ],
}
try:
    maml.fit(sinusoids(tasks_per_batch=3), verbose=0)
except ValueError as error:
    result["uneven"] = str(error)
with STRATEGY.scope():
    maml = kerameta.MAML(dense())
    maml.compile(optimizer=keras.optimizers.SGD(clipnorm=1.0), loss="mse")
try:
    maml.fit(sinusoids(), verbose=0)
except ValueError as error:
    result["clipping"] = str(error)
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def mirrored():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    return run_result_script(["-c", _SCRIPT], env)


@pytest.mark.parametrize("case", ["dense", "conv", "sharing_agreement"])
def test_mirrored_steps_equal_one_device(mirrored, case):
    result = mirrored[case]
    assert result["update"] > 1e-3, result  # two steps moved the weights
    assert result["weights"] < 1e-6, result
    one, two = result["one_device"], result["mirrored"]
    assert sorted(one) == sorted(two)
    for name in one:
        assert two[name] == pytest.approx(one[name], abs=1e-6), (name, result)


def test_mirrored_replicas_agree_on_a_non_finite_update(mirrored):
    result = mirrored["non_finite"]
    assert len(result["moved"]) == 8  # 4 weights on each of 2 replicas
    assert result["moved"] == [0.0] * 8
    assert result["loss"] == [pytest.approx(float("nan"), nan_ok=True)]


def test_mirrored_refuses_gradient_clipping(mirrored):
    # Keras clips each replica's share before the shares are summed.
    assert "clips each replica's share" in mirrored["clipping"]
    assert "{'clipnorm': 1.0}" in mirrored["clipping"]


def test_mirrored_refuses_uneven_batches(mirrored):
    assert "splits each batch of tasks evenly" in mirrored["uneven"]
    assert "holds 3 tasks" in mirrored["uneven"]
    assert "multiple of 2" in mirrored["uneven"]
