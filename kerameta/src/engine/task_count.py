"""`StaticTaskCount`: checks the first batch, notes the tasks per batch.

Every backend: the first batch is checked on the host (see
`engine.first_batch`). On JAX under a `keras.distribution`, the first and
last batches must hold a multiple of the batch axis's devices in tasks.

On TensorFlow, the seam loops over the tasks of a batch in Python while
Keras traces its step, so the task count must be static; Keras's TF data
adapters declare the batch (task) axis as `None`. This mixin reads the
count from the data given to `fit`, `evaluate` or `predict` and stores it
(in `_static_tasks_per_batch`, by mode) for the step, which passes it to
`seam.with_static_task_axis` (each replica's share under `tf.distribute`).
On JAX and PyTorch shapes are concrete and the mixin does nothing.
Framework-free: `tf.data` datasets are recognised by their `element_spec`.
"""

import keras

from kerameta.src import backend as seam
from kerameta.src.engine import replicas
from kerameta.src.engine.first_batch import check_first_batch


def _tasks_per_batch(data, batch_size=None):
    """The number of tasks per batch of `data`, if it can be known."""
    if isinstance(data, keras.utils.PyDataset):
        data = data[0]
        if isinstance(data, (tuple, list)):
            data = data[0]
        return _tasks_per_batch(data)
    if hasattr(data, "element_spec"):  # a `tf.data.Dataset`
        spec = data.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        if isinstance(spec, dict) and "support_x" in spec:
            return keras.tree.flatten(spec["support_x"])[0].shape[0]
        return None
    if isinstance(data, (tuple, list)) and data:
        return _tasks_per_batch(data[0], batch_size)
    if isinstance(data, dict) and "support_x" in data:
        first = keras.tree.flatten(data["support_x"])[0]
        shape = getattr(first, "shape", None)
        num_tasks = None if shape is None else shape[0]
        num_tasks = None if num_tasks is None else int(num_tasks)
        if batch_size is None or num_tasks is None:
            return num_tasks
        if num_tasks <= batch_size:
            return num_tasks
        return batch_size if num_tasks % batch_size == 0 else None
    return None


def _check_equal_batches(data, batch_size) -> None:
    """TF traces one task count: every batch must have it."""
    if isinstance(data, keras.utils.PyDataset):
        try:
            last = len(data) - 1
        except TypeError:  # no length: an endless dataset
            return
        counts = {_tasks_per_batch(data[i]) for i in {0, max(last, 0)}}
        if len(counts - {None}) > 1:
            raise ValueError(
                "On the TensorFlow backend every batch must hold the same "
                "number of tasks (kerameta traces its task loop once), but "
                f"the first and last batches of this dataset hold "
                f"{sorted(counts - {None})} tasks. Serve full batches only "
                "(drop the remainder)."
            )
        return
    if not (isinstance(data, dict) and "support_x" in data):
        return
    shape = getattr(keras.tree.flatten(data["support_x"])[0], "shape", None)
    if not shape or shape[0] is None:
        return
    num_tasks, size = int(shape[0]), 32 if batch_size is None else batch_size
    if num_tasks > size and num_tasks % size:
        raise ValueError(
            "On the TensorFlow backend every batch must hold the same number "
            f"of tasks (kerameta traces its task loop once), but {num_tasks} "
            f"tasks in batches of {size} leave a last batch of "
            f"{num_tasks % size}. Pass a `batch_size` that divides "
            f"{num_tasks}, or drop the last {num_tasks % size} tasks."
        )


def _check_split_over_devices(data, batch_size) -> None:
    """The first and last batches' tasks split evenly over the devices.

    JAX under a `keras.distribution` only: else Keras fails deep in JAX
    when it splits a batch over the mesh's batch axis.
    """
    if seam.task_shards() == 1:
        return
    counts = set()
    if isinstance(data, keras.utils.PyDataset):
        try:
            last = len(data) - 1
        except (TypeError, NotImplementedError):  # an endless dataset
            last = 0
        counts = {_tasks_per_batch(data[i]) for i in {0, last} if last >= 0}
    elif isinstance(data, dict) and "support_x" in data:
        first = keras.tree.flatten(data["support_x"])[0]
        if getattr(first, "shape", None) and first.shape[0] is not None:
            num_tasks, size = int(first.shape[0]), batch_size or 32
            counts = {min(num_tasks, size), num_tasks % size or size}
    for count in sorted(counts - {None, 0}):
        seam.check_task_count(count)


class StaticTaskCount:
    """Mixin for a `keras.Model`: checks the first batch on the host, and
    notes the tasks per batch (TF only)."""

    def _remember_tasks_per_batch(self, mode, data, y=None, batch_size=None):
        check_first_batch(self, mode, data, y, batch_size)
        _check_split_over_devices(data, batch_size)
        if keras.config.backend() != "tensorflow":
            return
        _check_equal_batches(data, batch_size)
        hints = self.__dict__.setdefault("_static_tasks_per_batch", {})
        num_tasks = _tasks_per_batch(data, batch_size)
        # Under `tf.distribute` each replica traces with its share of the
        # tasks (the step divides); a batch must split evenly.
        strategy = getattr(self, "distribute_strategy", None)
        replica_count = getattr(strategy, "num_replicas_in_sync", 1)
        if num_tasks is not None:
            replicas.check_divisible(num_tasks, replica_count)
        if hints.get(mode) != num_tasks:
            hints[mode] = num_tasks
            # A traced step holds the old task count: trace again.
            setattr(self, f"{mode}_function", None)

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        self._remember_tasks_per_batch("train", x, y, batch_size)
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            vx, vy = validation_data, None
            if isinstance(validation_data, tuple):
                vx, vy = (validation_data + (None,))[:2]
            self._remember_tasks_per_batch(
                "test", vx, vy, kwargs.get("validation_batch_size")
            )
        return super().fit(x, y, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        self._remember_tasks_per_batch("test", x, y, batch_size)
        return super().evaluate(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        self._remember_tasks_per_batch("predict", x, None, batch_size)
        return super().predict(x, batch_size, *args, **kwargs)
