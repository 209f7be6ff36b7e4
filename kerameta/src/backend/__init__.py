"""The backend seam: the only package of kerameta that imports a framework.

`keras.config.backend()` is read once and the matching module's names are
re-exported, the way Keras picks its `Trainer`:

- `value_and_grad(fn, has_aux=False)`: gradient of `fn(params, *args)`.
- `per_task_value_and_grad(fn, create_graph, vectorize)`, `per_task_map`,
  `per_task_hvp`: map `fn(task_params, shared, *task_args)` (a task's
  loss) over the task axis, for value and gradient, outputs, or
  Hessian-vector products `(task_params, shared, vectors, *task_args)`.
- `vjp(fn, primals, cotangents)`, `custom_gradient(forward, backward)`:
  `forward(inputs, constants) -> (outputs, aux, residuals)`,
  `backward(residuals, constants, cotangents) -> input cotangents`;
  `recompute(fn, inputs, after)`: `fn(inputs)`, run only once `after` is
  computed and never merged with an identical earlier computation (what
  `vjp` does with its `fn` and cotangents).
- `enable_grad`, `no_grad`, `second_order_safe` (exact second derivatives
  of batch moments), `with_static_task_axis`, `random_scope(keys)` (seeds
  unseeded random ops from a call's seed states): no-ops where not needed.
- `fori_loop(lower, upper, body, carry)`: a loop rolled where compiled
  (reverse-differentiable: the trip count is static).
- `accumulate_over_tasks(fn)`: `fn(params, task, *args) -> (value, aux)`
  differentiated one task at a time (`task` its index, `args` its slices),
  returning `((sum of values, aux stacked), sum of gradients)`; one
  process only (no data parallelism).
- `map_over_tasks(fn)`: `fn(task, *args) -> outputs` run one task at a
  time, returning the outputs stacked (evaluation and prediction; nothing
  differentiates through it).
- `replica_count()`, `all_replicas_sum(x)` (differentiable),
  `replica_index()`: data parallelism where each replica runs the step on
  its shard of the tasks (TensorFlow's `tf.distribute`); 1, identity and 0
  where the step sees every task (one device, JAX's global arrays).
- `task_shards()`, `check_task_count(num_tasks)`: into how many shards a
  batch's task axis is split, and an error if `num_tasks` do not split
  evenly (JAX under a `keras.distribution`: its batch axis; 1 elsewhere).
- `compiled(fn, jit_compile)`: `fn`, compiled where the backend compiles
  parts of a step, not the whole step (PyTorch under `jit_compile=True`).
- `MetaTrainer`: `train_step` / `test_step` / `predict_step`.
"""

import contextlib

import keras

from kerameta.src.backend import task_loop

BACKEND = keras.config.backend()

# Defaults; the backend module imported below overrides what it needs.
enable_grad = no_grad = second_order_safe = contextlib.nullcontext


def with_static_task_axis(tensors, num_tasks):
    return tensors  # shapes are concrete outside TensorFlow


def random_scope(keys):
    return contextlib.nullcontext()  # random ops read the seed states


def compiled(fn, jit_compile):
    return fn  # JAX and TensorFlow compile the whole step


def fori_loop(lower, upper, body, carry):
    """`carry = body(i, carry)` for `i` in `range(lower, upper)`.

    Compiling backends roll it (one traced body; `i` is then a scalar
    tensor); here, a Python loop.
    """
    for i in range(lower, upper):
        carry = body(i, carry)
    return carry


def map_over_tasks(fn):
    """A Python loop over the tasks (the eager backends)."""
    return task_loop.mapped(fn, keras.ops.stack)


def replica_count():
    return 1  # the step sees every task of the batch


def all_replicas_sum(x):
    return x


def replica_index():
    return 0


def task_shards():
    return 1  # JAX: the size of a `keras.distribution`'s batch axis


def check_task_count(num_tasks):
    pass  # JAX: the tasks per batch split evenly over the batch axis


class SingleDeviceTrainer:
    """Runs the meta-step body (TF: inside Keras's `tf.function`)."""

    def train_step(self, data):
        return self._meta_train_step(data)

    def test_step(self, data):
        with enable_grad():  # the backend's, looked up when called
            return self._meta_test_step(data)

    def predict_step(self, data):
        with enable_grad():
            return self._meta_predict_step(data)


MetaTrainer = SingleDeviceTrainer  # the backend module may override it


if BACKEND == "jax":
    from kerameta.src.backend.jax import *  # noqa: F403
elif BACKEND == "tensorflow":
    from kerameta.src.backend.tensorflow import *  # noqa: F403
elif BACKEND == "torch":
    from kerameta.src.backend.torch import *  # noqa: F403
else:
    raise ValueError(
        "kerameta supports the Keras backends 'jax', 'tensorflow' and "
        f"'torch'. Received: KERAS_BACKEND={BACKEND!r}. Set the environment "
        "variable KERAS_BACKEND to one of them before importing keras."
    )
