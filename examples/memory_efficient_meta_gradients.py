"""
Title: Memory-efficient meta-gradients
Author: kerameta team
Date created: 2026/12/03
Last modified: 2026/12/03
Description: Multi-step, implicit and checkpointed meta-gradients against MAML.
Accelerator: None
"""

"""
## Introduction

MAML's meta-gradient differentiates the query loss *through* the inner
loop. With `K` inner steps of learning rate `alpha`, the adapted weights are

```
phi_0 = theta,    phi_{k+1} = phi_k - alpha * grad L_support(phi_k)
```

and the exact (*second-order*) meta-gradient is

```
grad_theta L_query(phi_K) = (I - alpha H_0) (I - alpha H_1) ...
                            (I - alpha H_{K-1}) grad L_query(phi_K)
```

with `H_k` the Hessian of the support loss at step `k`. Automatic
differentiation computes it with one Hessian-vector product per step in the
backward pass, but it must keep the whole inner trajectory (every step's
activations and gradient graph) until then: time and memory both grow
linearly with `K`. kerameta offers four ways to pay for it, all through
`kerameta.MAML(meta_gradient=...)`:

- **Second order** (`"second_order"`, the default): the exact meta-gradient,
  memory and time linear in `K`.
- **Multi-step** (`kerameta.meta_gradients.MultiStep(window=w)`, [Kim et
  al., 2020](https://arxiv.org/abs/2006.04298)): the steps are grouped in
  windows of `w`, and only the gradient at the start of each window is
  differentiable, so the backward pass sees `ceil(K / w)` steps instead of
  `K`. In the default `"forward"` variant the window-start gradient is
  also reused for the window's other steps in the forward pass, so only
  `ceil(K / w)` support gradients are computed at all: the adaptation
  itself changes (with plain SGD, it is `ceil(K / w)` steps of `w` times the
  learning rate). The `"straight_through"` variant keeps MAML's forward
  pass (a fresh gradient at every step) and only treats each window as one
  step in the backward pass. Either way the meta-gradient is an estimate;
  `window=1` is exact.
- **Implicit** (`kerameta.meta_gradients.Implicit()`, [Yang, Ma and Yu,
  2025](https://arxiv.org/abs/2412.12030); [Rajeswaran et al.,
  2019](https://arxiv.org/abs/1909.04630) for the proximal form): if the
  inner loop converges to a minimum `phi*` of the support loss, the
  implicit function theorem gives the meta-gradient from `phi*` alone,
  whatever path led there. The inner loop runs without keeping any
  history, and a conjugate-gradient solve (one Hessian-vector product per
  CG step, at `phi*`) replaces the backward pass through the steps: memory
  does not grow with `K`. It needs something to meta-learn that the
  minimum depends on. Here it is the ANIL split: the inner loop adapts
  only the head (`adapted_layers=["head"]`, [Raghu et al.,
  2020](https://arxiv.org/abs/1909.09157)) and the body is meta-learned;
  `Implicit(proximal=lambda)` is the other option, for the whole network.
  The meta-gradient is exact only at a converged inner loop and a
  converged CG solve; `ridge` makes the head's problem strongly convex.
- **Checkpointed** (`"checkpointed"`): the exact second-order
  meta-gradient, computed without keeping the inner steps' activations:
  they are recomputed in the backward pass. Memory stays flat in `K`; the
  price is extra computation.

This example meta-trains the 1-40-40-1 sinusoid network with each of them
at the same budget and compares their meta-test error (the implicit
estimator against ANIL trained with the exact second order, since they
adapt the same weights). It then times one meta-iteration at 1 and 10
inner steps on a wider network, and shows the memory that
`benchmarks/meta_gradient_memory.py` measured.
"""

"""
## Setup

The backend is chosen before Keras is imported. Set `KERAS_BACKEND` to
`"tensorflow"` or `"torch"` to run the same code on another backend.
`KERAMETA_SMOKE=1` runs a tiny version of this example (for tests), and
`KERAMETA_OUTPUT_DIR` changes where the figure goes (`examples/output/` by
default, relative to the working directory).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import json
import pathlib
import statistics
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
import keras
import matplotlib.pyplot as plt
import numpy as np

import kerameta

SMOKE = os.environ.get("KERAMETA_SMOKE") == "1"
OUTPUT_DIR = os.environ.get(
    "KERAMETA_OUTPUT_DIR", os.path.join("examples", "output")
)
os.makedirs(OUTPUT_DIR, exist_ok=True)

print("Keras backend:", keras.config.backend())

"""
## The estimators

