"""Where a Conv-4 meta-iteration spends its time: a profile per framework.

Profiles the Conv-4 case of `meta_iteration.py` (5-way 1-shot, 15 queries,
32 tasks, one inner step, second order, Adam) after two warm-up
iterations, each framework in its own process:

- kerameta on JAX: `jax.profiler` traces two `train_on_batch` calls; the
  XLA:CPU events (one per executed HLO instruction, e.g.
  `convolution.12`) are summed by kind (`convolution`, `fusion`, `copy`,
  ...);
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
JAX, PyTorch and Keras installed (e.g. one nox session's), or pass
`--python-jax` / `--python-torch` for each framework's interpreter.
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
FRAMEWORKS = ("jax", "torch", "torch-loop")
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
    totals: collections.Counter = collections.Counter()
    threads = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "hlo_op" in event.get("args", {}):
            threads[(event["pid"], event["tid"])].append(event)
    for thread in threads.values():
        thread.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, kind, self time] of the enclosing events
        for event in thread:
            while stack and stack[-1][0] <= event["ts"]:
                _, kind, self_time = stack.pop()
                totals[kind] += self_time
            if stack:
                stack[-1][2] -= event["dur"]
            end = event["ts"] + event["dur"]
            stack.append([end, _kind(event["name"]), event["dur"]])
        for _, kind, self_time in stack:
            totals[kind] += self_time
    return {kind: us / 1e6 / steps for kind, us in totals.items()}


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
    else:
        result = _torch_profile(loop=framework == "torch-loop")
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "framework": framework,
        "problem": "conv4",
        **result,
        **meta_iteration.machine_facts(),
    }
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
        "instructions by kind on JAX, ATen operators (self time) on "
        "PyTorch. *wall* is a profiled iteration's time.",
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
            "torch": "kerameta, PyTorch",
            "torch-loop": "per-task PyTorch loop",
        }[framework]
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
    parser.add_argument("--python-torch", default=sys.executable)
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output)
    if args.one:
        run_one(args.one, output)
        return
    if not args.report_only:
        for framework in FRAMEWORKS:
            backend = "jax" if framework == "jax" else "torch"
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
