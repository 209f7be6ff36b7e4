"""One command for the GPU rows of the benchmark tables, in about 10 minutes.

On a machine with one NVIDIA GPU, this runs, within `--budget-seconds`
(default 570, so the whole command fits in 10 minutes):

1. a check that a GPU is visible (`nvidia-smi -L` or the driver's
   `/proc/driver/nvidia/gpus`, and `CUDA_VISIBLE_DEVICES`), without
   importing any framework: with none, it stops at once with exit status 1;
2. a probe of each backend's interpreter (`--python-for`): does its build
   of the framework see the GPU? Backends whose build is missing or
   CPU-only are left out, with a recorded note;
3. `meta_iteration.py`, one process per configuration, on the GPU: Conv-4,
   then sinusoid with 5 and 1 inner steps, each on every GPU backend and on
   the plain PyTorch task loop (`torch_loop_baseline.py`, run by the torch
   interpreter with `--device gpu`), all under one run id, so every
   speed-up compares runs of the same session. GPU repeats: sinusoid 5
   warm-up + 50 timed meta-iterations, Conv-4 3 + 20;
4. `meta_gradient_memory.py` (unless `--no-memory`): second order and
   checkpointed at 1 and 20 inner steps on every GPU backend (its device
   allocator columns), then its report, `META_GRADIENT_MEMORY.md`;
5. `report.py`, which rewrites `RESULTS.md` with a GPU section.

Budget. Estimated, not measured (no GPU machine was available to the
project when this was written): about 30 s of probes; about 15 to 40 s per
`meta_iteration.py` process (framework import, CUDA start-up, compilation;
the timed steps take seconds), 12 processes, 4 to 6 minutes; about 15 s per
memory point, 12 points, about 3 minutes. Before each process the
remaining budget is checked: a process is started only with at least
`--min-start-seconds` left and is killed when the budget runs out; every
configuration skipped or stopped so is recorded as a note, which
`RESULTS.md` lists under the GPU tables. `--no-memory` leaves the whole
budget to the timing tables. Omniglot (`omniglot_maml.py`, whose table
already has a device column and the ≥ 98% GPU target) needs the dataset
and hours of training, so it is not part of this command. Nor is
`scaling.py`: data-parallel scaling needs several devices, and this
command uses one GPU.

Install (one virtual environment per framework, as their CUDA libraries
may conflict; Python 3.11+, CUDA 12 driver):

```bash
for b in jax tensorflow torch; do python -m venv ~/venvs/$b; done
~/venvs/jax/bin/pip install -e . "jax[cuda12]"
~/venvs/tensorflow/bin/pip install -e . "tensorflow[and-cuda]"
~/venvs/torch/bin/pip install -e . torch  # the default Linux wheel is CUDA
```

then, from the repository root:

```bash
python benchmarks/gpu.py --python-for jax=$HOME/venvs/jax/bin/python \\
    --python-for tensorflow=$HOME/venvs/tensorflow/bin/python \\
    --python-for torch=$HOME/venvs/torch/bin/python
```

A backend without `--python-for` runs with this interpreter. Results are
appended to `benchmarks/results.jsonl` (`--output`) and
`benchmarks/meta_gradient_memory_results.jsonl`; commit them with the
regenerated Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
NVIDIA_PROC = pathlib.Path("/proc/driver/nvidia/gpus")
# (problem, inner steps, warm-up, timed repeats), the most telling first.
PLAN = (
    ("conv4", 1, 3, 20),
    ("sinusoid", 5, 5, 50),
    ("sinusoid", 1, 5, 50),
)
MEMORY_ESTIMATORS = ("second_order", "checkpointed")
MEMORY_INNER_STEPS = (1, 20)
PROBE_PREFIX = "GPU-PROBE:"
PROBE = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
import keras
from meta_iteration import device_facts
print({PROBE_PREFIX!r} + json.dumps(device_facts(keras.config.backend())))
"""


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process may use, found without any framework.

    Empty when `CUDA_VISIBLE_DEVICES` hides them all (empty or `-1`), else
    the lines of `nvidia-smi -L`, or the driver's entries under
    `/proc/driver/nvidia/gpus` when `nvidia-smi` is not on the `PATH`.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return []
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listed = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        if listed is not None and listed.returncode == 0:
            return [line for line in listed.stdout.splitlines() if line]
    if NVIDIA_PROC.is_dir():
        return sorted(entry.name for entry in NVIDIA_PROC.iterdir())
    return []


