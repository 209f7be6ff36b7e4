"""JAX side of the seam: `jax.vmap` / `jax.lax.map` and a stateless trainer."""

import functools

import jax
import jax.numpy as jnp
from keras import StatelessScope

from kerameta.src.backend.jax_cpu_kernels import CpuLibraryChoices
from kerameta.src.backend.jax_cpu_kernels import loop_friendly_ops
from kerameta.src.backend.jax_distribution import check_task_count  # noqa: F401
from kerameta.src.backend.jax_distribution import shard_tasks
from kerameta.src.backend.jax_distribution import task_shards  # noqa: F401

value_and_grad = jax.value_and_grad


def fori_loop(lower, upper, body, carry):
    if upper <= lower:  # no step: nothing to trace
        return carry
    # Static bounds: `scan`, reverse-differentiable.
    return jax.lax.fori_loop(lower, upper, body, carry)


def accumulate_over_tasks(fn):
    """A `scan` over the tasks: one task's residuals live at a time."""
    grad_fn = jax.value_and_grad(fn, has_aux=True)

    def wrapped(params, *task_args):
        count = task_args[0].shape[0]

        def body(total, xs):
            task, args = xs
            with loop_friendly_ops():  # convolutions in a `while` body
                (value, aux), grads = grad_fn(params, task, *args)
            value = value.astype(total[0].dtype)
            return jax.tree.map(jnp.add, total, (value, grads)), aux

        zeros = [jnp.zeros_like(p) for p in params]
        total = (jnp.zeros((), params[0].dtype), zeros)
        (value, grads), aux = jax.lax.scan(
            body, total, (jnp.arange(count), list(task_args))
        )
        return (value, aux), grads

    return wrapped


def map_over_tasks(fn):
    """A `lax.map` over the tasks: one task's activations live at a time."""

    def wrapped(*task_args):
        def body(xs):
            task, args = xs
            with loop_friendly_ops():  # convolutions in a `while` body
                return fn(task, *args)

        count = task_args[0].shape[0]
        return jax.lax.map(body, (jnp.arange(count), list(task_args)))

    return wrapped


def recompute(fn, inputs, after):
    inputs = list(inputs)
    anchor = next((a for a in after if a.size), None)
    if anchor is None or not isinstance(anchor, jax.core.Tracer):
        return list(fn(inputs))
    # Under `jit`, XLA could run `fn` early, merge it with the forward
    # pass (CSE), hoist its buffers or fuse the cotangent chain across
    # steps: memory would grow with the steps again. XLA:CPU drops
    # `optimization_barrier`, so instead the inputs depend on `after`
    # (`+ 0 * a`, never simplified for floats) and `fn` runs in a `cond`.
    zero = _zero(anchor)
    inputs = [
        p + zero.astype(p.dtype) if jnp.issubdtype(p.dtype, jnp.inexact) else p
        for p in inputs
    ]
    return _in_branch(zero, lambda inputs: list(fn(inputs)), inputs)


def _zero(anchor):
    scalar = jax.lax.stop_gradient(jnp.ravel(anchor)[0])
    return 0 * jnp.where(jnp.isfinite(scalar), scalar, 0)


def _in_branch(zero, fn, inputs):
    # `fn(inputs)` in a `cond` branch (never hoisted from nor fused across,
    # its buffers allocated when it runs) whose predicate is always true,
    # which XLA cannot prove.
    bits = jax.lax.bitcast_convert_type(zero.astype("float32"), "int32")
    shapes = jax.eval_shape(fn, inputs)
    return jax.lax.cond(
        (bits | 1) != 0,
        fn,
        lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
        inputs,
    )


def vjp(fn, primals, cotangents):
    def product(primals):
        _, pullback = jax.vjp(fn, list(primals))
        (result,) = pullback(list(cotangents))
        return list(result)

    return recompute(product, primals, cotangents)


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


def _over_tasks(fn, vectorize, params, shared, *args, constant=False):
    if vectorize:  # keeps a distribution's task sharding by itself
        in_axes = (0, None) + (0,) * len(args)
        return jax.vmap(fn, in_axes=in_axes)(params, shared, *args)

    # A `while` loop traces the task body once (compile time flat in the
    # tasks); its body needs `jax_cpu_kernels` for fast convolutions.
    def loop(params, shared, *args):
        with loop_friendly_ops():
            xs = (params, *args)
            map_tasks = functools.partial(
                jax.lax.map, lambda a: fn(a[0], shared, *a[1:])
            )
            if not constant or not isinstance(params[0], jax.core.Tracer):
                return map_tasks(xs)
            # `lax.map` zero-fills its outputs first. The fills read
            # nothing, so XLA runs them all at the start: each inner step's
            # outputs would be live at once. In a branch they wait for the
            # inputs (not under differentiation, whose residuals would then
            # be copied).
            return _in_branch(_zero(params[0]), map_tasks, xs)

    return shard_tasks(loop, params, shared, *args)  # a device's own tasks


def per_task_value_and_grad(fn, create_graph=True, vectorize=True):
    # First order is the caller's `stop_gradient`.
    return functools.partial(
        _over_tasks,
        jax.value_and_grad(fn),
        vectorize,
        constant=not create_graph,
    )


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


class MetaTrainer(CpuLibraryChoices):
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
