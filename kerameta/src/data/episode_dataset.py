"""Episodes held in NumPy arrays."""

from typing import Any

import numpy as np

from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise ValueError(
            f"Expected `{name}` to be an array shaped (num_tasks, examples, "
            "...), with as many examples in every task. Received a ragged "
            f"nested sequence ({error}). Give every task the same number of "
            "examples (drop or pad the extra ones)."
        ) from None
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        hint = (
            " (string labels map to integers with `np.unique(labels, "
            "return_inverse=True)[1]`)"
            if name.endswith("_y")
            else ""
        )
        raise ValueError(
            f"Expected `{name}` to hold real numbers. Received: {name} of "
            f"dtype {array.dtype}. Convert it to a numeric array first"
            f"{hint}."
        )
    return array


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = _first_index(bad)
        raise ValueError(
            f"Expected finite values in `{name}`. Received: {int(bad.sum())} "
            f"NaN or infinite values, the first at index {index} (task "
            f"{index[0]}). Fix or drop the episodes that hold them."
        )


def _check_class_ids(name: str, labels: np.ndarray, num_classes: int) -> None:
    """Sparse labels: integers in [0, num_classes), one per example."""
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise ValueError(
            f"With `num_classes`, expected `{name}` to hold one class id per "
            "example, shaped (num_tasks, examples) or (num_tasks, examples, "
            f"1). Received: {name}.shape={labels.shape}. For one-hot labels, "
            f"pass `{name}.argmax(-1)`, or leave `num_classes=None` (no "
            "label check)."
        )
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Expected `{name}` to hold integer class ids in [0, "
            f"num_classes) = [0, {num_classes}). Received: {name} of dtype "
            f"{labels.dtype} (first values: {labels.ravel()[:5].tolist()}); "
            "a sparse loss would truncate them. If they are whole numbers, "
            f"pass `{name}.astype('int32')`; for regression targets, leave "
            "`num_classes=None`."
        )
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        values = np.unique(labels[outside])
        shown = ", ".join(str(v) for v in values[:5].tolist())
        task, example = _first_index(outside)
        raise ValueError(
            f"Expected `{name}` to hold class ids in [0, num_classes) = "
            f"[0, {num_classes}). Received: {int(outside.sum())} labels "
            f"outside it, with values {shown}"
            f"{', ...' if len(values) > 5 else ''} (the first at task "
            f"{task}, example {example}). Number the classes of each task "
            f"0..{num_classes - 1} (as `kerameta.data.FewShotTasks` does), "
            "or pass the right `num_classes`."
        )


class EpisodeDataset(TaskBatches):
    """A `PyDataset` over episodes already held in NumPy arrays.

    Use it for episodes you built yourself (or saved to disk): it checks
    their shapes once, then serves batches of `tasks_per_batch` tasks in the
    episode format that `kerameta.MAML` takes. A final partial batch is
    dropped, so every batch has the same number of tasks (needed on the
    TensorFlow backend).

    Args:
        support_x: `(num_tasks, shots, *features)`.
        support_y: `(num_tasks, shots, ...)`.
        query_x: `(num_tasks, query_shots, *features)`.
        query_y: `(num_tasks, query_shots, ...)`, or `None` for prediction
            only.
        tasks_per_batch: tasks in one batch. Defaults to `1`.
        shuffle: serve the tasks in a new order each epoch (seeded).
            Defaults to `False`.
        seed: seed of the shuffle. Defaults to `0`.
        num_classes: for classification episodes with a sparse loss, the
            number of classes per task (the model's output units): then
            `support_y` and `query_y` must hold integer class ids in `[0,
            num_classes)`, shaped `(num_tasks, examples)` or `(num_tasks,
            examples, 1)`, checked here. Defaults to `None`: no label
            check (regression, one-hot targets).
        **kwargs: `keras.utils.PyDataset` arguments.

    Example:

    ```python
    episodes = kerameta.data.EpisodeDataset(
        support_x, support_y, query_x, query_y, tasks_per_batch=4
    )
    maml.evaluate(episodes)
    ```
    """

    def __init__(
        self,
        support_x: Any,
        support_y: Any,
        query_x: Any,
        query_y: Any = None,
        tasks_per_batch: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        arrays = {
            "support_x": _as_array("support_x", support_x),
            "support_y": _as_array("support_y", support_y),
            "query_x": _as_array("query_x", query_x),
        }
        if query_y is not None:
            arrays["query_y"] = _as_array("query_y", query_y)
        num_tasks = {
            k: a.shape[0] if a.ndim else None for k, a in arrays.items()
        }
        if len(set(num_tasks.values())) != 1 or None in num_tasks.values():
            raise ValueError(
                "Expected every array to hold the same number of tasks along "
                "axis 0. Received shapes: "
                + ", ".join(f"{k}={a.shape}" for k, a in arrays.items())
            )
        total = next(iter(num_tasks.values()))
        self.tasks_per_batch = check_positive_int(
            "tasks_per_batch", tasks_per_batch
        )
        if total < self.tasks_per_batch:
            raise ValueError(
                f"`tasks_per_batch` ({self.tasks_per_batch}) is larger than "
                f"the number of tasks ({total}). Lower `tasks_per_batch`."
            )
        from kerameta.src.episodes import validate_episode

        # Validate the format on the first task only (cheap).
        try:
            validate_episode(
                {
                    k: arrays[k][:1]
                    for k in ("support_x", "support_y", "query_x")
                },
                arrays["query_y"][:1] if "query_y" in arrays else None,
                require_query_y=False,
            )
        except ValueError as error:
            shapes = ", ".join(f"{k}={a.shape}" for k, a in arrays.items())
            raise ValueError(
                f"{error} (Checked on the first task; the arrays passed to "
                f"`EpisodeDataset` have shapes {shapes}.)"
            ) from None
        for key, array in arrays.items():
            _check_finite(key, array)
        if num_classes is not None:
            num_classes = check_positive_int("num_classes", num_classes)
            for key in ("support_y", "query_y"):
                if key in arrays:
                    _check_class_ids(key, arrays[key], num_classes)
        self.num_classes = num_classes
        super().__init__(total // self.tasks_per_batch, seed, shuffle, **kwargs)
        self.arrays = arrays
        self.shuffle = bool(shuffle)
        self.num_tasks = total

    def __getitem__(self, index: int):
        rng = self.rng(index)
        del rng
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(
                self.num_tasks
            )
        else:
            order = np.arange(self.num_tasks)
        start = index * self.tasks_per_batch
        take = order[start : start + self.tasks_per_batch]
        x = {
            k: self.arrays[k][take]
            for k in ("support_x", "support_y", "query_x")
        }
        if "query_y" in self.arrays:
            return x, self.arrays["query_y"][take]
        return (x,)