def require_gpu() -> list[str]:
    """The visible GPUs; exits with status 1 and a clear message if none."""
    gpus = visible_gpus()
    if not gpus:
        raise SystemExit(
            "benchmarks/gpu.py needs an NVIDIA GPU, but none is visible: "
            "`nvidia-smi -L` lists none (or is not installed), "
            f"{NVIDIA_PROC} does not exist, or CUDA_VISIBLE_DEVICES hides "
            "them all. Run it on a GPU machine with the NVIDIA driver and "
            "the frameworks' GPU builds (see the install lines at the top of "
            "benchmarks/gpu.py); for CPU tables run "
            "`python benchmarks/meta_iteration.py` on each backend instead."
        )
    return gpus


class Budget:
    """A wall-clock budget shared by every step of the run."""

    def __init__(self, seconds: float, min_start_seconds: float):
        self.deadline = time.monotonic() + seconds
        self.min_start_seconds = min_start_seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, command: list[str], env: dict[str, str]) -> tuple[str, str]:
        """Runs `command` within the budget: `(status, detail)`.

        `status` is `"ok"`, `"failed"` (non-zero exit), `"skipped"` (less
        than `min_start_seconds` left, not started) or `"stopped"` (killed
        with its process group when the budget ran out). `detail` is the
        last lines of its error output, or why it did not finish.
        """
        remaining = self.remaining()
        if remaining < self.min_start_seconds:
            return "skipped", f"{max(remaining, 0):.0f} s of the budget left"
        process = subprocess.Popen(
            command,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so that a kill takes its children too
        )
        try:
            _, stderr = process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return "stopped", f"killed after {remaining:.0f} s: budget spent"
        if process.returncode != 0:
            tail = (stderr.strip().splitlines() or [""])[-1][-500:]
            sys.stderr.write(stderr)
            return "failed", f"exit status {process.returncode}: {tail}"
        return "ok", ""


