"""The sinusoid regression task family of MAML."""

import math
from typing import Any

import numpy as np

from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches

# The tasks are float32: larger bounds would overflow to inf.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair (low, high). Received: {name}={value!r}"
        ) from None
    if not all(
        math.isfinite(v) and abs(v) <= _FLOAT32_MAX for v in (low, high)
    ):
        raise ValueError(
            f"`{name}` must hold finite numbers that fit in float32 (the "
            f"tasks are float32; |value| <= {_FLOAT32_MAX:.3g}). Received: "
            f"{name}={value!r}"
        )
    if not low <= high:
        raise ValueError(
            f"`{name}` must satisfy low <= high. Received: {name}={value!r}"
        )
    return low, high


class SinusoidTasks(TaskBatches):
    """Batches of sinusoid regression tasks (MAML's toy problem).

    Each task is `y = amplitude * sin(x - phase)` with the amplitude drawn
    from U[0.1, 5], the phase from U[0, pi] and the inputs from U[-5, 5];
    support and query points come from the same function. Each batch is
    `(x, query_y)` with `x = {"support_x", "support_y", "query_x"}` shaped
    `(tasks_per_batch, shots, 1)` and `(tasks_per_batch, query_shots, 1)`,
    float32. Batches depend only on the seed and their index, so a
    validation or test set gives the same tasks every time.

    Args:
        shots: support points per task.
        query_shots: query points per task. Defaults to `shots`.
        tasks_per_batch: tasks in one batch (the meta-batch size). Defaults
            to `25`.
        num_batches: batches in one epoch. Defaults to `100`.
        seed: seed of the task generator. Defaults to `0`.
        new_tasks_each_epoch: draw new tasks every epoch (for training);
            `False` repeats the same batches every epoch (for validation
            and testing). Defaults to `False`.
        amplitude_range: `(low, high)` of the uniform amplitude, finite,
            `low <= high`. Defaults to `(0.1, 5.0)`.
        phase_range: `(low, high)` of the uniform phase, likewise.
            Defaults to `(0, pi)`.
        input_range: `(low, high)` of the uniform inputs, likewise.
            Defaults to `(-5.0, 5.0)`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Example:

    ```python
    tasks = kerameta.data.SinusoidTasks(shots=10, tasks_per_batch=25,
                                        num_batches=100, seed=0)
    x, query_y = tasks[0]
    x["support_x"].shape  # (25, 10, 1)
    ```

    Reference:

    - [Finn et al., 2017](https://arxiv.org/abs/1703.03400), section 5.1
    """

    def __init__(
        self,
        shots: int = 10,
        query_shots: int | None = None,
        tasks_per_batch: int = 25,
        num_batches: int = 100,
        seed: int = 0,
        new_tasks_each_epoch: bool = False,
        amplitude_range: tuple[float, float] = (0.1, 5.0),
        phase_range: tuple[float, float] = (0.0, math.pi),
        input_range: tuple[float, float] = (-5.0, 5.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(num_batches, seed, new_tasks_each_epoch, **kwargs)
        self.shots = check_positive_int("shots", shots)
        self.query_shots = check_positive_int(
            "query_shots", shots if query_shots is None else query_shots
        )
        self.tasks_per_batch = check_positive_int(
            "tasks_per_batch", tasks_per_batch
        )
        self.amplitude_range = _check_range("amplitude_range", amplitude_range)
        self.phase_range = _check_range("phase_range", phase_range)
        self.input_range = _check_range("input_range", input_range)

    def task_parameters(self, index: int) -> dict[str, np.ndarray]:
        """The amplitude and phase of each task of batch `index`."""
        rng = self.rng(index)
        amplitude = rng.uniform(*self.amplitude_range, self.tasks_per_batch)
        phase = rng.uniform(*self.phase_range, self.tasks_per_batch)
        return {"amplitude": amplitude, "phase": phase}

    def __getitem__(self, index: int):
        rng = self.rng(index)
        amplitude = rng.uniform(*self.amplitude_range, self.tasks_per_batch)
        phase = rng.uniform(*self.phase_range, self.tasks_per_batch)
        points = self.shots + self.query_shots
        x = rng.uniform(*self.input_range, (self.tasks_per_batch, points, 1))
        y = amplitude[:, None, None] * np.sin(x - phase[:, None, None])
        x = x.astype("float32")
        y = y.astype("float32")
        s = self.shots
        inputs = {
            "support_x": x[:, :s],
            "support_y": y[:, :s],
            "query_x": x[:, s:],
        }
        return inputs, y[:, s:]
