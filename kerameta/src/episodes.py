"""The episode format and its validation.

A batch of episodes is `(x, y)` with `x` a dict holding
`support_x` `[T, S, ...]`, `support_y` `[T, S, ...]` and `query_x`
`[T, Q, ...]`,
and `y = query_y` shaped `[T, Q, ...]`. `T` (the task axis) is Keras's batch
axis, so `batch_size=`, compiled metrics and `unpack_x_y_sample_weight` work
unchanged.
"""

from dataclasses import dataclass

import keras
from keras import ops

from kerameta.src.types import Tensor

EPISODE_KEYS = ("support_x", "support_y", "query_x")
_HINT = (
    "Build episodes with `kerameta.data.EpisodeDataset` or "
    "`kerameta.data.SinusoidTasks`, or see the episode format in the "
    "kerameta docs (Concepts)."
)


@dataclass
class Episode:
    """A validated batch of episodes, each tensor with a leading task axis."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor | None

    @property
    def num_tasks(self) -> int | None:
        return keras.tree.flatten(self.support_x)[0].shape[0]


def _rank(tensor) -> int:
    return len(tensor.shape)


def _leaves(name: str, value) -> list[tuple[str, Tensor]]:
    """`(label, tensor)` for each array of `value` (one, or a structure)."""
    paths = keras.tree.flatten_with_path(value)
    if not paths:
        raise ValueError(
            f"Expected `{name}` to hold arrays. Received: an empty "
            f"{type(value).__name__}."
        )
    return [
        (name + "".join(f"[{p!r}]" for p in path), tensor)
        for path, tensor in paths
    ]


def _to_tensors(value):
    return keras.tree.map_structure(ops.convert_to_tensor, value)


def _shape_list(leaves) -> str:
    return ", ".join(f"{label}.shape={tuple(t.shape)}" for label, t in leaves)


def validate_episode(
    x, y=None, *, require_query_y: bool, model_input_rank=None
) -> Episode:
    """Checks the keys, ranks and axis sizes of a batch of episodes.

    `support_x` and `query_x` are arrays, or like structures (tuples,
    lists, dicts) of arrays for a model with several inputs; `support_y`
    and the query targets likewise for a model with several outputs.

    Args:
        x: the dict of support and query inputs.
        y: the query targets, or `None` (prediction).
        require_query_y: whether `y` must be given (training, evaluation).
        model_input_rank: the rank of one example batch the wrapped model
            takes (including its batch axis), if known (single-input
            models).

    Returns:
        An `Episode` of backend tensors (or structures of them).

    Raises:
        ValueError: with what was received and how to fix it.
    """
    if not isinstance(x, dict):
        raise ValueError(
            "Expected `x` to be a dict with keys "
            f"{list(EPISODE_KEYS)}. Received: x of type {type(x).__name__}. "
            + _HINT
        )
    keys = sorted(x)
    missing = [k for k in EPISODE_KEYS if k not in x]
    unknown = [k for k in keys if k not in EPISODE_KEYS]
    if missing or unknown:
        extra = ""
        if "query_y" in unknown:
            extra = (
                " `query_y` is not part of `x`: pass it as the target `y`, "
                "i.e. batches of `(x, query_y)`."
            )
        raise ValueError(
            f"Expected `x` to be a dict with keys {list(EPISODE_KEYS)}. "
            f"Received keys: {keys}. Missing: {missing}; unexpected: "
            f"{unknown}.{extra} " + _HINT
        )
    if require_query_y and y is None:
        raise ValueError(
            "Expected batches of `(x, query_y)`, but the target `y` "
            "(the query labels) is missing. " + _HINT
        )
    tensors = {k: _to_tensors(x[k]) for k in EPISODE_KEYS}
    if y is not None:
        tensors["query_y"] = _to_tensors(y)
    leaves = {k: _leaves(k, v) for k, v in tensors.items()}

    for key in ("support_x", "query_x"):
        for label, tensor in leaves[key]:
            if _rank(tensor) < 3:
                raise ValueError(
                    f"Expected `{label}` to have rank >= 3, shaped (tasks, "
                    f"examples, *features). Received: {label}.shape="
                    f"{tuple(tensor.shape)}. Add the task axis (and a "
                    "feature axis, e.g. `x[..., None]` for scalar inputs)."
                )
    for key in ("support_y", "query_y"):
        for label, tensor in leaves.get(key, []):
            if _rank(tensor) < 2:
                raise ValueError(
                    f"Expected `{label}` to have rank >= 2, shaped (tasks, "
                    f"examples, ...). Received: {label}.shape="
                    f"{tuple(tensor.shape)}."
                )
    if model_input_rank is not None and len(leaves["support_x"]) == 1:
        for key in ("support_x", "query_x"):
            shape = tuple(leaves[key][0][1].shape)
            if len(shape) != model_input_rank + 1:
                raise ValueError(
                    f"Expected `{key}` to have rank {model_input_rank + 1}: "
                    "the task axis followed by the wrapped model's input "
                    f"shape (rank {model_input_rank} with its batch axis). "
                    f"Received: {key}.shape={shape}."
                )
    _check_same_structure(tensors, "support_x", "query_x")
    if "query_y" in tensors:
        _check_same_structure(tensors, "support_y", "query_y")
    for (label, s), (_, q) in zip(leaves["support_x"], leaves["query_x"]):
        if tuple(s.shape[2:]) != tuple(q.shape[2:]):
            raise ValueError(
                "Expected support and query examples to have the same shape. "
                f"Received: {label}.shape={tuple(s.shape)}, "
                f"{label.replace('support', 'query', 1)}.shape="
                f"{tuple(q.shape)}."
            )
    every = [leaf for key in leaves for leaf in leaves[key]]
    task_axis = {t.shape[0] for _, t in every if t.shape[0] is not None}
    if len(task_axis) > 1:
        raise ValueError(
            "Expected the same number of tasks (axis 0) in support_x, "
            "support_y, query_x and the query targets. Received: "
            + _shape_list(every)
            + "."
        )
    if task_axis == {0}:
        raise ValueError(
            "The batch has no tasks (axis 0 is empty): "
            + _shape_list(every)
            + ". Each batch needs at least one task; check the slicing or "
            "`batch_size` that made it."
        )
    for inputs, targets in (("support_x", "support_y"), ("query_x", "query_y")):
        if targets not in leaves:
            continue
        pair = leaves[inputs] + leaves[targets]
        examples = {t.shape[1] for _, t in pair if t.shape[1] is not None}
        if len(examples) > 1:
            raise ValueError(
                f"Expected `{inputs}` and `{targets}` to hold the same number "
                f"of examples per task (axis 1). Received: "
                f"{_shape_list(pair)}."
            )
    for key, need in (
        ("support_x", "adaptation needs at least one support example"),
        ("query_x", "it needs at least one query example"),
    ):
        shape = tuple(leaves[key][0][1].shape)
        if shape[1] == 0:
            raise ValueError(
                f"The {key[:-2]} set is empty: {need} per task. Received: "
                f"{key}.shape={shape}."
            )
    return Episode(
        tensors["support_x"],
        tensors["support_y"],
        tensors["query_x"],
        tensors.get("query_y"),
    )


def _check_same_structure(tensors, first: str, second: str) -> None:
    try:
        keras.tree.assert_same_structure(tensors[first], tensors[second])
    except (ValueError, TypeError):
        raise ValueError(
            f"Expected `{first}` and `{second}` to have the same structure "
            "(the same inputs or outputs of the model, in the same nesting). "
            f"Received: {first} of structure "
            f"{keras.tree.map_structure(lambda t: None, tensors[first])} "
            f"and {second} of structure "
            f"{keras.tree.map_structure(lambda t: None, tensors[second])}."
        ) from None


def example_outputs(model, query_x):
    """The model's output spec for one task's examples of `query_x`.

    `query_x` is an array or a structure of arrays shaped `(tasks,
    examples, *features)`; the spec's leaves are shaped `(None, *outputs)`.
    """
    return model.compute_output_spec(
        keras.tree.map_structure(
            lambda q: keras.KerasTensor((None, *q.shape[2:]), q.dtype), query_x
        )
    )


def describe_shapes(**arrays) -> str:
    """`name.shape=(...)` for every array (or leaf of a structure) given."""
    return _shape_list(
        [
            leaf
            for name, value in arrays.items()
            for leaf in _leaves(name, value)
        ]
    )
