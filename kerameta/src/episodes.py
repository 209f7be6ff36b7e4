"""The episode format and its validation.

A batch of episodes is `(x, y)` with `x` a dict holding
`support_x` `[T, S, ...]`, `support_y` `[T, S, ...]` and `query_x`
`[T, Q, ...]`,
and `y = query_y` shaped `[T, Q, ...]`. `T` (the task axis) is Keras's batch
axis, so `batch_size=`, compiled metrics and `unpack_x_y_sample_weight` work
unchanged.
"""

from dataclasses import dataclass

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
        return self.support_x.shape[0]


def _rank(tensor) -> int:
    return len(tensor.shape)


def validate_episode(
    x, y=None, *, require_query_y: bool, model_input_rank=None
) -> Episode:
    """Checks the keys, ranks and axis sizes of a batch of episodes.

    Args:
        x: the dict of support and query inputs.
        y: the query targets, or `None` (prediction).
        require_query_y: whether `y` must be given (training, evaluation).
        model_input_rank: the rank of one example batch the wrapped model
            takes (including its batch axis), if known.

    Returns:
        An `Episode` of backend tensors.

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
    tensors = {k: ops.convert_to_tensor(x[k]) for k in EPISODE_KEYS}
    if y is not None:
        tensors["query_y"] = ops.convert_to_tensor(y)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}

    for key in ("support_x", "query_x"):
        if _rank(tensors[key]) < 3:
            raise ValueError(
                f"Expected `{key}` to have rank >= 3, shaped (tasks, "
                f"examples, *features). Received: {key}.shape={shapes[key]}. "
                "Add the task axis (and a feature axis, e.g. `x[..., None]` "
                "for scalar inputs)."
            )
    for key in ("support_y", "query_y"):
        if key in tensors and _rank(tensors[key]) < 2:
            raise ValueError(
                f"Expected `{key}` to have rank >= 2, shaped (tasks, "
                f"examples, ...). Received: {key}.shape={shapes[key]}."
            )
    if model_input_rank is not None:
        for key in ("support_x", "query_x"):
            if _rank(tensors[key]) != model_input_rank + 1:
                raise ValueError(
                    f"Expected `{key}` to have rank {model_input_rank + 1}: "
                    "the task axis followed by the wrapped model's input "
                    f"shape (rank {model_input_rank} with its batch axis). "
                    f"Received: {key}.shape={shapes[key]}."
                )
    if shapes["support_x"][2:] != shapes["query_x"][2:]:
        raise ValueError(
            "Expected support and query examples to have the same shape. "
            f"Received: support_x.shape={shapes['support_x']}, "
            f"query_x.shape={shapes['query_x']}."
        )
    task_axis = {k: s[0] for k, s in shapes.items() if s[0] is not None}
    if len(set(task_axis.values())) > 1:
        raise ValueError(
            "Expected the same number of tasks (axis 0) in support_x, "
            "support_y, query_x and the query targets. Received: "
            + ", ".join(f"{k}.shape={shapes[k]}" for k in shapes)
            + "."
        )
    pairs = [("support_x", "support_y")]
    if "query_y" in shapes:
        pairs.append(("query_x", "query_y"))
    for inputs, targets in pairs:
        a, b = shapes[inputs][1], shapes[targets][1]
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"Expected `{inputs}` and `{targets}` to hold the same number "
                f"of examples per task (axis 1). Received: "
                f"{inputs}.shape={shapes[inputs]}, "
                f"{targets}.shape={shapes[targets]}."
            )
    if shapes["support_x"][1] == 0:
        raise ValueError(
            "The support set is empty: adaptation needs at least one support "
            f"example per task. Received: support_x.shape="
            f"{shapes['support_x']}."
        )
    if shapes["query_x"][1] == 0:
        raise ValueError(
            "The query set is empty: it needs at least one query example per "
            f"task. Received: query_x.shape={shapes['query_x']}."
        )
    return Episode(
        tensors["support_x"],
        tensors["support_y"],
        tensors["query_x"],
        tensors.get("query_y"),
    )
