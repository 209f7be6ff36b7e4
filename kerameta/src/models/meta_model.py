"""`MetaModel`: the meta-learning body shared by every backend."""

import math
import numbers
import warnings
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras
from keras import ops

from kerameta.src import backend as seam
from kerameta.src import meta_gradients as meta_gradients_lib
from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches
from kerameta.src.engine.task_count import StaticTaskCount
from kerameta.src.episodes import Episode
from kerameta.src.episodes import validate_episode
from kerameta.src.meta_gradients.meta_gradient import InnerLoop
from kerameta.src.methods import inner_optimizers as inner_optimizers_lib
from kerameta.src.methods import task_weighting as task_weighting_lib
from kerameta.src.methods.co_learner import CoLearner
from kerameta.src.methods.gradient_sharing import GradientSharing
from kerameta.src.types import Tensor

_VECTORIZE_OPTIONS = ("auto", True, False)


def _check_learning_rate(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            "`inner_learning_rate` must be a finite, non-negative number. "
            f"Received: inner_learning_rate={value!r}"
        )
    return float(value)


def _has_channels_last_conv(model: keras.Model) -> bool:
    for layer in model._flatten_layers(include_self=False):
        if "Conv" in type(layer).__name__ and (
            getattr(layer, "data_format", None) == "channels_last"
        ):
            return True
    return False


def _has_conv(model: keras.Model) -> bool:
    return any(
        "Conv" in type(layer).__name__
        for layer in model._flatten_layers(include_self=False)
    )


def resolve_vectorize_tasks(option: Any, model: keras.Model) -> bool:
    """Decides, from the backend and the layers, whether to `vmap` tasks."""
    if option not in _VECTORIZE_OPTIONS:
        raise ValueError(
            "`vectorize_tasks` must be 'auto', True or False. Received: "
            f"vectorize_tasks={option!r}"
        )
    if seam.BACKEND == "tensorflow":
        if option is True:
            raise ValueError(
                "`vectorize_tasks=True` is not supported on the TensorFlow "
                "backend, which loops over tasks (`tf.vectorized_map` is "
                "hundreds of times slower under XLA). Use 'auto' or False."
            )
        return False
    if option != "auto":
        return bool(option)
    if seam.BACKEND == "jax":
        # Vectorized convolutions with per-task filters were measured 5x
        # slower than `lax.map` on CPU; dense networks gain from `vmap`.
        return not _has_conv(model)
    # torch.vmap fails on channels_last convolutions with batched kernels.
    return not _has_channels_last_conv(model)


def _split(values: list, sizes: list[int]) -> list[list]:
    """Cuts `values` into consecutive lists of `sizes` (and the rest)."""
    parts = []
    for size in sizes:
        parts.append(list(values[:size]))
        values = values[size:]
    return [*parts, list(values)]