Each estimator is a set of `kerameta.MAML` arguments. The multi-step window
is 5 steps, or the number of inner steps if that is fewer (a window may not
be longer than the inner loop). The two ANIL runs adapt only the layer
named `head` (the last `Dense` layer of `kerameta.models.mlp`). The
implicit run gets a small `ridge`: with 10 support points the head's
least-squares problem (41 weights) has a singular Hessian, which CG cannot
invert.
"""

WINDOW = 5
RIDGE = 0.1
CG_STEPS = 5 if SMOKE else 20


def estimator_arguments(name, inner_steps):
    if name == "MAML, second order":
        return {"meta_gradient": "second_order"}
    if name == "MAML, multi-step":
        window = min(WINDOW, inner_steps)
        return {
            "meta_gradient": kerameta.meta_gradients.MultiStep(window=window)
        }
    if name == "MAML, multi-step (straight-through)":
        window = min(WINDOW, inner_steps)
        return {
            "meta_gradient": kerameta.meta_gradients.MultiStep(
                window=window, variant="straight_through"
            )
        }
    if name == "MAML, checkpointed":
        return {"meta_gradient": "checkpointed"}
    if name == "ANIL, second order":
        return {"meta_gradient": "second_order", "adapted_layers": ["head"]}
    if name == "ANIL, implicit":
        return {
            "meta_gradient": kerameta.meta_gradients.Implicit(
                cg_steps=CG_STEPS, ridge=RIDGE
            ),
            "adapted_layers": ["head"],
        }
    raise ValueError(name)


ESTIMATORS = (
    "MAML, second order",
    "MAML, multi-step",
    "MAML, multi-step (straight-through)",
    "MAML, checkpointed",
    "ANIL, second order",
    "ANIL, implicit",
)
# The run each estimator's accuracy is compared with.
REFERENCES = {
    "MAML, multi-step": "MAML, second order",
    "MAML, multi-step (straight-through)": "MAML, second order",
    "MAML, checkpointed": "MAML, second order",
    "ANIL, implicit": "ANIL, second order",
}

"""
## Accuracy at a fixed budget

Sine waves `y = amplitude * sin(x - phase)` as in the [sinusoid regression
example](sinusoid_regression.md): 10 support and 10 query points per task,
10 tasks per meta-batch, 5 inner SGD steps of 0.01. Every run starts from
the same initial weights, sees the same training tasks, and is meta-tested
on the same 600 new tasks (mean squared error after 5 adaptation steps,
with its 95% confidence interval).
"""

SHOTS = 10
INNER_STEPS = 2 if SMOKE else 5
INNER_LEARNING_RATE = 0.01
TASKS_PER_BATCH = 2 if SMOKE else 10
ITERATIONS = 6 if SMOKE else 1000
TEST_EPISODES = 25 if SMOKE else 600
SEED = 0

train_tasks = kerameta.data.SinusoidTasks(
    shots=SHOTS,
    tasks_per_batch=TASKS_PER_BATCH,
    num_batches=ITERATIONS,
    seed=1,
    new_tasks_each_epoch=True,
)
test_tasks = kerameta.data.SinusoidTasks(
    shots=SHOTS, tasks_per_batch=25, num_batches=-(-TEST_EPISODES // 25), seed=2
)
x, query_y = train_tasks[0]
for key, value in x.items():
    print(f"{key}: {value.shape}")


def build(name, network, inner_steps):
    maml = kerameta.MAML(
        network,
        inner_steps=inner_steps,
        inner_learning_rate=INNER_LEARNING_RATE,
        **estimator_arguments(name, inner_steps),
    )
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return maml


results = {}
for name in ESTIMATORS:
    keras.utils.set_random_seed(SEED)
    maml = build(name, kerameta.models.mlp(), INNER_STEPS)
    start = time.perf_counter()
    maml.fit(train_tasks, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    result = kerameta.meta_test(
        maml, test_tasks, episodes=TEST_EPISODES, metric="mean_squared_error"
    )
    results[name] = result
    print(
        f"{name}: {ITERATIONS} meta-iterations in {seconds:.1f} s, "
        f"meta-test {result}"
    )

"""
Is each estimator within the confidence interval of its exact reference?
"""

for name, reference in REFERENCES.items():
    value, base = results[name], results[reference]
    gap = value.mean - base.mean
    if abs(gap) <= base.confidence_interval:
        verdict = "within the reference's confidence interval"
    else:
        verdict = "lower" if gap < 0 else "higher"
        verdict += " than the reference, beyond its confidence interval"
    print(
        f"{name} vs {reference}: {value.mean:.3f} vs {base.mean:.3f} "
        f"(± {base.confidence_interval:.3f}) -> {verdict}"
    )

"""
## Time of a meta-iteration