def backend_env(backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def probe(python: str, backend: str, budget: Budget) -> dict[str, object]:
    """The backend's `device_facts` in its interpreter, or `{"error": ...}`."""
    timeout = min(180.0, max(budget.remaining(), 1.0))
    try:
        done = subprocess.run(
            [python, "-c", PROBE],
            env=backend_env(backend),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"error": f"{python} could not run the probe: {error}"}
    for line in done.stdout.splitlines():
        if line.startswith(PROBE_PREFIX):
            return json.loads(line[len(PROBE_PREFIX) :])
    tail = " ".join(done.stderr.strip().splitlines()[-2:])[-300:]
    return {"error": f"{python} failed to import it: {tail}"}


def note(path: str, run: str, text: str, **fields: object) -> None:
    """Appends a GPU-run note (what was skipped, stopped or failed)."""
    record = {
        "run": run,
        "date": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "framework": "note",
        "device": "gpu",
        "note": text,
        **fields,
    }
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
    print(f"note: {text}", flush=True)


def python_for(items: list[str] | None) -> dict[str, str]:
    chosen = {}
    for item in items or []:
        backend, _, path = item.partition("=")
        if backend not in BACKENDS or not path:
            raise SystemExit(
                f"--python-for expects BACKEND=PATH with BACKEND one of "
                f"{BACKENDS}. Received: {item!r}"
            )
        chosen[backend] = path
    return {b: chosen.get(b, sys.executable) for b in BACKENDS}


def run_timings(args, pythons, backends, baseline, budget, run) -> int:
    """The meta-iteration configurations; the number that succeeded."""
    import meta_iteration

    done = 0
    for problem, inner_steps, warmup, repeats in PLAN:
        options = meta_iteration.build_parser().parse_args(
            [
                f"--output={args.output}",
                f"--warmup={warmup}",
                f"--repeats={repeats}",
                "--device=gpu",
            ]
        )
        jobs = [("torch", True)] if baseline else []
        jobs += [(backend, False) for backend in backends]
        for backend, is_baseline in jobs:
            command = meta_iteration.one_command(
                options,
                problem,
                inner_steps,
                is_baseline,
                run,
                pythons[backend],
            )
            status, detail = budget.run(command, backend_env(backend))
            what = "PyTorch task loop" if is_baseline else f"kerameta {backend}"
            if status == "ok":
                done += 1
            else:
                note(
                    args.output,
                    run,
                    f"{problem}, {inner_steps} inner step(s), {what}: "
                    f"{status} ({detail})",
                    problem=problem,
                    inner_steps=inner_steps,
                    backend=backend,
                )
    return done


def run_memory(args, pythons, backends, budget, run) -> None:
    """The memory benchmark's GPU points, one process per point."""
    script = str(HERE / "meta_gradient_memory.py")
    for backend in backends:
        for estimator in MEMORY_ESTIMATORS:
            for inner_steps in MEMORY_INNER_STEPS:
                per_point = max(budget.remaining() - 15, 1)
                command = [
                    pythons[backend],
                    script,
                    f"--backends={backend}",
                    f"--estimators={estimator}",
                    f"--inner-steps={inner_steps}",
                    f"--python-for={backend}={pythons[backend]}",
                    f"--timeout={per_point:.0f}",
                    f"--run={run}",
                ]
                status, detail = budget.run(command, backend_env(backend))
                if status != "ok":
                    note(
                        args.output,
                        run,
                        f"memory, {estimator}, {inner_steps} inner step(s), "
                        f"{backend}: {status} ({detail})",
                        backend=backend,
                    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--python-for",
        action="append",
        metavar="BACKEND=PATH",
        help="the interpreter with a backend's GPU build (repeatable; "
        "default: this interpreter)",
    )
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=570,
        help="wall-clock budget of the whole run (default 570)",
    )
    parser.add_argument(
        "--min-start-seconds",
        type=float,
        default=20,
        help="start no process with less of the budget left",
    )
    parser.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip meta_gradient_memory.py",
    )
    parser.add_argument("--output", default=str(HERE / "results.jsonl"))
    parser.add_argument("--report-output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)

    gpus = require_gpu()  # before anything slow, and before any framework
    print("GPUs: " + "; ".join(gpus), flush=True)
    budget = Budget(args.budget_seconds, args.min_start_seconds)
    pythons = python_for(args.python_for)
    run = "gpu-" + uuid.uuid4().hex[:8]
    facts = {b: probe(pythons[b], b, budget) for b in args.backends}
    backends = [b for b in args.backends if facts[b].get("device") == "gpu"]
    for backend, found in facts.items():
        print(f"{backend:>10} ({pythons[backend]}): {found}", flush=True)
    if not backends:
        raise SystemExit(
            f"A GPU is visible ({'; '.join(gpus)}), but no backend's build "
            "uses it: "
            + "; ".join(
                f"{b}: {f.get('error', 'computes on the CPU')}"
                for b, f in facts.items()
            )
            + ". Install the GPU builds (see the top of benchmarks/gpu.py) "
            "and pass each interpreter with --python-for BACKEND=PATH."
        )
    for backend, found in facts.items():
        if backend not in backends:
            reason = found.get("error", "its build computes on the CPU")
            note(args.output, run, f"{backend} not run: {reason}")
    baseline = facts.get("torch", {}).get("device") == "gpu"
    if not baseline:
        note(
            args.output,
            run,
            "PyTorch task-loop baseline not run: it needs the torch "
            "interpreter with a CUDA build (--python-for torch=PATH)",
        )
    done = run_timings(args, pythons, backends, baseline, budget, run)
    if args.memory:
        run_memory(args, pythons, backends, budget, run)
        subprocess.run(
            [sys.executable, str(HERE / "meta_gradient_memory.py"), "--report"],
            check=False,
        )
    report.main(["--input", args.output, "--output", args.report_output])
    spent = args.budget_seconds - budget.remaining()
    print(f"Run {run}: {done} timing rows in {spent:.0f} s.", flush=True)
    if done == 0:
        raise SystemExit("No GPU timing row was written; see the notes.")


if __name__ == "__main__":
    main()
