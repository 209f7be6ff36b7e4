"""Omniglot MAML benchmark: accuracy against meta-iterations and wall time.

MAML, 5-way 1-shot by default, on real Omniglot (the offline zips of
`../shared/data/omniglot`, or `KERAMETA_OMNIGLOT_DIR`) through the public
API only: `kerameta.datasets.omniglot.load_data`, `FewShotTasks` with the
90-degree rotation classes, `kerameta.models.conv4`, `MAML.fit` and
`kerameta.meta_test`. Training follows Finn et al. (2017): the strided
Conv-4, meta-batch 32, one inner step, Adam 1e-3, and a training query set
of `shots` examples per class. Validation accuracy (a fixed set of episodes)
is recorded every `--eval-every` meta-iterations with the wall time; at the
end, the meta-test protocol scores 600 test episodes (15 queries per
class) with 95% confidence intervals.

A run stops after `--iterations` meta-iterations or `--time-budget`
minutes, whichever comes first, so it fits a CPU: state the budget with the
result. The sampler's speed (episodes per second) is measured too and
compared with the meta-step it feeds.

Every run appends one JSON line to `--output` (default
`benchmarks/omniglot_results.jsonl`); `python benchmarks/report.py` renders
it into `benchmarks/RESULTS.md`.

Usage:

```bash
# the bounded CPU run of RESULTS.md:
KERAS_BACKEND=jax python benchmarks/omniglot_maml.py --time-budget 40
# the full protocol (on a GPU):
KERAS_BACKEND=jax python benchmarks/omniglot_maml.py --iterations 60000
```
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
DEFAULT_OUTPUT = HERE / "omniglot_results.jsonl"
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "omniglot"

import keras  # noqa: E402
from meta_iteration import machine_facts  # noqa: E402
from meta_iteration import peak_rss_mb  # noqa: E402

import kerameta  # noqa: E402


class CosineDecayOverBudget(keras.callbacks.Callback):
    """Decays the meta learning rate on a half cosine over a run's length.

    A run here is bounded by wall time, so the schedule follows whichever
    is further along: the elapsed fraction of the time budget or of the
    iteration count. The rate goes from its initial value down to
    `final_fraction` times it, and is set at the start of each epoch (every
    `--eval-every` meta-iterations), as `LearningRateScheduler` does.
    """

    def __init__(
        self,
        iterations,
        iterations_per_epoch,
        budget_seconds,
        final_fraction=0.1,
    ):
        super().__init__()
        self.iterations = iterations
        self.iterations_per_epoch = iterations_per_epoch
        self.budget_seconds = budget_seconds
        self.final_fraction = final_fraction

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.initial = float(self.model.optimizer.learning_rate)

    def on_epoch_begin(self, epoch, logs=None):
        done = max(
            (time.perf_counter() - self.start) / self.budget_seconds,
            epoch * self.iterations_per_epoch / self.iterations,
        )
        cosine = 0.5 * (1.0 + np.cos(np.pi * min(1.0, done)))
        scale = self.final_fraction + (1.0 - self.final_fraction) * cosine
        self.model.optimizer.learning_rate = self.initial * scale


class Progress(keras.callbacks.Callback):
    """Records validation accuracy against meta-iterations and wall time."""

    def __init__(self, iterations_per_epoch, budget_seconds):
        super().__init__()
        self.iterations_per_epoch = iterations_per_epoch
        self.budget_seconds = budget_seconds
        self.curve = []
        self.step_seconds = []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # wait for the (asynchronous) step
        self.step_seconds.append(time.perf_counter() - self.batch_start)

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self.start
        point = {
            "iterations": (epoch + 1) * self.iterations_per_epoch,
            "seconds": round(elapsed, 1),
            "train_accuracy": round(float(logs["accuracy"]), 4),
            "val_accuracy": round(float(logs["val_accuracy"]), 4),
            "learning_rate": float(self.model.optimizer.learning_rate),
        }
        self.curve.append(point)
        print(json.dumps(point), flush=True)
        if elapsed > self.budget_seconds:
            self.model.stop_training = True


def device_kind() -> str:
    """`"gpu"` when the backend computes on a GPU, else `"cpu"`."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() == "gpu" else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def sampler_speed(tasks, repeats=20):
    """Median seconds to build one batch, and episodes per second."""
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        tasks[index % len(tasks)]
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return seconds, tasks.tasks_per_batch / seconds


