"""
Title: Sharing inner-loop gradients across tasks
Author: kerameta team
Date created: 2026/12/03
Last modified: 2026/12/03
Description: MAML with and without gradient sharing, at two inner step sizes.
Accelerator: None
"""

"""
## Introduction

In MAML ([Finn et al., 2017](https://arxiv.org/abs/1703.03400)) every task of
a meta-batch adapts on its own: its inner loop only ever sees its own support
gradient. *Gradient sharing* ([Chang and Lipson, 2023. Accelerating
Meta-Learning by Sharing Gradients](https://arxiv.org/abs/2312.08398)) lets
the tasks of a batch lend each other their inner gradients, as a regularizer
of the inner loop inspired by multi-task learning. The paper reports that it
makes meta-training faster and more tolerant of large inner learning rates.

`kerameta.GradientSharing` implements the following rule. At inner step `k`,
for every adapted weight tensor, task `i`'s step direction is

```
direction_i = g_i + concurrent_scale[k] * mean_j(g_j)
                  + history_scale[k] * history[k]
fast_i = fast_i - inner_learning_rate * direction_i      (SGD inner loop)
```

with `g_i` the task's support gradient, `mean_j(g_j)` the mean gradient of
the tasks of the current batch (the *concurrent* gradient), and `history[k]`
an exponential moving average of earlier batches' mean gradients at step `k`
(updated after every outer step, `history[k] = 0.9 * history[k] + 0.1 *
mean_j(g_j)`, and never differentiated). The two scales per inner step and
weight tensor are trainable weights of the meta-model, learned by the outer
optimizer together with the initialization. They start at 0, so training
starts exactly as MAML. At evaluation each test task adapts independently:
the concurrent term is off and the history is used frozen.

The paper's exact update rule is not public: this rule is a *documented
reconstruction* (see the
[gradient sharing page](../methods/gradient_sharing.md)), consistent with
the paper's description, and every choice in it is an argument of
`GradientSharing`. Do not read the numbers below as a
reproduction of the paper's results.

This example meta-trains the same 1-40-40-1 network on 5-shot sinusoid
regression four times, with the same seeds: plain MAML and MAML with gradient
sharing, each at MAML's inner learning rate (0.01) and at a 10 times larger
one (0.1), where plain MAML is known to train worse.
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
## The tasks

Sine waves `y = amplitude * sin(x - phase)` as in the [sinusoid regression
example](sinusoid_regression.md), but with only 5 support points per task
(10 query points score the adaptation). Gradient sharing needs several tasks
per batch (with one task there is nothing to share): we use 10.

Every run sees the same training tasks (seed 1), is validated on the same 100
tasks (seed 2) after every 500 meta-iterations, and is meta-tested on the
same 600 tasks (seed 3).
"""

SHOTS = 5
QUERY_SHOTS = 10
TASKS_PER_BATCH = 2 if SMOKE else 10
EPOCHS = 2 if SMOKE else 20
BATCHES_PER_EPOCH = 3 if SMOKE else 500  # 10000 meta-iterations in all
VALIDATION_BATCHES = 1 if SMOKE else 4
TEST_TASKS_PER_BATCH = 25
TEST_EPISODES = 25 if SMOKE else 600
SEED = 0  # the initial weights of every run


def sinusoid_tasks(tasks_per_batch, num_batches, seed, training=False):
    return kerameta.data.SinusoidTasks(
        shots=SHOTS,
        query_shots=QUERY_SHOTS,
        tasks_per_batch=tasks_per_batch,
        num_batches=num_batches,
        seed=seed,
        new_tasks_each_epoch=training,
    )


train_tasks = sinusoid_tasks(
    TASKS_PER_BATCH, BATCHES_PER_EPOCH, seed=1, training=True
)
validation_tasks = sinusoid_tasks(
    TEST_TASKS_PER_BATCH, VALIDATION_BATCHES, seed=2
)
test_tasks = sinusoid_tasks(
    TEST_TASKS_PER_BATCH, TEST_EPISODES // TEST_TASKS_PER_BATCH, seed=3
)

x, query_y = train_tasks[0]
for key, value in x.items():
    print(f"{key}: {value.shape}")
