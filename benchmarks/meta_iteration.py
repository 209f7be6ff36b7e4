"""Meta-iteration benchmark: kerameta's `fit` against a PyTorch task loop.

Each configuration (backend x problem x inner steps x meta-gradient) runs in
its own process, through the real `MAML.fit` path: a callback times every
batch and blocks on its loss (JAX dispatches asynchronously), so a timing
covers the whole meta-iteration. In the same run, the plain per-task-loop
PyTorch MAML of `torch_loop_baseline.py` times the same problem, after
checking that its meta-gradient matches the float64 NumPy reference.

Problems (random data, fixed seed):

- `sinusoid`: MLP 1-40-40-1 (ReLU), 25 tasks, 10 support and 10 query
  points, MSE, second order, 1 and 5 inner steps.
- `conv4`: Conv-4 (64 filters, batch normalization), 28x28x1 inputs, 5-way
  1-shot with 15 queries per class, 32 tasks, 1 inner step, second order.

Every result is one JSON line appended to `--output` (default
`benchmarks/results.jsonl`); `python benchmarks/report.py` turns the file
into `benchmarks/RESULTS.md`.

Usage:

```bash
# every problem on the current backend, plus the PyTorch baseline:
KERAS_BACKEND=jax python benchmarks/meta_iteration.py
# one configuration:
KERAS_BACKEND=torch python benchmarks/meta_iteration.py \
    --problem sinusoid --inner-steps 5
```

The baseline needs PyTorch in the same environment (the CPU build; a CUDA
build for `--device gpu`, which runs the baseline on the first CUDA GPU).
The device kerameta computes on is the backend's own choice (JAX's and
TensorFlow's first device, CUDA on PyTorch when available) and is recorded
with every result: `"device": "cpu"`, or `"gpu"` with `device_name` and
`peak_device_mb` (the allocator's peak over the whole process); on a
TensorFlow CPU also `onednn`, whether it ran its oneDNN kernels
(`TF_ENABLE_ONEDNN_OPTS`, whose default depends on the CPU; the report
gives those runs a *oneDNN* row). `--device` checks that choice.
`benchmarks/gpu.py` runs every problem on every backend's GPU build,
within a time budget.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "results.jsonl"

PROBLEMS = {
    "sinusoid": {
        "tasks": 25,
        "support": 10,
        "query": 10,
        "inner_steps": (1, 5),
        "inner_learning_rate": 0.01,
        "warmup": 3,
        "repeats": 20,
    },
    "conv4": {
        "tasks": 32,
        "ways": 5,
        "shots": 1,
        "queries": 15,
        "filters": 64,
        "inner_steps": (1,),
        "inner_learning_rate": 0.4,
        "warmup": 2,
        "repeats": 5,
    },
}
PACKAGES = (
    "keras",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "tensorflow-cpu",
    "tensorflow",
    "torch",
)
MIB = 1024 * 1024


def machine_facts(packages: tuple[str, ...] = PACKAGES) -> dict[str, object]:
    """The CPU model, core count and versions of `packages` in this run."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def device_facts(backend: str, memory: bool = False) -> dict[str, object]:
    """Where `backend` computes: `{"device": "cpu"}`, or on a GPU also its
    `device_name` and, with `memory=True`, the allocator's peak
    `peak_device_mb` over the process (JAX `memory_stats`, TensorFlow
    `get_memory_info`, `torch.cuda.max_memory_allocated`)."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform not in ("gpu", "cuda", "rocm"):
            return {"device": "cpu"}
        facts = {"device": "gpu", "device_name": device.device_kind}
        if memory:
            stats = device.memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            facts["peak_device_mb"] = None if peak is None else peak / MIB
        return facts
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return {"device": "cpu", "onednn": _tensorflow_onednn()}
        details = tf.config.experimental.get_device_details(gpus[0])
        facts = {
            "device": "gpu",
            "device_name": details.get("device_name", gpus[0].name),
        }
        if memory:
            info = tf.config.experimental.get_memory_info("GPU:0")
            facts["peak_device_mb"] = info["peak"] / MIB
        return facts
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return {"device": "cpu"}
        facts = {"device": "gpu", "device_name": torch.cuda.get_device_name()}
        if memory:
            facts["peak_device_mb"] = torch.cuda.max_memory_allocated() / MIB
        return facts
    raise ValueError(
        "Expected backend to be one of 'jax', 'tensorflow', 'torch'. "
        f"Received: {backend!r}"
    )


def _tensorflow_onednn() -> bool | None:
    """Whether TensorFlow runs its CPU kernels through oneDNN.

    `TF_ENABLE_ONEDNN_OPTS` decides, and unset its default depends on the
    CPU (on by default only on some x86 CPUs: off on this benchmark's AMD
    EPYC). TensorFlow has no public query; `None` if its internal one moved.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def _check_device(args: argparse.Namespace, backend: str) -> None:
    """Raises when `--device` names another device than the one in use."""
    device = device_facts(backend)["device"]
    if args.device is not None and device != args.device:
        raise SystemExit(
            f"--device {args.device} was asked for, but the {backend} "
            f"backend computes on the {device.upper()}. Install the "
            "backend's GPU build (see docs/benchmarks.md, 'Running on a "
            "GPU') or drop --device."
        )


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_episode(problem: str, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch of random episodes for `problem`, channels_last images."""
    rng = np.random.default_rng(seed)
    spec = PROBLEMS[problem]
    tasks = spec["tasks"]
    if problem == "sinusoid":
        support, query = spec["support"], spec["query"]
        amplitude = rng.uniform(0.1, 5.0, size=(tasks, 1, 1))
        phase = rng.uniform(0.0, np.pi, size=(tasks, 1, 1))
        x = rng.uniform(-5.0, 5.0, size=(tasks, support + query, 1))
        y = (amplitude * np.sin(x - phase)).astype("float32")
        x = x.astype("float32")
        return {
            "support_x": x[:, :support],
            "support_y": y[:, :support],
            "query_x": x[:, support:],
            "query_y": y[:, support:],
        }
    ways, shots, queries = spec["ways"], spec["shots"], spec["queries"]
    labels = np.arange(ways, dtype="int32")
    return {
        "support_x": rng.random(
            (tasks, ways * shots, 28, 28, 1), dtype=np.float32
        ),
        "support_y": np.tile(np.repeat(labels, shots), (tasks, 1)),
        "query_x": rng.random(
            (tasks, ways * queries, 28, 28, 1), dtype=np.float32
        ),
        "query_y": np.tile(np.repeat(labels, queries), (tasks, 1)),
    }


# --------------------------------------------------------------------------
# kerameta through `fit`
# --------------------------------------------------------------------------


def conv4_network(spec: dict):
    """The Keras Conv-4 of the `conv4` problem (channels_last)."""
    import keras

    layers = [keras.Input((28, 28, 1))]
    for _ in range(4):
        layers += [
            keras.layers.Conv2D(spec["filters"], 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [keras.layers.Flatten(), keras.layers.Dense(spec["ways"])]
    return keras.Sequential(layers)


def run_kerameta(args: argparse.Namespace) -> dict[str, object]:
    """Times `MAML.fit` on one configuration of the current backend."""
    import keras

    import kerameta

    if args.torch_threads is not None and keras.config.backend() == "torch":
        import torch

        torch.set_num_threads(args.torch_threads)
    _check_device(args, keras.config.backend())
    spec = PROBLEMS[args.problem]
    episode = make_episode(args.problem)
    if args.problem == "sinusoid":
        network = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(40, activation="relu"),
                keras.layers.Dense(40, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        loss = "mse"
    else:
        network = conv4_network(spec)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    maml = kerameta.MAML(
        network,
        inner_steps=args.inner_steps,
        inner_learning_rate=spec["inner_learning_rate"],
        meta_gradient=args.meta_gradient,
        unroll_inner_loop=args.unroll_inner_loop,
        accumulate_tasks=args.accumulate_tasks,
    )
    maml.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=loss,
        jit_compile=True if args.jit_compile else "auto",
        steps_per_execution=args.steps_per_execution,
    )
    per_execution = args.steps_per_execution
    warmup = spec["warmup"] if args.warmup is None else args.warmup
    repeats = spec["repeats"] if args.repeats is None else args.repeats
    # Callbacks see one batch per execution: time executions, report per
    # meta-iteration.
    warmup, repeats = warmup * per_execution, repeats * per_execution

    class RepeatedBatch(keras.utils.PyDataset):
        """The same batch of episodes, `warmup + repeats` times."""

        def __len__(self):
            return warmup + repeats

        def __getitem__(self, index):
            x = {k: episode[k] for k in ("support_x", "support_y", "query_x")}
            return x, episode["query_y"]

    class BatchTimer(keras.callbacks.Callback):
        """Seconds per batch, synchronised on the loss value."""

        def __init__(self):
            super().__init__()
            self.seconds = []
            self.losses = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))  # blocks until done
            self.seconds.append(time.perf_counter() - self.start)

    timer = BatchTimer()
    maml.fit(RepeatedBatch(), epochs=1, verbose=0, callbacks=[timer])
    skip = warmup // per_execution
    times_ms = [1e3 * s / per_execution for s in timer.seconds[skip:]]
    if not all(np.isfinite(timer.losses)):
        raise RuntimeError(f"Non-finite meta-loss: {timer.losses}")
    median = statistics.median(times_ms)
    return {
        "framework": "kerameta",
        "backend": keras.config.backend(),
        "vectorize_tasks": maml.vectorize_tasks,
        "jit_compile": maml.jit_compile,
        "median_ms": median,
        "p10_ms": float(np.percentile(times_ms, 10)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "iterations_per_s": 1e3 / median,
        "first_step_s": timer.seconds[0],
        "peak_rss_mb": peak_rss_mb(),
        "warmup": warmup,
        "repeats": repeats,
        "steps_per_execution": per_execution,
        "unroll_inner_loop": args.unroll_inner_loop,
        "accumulate_tasks": args.accumulate_tasks,
        # What ran (the options resolved for this backend and model).
        **resolved_settings(maml),
        "threads": _torch_threads(),
        **device_facts(keras.config.backend(), memory=True),
    }


def resolved_settings(maml) -> dict[str, object]:
    """Whether `maml`'s inner loop rolled and its tasks accumulated.

    On JAX also kerameta's XLA:CPU compiler options and `XLA_FLAGS`.
    """
    import keras

    from kerameta.src.engine import accumulation

    parts = maml._components()
    settings = {
        "inner_loop": "rolled" if parts.rolls() else "unrolled",
        "tasks": (
            "accumulated"
            if accumulation.resolve(maml.accumulate_tasks, parts)
            else "together"
        ),
    }
    if keras.config.backend() == "jax":
        from kerameta.src.backend import jax_cpu_kernels

        settings["xla_compiler_options"] = jax_cpu_kernels.compiler_options()
        settings["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return settings


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


# --------------------------------------------------------------------------
# The PyTorch per-task-loop baseline
# --------------------------------------------------------------------------


def check_baseline_against_reference() -> float:
    """The baseline's meta-gradient vs the float64 NumPy reference.

    Returns the norm-relative error of a 2-step second-order meta-gradient
    of a small ReLU MLP; raises if it exceeds 1e-5.
    """
    import torch

    from benchmarks import torch_loop_baseline as baseline
    from tests.reference import numpy_maml

    rng = np.random.default_rng(0)
    params = numpy_maml.init_mlp_params(rng, [1, 8, 8, 1], scale=0.5)
    tasks = [
        {
            "support_x": rng.uniform(-2, 2, (6, 1)),
            "support_y": rng.normal(size=(6, 1)),
            "query_x": rng.uniform(-2, 2, (5, 1)),
            "query_y": rng.normal(size=(5, 1)),
        }
        for _ in range(3)
    ]
    expected = numpy_maml.second_order_meta_gradient(
        "mlp", params, tasks, "mse", inner_steps=2, learning_rate=0.1
    )
    module = torch.nn.Sequential(
        torch.nn.Linear(1, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 1),
    ).double()
    baseline.load_keras_order_weights(module, params)
    episode = {k: np.stack([t[k] for t in tasks]) for k in tasks[0]}
    _, grads = baseline.meta_gradient(module, episode, "mse", 2, 0.1)
    grads = [g.T if g.ndim == 2 else g for g in grads]  # back to Keras
    flat = np.concatenate([g.ravel() for g in grads])
    reference = np.concatenate([np.ravel(g) for g in expected])
    error = float(np.linalg.norm(flat - reference) / np.linalg.norm(reference))
    if error > 1e-5:
        raise RuntimeError(
            f"The PyTorch baseline disagrees with the NumPy reference: "
            f"relative error {error:.2e} > 1e-5."
        )
    return error


def run_baseline(args: argparse.Namespace) -> dict[str, object]:
    """Times the plain PyTorch task-loop MAML on one configuration."""
    import torch

    from benchmarks import torch_loop_baseline as baseline

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    device = args.device or "cpu"
    where = baseline.torch_device(device)
    error = check_baseline_against_reference()  # on the CPU, in float64
    torch.manual_seed(0)
    spec = PROBLEMS[args.problem]
    episode = make_episode(args.problem)
    if args.problem == "sinusoid":
        module, loss = baseline.sinusoid_mlp(), "mse"
    else:
        module = baseline.conv4(spec["ways"], spec["filters"], 1)
        loss = "sparse_categorical_crossentropy"
    module.to(where)
    step = baseline.make_meta_step(
        module,
        loss,
        args.inner_steps,
        spec["inner_learning_rate"],
        first_order=args.meta_gradient == "first_order",
    )
    warmup = spec["warmup"] if args.warmup is None else args.warmup
    repeats = spec["repeats"] if args.repeats is None else args.repeats
    timing = baseline.time_meta_steps(
        step,
        baseline.episode_to_tensors(episode, loss, device=where),
        warmup,
        repeats,
        device=device,
    )
    facts = {"device": "cpu"}
    if device == "gpu":
        facts = {
            "device": "gpu",
            "device_name": torch.cuda.get_device_name(where),
            "peak_device_mb": torch.cuda.max_memory_allocated(where) / MIB,
        }
    return {
        "framework": "torch-loop",
        "backend": "torch",
        "threads": torch.get_num_threads(),
        "reference_error": error,
        "iterations_per_s": 1e3 / timing["median_ms"],
        "peak_rss_mb": peak_rss_mb(),
        "warmup": warmup,
        "repeats": repeats,
        **timing,
        **facts,
    }


# --------------------------------------------------------------------------
# Driver: one process per configuration
# --------------------------------------------------------------------------


def run_one(args: argparse.Namespace) -> None:
    spec = PROBLEMS[args.problem]
    if args.baseline:
        result = run_baseline(args)
    else:
        result = run_kerameta(args)
    record = {
        "run": args.run,
        "date": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "problem": args.problem,
        "tasks": spec["tasks"],
        "inner_steps": args.inner_steps,
        "meta_gradient": args.meta_gradient,
        **machine_facts(),
        **result,  # its "device" (and on a GPU, "device_name")
    }
    with open(args.output, "a") as file:
        file.write(json.dumps(record) + "\n")
    print(
        f"{record['framework']:>10} {record['backend']:>10} "
        f"{args.problem:>8} steps={args.inner_steps} "
        f"median={record['median_ms']:.1f} ms "
        f"first={record['first_step_s']:.1f} s "
        f"rss={record['peak_rss_mb']:.0f} MiB"
        + (
            f" {record['device_name']} "
            f"peak={record.get('peak_device_mb') or 0:.0f} MiB"
            if record["device"] == "gpu"
            else ""
        ),
        flush=True,
    )


def one_command(
    args: argparse.Namespace,
    problem: str,
    inner_steps: int,
    baseline: bool,
    run: str,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs one configuration in a fresh process."""
    command = [
        python,
        __file__,
        "--one",
        f"--problem={problem}",
        f"--inner-steps={inner_steps}",
        f"--meta-gradient={args.meta_gradient}",
        f"--output={args.output}",
        f"--run={run}",
    ]
    command += ["--baseline"] if baseline else []
    command += ["--jit-compile"] if args.jit_compile else []
    if args.torch_threads is not None:
        command.append(f"--torch-threads={args.torch_threads}")
    if not baseline:
        command.append(f"--steps-per-execution={args.steps_per_execution}")
        command.append(
            f"--unroll-inner-loop={_option_text(args.unroll_inner_loop)}"
        )
        command.append(
            f"--accumulate-tasks={_option_text(args.accumulate_tasks)}"
        )
    if args.warmup is not None:
        command.append(f"--warmup={args.warmup}")
    if args.repeats is not None:
        command.append(f"--repeats={args.repeats}")
    if args.device is not None:
        command.append(f"--device={args.device}")
    return command


def run_all(args: argparse.Namespace) -> None:
    """Runs every configuration, each in a fresh process of this script."""
    if args.with_baseline and importlib.util.find_spec("torch") is None:
        raise SystemExit(
            "The PyTorch baseline needs torch in this environment. Install "
            "the CPU build (`pip install torch==2.13.0`) or pass "
            "--no-baseline."
        )
    problems = [args.problem] if args.problem else list(PROBLEMS)
    run = args.run or uuid.uuid4().hex[:8]
    for problem in problems:
        steps = (
            [args.inner_steps]
            if args.inner_steps
            else PROBLEMS[problem]["inner_steps"]
        )
        for inner_steps in steps:
            for baseline in [False, True] if args.with_baseline else [False]:
                subprocess.run(
                    one_command(args, problem, inner_steps, baseline, run),
                    check=True,
                )


def _option(text: str) -> str | bool:
    """A switch of `MAML`: `auto`, `true` or `false`."""
    options = {"auto": "auto", "true": True, "false": False}
    if text.lower() not in options:
        raise argparse.ArgumentTypeError(
            f"expected auto, true or false, received {text!r}"
        )
    return options[text.lower()]


def _option_text(value: str | bool) -> str:
    return str(value).lower()


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (`benchmarks/gpu.py` reuses it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", choices=sorted(PROBLEMS))
    parser.add_argument("--inner-steps", type=int)
    parser.add_argument(
        "--meta-gradient",
        default="second_order",
        choices=["second_order", "first_order"],
    )
    parser.add_argument("--warmup", type=int, help="untimed iterations")
    parser.add_argument("--repeats", type=int, help="timed iterations")
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile with jit_compile=True (default: Keras's 'auto')",
    )
    parser.add_argument(
        "--no-baseline",
        dest="with_baseline",
        action="store_false",
        help="skip the PyTorch task-loop baseline",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=1,
        help="meta-iterations per `fit` execution (Keras's "
        "`steps_per_execution`); timings are per meta-iteration",
    )
    parser.add_argument(
        "--unroll-inner-loop",
        type=_option,
        default="auto",
        help="MAML(unroll_inner_loop=...): auto (the default), true (trace "
        "every inner step) or false (roll the inner loop)",
    )
    parser.add_argument(
        "--accumulate-tasks",
        type=_option,
        default="auto",
        help="MAML(accumulate_tasks=...): auto (the default), true (one "
        "task's meta-gradient at a time) or false (all tasks together)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads for PyTorch (kerameta and the baseline)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        help="the device to run on: the baseline is placed there, and a "
        "kerameta run stops if its backend computes elsewhere (default: the "
        "backend's choice, the baseline on the CPU)",
    )
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--run", help="run id grouping results (default new)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help="internal")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Run from a checkout: `kerameta`, `benchmarks` and `tests` importable.
    sys.path.insert(0, str(ROOT))
    if args.one:
        run_one(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
