"""Every use of a private Keras internal, in one place.

kerameta builds on Keras's public API (`stateless_call`, `keras.ops`,
`StatelessScope`, `Model.compile`/`fit`). The few private attributes it
still reads are wrapped here, each with a test in `tests/compat_test.py`
that fails with a clear message when a Keras release changes it. Code
outside this module never touches `keras.src` or an underscored Keras
attribute.
"""

import contextlib
import sys
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import keras
from keras.src import backend as keras_backend


def flatten_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer nested in `model` (not `model` itself), depth first.

    `Model._flatten_layers` is what Keras itself uses to walk nested
    models; `model.layers` lists only the top level.
    """
    return list(model._flatten_layers(include_self=False))


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """The `Mean` metric behind the `loss` entry of `fit`'s logs."""
    return model._loss_tracker


def record_compile_argument(model: keras.Model, name: str, value: Any) -> None:
    """Overrides one argument in the compile config that `.keras` saves.

    Keras records resolved values (e.g. `jit_compile=True` under JAX);
    kerameta records what the user asked for, resolved again on load.
    """
    model._compile_config.config[name] = value


def assert_compile_called(model: keras.Model, method_name: str) -> None:
    """Raises Keras's own error if `model` is not compiled yet."""
    model._assert_compile_called(method_name)


@contextlib.contextmanager
def _swap_backend_nn(
    backend: str, replacements: dict[str, Callable]
) -> Iterator[dict[str, Callable]]:
    """Replaces functions of `keras.src.backend.<backend>.nn` for a while.

    `keras.ops` looks them up as module attributes on every call, so the
    replacements take effect for ops traced (or run) inside the block.
    Yields the functions replaced; nested swaps of the same functions
    leave them in place (the yielded originals are then the replacements).
    """
    if keras.config.backend() != backend:
        raise ValueError(
            f"`keras.src.backend.{backend}.nn` can only be patched on the "
            f"{backend!r} backend. Received: the backend is "
            f"{keras.config.backend()!r}."
        )
    nn = keras_backend.nn  # the active backend's, i.e. `backend`'s
    missing = [name for name in replacements if not hasattr(nn, name)]
    if missing:
        raise RuntimeError(
            f"kerameta replaces `keras.src.backend.{backend}.nn.{missing[0]}`"
            f", which Keras {keras.__version__} does not have. Install a "
            "Keras version in the range kerameta declares, or report it."
        )
    with _swap_attributes(nn, replacements) as originals:
        yield originals


# ids of (module, name, replacement) -> [blocks inside, value to restore].
_SWAPS: dict[tuple, list] = {}
_SWAPS_LOCK = threading.Lock()


@contextlib.contextmanager
def _swap_attributes(
    module: Any, replacements: dict[str, Callable]
) -> Iterator[dict[str, Callable]]:
    """Sets attributes of `module` while any block using them runs.

    Yields the values found on entry (the replacements themselves when a
    block is already inside). Counted, not just nested: under
    `tf.distribute.MirroredStrategy` each replica traces the step in a
    thread of its own, and the threads take turns at every all-reduce, so
    one replica may leave its block while another is still inside.
    """
    found = {}
    with _SWAPS_LOCK:
        for name, fn in replacements.items():
            found[name] = current = getattr(module, name)
            entry = _SWAPS.setdefault((id(module), name, id(fn)), [0, current])
            if current is not fn:  # not swapped in: by no block, or another
                entry[1] = current
                setattr(module, name, fn)
            entry[0] += 1
    try:
        yield found
    finally:
        with _SWAPS_LOCK:
            for name, fn in replacements.items():
                key = (id(module), name, id(fn))
                entry = _SWAPS[key]
                entry[0] -= 1
                if entry[0] == 0:
                    setattr(module, name, entry[1])
                    del _SWAPS[key]


