"""JAX side of the seam: `jax.vmap` / `jax.lax.map` and a stateless trainer."""

import contextlib

import jax
from keras import StatelessScope

REMAT_OF_GRADIENTS = True


def value_and_grad(fn, has_aux=False):
    return jax.value_and_grad(fn, has_aux=has_aux)


def _over_tasks(fn, vectorize, num_task_args):
    if vectorize:
        in_axes = (0, None) + (0,) * num_task_args
        return lambda params, shared, *args: jax.vmap(fn, in_axes=in_axes)(
            params, shared, *args
        )

    # `lax.map` traces the task body once: compile time stays flat in the
    # number of tasks, and convolutions keep their ordinary (fast) kernels.
    def looped(params, shared, *args):
        return jax.lax.map(lambda a: fn(a[0], shared, *a[1:]), (params, *args))

    return looped


def per_task_value_and_grad(fn, create_graph=True, vectorize=True):
    del create_graph  # JAX differentiates anything; first order is the
    # caller's `stop_gradient`.
    grad_fn = jax.value_and_grad(fn)

    def wrapped(task_params, shared, *task_args):
        return _over_tasks(grad_fn, vectorize, len(task_args))(
            task_params, shared, *task_args
        )

    return wrapped


def per_task_map(fn, vectorize=True):
    def wrapped(task_params, shared, *task_args):
        return _over_tasks(fn, vectorize, len(task_args))(
            task_params, shared, *task_args
        )

    return wrapped


enable_grad = contextlib.nullcontext
no_grad = contextlib.nullcontext
second_order_safe = contextlib.nullcontext


def _stateless(groups, body):
    """Runs `body()` with each `(variables, values)` group mapped in."""
    mapping = [
        (variable, value)
        for variables, values in groups
        for variable, value in zip(variables, values)
    ]
    with StatelessScope(state_mapping=mapping) as scope:
        outputs = body()
    new_groups = []
    for variables, values in groups:
        new_values = []
        for variable, value in zip(variables, values):
            current = scope.get_current_value(variable)
            new_values.append(value if current is None else current)
        new_groups.append(new_values)
    return outputs, new_groups


def with_static_task_axis(tensors, num_tasks):
    del num_tasks  # shapes are always concrete here
    return tensors


class MetaTrainer:
    """Maps Keras's JAX state tuples onto the shared meta-step body."""

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        groups = [
            (self.trainable_variables, trainable),
            (self.non_trainable_variables, non_trainable),
            (self.optimizer.variables, optimizer_vars),
            (self.metrics_variables, metrics_vars),
        ]
        logs, new_groups = _stateless(
            groups, lambda: self._meta_train_step(data)
        )
        return logs, tuple(new_groups)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_vars = state
        groups = [
            (self.trainable_variables, trainable),
            (self.non_trainable_variables, non_trainable),
            (self.metrics_variables, metrics_vars),
        ]
        logs, new_groups = _stateless(
            groups, lambda: self._meta_test_step(data)
        )
        return logs, tuple(new_groups)

    def predict_step(self, state, data):
        trainable, non_trainable = state
        groups = [
            (self.trainable_variables, trainable),
            (self.non_trainable_variables, non_trainable),
        ]
        outputs, new_groups = _stateless(
            groups, lambda: self._meta_predict_step(data)
        )
        return outputs, new_groups[1]