def _co_learner(args):
    """CML's co-learner: a conv block on the last block's features."""
    head = keras.Sequential(
        [
            keras.layers.Conv2D(args.filters, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(args.ways),
        ]
    )
    return {"co_learner": kerameta.CoLearner(head, "block4_relu")}


METHODS = {
    "maml": lambda args: {},
    "gradient_sharing": lambda args: {
        "gradient_sharing": kerameta.GradientSharing()
    },
    "gradient_agreement": lambda args: {"task_weighting": "gradient_agreement"},
    "co_learner": _co_learner,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--tasks-per-batch", type=int, default=32)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--inner-learning-rate", type=float, default=0.4)
    parser.add_argument("--meta-learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--evaluation-inner-steps",
        type=int,
        default=3,
        help="inner steps of the validation episodes",
    )
    parser.add_argument(
        "--test-inner-steps",
        type=int,
        default=10,
        help="inner steps of the meta-test (the paper: 10)",
    )
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=float("inf"),
        help="minutes of meta-training at most",
    )
    parser.add_argument(
        "--cosine-decay",
        action="store_true",
        help="decay the meta learning rate on a half cosine to 0.1 times "
        "its initial value over the time budget (or --iterations, whichever "
        "ends first), updated every --eval-every iterations",
    )
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--validation-episodes", type=int, default=200)
    parser.add_argument("--test-episodes", type=int, default=600)
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="maml",
        help="plain MAML or MAML with one of the seed methods (issue #4)",
    )
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source-dir",
        default=os.environ.get("KERAMETA_OMNIGLOT_DIR", str(DEFAULT_SOURCE)),
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        kerameta.datasets.omniglot.load_data(
            args.source_dir, data_dir=args.data_dir, seed=args.seed
        )
    )
    load_seconds = time.perf_counter() - start
    episode = {"ways": args.ways, "shots": args.shots, "rotations": True}
    train = kerameta.data.FewShotTasks(
        x_train,
        y_train,
        **episode,
        query_shots=args.shots,
        tasks_per_batch=args.tasks_per_batch,
        num_batches=args.eval_every,
        seed=args.seed,
        new_tasks_each_epoch=True,
    )
    val = kerameta.data.FewShotTasks(
        x_val,
        y_val,
        **episode,
        query_shots=15,
        tasks_per_batch=20,
        num_batches=max(1, args.validation_episodes // 20),
        seed=args.seed + 1,
    )
    test = kerameta.data.FewShotTasks(
        x_test,
        y_test,
        **episode,
        query_shots=15,
        tasks_per_batch=20,
        num_batches=-(-args.test_episodes // 20),
        seed=args.seed + 2,
    )
    sampler_seconds, episodes_per_second = sampler_speed(train)

    net = kerameta.models.conv4(
        (28, 28, 1), args.ways, filters=args.filters, downsampling="strided"
    )
    maml = kerameta.MAML(
        net,
        inner_steps=args.inner_steps,
        inner_learning_rate=args.inner_learning_rate,
        evaluation_inner_steps=args.evaluation_inner_steps,
        **METHODS[args.method](args),
    )
    maml.compile(
        optimizer=keras.optimizers.Adam(args.meta_learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = -(-args.iterations // args.eval_every)
    progress = Progress(args.eval_every, args.time_budget * 60)
    callbacks = [progress]
    if args.cosine_decay:
        callbacks.insert(
            0,
            CosineDecayOverBudget(
                args.iterations, args.eval_every, args.time_budget * 60
            ),
        )
    maml.fit(
        train,
        validation_data=val,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
    )
    train_seconds = time.perf_counter() - progress.start
    start = time.perf_counter()
    result = kerameta.meta_test(
        maml,
        test,
        episodes=args.test_episodes,
        inner_steps=args.test_inner_steps,
    )
    test_seconds = time.perf_counter() - start
    print(result, flush=True)

    step_seconds = float(np.median(progress.step_seconds[1:]))
    record = {
        "kind": "omniglot",
        "date": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "backend": keras.backend.backend(),
        "device": device_kind(),
        "machine": machine_facts(),
        "settings": {
            "method": args.method,
            "ways": args.ways,
            "shots": args.shots,
            "tasks_per_batch": args.tasks_per_batch,
            "inner_steps": args.inner_steps,
            "inner_learning_rate": args.inner_learning_rate,
            "meta_learning_rate": args.meta_learning_rate,
            "meta_learning_rate_decay": (
                "cosine to 0.1x over the run" if args.cosine_decay else None
            ),
            "classification_loss": "mean cross-entropy",
            "evaluation_inner_steps": args.evaluation_inner_steps,
            "test_inner_steps": args.test_inner_steps,
            "filters": args.filters,
            "seed": args.seed,
            "iterations_requested": args.iterations,
            "time_budget_minutes": (
                None if args.time_budget == float("inf") else args.time_budget
            ),
        },
        "iterations": progress.curve[-1]["iterations"],
        "train_seconds": round(train_seconds, 1),
        "median_step_seconds": round(step_seconds, 4),
        "first_step_seconds": round(progress.step_seconds[0], 2),
        "load_seconds": round(load_seconds, 1),
        "sampler_batch_seconds": round(sampler_seconds, 5),
        "sampler_episodes_per_second": round(episodes_per_second, 1),
        "sampler_speedup_over_step": round(step_seconds / sampler_seconds, 1),
        "curve": progress.curve,
        "test_accuracy": round(result.mean, 4),
        "test_confidence_interval": round(result.confidence_interval, 4),
        "test_episodes": result.episodes,
        "test_seconds": round(test_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    with open(args.output, "a") as file:
        file.write(json.dumps(record) + "\n")
    print(f"Appended the result to {args.output}")


if __name__ == "__main__":
    main()
