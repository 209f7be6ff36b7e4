"""Data-parallel scaling of JAX meta-training over 1, 2 and 4 devices.

Each point (problem x device count) runs in its own process with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`, under
`keras.distribution.DataParallel` over the N devices (no distribution for
N = 1), and times `MAML.fit` on the same batch of tasks repeated: a
callback times every batch and blocks on its loss, so a timing covers the
whole meta-iteration; the first `warmup` batches (compilation) are left
out and the median of the rest is kept.

Communication. A second, short `fit` runs under the JAX profiler. XLA:CPU
records every collective it runs (`all-reduce.*`, `all-gather.*`, ...) as
an event on the thread of the device that runs it; its first `Rendezvous`
is the time that device waits for the others to arrive, the rest is the
exchange itself. Per device and meta-iteration, *comm* is the mean time
inside collectives (wait included) and *exchange* the same less the
arrival wait; each is given as a fraction of the profiled steps' time
(the profiler slows every step down, so the shares are taken within the
profiled run).
The wait is load imbalance, not transfer: with N forced host devices on
fewer cores, a device whose thread is descheduled makes the others wait.
The report takes the median over every recorded run of a point.

Forced host devices are N XLA:CPU devices in one process that share the
machine's cores (one Eigen thread pool); they model the program that runs
on N accelerators (the sharding, the collectives), not N times the
compute. On a 2-core machine, 2 and 4 devices add no arithmetic units: a
gain can only come from cores one device leaves idle, and the rows mostly
measure the overhead of splitting the task batch (per-device dispatch,
the meta-gradient all-reduce) on the same cores.

Problems (random data, fixed seed, second order, 1 inner step, Adam):

- `sinusoid`: MLP 1-40-40-1 (ReLU), 32 tasks, 10 support + 10 query
  points, MSE: the vectorized (`vmap`) task path.
- `conv`: Conv-4 with 16 filters (batch normalization), 28x28x1 inputs,
  5-way 1-shot, 5 queries per class, 16 tasks: the looped (`lax.map`,
  `shard_map`-ed) task path.

Usage:

```bash
python benchmarks/scaling.py                    # every point, then the table
python benchmarks/scaling.py --problem sinusoid --devices 1 2
python benchmarks/scaling.py --report-only      # the table from the JSONL
```

Every point is one JSON line appended to `benchmarks/scaling_results.jsonl`;
`benchmarks/SCALING.md` shows each point's median over all its runs.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import gzip
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import meta_iteration  # noqa: E402  (machine facts, the Conv-4)

DEFAULT_OUTPUT = HERE / "scaling_results.jsonl"
DEFAULT_REPORT = HERE / "SCALING.md"
PACKAGES = ("keras", "jax", "jaxlib")
COLLECTIVES = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
)

PROBLEMS = {
    "sinusoid": {
        "title": "Sinusoid MLP (1-40-40-1), 32 tasks, 10 + 10 points",
        "tasks": 32,
        "support": 10,
        "query": 10,
        "warmup": 3,
        "repeats": 20,
        "profiled": 5,
    },
    "conv": {
        "title": "Conv-4 (16 filters, BN), 28x28x1, 5-way 1-shot, 5 "
        "queries, 16 tasks",
        "tasks": 16,
        "ways": 5,
        "queries": 5,
        "filters": 16,
        "warmup": 2,
        "repeats": 6,
        "profiled": 2,
    },
}


def machine_facts() -> dict[str, object]:
    """The CPU model, core count and library versions of this run."""
    return meta_iteration.machine_facts(PACKAGES)


def make_batch(problem: str, seed: int = 0):
    """`(x, query_y)`: one batch of random episodes for `problem`."""
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
        }, y[:, support:]
    ways, queries = spec["ways"], spec["queries"]
    labels = np.arange(ways, dtype="int32")
    return {
        "support_x": rng.random((tasks, ways, 28, 28, 1), dtype=np.float32),
        "support_y": np.tile(labels, (tasks, 1)),
        "query_x": rng.random(
            (tasks, ways * queries, 28, 28, 1), dtype=np.float32
        ),
    }, np.tile(np.repeat(labels, queries), (tasks, 1))


def build(problem: str):
    """The network and its loss (built under the active distribution)."""
    import keras

    keras.utils.set_random_seed(0)
    if problem == "sinusoid":
        network = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(40, activation="relu"),
                keras.layers.Dense(40, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        return network, "mse", 0.01
    network = meta_iteration.conv4_network(PROBLEMS[problem])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return network, loss, 0.4


def collective_seconds(trace_dir: str) -> dict[str, float]:
    """Seconds per device inside collectives, and of those in the wait.

    Reads the Perfetto trace the JAX profiler wrote: each collective event
    (on the thread of the device that ran it) and, inside it, the first
    `Rendezvous` event, the wait for the other devices to arrive.
    """
    paths = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    if not paths:
        raise RuntimeError(f"The JAX profiler wrote no trace in {trace_dir}.")
    with gzip.open(max(paths, key=os.path.getmtime)) as f:
        events = json.load(f)["traceEvents"]
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    by_thread: dict[tuple, list] = {}
    for event in spans:
        by_thread.setdefault((event["pid"], event["tid"]), []).append(event)
    total, wait, devices = 0.0, 0.0, set()
    for thread in by_thread.values():
        rendezvous = sorted(
            (e for e in thread if e["name"] == "Rendezvous"),
            key=lambda e: e["ts"],
        )
        for event in thread:
            if not event["name"].startswith(COLLECTIVES):
                continue
            devices.add(event.get("args", {}).get("device_ordinal"))
            total += event["dur"]
            end = event["ts"] + event["dur"]
            inside = [r for r in rendezvous if event["ts"] <= r["ts"] <= end]
            if inside:
                wait += inside[0]["dur"]
    count = max(len(devices), 1)
    return {"total_s": total / 1e6 / count, "wait_s": wait / 1e6 / count}


def run_point(problem: str, devices: int, warmup, repeats, profiled):
    """Times `fit` on one problem over `devices` forced host devices."""
    import jax
    import keras

    import kerameta

    assert len(jax.devices()) >= devices, jax.devices()
    load_average = os.getloadavg()[0]  # other work on the machine
    spec = PROBLEMS[problem]
    warmup = spec["warmup"] if warmup is None else warmup
    repeats = spec["repeats"] if repeats is None else repeats
    profiled = spec["profiled"] if profiled is None else profiled
    distribution = None
    if devices > 1:
        distribution = keras.distribution.DataParallel(
            devices=jax.devices()[:devices]
        )
    keras.distribution.set_distribution(distribution)  # before building
    network, loss, inner_learning_rate = build(problem)
    maml = kerameta.MAML(
        network, inner_steps=1, inner_learning_rate=inner_learning_rate
    )
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    x, y = make_batch(problem)

    class RepeatedBatch(keras.utils.PyDataset):
        def __init__(self, length):
            super().__init__()
            self.length = length

        def __len__(self):
            return self.length

        def __getitem__(self, index):
            return x, y

    class BatchTimer(keras.callbacks.Callback):
        """Seconds per batch, synchronised on the loss value."""

        def __init__(self):
            super().__init__()
            self.seconds, self.losses = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))  # blocks until done
            self.seconds.append(time.perf_counter() - self.start)

    timer = BatchTimer()
    maml.fit(
        RepeatedBatch(warmup + repeats), epochs=1, verbose=0, callbacks=[timer]
    )
    if not np.all(np.isfinite(timer.losses)):
        raise RuntimeError(f"Non-finite meta-loss: {timer.losses}")
    times_ms = [1e3 * s for s in timer.seconds[warmup:]]
    median_ms = statistics.median(times_ms)

    # The profiler slows every step down: the shares are of the profiled
    # steps' own time.
    comm = {"total_s": 0.0, "wait_s": 0.0}
    profiled_timer = BatchTimer()
    if devices > 1 and profiled:
        with tempfile.TemporaryDirectory() as trace_dir:
            jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
            try:
                maml.fit(
                    RepeatedBatch(profiled),
                    epochs=1,
                    verbose=0,
                    callbacks=[profiled_timer],
                )
            finally:
                jax.profiler.stop_trace()
            comm = collective_seconds(trace_dir)
    profiled_ms = 1e3 * sum(profiled_timer.seconds) or 1.0
    comm_ms = 1e3 * comm["total_s"]
    exchange_ms = 1e3 * (comm["total_s"] - comm["wait_s"])
    return {
        "backend": "jax",
        "load_average": load_average,
        "problem": problem,
        "devices": devices,
        "tasks": spec["tasks"],
        "tasks_per_device": spec["tasks"] // devices,
        "vectorize_tasks": maml.vectorize_tasks,
        "median_ms": median_ms,
        "p10_ms": float(np.percentile(times_ms, 10)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "first_step_s": timer.seconds[0],
        "profiled_ms_per_step": profiled_ms / max(profiled, 1),
        "comm_ms_per_step": comm_ms / max(profiled, 1),
        "exchange_ms_per_step": exchange_ms / max(profiled, 1),
        "comm_fraction": comm_ms / profiled_ms,
        "exchange_fraction": exchange_ms / profiled_ms,
        "warmup": warmup,
        "repeats": repeats,
        "profiled": profiled,
    }


def child_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"
    env["JAX_PLATFORMS"] = "cpu"
    flags = env.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if "force_host_platform_device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    return env


def run_all(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    facts = machine_facts()
    for problem in args.problem:
        for devices in args.devices:
            command = [
                sys.executable,
                __file__,
                "--child",
                "--problem",
                problem,
                "--devices",
                str(devices),
            ]
            for name in ("warmup", "repeats", "profiled"):
                if getattr(args, name) is not None:
                    command += [f"--{name}", str(getattr(args, name))]
            completed = subprocess.run(
                command,
                env=child_env(devices),
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [
                line[len("RESULT ") :]
                for line in completed.stdout.splitlines()
                if line.startswith("RESULT ")
            ]
            if completed.returncode or len(lines) != 1:
                raise RuntimeError(
                    f"{problem} on {devices} devices failed:\n"
                    f"{completed.stderr[-3000:]}"
                )
            record = {
                "run": run,
                "date": datetime.datetime.now(datetime.UTC)
                .replace(microsecond=0)
                .isoformat(),
                **facts,
                **json.loads(lines[0]),
            }
            with open(args.output, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            print(
                f"{problem:8} {devices} devices: "
                f"{record['median_ms']:8.1f} ms, "
                f"comm {100 * record['comm_fraction']:4.1f}% "
                f"(exchange {100 * record['exchange_fraction']:4.1f}%)",
                flush=True,
            )


def report(records: list[dict], output: pathlib.Path) -> None:
    """Writes every point's records (medians over runs) as Markdown."""
    points: dict[tuple, list] = {}
    for record in records:
        key = (record["problem"], record["devices"])
        points.setdefault(key, []).append(record)
    if not points:
        raise RuntimeError("No scaling results to report.")
    newest = max(records, key=lambda r: r["date"])
    versions = ", ".join(f"{k} {v}" for k, v in newest["versions"].items())
    loads = [r.get("load_average", math.nan) for r in records]

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    lines = [
        "# Data-parallel scaling (JAX, forced host devices)",
        "",
        "Written by `benchmarks/scaling.py` from "
        "`benchmarks/scaling_results.jsonl`; regenerate with "
        "`python benchmarks/scaling.py` (see its docstring for the method).",
        "",
        f"- Machine: {newest['cpu']}, {newest['cores']} cores, CPU only, "
        f"Python {newest['python']}.",
        f"- Versions: {versions}.",
        f"- Load average (1 minute) when each point started: "
        f"{min(loads):.1f} to {max(loads):.1f} on {newest['cores']} cores "
        "(other jobs shared the machine; the timings are noisy).",
        "- *devices*: forced XLA:CPU host devices "
        "(`--xla_force_host_platform_device_count`) under "
        "`keras.distribution.DataParallel` (none for 1); the task axis is "
        "the batch axis. *median ms*: time per meta-iteration through "
        "`MAML.fit` (second order, 1 inner step, Adam), synchronised on the "
        "loss, after warm-up, then the median over *runs* separate runs "
        "(processes), whose own medians span *run range*. *speed-up*: the "
        "1-device median over this one.",
        "- *comm %*: mean time a device spends inside collectives per "
        "meta-iteration (from a JAX profiler trace), as a share of the "
        "meta-iteration time in the same profiled run; *exchange %*: the "
        "same without the wait for the other devices to arrive at the "
        "collective (its first rendezvous): the reduction itself.",
        "- These devices share the machine's cores. Forced host devices "
        "model the sharded program (each device runs its own tasks, one "
        "all-reduce of the meta-gradient), not more compute: with "
        f"{newest['cores']} cores, more devices add no arithmetic units. A "
        "gain can only come from cores that one device leaves idle (the "
        "looped conv path runs small kernels one task at a time), and the "
        "rows mostly measure what splitting the task batch costs on the "
        "same cores: per-device dispatch and the all-reduce, which dominate "
        "a 1 ms step. The wait inside collectives is load imbalance (a "
        "device's thread descheduled), not transfer. On N real "
        "accelerators each device would run 1/N of the tasks; read the "
        "*exchange* column as the communication share to expect there, "
        "for these model sizes, before any transfer between chips.",
        "",
    ]
    for problem, spec in PROBLEMS.items():
        rows = sorted(
            (runs for (p, _), runs in points.items() if p == problem),
            key=lambda runs: runs[0]["devices"],
        )
        if not rows:
            continue
        one = next((r for r in rows if r[0]["devices"] == 1), None)
        path = (
            "vmap" if rows[0][0]["vectorize_tasks"] else "lax.map + shard_map"
        )
        lines += [
            f"## {spec['title']} ({path})",
            "",
            "| devices | tasks per device | median ms | runs | run range ms "
            "| speed-up | comm % | exchange % | first step s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for runs in rows:
            ms = median(runs, "median_ms")
            low = min(r["median_ms"] for r in runs)
            high = max(r["median_ms"] for r in runs)
            speed = f"{median(one, 'median_ms') / ms:.2f}×" if one else "—"
            lines.append(
                f"| {runs[0]['devices']} | {runs[0]['tasks_per_device']} | "
                f"{ms:.1f} | {len(runs)} | {low:.1f}–{high:.1f} | {speed} | "
                f"{100 * median(runs, 'comm_fraction'):.1f} | "
                f"{100 * median(runs, 'exchange_fraction'):.1f} | "
                f"{median(runs, 'first_step_s'):.1f} |"
            )
        lines.append("")
    output.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--problem", nargs="+", default=list(PROBLEMS), choices=PROBLEMS
    )
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--profiled", type=int)
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--report", type=pathlib.Path, default=DEFAULT_REPORT)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (problem,), (devices,) = args.problem, args.devices
        result = run_point(
            problem, devices, args.warmup, args.repeats, args.profiled
        )
        print("RESULT " + json.dumps(result), flush=True)
        return
    if not args.report_only:
        run_all(args)
    records = [
        json.loads(line)
        for line in args.output.read_text("utf-8").splitlines()
        if line.strip()
    ]
    report(records, args.report)
    print(f"Wrote {args.report}")


if __name__ == "__main__":
    main()