def _is_batch_normalization(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def resolve_adapted_mask(
    model: keras.Model,
    adapted_layers: list[str] | tuple[str, ...] | None,
    adapt_batch_normalization: bool,
) -> list[bool]:
    """Which of `model.trainable_variables` the inner loop adapts."""
    layers = list(model._flatten_layers(include_self=False))
    if adapted_layers is None:
        adapted = {id(v) for v in model.trainable_variables}
    else:
        if isinstance(adapted_layers, str) or not isinstance(
            adapted_layers, (list, tuple)
        ):
            raise ValueError(
                "`adapted_layers` must be a list of layer names (or None to "
                f"adapt every layer). Received: adapted_layers="
                f"{adapted_layers!r}"
            )
        by_name = {}
        for layer in layers:
            by_name.setdefault(layer.name, layer)
        unknown = [name for name in adapted_layers if name not in by_name]
        if unknown:
            with_weights = [
                layer.name for layer in layers if layer.trainable_weights
            ]
            raise ValueError(
                f"`adapted_layers` names layers that are not in the model "
                f"{model.name!r}: {unknown}. Layers with trainable weights: "
                f"{with_weights}."
            )
        adapted = set()
        for name in adapted_layers:
            layer = by_name[name]
            if not layer.trainable_weights:
                raise ValueError(
                    f"The layer {name!r} in `adapted_layers` has no "
                    "trainable weights, so the inner loop cannot adapt it."
                )
            adapted.update(id(v) for v in layer.trainable_weights)
    if not adapt_batch_normalization:
        for layer in layers:
            if _is_batch_normalization(layer):
                adapted.difference_update(
                    id(v) for v in layer.trainable_weights
                )
    mask = [id(v) in adapted for v in model.trainable_variables]
    if not any(mask):
        raise ValueError(
            "The inner loop has no weights to adapt: `adapted_layers="
            f"{adapted_layers!r}` with `adapt_batch_normalization="
            f"{adapt_batch_normalization}` leaves none of the model's "
            "trainable weights. Name layers with trainable weights."
        )
    return mask


@dataclass
class Adaptation:
    """The result of the inner loop on a batch of tasks.

    Attributes:
        fast: the adapted weights, each with a leading task axis (only the
            adapted ones; see `MetaModel.adapted_variables`).
        support_losses: the support losses at the last inner step, per
            task (`None` for zero steps).
        batch_means: for gradient sharing, the batch-mean support gradients
            of each inner step that computed one, `{step: means}` (the
            history's signal); empty otherwise.
        outer_terms: the meta-gradient estimator's per-task terms of the
            meta-objective (see `MetaGradient.outer_terms`), or `None`.
        logs: the estimator's scalars to log, by name.
    """

    fast: list[Tensor]
    support_losses: Tensor | None
    batch_means: dict[int, list[Tensor]] = field(default_factory=dict)
    outer_terms: Tensor | None = None
    logs: dict[str, Tensor] = field(default_factory=dict)


class MetaModel(StaticTaskCount, seam.MetaTrainer, keras.Model):
    """The gradient-based meta-learning engine behind `kerameta.MAML`.

    Use `kerameta.MAML`; this base class holds the train, test and predict
    bodies shared by all backends and all MAML variants.
    """

    def __init__(
        self,
        model: keras.Model,
        inner_steps: int = 1,
        inner_learning_rate: float = 0.01,
        evaluation_inner_steps: int | None = None,
        meta_gradient: str | meta_gradients_lib.MetaGradient = "second_order",
        vectorize_tasks: str | bool = "auto",
        inner_optimizer: str | inner_optimizers_lib.InnerOptimizer = "sgd",
        adapted_layers: list[str] | None = None,
        adapt_batch_normalization: bool = True,
        gradient_sharing: GradientSharing | str | None = None,
        task_weighting: str | task_weighting_lib.TaskWeighting | None = None,
        co_learner: CoLearner | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.model = model
        self.inner_steps = inner_steps
        self.inner_learning_rate = inner_learning_rate
        self._evaluation_inner_steps = None
        self.evaluation_inner_steps = evaluation_inner_steps
        self.meta_gradient = meta_gradients_lib.get(meta_gradient)
        self.meta_gradient.check_inner_steps(self.inner_steps)
        self._vectorize_option = vectorize_tasks
        self.vectorize_tasks = resolve_vectorize_tasks(vectorize_tasks, model)
        self._task_loss_fn = None
        self._build_components(
            inner_optimizer,
            adapted_layers,
            adapt_batch_normalization,
            gradient_sharing,
            task_weighting,
            co_learner,
        )
        self.built = True

    def _build_components(
        self,
        inner_optimizer,
        adapted_layers,
        adapt_batch_normalization,
        gradient_sharing,
        task_weighting,
        co_learner,
    ) -> None:
        model = self.model
        # A string (rather than a list of names) is rejected just below.
        self.adapted_layers = (
            list(adapted_layers)
            if isinstance(adapted_layers, (list, tuple))
            else adapted_layers
        )
        self.adapt_batch_normalization = bool(adapt_batch_normalization)
        self._adapted_mask = resolve_adapted_mask(
            model, self.adapted_layers, self.adapt_batch_normalization
        )
        shapes = [tuple(v.shape) for v in self.adapted_variables]
        self.inner_optimizer = inner_optimizers_lib.get(inner_optimizer)
        self.inner_optimizer.build_for(shapes, self.inner_learning_rate)
        if gradient_sharing == GradientSharing.string_id:
            gradient_sharing = GradientSharing()
        elif isinstance(gradient_sharing, dict):
            gradient_sharing = keras.saving.deserialize_keras_object(
                gradient_sharing
            )
        if gradient_sharing is not None and not isinstance(
            gradient_sharing, GradientSharing
        ):
            raise ValueError(
                "`gradient_sharing` must be None, 'gradient_sharing' or a "
                "`kerameta.GradientSharing`. Received: gradient_sharing="
                f"{gradient_sharing!r}"
            )
        if gradient_sharing is not None:
            gradient_sharing.build_for(shapes, self.inner_steps)
        self.gradient_sharing = gradient_sharing
        self.task_weighting = task_weighting_lib.get(task_weighting)
        if self._weights_tasks:
            # Negative or vanishing weights destabilize training: log them.
            self._task_weight_min_tracker = keras.metrics.Mean(
                name="task_weight_min"
            )
            self._task_weight_max_tracker = keras.metrics.Mean(
                name="task_weight_max"
            )
            self._task_weight_sum_tracker = keras.metrics.Mean(
                name="task_weight_sum"
            )
        if isinstance(co_learner, dict):
            co_learner = keras.saving.deserialize_keras_object(co_learner)
        if co_learner is not None and not isinstance(co_learner, CoLearner):
            raise ValueError(
                "`co_learner` must be None or a `kerameta.CoLearner`. "
                f"Received: co_learner={co_learner!r}"
            )
        if co_learner is not None:
            co_learner.build_for(model)
            self._co_learner_loss_tracker = keras.metrics.Mean(
                name="co_learner_loss"
            )
        self.co_learner = co_learner
        # What the meta-gradient estimator logs (e.g. `cg_residual`).
        self._estimator_trackers = [
            keras.metrics.Mean(name=name)
            for name in self.meta_gradient.log_names
        ]
        self._check_composition()

    def _check_composition(self) -> None:
        """Raises if the chosen components cannot work together."""
        self.meta_gradient.check_model(self)

    @property
    def adapted_variables(self) -> list[keras.Variable]:
        """The wrapped model's weights that the inner loop adapts.

        All trainable weights by default; those of `adapted_layers` (ANIL)
        otherwise, without batch normalization's when
        `adapt_batch_normalization=False`.
        """
        return [
            v
            for v, adapted in zip(
                self.model.trainable_variables, self._adapted_mask
            )
            if adapted
        ]

    # ------------------------------------------------------------------
    # Configuration
    # ------------------------------------------------------------------
    def _reset_compiled_functions(self) -> None:
        # Traced train/test/predict functions captured the old settings.
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    @property
    def inner_steps(self) -> int:
        """Inner (adaptation) steps per task during meta-training."""
        return self._inner_steps

    @inner_steps.setter
    def inner_steps(self, value: int) -> None:
        value = check_positive_int("inner_steps", value)
        if "meta_gradient" in self.__dict__:
            self.meta_gradient.check_inner_steps(value)
        self._inner_steps = value
        self._reset_compiled_functions()

    @property
    def inner_learning_rate(self) -> float:
        """Step size of the inner SGD steps (training and evaluation)."""
        return self._inner_learning_rate

    @inner_learning_rate.setter
    def inner_learning_rate(self, value: float) -> None:
        self._inner_learning_rate = _check_learning_rate(value)
        self._reset_compiled_functions()

    @property
    def evaluation_inner_steps(self) -> int:
        """Inner steps used by `evaluate`, `predict` and `adapt`."""
        if self._evaluation_inner_steps is None:
            return self.inner_steps
        return self._evaluation_inner_steps

    @evaluation_inner_steps.setter
    def evaluation_inner_steps(self, value: int | None) -> None:
        if value is not None:
            value = check_positive_int(
                "evaluation_inner_steps", value, allow_zero=True
            )
        self._evaluation_inner_steps = value
        self._reset_compiled_functions()

    def compile(
        self,
        optimizer: Any = "adam",
        loss: Any = None,
        metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        """Configures the meta-model for meta-training.

        Args:
            optimizer: the meta (outer) optimizer, as in `keras.Model`.
            loss: the task loss, used by the inner loop on the support set
                and by the outer loop on the query set. A string id, a
                `keras.losses.Loss` or a function `(y_true, y_pred)`.
            metrics: metrics computed on the query predictions after
                adaptation.
            **kwargs: the other arguments of `keras.Model.compile`
                (`jit_compile`, `steps_per_execution`, ...).
        """
        if loss is None:
            raise ValueError(
                "`loss` is required: it is the task loss the inner loop "
                "minimises on the support set and the outer loop on the "
                "query set. Received: loss=None. Pass e.g. `loss='mse'`."
            )
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError(
                "kerameta takes a single task loss. Received: loss of type "
                f"{type(loss).__name__}: {loss!r}."
            )
        self._check_jit_compile(kwargs.get("jit_compile", "auto"))
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )
        # Keras records the resolved `jit_compile` (True under JAX); saved so,
        # it forces torch.compile or XLA on the backend that loads the file.
        # Record what was asked for: "auto" is resolved again when loading.
        self._compile_config.config["jit_compile"] = kwargs.get(
            "jit_compile", "auto"
        )
        self._task_loss_fn = keras.losses.get(loss)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Re-compiles a loaded meta-model from its saved compile config."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _check_jit_compile(self, jit_compile: Any) -> None:
        self.meta_gradient.check_jit_compile(jit_compile)
        if (
            seam.BACKEND == "torch"
            and jit_compile is True
            and not self.vectorize_tasks
            and self.meta_gradient.second_derivatives
        ):
            raise ValueError(
                "`jit_compile=True` (torch.compile) cannot differentiate "
                "twice through the per-task loop that this model uses "
                "(`vectorize_tasks=False`). Use `jit_compile=False`, a "
                "first-order meta-gradient, or a model that can be "
                "vectorized (channels_first convolutions)."
            )

    def get_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "model_build_config": self.model.get_build_config(),
            "inner_steps": self.inner_steps,
            "inner_learning_rate": self.inner_learning_rate,
            "evaluation_inner_steps": self._evaluation_inner_steps,
            "meta_gradient": meta_gradients_lib.serialize(self.meta_gradient),
            "vectorize_tasks": self._vectorize_option,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "adapted_layers": self.adapted_layers,
            "adapt_batch_normalization": self.adapt_batch_normalization,
            "gradient_sharing": (
                None
                if self.gradient_sharing is None
                else keras.saving.serialize_keras_object(self.gradient_sharing)
            ),
            "task_weighting": keras.saving.serialize_keras_object(
                self.task_weighting
            ),
            "co_learner": (
                None
                if self.co_learner is None
                else keras.saving.serialize_keras_object(self.co_learner)
            ),
        }
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        build_config = config.pop("model_build_config", None)
        if not model.built and build_config:
            model.build_from_config(build_config)
        if "meta_gradient" in config:
            config["meta_gradient"] = meta_gradients_lib.deserialize(
                config["meta_gradient"]
            )
        return cls(model=model, **config)

    # ------------------------------------------------------------------
    # The task loss and the functional forward pass
    # ------------------------------------------------------------------
    def _task_loss(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        """Mean loss of one task's examples."""
        if self._task_loss_fn is None:
            raise ValueError(
                "The meta-model has no task loss yet. Call `compile(loss=...)` "
                "before `fit`, `evaluate`, `predict` or `adapt`."
            )
        loss = self._task_loss_fn(y_true, y_pred)
        return ops.mean(loss)

    def _forward(self, params: list[Tensor], non_trainable: list[Tensor], x):
        # Batch normalization is transductive: each task is normalized with
        # its own batch statistics, and the returned moving statistics are
        # discarded so adaptation never changes them.
        y_pred, _ = self.model.stateless_call(
            params, non_trainable, x, training=True
        )
        return y_pred

    # ------------------------------------------------------------------
    # Weights: the adapted ones carry a task axis, the others are shared
    # ------------------------------------------------------------------
    def _values_of(self, theta: list[Tensor]):
        """A lookup `variable -> value` into `theta` (trainable values).

        Method code must read meta-learned weights from `theta`, not from
        the variables: `theta` is what the meta-gradient differentiates.
        """
        index = {id(v): i for i, v in enumerate(self.trainable_variables)}

        def values_of(variable):
            position = index.get(id(variable))
            # A weight that is not meta-learned (e.g. frozen by the user)
            # is a constant of the meta-step.
            return variable.value if position is None else theta[position]

        return values_of

    def _split_model_values(self, theta: list[Tensor]):
        """The model's weights in `theta`: (adapted, frozen) lists."""
        values_of = self._values_of(theta)
        adapted, frozen = [], []
        for variable, is_adapted in zip(
            self.model.trainable_variables, self._adapted_mask
        ):
            (adapted if is_adapted else frozen).append(values_of(variable))
        return adapted, frozen

    def _merge(self, adapted: list[Tensor], frozen: list[Tensor]):
        """The model's trainable weights, in order, from the two parts."""
        adapted, frozen = iter(adapted), iter(frozen)
        return [
            next(adapted) if is_adapted else next(frozen)
            for is_adapted in self._adapted_mask
        ]

    def _support_loss(self, fast, shared, x, y):
        frozen, non_trainable = shared[:2]
        return self._task_loss(
            y, self._forward(self._merge(fast, frozen), non_trainable, x)
        )

    def _query_outputs(self, fast, shared, x, y):
        """One task's query loss, co-learner loss (or 0) and predictions."""
        frozen, non_trainable, head_values = shared
        params = self._merge(fast, frozen)
        if self.co_learner is None:
            y_pred = self._forward(params, non_trainable, x)
            loss = self._task_loss(y, y_pred)
            return loss, ops.zeros_like(loss), y_pred
        features, y_pred = self.co_learner.features_and_predictions(
            params, non_trainable, x
        )
        co_pred = self.co_learner.head_predictions(head_values, features)
        return self._task_loss(y, y_pred), self._task_loss(y, co_pred), y_pred

    def _query_predictions(self, fast, shared, x):
        frozen, non_trainable = shared[:2]
        return self._forward(self._merge(fast, frozen), non_trainable, x)

    # ------------------------------------------------------------------
    # The inner loop
    # ------------------------------------------------------------------
    def _adapt_batch(
        self,
        theta: list[Tensor],
        non_trainable: list[Tensor],
        episode: Episode,
        inner_steps: int,
        training: bool = True,
    ) -> Adaptation:
        """Runs the step-major inner loop for every task of a batch.

        All tasks advance together: at each inner step every task's support
        gradient is computed (vectorized over the task axis where the
        backend profits), the meta-gradient estimator and gradient sharing
        turn the gradients into step directions, and the inner optimizer
        takes every task's step.

        Args:
            theta: the values of `self.trainable_variables`.
            non_trainable: the values of the model's non-trainable weights.
            episode: the batch of tasks.
            inner_steps: the number of inner steps.
            training: whether this is meta-training (gradient sharing at
                evaluation follows its `evaluation_sharing`).
        """
        num_tasks = episode.num_tasks
        if num_tasks is None:
            raise ValueError(
                "The number of tasks per batch must be known when the step "
                "is traced, but it was `None`. Feed episodes with a fixed "
                "number of tasks per batch: a `kerameta.data` dataset, a "
                "`keras.utils.PyDataset` whose batches have equal sizes, or "
                "a `tf.data.Dataset` batched with `drop_remainder=True`."
            )
        values_of = self._values_of(theta)
        adapted, frozen = self._split_model_values(theta)
        fast = [
            ops.broadcast_to(ops.expand_dims(p, 0), (num_tasks, *p.shape))
            for p in adapted
        ]
        shared = (frozen, non_trainable)
        sharing = self.gradient_sharing
        batch_means = {}
        concurrent_scales, history_scales = [], []
        if sharing is not None:
            concurrent_scales, history_scales = sharing.scale_values(values_of)
        optimizer_values = [
            values_of(v) for v in self.inner_optimizer.trainable_variables
        ]
        # The closures read the meta-learned values and the data they need
        # from explicit lists, which `InnerLoop.rebuild` can replace (an
        # estimator that differentiates the inner loop by hand needs them
        # as inputs).
        sizes = [len(frozen), len(optimizer_values), len(concurrent_scales)]

        def inner_loop(values, constants):
            frozen, optimizer_values, concurrent_scales, history_scales = (
                _split(values, sizes)
            )
            *non_trainable, support_x, support_y = constants
            shared = (frozen, non_trainable)
            gradient_fns = {}

            def gradients(fast, create_graph):
                if create_graph not in gradient_fns:
                    gradient_fns[create_graph] = seam.per_task_value_and_grad(
                        self._support_loss,
                        create_graph=create_graph,
                        vectorize=self.vectorize_tasks,
                    )
                losses, grads = gradient_fns[create_graph](
                    fast, shared, support_x, support_y
                )
                return losses, list(grads)

            def directions(grads, step):
                if sharing is None:
                    return grads
                grads, means = sharing.directions(
                    grads, step, concurrent_scales, history_scales, training
                )
                batch_means[step] = means
                return grads

            def update(fast, directions, step):
                return self.inner_optimizer.apply(
                    fast,
                    directions,
                    step,
                    self.inner_learning_rate,
                    optimizer_values,
                )

            return InnerLoop(
                gradients,
                directions,
                update,
                query_gradients=query_gradients,
                hessian_vector_products=hessian_vector_products,
                values=list(values),
                constants=list(constants),
                rebuild=inner_loop,
            )

        def query_gradients(fast):
            return seam.per_task_value_and_grad(
                self._support_loss,
                create_graph=False,
                vectorize=self.vectorize_tasks,
            )(fast, shared, episode.query_x, episode.query_y)

        def hessian_vector_products(fast, vectors):
            return seam.per_task_hvp(
                self._support_loss, vectorize=self.vectorize_tasks
            )(fast, shared, vectors, episode.support_x, episode.support_y)

        loop = inner_loop(
            [*frozen, *optimizer_values, *concurrent_scales, *history_scales],
            [*non_trainable, episode.support_x, episode.support_y],
        )
        initial_fast = fast
        fast, losses = self.meta_gradient.run_inner_loop(
            loop, fast, inner_steps
        )
        adaptation = Adaptation(fast, losses, batch_means)
        if training:
            extra = self.meta_gradient.outer_terms(loop, initial_fast, fast)
            if extra is not None:
                adaptation.outer_terms, adaptation.logs = extra
        return adaptation

    def _query_shared(self, theta, non_trainable, frozen):
        head_values = []
        if self.co_learner is not None:
            values_of = self._values_of(theta)
            head_values = [
                values_of(v) for v in self.co_learner.head.trainable_variables
            ]
        return (frozen, non_trainable, head_values)

    @property
    def _weights_tasks(self) -> bool:
        """Whether the task weighting is other than the uniform mean."""
        weights = type(self.task_weighting).weights
        return weights is not task_weighting_lib.TaskWeighting.weights

    def _task_weights(self, adapted, fast, training):
        """Each task's weight in the outer loss (constants), `(tasks,)`.

        Returns:
            `(weights, logged)`: the weights of the objective (uniform when
            not training) and the task weighting's weights, for the logs
            (`None` for the uniform weighting).
        """
        num_tasks = fast[0].shape[0]
        uniform = ops.ones((num_tasks,), fast[0].dtype) / num_tasks
        if not self._weights_tasks:
            return uniform, None
        updates = [
            ops.stop_gradient(ops.expand_dims(p, 0) - f)
            for p, f in zip(adapted, fast)
        ]
        weights = ops.stop_gradient(self.task_weighting.weights(updates))
        return (weights if training else uniform), weights

    def _combine_task_losses(self, weights, task_losses, co_losses):
        """The meta-objective from the per-task losses and task weights."""
        objective = ops.sum(weights * task_losses)
        if self.co_learner is None:
            return objective
        weight = self.co_learner.loss_weight
        if self.task_weighting.apply_to == "total":
            return objective + weight * ops.sum(weights * co_losses)
        return objective + weight * ops.mean(co_losses)

    def _query_weights(self, adapted, fast):
        """The adapted weights that score the query sets (the outer rule's
        hook: MAML differentiates through the inner loop)."""
        del adapted
        return fast

    def _outer_objective(self, weights, task_losses, co_losses, adapted, fast):
        """The differentiated objective (the outer rule's hook)."""
        del adapted, fast
        return self._combine_task_losses(weights, task_losses, co_losses)

    def _meta_objective(
        self, theta, non_trainable, episode, inner_steps, training=True
    ):
        """The meta-objective of a batch; what `train_step` differentiates.

        Returns:
            `(objective, aux)` with `aux` a dict: `task_losses` (query loss
            per task), `y_pred` (adapted query predictions), `co_losses`
            (co-learner loss per task, zeros without one) and `batch_means`
            (gradient sharing's signal, see `Adaptation`).
        """
        with seam.second_order_safe():
            adaptation = self._adapt_batch(
                theta, non_trainable, episode, inner_steps, training
            )
            adapted, frozen = self._split_model_values(theta)
            task_losses, co_losses, y_pred = seam.per_task_map(
                self._query_outputs, vectorize=self.vectorize_tasks
            )(
                self._query_weights(adapted, adaptation.fast),
                self._query_shared(theta, non_trainable, frozen),
                episode.query_x,
                episode.query_y,
            )
        weights, logged = self._task_weights(adapted, adaptation.fast, training)
        objective_losses = task_losses
        if adaptation.outer_terms is not None:
            objective_losses = task_losses + adaptation.outer_terms
        objective = self._outer_objective(
            weights, objective_losses, co_losses, adapted, adaptation.fast
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

    # ------------------------------------------------------------------
    # Train / test / predict bodies (wrapped by the backend's MetaTrainer)
    # ------------------------------------------------------------------
    def _model_input_rank(self) -> int | None:
        try:
            # Functional and Sequential models (Sequential has no
            # `_inputs_struct`); subclassed models have no `inputs`.
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            return None
        flat = keras.tree.flatten(inputs)
        if len(flat) != 1:
            return None
        return len(flat[0].shape)

    def _episode(self, data, mode: str) -> Episode:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(
                "kerameta does not support `sample_weight` yet: every task "
                "and query example weighs the same. Received a sample_weight "
                "in the data."
            )
        episode = validate_episode(
            x,
            y,
            require_query_y=mode != "predict",
            model_input_rank=self._model_input_rank(),
        )
        hints = self.__dict__.get("_static_tasks_per_batch", {})
        return Episode(
            *seam.with_static_task_axis(
                [
                    episode.support_x,
                    episode.support_y,
                    episode.query_x,
                    episode.query_y,
                ],
                hints.get(mode),
            )
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # kerameta never calls this: Keras does, on JAX and PyTorch, to build
        # the compiled loss from the first batch before any step runs.
        # Validate that batch here, or a bad `query_y` or `sample_weight`
        # surfaces as a broadcasting error.
        self._episode((x, y, sample_weight), "test")
        return super().compute_loss(
            x, y, y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(x, dict):
            # The raw batch, from Keras's symbolic build (see compute_loss);
            # the meta-steps pass the validated `query_x`.
            self._episode((x, y, sample_weight), "test")
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def _state_values(self):
        theta = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        return theta, non_trainable

    def _meta_train_step(self, data):
        episode = self._episode(data, "train")
        theta, non_trainable = self._state_values()

        def objective(theta_values):
            return self._meta_objective(
                theta_values, non_trainable, episode, self.inner_steps
            )

        (objective_value, aux), grads = seam.value_and_grad(
            objective, has_aux=True
        )(theta)
        applied = self._apply_if_finite(objective_value, grads)
        if self.gradient_sharing is not None and aux["batch_means"]:
            self._update_sharing_history(aux["batch_means"], applied)
        return self._update_metrics(aux, episode, applied)

    def _update_sharing_history(self, batch_means, finite) -> None:
        """Moves gradient sharing's history after an applied outer step."""
        sharing = self.gradient_sharing
        with seam.no_grad():
            new_history = sharing.updated_history(batch_means)
            for variable, value in zip(sharing.history, new_history):
                variable.assign(ops.where(finite, value, variable.value))

    def _apply_if_finite(self, loss: Tensor, grads: list[Tensor]) -> Tensor:
        """Applies the meta-gradient, or leaves every weight as it was.

        Returns:
            A boolean scalar tensor: whether the update was applied.
        """
        finite = ops.all(ops.isfinite(loss))
        for g in grads:
            finite = ops.logical_and(finite, ops.all(ops.isfinite(g)))
        variables = list(self.trainable_variables)
        with seam.no_grad():
            if not self.optimizer.built:
                self.optimizer.build(variables)
            watched = variables + list(self.optimizer.variables)
            before = [ops.copy(v.value) for v in watched]
            safe_grads = [
                ops.where(finite, g, ops.zeros_like(g)) for g in grads
            ]
            self.optimizer.apply(safe_grads, variables)
            # A finite but huge gradient can still overflow the optimizer's
            # state (Adam's second moment) and, a step later, the weights:
            # refuse any update that leaves a non-finite value behind.
            for v in watched:
                if "float" in str(v.dtype):
                    finite = ops.logical_and(
                        finite, ops.all(ops.isfinite(v.value))
                    )
            for v, old in zip(watched, before):
                v.assign(ops.where(finite, v.value, old))
        return finite

    def _update_metrics(self, aux, episode, applied=None):
        loss = ops.mean(ops.stop_gradient(aux["task_losses"]))
        if applied is not None:
            # A refused update is reported as a non-finite loss, which
            # stops `fit` with a warning (see `_StopOnNonFiniteLoss`).
            loss = ops.where(applied, loss, ops.cast(float("nan"), loss.dtype))
        self._loss_tracker.update_state(loss)
        if self.co_learner is not None:
            self._co_learner_loss_tracker.update_state(
                ops.mean(ops.stop_gradient(aux["co_losses"]))
            )
        weights = aux.get("task_weights")
        if weights is not None:
            weights = ops.stop_gradient(weights)
            self._task_weight_min_tracker.update_state(ops.min(weights))
            self._task_weight_max_tracker.update_state(ops.max(weights))
            self._task_weight_sum_tracker.update_state(ops.sum(weights))
        logs = aux.get("estimator_logs") or {}
        for tracker in self._estimator_trackers:
            if tracker.name in logs:
                tracker.update_state(ops.stop_gradient(logs[tracker.name]))
        return self.compute_metrics(
            episode.query_x,
            episode.query_y,
            ops.stop_gradient(aux["y_pred"]),
            sample_weight=None,
        )

    def _meta_test_step(self, data):
        episode = self._episode(data, "test")
        theta, non_trainable = self._state_values()
        _, aux = self._meta_objective(
            theta,
            non_trainable,
            episode,
            self.evaluation_inner_steps,
            training=False,
        )
        logs = self._update_metrics(aux, episode)
        # The estimator's logs describe the meta-gradient: training only.
        for tracker in self._estimator_trackers:
            logs.pop(tracker.name, None)
        return logs

    def _meta_predict_step(self, data):
        episode = self._episode(data, "predict")
        theta, non_trainable = self._state_values()
        return ops.stop_gradient(
            self._adapted_query_predictions(theta, non_trainable, episode)
        )

    def _adapted_query_predictions(self, theta, non_trainable, episode):
        with seam.second_order_safe():
            adaptation = self._adapt_batch(
                theta,
                non_trainable,
                episode,
                self.evaluation_inner_steps,
                training=False,
            )
            _, frozen = self._split_model_values(theta)
            return seam.per_task_map(
                self._query_predictions, vectorize=self.vectorize_tasks
            )(adaptation.fast, (frozen, non_trainable), episode.query_x)

    def call(self, inputs, training=None):
        """Adapts to each task's support set; returns query predictions."""
        del training
        episode = validate_episode(
            inputs,
            None,
            require_query_y=False,
            model_input_rank=self._model_input_rank(),
        )
        theta, non_trainable = self._state_values()
        with seam.enable_grad():
            return self._adapted_query_predictions(
                theta, non_trainable, episode
            )

    def compute_output_spec(self, inputs, training=None):
        query = inputs["query_x"]
        num_tasks, num_query = query.shape[:2]
        flat_shape = (None, *query.shape[2:])
        spec = self.model.compute_output_spec(
            keras.KerasTensor(flat_shape, dtype=query.dtype)
        )
        return keras.KerasTensor(
            (num_tasks, num_query, *spec.shape[1:]), dtype=spec.dtype
        )

    # ------------------------------------------------------------------
    # Deployment
    # ------------------------------------------------------------------
    def adapt(
        self,
        support_x: Any,
        support_y: Any,
        inner_steps: int | None = None,
    ) -> keras.Model:
        """Adapts the meta-learned model to one task.

        Runs the inner loop on one task's support set, starting from the
        meta-learned weights, and returns a copy of the wrapped model that
        holds the adapted weights: an ordinary Keras model to deploy or save.
        The meta-model itself is not changed.

        Like MAML, adaptation normalizes batch-normalization layers with
        batch statistics (transductive): call the returned model with
        `training=True` on a batch of queries to reproduce `predict`, since
        its moving statistics were never trained.

        Args:
            support_x: the support inputs of one task, `(shots, *features)`.
            support_y: the support targets, `(shots, ...)`.
            inner_steps: number of inner steps. Defaults to
                `evaluation_inner_steps`.

        Returns:
            A new `keras.Model` with the adapted weights.
        """
        steps = (
            self.evaluation_inner_steps if inner_steps is None else inner_steps
        )
        check_positive_int("inner_steps", steps, allow_zero=True)
        support_x = ops.convert_to_tensor(support_x)
        support_y = ops.convert_to_tensor(support_y)
        received = (
            f"support_x.shape={tuple(support_x.shape)}, "
            f"support_y.shape={tuple(support_y.shape)}"
        )
        support_x = ops.expand_dims(support_x, 0)
        support_y = ops.expand_dims(support_y, 0)
        try:
            episode = validate_episode(
                {
                    "support_x": support_x,
                    "support_y": support_y,
                    "query_x": support_x,
                },
                None,
                require_query_y=False,
                model_input_rank=self._model_input_rank(),
            )
        except ValueError as error:
            raise ValueError(
                "`adapt` takes the support set of one task, without a task "
                "axis: support_x shaped (shots, *features) and support_y "
                f"(shots, ...). Received: {received}. (With the task axis "
                f"that `adapt` adds: {error})"
            ) from None
        theta, non_trainable = self._state_values()
        with seam.enable_grad(), seam.second_order_safe():
            adaptation = self._adapt_batch(
                theta, non_trainable, episode, steps, training=False
            )
            _, frozen = self._split_model_values(theta)
            fast = self._merge([value[0] for value in adaptation.fast], frozen)
        adapted = keras.models.clone_model(self.model)
        if not adapted.built:
            adapted.build_from_config(self.model.get_build_config())
        # Assign tensors, not NumPy arrays: `get_weights` and
        # `convert_to_numpy` warn under NumPy 2.4 on JAX and PyTorch.
        for variable, source in zip(adapted.weights, self.model.weights):
            variable.assign(source.value)
        for variable, value in zip(adapted.trainable_variables, fast):
            variable.assign(ops.stop_gradient(value))
        return adapted

    def without_co_learner(self) -> "MetaModel":
        """Returns this meta-model without its CML co-learner.

        The co-learner only shapes meta-training; drop it afterwards. The
        returned meta-model shares the wrapped model (and every other
        component) with this one, so its predictions are bit-identical,
        and it is compiled with the same loss and metrics (and a fresh
        optimizer) if this one is compiled. Save it to deploy without the
        co-learner's weights.

        Returns:
            A meta-model of the same class, without `co_learner`.

        Raises:
            ValueError: if this meta-model has no co-learner.
        """
        if self.co_learner is None:
            raise ValueError(
                "This meta-model has no co-learner to remove (co_learner=None)."
            )
        config = self.get_config()
        for key in ("model", "model_build_config", "co_learner"):
            config.pop(key)
        config.update(
            inner_optimizer=self.inner_optimizer,
            gradient_sharing=self.gradient_sharing,
            task_weighting=self.task_weighting,
        )
        if "meta_gradient" in config:
            config["meta_gradient"] = self.meta_gradient
        stripped = type(self)(model=self.model, **config)
        if self.compiled:
            stripped.compile_from_config(self.get_compile_config())
        return stripped

    # ------------------------------------------------------------------
    # fit: stop cleanly on a non-finite meta-loss
    # ------------------------------------------------------------------
    def fit(self, *args: Any, **kwargs: Any):
        """Meta-trains on batches of tasks; the arguments of `keras.Model.fit`.

        Each batch `(x, query_y)` holds `T` episodes (see `MetaModel`). Every
        step adapts to each task's support set and updates the meta-learned
        weights from the query losses. `kerameta.data` datasets are not
        shuffled by Keras (`shuffle` defaults to `False` for them: their
        tasks are already random and seeded), and they number their epochs
        with `fit`'s, so a run resumed with `BackupAndRestore` or
        `initial_epoch` sees the same tasks. Training stops with a
        `RuntimeWarning` if the meta-loss becomes non-finite; that step's
        update is not applied, so the weights stay finite.

        Returns:
            A `keras.callbacks.History`, as `keras.Model.fit`.
        """
        callbacks = _with_guard(kwargs.get("callbacks"))
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, TaskBatches):
            # Its batches are already random and seeded; Keras's shuffle
            # would draw on Python's global `random` and break resumption.
            kwargs.setdefault("shuffle", False)
        datasets = [x]
        datasets.append(kwargs.get("validation_data"))
        datasets = [d for d in datasets if isinstance(d, TaskBatches)]
        if datasets and isinstance(callbacks, list):
            callbacks.append(_SetTaskEpoch(datasets))
        kwargs["callbacks"] = callbacks
        return super().fit(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any):
        """Adapts to each task's support set and scores its query set.

        Takes the arguments of `keras.Model.evaluate`. Adaptation uses
        `evaluation_inner_steps` inner steps; the weights never change. If
        any task's inner loop diverges, the loss is not finite and a
        `RuntimeWarning` says so (a diverged task is never averaged away).

        Returns:
            The query loss and metrics after adaptation, as
            `keras.Model.evaluate`.
        """
        # Keras's torch trainer builds before checking (AttributeError).
        self._assert_compile_called("evaluate")
        kwargs["callbacks"] = _with_guard(kwargs.get("callbacks"))
        return super().evaluate(*args, **kwargs)


def _with_guard(callbacks: Any) -> Any:
    """Adds the non-finite-loss guard to a user's callbacks."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        # `fit` passes its own list (which holds the guard) to validation.
        return callbacks
    callbacks = list(callbacks or [])
    if not any(isinstance(c, _StopOnNonFiniteLoss) for c in callbacks):
        callbacks.append(_StopOnNonFiniteLoss())
    return callbacks


class _SetTaskEpoch(keras.callbacks.Callback):
    """Numbers each epoch's tasks with `fit`'s epoch, not a local count.

    A resumed `fit` (`BackupAndRestore`, `initial_epoch`) then draws the
    same tasks as an uninterrupted one.
    """

    def __init__(self, datasets):
        super().__init__()
        self.datasets = datasets

    def on_epoch_begin(self, epoch, logs=None):
        for dataset in self.datasets:
            dataset.epoch = epoch


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` when the meta-loss is not finite; warns in `evaluate`.

    The train step already refuses to apply a non-finite meta-gradient, so
    the weights keep their last finite values.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            warnings.warn(
                f"The meta-loss is not finite ({float(loss)}) at batch "
                f"{batch}: training stopped, and the weights keep their last "
                "finite values (this step's update was not applied; an "
                "update that would overflow the weights or the optimizer's "
                "state counts as a non-finite loss). "
                "A smaller `inner_learning_rate`, fewer `inner_steps` or a "
                "smaller outer learning rate usually fixes it.",
                RuntimeWarning,
                stacklevel=2,
            )
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        message = self.model.meta_gradient.check_logs(logs or {})
        if message is not None:
            warnings.warn(
                f"Epoch {epoch + 1}: {message}", RuntimeWarning, stacklevel=2
            )

    def on_test_end(self, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            model = self.model
            warnings.warn(
                f"The query loss after adaptation is not finite ({float(loss)})"
                ": the inner loop diverged on at least one task (evaluation_"
                f"inner_steps={model.evaluation_inner_steps}, inner_learning_"
                f"rate={model.inner_learning_rate}). Lower "
                "`inner_learning_rate` or `evaluation_inner_steps`; "
                "`predict` shows which tasks diverged.",
                RuntimeWarning,
                stacklevel=2,
            )
