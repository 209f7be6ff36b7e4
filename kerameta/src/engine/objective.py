"""The outer objective: query losses, task weights, the co-learner term.

After the inner loop, every task's query set is scored with its adapted
weights; the task weighting gives each task's weight (a constant); the
outer rule turns them into the objective whose gradient the outer
optimizer applies.
"""

from keras import ops

from kerameta.src import backend as seam
from kerameta.src.engine import replicas
from kerameta.src.engine.adaptation import Components
from kerameta.src.engine.adaptation import adapt_batch
from kerameta.src.engine.randomness import QUERY
from kerameta.src.episodes import Episode
from kerameta.src.types import Tensor


def _query_outputs(parts: Components):
    """One task's query loss, co-learner loss (or 0) and predictions."""

    def outputs(fast, shared, x, y, keys=None):
        frozen, non_trainable, head_values = shared
        params = parts.layout.merge(fast, frozen)
        co_learner = parts.co_learner
        if co_learner is None:
            y_pred = parts.forward(params, non_trainable, x, keys)
            loss = parts.mean_task_loss(y, y_pred)
            return loss, ops.zeros_like(loss), y_pred
        non_trainable, scope = parts.seeded(non_trainable, keys)
        with scope:
            features, y_pred = co_learner.features_and_predictions(
                params, non_trainable, x
            )
        co_pred = co_learner.head_predictions(head_values, features)
        return (
            parts.mean_task_loss(y, y_pred),
            parts.mean_task_loss(y, co_pred),
            y_pred,
        )

    return outputs


def task_weights(parts: Components, initial, fast, training):
    """Each task's weight in the outer loss (constants), `(tasks,)`.

    Under data parallelism the weights are this replica's tasks' share of
    the whole batch (`1 / tasks` each for the mean), and the task
    weighting sees every task's update (see `engine.replicas`).

    Returns:
        `(weights, logged)`: the weights of the objective (uniform when not
        training) and the task weighting's weights of the whole batch, for
        the logs (`None` for the uniform weighting).
    """
    local = fast[0].shape[0]
    uniform = ops.ones((local,), fast[0].dtype) / replicas.num_tasks(local)
    if parts.task_weighting.is_uniform:
        return uniform, None
    updates = [
        replicas.gather_tasks(ops.stop_gradient(ops.expand_dims(p, 0) - f))
        for p, f in zip(initial, fast)
    ]
    weights = ops.stop_gradient(parts.task_weighting.weights(updates))
    if not training:
        return uniform, weights
    return replicas.local_tasks(weights, local), weights


def _combine(parts: Components):
    """`combine(weights, task_losses, co_losses)`: the weighted objective."""

    def combine(weights, task_losses, co_losses):
        objective = ops.sum(weights * task_losses)
        if parts.co_learner is None:
            return objective
        weight = parts.co_learner.loss_weight
        if parts.task_weighting.apply_to == "total":
            return objective + weight * ops.sum(weights * co_losses)
        # This replica's share of the mean over every task of the batch.
        count = replicas.num_tasks(co_losses.shape[0])
        return objective + weight * ops.sum(co_losses) / count

    return combine


def meta_objective(
    parts: Components,
    theta: list[Tensor],
    non_trainable: list[Tensor],
    episode: Episode,
    inner_steps: int,
    training: bool = True,
):
    """The meta-objective of a batch: what `train_step` differentiates.

    Returns:
        `(objective, aux)` with `aux` a dict: `task_losses` (query loss per
        task), `y_pred` (adapted query predictions), `co_losses` (co-learner
        loss per task, zeros without one), `batch_means` (gradient
        sharing's signal), `task_weights` (for the logs) and
        `estimator_logs`.
    """
    with seam.second_order_safe():
        adaptation = adapt_batch(
            parts, theta, non_trainable, episode, inner_steps, training
        )
        initial, frozen = parts.layout.split(theta)
        head_values = []
        if parts.co_learner is not None:
            head_values = parts.layout.values(
                theta, parts.co_learner.head.trainable_variables
            )
        task_losses, co_losses, y_pred = seam.per_task_map(
            _query_outputs(parts), vectorize=parts.vectorize
        )(
            parts.outer_rule.query_weights(initial, adaptation.fast),
            (frozen, non_trainable, head_values),
            episode.query_x,
            episode.query_y,
            *parts.task_keys(non_trainable, episode.num_tasks, QUERY),
        )
    weights, logged = task_weights(parts, initial, adaptation.fast, training)
    objective_losses = task_losses
    if adaptation.outer_terms is not None:
        objective_losses = task_losses + adaptation.outer_terms
    objective = parts.outer_rule.objective(
        weights,
        objective_losses,
        co_losses,
        initial,
        adaptation.fast,
        _combine(parts),
    )
    aux = {
        "task_losses": task_losses,
        "co_losses": co_losses,
        "y_pred": y_pred,
        "batch_means": adaptation.batch_means,
        "task_weights": logged,
        "estimator_logs": adaptation.logs,
    }
    return objective, aux


def adapted_query_predictions(
    parts: Components,
    theta: list[Tensor],
    non_trainable: list[Tensor],
    episode: Episode,
    inner_steps: int,
) -> Tensor:
    """Each task's query predictions after adapting to its support set."""
    with seam.second_order_safe():
        adaptation = adapt_batch(
            parts, theta, non_trainable, episode, inner_steps, training=False
        )
        _, frozen = parts.layout.split(theta)

        return seam.per_task_map(
            parts.query_predictions, vectorize=parts.vectorize
        )(
            adaptation.fast,
            (frozen, non_trainable),
            episode.query_x,
            *parts.task_keys(non_trainable, episode.num_tasks, QUERY),
        )