print(f"query_y: {query_y.shape}")

"""
## Four runs

`meta_train` builds the network with the same seed (so every run starts from
the same initial weights), wraps it in `kerameta.MAML` with one inner SGD
step, with or without `gradient_sharing=kerameta.GradientSharing()`, and
meta-trains it with Adam. The only differences between the runs are the inner
learning rate and the sharing. The validation MSE (query MSE after one
adaptation step, on the validation tasks) is recorded before training and
after every epoch of 500 meta-iterations.
"""

INNER_LEARNING_RATES = (0.01, 0.1)


def meta_train(inner_learning_rate, sharing):
    keras.utils.set_random_seed(SEED)
    maml = kerameta.MAML(
        kerameta.models.mlp(),  # 1-40-40-1, layers hidden1, hidden2, head
        inner_steps=1,
        inner_learning_rate=inner_learning_rate,
        gradient_sharing=kerameta.GradientSharing() if sharing else None,
    )
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    initial = maml.evaluate(validation_tasks, return_dict=True, verbose=0)
    history = maml.fit(
        train_tasks,
        validation_data=validation_tasks,
        epochs=EPOCHS,
        verbose=0,
    )
    curve = [initial["loss"]] + history.history["val_loss"]
    return maml, curve


runs = {}
for inner_learning_rate in INNER_LEARNING_RATES:
    for sharing in (False, True):
        name = "MAML + sharing" if sharing else "MAML"
        maml, curve = meta_train(inner_learning_rate, sharing)
        result = kerameta.meta_test(
            maml,
            test_tasks,
            episodes=TEST_EPISODES,
            metric="mean_squared_error",
        )
        runs[inner_learning_rate, name] = maml, curve, result
        print(
            f"inner_learning_rate={inner_learning_rate}, {name}: final "
            f"validation MSE {curve[-1]:.3f}, meta-test {result}"
        )

"""
## The learned scales

After training, the scales say how much each task leaned on the other tasks'
gradients (`concurrent_scale`) and on the history (`history_scale`), per
adapted tensor (one inner step, so one value each). A positive concurrent
scale makes the step larger where tasks agree; a negative one shrinks the
common part of the step (at -1 it removes it: the direction becomes
`g_i - mean_j(g_j)`, plus the history term). The history buffers hold the
running mean gradient; we print their norms.
"""

scales = {}
for inner_learning_rate in INNER_LEARNING_RATES:
    maml = runs[inner_learning_rate, "MAML + sharing"][0]
    sharing = maml.gradient_sharing
    print(f"Learned scales at inner_learning_rate={inner_learning_rate}:")
    rows = []
    for variable, concurrent, history_scale, buffer in zip(
        maml.adapted_variables,
        sharing.concurrent_scales,
        sharing.history_scales,
        sharing.history,
    ):
        concurrent = keras.ops.convert_to_numpy(concurrent)
        history_scale = keras.ops.convert_to_numpy(history_scale)
        norm = float(np.linalg.norm(keras.ops.convert_to_numpy(buffer)))
        rows.append((variable.path, concurrent[0], history_scale[0]))
        print(
            f"  {variable.path:<20} concurrent_scale {concurrent[0]:+.3f}  "
            f"history_scale {history_scale[0]:+.3f}  |history| {norm:.3f}"
        )
    scales[inner_learning_rate] = rows

"""
## Results

Left and middle: the validation MSE of each run during meta-training, at each
inner learning rate. Right: the learned scales. The meta-test numbers (600
new tasks, mean and 95% confidence interval) are printed below the figure's
code; the comparison is computed, not assumed.
"""

figure, axes = plt.subplots(1, 3, figsize=(17, 4.8))
axes[1].sharey(axes[0])
iterations = np.arange(EPOCHS + 1) * BATCHES_PER_EPOCH
for axis, inner_learning_rate in zip(axes[:2], INNER_LEARNING_RATES):
    for name, color in (("MAML", "tab:blue"), ("MAML + sharing", "tab:red")):
        _, curve, result = runs[inner_learning_rate, name]
        axis.plot(
            iterations,
            curve,
            marker="o",
            markersize=3,
            color=color,
            label=f"{name} (test MSE {result.mean:.3f})",
        )
    axis.set_title(f"inner learning rate {inner_learning_rate}")
    axis.set_xlabel("meta-iteration")
    axis.set_ylabel("validation MSE (1 inner step)")
    axis.grid(True, alpha=0.3)
    axis.legend()

