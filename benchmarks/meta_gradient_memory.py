"""Meta-gradient benchmark: peak memory and time per meta-iteration.

For every meta-gradient estimator, on each backend, at 1, 5, 10 and 20
inner steps, one meta-iteration of `MAML.fit` on the Conv-4 Omniglot shape
(28x28x1 images, 5-way 1-shot, one query per class as in Finn et al.'s
Omniglot training, 4 tasks per batch, the max-pooling Conv-4 of 64
filters, inner learning rate 0.1; random images and labels: memory and
time do not depend on the data, but a non-finite loss would stop `fit`
early, hence a rate below Finn et al.'s 1-step 0.4) is measured for:

- its first step (tracing and compilation on JAX and TensorFlow), timed
  apart;
- the median wall time of `--repeats` further meta-iterations, each
  synchronised on its loss (JAX dispatches asynchronously);
- its peak memory, two ways. On a CPU, from the resident set size (RSS)
  of the process (Linux `/proc/self/status`): `VmRSS` just before `fit`
  (model built and compiled, data in memory) is the *baseline*; after the
  warm-up, the C heap's free pages go back to the kernel (glibc
  `malloc_trim(0)`), `VmRSS` is read again and the kernel's peak mark is
  reset (`5` written to `/proc/self/clear_refs`), so `VmHWM` after the
  timed steps is their peak. *step memory* is that peak minus the RSS
  just before the timed steps (what a meta-iteration adds); *peak over
  baseline* is the same peak minus the baseline (an upper bound: it also
  counts what compilation left resident). The first step's peak over the
  baseline and `ru_maxrss` (the lifetime peak) are recorded too. On a GPU
  the same numbers come from the backend's device allocator:
  `memory_stats()` (JAX; its peak cannot be reset, so it is a lifetime
  peak), `torch.cuda.max_memory_allocated` and TensorFlow's
  `get_memory_info` (both reset after the warm-up), against the device
  memory in use before `fit` and after the warm-up.

Every point runs in a fresh process (the script re-runs itself with the
backend's interpreter), so no point inherits another's memory or compiled
functions; a point that runs past `--timeout` seconds is killed and
recorded as a timeout, and the larger step counts of that estimator on
that backend are recorded as skipped.

Estimators (`--estimators`, any subset; `kerameta.MAML(meta_gradient=...)`):
`second_order`, `first_order`, `multi_step` (`MultiStep(window=min(5, K),
variant="forward")`: at K = 1 the window is 1, exactly second order),
`multi_step_straight_through` (the same, `variant="straight_through"`),
`anil_second_order` (second order with `adapted_layers=[head]`: the
reference of the implicit estimator), `implicit` (`Implicit(cg_steps=20,
ridge=0.1)` with `adapted_layers=[head]`, the ANIL split; `--cg-steps`,
`--implicit-ridge`), `checkpointed` (exact second order, memory flat in
the steps) and, not run by default, `implicit_proximal`
(`Implicit(proximal=2.0)`, the whole network adapted, as iMAML). `head`
is the name of the model's final Dense layer. With `ridge=0` the sinusoid
head's Hessian (10 support points, 41 weights) is singular and CG
diverges (relative residual about 5e7 in our check), hence the default
ridge of 0.1, the smallest of the values tried (0.1, 1) at which CG
converged.

`--accuracy` instead meta-trains each estimator on sinusoid regression
(`kerameta.models.mlp`, 10 support and 10 query points, 10 tasks per batch,
5 inner steps, `--iterations` meta-iterations of Adam 1e-3, the same
initial weights and tasks for every estimator) and meta-tests it with
`kerameta.meta_test` (600 new tasks, mean squared error with its 95%
confidence interval), one process per (backend, estimator, seed).

Every point appends one JSON line (`"kind": "memory"` or `"accuracy"`) to
`--output` (default `benchmarks/meta_gradient_memory_results.jsonl`); after
a run, and with `--report` alone, the file is rendered into
`benchmarks/META_GRADIENT_MEMORY.md`: the tables, the ratios to second
order, and a verdict on each target of the issue (implicit and
checkpointed memory at 20 steps at most 1.2x that at 1 step; multi-step
with window w at least 0.6 w times faster than second order at equal
steps; sinusoid accuracy within the confidence interval of second-order
MAML for multi-step, of second-order ANIL for implicit). `--plot PATH`
draws memory and time against the inner steps (needs matplotlib).

Usage:

```bash
# the full grid, every backend (long: hours on a 2-core CPU):
python benchmarks/meta_gradient_memory.py --plot memory.png
# a subset, one backend:
python benchmarks/meta_gradient_memory.py --backends jax \
    --estimators second_order implicit checkpointed --inner-steps 1 20
# accuracy after a fixed budget, on sinusoid:
python benchmarks/meta_gradient_memory.py --accuracy --backends jax
# regenerate the Markdown (and a figure) from the JSONL:
python benchmarks/meta_gradient_memory.py --report --plot memory.png
```

Each backend runs with `--python-for BACKEND=PATH` (default
`/work/venvs/BACKEND/bin/python` where it exists, else this interpreter).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
DEFAULT_OUTPUT = HERE / "meta_gradient_memory_results.jsonl"
DEFAULT_REPORT = HERE / "META_GRADIENT_MEMORY.md"
VENVS = pathlib.Path("/work/venvs")

from meta_iteration import machine_facts  # noqa: E402
from meta_iteration import peak_rss_mb  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
INNER_STEPS = (1, 5, 10, 20)
MULTI_STEP_WINDOW = 5
RESULT_PREFIX = "RESULT "
MIB = 1024 * 1024

# Targets of the issue.
FLAT_MEMORY_RATIO = 1.2  # memory at the most steps / at 1 step, at most
FLAT_MEMORY_ESTIMATORS = ("implicit", "checkpointed")
MULTI_STEP_TIME_FACTOR = 0.6  # second order / multi-step time >= 0.6 w


# --------------------------------------------------------------------------
# The estimators: name -> MAML keyword arguments
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Context:
    """What an estimator's constructor may depend on."""

    inner_steps: int
    head: str  # the name of the model's final Dense layer (ANIL's head)
    cg_steps: int = 20
    ridge: float = 0.0


