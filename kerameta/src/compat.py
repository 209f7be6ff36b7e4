"""Every use of a private Keras internal, in one place.

kerameta builds on Keras's public API (`stateless_call`, `keras.ops`,
`StatelessScope`, `Model.compile`/`fit`). The few private attributes it
still reads are wrapped here, each with a test in `tests/compat_test.py`
that fails with a clear message when a Keras release changes it. Code
outside this module never touches `keras.src` or an underscored Keras
attribute.
"""

import contextlib
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
    originals = {name: getattr(nn, name) for name in replacements}
    swapped = [n for n, fn in replacements.items() if originals[n] is not fn]
    for name in swapped:
        setattr(nn, name, replacements[name])
    try:
        yield originals
    finally:
        for name in swapped:
            setattr(nn, name, originals[name])


def swap_jax_nn_ops(
    replacements: dict[str, Callable],
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Replaces Keras's JAX kernels (e.g. `conv`, `max_pool`) in a block.

    A context manager over `keras.src.backend.jax.nn`, the functions that
    `keras.ops` calls on the JAX backend; it yields the originals (see
    `_swap_backend_nn`).
    """
    return _swap_backend_nn("jax", replacements)


def swap_tf_compute_moments(
    compute_moments: Callable,
) -> contextlib.AbstractContextManager[dict[str, Callable]]:
    """Replaces `keras.src.backend.tensorflow.nn._compute_moments` in a block.

    `keras.ops.moments` (and so `BatchNormalization`) computes its batch
    statistics with it; `compute_moments(x, axes, keepdims) -> (mean,
    variance)`.
    """
    return _swap_backend_nn("tensorflow", {"_compute_moments": compute_moments})
