"""Where a Conv-4 meta-iteration spends its time: a profile per framework.

Profiles the Conv-4 case of `meta_iteration.py` (5-way 1-shot, 15 queries,
32 tasks, one inner step, second order, Adam) after two warm-up
iterations, each framework in its own process:

- kerameta on JAX: `jax.profiler` traces two `train_on_batch` calls; the
  XLA:CPU events (one per executed HLO instruction, e.g.
  `convolution.12`) are summed by kind (`convolution`, `fusion`, `copy`,
  ...);
- kerameta on TensorFlow: `tf.profiler` traces two `train_on_batch`
  calls; the executor's op events (`op_name:OpType`) are summed by op
  type (self time);
- kerameta on PyTorch, and the per-task PyTorch loop of
  `torch_loop_baseline.py`: `torch.profiler` over two iterations, summed by
  ATen operator (self time).

Each record holds the wall time of a profiled iteration and the time per
kind; the report shows the largest kinds of each framework, per
meta-iteration. Profilers slow the step down a little; compare the shares
within a column. Results go to `benchmarks/profile_results.jsonl` and
`benchmarks/PROFILE.md` (included in the docs' benchmarks page).

Usage:

```bash
python benchmarks/profile_conv4.py            # every framework, then the table
python benchmarks/profile_conv4.py --report-only
```

`KERAS_BACKEND` is set per child process; run it from an environment with
JAX, TensorFlow, PyTorch and Keras installed, or pass `--python-jax` /
`--python-tensorflow` / `--python-torch` for each framework's interpreter.
TensorFlow runs as the environment sets it up: set
`TF_ENABLE_ONEDNN_OPTS=1` to profile its oneDNN kernels (off by default
on some CPUs, this benchmark's among them).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "profile_results.jsonl"
REPORT = HERE / "PROFILE.md"
FRAMEWORKS = ("jax", "tensorflow", "torch", "torch-loop")
STEPS = 2
TOP = 8


def _conv4_meta_model():
    import keras

    import kerameta
    from benchmarks import meta_iteration

    spec = meta_iteration.PROBLEMS["conv4"]
    meta = kerameta.MAML(
        meta_iteration.conv4_network(spec),
        inner_steps=1,
        inner_learning_rate=spec["inner_learning_rate"],
    )
    meta.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    episode = meta_iteration.make_episode("conv4")
    x = {k: episode[k] for k in ("support_x", "support_y", "query_x")}
    return meta, x, episode["query_y"]


def _kind(name: str) -> str:
    """`convolution.12` -> `convolution`; `fusion.3.clone` -> `fusion`."""
    return name.split(".", 1)[0] or name


def _jax_profile() -> dict[str, object]:
    import jax

    meta, x, y = _conv4_meta_model()
    for _ in range(2):
        meta.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        start = time.perf_counter()
        for _ in range(STEPS):
            meta.train_on_batch(x, y)
        wall = (time.perf_counter() - start) / STEPS
        jax.profiler.stop_trace()
        paths = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
        with gzip.open(max(paths, key=os.path.getmtime)) as f:
            events = json.load(f)["traceEvents"]
    return {"wall_s": wall, "kinds_s": hlo_self_seconds(events, STEPS)}


def hlo_self_seconds(events: list[dict], steps: int) -> dict[str, float]:
    """Seconds per step in each kind of HLO instruction, from trace events.

    The XLA:CPU events that name an HLO instruction (`args.hlo_op`), each
    with its self time: a `while` or `conditional` less the instructions
    that ran inside it (nested on the same thread).
    """
    threads = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "hlo_op" in event.get("args", {}):
            threads[(event["pid"], event["tid"])].append(
                (event["ts"], event["dur"], _kind(event["name"]))
            )
    return {
        kind: us / 1e6 / steps
        for kind, us in self_times(threads.values()).items()
    }


def self_times(threads) -> collections.Counter:
    """Total self time per kind: for each thread's `(start, duration,
    kind)` events, an event's duration less that of the events nested in
    it."""
    totals: collections.Counter = collections.Counter()
    for thread in threads:
        stack = []  # [end, kind, self time] of the enclosing events
        events = sorted(thread, key=lambda e: (e[0], -e[1]))
        for start, duration, kind in events:
            while stack and stack[-1][0] <= start:
                _, done, self_time = stack.pop()
                totals[done] += self_time
            if stack:
                stack[-1][2] -= duration
            stack.append([start + duration, kind, duration])
        for _, kind, self_time in stack:
            totals[kind] += self_time
    return totals


def _tensorflow_profile() -> dict[str, object]:
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    meta, x, y = _conv4_meta_model()
    for _ in range(2):
        meta.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        start = time.perf_counter()
        for _ in range(STEPS):
            meta.train_on_batch(x, y)
        wall = (time.perf_counter() - start) / STEPS
        tf.profiler.experimental.stop()
        paths = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
        space = xplane_pb2.XSpace()
        space.ParseFromString(pathlib.Path(max(paths)).read_bytes())
    return {"wall_s": wall, "kinds_s": tf_op_self_seconds(space, STEPS)}


def tf_op_self_seconds(space, steps: int) -> dict[str, float]:
    """Seconds per step in each TensorFlow op type, from an `XSpace`.

    TensorFlow's executor names each op kernel's host event
    `op_name:OpType`; events of other names (function calls, executor
    bookkeeping such as `ExecutorState::Process`, the `ParallelFor` work
    an op hands to other threads) are left out, and an op's self time
    excludes the ops nested in it (a `While` around its body).
    """
    threads = []
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            events = []
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or "::" in name:
                    continue  # not an op, e.g. `ExecutorState::Process`
                kind = name.rsplit(":", 1)[1]
                if not kind.isidentifier():
                    continue
                events.append((event.offset_ps, event.duration_ps, kind))
            threads.append(events)
    return {kind: ps / 1e12 / steps for kind, ps in self_times(threads).items()}


def _torch_profile(loop: bool) -> dict[str, object]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    if loop:
        from benchmarks import meta_iteration
        from benchmarks import torch_loop_baseline as baseline

        spec = meta_iteration.PROBLEMS["conv4"]
        episode = baseline.episode_to_tensors(
            meta_iteration.make_episode("conv4"),
            "sparse_categorical_crossentropy",
        )
        step = baseline.make_meta_step(
            baseline.conv4(spec["ways"], spec["filters"], 1),
            "sparse_categorical_crossentropy",
            1,
            spec["inner_learning_rate"],
        )

        def iteration():
            step(episode)
    else:
        meta, x, y = _conv4_meta_model()

        def iteration():
            meta.train_on_batch(x, y)

    for _ in range(2):
        iteration()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(STEPS):
            iteration()
        wall = (time.perf_counter() - start) / STEPS
    kinds = {
        item.key: item.self_cpu_time_total / 1e6 / STEPS
        for item in prof.key_averages()
        if item.self_cpu_time_total > 0
    }
    return {"wall_s": wall, "kinds_s": kinds}


def run_one(framework: str, output: pathlib.Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import meta_iteration

    if framework == "jax":
        result = _jax_profile()
    elif framework == "tensorflow":
        result = _tensorflow_profile()
    else:
        result = _torch_profile(loop=framework == "torch-loop")
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "framework": framework,
        "problem": "conv4",
        **result,
        **meta_iteration.machine_facts(),
    }
    if framework == "tensorflow":
        record["onednn"] = meta_iteration.device_facts(framework).get("onednn")
    with output.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{framework}: {result['wall_s']:.2f} s per profiled iteration")


def report(records: list[dict]) -> str:
    latest = {r["framework"]: r for r in records}
    lines = [
        "# Where a Conv-4 meta-iteration spends its time",
        "",
        "Written by `benchmarks/profile_conv4.py` (see its docstring): the "
        "Conv-4 case of the speed table (32 tasks, 5-way 1-shot, one inner "
        "step, second order), profiled after two warm-up iterations. "
        "Seconds per meta-iteration in the largest kinds of work: XLA:CPU "
        "instructions by kind on JAX, op types (self time) on TensorFlow, "
        "ATen operators (self time) on PyTorch. *wall* is a profiled "
        "iteration's time. TensorFlow runs independent ops side by side "
        "on its executor's threads, so its profiled seconds, summed over "
        "those threads, can exceed its wall time.",
        "",
    ]
    for framework in FRAMEWORKS:
        record = latest.get(framework)
        if record is None:
            continue
        kinds = sorted(record["kinds_s"].items(), key=lambda kv: -kv[1])
        total = sum(record["kinds_s"].values())
        title = {
            "jax": "kerameta, JAX",
            "tensorflow": "kerameta, TensorFlow",
            "torch": "kerameta, PyTorch",
            "torch-loop": "per-task PyTorch loop",
        }[framework]
        if record.get("onednn"):
            title += " (oneDNN)"
        lines += [
            f"## {title}: wall {record['wall_s']:.2f} s, profiled "
            f"{total:.2f} s",
            "",
            f"{record['cpu']}, {record['cores']} cores, "
            f"{record['date'][:10]}; "
            + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
            "",
            "| kind | s | share |",
            "|---|---:|---:|",
        ]
        for kind, seconds in kinds[:TOP]:
            lines.append(
                f"| `{kind}` | {seconds:.3f} | {seconds / total:.0%} |"
            )
        rest = sum(s for _, s in kinds[TOP:])
        lines += [f"| the rest | {rest:.3f} | {rest / total:.0%} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--python-jax", default=sys.executable)
    parser.add_argument("--python-tensorflow", default=sys.executable)
    parser.add_argument("--python-torch", default=sys.executable)
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output)
    if args.one:
        run_one(args.one, output)
        return
    if not args.report_only:
        for framework in FRAMEWORKS:
            backend = "torch" if framework == "torch-loop" else framework
            python = getattr(args, f"python_{backend}")
            env = dict(os.environ, KERAS_BACKEND=backend)
            subprocess.run(
                [python, __file__, f"--one={framework}", f"--output={output}"],
                env=env,
                check=True,
            )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    REPORT.write_text(report(records) + "\n")
    print(f"Wrote {REPORT}")


if __name__ == "__main__":
    main()