@dataclasses.dataclass(frozen=True)
class Estimator:
    label: str
    build: Callable[[Context], dict]
    # The estimator whose sinusoid accuracy this one must match.
    reference: str | None = None


def _multi_step(variant: str) -> Callable[[Context], dict]:
    def build(context: Context) -> dict:
        from kerameta.meta_gradients import MultiStep

        window = min(MULTI_STEP_WINDOW, context.inner_steps)
        return {"meta_gradient": MultiStep(window=window, variant=variant)}

    return build


def _implicit(context: Context) -> dict:
    from kerameta.meta_gradients import Implicit

    return {
        "meta_gradient": Implicit(
            cg_steps=context.cg_steps, ridge=context.ridge
        ),
        "adapted_layers": [context.head],
    }


def _implicit_proximal(context: Context) -> dict:
    from kerameta.meta_gradients import Implicit

    # iMAML's regularization strength for Omniglot (Rajeswaran et al.).
    return {
        "meta_gradient": Implicit(
            cg_steps=context.cg_steps, ridge=context.ridge, proximal=2.0
        )
    }


ESTIMATORS = {
    "second_order": Estimator(
        "MAML, second order",
        lambda context: {"meta_gradient": "second_order"},
    ),
    "first_order": Estimator(
        "MAML, first order",
        lambda context: {"meta_gradient": "first_order"},
        reference="second_order",
    ),
    "multi_step": Estimator(
        f"multi-step, forward, window min({MULTI_STEP_WINDOW}, K)",
        _multi_step("forward"),
        reference="second_order",
    ),
    "multi_step_straight_through": Estimator(
        f"multi-step, straight-through, window min({MULTI_STEP_WINDOW}, K)",
        _multi_step("straight_through"),
        reference="second_order",
    ),
    "anil_second_order": Estimator(
        "ANIL (head adapted), second order",
        lambda context: {
            "meta_gradient": "second_order",
            "adapted_layers": [context.head],
        },
    ),
    "implicit": Estimator(
        "implicit, ANIL split (head adapted)",
        _implicit,
        reference="anil_second_order",
    ),
    "checkpointed": Estimator(
        "checkpointed second order",
        lambda context: {"meta_gradient": "checkpointed"},
        reference="second_order",
    ),
    "implicit_proximal": Estimator(
        "implicit, proximal 2.0 (all adapted)",
        _implicit_proximal,
        reference="second_order",
    ),
}
DEFAULT_ESTIMATORS = (
    "second_order",
    "first_order",
    "multi_step",
    "multi_step_straight_through",
    "anil_second_order",
    "implicit",
    "checkpointed",
)
DEFAULT_ACCURACY_ESTIMATORS = (
    "second_order",
    "multi_step",
    "anil_second_order",
    "implicit",
)


# --------------------------------------------------------------------------
# Memory probes (run in the child)
# --------------------------------------------------------------------------


def _proc_status_mib(field: str) -> float | None:
    """A `/proc/self/status` field (`VmRSS`, `VmHWM`) in MiB, if readable."""
    try:
        text = pathlib.Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _release_free_memory() -> bool:
    """Returns the C heap's free pages to the kernel (glibc `malloc_trim`).

    Memory that the framework freed but `malloc` kept stays resident; the
    next meta-iteration would reuse it without raising the RSS. Trimmed,
    the pages fault in again when reused, so the peak RSS sees them.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (`VmHWM`) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


class DeviceMemory:
    """Bytes in use and peak bytes of the backend's GPU allocator."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "jax":
            import jax

            self.device = jax.devices()[0]
            self.scope = "process lifetime (JAX cannot reset it)"
        else:
            self.scope = "since the reset after the warm-up"

    def in_use_and_peak(self) -> tuple[float, float]:
        if self.backend == "jax":
            stats = self.device.memory_stats() or {}
            return (
                stats.get("bytes_in_use", 0) / MIB,
                stats.get("peak_bytes_in_use", 0) / MIB,
            )
        if self.backend == "torch":
            import torch

            return (
                torch.cuda.memory_allocated() / MIB,
                torch.cuda.max_memory_allocated() / MIB,
            )
        import tensorflow as tf

        info = tf.config.experimental.get_memory_info("GPU:0")
        return info["current"] / MIB, info["peak"] / MIB

    def reset_peak(self) -> None:
        if self.backend == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")


def step_probe(warmup: int, device_memory: DeviceMemory | None):
    """A callback that times every meta-iteration of `fit`, blocking on its
    loss, and resets the memory peaks after the `warmup` first ones."""
    import keras

    class StepProbe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.losses, self.logs = [], [], []
            self.after_warmup = {}

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            self.losses.append(float(logs["loss"]))  # blocks until done
            self.seconds.append(time.perf_counter() - self.start)
            self.logs.append(
                {k: float(v) for k, v in logs.items() if k != "loss"}
            )
            if len(self.seconds) == warmup:
                gc.collect()
                peak_mib = _proc_status_mib("VmHWM")
                trimmed = _release_free_memory()
                self.after_warmup = {
                    "peak_mib": peak_mib,
                    "rss_mib": _proc_status_mib("VmRSS"),
                    "malloc_trim": trimmed,
                }
                if device_memory is not None:
                    in_use, peak = device_memory.in_use_and_peak()
                    self.after_warmup["device_in_use_mib"] = in_use
                    self.after_warmup["device_peak_mib"] = peak
                    device_memory.reset_peak()
                self.after_warmup["peak_reset"] = _reset_peak_rss()

    return StepProbe()


