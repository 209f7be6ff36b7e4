"""`ReptileRule`: move the initialization towards the adapted weights."""

from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.outer_rules.outer_rule import OuterRule


@kerameta_export
class ReptileRule(OuterRule):
    """Reptile's outer rule: the pseudo-gradient `initial - adapted`.

    The outer optimizer receives `sum_i w_i * (initial - adapted_i)` for
    the adapted weights, with `w_i` the task weights (`1 / tasks` by
    default), through a surrogate objective whose gradient it is. No
    second-order graph and no query gradient are needed; the query losses
    only score the adaptation. A co-learner adds its first-order gradient
    (through the adapted weights, their Jacobian taken as the identity).
    Used by `kerameta.Reptile`.

    String id: `"reptile"`.

    Reference:

    - [Nichol et al., 2018. On First-Order Meta-Learning
      Algorithms](https://arxiv.org/abs/1803.02999)
    """

    string_id = "reptile"
    differentiates_inner_loop = False

    def query_weights(self, initial, fast):
        # The adapted values, with the identity as their Jacobian with
        # respect to the initial weights: first-order co-learner terms.
        return [
            ops.expand_dims(p, 0) + ops.stop_gradient(f - ops.expand_dims(p, 0))
            for p, f in zip(initial, fast)
        ]

    def objective(
        self, weights, task_losses, co_losses, initial, fast, combine
    ):
        objective = 0.0
        for p, f in zip(initial, fast):
            update = ops.expand_dims(p, 0) - ops.stop_gradient(f)
            shape = (-1,) + (1,) * (len(update.shape) - 1)
            pseudo_gradient = ops.sum(
                ops.reshape(weights, shape) * update, axis=0
            )
            objective = objective + ops.sum(
                p * ops.stop_gradient(pseudo_gradient)
            )
        # The query losses only score the adaptation; a co-learner's loss
        # (zero without one) adds its gradient.
        return objective + combine(
            weights, ops.zeros_like(task_losses), co_losses
        )
