"""JAX side of the seam: `jax.vmap` / `jax.lax.map` and a stateless trainer."""

import contextlib
import functools
import itertools
import math

import jax
import jax.numpy as jnp
from keras import StatelessScope
from keras.src.backend import standardize_data_format
from keras.src.backend.jax import nn as keras_jax_nn

REMAT_OF_GRADIENTS = True


def value_and_grad(fn, has_aux=False):
    return jax.value_and_grad(fn, has_aux=has_aux)


def vjp(fn, primals, cotangents):
    primals, cotangents = list(primals), list(cotangents)

    def product(primals, cotangents):
        _, pullback = jax.vjp(fn, primals)
        (result,) = pullback(cotangents)
        return list(result)

    anchor = next((c for c in cotangents if c.size), None)
    if anchor is None or not isinstance(anchor, jax.core.Tracer):
        return product(primals, cotangents)
    # Traced (under `jit`), XLA would be free to run `fn` early, merge it
    # with the forward pass's identical computation (common
    # subexpressions), hoist its buffers (a `lax.map`'s stacks) to the
    # start of the program and fuse the cotangent chain across steps: each
    # keeps one step's activations (or one more copy of the weights) alive
    # per step, and memory grows with the steps again. XLA:CPU drops
    # `optimization_barrier` (what `jax.checkpoint` relies on) before
    # merging, so instead the primals get a data dependency on the
    # cotangents (`+ 0 * c`, never simplified for floats) and `fn` runs in
    # a conditional branch, which XLA neither hoists from nor fuses across.
    # The predicate is always true, but XLA cannot prove it.
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


# Convolutions inside a loop body.
#
# XLA:CPU runs a convolution with a fast library kernel (YNNPACK or Eigen
# in jax 0.10) only when its dimension numbers are canonical (NHWC input,
# HWIO kernel, NHWC output).
# In the entry computation it rewrites the others (the kernel- and
# input-gradient convolutions that autodiff emits) into canonical form, but
# not inside a `while` body such as `lax.map`'s, where they fall back to a
# naive loop nest: measured 25-30x slower, which made the Conv-4 meta-step
# take over a minute. Inside the task loop, Keras's convolution is replaced
# by `_canonical_conv`, whose derivatives of every order are themselves
# canonical convolutions (plus transposes and flips of the operands), so
# XLA never sees a non-canonical one. The numbers are the same sums,
# accumulated in another order.