def swap_jax_nn_ops(
    replacements: dict[str, Callable],
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Replaces Keras's JAX kernels (e.g. `conv`, `max_pool`) in a block.

    A context manager over `keras.src.backend.jax.nn`, the functions that
    `keras.ops` calls on the JAX backend; it yields the originals (see
    `_swap_backend_nn`).
    """
    return _swap_backend_nn("jax", replacements)


def swap_torch_nn_ops(
    replacements: dict[str, Callable],
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Replaces Keras's PyTorch kernels (`conv`, `max_pool`) in a block.

    As `swap_jax_nn_ops`, over `keras.src.backend.torch.nn`.
    """
    return _swap_backend_nn("torch", replacements)


def swap_tf_compute_moments(
    compute_moments: Callable,
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Replaces `keras.src.backend.tensorflow.nn._compute_moments` in a block.

    `keras.ops.moments` (and so `BatchNormalization`) computes its batch
    statistics with it; `compute_moments(x, axes, keepdims) -> (mean,
    variance)`.
    """
    return _swap_backend_nn("tensorflow", {"_compute_moments": compute_moments})


def swap_jax_trainer_jit(
    replace: Callable[[Callable], Callable],
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Changes the `jit` Keras's JAX trainer compiles its steps with.

    `keras.src.backend.jax.trainer`'s `make_train_function` (and the test
    and predict ones) call the module attribute `jit` (`jax.jit`, or
    `flax.nnx.jit` with NNX) when they build a step function. Inside the
    block it is `replace(jit)`, e.g. `jax.jit` with compiler options.
    Yields the original.
    """
    if keras.config.backend() != "jax":
        raise ValueError(
            "Keras's JAX trainer can only be patched on the 'jax' backend. "
            f"Received: the backend is {keras.config.backend()!r}."
        )
    # The module of `keras.Model`'s JAX trainer base class, found without
    # importing a per-backend package here (see `backend_seam_test`).
    name = next(
        (
            base.__module__
            for base in keras.Model.__mro__
            if base.__module__.startswith("keras.src.backend.jax")
        ),
        None,
    )
    jit = getattr(sys.modules.get(name), "jit", None)
    if not callable(jit):
        raise RuntimeError(
            "kerameta replaces `keras.src.backend.jax.trainer.jit`, which "
            f"Keras {keras.__version__} does not have. Install a Keras "
            "version in the range kerameta declares, or report it."
        )
    return _swap_attributes(sys.modules[name], {"jit": replace(jit)})


def _unscaled(value: Any) -> Any:
    return value


def unscaled_losses() -> contextlib.AbstractContextManager:
    """Keras's losses are not divided by the replicas in a block.

    Under a `tf.distribute` strategy, `keras.losses.Loss.__call__` divides a
    mean loss by the number of replicas, for a model whose gradients the
    replicas sum; kerameta weighs each task itself (see
    `engine.replicas`), so its task losses are left whole. The division is
    `keras.src.losses.loss.scale_loss_for_distribution`, which
    `reduce_values` looks up as a module attribute; it is a no-op on the
    other backends, so the block swaps it on TensorFlow only.
    """
    if keras.config.backend() != "tensorflow":
        return contextlib.nullcontext()
    from keras.src.losses import loss as loss_module

    if not hasattr(loss_module, "scale_loss_for_distribution"):
        raise RuntimeError(
            "kerameta replaces `keras.src.losses.loss."
            f"scale_loss_for_distribution`, which Keras {keras.__version__} "
            "does not have. Install a Keras version in the range kerameta "
            "declares, or report it."
        )
    return _swap_attributes(
        loss_module, {"scale_loss_for_distribution": _unscaled}
    )


def _py_dataset_adapter_class() -> type:
    from keras.src.trainers.data_adapters import py_dataset_adapter

    adapter = getattr(py_dataset_adapter, "PyDatasetAdapter", None)
    missing = [
        name
        for name in ("get_tf_dataset", "_standardize_batch")
        if not callable(getattr(adapter, name, None))
    ]
    if missing:
        raise RuntimeError(
            "kerameta replaces `keras.src.trainers.data_adapters."
            "py_dataset_adapter.PyDatasetAdapter.get_tf_dataset` and calls "
            f"its `_standardize_batch`; Keras {keras.__version__} lacks "
            f"{missing}. Install a Keras version in the range kerameta "
            "declares, or report it."
        )
    return adapter


def swap_py_dataset_tf_source(
    replace: Callable[[Callable], Callable],
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Changes how Keras turns a `PyDataset` into a `tf.data.Dataset`.

    `fit`, `evaluate` and `predict` on TensorFlow feed a `PyDataset` through
    `PyDatasetAdapter.get_tf_dataset(adapter)`; inside the block that method
    is `replace(original)`. `replace` must return the same function each
    time it is given the same original (swaps are counted by identity).
    Yields the original.
    """
    adapter = _py_dataset_adapter_class()
    return _swap_attributes(
        adapter, {"get_tf_dataset": replace(adapter.get_tf_dataset)}
    )


def py_dataset_adapter_batch(adapter: Any, index: int) -> Any:
    """Batch `index` of a `PyDatasetAdapter`'s dataset, as Keras feeds it.

    `(x,)`, `(x, y)` or `(x, y, sample_weight)` (the class weights applied),
    or a dict: what Keras's own generator yields for that index.
    """
    return adapter._standardize_batch(adapter.py_dataset[index])


def py_dataset_adapter_settings(adapter: Any) -> tuple[Any, bool, bool]:
    """`(py_dataset, shuffle, uses_enqueuer)` of a `PyDatasetAdapter`."""
    return (
        adapter.py_dataset,
        bool(adapter.shuffle),
        adapter.enqueuer is not None,
    )
