"""Resolving and building a meta-model's components, and model checks."""

from typing import Any

import keras

from kerameta.src import co_learners
from kerameta.src import gradient_sharing as gradient_sharing_lib
from kerameta.src import inner_optimizers
from kerameta.src import task_weightings


def build_components(
    meta_model: keras.Model,
    inner_optimizer: Any,
    inner_learning_rate: float | None,
    gradient_sharing: Any,
    task_weighting: Any,
    co_learner: Any,
) -> None:
    """Resolves, builds and attaches the components and their trackers.

    The order of assignment is the order of `trainable_variables` (and of
    the weights in saved files): keep it.
    """
    shapes = [tuple(v.shape) for v in meta_model.adapted_variables]
    meta_model.inner_optimizer = _inner_optimizer(
        inner_optimizer, inner_learning_rate
    )
    meta_model.inner_optimizer.build_for(shapes)
    meta_model.gradient_sharing = gradient_sharing_lib.get(gradient_sharing)
    if meta_model.gradient_sharing is not None:
        meta_model.gradient_sharing.build_for(shapes, meta_model.inner_steps)
    meta_model.task_weighting = task_weightings.get(task_weighting)
    if not meta_model.task_weighting.is_uniform:
        # Negative or vanishing weights destabilize training: log them.
        meta_model._task_weight_min_tracker = keras.metrics.Mean(
            name="task_weight_min"
        )
        meta_model._task_weight_max_tracker = keras.metrics.Mean(
            name="task_weight_max"
        )
        meta_model._task_weight_sum_tracker = keras.metrics.Mean(
            name="task_weight_sum"
        )
    meta_model.co_learner = co_learners.get(co_learner)
    if meta_model.co_learner is not None:
        meta_model.co_learner.build_for(meta_model.model)
        meta_model._co_learner_loss_tracker = keras.metrics.Mean(
            name="co_learner_loss"
        )
    # What the meta-gradient estimator logs (e.g. `cg_residual`).
    meta_model._estimator_trackers = [
        keras.metrics.Mean(name=name)
        for name in meta_model.meta_gradient.log_names
    ]


def check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a `keras.Model` (Sequential, functional or "
            f"subclassed). Received: model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} is not built, so its weights do "
            "not exist yet and cannot be meta-learned. Build it first: "
            "start a Sequential or functional model from `keras.Input("
            "shape)`, or call `model.build(input_shape)` (or call it "
            "once on a batch) before wrapping it."
        )
    if not model.trainable_variables:
        raise ValueError(
            f"The model {model.name!r} has no trainable weights, so "
            "there is nothing to adapt or meta-learn."
        )


def _inner_optimizer(identifier: Any, learning_rate: float | None):
    """The inner optimizer, with `MAML(inner_learning_rate=...)` applied."""
    optimizer = inner_optimizers.get(identifier)
    if learning_rate is None:
        return optimizer
    if optimizer.learning_rate_is_set:
        previous = optimizer.learning_rate
        optimizer.learning_rate = learning_rate  # checks the value
        if optimizer.learning_rate != previous:
            optimizer.learning_rate = previous
            raise ValueError(
                "Two inner learning rates were given: `inner_learning_rate="
                f"{learning_rate!r}` and the inner optimizer's `learning_rate="
                f"{previous!r}`. Give one: set it on the inner optimizer, or "
                "pass `inner_learning_rate` with a string id or an optimizer "
                "built without `learning_rate`."
            )
    optimizer.learning_rate = learning_rate
    return optimizer