The sinusoid network is too small to show what the estimators cost: its
activations take a few kilobytes. We time one meta-iteration of a wider
network instead (1-256-256-1, 10 tasks of 200 support and 200 query
points), at 1 and 10 inner steps. `train_on_batch` returns the loss as a
NumPy value, so it waits for the computation (JAX runs asynchronously);
the first call traces and compiles, and is not timed.
"""

PROBE_STEPS = (1, 2) if SMOKE else (1, 10)
PROBE_WIDTH = 16 if SMOKE else 256
PROBE_POINTS = 20 if SMOKE else 200
PROBE_REPEATS = 1 if SMOKE else 3
# The smoke run times one estimator of each kind (each compiles two steps).
PROBE_ESTIMATORS = (
    ("MAML, second order", "MAML, checkpointed", "ANIL, implicit")
    if SMOKE
    else ESTIMATORS
)

rng = np.random.default_rng(0)
shape = (TASKS_PER_BATCH, PROBE_POINTS, 1)
probe_x = {
    "support_x": rng.uniform(-5, 5, shape).astype("float32"),
    "support_y": rng.normal(size=shape).astype("float32"),
    "query_x": rng.uniform(-5, 5, shape).astype("float32"),
}
probe_y = rng.normal(size=shape).astype("float32")

milliseconds = {}
for name in PROBE_ESTIMATORS:
    for inner_steps in PROBE_STEPS:
        keras.utils.set_random_seed(SEED)
        network = kerameta.models.mlp(hidden_units=(PROBE_WIDTH, PROBE_WIDTH))
        maml = build(name, network, inner_steps)
        maml.train_on_batch(probe_x, probe_y)  # traces and compiles
        seconds = []
        for _ in range(PROBE_REPEATS):
            start = time.perf_counter()
            maml.train_on_batch(probe_x, probe_y)
            seconds.append(time.perf_counter() - start)
        milliseconds[name, inner_steps] = 1e3 * statistics.median(seconds)

low, high = PROBE_STEPS
for name in PROBE_ESTIMATORS:
    fast, slow = milliseconds[name, low], milliseconds[name, high]
    print(
        f"{name}: {fast:.1f} ms per meta-iteration at K={low}, {slow:.1f} ms "
        f"at K={high} ({slow / fast:.2f}x)"
    )

"""
## Memory of a meta-iteration

Memory is harder to measure honestly than time. The peak resident memory
(RSS) of a process is easy to read on Linux, but a process that has already
run other models is a poor place to attribute memory to one computation:
the frameworks keep memory they freed for later use. (In a check of ours,
on JAX, a 1-step meta-iteration run after a 10-step one raised the RSS by
5 MiB, against 27 MiB in a fresh process.) So memory is measured by
`benchmarks/meta_gradient_memory.py`, which runs every point in a fresh
process: Conv-4 on Omniglot-shaped tasks (5-way 1-shot, 4 tasks per
batch), 1 to 20 inner steps. It reports two numbers per point: the *step
memory* (the peak RSS during the timed meta-iterations minus the RSS just
before them) and the *peak over baseline* (the same peak minus the RSS
before training started, which also counts what the compilation left
resident: an upper bound). Its docstring and report explain the details.

This example shows that benchmark's latest results for the current
backend, when the repository holds them.
"""

RESULTS = (
    pathlib.Path(__file__).resolve().parent.parent
    / "benchmarks"
    / "meta_gradient_memory_results.jsonl"
)
BENCHMARK_NAMES = {
    "MAML, second order": "second_order",
    "MAML, multi-step": "multi_step",
    "MAML, multi-step (straight-through)": "multi_step_straight_through",
    "MAML, checkpointed": "checkpointed",
    "ANIL, second order": "anil_second_order",
    "ANIL, implicit": "implicit",
}


def benchmark_memory(path, backend):
    """{(estimator, K): (step memory, peak over baseline)}, latest first."""
    memory = {}
    if not path.is_file():
        return memory
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if (
            record.get("kind") == "memory"
            and record.get("status") == "ok"
            and record.get("backend") == backend
            and record.get("device") == "cpu"
        ):
            memory[record["estimator"], record["inner_steps"]] = (
                record.get("step_memory_mib"),
                record.get("peak_delta_mib"),
            )
    return memory


memory = benchmark_memory(RESULTS, keras.config.backend())
if not memory:
    print(
        f"No memory results for {keras.config.backend()} in {RESULTS}: run "
        "`python benchmarks/meta_gradient_memory.py` to measure them."
    )
for name in ESTIMATORS:
    points = sorted(
        (k, values)
        for (estimator, k), values in memory.items()
        if estimator == BENCHMARK_NAMES[name]
    )
    if points:
        cells = ", ".join(
            f"K={k}: {step:.0f} / {peak:.0f} MiB" for k, (step, peak) in points
        )
        print(f"{name}, benchmark step memory / peak over baseline: {cells}")

"""
## Results

