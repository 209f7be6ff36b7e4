"""The rolled inner loop: one traced step whatever `inner_steps` is.

`MAML(unroll_inner_loop=False)` (the default on JAX) runs the inner steps
with `seam.fori_loop`, so JAX and TensorFlow compile one inner step, and the
meta-gradient is the one the unrolled loop computes.
"""

import keras
import numpy as np
import pytest
from helpers import BACKEND
from helpers import episodes
from helpers import seed_everything
from helpers import to_numpy

import kerameta

COMPILED = BACKEND in ("jax", "tensorflow")


@keras.saving.register_keras_serializable("kerameta_tests")
class CountingLayer(keras.layers.Layer):
    """The identity; counts how often its `call` runs (traced or eager)."""

    calls = 0

    def call(self, x):
        CountingLayer.calls += 1
        return x


def _meta_model(inner_steps, unroll, dropout=False, **kwargs):
    seed_everything()
    layers = [keras.Input((1,)), keras.layers.Dense(8, activation="tanh")]
    if dropout:
        layers.append(keras.layers.Dropout(0.5))
    layers += [CountingLayer(), keras.layers.Dense(1)]
    meta = kerameta.MAML(
        keras.Sequential(layers),
        inner_steps=inner_steps,
        unroll_inner_loop=unroll,
        **kwargs,
    )
    meta.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return meta


def _traced_calls(inner_steps, unroll):
    meta = _meta_model(inner_steps, unroll)
    CountingLayer.calls = 0
    meta.train_on_batch(*episodes())
    return CountingLayer.calls


@pytest.mark.skipif(not COMPILED, reason="PyTorch runs eagerly")
def test_rolled_loop_traces_one_step_whatever_the_steps():
    assert _traced_calls(2, unroll=False) == _traced_calls(5, unroll=False)
    assert _traced_calls(5, unroll=True) > _traced_calls(2, unroll=True)


def test_auto_rolls_on_jax_only():
    # TensorFlow's while_loop ran a few inner steps about 3x slower.
    meta = _meta_model(2, unroll="auto")
    assert meta._components().unroll == (BACKEND == "tensorflow")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dropout": True},
        {"meta_gradient": "first_order", "inner_optimizer": "meta_sgd"},
    ],
    ids=["second_order_dropout", "first_order_meta_sgd"],
)
def test_rolled_loop_equals_unrolled(kwargs):
    results = {}
    for unroll in (False, True):
        meta = _meta_model(3, unroll, **kwargs)
        logs = meta.train_on_batch(*episodes(), return_dict=True)
        results[unroll] = [to_numpy(v) for v in meta.trainable_variables]
        results[unroll].append(np.float64(logs["loss"]))
    for rolled, unrolled in zip(results[False], results[True]):
        np.testing.assert_allclose(rolled, unrolled, rtol=1e-5, atol=1e-6)


@keras.saving.register_keras_serializable("kerameta_tests")
class StepRecordingSGD(kerameta.inner_optimizers.SGD):
    """SGD that records the type of each `step` it is given."""

    string_id = "step_recording_sgd"
    tensor_steps = False
    seen = []

    def apply(self, fast, directions, step, values):
        StepRecordingSGD.seen.append(type(step))
        return super().apply(fast, directions, step, values)


def test_components_without_tensor_steps_get_python_ints():
    StepRecordingSGD.seen = []
    meta = _meta_model(3, unroll=False, inner_optimizer=StepRecordingSGD())
    meta.train_on_batch(*episodes())
    assert StepRecordingSGD.seen and set(StepRecordingSGD.seen) == {int}


def test_unroll_inner_loop_is_validated_and_saved():
    with pytest.raises(ValueError, match="unroll_inner_loop"):
        _meta_model(2, unroll="yes")
    meta = _meta_model(2, unroll=True)
    config = meta.get_config()
    assert config["unroll_inner_loop"] is True
    assert type(meta).from_config(config).unroll_inner_loop is True