def _repeated_batch(batch: tuple, count: int):
    import keras

    class RepeatedBatch(keras.utils.PyDataset):
        """The same batch of episodes, `count` times."""

        def __len__(self):
            return count

        def __getitem__(self, index):
            return batch

    return RepeatedBatch()


def _final_dense(model) -> str:
    """The name of the model's last Dense layer (the ANIL head)."""
    import keras

    dense = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Dense)
    ]
    if not dense:
        raise ValueError(f"The model {model.name!r} has no Dense layer.")
    return dense[-1].name


def _meta_model(net, estimator: str, inner_steps: int, settings: dict):
    """The (uncompiled) `MAML` of one estimator, as the table builds it."""
    import kerameta

    context = Context(
        inner_steps=inner_steps,
        head=_final_dense(net),
        cg_steps=settings["cg_steps"],
        ridge=settings["implicit_ridge"],
    )
    return kerameta.MAML(
        net,
        inner_steps=inner_steps,
        inner_learning_rate=settings["inner_learning_rate"],
        **ESTIMATORS[estimator].build(context),
    )


def _estimator_facts(maml) -> dict:
    import kerameta

    meta_gradient = maml.meta_gradient
    facts = {
        "meta_gradient": repr(meta_gradient),
        "meta_gradient_config": kerameta.meta_gradients.serialize(
            meta_gradient
        ).get("config"),
        "adapted_variables": len(maml.adapted_variables),
        "trainable_variables": len(maml.trainable_variables),
        "vectorize_tasks": maml.vectorize_tasks,
        "jit_compile": maml.jit_compile,
    }
    if hasattr(meta_gradient, "window"):
        facts["window"] = meta_gradient.window
    return facts


def _conv4_episode(settings: dict, seed: int) -> tuple:
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks, ways = settings["tasks_per_batch"], settings["ways"]
    shots, queries = settings["shots"], settings["queries"]
    labels = np.arange(ways, dtype="int32")
    x = {
        "support_x": rng.random(
            (tasks, ways * shots, 28, 28, 1), dtype=np.float32
        ),
        "support_y": np.tile(np.repeat(labels, shots), (tasks, 1)),
        "query_x": rng.random(
            (tasks, ways * queries, 28, 28, 1), dtype=np.float32
        ),
    }
    return x, np.tile(np.repeat(labels, queries), (tasks, 1))


def child_memory(config: dict) -> dict:
    """One (estimator, inner steps) point on this process's backend."""
    import keras
    from omniglot_maml import device_kind

    import kerameta

    settings = config["settings"]
    keras.utils.set_random_seed(config["seed"])
    device = device_kind()
    net = kerameta.models.conv4(
        (28, 28, 1),
        settings["ways"],
        filters=settings["filters"],
        downsampling=settings["downsampling"],
    )
    maml = _meta_model(
        net, config["estimator"], config["inner_steps"], settings
    )
    maml.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    warmup, repeats = settings["warmup"], settings["repeats"]
    data = _repeated_batch(
        _conv4_episode(settings, config["seed"]), warmup + repeats
    )
    device_memory = None
    if device == "gpu":
        device_memory = DeviceMemory(keras.config.backend())
    gc.collect()
    baseline_mib = _proc_status_mib("VmRSS")
    device_baseline = None
    if device_memory is not None:
        device_baseline = device_memory.in_use_and_peak()
    probe = step_probe(warmup, device_memory)
    maml.fit(data, epochs=1, verbose=0, callbacks=[probe])
    peak_mib = _proc_status_mib("VmHWM")
    timed = probe.seconds[warmup:]
    if not timed:
        raise RuntimeError(
            f"No timed meta-iteration: fit ran {len(probe.seconds)} of "
            f"{warmup + repeats} (losses {probe.losses})."
        )
    after = probe.after_warmup
    result = {
        "device": device,
        "head": _final_dense(net),
        **_estimator_facts(maml),
        "first_step_s": probe.seconds[0],
        "median_ms": 1e3 * statistics.median(timed),
        "step_ms": [round(1e3 * s, 2) for s in probe.seconds],
        "timed_iterations": len(timed),
        "losses": probe.losses,
        "losses_finite": all(math.isfinite(v) for v in probe.losses),
        "extra_logs": probe.logs[-1],
        "memory_method": (
            "VmRSS before fit (baseline); malloc_trim(0) after the warm-up, "
            "then VmRSS, then the peak reset (/proc/self/clear_refs); VmHWM "
            "after the timed steps"
            if after.get("peak_reset")
            else "VmRSS before fit (baseline); VmHWM at the end (lifetime "
            "peak: /proc/self/clear_refs could not be written)"
        ),
        "baseline_rss_mib": baseline_mib,
        "warmup_peak_mib": after.get("peak_mib"),
        "rss_after_warmup_mib": after.get("rss_mib"),
        "peak_rss_mib": peak_mib,
        "peak_reset": after.get("peak_reset", False),
        "malloc_trim": after.get("malloc_trim", False),
        "ru_maxrss_mib": peak_rss_mb(),
    }
    if None not in (baseline_mib, peak_mib):
        result["step_memory_mib"] = peak_mib - after["rss_mib"]
        result["peak_delta_mib"] = peak_mib - baseline_mib
        result["warmup_peak_delta_mib"] = after["peak_mib"] - baseline_mib
    if device_memory is not None:
        # On a GPU the headline numbers are the device's, not the host's.
        for key in ("step_memory_mib", "peak_delta_mib"):
            result["host_" + key] = result.pop(key, None)
        in_use, peak = device_memory.in_use_and_peak()
        result["memory_method"] = (
            f"device allocator: peak ({device_memory.scope}) minus the bytes "
            "in use after the warm-up (step memory) and before fit"
        )
        result["device_memory"] = {
            "scope": device_memory.scope,
            "baseline_in_use_mib": device_baseline[0],
            "in_use_after_warmup_mib": after.get("device_in_use_mib"),
            "warmup_peak_mib": after.get("device_peak_mib"),
            "peak_mib": peak,
            "in_use_end_mib": in_use,
        }
        result["step_memory_mib"] = peak - after["device_in_use_mib"]
        result["peak_delta_mib"] = peak - device_baseline[0]
        result["warmup_peak_delta_mib"] = (
            after["device_peak_mib"] - device_baseline[0]
        )
    return result


