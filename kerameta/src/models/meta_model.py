"""`MetaModel`: the meta-learning model behind `MAML` and `Reptile`.

This file holds what users touch: the constructor, the settings, `compile`,
`call`, `adapt` and the `fit`/`evaluate` wrappers (the config is built in
`models/config.py`). The data
path lives in `kerameta/src/engine/` (episode -> adaptation ->
meta-gradient -> objective -> update), the components in their families
(see docs/architecture.md).
"""

from typing import Any

import keras
from keras import ops

from kerameta.src import backend as seam
from kerameta.src import compat
from kerameta.src import inner_optimizers
from kerameta.src import meta_gradients
from kerameta.src import outer_rules
from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches
from kerameta.src.engine import accumulation
from kerameta.src.engine import composition
from kerameta.src.engine.adaptation import adapt_batch
from kerameta.src.engine.callbacks import SetTaskEpoch
from kerameta.src.engine.callbacks import with_guard
from kerameta.src.engine.parameters import resolve_adapted_mask
from kerameta.src.engine.randomness import RandomLayers
from kerameta.src.engine.steps import MetaSteps
from kerameta.src.engine.task_count import StaticTaskCount
from kerameta.src.engine.vectorization import resolve_vectorize_tasks
from kerameta.src.episodes import describe_shapes
from kerameta.src.episodes import example_outputs
from kerameta.src.episodes import validate_episode
from kerameta.src.models.components import build_components
from kerameta.src.models.components import check_model
from kerameta.src.models.components import clone_for_adapt
from kerameta.src.models.components import output_loss_trackers
from kerameta.src.models.components import task_loss
from kerameta.src.models.config import meta_model_config
from kerameta.src.models.config import meta_model_from_config


