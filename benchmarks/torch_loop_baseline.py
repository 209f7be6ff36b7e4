"""Per-task-loop PyTorch MAML baseline (no kerameta, no keras).

This is MAML written the way existing PyTorch meta-learning libraries
(learn2learn, higher) do it: the fast weights of each task are built with
``torch.autograd.grad(create_graph=True)`` and evaluated with
``torch.func.functional_call``, looping over the tasks of a meta-batch in
Python. Second order by default; ``first_order=True`` gives FOMAML (the
inner gradients are detached).

Public API:

* :func:`sinusoid_mlp`, :func:`conv4` -- the reference models.
* :func:`load_keras_order_weights` -- copy Keras-ordered NumPy weights in.
* :func:`meta_gradient` -- meta-loss and meta-gradient of one episode.
* :func:`episode_to_tensors`, :func:`make_meta_step`, :class:`MetaStep`
  -- one full Adam meta-iteration, for timing.
* :func:`time_meta_steps` -- wall-clock statistics of a step callable.

Episodes are dicts of NumPy arrays with a leading task axis: ``support_x``
``[T, S, ...]``, ``support_y`` ``[T, S, ...]``, ``query_x`` ``[T, Q, ...]``
and ``query_y`` ``[T, Q, ...]``. Image inputs come channels_last
``(T, S, H, W, C)`` and are transposed to NCHW here.

Run ``python benchmarks/torch_loop_baseline.py [--device gpu]`` to print one
JSON line of timings per configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch import nn
from torch.func import functional_call
from torch.nn import functional

__all__ = [
    "LOSSES",
    "MetaStep",
    "conv4",
    "episode_to_tensors",
    "load_keras_order_weights",
    "make_meta_step",
    "meta_gradient",
    "sinusoid_mlp",
    "time_meta_steps",
    "torch_device",
]

LOSSES = ("mse", "sparse_categorical_crossentropy")
EPISODE_KEYS = ("support_x", "support_y", "query_x", "query_y")

Episode = Mapping[str, npt.ArrayLike]
EpisodeTensors = dict[str, Tensor]
Params = dict[str, Tensor]


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def sinusoid_mlp() -> nn.Module:
    """Return Linear(1,40)-ReLU-Linear(40,40)-ReLU-Linear(40,1)."""
    return nn.Sequential(
        nn.Linear(1, 40),
        nn.ReLU(),
        nn.Linear(40, 40),
        nn.ReLU(),
        nn.Linear(40, 1),
    )


def conv4(ways: int = 5, filters: int = 64, in_channels: int = 1) -> nn.Module:
    """Return the Conv-4 classifier for 28x28 NCHW inputs.

    Four blocks of Conv2d(3x3, padding=1) -> BatchNorm2d (batch statistics
    only, ``track_running_stats=False``) -> ReLU -> MaxPool2d(2), i.e.
    28 -> 14 -> 7 -> 3 -> 1, then Flatten and Linear(filters, ways).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(4):
        layers += [
            nn.Conv2d(channels, filters, kernel_size=3, padding=1),
            nn.BatchNorm2d(filters, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = filters
    layers += [nn.Flatten(), nn.Linear(filters * 1 * 1, ways)]
    return nn.Sequential(*layers)


def load_keras_order_weights(
    module: nn.Module, weights: Sequence[npt.ArrayLike]
) -> None:
    """Set ``module``'s parameters from Keras ``trainable_variables``.

    ``weights`` is in Keras order, which for the models above is the same
    layer order as ``module.parameters()``: for each Dense/Conv2D layer the
    kernel then the bias; for each BatchNormalization gamma then beta.
    Layouts are converted: Dense kernel ``(in, out)`` -> torch weight
    ``(out, in)``; Conv2D kernel ``(kh, kw, in, out)`` -> ``(out, in, kh,
    kw)``; BN gamma/beta -> weight/bias; biases unchanged. For ``conv4`` the
    Keras channels_last Flatten of a ``1x1xC`` map equals the torch flatten
    of ``Cx1x1``, so the final Dense kernel needs no permutation.
    """
    params = list(module.parameters())
    if len(params) != len(weights):
        raise ValueError(
            f"module has {len(params)} parameters, got {len(weights)} arrays"
        )
    with torch.no_grad():
        for index, (param, value) in enumerate(
            zip(params, weights, strict=True)
        ):
            array = np.asarray(value)
            if array.ndim == 2:  # Dense kernel (in, out) -> (out, in)
                array = array.T
            elif array.ndim == 4:  # Conv2D (kh, kw, in, out) -> (out, in, ...)
                array = array.transpose(3, 2, 0, 1)
            if tuple(array.shape) != tuple(param.shape):
                raise ValueError(
                    f"parameter {index}: expected shape "
                    f"{tuple(param.shape)}, got {tuple(array.shape)} after "
                    "layout conversion"
                )
            param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


# --------------------------------------------------------------------------
# MAML core
# --------------------------------------------------------------------------


def _loss_value(loss: str, prediction: Tensor, target: Tensor) -> Tensor:
    """Mean loss of one batch (``mse`` or sparse CE on logits)."""
    if loss == "mse":
        if target.numel() == prediction.numel():
            target = target.reshape(prediction.shape)
        return functional.mse_loss(prediction, target)
    if loss == "sparse_categorical_crossentropy":
        return functional.cross_entropy(prediction, target.reshape(-1))
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def _adapt(
    module: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    loss: str,
    inner_steps: int,
    inner_learning_rate: float,
    first_order: bool,
) -> Params:
    """Run the inner SGD loop of one task and return its fast weights."""
    fast = params
    for _ in range(inner_steps):
        support_loss = _loss_value(loss, functional_call(module, fast, (x,)), y)
        grads = torch.autograd.grad(
            support_loss, list(fast.values()), create_graph=not first_order
        )
        fast = {
            name: value - inner_learning_rate * grad
            for (name, value), grad in zip(fast.items(), grads, strict=True)
        }
    return fast


def _meta_loss(
    module: nn.Module,
    params: Params,
    tensors: EpisodeTensors,
    loss: str,
    inner_steps: int,
    inner_learning_rate: float,
    first_order: bool,
) -> Tensor:
    """Mean over tasks of the post-adaptation mean query loss."""
    tasks = tensors["support_x"].shape[0]
    total = tensors["support_x"].new_zeros((), dtype=_param_dtype(module))
    for task in range(tasks):
        fast = _adapt(
            module,
            params,
            tensors["support_x"][task],
            tensors["support_y"][task],
            loss,
            inner_steps,
            inner_learning_rate,
            first_order,
        )
        prediction = functional_call(module, fast, (tensors["query_x"][task],))
        total = total + _loss_value(loss, prediction, tensors["query_y"][task])
    return total / tasks


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _param_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def episode_to_tensors(
    episode: Episode,
    loss: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> EpisodeTensors:
    """Convert a NumPy episode to tensors, images to NCHW.

    ``x`` arrays with 5 axes ``(T, N, H, W, C)`` become ``(T, N, C, H, W)``.
    ``x`` (and ``y`` for regression) are cast to ``dtype``; labels become
    ``int64`` when ``loss`` is the sparse cross-entropy, or when ``loss`` is
    None and the labels are integers.
    """
    out: EpisodeTensors = {}
    for key in EPISODE_KEYS:
        array = np.asarray(episode[key])
        if key.endswith("_x"):
            if array.ndim == 5:
                array = array.transpose(0, 1, 4, 2, 3)
            tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
        else:
            integer = np.issubdtype(array.dtype, np.integer)
            categorical = loss == "sparse_categorical_crossentropy" or (
                loss is None and integer
            )
            tensor = torch.as_tensor(
                array, dtype=torch.int64 if categorical else dtype
            )
        out[key] = tensor.to(device) if device is not None else tensor
    return out


def meta_gradient(
    module: nn.Module,
    episode: Episode,
    loss: str,
    inner_steps: int,
    inner_learning_rate: float,
    first_order: bool = False,
) -> tuple[float, list[npt.NDArray[np.floating]]]:
    """Return the MAML meta-loss and its gradient for one episode.

    The meta-loss is the mean over tasks of the mean query loss after
    ``inner_steps`` of SGD ``phi <- phi - inner_learning_rate * grad`` of the
    mean support loss, starting from the module's parameters. Gradients are
    NumPy arrays in ``module.parameters()`` order (torch layouts); the
    module's ``.grad`` fields are not touched.
    """
    tensors = episode_to_tensors(
        episode, loss, dtype=_param_dtype(module), device=_param_device(module)
    )
    params = dict(module.named_parameters())
    meta_loss = _meta_loss(
        module,
        params,
        tensors,
        loss,
        inner_steps,
        inner_learning_rate,
        first_order,
    )
    grads = torch.autograd.grad(meta_loss, list(params.values()))
    return (
        float(meta_loss.item()),
        [grad.detach().cpu().numpy() for grad in grads],
    )


class MetaStep:
    """One full MAML meta-iteration with ``torch.optim.Adam``.

    Calling it with episode tensors (see :func:`episode_to_tensors`) runs
    zero_grad, the per-task loop accumulating the mean query loss, backward
    and the Adam step, and returns the meta-loss as a float (which
    synchronises, so timings include all the work).
    """

    def __init__(
        self,
        module: nn.Module,
        loss: str,
        inner_steps: int,
        inner_learning_rate: float,
        first_order: bool = False,
        meta_learning_rate: float = 1e-3,
    ) -> None:
        """Bind the model, MAML settings and an Adam optimizer."""
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
        self.module = module
        self.loss = loss
        self.inner_steps = inner_steps
        self.inner_learning_rate = inner_learning_rate
        self.first_order = first_order
        self.optimizer = torch.optim.Adam(
            module.parameters(), lr=meta_learning_rate
        )

    def __call__(self, episode_tensors: EpisodeTensors) -> float:
        """Run one meta-iteration and return the meta-loss."""
        self.optimizer.zero_grad(set_to_none=True)
        meta_loss = _meta_loss(
            self.module,
            dict(self.module.named_parameters()),
            episode_tensors,
            self.loss,
            self.inner_steps,
            self.inner_learning_rate,
            self.first_order,
        )
        meta_loss.backward()
        self.optimizer.step()
        return float(meta_loss.item())


def make_meta_step(
    module: nn.Module,
    loss: str,
    inner_steps: int,
    inner_learning_rate: float,
    first_order: bool = False,
    meta_learning_rate: float = 1e-3,
) -> Callable[[EpisodeTensors], float]:
    """Return a :class:`MetaStep` callable ``step(episode_tensors)``."""
    return MetaStep(
        module,
        loss,
        inner_steps,
        inner_learning_rate,
        first_order=first_order,
        meta_learning_rate=meta_learning_rate,
    )


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


DEVICES = ("cpu", "gpu")


def _check_device(device: str) -> str:
    """``device`` itself; raises when it is unknown or has no CUDA GPU."""
    if device not in DEVICES:
        raise ValueError(
            f"Expected device to be one of {DEVICES}. Received: {device!r}"
        )
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError(
            "device='gpu' needs a CUDA build of PyTorch and a visible GPU, "
            f"but torch {torch.__version__} sees none "
            "(torch.cuda.is_available() is False). Install a CUDA build "
            "(https://pytorch.org/get-started/locally/) or use device='cpu'."
        )
    return device


def torch_device(device: str) -> torch.device:
    """The ``torch.device`` of ``"cpu"`` or ``"gpu"`` (the first CUDA GPU)."""
    return torch.device("cuda" if _check_device(device) == "gpu" else "cpu")


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``numpy.percentile`` default)."""
    return float(np.percentile(np.asarray(values), q))


def time_meta_steps(
    step: Callable[[EpisodeTensors], float],
    episode_tensors: EpisodeTensors,
    warmup: int = 3,
    repeats: int = 20,
    device: str = "cpu",
) -> dict[str, float]:
    """Time ``step(episode_tensors)`` with ``time.perf_counter``.

    The first call is timed on its own (``first_step_s``) and counts as one
    of the ``warmup`` calls; then ``repeats`` calls are timed one by one.
    With ``device="gpu"`` every clock read follows
    ``torch.cuda.synchronize()``, so a timing covers the kernels it queued.
    Returns ``median_ms``, ``p10_ms``, ``p90_ms`` and ``first_step_s``.
    """
    gpu = _check_device(device) == "gpu"

    def clock() -> float:
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    start = clock()
    step(episode_tensors)
    first_step_s = clock() - start
    for _ in range(max(warmup - 1, 0)):
        step(episode_tensors)
    times_ms: list[float] = []
    for _ in range(repeats):
        start = clock()
        step(episode_tensors)
        times_ms.append((clock() - start) * 1e3)
    return {
        "median_ms": float(statistics.median(times_ms)),
        "p10_ms": _percentile(times_ms, 10),
        "p90_ms": _percentile(times_ms, 90),
        "first_step_s": first_step_s,
    }


# --------------------------------------------------------------------------
# Stand-alone benchmark
# --------------------------------------------------------------------------


def sinusoid_episode(
    rng: np.random.Generator, tasks: int, support: int, query: int
) -> dict[str, npt.NDArray[np.float32]]:
    """Sample sinusoid tasks (amplitude, phase, x uniform as in MAML)."""
    amplitude = rng.uniform(0.1, 5.0, size=(tasks, 1, 1))
    phase = rng.uniform(0.0, math.pi, size=(tasks, 1, 1))
    x = rng.uniform(-5.0, 5.0, size=(tasks, support + query, 1))
    y = amplitude * np.sin(x - phase)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return {
        "support_x": x[:, :support],
        "support_y": y[:, :support],
        "query_x": x[:, support:],
        "query_y": y[:, support:],
    }


def random_image_episode(
    rng: np.random.Generator,
    tasks: int,
    ways: int,
    shots: int,
    queries: int,
    size: int = 28,
    channels: int = 1,
) -> dict[str, npt.NDArray[np.generic]]:
    """Random channels_last images with balanced integer labels."""
    support, query = ways * shots, ways * queries
    return {
        "support_x": rng.random(
            (tasks, support, size, size, channels), dtype=np.float32
        ),
        "support_y": np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)),
        "query_x": rng.random(
            (tasks, query, size, size, channels), dtype=np.float32
        ),
        "query_y": np.tile(np.repeat(np.arange(ways), queries), (tasks, 1)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Time the reference configurations and print JSON lines."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the model and episodes live (gpu: the first CUDA GPU)",
    )
    device = parser.parse_args(argv).device
    where = torch_device(device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    common = {
        "framework": "torch-loop",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "device": device,
    }
    if device == "gpu":
        common["device_name"] = torch.cuda.get_device_name(where)

    sinusoid = sinusoid_episode(rng, tasks=25, support=10, query=10)
    for inner_steps in (1, 5):
        module = sinusoid_mlp().to(where)
        step = make_meta_step(module, "mse", inner_steps, 0.01)
        tensors = episode_to_tensors(sinusoid, "mse", device=where)
        result = time_meta_steps(step, tensors, device=device)
        print(
            json.dumps(
                {
                    "config": "sinusoid_mlp",
                    "tasks": 25,
                    "support": 10,
                    "query": 10,
                    "inner_steps": inner_steps,
                    "inner_learning_rate": 0.01,
                    "first_order": False,
                    **common,
                    **result,
                }
            ),
            flush=True,
        )

    loss = "sparse_categorical_crossentropy"
    images = random_image_episode(rng, tasks=32, ways=5, shots=1, queries=15)
    module = conv4(ways=5, filters=64, in_channels=1).to(where)
    step = make_meta_step(module, loss, 1, 0.4)
    tensors = episode_to_tensors(images, loss, device=where)
    result = time_meta_steps(step, tensors, device=device)
    print(
        json.dumps(
            {
                "config": "conv4",
                "filters": 64,
                "ways": 5,
                "shots": 1,
                "tasks": 32,
                "support": 5,
                "query": 75,
                "inner_steps": 1,
                "inner_learning_rate": 0.4,
                "first_order": False,
                **common,
                **result,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
