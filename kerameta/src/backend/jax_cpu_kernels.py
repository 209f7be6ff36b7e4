"""Loop-friendly JAX convolution and max-pool, swapped in for the task loop.

XLA:CPU runs a convolution with a fast library kernel (YNNPACK or Eigen in
jax 0.10) only when its dimension numbers are canonical (NHWC input, HWIO
kernel, NHWC output). In the entry computation it rewrites the others (the
kernel- and input-gradient convolutions that autodiff emits) into canonical
form, but not inside a `while` body such as `lax.map`'s, where they fall
back to a naive loop nest: measured 25-30x slower, which made the Conv-4
meta-step take over a minute. While the JAX seam traces a looped task body
(`vectorize_tasks=False` or `'auto'`), `loop_friendly_ops()` replaces
Keras's JAX `conv` by `_loop_conv` (a `_canonical_conv` whose derivatives
of every order are themselves canonical convolutions, plus transposes and
flips of the operands: the same sums, accumulated in another order) and
`max_pool` by `_loop_max_pool` (see there).

The swap happens at trace time, through `kerameta.src.compat.swap_jax_nn_ops`.

XLA:CPU (jax 0.10) also hands convolutions to YNNPACK by default; on the
2-core AVX2 machine the benchmarks run on, the gradient of one 3x3
convolution of a 75x28x28x64 batch took 880 ms there against 113 ms with
XLA's other kernels, while YNNPACK's reductions (batch-norm statistics)
and small matrix products stay the fastest. `compiler_options()` gives
kerameta's compiled steps (train, test and predict, through
`compat.swap_jax_trainer_jit`) `LIBRARY_CHOICES`: YNNPACK for reductions
and individual dots only. Measured on the Conv-4 meta-iteration: 3.9 s
down to 2.0 s, first step 11.1 s down to 8.6 s; the sinusoid step is
unchanged. An `xla_cpu_experimental_ynn_fusion_type` set in `XLA_FLAGS`
wins, and a jaxlib that does not know the option is left alone.

Set the environment variable `KERAMETA_JAX_CPU_KERNELS=0` to use Keras's
own kernels and XLA's default library choices instead (e.g. to compare
them on a GPU); it is read each time a task loop is traced or a step
function is built. `1` (the default) swaps them in.
"""

import contextlib
import functools
import itertools
import math
import os

import jax
import jax.numpy as jnp
import keras

from kerameta.src import checks
from kerameta.src import compat

ENV_VAR = "KERAMETA_JAX_CPU_KERNELS"
LIBRARY_CHOICES = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    ),
}


def enabled():
    """Whether `loop_friendly_ops` swaps the kernels in (see module doc)."""
    return checks.environment_switch(
        ENV_VAR,
        on=(
            "swap in kerameta's loop-friendly JAX convolution and max-pool, "
            "and its XLA:CPU library choices"
        ),
        off="use Keras's own kernels and XLA's defaults",
    )


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


def _data_format(data_format):
    """Keras's `standardize_data_format`; `None` if it would raise."""
    if data_format is None:
        data_format = keras.config.image_data_format()
    data_format = str(data_format).lower()
    if data_format in ("channels_last", "channels_first"):
        return data_format
    return None


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
    data_format = _data_format(data_format)
    num_spatial = len(kernel.shape) - 2
    channels_last = data_format == "channels_last"
    channels = inputs.shape[-1 if channels_last else 1]
    if (
        not 1 <= num_spatial <= 3
        or len(inputs.shape) != num_spatial + 2
        or min(_as_tuple(strides, num_spatial)) < 1
        or set(_as_tuple(dilation_rate, num_spatial)) != {1}
        or channels != kernel.shape[-2]
        or str(padding).lower() not in ("valid", "same")
        or data_format is None
    ):
        return original(
            inputs, kernel, strides, padding, data_format, dilation_rate
        )
    kernel = keras.ops.convert_to_tensor(kernel)
    inputs = keras.ops.convert_to_tensor(inputs, dtype=kernel.dtype)
    if not channels_last:
        inputs = jnp.moveaxis(inputs, 1, -1)
    strides = _as_tuple(strides, num_spatial)
    pads = tuple(
        tuple(p)
        for p in jax.lax.padtype_to_pads(
            inputs.shape[1:-1],
            kernel.shape[:-2],
            strides,
            str(padding).upper(),
        )
    )
    if set(strides) == {1}:
        outputs = _canonical_conv(inputs, kernel, pads)
    else:
        outputs = _space_to_depth_conv(inputs, kernel, strides, pads)
    if not channels_last:
        outputs = jnp.moveaxis(outputs, -1, 1)
    return outputs