def child_accuracy(config: dict) -> dict:
    """Meta-trains one estimator on sinusoid, then meta-tests it."""
    import keras
    from omniglot_maml import device_kind

    import kerameta

    settings = config["settings"]
    seed = config["seed"]
    keras.utils.set_random_seed(seed)
    net = kerameta.models.mlp()
    maml = _meta_model(
        net, config["estimator"], settings["inner_steps"], settings
    )
    maml.compile(
        optimizer=keras.optimizers.Adam(settings["meta_learning_rate"]),
        loss="mse",
    )
    episode = {"shots": settings["shots"], "query_shots": settings["queries"]}
    train = kerameta.data.SinusoidTasks(
        **episode,
        tasks_per_batch=settings["tasks_per_batch"],
        num_batches=settings["iterations"],
        seed=1000 + seed,
        new_tasks_each_epoch=True,
    )
    test_batch = 25
    test = kerameta.data.SinusoidTasks(
        **episode,
        tasks_per_batch=test_batch,
        num_batches=-(-settings["test_episodes"] // test_batch),
        seed=settings["test_seed"],
    )
    probe = step_probe(1, None)
    start = time.perf_counter()
    maml.fit(train, epochs=1, verbose=0, callbacks=[probe])
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = kerameta.meta_test(
        maml,
        test,
        episodes=settings["test_episodes"],
        metric="mean_squared_error",
    )
    residuals = [
        log["cg_residual"] for log in probe.logs if "cg_residual" in log
    ]
    return {
        "device": device_kind(),
        "head": _final_dense(net),
        **_estimator_facts(maml),
        "iterations_done": len(probe.seconds),
        "final_loss": probe.losses[-1] if probe.losses else None,
        "losses_finite": all(math.isfinite(v) for v in probe.losses),
        "train_seconds": train_seconds,
        "first_step_s": probe.seconds[0],
        "median_ms": 1e3 * statistics.median(probe.seconds[1:] or [0.0]),
        "test_mse": result.mean,
        "test_confidence_interval": result.confidence_interval,
        "test_episodes": result.episodes,
        "per_episode": [round(float(v), 6) for v in result.per_episode],
        "test_inner_steps": result.inner_steps,
        "test_seconds": time.perf_counter() - start,
        "median_cg_residual": (
            statistics.median(residuals) if residuals else None
        ),
        "ru_maxrss_mib": peak_rss_mb(),
    }


def run_child(config: dict) -> None:
    """The child process: computes one point, prints it as one line."""
    import keras

    function = child_memory if config["kind"] == "memory" else child_accuracy
    result = function(config)
    result["backend"] = keras.config.backend()
    result["machine"] = machine_facts()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# Driver: one fresh process per point
# --------------------------------------------------------------------------


def python_for(args: argparse.Namespace) -> dict[str, str]:
    """The interpreter of each backend: `--python-for`, the venv, or ours."""
    chosen = {}
    for item in args.python_for or []:
        backend, _, path = item.partition("=")
        if backend not in BACKENDS or not path:
            raise SystemExit(
                f"--python-for expects BACKEND=PATH with BACKEND one of "
                f"{BACKENDS}. Received: {item!r}"
            )
        chosen[backend] = path
    for backend in BACKENDS:
        if backend not in chosen:
            venv = VENVS / backend / "bin" / "python"
            chosen[backend] = str(venv) if venv.exists() else sys.executable
    return chosen


def spawn(python: str, backend: str, config: dict, timeout: float) -> dict:
    """Runs one point in a fresh interpreter; its record fields."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    command = [python, __file__, "--child", json.dumps(config)]
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # so that a timeout kills its whole group
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return {
            "status": "timeout",
            "timeout_s": timeout,
            "stderr_tail": stderr[-2000:],
        }
    wall = time.perf_counter() - start
    lines = [
        line[len(RESULT_PREFIX) :]
        for line in stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    if process.returncode != 0 or not lines:
        return {
            "status": "error",
            "returncode": process.returncode,
            "wall_s": wall,
            "stderr_tail": stderr[-3000:],
        }
    return {"status": "ok", "wall_s": wall, **json.loads(lines[-1])}


def _memory_settings(args: argparse.Namespace) -> dict:
    return {
        "problem": "conv4_omniglot",
        "input_shape": [28, 28, 1],
        "ways": args.ways,
        "shots": args.shots,
        "queries": args.queries,
        "tasks_per_batch": args.tasks_per_batch,
        "filters": args.filters,
        "downsampling": args.downsampling,
        "inner_learning_rate": args.inner_learning_rate,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "cg_steps": args.cg_steps,
        "implicit_ridge": args.implicit_ridge,
    }


def _accuracy_settings(args: argparse.Namespace) -> dict:
    return {
        "problem": "sinusoid",
        "shots": 10,
        "queries": 10,
        "tasks_per_batch": args.accuracy_tasks_per_batch,
        "inner_steps": args.accuracy_inner_steps,
        "inner_learning_rate": args.accuracy_inner_learning_rate,
        "meta_learning_rate": 1e-3,
        "iterations": args.iterations,
        "test_episodes": args.test_episodes,
        "test_seed": 12345,
        "cg_steps": args.cg_steps,
        "implicit_ridge": args.implicit_ridge,
    }


def _append(path: str, record: dict) -> None:
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_memory(args: argparse.Namespace) -> None:
    pythons = python_for(args)
    settings = _memory_settings(args)
    run = args.run or uuid.uuid4().hex[:8]
    for backend in args.backends:
        for estimator in args.estimators:
            failed_at = None
            for inner_steps in sorted(args.inner_steps):
                record = {
                    "kind": "memory",
                    "run": run,
                    "date": _now(),
                    "backend": backend,
                    "estimator": estimator,
                    "inner_steps": inner_steps,
                    "settings": settings,
                    "python": pythons[backend],
                }
                if failed_at is not None:
                    record.update(
                        status="skipped",
                        reason=f"{failed_at[1]} at {failed_at[0]} inner steps",
                    )
                else:
                    config = {
                        "kind": "memory",
                        "estimator": estimator,
                        "inner_steps": inner_steps,
                        "seed": args.seed,
                        "settings": settings,
                    }
                    record.update(
                        spawn(pythons[backend], backend, config, args.timeout)
                    )
                    if record["status"] in ("timeout", "error"):
                        failed_at = (inner_steps, record["status"])
                if record["status"] != "ok":
                    record["machine"] = machine_facts()  # the driver's
                _append(args.output, record)
                print(_memory_line(record), flush=True)


def _memory_line(record: dict) -> str:
    head = (
        f"{record['backend']:>10} {record['estimator']:>28} "
        f"K={record['inner_steps']:<2}"
    )
    if record["status"] != "ok":
        detail = record.get("reason") or record.get("stderr_tail", "")[-300:]
        return f"{head} {record['status'].upper()}: {detail}"
    return (
        f"{head} first={record['first_step_s']:.1f} s "
        f"median={record['median_ms']:.0f} ms "
        f"step memory={_fmt(record.get('step_memory_mib'))} MiB, "
        f"peak over baseline={_fmt(record.get('peak_delta_mib'))} MiB "
        f"(first step {_fmt(record.get('warmup_peak_delta_mib'))} MiB, "
        f"baseline {_fmt(record.get('baseline_rss_mib'))} MiB)"
    )


def run_accuracy(args: argparse.Namespace) -> None:
    pythons = python_for(args)
    settings = _accuracy_settings(args)
    run = args.run or uuid.uuid4().hex[:8]
    for backend in args.backends:
        for estimator in args.estimators:
            for seed in args.seeds:
                config = {
                    "kind": "accuracy",
                    "estimator": estimator,
                    "seed": seed,
                    "settings": settings,
                }
                record = {
                    "kind": "accuracy",
                    "run": run,
                    "date": _now(),
                    "backend": backend,
                    "estimator": estimator,
                    "seed": seed,
                    "inner_steps": settings["inner_steps"],
                    "settings": settings,
                    "python": pythons[backend],
                    **spawn(pythons[backend], backend, config, args.timeout),
                }
                if record["status"] != "ok":
                    record["machine"] = machine_facts()
                _append(args.output, record)
                head = f"{backend:>10} {estimator:>28} seed={seed}"
                if record["status"] == "ok":
                    print(
                        f"{head} test MSE {record['test_mse']:.4f} ± "
                        f"{record['test_confidence_interval']:.4f} "
                        f"({record['iterations_done']} iterations, "
                        f"{record['train_seconds']:.0f} s)",
                        flush=True,
                    )
                else:
                    tail = record.get("stderr_tail", "")[-300:]
                    print(f"{head} {record['status'].upper()}: {tail}")


# --------------------------------------------------------------------------
# Report and figure
# --------------------------------------------------------------------------


def load(path: str) -> list[dict]:
    file = pathlib.Path(path)
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line]


def _setup_key(settings: dict, ignore: tuple[str, ...]) -> str:
    return json.dumps(
        {k: v for k, v in settings.items() if k not in ignore}, sort_keys=True
    )


def _device(record: dict) -> str:
    return record.get("device", "cpu")


def memory_tables(records: list[dict]) -> dict[tuple, dict]:
    """The latest record of each point, by (backend, device, setup).

    A setup is the problem's settings less the warm-up and repeat counts;
    the ratios of the report are only taken within one setup.
    """
    groups: dict[tuple, dict] = {}
    for record in records:
        if record.get("kind") != "memory":
            continue
        key = (
            record["backend"],
            _device(record),
            _setup_key(record["settings"], ("warmup", "repeats")),
        )
        point = (record["estimator"], record["inner_steps"])
        groups.setdefault(key, {})[point] = record
    return groups


def _ok(record: dict | None) -> bool:
    return record is not None and record.get("status") == "ok"


def _fmt(value: float | None, spec: str = ".0f") -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return format(value, spec)


def _status_cell(record: dict) -> str:
    status = record["status"]
    if status == "timeout":
        return f"timeout (> {record['timeout_s']:g} s)"
    if status == "skipped":
        return f"skipped ({record['reason']})"
    if status == "error":
        last = (record.get("stderr_tail") or "").strip().splitlines()
        return "error: " + (last[-1][:120] if last else "?").replace("|", "/")
    return "ok" if record.get("losses_finite", True) else "ok, loss not finite"


def _order(names) -> list[str]:
    known = [n for n in ESTIMATORS if n in names]
    return known + sorted(n for n in names if n not in ESTIMATORS)


def _window_note(record: dict) -> str:
    window = record.get("window")
    if window is None:
        return ""
    if window == 1:
        return "w=1 (= second order)"
    return f"w={window}"


MEMORY_MEASURES = (
    ("step_memory_mib", "step memory"),
    ("peak_delta_mib", "peak over baseline"),
)


def _growth(table: dict, record: dict, low: int, field: str) -> str:
    """`field` of `record` over the same estimator's at `low` steps."""
    one = table.get((record["estimator"], low))
    value = record.get(field)
    if not _ok(one) or not one.get(field) or value is None:
        return "—"
    return f"{value / one[field]:.2f}×"


def render_memory_group(key: tuple, table: dict) -> list[str]:
    backend, device, setup = key
    settings = json.loads(setup)
    first = next((r for r in table.values() if _ok(r)), None)
    machine = (first or next(iter(table.values()))).get("machine", {})
    dates = sorted(r["date"] for r in table.values())
    estimators = _order({e for e, _ in table})
    steps = sorted({k for _, k in table})
    low = min(steps)
    queries = settings["queries"]
    lines = [
        f"### {backend}, {device.upper()}",
        "",
        f"Conv-4 ({settings['filters']} filters, "
        f"{settings['downsampling']}), {settings['ways']}-way "
        f"{settings['shots']}-shot, {queries} "
        f"quer{'y' if queries == 1 else 'ies'} per class, "
        f"{settings['tasks_per_batch']} tasks per meta-batch, inner learning "
        f"rate {settings['inner_learning_rate']:g}; "
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
        f"{_versions(machine)}; {dates[0][:10]}"
        + (f" to {dates[-1][:10]}" if dates[-1][:10] != dates[0][:10] else "")
        + ".",
        "",
        "| estimator | K | notes | first step (s) | ms / iteration "
        "| time vs second order | step memory (MiB) | vs K=" + str(low) + " "
        "| peak over baseline (MiB) | vs K=" + str(low) + " "
        "| first-step peak over baseline (MiB) | baseline (MiB) | status |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for estimator in estimators:
        for steps_k in steps:
            record = table.get((estimator, steps_k))
            if record is None:
                continue
            if not _ok(record):
                lines.append(
                    f"| {estimator} | {steps_k} | "
                    + "| — " * 9
                    + f"| {_status_cell(record)} |"
                )
                continue
            reference = table.get(("second_order", steps_k))
            ratio = "—"
            if _ok(reference) and estimator != "second_order":
                value = record["median_ms"] / reference["median_ms"]
                ratio = f"{value:.2f}× ({1 / value:.2f}× faster)"
            baseline = record.get("baseline_rss_mib")
            if "device_memory" in record:
                baseline = record["device_memory"]["baseline_in_use_mib"]
            lines.append(
                f"| {estimator} | {steps_k} | {_window_note(record)} "
                f"| {record['first_step_s']:.1f} "
                f"| {record['median_ms']:.0f} | {ratio} "
                f"| {_fmt(record.get('step_memory_mib'))} "
                f"| {_growth(table, record, low, 'step_memory_mib')} "
                f"| {_fmt(record.get('peak_delta_mib'))} "
                f"| {_growth(table, record, low, 'peak_delta_mib')} "
                f"| {_fmt(record.get('warmup_peak_delta_mib'))} "
                f"| {_fmt(baseline)} "
                f"| {_status_cell(record)} |"
            )
    lines += [""] + _memory_verdicts(table, steps) + [""]
    return lines


def _versions(machine: dict) -> str:
    versions = machine.get("versions", {})
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"


def _ratios(one: dict, many: dict) -> list[tuple[str, float, float, float]]:
    """(measure, ratio, value at many, value at one) for each measure."""
    ratios = []
    for field, label in MEMORY_MEASURES:
        if one.get(field) and many.get(field) is not None:
            ratios.append(
                (label, many[field] / one[field], many[field], one[field])
            )
    return ratios


def _memory_verdicts(table: dict, steps: list[int]) -> list[str]:
    lines = []
    low, high = min(steps), max(steps)
    target = f"memory at {high} vs {low} steps ≤ {FLAT_MEMORY_RATIO:g}×"
    for estimator in FLAT_MEMORY_ESTIMATORS:
        one, many = table.get((estimator, low)), table.get((estimator, high))
        if one is None and many is None:
            lines.append(f"- {estimator}, {target}: not run.")
            continue
        if low == high or not (_ok(one) and _ok(many)):
            state = many if many is not None else one
            why = "one K only" if _ok(state) else _status_cell(state)
            lines.append(f"- {estimator}, {target}: not measured ({why}).")
            continue
        cells = [
            f"{label} {ratio:.2f}× ({value:.0f} vs {base:.0f} MiB) "
            f"**{'met' if ratio <= FLAT_MEMORY_RATIO else 'MISSED'}**"
            for label, ratio, value, base in _ratios(one, many)
        ]
        lines.append(f"- {estimator}, {target}: " + "; ".join(cells) + ".")
    one, many = (
        table.get(("second_order", low)),
        table.get(("second_order", high)),
    )
    if low != high and _ok(one) and _ok(many):
        cells = [
            f"{label} {ratio:.2f}× ({value:.0f} vs {base:.0f} MiB)"
            for label, ratio, value, base in _ratios(one, many)
        ]
        lines.append(
            "- For comparison, second order: " + "; ".join(cells) + "."
        )
    for estimator in ("multi_step", "multi_step_straight_through"):
        cells = []
        for steps_k in steps:
            record = table.get((estimator, steps_k))
            reference = table.get(("second_order", steps_k))
            if not (_ok(record) and _ok(reference)):
                continue
            window = record.get("window", 1)
            speedup = reference["median_ms"] / record["median_ms"]
            goal = MULTI_STEP_TIME_FACTOR * window
            verdict = "met" if speedup >= goal else "MISSED"
            cells.append(
                f"K={steps_k}, w={window}: {speedup:.2f}× (≥ {goal:g}×) "
                f"**{verdict}**"
            )
        if cells:
            lines.append(
                f"- {estimator}, second-order time / multi-step time ≥ "
                f"{MULTI_STEP_TIME_FACTOR:g}·w: " + "; ".join(cells) + "."
            )
    return lines


def accuracy_tables(records: list[dict]) -> dict[tuple, dict]:
    groups: dict[tuple, dict] = {}
    for record in records:
        if record.get("kind") != "accuracy":
            continue
        key = (
            record["backend"],
            _device(record),
            _setup_key(record["settings"], ()),
        )
        point = (record["estimator"], record["seed"])
        groups.setdefault(key, {})[point] = record
    return groups


def render_accuracy_group(key: tuple, table: dict) -> list[str]:
    backend, device, setup = key
    settings = json.loads(setup)
    dates = sorted(r["date"] for r in table.values())
    lines = [
        f"### Sinusoid accuracy, {backend}, {device.upper()}",
        "",
        f"MLP 1-40-40-1, {settings['shots']} support + {settings['queries']} "
        f"query points, {settings['tasks_per_batch']} tasks per meta-batch, "
        f"{settings['inner_steps']} inner steps at "
        f"{settings['inner_learning_rate']:g}, Adam "
        f"{settings['meta_learning_rate']:g}, {settings['iterations']} "
        f"meta-iterations; meta-test on {settings['test_episodes']} new "
        f"tasks (mean squared error ± 95% CI, "
        f"{settings['inner_steps']} inner steps); implicit: "
        f"cg_steps={settings['cg_steps']}, ridge="
        f"{settings['implicit_ridge']:g}; {dates[0][:10]}. *vs reference*: "
        "the test MSE minus the reference's; *within* when the difference is "
        "at most the reference's CI half-width, *better* / *worse* beyond "
        "it. Target: within or better. *paired difference*: the mean of the "
        "per-task differences on the same test tasks, ± its 95% CI (a "
        "sharper comparison than the two intervals). *CG residual*: the "
        "median over meta-iterations of the implicit solve's relative "
        "residual.",
        "",
        "| estimator | seed | test MSE | reference | vs reference "
        "| verdict | paired difference | CG residual | ms / iteration "
        "| train (s) | status |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for estimator in _order({e for e, _ in table}):
        for seed in sorted({s for e, s in table if e == estimator}):
            record = table[estimator, seed]
            if not _ok(record):
                lines.append(
                    f"| {estimator} | {seed} | — | | | | | | | "
                    f"| {_status_cell(record)} |"
                )
                continue
            name = ESTIMATORS.get(estimator, Estimator("", dict)).reference
            reference = table.get((name, seed)) if name else None
            delta = verdict = paired = "—"
            if _ok(reference):
                paired = _paired_difference(record, reference)
                value = record["test_mse"] - reference["test_mse"]
                bound = reference["test_confidence_interval"]
                delta = f"{value:+.4f}"
                if abs(value) <= bound:
                    verdict = "within: **met**"
                elif value < 0:
                    verdict = "better: **met**"
                else:
                    verdict = "worse: **MISSED**"
            elif name:
                verdict = f"{name} not run"
            lines.append(
                f"| {estimator} | {seed} "
                f"| {record['test_mse']:.4f} ± "
                f"{record['test_confidence_interval']:.4f} "
                f"| {name or '—'} | {delta} | {verdict} | {paired} "
                f"| {_fmt(record.get('median_cg_residual'), '.1e')} "
                f"| {record['median_ms']:.1f} "
                f"| {record['train_seconds']:.0f} | {_status_cell(record)} |"
            )
    return lines + [""]


def _paired_difference(record: dict, reference: dict) -> str:
    """Mean per-episode difference on the same test tasks, ± 95% CI."""
    a, b = record.get("per_episode"), reference.get("per_episode")
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return "—"
    differences = [x - y for x, y in zip(a, b)]
    half = 1.96 * statistics.stdev(differences) / math.sqrt(len(a))
    return f"{statistics.fmean(differences):+.4f} ± {half:.4f}"


HOW_MEASURED = """\
How these numbers are measured. Every point ran in a fresh process, through
`MAML.fit` on one batch of random episodes, repeated. *first step*: the
first meta-iteration, tracing and compilation included. *ms / iteration*:
the median of the timed meta-iterations after the warm-up, each
synchronised on its loss. *time vs second order*: this estimator's time
over second order's at the same K (and its inverse, the speed-up).

Memory, on a CPU, is the process's resident set size (RSS, Linux
`/proc/self/status`). *baseline*: `VmRSS` just before `fit` (interpreter,
framework, model, data). After the warm-up the kernel's peak mark is
reset (`5` written to `/proc/self/clear_refs`), so `VmHWM` after the timed
meta-iterations is their peak RSS. *step memory*: that peak minus `VmRSS`
just before the timed meta-iterations, i.e. what a meta-iteration
allocates on top of what is already resident. The C heap's free pages
are returned to the kernel first (glibc `malloc_trim(0)`), so memory
reused from `malloc`'s free lists is counted; memory that a framework
keeps in its own caches between calls is not (on JAX's CPU runtime, in our
check, repeated 1-step meta-iterations raised the RSS by 1-2 MiB each
after the first timed one, which raised it by 27 MiB).
*peak over baseline*: the same
peak minus the baseline; it also counts what the first step left
resident (compiled code, allocator caches), so it is an upper bound of a
meta-iteration's needs. *first-step peak over baseline*: the same over the
first (compiling) step. The verdicts are given on both measures. On a GPU
the same three numbers come from the backend's device allocator (JAX
`memory_stats()`, a lifetime peak that cannot be reset;
`torch.cuda.max_memory_allocated` and TensorFlow's `get_memory_info`,
reset after the warm-up) and *baseline* is the device memory in use
before `fit`. *vs K=...*: the ratio to the same estimator's value at the
fewest steps. Multi-step uses the window min(5, K): at K = 1 it is exactly
second order. Timings on a shared 2-core CPU are noisy.
"""


def _backend_order(key: tuple) -> tuple:
    return (BACKENDS.index(key[0]) if key[0] in BACKENDS else 9, key)


def render(records: list[dict]) -> str:
    lines = [
        "# Meta-gradient estimators: memory and time",
        "",
        "Written by `benchmarks/meta_gradient_memory.py --report` from "
        "`benchmarks/meta_gradient_memory_results.jsonl`; the script's "
        "docstring states how to regenerate it.",
        "",
        HOW_MEASURED,
    ]
    memory = memory_tables(records)
    if memory:
        lines += ["## Peak memory and time against inner steps", ""]
        for key in sorted(memory, key=_backend_order):
            lines += render_memory_group(key, memory[key])
    accuracy = accuracy_tables(records)
    if accuracy:
        lines += ["## Accuracy after a fixed budget (sinusoid)", ""]
        for key in sorted(accuracy, key=_backend_order):
            lines += render_accuracy_group(key, accuracy[key])
    return "\n".join(lines).rstrip() + "\n"


def plot(records: list[dict], path: str) -> None:
    """Memory and time against the inner steps, one column per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = memory_tables(records)
    # The latest setup of each (backend, device).
    latest: dict[tuple, tuple] = {}
    for key, table in groups.items():
        date = max(r["date"] for r in table.values())
        if key[:2] not in latest or date > latest[key[:2]][0]:
            latest[key[:2]] = (date, key)
    keys = [latest[k][1] for k in sorted(latest)]
    if not keys:
        raise SystemExit("No memory results to plot.")
    rows = (
        ("step_memory_mib", "step memory (MiB)", 1.0),
        ("peak_delta_mib", "peak over baseline (MiB)", 1.0),
        ("median_ms", "seconds per meta-iteration", 1e-3),
    )
    figure, axes = plt.subplots(
        len(rows), len(keys), figsize=(5.5 * len(keys), 11), squeeze=False
    )
    for column, key in enumerate(keys):
        table = groups[key]
        for estimator in _order({e for e, _ in table}):
            points = sorted(
                (k, r)
                for (e, k), r in table.items()
                if e == estimator and _ok(r)
            )
            if not points:
                continue
            for row, (field, _, scale) in enumerate(rows):
                values = [r.get(field) for _, r in points]
                axes[row, column].plot(
                    [k for k, _ in points],
                    [None if v is None else v * scale for v in values],
                    marker="o",
                    label=estimator,
                )
        axes[0, column].set_title(f"{key[0]}, {key[1].upper()}")
        for row, (_, label, _) in enumerate(rows):
            axes[row, column].set_ylabel(label)
            axes[row, column].set_xlabel("inner steps K")
            axes[row, column].grid(True, alpha=0.3)
        axes[-1, column].set_yscale("log")
        axes[0, column].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"Saved the figure to {path}")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=list(ESTIMATORS),
        help="default: all but implicit_proximal (memory), or "
        + ", ".join(DEFAULT_ACCURACY_ESTIMATORS)
        + " (--accuracy)",
    )
    parser.add_argument(
        "--python-for",
        action="append",
        metavar="BACKEND=PATH",
        help="the interpreter of a backend (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per point"
    )
    parser.add_argument("--seed", type=int, default=0)
    memory = parser.add_argument_group("memory and time (Conv-4)")
    memory.add_argument(
        "--inner-steps", type=int, nargs="+", default=list(INNER_STEPS)
    )
    memory.add_argument("--tasks-per-batch", type=int, default=4)
    memory.add_argument("--ways", type=int, default=5)
    memory.add_argument("--shots", type=int, default=1)
    memory.add_argument(
        "--queries", type=int, default=1, help="query examples per class"
    )
    memory.add_argument("--filters", type=int, default=64)
    memory.add_argument(
        "--downsampling", choices=["max_pool", "strided"], default="max_pool"
    )
    memory.add_argument("--inner-learning-rate", type=float, default=0.1)
    memory.add_argument(
        "--warmup", type=int, default=1, help="untimed meta-iterations (>= 1)"
    )
    memory.add_argument(
        "--repeats", type=int, default=3, help="timed meta-iterations"
    )
    implicit = parser.add_argument_group("the implicit estimator")
    implicit.add_argument("--cg-steps", type=int, default=20)
    implicit.add_argument(
        "--implicit-ridge",
        type=float,
        default=0.1,
        help="Implicit(ridge=...); 0 leaves the sinusoid head's Hessian "
        "singular (10 points, 41 weights) and CG diverges",
    )
    accuracy = parser.add_argument_group("accuracy (sinusoid)")
    accuracy.add_argument(
        "--accuracy",
        action="store_true",
        help="run the sinusoid accuracy comparison instead",
    )
    accuracy.add_argument("--iterations", type=int, default=1000)
    accuracy.add_argument("--accuracy-inner-steps", type=int, default=5)
    accuracy.add_argument(
        "--accuracy-inner-learning-rate", type=float, default=0.01
    )
    accuracy.add_argument("--accuracy-tasks-per-batch", type=int, default=10)
    accuracy.add_argument("--test-episodes", type=int, default=600)
    accuracy.add_argument("--seeds", type=int, nargs="+", default=[0])
    output = parser.add_argument_group("output")
    output.add_argument("--output", default=str(DEFAULT_OUTPUT))
    output.add_argument("--report-output", default=str(DEFAULT_REPORT))
    output.add_argument(
        "--report",
        action="store_true",
        help="only render the Markdown (and --plot) from --output",
    )
    output.add_argument("--plot", metavar="PATH", help="save a PNG figure")
    output.add_argument("--run", help="run id grouping results (default new)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        run_child(json.loads(args.child))
        return
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the compiling step)")
    if not args.report:
        if args.estimators is None:
            args.estimators = list(
                DEFAULT_ACCURACY_ESTIMATORS
                if args.accuracy
                else DEFAULT_ESTIMATORS
            )
        if args.accuracy:
            run_accuracy(args)
        else:
            run_memory(args)
    records = load(args.output)
    if not records:
        raise SystemExit(f"No results in {args.output}: run the benchmark.")
    pathlib.Path(args.report_output).write_text(render(records))
    print(f"Wrote {args.report_output} from {len(records)} results.")
    if args.plot:
        plot(records, args.plot)


if __name__ == "__main__":
    main()