class MetaModel(StaticTaskCount, seam.MetaTrainer, MetaSteps, keras.Model):
    """The gradient-based meta-learning engine behind `kerameta.MAML`.

    Use `kerameta.MAML` or `kerameta.Reptile`; this base class takes the
    same arguments as `MAML` plus `outer_rule` (`"maml"` or `"reptile"`,
    or a `kerameta.outer_rules.OuterRule`).
    """

    def __init__(
        self,
        model: keras.Model,
        inner_steps: int = 1,
        inner_learning_rate: float | None = None,
        evaluation_inner_steps: int | None = None,
        meta_gradient: str | meta_gradients.MetaGradient = "second_order",
        vectorize_tasks: str | bool = "auto",
        inner_optimizer: str | inner_optimizers.InnerOptimizer = "sgd",
        adapted_layers: list[str] | None = None,
        adapt_batch_normalization: bool = True,
        gradient_sharing: Any = None,
        task_weighting: Any = None,
        co_learner: Any = None,
        outer_rule: str | outer_rules.OuterRule = "maml",
        unroll_inner_loop: str | bool = "auto",
        accumulate_tasks: str | bool = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_model(model)
        self.model = model
        self._inner_steps = check_positive_int("inner_steps", inner_steps)
        self._evaluation_inner_steps = None
        self.evaluation_inner_steps = evaluation_inner_steps
        self.meta_gradient = meta_gradients.get(meta_gradient)
        self.meta_gradient.check_inner_steps(self.inner_steps)
        self.outer_rule = outer_rules.get(outer_rule)
        self._vectorize_option = vectorize_tasks
        if unroll_inner_loop not in ("auto", True, False):
            raise ValueError(
                "`unroll_inner_loop` must be 'auto', True or False. "
                f"Received: unroll_inner_loop={unroll_inner_loop!r}"
            )
        self.unroll_inner_loop = unroll_inner_loop
        accumulation.check_option(accumulate_tasks)
        self.accumulate_tasks = accumulate_tasks
        self.vectorize_tasks = resolve_vectorize_tasks(vectorize_tasks, model)
        self._task_loss_fn = None
        # A string (rather than a list of names) is rejected by the mask.
        self.adapted_layers = (
            list(adapted_layers)
            if isinstance(adapted_layers, (list, tuple))
            else adapted_layers
        )
        self.adapt_batch_normalization = bool(adapt_batch_normalization)
        self._adapted_mask = resolve_adapted_mask(
            model, self.adapted_layers, self.adapt_batch_normalization
        )
        build_components(
            self,
            inner_optimizer,
            inner_learning_rate,
            gradient_sharing,
            task_weighting,
            co_learner,
        )
        composition.check(self._setup())
        accumulation.check(
            accumulate_tasks,
            accumulation.reasons_against(
                self.gradient_sharing,
                self.task_weighting,
                self.meta_gradient,
                self.vectorize_tasks,
            ),
        )
        if not self.outer_rule.differentiates_inner_loop and (
            self.gradient_sharing is not None
        ):
            # No meta-gradient reaches the scales: they keep their values.
            sharing = self.gradient_sharing
            for variable in sharing.concurrent_scales + sharing.history_scales:
                variable.trainable = False
        self.built = True

    def _setup(self, jit_compile: Any = "auto") -> composition.Setup:
        return composition.Setup(
            meta_gradient=self.meta_gradient,
            outer_rule=self.outer_rule,
            inner_optimizer=self.inner_optimizer,
            gradient_sharing=self.gradient_sharing,
            co_learner=self.co_learner,
            adapted_mask=tuple(self._adapted_mask),
            backend=seam.BACKEND,
            vectorize_tasks=self.vectorize_tasks,
            jit_compile=jit_compile,
            random_layers=RandomLayers.of(self.model) is not None,
        )

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

    # --- Settings (a traced step captured the old value: trace again) ---
    def _reset_compiled_functions(self) -> None:
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
        self.meta_gradient.check_inner_steps(value)
        self._inner_steps = value
        self._reset_compiled_functions()

    @property
    def inner_learning_rate(self) -> float:
        """The inner optimizer's step size (training and evaluation)."""
        return self.inner_optimizer.learning_rate

    @inner_learning_rate.setter
    def inner_learning_rate(self, value: float) -> None:
        self.inner_optimizer.learning_rate = value
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
                `keras.losses.Loss` or a function `(y_true, y_pred)`; for a
                model with several outputs, a list or dict of them, one per
                output (the task loss is their sum, weighted by
                `loss_weights` if given).
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
        jit_compile = kwargs.get("jit_compile", "auto")
        composition.check(self._setup(jit_compile), stage="compile")
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )
        # Keras records the resolved `jit_compile` (True under JAX); saved so,
        # it forces torch.compile or XLA on the backend that loads the file.
        # Record what was asked for: "auto" is resolved again when loading.
        compat.record_compile_argument(self, "jit_compile", jit_compile)
        self._task_loss_fn = task_loss(loss, kwargs.get("loss_weights"))
        # Each output's query loss, logged as Keras logs it (several outputs).
        self._output_loss_trackers = output_loss_trackers(
            self._task_loss_fn, self.model
        )

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Re-compiles a loaded meta-model from its saved compile config."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        return meta_model_config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None):
        return meta_model_from_config(cls, config, custom_objects)

    # --- Calling the meta-model: adapted query predictions ---
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
        num_tasks, num_query = keras.tree.flatten(query)[0].shape[:2]
        spec = example_outputs(self.model, query)
        return keras.tree.map_structure(
            lambda s: keras.KerasTensor(
                (num_tasks, num_query, *s.shape[1:]), dtype=s.dtype
            ),
            spec,
        )

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
        support_x, support_y = keras.tree.map_structure(
            ops.convert_to_tensor, (support_x, support_y)
        )
        received = describe_shapes(support_x=support_x, support_y=support_y)
        support_x, support_y = keras.tree.map_structure(
            lambda t: ops.expand_dims(t, 0), (support_x, support_y)
        )
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
        parts = self._components()
        with seam.enable_grad(), seam.second_order_safe():
            adaptation = adapt_batch(
                parts, theta, non_trainable, episode, steps, training=False
            )
            _, frozen = parts.layout.split(theta)
            fast = parts.layout.merge(
                [value[0] for value in adaptation.fast], frozen
            )
        adapted = clone_for_adapt(self.model)
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
        for key in ("meta_gradient", "outer_rule"):
            if key in config:
                config[key] = getattr(self, key)
        stripped = type(self)(model=self.model, **config)
        if self.compiled:
            stripped.compile_from_config(self.get_compile_config())
        return stripped

    # --- fit and evaluate: the guard callbacks and the task epochs ---
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
        callbacks = with_guard(kwargs.get("callbacks"))
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, TaskBatches):
            # Its batches are already random and seeded; Keras's shuffle
            # would draw on Python's global `random` and break resumption.
            kwargs.setdefault("shuffle", False)
        datasets = [x]
        datasets.append(kwargs.get("validation_data"))
        datasets = [d for d in datasets if isinstance(d, TaskBatches)]
        if datasets and isinstance(callbacks, list):
            callbacks.append(SetTaskEpoch(datasets))
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
        compat.assert_compile_called(self, "evaluate")
        kwargs["callbacks"] = with_guard(kwargs.get("callbacks"))
        return super().evaluate(*args, **kwargs)
