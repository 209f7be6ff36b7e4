"""PyTorch kernels for the task loop: fewer copies, fused batch norm.

Keras's PyTorch `conv` and `max_pool` take channels_last (NHWC) inputs, as
every Keras layer does by default, and copy them into a contiguous NCHW
tensor (`permute(...).contiguous()`) before calling PyTorch; `conv` then
converts that copy back to PyTorch's channels_last memory format. Every
call, and every derivative of it in the meta-gradient, copies its
activations twice: on the Conv-4 benchmark the copies, and the elementwise
derivatives on mixed layouts they cause, took a third of a meta-iteration.

A permuted NHWC tensor already is an NCHW tensor in PyTorch's
channels_last memory format, which PyTorch's convolution and max-pool run
natively: `_conv` and `_max_pool` call them on that view and permute the
result back, copying nothing. They compute the same sums as Keras's
(up to the order of the additions) and cover the common cases: 2D,
`padding="valid"`, and `padding="same"` with stride 1 and an odd window;
every other call goes to Keras's own function.

Batch normalization in training mode is Keras's `moments` and then its
`batch_normalization` from generic ops, whose second derivatives are
dozens of elementwise kernels over whole activations. When
`_batch_normalization` receives the very moments `_moments` computed from
its input, it calls PyTorch's fused `batch_norm` (with its fused first and
second derivatives) instead: the same normalization, its variance
computed in one pass.

The per-task loop of the PyTorch seam runs under `channels_last_ops()`.
Set the environment variable `KERAMETA_TORCH_KERNELS=0` to use Keras's own
functions (e.g. to compare the two); it is read at every meta-step.
"""

import contextlib

import keras
import torch.nn.functional as tnn

from kerameta.src import checks
from kerameta.src import compat

ENV_VAR = "KERAMETA_TORCH_KERNELS"


def enabled():
    """Whether `channels_last_ops` swaps the kernels in (see module doc)."""
    return checks.environment_switch(
        ENV_VAR,
        on="kerameta's copy-free convolution and max-pool and fused batch "
        "normalization",
        off="Keras's own",
    )


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _channels_last_2d(inputs, data_format):
    data_format = data_format or keras.config.image_data_format()
    return data_format == "channels_last" and len(inputs.shape) == 4


def _padding(padding, kernel_size, strides, dilation):
    """PyTorch's symmetric `padding` for Keras's, or `None` if it has none."""
    if padding == "valid":
        return (0, 0)
    window = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
    if (
        padding == "same"
        and strides == (1, 1)
        and not any(w % 2 for w in window)
    ):
        return (window[0] // 2, window[1] // 2)
    return None  # strided or uneven "same": Keras pads explicitly


def _conv(inputs, kernel, strides=1, padding="valid", data_format=None,
          dilation_rate=1):  # fmt: skip
    strides, dilation = _pair(strides), _pair(dilation_rate)
    pads = _padding(padding, kernel.shape[:2], strides, dilation)
    if pads is None or not _channels_last_2d(inputs, data_format):
        return _conv.original(
            inputs, kernel, strides, padding, data_format, dilation_rate
        )
    inputs = keras.ops.convert_to_tensor(inputs)
    kernel = keras.ops.convert_to_tensor(kernel)
    outputs = tnn.conv2d(
        inputs.permute(0, 3, 1, 2),  # NCHW in channels_last memory
        kernel.permute(3, 2, 0, 1),  # HWIO -> OIHW
        stride=strides,
        padding=pads,
        dilation=dilation,
        groups=inputs.shape[-1] // kernel.shape[2],
    )
    return outputs.permute(0, 2, 3, 1)


def _max_pool(inputs, pool_size, strides=None, padding="valid",
              data_format=None):  # fmt: skip
    if padding != "valid" or not _channels_last_2d(inputs, data_format):
        return _max_pool.original(
            inputs, pool_size, strides, padding, data_format
        )
    pool_size = _pair(pool_size)
    strides = pool_size if strides is None else _pair(strides)
    inputs = keras.ops.convert_to_tensor(inputs)
    outputs = tnn.max_pool2d(inputs.permute(0, 3, 1, 2), pool_size, strides)
    return outputs.permute(0, 2, 3, 1)


# Batch moments that `_batch_normalization` may fuse: id(mean) -> (mean,
# variance, x, axes), from `_moments` until `_batch_normalization` takes
# them (the references keep the ids unique meanwhile).
_MOMENTS: dict[int, tuple] = {}


def _moments(x, axes, keepdims=False, synchronized=False):
    mean, variance = _moments.original(x, axes, keepdims, synchronized)
    if not keepdims and not synchronized:
        _MOMENTS[id(mean)] = (mean, variance, x, tuple(axes))
    return mean, variance


def _batch_normalization(x, mean, variance, axis, offset=None, scale=None,
                         epsilon=1e-3):  # fmt: skip
    """PyTorch's fused batch normalization when `mean` and `variance` are
    `x`'s batch moments (as in `BatchNormalization(training=True)`)."""
    entry = _MOMENTS.pop(id(mean), None)
    rank = len(x.shape)
    axis = axis % rank
    if (
        entry is None
        or axis == 0
        or entry[0] is not mean
        or entry[1] is not variance
        or entry[2] is not x
        or sorted(a % rank for a in entry[3])
        != [a for a in range(rank) if a != axis]
    ):
        return _batch_normalization.original(
            x, mean, variance, axis, offset, scale, epsilon
        )
    # The channel axis second, as PyTorch wants it (a view; for NHWC,
    # PyTorch's channels_last memory format).
    order = [0, axis, *[a for a in range(1, rank) if a != axis]]
    outputs = tnn.batch_norm(
        x.permute(order),
        None,
        None,
        weight=scale,
        bias=offset,
        training=True,
        eps=epsilon,
    )
    inverse = [order.index(a) for a in range(rank)]
    return outputs.permute(inverse)


_OPS = {
    "conv": _conv,
    "max_pool": _max_pool,
    "moments": _moments,
    "batch_normalization": _batch_normalization,
}


@contextlib.contextmanager
def channels_last_ops():
    """Swaps in `_OPS` for a block (if enabled)."""
    if not enabled():
        yield
        return
    with compat.swap_torch_nn_ops(_OPS) as originals:
        for name, op in _OPS.items():
            if originals[name] is not op:  # else: nested, already swapped
                op.original = originals[name]
        try:
            yield
        finally:
            if originals["moments"] is not _moments:  # the outermost block
                _MOMENTS.clear()
