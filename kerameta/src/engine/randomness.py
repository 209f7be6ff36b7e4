"""Random layers (Dropout, GaussianNoise, ...) in the inner and outer loop.

A Keras layer that draws random numbers keeps a `keras.random.
SeedGenerator`, whose state (a non-trainable `seed_generator_state`
variable, `[seed, counter]`) advances by one at every draw. `stateless_call`
reads that state from the non-trainable values it is given and returns the
advanced state, which a meta-step cannot thread through `vmap`, a
recomputed backward pass or a per-task loop. So kerameta derives the state
of every network call explicitly:

- each task `t` and each call site `salt` (the query, or inner step `s`)
  gets the state `[seed ^ mix(salt, t, g), counter * STRIDE]` for
  generator `g`: a fresh, independent mask per task and per inner step;
- the same `(salt, t)` always gives the same state within a meta-step, so
  an estimator that recomputes an inner step (`checkpointed`) draws the
  same masks;
- after each meta-training step the counter advances by one, as it does
  once per call in plain Keras: every meta-step draws new masks, and runs
  are reproducible under `keras.utils.set_random_seed`;
- `evaluate` and `predict` read the state without advancing it, so they
  are deterministic, like Keras's (the network still runs with
  `training=True`: kerameta's batch normalization is transductive).

The calls inside one network call draw the counters `counter * STRIDE`,
`counter * STRIDE + 1`, ...; `STRIDE` keeps them apart from the next
meta-step's.
"""

from typing import Any

import numpy as np
from keras import ops

from kerameta.src.engine import replicas
from kerameta.src.types import Tensor

STRIDE = 1024
QUERY = 0  # the salt of the query call; inner step `s` uses `s + 1`
_STATE_NAME = "seed_generator_state"


def _mix(*values: int) -> int:
    """A 31-bit hash of small integers (SplitMix-style finalizer)."""
    h = 0x1234567
    for v in values:
        h = (h ^ (v + 0x9E3779B9 + (h << 6) + (h >> 2))) & 0xFFFFFFFF
        h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
        h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
        h ^= h >> 16
    return h & 0x7FFFFFFF  # fits every backend's seed dtype (int32 too)


class RandomLayers:
    """Derives the seed-generator states of a network's calls.

    Args:
        positions: where the seed-generator states sit in the network's
            `non_trainable_variables`.
    """

    def __init__(self, positions: list[int]) -> None:
        self.positions = list(positions)

    @classmethod
    def of(cls, model) -> "RandomLayers | None":
        """The network's random layers, or `None` if it has none."""
        positions = [
            i
            for i, v in enumerate(model.non_trainable_variables)
            if v.name == _STATE_NAME
        ]
        return cls(positions) if positions else None

    def keys(
        self,
        non_trainable: list[Tensor],
        num_tasks: int,
        salt: int,
        task: tuple[Any, int] | None = None,
    ):
        """Every task's generator states for call site `salt`.

        Under data parallelism `num_tasks` is this replica's share, and
        task `t` of replica `r` draws as task `r * num_tasks + t` of the
        whole batch: the masks of a one-device run. `task`, `(index,
        count)`, says that the `num_tasks = 1` task is task `index` (an
        `int` or a scalar tensor) of a batch of `count` tasks (tasks
        accumulated one at a time, see `engine.accumulation`).

        Returns:
            A `(num_tasks, generators, 2)` tensor in the state's dtype.
        """
        states = ops.stack([non_trainable[i] for i in self.positions])
        count = replicas.num_tasks(num_tasks) if task is None else task[1]
        salts = np.array(
            [
                [_mix(salt, t, g) for g in range(len(self.positions))]
                for t in range(count)
            ],
            dtype="int64",
        )
        salts = ops.cast(ops.convert_to_tensor(salts), states.dtype)
        if task is None:
            salts = replicas.local_tasks(salts, num_tasks)
        else:
            salts = ops.take(salts, ops.reshape(task[0], (1,)), axis=0)
        first = ops.bitwise_xor(ops.expand_dims(states[:, 0], 0), salts)
        counter = ops.expand_dims(states[:, 1] * STRIDE, 0)
        second = ops.broadcast_to(counter, ops.shape(first))
        return ops.stack([first, second], axis=-1)

    def substitute(self, non_trainable: list[Tensor], keys) -> list[Tensor]:
        """`non_trainable` with one task's `keys` `(generators, 2)` in it."""
        values = list(non_trainable)
        for j, i in enumerate(self.positions):
            values[i] = keys[j]
        return values

    def advance(self, model) -> None:
        """Moves every generator's counter on by one (a meta-step's draw)."""
        variables = model.non_trainable_variables
        for i in self.positions:
            state = variables[i]
            increment = ops.convert_to_tensor([0, 1], dtype=state.dtype)
            state.assign(ops.add(state.value, increment))
