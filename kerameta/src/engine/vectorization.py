"""Whether the tasks of a batch are vectorized (`vmap`) or looped over."""

from typing import Any

import keras

from kerameta.src import backend as seam
from kerameta.src import compat
from kerameta.src.engine.randomness import RandomLayers

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
    if seam.BACKEND == "torch":
        return _torch_vectorizes(option, model)
    if option != "auto":
        return bool(option)
    # Vectorized convolutions with per-task filters were measured 5x
    # slower than `lax.map` on CPU (JAX); dense networks gain from `vmap`.
    return not _conv_layers(model)


def _torch_vectorizes(option: Any, model: keras.Model) -> bool:
    """`torch.vmap` where it works; the per-task loop elsewhere."""
    reasons = []
    if any(
        getattr(layer, "data_format", None) == "channels_last"
        for layer in _conv_layers(model)
    ):
        reasons.append(
            "the model has channels_last convolutions, which torch.vmap "
            "cannot run with per-task filters (use "
            "`data_format='channels_first'` to vectorize them)"
        )
    if RandomLayers.of(model) is not None:
        reasons.append(
            "the model has random layers (Dropout, GaussianNoise, ...), "
            "whose seeded draws torch.vmap cannot batch"
        )
    if option is True and reasons:
        raise ValueError(
            "`vectorize_tasks=True` cannot work on the PyTorch backend with "
            f"this model: {'; and '.join(reasons)}. Use "
            "`vectorize_tasks='auto'` (or False), which loops over the tasks."
        )
    if option == "auto":
        return not reasons
    return bool(option)
