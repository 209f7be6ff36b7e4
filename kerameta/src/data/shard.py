"""One process's share of every task batch, for data parallelism."""

from typing import Any

import keras

from kerameta.src import backend as seam
from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches


def shard_tasks(
    dataset: keras.utils.PyDataset,
    num_shards: int | None = None,
    index: int | None = None,
) -> "ShardedTasks":
    """Keeps shard `index` of the tasks of every batch of `dataset`.

    For data parallelism with one process per device (PyTorch's `torchrun`):
    batch `i` of the result holds tasks `[index * n, (index + 1) * n)` of
    batch `i` of `dataset`, with `n = tasks_per_batch // num_shards`. The
    batches keep their order and are not reshuffled, so the shards of all
    processes put together are exactly the batches one device would see,
    and a distributed step matches a single-device one. Every process draws
    the whole batch and keeps its shard: the datasets of `kerameta.data`
    give the same batch `i` everywhere from the same `seed`.

    Like `tf.data.Dataset.shard`, but along the task axis of each batch
    rather than over batches.

    Args:
        dataset: a `keras.utils.PyDataset` of episode batches `(x, query_y)`
            (such as a `kerameta.data` dataset) whose task count is a
            multiple of `num_shards`.
        num_shards: how many shards to cut each batch into. Defaults to
            the number of processes of PyTorch's initialized process group
            (`torch.distributed.get_world_size()`), else 1.
        index: which shard to keep, in `[0, num_shards)`. Defaults to this
            process's rank (`torch.distributed.get_rank()`), else 0.

    Returns:
        A `keras.utils.PyDataset` with as many batches as `dataset`.

    Example:

    ```python
    torch.distributed.init_process_group()  # in a script run by torchrun
    tasks = kerameta.data.SinusoidTasks(
        shots=10, tasks_per_batch=32, num_batches=100, seed=1
    )
    maml.fit(kerameta.data.shard_tasks(tasks), epochs=10)  # 16 tasks each
    ```
    """
    if not isinstance(dataset, keras.utils.PyDataset):
        raise ValueError(
            "`shard_tasks` expects a `keras.utils.PyDataset` of episode "
            "batches, such as a `kerameta.data` dataset. Received: "
            f"dataset of type {type(dataset).__name__}. Wrap arrays of "
            "episodes in `kerameta.data.EpisodeDataset` first."
        )
    if num_shards is None:
        num_shards = seam.replica_count() if seam.BACKEND == "torch" else 1
    num_shards = check_positive_int("num_shards", num_shards)
    if index is None:
        index = seam.replica_index() if seam.BACKEND == "torch" else 0
    index = check_positive_int("index", index, allow_zero=True)
    if not 0 <= index < num_shards:
        raise ValueError(
            f"`index` must be in [0, num_shards) = [0, {num_shards}). "
            f"Received: index={index}."
        )
    tasks = getattr(dataset, "tasks_per_batch", None)
    if isinstance(tasks, int):
        _check_divisible(tasks, num_shards)
    return ShardedTasks(dataset, num_shards, index)


def _check_divisible(tasks: int, num_shards: int) -> None:
    if tasks % num_shards:
        raise ValueError(
            f"`shard_tasks` cuts each batch's {tasks} tasks into "
            f"{num_shards} equal shards, but {tasks} is not a multiple of "
            f"{num_shards}. Use a `tasks_per_batch` that is a multiple of "
            "the number of processes, e.g. "
            f"{num_shards * max(1, tasks // num_shards)}."
        )


class ShardedTasks(TaskBatches):
    """Shard `index` of the tasks of each batch (see `shard_tasks`)."""

    def __init__(
        self, dataset: keras.utils.PyDataset, num_shards: int, index: int
    ) -> None:
        # Not `TaskBatches.__init__`: the wrapped dataset draws the tasks.
        keras.utils.PyDataset.__init__(
            self,
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.num_shards = num_shards
        self.index = index
        tasks = getattr(dataset, "tasks_per_batch", None)
        if isinstance(tasks, int):
            self.tasks_per_batch = tasks // num_shards

    # `fit` numbers the epochs of `kerameta.data` datasets (SetTaskEpoch).
    @property
    def epoch(self) -> int:
        return getattr(self.dataset, "epoch", 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        if isinstance(self.dataset, TaskBatches):
            self.dataset.epoch = value

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        batch = self.dataset[index]
        tasks = keras.tree.flatten(batch)[0].shape[0]
        _check_divisible(tasks, self.num_shards)
        size = tasks // self.num_shards
        start = self.index * size
        return keras.tree.map_structure(
            lambda array: array[start : start + size], batch
        )

    def on_epoch_begin(self) -> None:
        self.dataset.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.dataset.on_epoch_end()
