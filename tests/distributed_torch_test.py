"""PyTorch data parallelism: two gloo processes (torchrun) against one.

The test launches this file under `torchrun --standalone --nproc_per_node 2`
(CPU, gloo, a free port). Each process first runs every case on one device
(no process group yet: the reference), then starts the group and runs it
again on its shard of each task batch, and writes its weights and logs. The
process with rank 1 builds its network with another seed, so the weights
match only if process 0's are broadcast.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
TESTS = pathlib.Path(__file__).resolve().parent
OUT = "KERAMETA_DISTRIBUTED_TEST_OUT"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if BACKEND != "torch":
        pytest.skip("PyTorch's data parallelism (torchrun)")
    out = tmp_path_factory.mktemp("distributed")
    path = [str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = dict(
        os.environ,
        KERAS_BACKEND="torch",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in path if p),
        **{OUT: str(out)},
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", __file__]
    run = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return [
        (
            json.loads((out / f"rank{r}.json").read_text()),
            np.load(out / f"rank{r}.npz"),
        )
        for r in (0, 1)
    ]


# Dropout: task t of process r draws the masks of task r * shard + t.
CASES = ("dense", "conv_looped", "sharing_agreement", "dropout")


@pytest.mark.parametrize("case", CASES)
def test_two_processes_match_one_device(results, case):
    (logs0, weights0), (_, weights1) = results
    count = logs0[case]["variables"]
    assert count >= 4 and logs0[case]["steps"] == 2
    for i in range(count):
        distributed = weights0[f"{case}/{i}"]
        reference = weights0[f"{case}/reference/{i}"]
        np.testing.assert_allclose(distributed, reference, atol=1e-6)
        np.testing.assert_array_equal(distributed, weights1[f"{case}/{i}"])
    # The weights moved: the comparison is not vacuous.
    assert logs0[case]["moved"] > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_callbacks_see_the_whole_batch_on_every_process(results, case):
    (logs0, _), (logs1, _) = results
    # Equal on both processes (callbacks decide alike) ...
    assert logs0[case]["distributed"] == logs1[case]["distributed"]
    # ... and equal to one device's (the whole batch's loss and metrics).
    reference = logs0[case]["reference"]
    distributed = logs0[case]["distributed"]
    assert [sorted(r) for r in reference] == [sorted(d) for d in distributed]
    for r, d in zip(reference, distributed):
        for name in r:
            np.testing.assert_allclose(
                d[name], r[name], rtol=1e-5, err_msg=name
            )


def test_all_replicas_sum_under_double_backward(results):
    (logs0, _), (logs1, _) = results
    # x = [1, 2]; s = x0^2 + x1^2 = 5; each process's objective is s^2:
    # the whole one is 2 s^2, its gradient 8 s x_r = [40, 80], and the
    # gradient of that gradient's sum 8 (2 x_r (x0 + x1) + s) = [88, 136].
    assert [logs0["double_backward"], logs1["double_backward"]] == [
        [40.0, 88.0],
        [80.0, 136.0],
    ]


# ----------------------------------------------------------------------
# The processes (run by torchrun)
# ----------------------------------------------------------------------
class _Logs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})


def _case(name, seed):
    from helpers import mlp
    from helpers import seed_everything

    import kerameta

    seed_everything(seed)
    rng = np.random.default_rng(0)
    options = {"inner_learning_rate": 0.1}
    if name == "conv_looped":
        network = keras.Sequential(
            [
                keras.Input((6, 6, 1)),
                keras.layers.Conv2D(3, 3, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(2),
            ]
        )
        labels = np.tile([0, 1], (12, 2)).astype("int32")
        images = rng.normal(size=(12, 4, 6, 6, 1)).astype("float32")
        queries = rng.normal(size=(12, 4, 6, 6, 1)).astype("float32")
        data = kerameta.data.EpisodeDataset(
            images, labels, queries, labels, tasks_per_batch=4
        )
        batches = [data[0], data[1]], data[2]
        options["vectorize_tasks"] = False
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = ["accuracy"]
    else:
        network = mlp((1, 8, 8, 1))
        if name == "dropout":
            network = keras.Sequential(
                [
                    keras.Input((1,)),
                    keras.layers.Dense(16, activation="tanh"),
                    keras.layers.Dropout(0.5),
                    keras.layers.Dense(1),
                ]
            )
        data = kerameta.data.SinusoidTasks(
            shots=5, tasks_per_batch=4, num_batches=3, seed=1
        )
        batches = [data[0], data[1]], data[2]
        loss, metrics = "mse", ["mae"]
        if name == "sharing_agreement":
            options["inner_steps"] = 2
            options["gradient_sharing"] = kerameta.GradientSharing()
            options["task_weighting"] = "gradient_agreement"
    maml = kerameta.MAML(network, **options)
    maml.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05),
        loss=loss,
        metrics=metrics,
    )
    return maml, batches


def _fit(name, seed, shard):
    from helpers import to_numpy

    maml, (train, validation) = _case(name, seed)
    before = [to_numpy(v) for v in maml.trainable_variables]

    class Batches(keras.utils.PyDataset):
        def __init__(self, batches):
            super().__init__()
            self.batches = batches
            self.tasks_per_batch = 4

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

    logs = _Logs()
    maml.fit(
        shard(Batches(train)),
        validation_data=shard(Batches([validation])),
        epochs=1,
        shuffle=False,  # the batches in order, on one device too
        callbacks=[logs],
        verbose=0,
    )
    weights = [to_numpy(v) for v in maml.trainable_variables]
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, before))
    summary = {"moved": moved, "steps": int(maml.optimizer.iterations)}
    return weights, logs.logs, summary


def _double_backward(rank):
    import torch

    from kerameta.src import backend as seam

    x = torch.tensor(rank + 1.0, requires_grad=True)
    s = seam.all_replicas_sum(x**2)
    (g,) = torch.autograd.grad(s**2, x, create_graph=True)
    (h,) = torch.autograd.grad(g, x)
    return [float(g.detach()), float(h)]


def main():
    import torch.distributed as dist

    import kerameta

    rank = int(os.environ["RANK"])
    out = pathlib.Path(os.environ[OUT])
    logs, arrays = {}, {}
    for name in CASES:
        weights, history, _ = _fit(name, 1, lambda d: d)
        logs[name] = {"reference": history}
        for i, w in enumerate(weights):
            arrays[f"{name}/reference/{i}"] = w
    dist.init_process_group("gloo")
    for name in CASES:
        weights, history, summary = _fit(
            name, 1 + rank, kerameta.data.shard_tasks
        )
        logs[name].update(summary, distributed=history)
        logs[name]["variables"] = len(weights)
        for i, w in enumerate(weights):
            arrays[f"{name}/{i}"] = w
    logs["double_backward"] = _double_backward(rank)
    dist.destroy_process_group()
    np.savez(out / f"rank{rank}.npz", **arrays)
    (out / f"rank{rank}.json").write_text(json.dumps(logs))


if __name__ == "__main__":
    main()
