"""`OuterRule`: how the adapted weights become a meta-update (MAML's rule)."""

from collections.abc import Callable
from typing import Any

from kerameta.src.api_export import kerameta_export
from kerameta.src.types import Tensor


@kerameta_export
class OuterRule:
    """The outer rule of MAML: differentiate the query losses.

    An outer rule turns a batch's adaptation into the objective whose
    gradient the outer optimizer applies. MAML's rule (this class) scores
    each task's query set with its adapted weights and differentiates the
    task-weighted query loss through the inner loop (how far back is the
    meta-gradient estimator's choice). Other rules (`Reptile`) replace the
    objective by a surrogate whose gradient is their update.

    Subclasses set `string_id` and override `query_weights` and/or
    `objective`, and may set `differentiates_inner_loop = False` when no
    meta-gradient reaches the inner loop (its learned weights then stay
    fixed).

    String id: `"maml"`.
    """

    string_id = "maml"
    #: Whether the meta-gradient reaches what the inner loop reads (the
    #: inner optimizer's and gradient sharing's learned weights).
    differentiates_inner_loop = True

    def query_weights(
        self, initial: list[Tensor], fast: list[Tensor]
    ) -> list[Tensor]:
        """The adapted weights that score the query sets.

        Args:
            initial: the meta-learned values of the adapted weights.
            fast: the adapted weights, with a leading task axis.
        """
        del initial
        return fast

    def objective(
        self,
        weights: Tensor,
        task_losses: Tensor,
        co_losses: Tensor,
        initial: list[Tensor],
        fast: list[Tensor],
        combine: Callable[[Tensor, Tensor, Tensor], Tensor],
    ) -> Tensor:
        """The differentiated meta-objective of a batch.

        Args:
            weights: each task's weight, `(tasks,)`, constants.
            task_losses: each task's query loss (plus the estimator's outer
                terms), `(tasks,)`.
            co_losses: each task's co-learner loss (zeros without one).
            initial: the meta-learned values of the adapted weights.
            fast: the adapted weights, with a leading task axis.
            combine: `combine(weights, task_losses, co_losses)`, the
                task-weighted sum with the co-learner term.
        """
        del initial, fast
        return combine(weights, task_losses, co_losses)

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "OuterRule":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
