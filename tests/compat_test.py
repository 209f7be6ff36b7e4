"""The private Keras internals that `kerameta/src/compat.py` reads.

One test per compat function: each checks that the internal still exists
with the shape kerameta relies on, and fails naming the Keras version if a
release changed it. Backend-specific internals are checked on their
backend; elsewhere the compat function must refuse with a clear error.
"""

import inspect
import types

import keras
import numpy as np
import pytest

from kerameta.src import compat

BACKEND = keras.config.backend()
VERSION = f"Keras {keras.__version__}"


def _compiled_model():
    model = keras.Sequential(
        [keras.Input((2,)), keras.Sequential([keras.layers.Dense(1)])]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def _parameters(fn):
    return list(inspect.signature(fn).parameters)


def test_flatten_layers():
    assert hasattr(keras.Model, "_flatten_layers"), (
        f"{VERSION} has no `Model._flatten_layers`; update "
        "`compat.flatten_layers`."
    )
    model = _compiled_model()
    inner = model.layers[0]
    dense = inner.layers[0]
    layers = compat.flatten_layers(model)
    assert (
        model not in layers
        and dense in layers
        and inner in layers[: layers.index(dense)]
    ), (
        f"{VERSION}: `Model._flatten_layers(include_self=False)` no longer "
        f"lists nested layers depth first. Received: {layers}"
    )


def test_loss_tracker():
    model = _compiled_model()
    assert isinstance(
        getattr(model, "_loss_tracker", None), keras.metrics.Mean
    ), (
        f"{VERSION}: a compiled model has no `_loss_tracker` Mean metric; "
        "update `compat.loss_tracker`."
    )
    assert compat.loss_tracker(model).name == "loss"


def test_record_compile_argument():
    model = _compiled_model()
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    assert isinstance(config, dict) and "jit_compile" in config, (
        f"{VERSION}: `model._compile_config.config` is no longer the dict "
        "of compile arguments; update `compat.record_compile_argument`."
    )
    compat.record_compile_argument(model, "jit_compile", "auto")
    assert model.get_compile_config()["jit_compile"] == "auto", (
        f"{VERSION}: `get_compile_config` does not read "
        "`_compile_config.config`; update `compat.record_compile_argument`."
    )


def test_assert_compile_called():
    assert hasattr(keras.Model, "_assert_compile_called"), (
        f"{VERSION} has no `Model._assert_compile_called`; update "
        "`compat.assert_compile_called`."
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compile"):
        compat.assert_compile_called(model, "fit")
    compat.assert_compile_called(_compiled_model(), "fit")


def _conv_inputs():
    x = np.ones((1, 4, 4, 1), "float32")
    kernel = np.ones((2, 2, 1, 1), "float32")
    return x, kernel


@pytest.mark.skipif(BACKEND != "jax", reason="patches Keras's JAX kernels")
def test_swap_jax_nn_ops():
    from keras.src.backend.jax import nn as jax_nn

    expected = {
        "conv": ["inputs", "kernel", "strides", "padding", "data_format"],
        "max_pool": ["inputs", "pool_size", "strides", "padding"],
    }
    for name, parameters in expected.items():
        fn = getattr(jax_nn, name, None)
        assert callable(fn), (
            f"{VERSION} has no `keras.src.backend.jax.nn.{name}`; update "
            "`compat.swap_jax_nn_ops` and `backend/jax_cpu_kernels.py`."
        )
        got = _parameters(fn)[: len(parameters)]
        assert got == parameters, (
            f"{VERSION}: `keras.src.backend.jax.nn.{name}` now takes {got}; "
            f"kerameta's replacement takes {parameters}."
        )
    calls = []

    def conv(*args, **kwargs):
        calls.append("conv")
        return original["conv"](*args, **kwargs)

    before = jax_nn.conv
    with compat.swap_jax_nn_ops({"conv": conv}) as original:
        assert original["conv"] is before
        with compat.swap_jax_nn_ops({"conv": conv}) as nested:
            assert nested["conv"] is conv  # already swapped in
        keras.ops.conv(*_conv_inputs())
        assert jax_nn.conv is conv
    assert calls == ["conv"], (
        f"{VERSION}: `keras.ops.conv` no longer calls "
        "`keras.src.backend.jax.nn.conv` through the module attribute."
    )
    assert jax_nn.conv is before
    with pytest.raises(RuntimeError, match=keras.__version__):
        with compat.swap_jax_nn_ops({"no_such_op": conv}):
            pass


@pytest.mark.skipif(BACKEND != "jax", reason="patches Keras's JAX trainer")
def test_swap_jax_trainer_jit():
    from keras.src.backend.jax import trainer as jax_trainer

    before = getattr(jax_trainer, "jit", None)
    assert getattr(before, "__module__", "").startswith("jax"), (
        f"{VERSION}: `keras.src.backend.jax.trainer.jit` is {before!r}, not "
        "`jax.jit`; update `compat.swap_jax_trainer_jit` and "
        "`backend/jax_cpu_kernels.cpu_library_choices`."
    )
    calls = []

    def jit(fn, **kwargs):
        calls.append(sorted(kwargs))
        return before(fn, **kwargs)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with compat.swap_jax_trainer_jit(lambda found: jit) as original:
        assert original["jit"] is before and jax_trainer.jit is jit
        model.make_train_function(force=True)
        model.make_test_function(force=True)
        model.make_predict_function(force=True)
    assert jax_trainer.jit is before
    assert len(calls) == 3, (
        f"{VERSION}: Keras's JAX trainer no longer builds its train, test "
        "and predict steps through the module attribute `jit`."
    )


class _Batches(keras.utils.PyDataset):
    def __init__(self, count=3, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        x = np.full((2, 1), index, "float32")
        return x, np.array([0, 1], "int32")


def test_swap_py_dataset_tf_source():
    from keras.src.trainers.data_adapters import py_dataset_adapter

    cls = py_dataset_adapter.PyDatasetAdapter
    before = cls.get_tf_dataset

    def source(adapter):
        return "indexed"

    with compat.swap_py_dataset_tf_source(lambda found: source) as original:
        assert original["get_tf_dataset"] is before
        adapter = cls(_Batches(), class_weight={0: 1.0, 1: 3.0}, shuffle=True)
        assert adapter.get_tf_dataset() == "indexed"
    assert cls.get_tf_dataset is before
    x, y, weights = compat.py_dataset_adapter_batch(adapter, 2)
    np.testing.assert_array_equal(x, np.full((2, 1), 2))
    np.testing.assert_array_equal(weights, [1.0, 3.0])  # the class weights
    py_dataset, shuffle, enqueued = compat.py_dataset_adapter_settings(adapter)
    assert (py_dataset.count, shuffle, enqueued) == (3, True, False), (
        f"{VERSION}: `PyDatasetAdapter` no longer keeps `py_dataset`, "
        "`shuffle` and `enqueuer`; update `compat.py_dataset_adapter_settings`."
    )
    workers = cls(_Batches(workers=2), shuffle=False)
    assert compat.py_dataset_adapter_settings(workers)[2]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="patches Keras's TF nn")
def test_swap_tf_compute_moments():
    from keras.src.backend.tensorflow import nn as tf_nn

    fn = getattr(tf_nn, "_compute_moments", None)
    assert callable(fn), (
        f"{VERSION} has no `keras.src.backend.tensorflow.nn._compute_moments`"
        "; update `compat.swap_tf_compute_moments` (and TF's exact second "
        "derivatives of batch moments in the seam)."
    )
    assert _parameters(fn) == ["x", "axes", "keepdims"], (
        f"{VERSION}: `_compute_moments` now takes {_parameters(fn)}."
    )
    calls = []

    def moments(x, axes, keepdims):
        calls.append(keepdims)
        return fn(x, axes, keepdims)

    with compat.swap_tf_compute_moments(moments):
        mean, _ = keras.ops.moments(np.arange(4.0, dtype="float32"), [0])
    assert calls == [False], (
        f"{VERSION}: `keras.ops.moments` no longer calls "
        "`keras.src.backend.tensorflow.nn._compute_moments`."
    )
    assert float(mean) == 1.5
    assert tf_nn._compute_moments is fn


def test_unscaled_losses():
    from keras.src.losses import loss as loss_module

    fn = getattr(loss_module, "scale_loss_for_distribution", None)
    assert callable(fn), (
        f"{VERSION} has no `keras.src.losses.loss.scale_loss_for_distribution`"
        "; update `compat.unscaled_losses` (kerameta's task losses under "
        "`tf.distribute`)."
    )
    assert "scale_loss_for_distribution" in (
        loss_module.reduce_values.__code__.co_names
    ), (
        f"{VERSION}: `keras.src.losses.loss.reduce_values` no longer calls "
        "`scale_loss_for_distribution` through the module attribute; update "
        "`compat.unscaled_losses`."
    )
    loss = keras.losses.MeanSquaredError()
    with compat.unscaled_losses():
        swapped = loss_module.scale_loss_for_distribution
        value = loss(np.zeros((2, 1), "float32"), np.ones((2, 1), "float32"))
    assert float(value) == 1.0
    assert (swapped is not fn) == (BACKEND == "tensorflow")
    assert loss_module.scale_loss_for_distribution is fn


def test_swaps_are_counted():
    # Blocks may end out of order (`tf.distribute`'s replica threads): the
    # replacement stays until the last block ends.
    module = types.SimpleNamespace(op="original")
    first = compat._swap_attributes(module, {"op": "new"})
    second = compat._swap_attributes(module, {"op": "new"})
    assert first.__enter__() == {"op": "original"}
    assert second.__enter__() == {"op": "new"}
    first.__exit__(None, None, None)
    assert module.op == "new"
    second.__exit__(None, None, None)
    assert module.op == "original"
    with compat._swap_attributes(module, {"op": "new"}):
        with compat._swap_attributes(module, {"op": "other"}) as found:
            assert found == {"op": "new"} and module.op == "other"
        assert module.op == "new"
    assert module.op == "original"


@pytest.mark.parametrize(
    "swap, backend",
    [
        (lambda: compat.swap_jax_nn_ops({}), "jax"),
        (lambda: compat.swap_jax_trainer_jit(lambda jit: jit), "jax"),
        (lambda: compat.swap_tf_compute_moments(None), "tensorflow"),
    ],
)
def test_swaps_refuse_other_backends(swap, backend):
    if backend == BACKEND:
        pytest.skip("the backend this swap is for")
    with pytest.raises(ValueError, match=f"only be patched on the '{backend}'"):
        with swap():
            pass