labels = [
    path.split("/", 1)[-1] for path, _, _ in scales[INNER_LEARNING_RATES[0]]
]
positions = np.arange(len(labels))
width = 0.2
for offset, (inner_learning_rate, column, hatch) in enumerate(
    (
        (INNER_LEARNING_RATES[0], 1, ""),
        (INNER_LEARNING_RATES[0], 2, "//"),
        (INNER_LEARNING_RATES[1], 1, ""),
        (INNER_LEARNING_RATES[1], 2, "//"),
    )
):
    values = [row[column] for row in scales[inner_learning_rate]]
    kind = "concurrent" if column == 1 else "history"
    axes[2].bar(
        positions + (offset - 1.5) * width,
        values,
        width,
        hatch=hatch,
        color="tab:orange" if offset < 2 else "tab:purple",
        edgecolor="black",
        label=f"{kind}, lr {inner_learning_rate}",
    )
axes[2].axhline(0.0, color="black", linewidth=0.8)
axes[2].set_xticks(positions, labels, rotation=30, ha="right")
axes[2].set_title("learned scales (MAML + sharing)")
axes[2].legend(fontsize="small")
figure.tight_layout()
figure_path = os.path.join(OUTPUT_DIR, "gradient_sharing.png")
figure.savefig(figure_path, dpi=100)
print("Saved the figure to", figure_path)

"""
Which run is better at each inner learning rate, on the meta-test? A
difference smaller than the confidence intervals is not a result.
"""

for inner_learning_rate in INNER_LEARNING_RATES:
    plain = runs[inner_learning_rate, "MAML"][2]
    shared = runs[inner_learning_rate, "MAML + sharing"][2]
    if shared.mean == plain.mean:
        better = "neither (equal)"
    else:
        better = "MAML + sharing" if shared.mean < plain.mean else "MAML"
    gap = abs(shared.mean - plain.mean)
    significant = gap > plain.confidence_interval + shared.confidence_interval
    print(
        f"inner_learning_rate={inner_learning_rate}: MAML "
        f"{plain.mean:.3f} ± {plain.confidence_interval:.3f}, "
        f"MAML + sharing {shared.mean:.3f} ± {shared.confidence_interval:.3f}"
        f" -> lower: {better} "
        f"({'intervals apart' if significant else 'intervals overlap'})"
    )
default_lr, large_lr = INNER_LEARNING_RATES
print(
    "Plain MAML test MSE at the large vs the default inner learning rate: "
    f"{runs[large_lr, 'MAML'][2].mean:.3f} vs "
    f"{runs[default_lr, 'MAML'][2].mean:.3f}"
)

"""
## Conclusion

In our JAX run (10,000 meta-iterations of 10 tasks, about 80 seconds for
the four runs on a 2-core CPU), plain MAML trained clearly worse at the 10
times larger inner learning rate: a meta-test MSE of 1.55 ± 0.14 against
0.80 ± 0.08 at the default rate. MAML + sharing came out slightly lower at
both rates (0.80 ± 0.07 and 1.44 ± 0.13), but the confidence intervals
overlap and the validation curves cross each other (at the large rate, the
last validation MSE was *higher* with sharing): this run does not show that
sharing helps, and on such a small budget the difference can go either way
from one seed or backend to the next. Your run prints its own comparison
above.

The learned scales did move far from 0: in our run most concurrent scales
became negative (down to about -2, which subtracts the batch's common
gradient from each task's step) and most history scales positive (adding
back the running mean gradient of earlier batches), so the inner step of
the hidden and output layers was reshaped rather than simply enlarged.

Things to try next:

- more meta-iterations, or a larger outer learning rate for the scales;
- `GradientSharing(concurrent_initial=0.5)` to start with sharing switched
  on, or `concurrent="leave_one_out"`;
- `granularity="element"` (one scale per weight, like Meta-SGD's rates);
- more inner steps (`inner_steps=5`), where the history term has one slot
  per step.
"""