def _space_to_depth_conv(x, k, strides, pads):
    """A strided channels_last convolution as a stride-1 canonical one.

    Each output position `i` of a dimension with stride `s` reads the
    padded input at `s * i + q` for kernel taps `q < K`. Writing
    `q = s * m + r` (`r < s`), that is block `i + m`, offset `r`, of the
    input cut into blocks of `s`: moving the offsets into the channels
    (space-to-depth) leaves a stride-1 "valid" convolution of
    `M = ceil(K / s)` taps over the blocks, whose kernel holds tap
    `s * m + r` at `(m, r)` (zeros past `K`). XLA's strided convolution
    derivatives (dilated, in a `while` body) run as naive loop nests on
    XLA:CPU; these are canonical like `_canonical_conv`'s. The sums are the
    same (plus products with the zero taps); measured on a second-order
    stride-2 3x3 layer over 16 looped tasks: 5.6 s down to 0.7 s.
    """
    n = len(strides)
    widths = k.shape[:n]
    taps = [-(-width // s) for width, s in zip(widths, strides)]
    outputs = [
        (size + lo + hi - width) // s + 1
        for size, (lo, hi), width, s in zip(
            x.shape[1:-1], pads, widths, strides
        )
    ]
    blocks = [o + m - 1 for o, m in zip(outputs, taps)]
    # Pad (or cut) every spatial dimension to whole blocks.
    x = jax.lax.pad(
        x,
        jnp.zeros((), x.dtype),
        [
            (0, 0, 0),
            *[
                (lo, b * s - size - lo, 0)
                for b, s, size, (lo, _) in zip(
                    blocks, strides, x.shape[1:-1], pads
                )
            ],
            (0, 0, 0),
        ],
    )
    x = jnp.reshape(
        x, (x.shape[0], *itertools.chain(*zip(blocks, strides)), x.shape[-1])
    )
    x = jnp.transpose(
        x, (0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)
    )
    x = jnp.reshape(x, (x.shape[0], *blocks, -1))
    k = jnp.pad(
        k,
        [(0, s * m - width) for s, m, width in zip(strides, taps, widths)]
        + [(0, 0), (0, 0)],
    )
    k = jnp.reshape(k, (*itertools.chain(*zip(taps, strides)), *k.shape[-2:]))
    k = jnp.transpose(
        k, (*range(0, 2 * n, 2), *range(1, 2 * n, 2), 2 * n, 2 * n + 1)
    )
    k = jnp.reshape(k, (*taps, -1, k.shape[-1]))
    return _canonical_conv(x, k, ((0, 0),) * n)


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
        or _data_format(data_format) is None
    ):
        return original(inputs, pool_size, strides, padding, data_format)
    data_format = _data_format(data_format)
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
def loop_friendly_ops():
    """Swaps in `_LOOP_OPS` while a task-loop body is traced (if enabled)."""
    if not enabled():
        yield
        return
    with compat.swap_jax_nn_ops(_LOOP_OPS) as originals:
        for name, op in _LOOP_OPS.items():
            if originals[name] is not op:  # else: nested, already swapped
                op.original = originals[name]
        yield


@functools.cache
def _accepted(options):
    """Whether this jaxlib compiles with the compiler `options` (pairs)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(
            jnp.zeros(())
        ).compile()
    except Exception:  # an unknown option or value: an older/newer jaxlib
        return False
    return True


def compiler_options():
    """The XLA compiler options for kerameta's CPU steps (see module doc)."""
    if not enabled() or jax.default_backend() != "cpu":
        return {}
    flags = os.environ.get("XLA_FLAGS", "")
    options = {
        name: value
        for name, value in LIBRARY_CHOICES.items()
        if f"--{name}=" not in flags  # the user's choice wins
    }
    if not options or not _accepted(tuple(sorted(options.items()))):
        return {}
    return options


@contextlib.contextmanager
def cpu_library_choices():
    """Keras's JAX trainer compiles with `compiler_options()` in a block.

    Only where it compiles with `jax.jit` (not `flax.nnx.jit`).
    """
    options = compiler_options()
    if not options:
        yield
        return

    def with_options(jit):
        if jit is not jax.jit:
            return jit
        return functools.partial(jax.jit, compiler_options=options)

    with compat.swap_jax_trainer_jit(with_options):
        yield


class CpuLibraryChoices:
    """Keras's JAX step functions, compiled within `cpu_library_choices`."""

    def make_train_function(self, force=False):
        with cpu_library_choices():
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        with cpu_library_choices():
            return super().make_test_function(force)

    def make_predict_function(self, force=False):
        with cpu_library_choices():
            return super().make_predict_function(force)
