"""Every use of a private Keras internal, in one place.

kerameta builds on Keras's public API (`stateless_call`, `keras.ops`,
`StatelessScope`, `Model.compile`/`fit`). The few private attributes it
still reads are wrapped here, each with a test in `tests/compat_test.py`
that fails with a clear message when a Keras release changes it. Code
outside this module (and the backend seam, for the framework-specific
kernels) never touches `keras.src` or an underscored Keras attribute.
"""

from typing import Any

import keras


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
