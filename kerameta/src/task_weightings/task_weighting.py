"""`TaskWeighting`: the base class of task weightings, and the mean."""

from typing import Any

from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import check_choice
from kerameta.src.types import Tensor

_APPLY_TO = ("total", "meta_loss")


@kerameta_export
class TaskWeighting:
    """Base class of the task weightings of the outer loss; uniform weights.

    The meta-objective of a batch of `B` tasks is `sum_i w_i * L_i`, with
    `L_i` task `i`'s query loss after adaptation (plus its co-learner loss,
    see `apply_to`). This base class gives `w_i = 1 / B`: the mean, as in
    MAML. Subclasses override `weights`, which receives each task's update
    of the adapted weights; the weights are constants of the
    meta-gradient (computed without gradient).

    String id: `"mean"`.

    Args:
        apply_to: `"total"` weights each task's query loss plus its
            co-learner loss (if a `CoLearner` is used); `"meta_loss"`
            weights only the query loss, and the co-learner loss is
            averaged uniformly. Defaults to `"total"`.
    """

    string_id = "mean"

    def __init__(self, apply_to: str = "total") -> None:
        self.apply_to = check_choice("apply_to", apply_to, _APPLY_TO)

    def weights(self, updates: list[Tensor]) -> Tensor:
        """Returns the weight of each task, shaped `(tasks,)`.

        Args:
            updates: for each adapted weight, every task's update
                `initial - adapted`, with a leading task axis (already
                stop-gradient). Every task of the batch, also under data
                parallelism, where the engine gathers them from the
                replicas and gives each replica its tasks' weights.
        """
        num_tasks = updates[0].shape[0]
        return ops.ones((num_tasks,), dtype=updates[0].dtype) / num_tasks

    @property
    def is_uniform(self) -> bool:
        """Whether every task weighs `1 / B` (nothing to compute)."""
        return type(self).weights is TaskWeighting.weights

    def get_config(self) -> dict[str, Any]:
        return {"apply_to": self.apply_to}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TaskWeighting":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"
