"""The backend-neutral train, test and predict bodies of a meta-model.

`MetaSteps` is a mixin of `MetaModel`, as Keras's `Trainer` is of `Model`:
it reads episodes from a batch, resolves the components once per trace,
and wires the data path (episode -> adaptation -> meta-gradient ->
objective -> update). The backend's `MetaTrainer` (in the seam) calls
these bodies from `train_step` / `test_step` / `predict_step`.
"""

import keras
from keras import ops

from kerameta.src import backend as seam
from kerameta.src import compat
from kerameta.src.engine import accumulation
from kerameta.src.engine import replicas
from kerameta.src.engine.adaptation import Components
from kerameta.src.engine.network import training_call
from kerameta.src.engine.objective import adapted_query_predictions
from kerameta.src.engine.objective import meta_objective
from kerameta.src.engine.parameters import ParameterLayout
from kerameta.src.engine.randomness import RandomLayers
from kerameta.src.engine.update import apply_if_finite
from kerameta.src.engine.update import check_replicated_optimizer
from kerameta.src.engine.update import update_sharing_history
from kerameta.src.episodes import Episode
from kerameta.src.episodes import validate_episode


class MetaSteps:
    """The meta-step bodies, shared by every backend and outer rule."""

    def _components(self) -> Components:
        if self._task_loss_fn is None:
            raise ValueError(
                "The meta-model has no task loss yet. Call `compile(loss=...)` "
                "before `fit`, `evaluate`, `predict` or `adapt`."
            )
        # Resolved once per meta-model (PyTorch builds the parts every step).
        if "_network_parts" not in self.__dict__:
            self.__dict__["_network_parts"] = (
                training_call(self.model),
                RandomLayers.of(self.model),
            )
        call, random = self.__dict__["_network_parts"]
        return Components(
            model=self.model,
            task_loss=self._task_loss_fn,
            layout=ParameterLayout(
                self.trainable_variables,
                self.model.trainable_variables,
                self._adapted_mask,
            ),
            inner_optimizer=self.inner_optimizer,
            meta_gradient=self.meta_gradient,
            gradient_sharing=self.gradient_sharing,
            task_weighting=self.task_weighting,
            co_learner=self.co_learner,
            outer_rule=self.outer_rule,
            vectorize=self.vectorize_tasks,
            call=call,
            random=random,
            # "auto": TensorFlow's `while_loop` ran a few steps 3x slower.
            unroll=self.unroll_inner_loop is True
            or (
                self.unroll_inner_loop == "auto"
                and seam.BACKEND == "tensorflow"
            ),
        )

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
                _replica_tasks(hints.get(mode)),
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
        if self.__dict__.get("_output_loss_trackers"):
            # Keras's compiled loss would add per-output trackers that no
            # step updates (kerameta's own log them).
            return ops.zeros(())
        return super().compute_loss(
            x, y, y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(x, dict) and "support_x" in x:
            # The raw batch, from Keras's symbolic build (see compute_loss);
            # the meta-steps pass the validated `query_x` (a dict for a
            # model with named inputs).
            self._episode((x, y, sample_weight), "test")
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def _state_values(self):
        theta = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        return theta, non_trainable

    def _meta_objective(
        self, theta, non_trainable, episode, inner_steps, training=True
    ):
        """The meta-objective of a batch (see `engine.objective`)."""
        return meta_objective(
            self._components(),
            theta,
            non_trainable,
            episode,
            inner_steps,
            training,
        )

    def _adapted_query_predictions(self, theta, non_trainable, episode):
        return adapted_query_predictions(
            self._components(),
            theta,
            non_trainable,
            episode,
            self.evaluation_inner_steps,
        )

    def _meta_train_step(self, data):
        check_replicated_optimizer(self.optimizer)
        episode = self._episode(data, "train")
        theta, non_trainable = self._state_values()
        parts = self._components()

        # As Keras's `train_step`: a `LossScaleOptimizer` (mixed_float16)
        # unscales the gradients it applies.
        scale_loss = self.optimizer.scale_loss
        if accumulation.resolve(self.accumulate_tasks, parts):
            (objective_value, aux), grads = (
                accumulation.accumulated_value_and_grad(
                    parts,
                    theta,
                    non_trainable,
                    episode,
                    self.inner_steps,
                    scale_loss,
                )
            )
        else:

            def objective(theta_values):
                value, aux = meta_objective(
                    parts,
                    theta_values,
                    non_trainable,
                    episode,
                    self.inner_steps,
                )
                return scale_loss(value), aux

            (objective_value, aux), grads = seam.value_and_grad(
                seam.compiled(objective, self.jit_compile), has_aux=True
            )(theta)
        applied = seam.compiled(apply_if_finite, self.jit_compile)(
            self.optimizer, self.trainable_variables, objective_value, grads
        )
        if self.gradient_sharing is not None and aux["batch_means"]:
            update_sharing_history(
                self.gradient_sharing, aux["batch_means"], applied
            )
        if parts.random is not None:
            # New masks at the next meta-step (see `engine.randomness`).
            with seam.no_grad():
                parts.random.advance(self.model)
        return self._update_metrics(aux, episode, applied)

    def _meta_test_step(self, data):
        episode = self._episode(data, "test")
        parts = self._components()
        args = (parts, *self._state_values(), episode)
        steps = self.evaluation_inner_steps
        if accumulation.resolve_evaluation(self.accumulate_tasks, parts):
            aux = accumulation.evaluated(*args, steps)
        else:
            _, aux = meta_objective(*args, steps, training=False)
        logs = self._update_metrics(aux, episode)
        # The estimator's logs describe the meta-gradient: training only.
        for tracker in self._estimator_trackers:
            logs.pop(tracker.name, None)
        return logs

    def _meta_predict_step(self, data):
        episode = self._episode(data, "predict")
        parts = self._components()
        args = (parts, *self._state_values(), episode)
        steps = self.evaluation_inner_steps
        if accumulation.resolve_evaluation(self.accumulate_tasks, parts):
            y_pred = accumulation.predicted(*args, steps)
        else:
            y_pred = adapted_query_predictions(*args, steps)
        return keras.tree.map_structure(ops.stop_gradient, y_pred)

    def _update_metrics(self, aux, episode, applied=None):
        # Means over every task of the batch, also under data parallelism
        # (each replica logs the same value); the compiled metrics are
        # Keras's, which sums their totals and counts over replicas.
        loss = replicas.task_mean(ops.stop_gradient(aux["task_losses"]))
        if applied is not None:
            # A refused update is reported as a non-finite loss, which
            # stops `fit` with a warning (see `StopOnNonFiniteLoss`).
            loss = ops.where(applied, loss, ops.cast(float("nan"), loss.dtype))
        compat.loss_tracker(self).update_state(loss)
        if self.co_learner is not None:
            self._co_learner_loss_tracker.update_state(
                replicas.task_mean(ops.stop_gradient(aux["co_losses"]))
            )
        weights = aux.get("task_weights")
        if weights is not None:
            weights = ops.stop_gradient(weights)
            self._task_weight_min_tracker.update_state(ops.min(weights))
            self._task_weight_max_tracker.update_state(ops.max(weights))
            self._task_weight_sum_tracker.update_state(ops.sum(weights))
        trackers = self.__dict__.get("_output_loss_trackers") or []
        if trackers:
            y_pred = keras.tree.map_structure(ops.stop_gradient, aux["y_pred"])
            losses = seam.per_task_map(
                lambda _, __, y, y_pred: self._task_loss_fn.per_output(
                    y, y_pred
                ),
                vectorize=self.vectorize_tasks,
            )([], None, episode.query_y, y_pred)
            for tracker, loss in zip(trackers, losses):
                tracker.update_state(replicas.task_mean(loss))
        logs = aux.get("estimator_logs") or {}
        for tracker in self._estimator_trackers:
            if tracker.name in logs:
                tracker.update_state(ops.stop_gradient(logs[tracker.name]))
        return self.compute_metrics(
            episode.query_x,
            episode.query_y,
            keras.tree.map_structure(ops.stop_gradient, aux["y_pred"]),
            sample_weight=None,
        )


def _replica_tasks(num_tasks: int | None) -> int | None:
    """A replica's share of a batch of `num_tasks` tasks (the static task
    axis its step traces with), `None` if unknown."""
    if num_tasks is None:
        return None
    replicas.check_divisible(num_tasks, seam.replica_count())
    return num_tasks // seam.replica_count()
