"""
Title: Meta-training on several devices
Author: kerameta team
Date created: 2026/12/06
Last modified: 2026/12/06
Description: Data-parallel MAML with each backend's own engine, on CPU devices.
Accelerator: None
"""

"""
## Introduction

A batch of tasks splits naturally over devices: each device adapts a share
of the tasks, and the shares' meta-gradients add up to the meta-gradient of
the whole batch. kerameta scales out with the engine your backend already
has, and keeps the result exact (the weights after each meta-step equal a
one-device run's, to float rounding, gradient sharing and gradient
agreement included):

- **JAX**: `keras.distribution.DataParallel`; the task axis is the batch
  axis that Keras shards over the devices.
- **TensorFlow**: `tf.distribute.MirroredStrategy`; each replica runs the
  meta-step on its shard of the tasks.
- **PyTorch**: one process per device, started with `torchrun`; kerameta
  sums the meta-gradient and the batch statistics over the processes.

This example runs on any machine: it makes two CPU devices (forced host
devices on JAX, logical devices on TensorFlow, two processes on PyTorch),
meta-trains MAML with gradient sharing and gradient agreement on sinusoid
regression, and evaluates it. On a GPU machine, drop the device set-up: the
same code uses every GPU. The [Scaling out](../scaling_out.md) page has the
details for each engine.
"""

"""
## Setup

The devices must exist before the framework starts, so they are set up
first. `KERAMETA_SMOKE=1` runs a tiny version of this example (for tests).
"""

import os
import subprocess
import sys

BACKEND = os.environ.setdefault("KERAS_BACKEND", "jax")
DEVICES = 2
SMOKE = os.environ.get("KERAMETA_SMOKE") == "1"

if BACKEND == "jax":
    # Before JAX starts: split the host CPU into two XLA devices.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={DEVICES}"
    )
elif BACKEND == "torch" and "WORLD_SIZE" not in os.environ:
    # Start this script again in two processes, as `torchrun
    # --standalone --nproc_per_node 2 examples/multi_device.py` would.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={DEVICES}", *sys.argv]
    sys.exit(subprocess.run(command).returncode)

import keras

import kerameta

print("Keras backend:", keras.config.backend())

"""
## The devices and the engine

Each backend's own way of running one step on several devices. The model
and the meta-model are built afterwards, inside the distribution (JAX), the
strategy's scope (TensorFlow), or in every process (PyTorch).
"""

if BACKEND == "jax":
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    print("Devices:", devices)
    scope = None
elif BACKEND == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES
    )
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(DEVICES)]
    )
    print("Replicas:", strategy.num_replicas_in_sync)
    scope = strategy.scope()
else:
    import torch

    torch.distributed.init_process_group("gloo")  # "nccl" on GPUs
    print(
        f"Process {torch.distributed.get_rank()} of "
        f"{torch.distributed.get_world_size()}"
    )
    scope = None
# Every process logs the same values; the first one prints them.
FIRST = BACKEND != "torch" or torch.distributed.get_rank() == 0

"""
## The meta-model

Exactly what one device would run: MAML with gradient sharing and
gradient-agreement task weights, whose batch statistics kerameta computes
over every task of the batch, on every device. The seed is the same
everywhere (PyTorch broadcasts process 0's weights anyway).
"""

TASKS_PER_BATCH = 8  # 4 per device
keras.utils.set_random_seed(1)


def build_meta_model():
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    maml = kerameta.MAML(
        model,
        inner_steps=1,
        inner_learning_rate=0.01,
        evaluation_inner_steps=5,
        gradient_sharing=kerameta.GradientSharing(),
        task_weighting="gradient_agreement",
    )
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return maml


if scope is not None:
    with scope:
        maml = build_meta_model()
else:
    maml = build_meta_model()

"""
## Meta-training

Every device sees the same batches; on PyTorch each process keeps its shard
of the tasks of every batch (`kerameta.data.shard_tasks`), while JAX and
TensorFlow split each batch themselves.
"""


def tasks(num_batches, seed):
    dataset = kerameta.data.SinusoidTasks(
        shots=10,
        query_shots=10,
        tasks_per_batch=TASKS_PER_BATCH,
        num_batches=num_batches,
        seed=seed,
    )
    return kerameta.data.shard_tasks(dataset) if BACKEND == "torch" else dataset


history = maml.fit(
    tasks(4 if SMOKE else 500, seed=1),
    epochs=1 if SMOKE else 5,
    verbose=2 if FIRST else 0,
)
if FIRST:
    print("Final meta-training loss:", history.history["loss"][-1])

"""
## Evaluation

`evaluate` adapts to each task's support set and scores its query set, each
device on its share; the logged loss is that of every task.
"""

logs = maml.evaluate(
    tasks(2 if SMOKE else 50, seed=3), verbose=0, return_dict=True
)
if FIRST:
    print("Test MSE after meta-training:", logs["loss"])

if BACKEND == "torch":
    torch.distributed.destroy_process_group()
