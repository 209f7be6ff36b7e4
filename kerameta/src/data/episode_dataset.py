"""Episodes held in NumPy arrays."""

from typing import Any

import numpy as np

from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches


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
        **kwargs: Any,
    ) -> None:
        arrays = {
            "support_x": np.asarray(support_x),
            "support_y": np.asarray(support_y),
            "query_x": np.asarray(query_x),
        }
        if query_y is not None:
            arrays["query_y"] = np.asarray(query_y)
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