def _spec(num_spatial):
    spatial = "DHW"[3 - num_spatial :]
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _conv_nd(x, k, pads):
    return jax.lax.conv_general_dilated(
        x,
        k,
        (1,) * len(pads),
        pads,
        dimension_numbers=_spec(len(pads)),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _canonical_conv(x, k, pads):
    """Stride-1 channels_last convolution with canonical derivatives."""
    return _conv_nd(x, k, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _kernel_grad(x, dy, pads):
    """The gradient of `_canonical_conv(x, k, pads)` w.r.t. `k` given `dy`.

    A canonical convolution too: the input's batch and channel axes trade
    places and `dy` is the (large) window.
    """
    n = x.ndim
    batch_last = (n - 1, *range(1, n - 1), 0)
    window = (*range(1, n - 1), 0, n - 1)
    dk = _conv_nd(jnp.transpose(x, batch_last), jnp.transpose(dy, window), pads)
    return jnp.transpose(dk, (*range(1, n - 1), 0, n - 1))


def _input_grad(dy, k, pads):
    """The gradient of `_canonical_conv(x, k, pads)` w.r.t. `x` given `dy`."""
    n = dy.ndim
    spatial = tuple(range(n - 2))
    flipped = jnp.flip(k, spatial)
    flipped = jnp.transpose(flipped, (*spatial, n - 1, n - 2))
    full = [
        (size - 1 - lo, size - 1 - hi)
        for size, (lo, hi) in zip(k.shape[:-2], pads)
    ]
    if min(min(p) for p in full) < 0:
        dy = jax.lax.pad(
            dy,
            jnp.zeros((), dy.dtype),
            [(0, 0, 0), *[(lo, hi, 0) for lo, hi in full], (0, 0, 0)],
        )
        full = [(0, 0)] * len(full)
    return _canonical_conv(dy, flipped, tuple(full))


def _canonical_conv_fwd(x, k, pads):
    return _canonical_conv(x, k, pads), (x, k)


def _canonical_conv_bwd(pads, residuals, dy):
    x, k = residuals
    return _input_grad(dy, k, pads), _kernel_grad(x, dy, pads)


def _kernel_grad_fwd(x, dy, pads):
    return _kernel_grad(x, dy, pads), (x, dy)


def _kernel_grad_bwd(pads, residuals, g):
    x, dy = residuals
    return _input_grad(dy, g, pads), _canonical_conv(x, g, pads)


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)
_kernel_grad.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


def _as_tuple(value, num_spatial):
    if isinstance(value, int):
        return (value,) * num_spatial
    return tuple(value)


def _loop_conv(
    inputs,
    kernel,
    strides=1,
    padding="valid",
    data_format=None,
    dilation_rate=1,
):
    """Keras's JAX `conv`, routed to `_canonical_conv` where it applies."""
    original = _loop_conv.original
    data_format = standardize_data_format(data_format)
    num_spatial = len(kernel.shape) - 2
    channels_last = data_format == "channels_last"
    channels = inputs.shape[-1 if channels_last else 1]
    if (
        not 1 <= num_spatial <= 3
        or len(inputs.shape) != num_spatial + 2
        or set(_as_tuple(strides, num_spatial)) != {1}
        or set(_as_tuple(dilation_rate, num_spatial)) != {1}
        or channels != kernel.shape[-2]
        or str(padding).lower() not in ("valid", "same")
    ):
        return original(
            inputs, kernel, strides, padding, data_format, dilation_rate
        )
    kernel = keras_jax_nn.convert_to_tensor(kernel)
    inputs = keras_jax_nn.convert_to_tensor(inputs, dtype=kernel.dtype)
    if not channels_last:
        inputs = jnp.moveaxis(inputs, 1, -1)
    pads = tuple(
        tuple(p)
        for p in jax.lax.padtype_to_pads(
            inputs.shape[1:-1],
            kernel.shape[:-2],
            (1,) * num_spatial,
            str(padding).upper(),
        )
    )
    outputs = _canonical_conv(inputs, kernel, pads)
    if not channels_last:
        outputs = jnp.moveaxis(outputs, -1, 1)
    return outputs


def _loop_max_pool(
    inputs,
    pool_size,
    strides=None,
    padding="valid",
    data_format=None,
):
    """Keras's JAX `max_pool` without `reduce_window` for disjoint windows.

    `reduce_window`'s derivatives (argmax indices, `select_and_scatter`)
    cost about as much as the convolutions of a Conv-4 task. For windows
    that tile the input (strides equal to the pool size, "valid"), the
    input is reshaped so each window is a set of axes, and the output picks
    the first maximal element of each window (row-major), which therefore
    receives the whole gradient, as with `reduce_window`; measured about
    15% faster per Conv-4 meta-step.
    """
    original = _loop_max_pool.original
    num_spatial = len(inputs.shape) - 2
    pool = _as_tuple(pool_size, num_spatial)
    steps = pool if strides is None else _as_tuple(strides, num_spatial)
    if (
        num_spatial < 1
        or str(padding).lower() != "valid"
        or steps != pool
        or len(pool) != num_spatial
    ):
        return original(inputs, pool_size, strides, padding, data_format)
    data_format = standardize_data_format(data_format)
    x = jnp.asarray(inputs)
    if data_format != "channels_last":
        x = jnp.moveaxis(x, 1, -1)
    sizes = [size // q for size, q in zip(x.shape[1:-1], pool)]
    if min(sizes) < 1:
        return original(inputs, pool_size, strides, padding, data_format)
    x = x[(slice(None), *[slice(0, o * q) for o, q in zip(sizes, pool)])]
    x = jnp.reshape(
        x,
        (
            x.shape[0],
            *itertools.chain.from_iterable(zip(sizes, pool)),
            x.shape[-1],
        ),
    )
    window = tuple(range(2, 2 * num_spatial + 1, 2))
    frozen = jax.lax.stop_gradient(x)
    peak = jnp.max(frozen, axis=window, keepdims=True)
    shape = [1] * x.ndim
    for axis, q in zip(window, pool):
        shape[axis] = q
    position = jnp.arange(math.prod(pool), dtype="int32").reshape(shape)
    count = math.prod(pool)
    first = jnp.min(
        jnp.where(frozen == peak, position, count), axis=window, keepdims=True
    )
    outputs = jnp.sum(jnp.where(position == first, x, 0), axis=window)
    outputs = jnp.where(
        jnp.squeeze(first, window) == count, jnp.squeeze(peak, window), outputs
    )
    if data_format != "channels_last":
        outputs = jnp.moveaxis(outputs, -1, 1)
    return outputs


_LOOP_OPS = {"conv": _loop_conv, "max_pool": _loop_max_pool}


@contextlib.contextmanager
def _loop_friendly_ops():
    """Swaps in `_LOOP_OPS` while a task-loop body is traced."""
    originals = {name: getattr(keras_jax_nn, name) for name in _LOOP_OPS}
    if any(originals[name] is op for name, op in _LOOP_OPS.items()):
        # Nested task loops: already swapped in.
        yield
        return
    for name, op in _LOOP_OPS.items():
        op.original = originals[name]
        setattr(keras_jax_nn, name, op)
    try:
        yield
    finally:
        for name, op in originals.items():
            setattr(keras_jax_nn, name, op)


def _over_tasks(fn, vectorize, num_task_args):
    if vectorize:
        in_axes = (0, None) + (0,) * num_task_args
        return lambda params, shared, *args: jax.vmap(fn, in_axes=in_axes)(
            params, shared, *args
        )

    # `lax.map` traces the task body once: compile time stays flat in the
    # number of tasks. Its body is a `while` loop, where XLA leaves
    # convolutions as autodiff wrote them: see `_canonical_conv`.
    def looped(params, shared, *args):
        with _loop_friendly_ops():
            return jax.lax.map(
                lambda a: fn(a[0], shared, *a[1:]), (params, *args)
            )

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


def per_task_hvp(fn, vectorize=True):
    """Hessian-vector products of each task's loss, as constants."""

    def task_hvp(params, shared, vectors, *task_args):
        def directional(p):
            grads = jax.grad(fn)(p, shared, *task_args)
            return sum(jnp.vdot(g, v) for g, v in zip(grads, vectors))

        # Reverse over reverse: the loop-friendly convolutions define
        # reverse-mode derivatives only.
        return jax.grad(directional)(params)

    def wrapped(task_params, shared, vectors, *task_args):
        task_params = jax.lax.stop_gradient(task_params)
        vectors = jax.lax.stop_gradient(vectors)
        products = _over_tasks(task_hvp, vectorize, len(task_args) + 1)(
            task_params, shared, vectors, *task_args
        )
        return [jax.lax.stop_gradient(p) for p in products]

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
