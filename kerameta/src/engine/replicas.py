"""Statistics of the whole batch of tasks under data parallelism.

Under TensorFlow's `tf.distribute` (and PyTorch's DDP) each replica runs
the meta-step on its shard of the batch: its task axis holds `local =
tasks / replicas` tasks. Whatever the engine computes over the whole batch
goes through these functions, built on the seam's `replica_count`,
`all_replicas_sum` and `replica_index`, so that every replica sees the
statistic of all tasks, as on one device. Each replica's objective is its
own share (weights `1 / tasks`), so that the sum of the replicas'
meta-gradients, which the optimizer applies, is the one-device
meta-gradient. With one replica (one device, or JAX's global arrays)
every function is the plain single-device computation.
"""

from keras import ops

from kerameta.src import backend as seam
from kerameta.src.types import Tensor


def num_tasks(local: int) -> int:
    """The number of tasks of the whole batch, from a replica's shard."""
    return int(local) * seam.replica_count()


def check_divisible(num_tasks: int, replicas: int) -> None:
    """Raises unless a batch of `num_tasks` splits evenly over `replicas`."""
    if num_tasks % replicas:
        raise ValueError(
            f"Data parallelism over {replicas} replicas splits each batch of "
            f"tasks evenly between them, but a batch holds {num_tasks} "
            "tasks. Use a number of tasks per batch (`tasks_per_batch` or "
            f"`batch_size`) that is a multiple of {replicas}."
        )


def task_sum(x: Tensor) -> Tensor:
    """The sum over every task of the batch of `x` (leading task axis)."""
    return seam.all_replicas_sum(ops.sum(x, axis=0))


def task_mean(x: Tensor) -> Tensor:
    """The mean over every task of the batch of `x` (leading task axis).

    Not `ops.mean`: on JAX and PyTorch it averages float64 in float32.
    """
    return task_sum(x) / num_tasks(x.shape[0])


def gather_tasks(x: Tensor) -> Tensor:
    """Every task's slice of `x`, `(tasks, ...)`, from a replica's shard.

    Replica `r`'s shard fills rows `r * local` to `(r + 1) * local` of a
    zero matrix, which the replicas then sum: every replica receives the
    same, exact, copy of the batch.
    """
    replicas = seam.replica_count()
    if replicas == 1:
        return x
    local = x.shape[0]
    slot = ops.equal(ops.arange(replicas), seam.replica_index())
    slot = ops.reshape(slot, (replicas,) + (1,) * len(x.shape))
    # `where`, not a product with a one-hot mask: `0 * inf` is NaN.
    padded = ops.where(slot, ops.expand_dims(x, 0), ops.zeros((), x.dtype))
    total = seam.all_replicas_sum(padded)
    return ops.reshape(total, (replicas * local, *x.shape[1:]))


def local_tasks(x: Tensor, local: int) -> Tensor:
    """This replica's `local` rows of a whole-batch `x` (`gather_tasks`'s
    inverse)."""
    replicas = seam.replica_count()
    if replicas == 1:
        return x
    shards = ops.reshape(x, (replicas, local, *x.shape[1:]))
    return ops.take(shards, seam.replica_index(), axis=0)


def all_agree(flag: Tensor) -> Tensor:
    """Whether a boolean scalar is true on every replica (one answer)."""
    if seam.replica_count() == 1:
        return flag
    refusals = seam.all_replicas_sum(ops.cast(ops.logical_not(flag), "float32"))
    return ops.equal(refusals, 0.0)
