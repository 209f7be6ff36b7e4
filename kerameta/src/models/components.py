"""Resolving and building a meta-model's components, and model checks."""

from typing import Any

import keras
from keras import ops

from kerameta.src import co_learners
from kerameta.src import compat
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
            "there is nothing to adapt or meta-learn. A subclassed model "
            "without its own `build()` is marked built by `model.build("
            "input_shape)` before its layers create their weights: call it "
            "once on a batch instead, e.g. `model(x[:1])`."
        )
    stateful = [
        layer.name
        for layer in compat.flatten_layers(model)
        if getattr(layer, "stateful", False) is True
    ]
    if stateful:
        raise ValueError(
            f"The model {model.name!r} has stateful recurrent layers "
            f"{stateful} (`stateful=True`), which carry their state from "
            "one batch to the next. Meta-learning runs each task on its own, "
            "from the same weights, so kerameta cannot keep that state: "
            "build the layers with `stateful=False` (the default)."
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


def task_loss(loss: Any, loss_weights: Any = None):
    """The task loss `(y_true, y_pred) -> loss` from `compile(loss=...)`.

    One loss, or a list or dict with one loss per output of a model with
    several outputs: then the task loss is the sum of each output's mean
    loss, times its weight in `loss_weights` (a like list or dict), a
    `StructuredLoss`.
    """
    if not isinstance(loss, (list, tuple, dict)):
        if loss_weights is not None:
            raise ValueError(
                "`loss_weights` weighs the losses of a model with several "
                "outputs, one per output, but `loss` is a single loss. "
                f"Received: loss={loss!r}, loss_weights={loss_weights!r}."
            )
        return keras.losses.get(loss)
    return StructuredLoss(loss, loss_weights)


class StructuredLoss:
    """One loss per output of a model with several outputs (see `task_loss`).

    Args:
        loss: a list (in output order) or dict (by output name) of losses.
        loss_weights: a like list or dict of weights, or `None` (all 1).
    """

    def __init__(self, loss: Any, loss_weights: Any = None) -> None:
        self.structure = loss
        if isinstance(loss, dict):
            self.names = list(loss)
            self.weights = _weights(loss_weights, self.names, dict)
        else:
            self.names = list(range(len(loss)))
            self.weights = _weights(loss_weights, self.names, (list, tuple))
        self.losses = [keras.losses.get(loss[name]) for name in self.names]

    def labels(self, model: keras.Model) -> list[str]:
        """Each output's name in the logs (`<label>_loss`), as Keras's."""
        if isinstance(self.structure, dict):
            return [str(name) for name in self.names]
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(self.names):
            names = [f"output_{i + 1}" for i in self.names]
        return names

    def _check(self, value: Any, what: str) -> None:
        is_dict = isinstance(self.structure, dict)
        if (
            is_dict != isinstance(value, dict)
            or len(keras.tree.flatten(value)) != len(self.names)
            or (is_dict and sorted(value) != sorted(self.names))
        ):
            raise ValueError(
                "`loss` has one loss per output "
                f"({_describe(self.structure)}), but the model's {what} do "
                f"not match it: {_describe(value)}. Give one loss per "
                "output of the model, in a dict keyed by output name for "
                "dict outputs, or a list in output order."
            )

    def per_output(self, y_true: Any, y_pred: Any) -> list[Any]:
        """Each output's mean loss (unweighted), in `names` order."""
        self._check(y_true, "targets")
        self._check(y_pred, "predictions")
        # Whole under `tf.distribute` (see `compat.unscaled_losses`).
        with compat.unscaled_losses():
            return [
                _mean(fn(y_true[name], y_pred[name]))
                for name, fn in zip(self.names, self.losses)
            ]

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        return sum(
            weight * loss
            for weight, loss in zip(
                self.weights, self.per_output(y_true, y_pred)
            )
        )


def _weights(loss_weights: Any, names: list, kind) -> list[float]:
    if loss_weights is None:
        return [1.0] * len(names)
    if isinstance(loss_weights, dict) and kind is dict:
        unknown = sorted(set(loss_weights) - set(names))
        if unknown:
            raise ValueError(
                f"`loss_weights` names outputs that `loss` has no loss for: "
                f"{unknown}. Outputs with a loss: {names}."
            )
        return [float(loss_weights.get(name, 1.0)) for name in names]
    if isinstance(loss_weights, (list, tuple)) and kind is not dict:
        if len(loss_weights) == len(names):
            return [float(w) for w in loss_weights]
    raise ValueError(
        "`loss_weights` must be like `loss`: a dict keyed by the same output "
        "names, or a list of the same length. Received: loss_weights="
        f"{loss_weights!r} for {len(names)} losses."
    )


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return "a single output"


def _mean(losses: Any) -> Any:
    # Not `ops.mean`: on JAX and PyTorch it averages float64 in float32.
    return ops.sum(losses) / ops.sum(ops.ones_like(losses))


def output_loss_trackers(loss, model: keras.Model) -> list[keras.metrics.Mean]:
    """A `<output>_loss` tracker per output of a `StructuredLoss`, or `[]`."""
    if not isinstance(loss, StructuredLoss):
        return []
    return [
        keras.metrics.Mean(name=f"{label}_loss") for label in loss.labels(model)
    ]


def clone_for_adapt(model: keras.Model) -> keras.Model:
    """A new model like `model`, made from its config (`adapt`)."""
    try:
        return keras.models.clone_model(model)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`adapt` returns a new copy of the wrapped model "
            f"{model.name!r}, which Keras builds from the model's config, "
            f"but {type(model).__name__} cannot be rebuilt from it "
            f"({str(error).splitlines()[0]}). "
            "For a subclassed model, accept `**kwargs` in `__init__` and "
            "pass them to `super().__init__(**kwargs)`, and return the "
            "constructor's other arguments from `get_config()` (as "
            "`.keras` saving needs too). `predict` and `evaluate` adapt "
            "without copying the model."
        ) from None
