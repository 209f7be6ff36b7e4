"""Whether the tasks of a batch are vectorized (`vmap`) or looped over."""

from typing import Any

import keras

from kerameta.src import backend as seam
from kerameta.src import compat

_OPTIONS = ("auto", True, False)


def _conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in compat.flatten_layers(model)
        if "Conv" in type(layer).__name__
    ]


def resolve_vectorize_tasks(option: Any, model: keras.Model) -> bool:
    """Decides, from the backend and the layers, whether to `vmap` tasks."""
    if option not in _OPTIONS:
        raise ValueError(
            "`vectorize_tasks` must be 'auto', True or False. Received: "
            f"vectorize_tasks={option!r}"
        )
    if seam.BACKEND == "tensorflow":
        if option is True:
            raise ValueError(
                "`vectorize_tasks=True` is not supported on the TensorFlow "
                "backend, which loops over tasks (`tf.vectorized_map` is "
                "hundreds of times slower under XLA). Use 'auto' or False."
            )
        return False
    if option != "auto":
        return bool(option)
    if seam.BACKEND == "jax":
        # Vectorized convolutions with per-task filters were measured 5x
        # slower than `lax.map` on CPU; dense networks gain from `vmap`.
        return not _conv_layers(model)
    # torch.vmap fails on channels_last convolutions with batched kernels.
    return not any(
        getattr(layer, "data_format", None) == "channels_last"
        for layer in _conv_layers(model)
    )