Left: the meta-test error of each estimator (600 new tasks, 95% confidence
intervals). Middle: the time of one meta-iteration of the wider network, at
1 and 10 inner steps. Right: the benchmark's memory against the inner
steps (Conv-4; solid: peak over baseline, dashed: step memory), if the
repository holds results for this backend.
"""

figure, axes = plt.subplots(1, 3, figsize=(18, 5.5))
positions = np.arange(len(ESTIMATORS))
colors = [f"C{index}" for index in range(len(ESTIMATORS))]
axes[0].bar(
    positions,
    [results[name].mean for name in ESTIMATORS],
    yerr=[results[name].confidence_interval for name in ESTIMATORS],
    color=colors,
    capsize=4,
)
axes[0].set_ylabel(f"meta-test MSE ({INNER_STEPS} inner steps)")
axes[0].set_title(f"sinusoid, {ITERATIONS} meta-iterations")
width = 0.38
for offset, (inner_steps, hatch) in enumerate(zip(PROBE_STEPS, ("", "//"))):
    axes[1].bar(
        positions + (offset - 0.5) * width,
        [milliseconds.get((name, inner_steps), 0.0) for name in ESTIMATORS],
        width,
        color=colors,
        hatch=hatch,
        edgecolor="black",
        label=f"K={inner_steps}",
    )
axes[1].set_ylabel("ms per meta-iteration")
axes[1].set_title(f"1-{PROBE_WIDTH}-{PROBE_WIDTH}-1, {PROBE_POINTS} points")
axes[1].legend()
for axis in axes[:2]:
    axis.set_xticks(positions, ESTIMATORS, rotation=25, ha="right")
    axis.grid(True, axis="y", alpha=0.3)
for name, color in zip(ESTIMATORS, colors):
    points = sorted(
        (k, values)
        for (estimator, k), values in memory.items()
        if estimator == BENCHMARK_NAMES[name]
    )
    if not points:
        continue
    steps = [k for k, _ in points]
    axes[2].plot(
        steps, [v[1] for _, v in points], "o-", color=color, label=name
    )
    axes[2].plot(steps, [v[0] for _, v in points], "o--", color=color)
if memory:
    axes[2].set_xlabel("inner steps K")
    axes[2].set_ylabel("memory (MiB)")
    axes[2].legend(fontsize="small")
    axes[2].grid(True, alpha=0.3)
else:
    axes[2].text(0.5, 0.5, "no benchmark results", ha="center")
axes[2].set_title(f"Conv-4 benchmark, {keras.config.backend()}")
figure.tight_layout()
figure_path = os.path.join(OUTPUT_DIR, "memory_efficient_meta_gradients.png")
figure.savefig(figure_path, dpi=100)
print("Saved the figure to", figure_path)

"""
## Conclusion

What to look for in your run's output above:

- Second order's time grows about linearly with the inner steps, and so
  does its memory: the backward pass needs the whole trajectory.
- Multi-step, forward variant: one support gradient per window, so at 10
  steps with a window of 5 it does about the work of 2 steps. But it also
  changes the adaptation itself (here, with 5 inner steps and a window of
  5, one step of 5 times the learning rate), during meta-training and at
  meta-test time alike: compare its meta-test error with second order's.
  The straight-through variant keeps MAML's adaptation exactly and only
  estimates the meta-gradient; it still computes every support gradient,
  so it saves less time.
- Implicit: time and memory do not depend on the inner steps (the inner
  loop keeps no history, and the CG solve costs a fixed number of
  Hessian-vector products). It is compared with ANIL, which adapts the same
  head; its meta-gradient assumes that the inner loop has converged.
- Checkpointed: second order's meta-gradient, so its accuracy should match
  second order's up to floating-point noise, with memory flat in the steps
  and extra time for the recomputation.

The full grid, with the issue's targets checked on every backend, is
`benchmarks/META_GRADIENT_MEMORY.md`.
"""
