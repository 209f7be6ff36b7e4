"""Checks of the first batch, on the host, before Keras traces a step.

Inside a traced step the data are tracers (`DynamicJaxprTracer`,
`SymbolicTensor`) and their values unknown, so a mistake there surfaces as
a broadcast, a wrong loss or an error naming a tracer. `fit`, `evaluate`
and `predict` first look at one batch with NumPy, where it can be read:
its structure and shapes (`validate_episode`), the targets against the
model's outputs (a `(T, Q, 3)` target against `(T, Q, 1)` predictions
would broadcast), and, with a sparse loss, that labels are integer class
ids in `[0, num_classes)`.

A batch it can read without side effects: a `keras.utils.PyDataset`'s
first, or the first `batch_size` tasks of arrays. Generators, `tf.data`
and PyTorch data loaders are not read ahead (their first batch is checked
by shape when traced).
"""

from typing import Any

import keras
import numpy as np

from kerameta.src.episodes import example_outputs
from kerameta.src.episodes import validate_episode


def host_batch(data: Any, y: Any = None, batch_size: int | None = None):
    """`(x, y)` of the first batch as NumPy, or `None` if not readable."""
    if isinstance(data, keras.utils.PyDataset):
        if len(data) == 0:
            return None
        batch = data[0]
        batch = tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        return x, y
    if isinstance(data, np.ndarray):
        return data, y  # not an episode dict: `validate_episode` says so
    if isinstance(data, dict) and "support_x" in data:
        arrays = keras.tree.flatten((data, y))
        if not all(isinstance(a, np.ndarray) for a in arrays):
            return None
        size = 32 if batch_size is None else batch_size
        return keras.tree.map_structure(lambda a: a[:size], (data, y))
    return None


def _loss_kind(loss: Any) -> str | None:
    """`"sparse"`, `"dense"` (a Keras loss) or `None` (a user's own)."""
    fn = getattr(loss, "fn", loss)
    module = getattr(fn, "__module__", "") or ""
    if not module.startswith("keras"):
        return None
    name = getattr(fn, "__name__", type(fn).__name__).lower()
    return "sparse" if "sparse" in name else "dense"


def check_targets(meta_model, x, y) -> None:
    """The targets of a host batch against the model's outputs and loss."""
    loss = meta_model._task_loss_fn
    if loss is None:
        return
    outputs = example_outputs(meta_model.model, x["query_x"])
    losses = getattr(loss, "losses", None)
    names = getattr(loss, "names", None)
    pairs = []
    for key, targets in (("support_y", x["support_y"]), ("query_y", y)):
        if targets is None:
            continue
        if names is None:
            pairs.append((key, loss, targets, outputs))
            continue
        for name, fn in zip(names, losses):
            try:
                pairs.append(
                    (f"{key}[{name!r}]", fn, targets[name], outputs[name])
                )
            except (KeyError, IndexError, TypeError):
                return  # the loss reports the mismatch when it runs
    for label, fn, targets, output in pairs:
        _check_pair(label, _loss_kind(fn), np.asarray(targets), output)


def _check_pair(label: str, kind: str | None, targets, output) -> None:
    if kind is None or not hasattr(output, "shape"):
        return
    predicted = tuple(output.shape[1:])  # one example's prediction
    target = tuple(targets.shape[2:])
    if kind == "sparse":
        if target not in (predicted[:-1], (*predicted[:-1], 1)):
            raise ValueError(
                f"`{label}` does not fit the model's output for a sparse "
                f"loss: each example's target should be a class id shaped "
                f"{predicted[:-1]} or {(*predicted[:-1], 1)}, since the "
                f"model predicts {predicted} per example. Received: "
                f"{label}.shape={targets.shape}."
            )
        _check_labels(label, targets, predicted[-1])
        return
    if target != predicted and not (
        predicted[-1:] == (1,) and target == predicted[:-1]
    ):
        raise ValueError(
            f"`{label}` does not match the model's output: each example's "
            f"target is shaped {target} but the model predicts {predicted} "
            f"per example (received {label}.shape={targets.shape}), so the "
            "loss would broadcast one against the other. Give targets "
            "shaped like the predictions (for class ids use a sparse loss, "
            "e.g. `'sparse_categorical_crossentropy'`)."
        )


def _check_labels(label: str, targets, num_classes: int | None) -> None:
    if targets.size == 0 or num_classes is None:
        return
    if not np.issubdtype(targets.dtype, np.number):
        return
    if np.issubdtype(targets.dtype, np.floating):
        fractional = targets[np.mod(targets, 1) != 0]
        if fractional.size:
            raise ValueError(
                f"`{label}` holds non-integer class labels for a sparse "
                f"loss, e.g. {fractional.ravel()[:3].tolist()}, which would "
                "be truncated. Give integer class ids in [0, "
                f"{num_classes})."
            )
    low, high = targets.min(), targets.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"`{label}` holds class labels outside [0, {num_classes}) for a "
            f"model with {num_classes} outputs: from {low} to {high}. "
            "Number the classes of each task from 0 (`kerameta.data` "
            "episodes already do), or give the model one output per class."
        )


def check_first_batch(meta_model, mode: str, data, y=None, batch_size=None):
    """Validates the first batch of `data` on the host, if readable."""
    batch = host_batch(data, y, batch_size)
    if batch is None:
        return
    x, y = batch
    validate_episode(
        x,
        y,
        require_query_y=mode != "predict",
        model_input_rank=meta_model._model_input_rank(),
    )
    check_targets(meta_model, x, y)
