"""JAX side of the seam: `jax.vmap` / `jax.lax.map` and a stateless trainer."""

import functools

import jax
import jax.numpy as jnp
from keras import StatelessScope

from kerameta.src.backend.jax_cpu_kernels import loop_friendly_ops
from kerameta.src.backend.jax_distribution import check_task_count  # noqa: F401
from kerameta.src.backend.jax_distribution import shard_tasks
from kerameta.src.backend.jax_distribution import task_shards  # noqa: F401

value_and_grad = jax.value_and_grad
# Static bounds: `scan`, reverse-differentiable.
fori_loop = jax.lax.fori_loop


def vjp(fn, primals, cotangents):
    primals, cotangents = list(primals), list(cotangents)

    def product(primals, cotangents):
        _, pullback = jax.vjp(fn, primals)
        (result,) = pullback(cotangents)
        return list(result)

    anchor = next((c for c in cotangents if c.size), None)
    if anchor is None or not isinstance(anchor, jax.core.Tracer):
        return product(primals, cotangents)
    # Under `jit`, XLA could run `fn` early, merge it with the forward
    # pass (CSE), hoist its buffers or fuse the cotangent chain across
    # steps: memory would grow with the steps again. XLA:CPU drops
    # `optimization_barrier`, so instead the primals depend on the
    # cotangents (`+ 0 * c`, never simplified for floats) and `fn` runs in
    # a `cond` branch (never hoisted from nor fused across) whose
    # predicate is always true, which XLA cannot prove.
    scalar = jax.lax.stop_gradient(jnp.ravel(anchor)[0])
    zero = 0 * jnp.where(jnp.isfinite(scalar), scalar, 0)
    primals = [
        p + zero.astype(p.dtype) if jnp.issubdtype(p.dtype, jnp.inexact) else p
        for p in primals
    ]
    bits = jax.lax.bitcast_convert_type(zero.astype("float32"), "int32")
    return jax.lax.cond(
        (bits | 1) != 0,
        product,
        lambda primals, _: [jnp.zeros_like(p) for p in primals],
        primals,
        cotangents,
    )


def custom_gradient(forward, backward):
    # Everything the rule reads comes in as an argument: `jax.custom_vjp`
    # must not close over tracers (the episode is traced under `jit`).
    @jax.custom_vjp
    def call(inputs, constants):
        outputs, aux, _ = forward(inputs, constants)
        return outputs, aux

    def call_fwd(inputs, constants):
        outputs, aux, residuals = forward(inputs, constants)
        return (outputs, aux), (residuals, constants)

    def call_bwd(saved, cotangents):
        residuals, constants = saved
        input_cotangents = backward(residuals, constants, cotangents[0])
        # `None`: no cotangent for the constants (integer labels included).
        return list(input_cotangents), [None] * len(constants)

    call.defvjp(call_fwd, call_bwd)

    def wrapped(inputs, constants):
        outputs, aux = call(list(inputs), list(constants))
        return list(outputs), [jax.lax.stop_gradient(a) for a in aux]

    return wrapped


def _over_tasks(fn, vectorize, params, shared, *args):
    if vectorize:  # keeps a distribution's task sharding by itself
        in_axes = (0, None) + (0,) * len(args)
        return jax.vmap(fn, in_axes=in_axes)(params, shared, *args)

    # `lax.map` traces the task body once (compile time flat in the tasks);
    # its `while` body needs `jax_cpu_kernels` for fast convolutions.
    def loop(params, shared, *args):
        with loop_friendly_ops():
            pack = (params, *args)
            return jax.lax.map(lambda a: fn(a[0], shared, *a[1:]), pack)

    return shard_tasks(loop, params, shared, *args)  # a device's own tasks


def per_task_value_and_grad(fn, create_graph=True, vectorize=True):
    del create_graph  # first order is the caller's `stop_gradient`
    return functools.partial(_over_tasks, jax.value_and_grad(fn), vectorize)


def per_task_map(fn, vectorize=True):
    return functools.partial(_over_tasks, fn, vectorize)


def per_task_hvp(fn, vectorize=True):
    def task_hvp(params, shared, vectors, *task_args):
        def directional(p):
            grads = jax.grad(fn)(p, shared, *task_args)
            return sum(jnp.vdot(g, v) for g, v in zip(grads, vectors))

        # Reverse over reverse: `jax_cpu_kernels` defines no JVPs.
        return jax.grad(directional)(params)

    def wrapped(task_params, shared, vectors, *task_args):
        task_params, vectors = jax.lax.stop_gradient((task_params, vectors))
        products = _over_tasks(
            task_hvp, vectorize, task_params, shared, vectors, *task_args
        )
        return [jax.lax.stop_gradient(p) for p in products]

    return wrapped


def _stateless(groups, state, step, data):
    """Runs `step(data)` with each group of variables mapped to its values."""
    pairs = [list(zip(group, values)) for group, values in zip(groups, state)]
    with StatelessScope(state_mapping=sum(pairs, [])) as scope:
        outputs = step(data)

    read = scope.get_current_value
    return outputs, [
        [value if read(v) is None else read(v) for v, value in group]
        for group in pairs
    ]


class MetaTrainer:
    """Maps Keras's JAX state tuples onto the shared meta-step body."""

    def _groups(self, *more):
        return [self.trainable_variables, self.non_trainable_variables, *more]

    def train_step(self, state, data):
        groups = self._groups(self.optimizer.variables, self.metrics_variables)
        logs, state = _stateless(groups, state, self._meta_train_step, data)
        return logs, tuple(state)

    def test_step(self, state, data):
        groups = self._groups(self.metrics_variables)
        logs, state = _stateless(groups, state, self._meta_test_step, data)
        return logs, tuple(state)

    def predict_step(self, state, data):
        outputs, state = _stateless(
            self._groups(), state, self._meta_predict_step, data
        )
        return outputs, state[1]  # the non-trainable values
