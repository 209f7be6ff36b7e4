"""Shared plumbing of the episode datasets."""

from typing import Any

import keras
import numpy as np

from kerameta.src.checks import check_positive_int


class TaskBatches(keras.utils.PyDataset):
    """A `PyDataset` of episode batches, each a pure function of its index.

    Batch `index` of epoch `e` is drawn from a generator seeded with
    `(seed, e, index)` when `new_tasks_each_epoch=True`, else with
    `(seed, index)`: batches can be produced in any order, by any worker, and
    the same seed always gives the same tasks.
    """

    def __init__(
        self,
        num_batches: int,
        seed: int,
        new_tasks_each_epoch: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_batches_ = check_positive_int("num_batches", num_batches)
        if (
            isinstance(seed, bool)
            or not isinstance(seed, (int, np.integer))
            or seed < 0
        ):
            raise ValueError(
                "`seed` must be a non-negative integer (NumPy's generators "
                f"take no negative seeds). Received: seed={seed!r}"
            )
        self.seed = int(seed)
        self.new_tasks_each_epoch = bool(new_tasks_each_epoch)
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_batches_

    def rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.num_batches_:
            raise IndexError(
                f"Batch index {index} is out of range for a dataset of "
                f"{self.num_batches_} batches."
            )
        if self.new_tasks_each_epoch:
            return np.random.default_rng([self.seed, self.epoch, index])
        return np.random.default_rng([self.seed, index])

    def on_epoch_end(self) -> None:
        if self.new_tasks_each_epoch:
            self.epoch += 1
