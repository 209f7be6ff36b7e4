"""The task axis under a `keras.distribution` (JAX seam-internal).

Keras's JAX trainer shards every array of a batch along the mesh's batch
axis (`distribution.batch_dim_name`), so a batch's task axis is split over
that axis's devices. The vectorized path (`jax.vmap`) keeps that sharding
by itself (XLA's sharding propagation reads the mapped axis as a batch
axis). A `lax.map` loop does not: XLA cannot split a loop's iterations, so
it would gather every task onto every device and each device would run the
whole batch. `shard_tasks` wraps the loop in `jax.shard_map` over the batch
axis alone: each device loops over its own tasks, and the other mesh axes
(`ModelParallel`'s model axis) stay under XLA's automatic sharding, so
weight layouts from a `LayoutMap` are respected.
"""

import jax
import keras
from jax.sharding import PartitionSpec


def task_axis() -> tuple[object, str, int] | None:
    """`(jax mesh, batch axis name, its size)`, or `None` if not split."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mesh = distribution.device_mesh
    name = distribution.batch_dim_name
    size = int(mesh.shape[list(mesh.axis_names).index(name)])
    return (mesh.backend_mesh, name, size) if size > 1 else None


def task_shards() -> int:
    """Into how many shards a batch's task axis is split (1: none)."""
    axis = task_axis()
    return 1 if axis is None else axis[2]


def check_task_count(num_tasks: int) -> None:
    """Raises if `num_tasks` cannot be split evenly over the batch axis."""
    axis = task_axis()
    if axis is None or num_tasks % axis[2] == 0:
        return
    _, name, size = axis
    raise ValueError(
        "Under a `keras.distribution`, the tasks of a batch are split over "
        f"the device mesh's batch axis {name!r}, which has {size} devices, "
        f"so the number of tasks per batch must be a multiple of {size}. "
        f"Received: a batch of {num_tasks} tasks. Use a `tasks_per_batch` "
        f"(or `batch_size`) divisible by {size}, drop the last incomplete "
        "batch, or give the distribution a mesh whose batch axis divides "
        "the tasks per batch."
    )


def shard_tasks(loop, params, shared, *args):
    """`loop(params, shared, *args)`, each device looping over its tasks.

    `params` and `args` have the task axis first; `shared` is the same for
    every task. Outside a distribution, on a one-device batch axis, or
    when the tasks do not split evenly, `loop` runs as it is.
    """
    axis, leaves = task_axis(), jax.tree.leaves((params, args))
    if axis is None or not leaves or leaves[0].shape[0] % axis[2]:
        # E.g. `adapt`'s one task: the data are not split (`fit`, `evaluate`
        # and `predict` check their batches first, in `engine.task_count`).
        return loop(params, shared, *args)
    mesh, name, _ = axis

    def local(params, shared, *args):
        # The shared values meet each device's own tasks as device-varying
        # values, whose cotangents the transpose sums over the batch axis,
        # also through custom VJPs (the CPU kernels), which would otherwise
        # return varying cotangents for invariant inputs (a JAX error).
        return loop(params, _varying(shared, name), *args)

    tasks, same = PartitionSpec(name), PartitionSpec()
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(tasks, same) + (tasks,) * len(args),
        out_specs=tasks,
        axis_names={name},
    )(params, shared, *args)


def _varying(tree, name):
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(tree, name, to="varying")
    return jax.lax.pvary(tree, name)  # jax < 0.8.2
