"""JAX: meta-training under `keras.distribution`, on 4 forced host devices.

One subprocess (XLA reads `--xla_force_host_platform_device_count` when it
starts) runs every check and prints one JSON line:

- two SGD meta-steps under `DataParallel` give the weights of a run on one
  device (to 1e-6): second-order MAML on a dense net (the `vmap` path), a
  conv net (the `lax.map` path, sharded with `shard_map`), and gradient
  sharing with gradient agreement; the conv net also under `ModelParallel`,
  whose `LayoutMap` leaves its kernel split over the model axis, with only
  the head adapted (ANIL: the frozen kernel is shared by every task, and
  its cotangents cross the task loop through the CPU kernels' custom VJP);
- the compiled train steps gather no tasks (no all-gather: each device
  adapts its own tasks) and sum the meta-gradient (one all-reduce), and a
  per-task output of the task loop stays split over the batch axis;
- tasks per batch that do not divide the batch axis raise a clear error
  before Keras distributes the data, and `adapt` (one task) still works.
"""

import os

import keras
import pytest
from helpers import run_result_script

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="keras.distribution on JAX"
)

_SCRIPT = r"""
import json
import re
import time

import jax
import keras
import numpy as np

import kerameta
from kerameta.src import backend as seam

jax.config.update("jax_default_matmul_precision", "highest")
DEVICES = jax.devices()
assert len(DEVICES) == 4, DEVICES


def episodes(tasks, shape, seed=0):
    rng = np.random.default_rng(seed)
    def draw(*s):
        return rng.normal(size=(tasks, 4, *s)).astype("float32")
    return {"support_x": draw(*shape), "support_y": draw(1),
            "query_x": draw(*shape)}, draw(1)


def network(conv):
    keras.utils.set_random_seed(1)
    if conv:
        layers = [keras.Input((6, 6, 1)),
                  keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                  keras.layers.MaxPooling2D(), keras.layers.Flatten()]
    else:
        layers = [keras.Input((1,)),
                  keras.layers.Dense(8, activation="tanh", name="hidden1")]
    return keras.Sequential(layers + [keras.layers.Dense(1, name="head")])


def two_steps(distribution, conv, inspect=False, tasks=4, **kwargs):
    # Built under the distribution: its variables take their layouts.
    keras.distribution.set_distribution(distribution)
    try:
        maml = kerameta.MAML(network(conv), inner_steps=1, **kwargs)
        maml.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        initial = [np.asarray(w) for w in maml.get_weights()]
        x, y = episodes(2 * tasks, (6, 6, 1) if conv else (1,))
        maml.fit(x, y, batch_size=tasks, epochs=1, shuffle=False, verbose=0)
        weights = [np.asarray(w) for w in maml.get_weights()]
        maml.moved = gap(initial, weights)
        hlo = inspect and compiled_step(maml, distribution, x, y, tasks)
    finally:
        keras.distribution.set_distribution(None)
    return maml, weights, hlo


def compiled_step(maml, distribution, x, y, tasks):
    def place(a):
        layout = distribution.get_data_layout(a.shape)
        return keras.distribution.distribute_tensor(a[:tasks], layout)
    data = (keras.tree.map_structure(place, x), place(y), None)
    state = [[v.value for v in group] for group in (
        maml.trainable_variables, maml.non_trainable_variables,
        maml.optimizer.variables, maml.metrics_variables)]
    text = jax.jit(maml.train_step).lower(state, data).compile().as_text()
    found = re.findall(r" (all-gather|all-reduce)(?:-start)?\(.*"
                       r"replica_groups=(mesh\[[^]]*\] \{[^}]*\}|\S+)", text)
    ops = [op for op, _ in found]
    # On the (batch=2, model=2) mesh, devices {0, 1} and {2, 3} differ only
    # along the model axis (XLA's axis_1): a gather among them is model
    # parallelism's.
    def model_axis(groups):
        return groups.rstrip(",") in ("[2,2]<=[4]", "{{0,1},{2,3}}") or (
            groups.endswith("{'axis_1'}"))
    return {"all-gather": ops.count("all-gather"),
            "all-reduce": ops.count("all-reduce"),
            "task_gathers": sum(op == "all-gather" and not model_axis(groups)
                                for op, groups in found)}


def data_parallel(count):
    return keras.distribution.DataParallel(devices=DEVICES[:count])


def model_parallel():
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], DEVICES)
    layouts = keras.distribution.LayoutMap(mesh)
    # Full-match regexes: "conv/kernel" alone would match no path.
    layouts[".*conv.*kernel"] = (None, None, None, "model")
    return keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch")


def gap(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


result = {}
cases = {  # name: (conv, distribution, compile its step again to read it)
    "dense": (False, data_parallel(4), False),
    "conv": (True, data_parallel(2), True),
    "sharing_agreement": (False, data_parallel(4), False),
    "conv_model_parallel": (True, model_parallel(), True),
}
for name, (conv, distribution, inspect) in cases.items():
    start = time.time()
    def options():  # fresh components for each run
        if name == "conv_model_parallel":  # ANIL: a frozen, split kernel
            return dict(adapted_layers=["head"])
        if name != "sharing_agreement":
            return {}
        return dict(gradient_sharing=kerameta.GradientSharing(),
                    task_weighting="gradient_agreement")
    _, one, _ = two_steps(None, conv, **options())
    maml, many, hlo = two_steps(distribution, conv, inspect, **options())
    result[name] = {"gap": gap(one, many), "moved": maml.moved,
                    "vectorized": maml.vectorize_tasks,
                    "collectives": hlo, "seconds": time.time() - start}
    if name == "conv_model_parallel":
        kernel = maml.model.get_layer("conv").kernel.value
        result[name]["kernel_spec"] = [str(s) for s in kernel.sharding.spec]
        x, _ = episodes(1, (6, 6, 1))
        adapted = maml.adapt(x["support_x"][0], x["support_y"][0])
        result[name]["adapt"] = list(adapted.get_layer("head").kernel.shape)

# A per-task output of both task paths stays split over the batch axis.
keras.distribution.set_distribution(data_parallel(4))
split = data_parallel(4).get_data_layout((8, 3))
params = [keras.distribution.distribute_tensor(np.ones((8, 3)), split)]
inputs = keras.distribution.distribute_tensor(np.ones((8, 3)), split)
def task_fn(task_params, shared, x):
    return jax.numpy.sum(task_params[0] * x) + shared
result["per_task_spec"] = {}
for vectorize in (True, False):
    over_tasks = seam.per_task_map(task_fn, vectorize=vectorize)
    out = jax.jit(lambda p, x: over_tasks(p, 1.0, x))(params, inputs)
    result["per_task_spec"][vectorize] = [str(s) for s in out.sharding.spec]
keras.distribution.set_distribution(None)

# 6 tasks do not split over 4 devices, nor does a last batch of 2 (10
# tasks in batches of 4): a clear error before Keras's own.
for name, conv, tasks, batch_size in (
    ("dense", False, 6, 6), ("conv", True, 6, 6), ("last", False, 10, 4)
):
    keras.distribution.set_distribution(data_parallel(4))
    maml = kerameta.MAML(network(conv), inner_steps=1)
    maml.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = episodes(tasks, (6, 6, 1) if conv else (1,))
    try:
        maml.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        result[f"indivisible_{name}"] = None
    except ValueError as error:
        result[f"indivisible_{name}"] = str(error)
    keras.distribution.set_distribution(None)
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"
    env["XLA_FLAGS"] = " ".join(
        [env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]
    )
    env["JAX_PLATFORMS"] = "cpu"
    return run_result_script(
        ["-c", _SCRIPT], env, cwd=tmp_path_factory.mktemp("distributed")
    )


@pytest.mark.parametrize(
    "case, vectorized",
    [
        ("dense", True),
        ("conv", False),
        ("sharing_agreement", True),
        ("conv_model_parallel", False),
    ],
)
def test_two_meta_steps_match_one_device(result, case, vectorized):
    outcome = result[case]
    assert outcome["vectorized"] is vectorized
    assert outcome["gap"] < 1e-6 < 1e-3 < outcome["moved"], outcome
    # Each device adapts its own tasks: no task is gathered, and the
    # meta-gradient is summed. (The model-parallel conv net gathers its
    # channel-split activations along the model axis.)
    collectives = outcome["collectives"]
    if not collectives:
        return  # the vectorized path: its per-task outputs are checked below
    assert collectives["task_gathers"] == 0, outcome
    assert collectives["all-reduce"] >= 1, outcome
    if "model_parallel" not in case:
        assert collectives["all-gather"] == 0, outcome


def test_model_parallel_layouts_are_respected(result):
    outcome = result["conv_model_parallel"]
    assert outcome["kernel_spec"] == ["None", "None", "None", "model"]
    assert outcome["adapt"] == [16, 1]  # one task, not split


def test_per_task_outputs_stay_split_over_the_batch_axis(result):
    assert result["per_task_spec"] == {"true": ["batch"], "false": ["batch"]}


@pytest.mark.parametrize(
    "case, received", [("dense", 6), ("conv", 6), ("last", 2)]
)
def test_tasks_that_do_not_divide_the_batch_axis(result, case, received):
    message = result[f"indivisible_{case}"]
    assert message is not None
    assert "batch axis 'batch', which has 4 devices" in message
    assert f"Received: a batch of {received} tasks" in message
    assert "divisible by 4" in message
