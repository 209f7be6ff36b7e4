"""Gradient sharing: tasks of a batch lend each other their inner gradients."""

import warnings
from typing import Any

import keras
from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import check_choice
from kerameta.src.checks import check_number
from kerameta.src.checks import check_positive_int
from kerameta.src.engine import replicas
from kerameta.src.types import Tensor

_CONCURRENT = ("mean", "leave_one_out")
_GRANULARITY = ("tensor", "element")
_EVALUATION = ("history", "none", "all")


@kerameta_export
class GradientSharing(keras.layers.Layer):
    """Shares inner-loop gradients across tasks, with meta-learned scales.

    At inner step `k`, every task's step direction becomes its own support
    gradient plus a meta-learned multiple of the mean gradient of the
    concurrent tasks of the batch, plus a meta-learned multiple of a running
    average of earlier batches' mean gradients at that step:

    direction_i = g_i + concurrent_scale[k] * mean_j(g_j)
    + history_scale[k] * history[k]

    after which the inner optimizer steps along the direction (for SGD,
    `fast_i = fast_i - inner_learning_rate * direction_i`). Both scales
    start at 0 by default, so training starts exactly as MAML; they are
    trainable weights of the meta-model, learned by the outer optimizer
    from the meta-gradient. The history is a non-trainable buffer, updated
    after every outer step as an exponential moving average:
    `history[k] = decay * history[k] + (1 - decay) * mean_j(g_j)` at step `k`
    (never differentiated), and saved with the model so that resumed
    training continues identically.

    In second-order mode the concurrent mean stays differentiable, so the
    meta-gradient has cross-task terms. With a first-order meta-gradient
    the scales still learn: the step is linear in them.

    At evaluation (`evaluate`, `predict`, `adapt`) tasks are adapted
    independently by default: the concurrent term is off and the history
    is used frozen at its last training value (`evaluation_sharing=
    "history"`), so a test task's adapted weights never depend on the other
    test tasks. `"none"` also drops the history term; `"all"` shares as in
    training.

    With one task per batch the concurrent mean is that task's own gradient
    (or zero with `concurrent="leave_one_out"`), so nothing is shared
    across tasks: training warns once.

    String id: `"gradient_sharing"`.

    Args:
        concurrent_initial: initial value of the concurrent-mean scales.
            Defaults to `0.0`.
        history_initial: initial value of the history scales. Defaults to
            `0.0`.
        history_decay: decay of the history's moving average, in `[0, 1)`.
            Defaults to `0.9`.
        concurrent: `"mean"` (the mean over all tasks of the batch,
            including the task itself) or `"leave_one_out"` (the mean over
            the other tasks). Defaults to `"mean"`.
        granularity: `"tensor"` (one scale per inner step and adapted
            weight tensor) or `"element"` (one per inner step and weight
            element, like Meta-SGD's rates). Defaults to `"tensor"`.
        steps: number of per-step scales and history slots. Defaults to
            `None`: the meta-model's `inner_steps`. Inner steps beyond it
            (e.g. more steps at evaluation) reuse the last step's scales
            and history.
        evaluation_sharing: `"history"`, `"none"` or `"all"`: what is
            shared at evaluation (see above). Defaults to `"history"`.

    Example:

    ```python
    maml = kerameta.MAML(
        model,
        inner_learning_rate=0.4,
        gradient_sharing=kerameta.GradientSharing(history_decay=0.9),
    )
    ```

    Reference:

    - [Chang and Lipson, 2023. Accelerating Meta-Learning by Sharing
      Gradients](https://arxiv.org/abs/2312.08398). The paper's exact update
      rule is not public; this is the reconstruction documented in the
      kerameta docs.
    """

    string_id = "gradient_sharing"

    def __init__(
        self,
        concurrent_initial: float = 0.0,
        history_initial: float = 0.0,
        history_decay: float = 0.9,
        concurrent: str = "mean",
        granularity: str = "tensor",
        steps: int | None = None,
        evaluation_sharing: str = "history",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.concurrent_initial = check_number(
            "concurrent_initial", concurrent_initial
        )
        self.history_initial = check_number("history_initial", history_initial)
        self.history_decay = check_number(
            "history_decay", history_decay, 0.0, 1.0, include_high=False
        )
        self.concurrent = check_choice("concurrent", concurrent, _CONCURRENT)
        self.granularity = check_choice(
            "granularity", granularity, _GRANULARITY
        )
        if steps is not None:
            steps = check_positive_int("steps", steps)
        self.steps = steps
        self.evaluation_sharing = check_choice(
            "evaluation_sharing", evaluation_sharing, _EVALUATION
        )
        self.concurrent_scales = []
        self.history_scales = []
        self.history = []
        self._warned_single_task = False

    def build_for(
        self, shapes: list[tuple[int, ...]], inner_steps: int
    ) -> None:
        """Creates the scales and history buffers for the adapted tensors."""
        if self.built:
            return
        if self.steps is None:
            self.steps = int(inner_steps)
        for index, shape in enumerate(shapes):
            scale_shape = (self.steps,) + (
                tuple(shape) if self.granularity == "element" else ()
            )
            self.concurrent_scales.append(
                self.add_weight(
                    shape=scale_shape,
                    initializer=keras.initializers.Constant(
                        self.concurrent_initial
                    ),
                    name=f"concurrent_scale_{index}",
                )
            )
            self.history_scales.append(
                self.add_weight(
                    shape=scale_shape,
                    initializer=keras.initializers.Constant(
                        self.history_initial
                    ),
                    name=f"history_scale_{index}",
                )
            )
            self.history.append(
                self.add_weight(
                    shape=(self.steps, *shape),
                    initializer="zeros",
                    trainable=False,
                    name=f"history_{index}",
                )
            )
        self.built = True

    def uses_concurrent(self, training: bool) -> bool:
        return training or self.evaluation_sharing == "all"

    def uses_history(self, training: bool) -> bool:
        return training or self.evaluation_sharing != "none"

    def directions(
        self,
        grads: list[Tensor],
        step: int,
        concurrent_scales: list[Tensor],
        history_scales: list[Tensor],
        training: bool,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Returns the step directions and the batch-mean gradients.

        Args:
            grads: each task's support gradients, with a leading task axis.
            step: the inner step index.
            concurrent_scales, history_scales: the scales' current values.
            training: whether the meta-model is training (see
                `evaluation_sharing`).

        Returns:
            `(directions, means)`: the directions, shaped like `grads`, and
            the mean over tasks of each gradient (the history's signal).
        """
        row = min(step, self.steps - 1)
        # Under data parallelism `grads` holds this replica's tasks; the
        # means are over every task of the batch (see `engine.replicas`).
        num_tasks = replicas.num_tasks(grads[0].shape[0])
        if training and num_tasks == 1 and not self._warned_single_task:
            self._warned_single_task = True
            warnings.warn(
                "Gradient sharing with one task per batch shares nothing "
                "across tasks: the concurrent mean is the task's own "
                "gradient (or zero with concurrent='leave_one_out'). Use "
                "several tasks per batch (`tasks_per_batch`).",
                UserWarning,
                stacklevel=2,
            )
        directions, means = [], []
        for index, g in enumerate(grads):
            total = replicas.task_sum(g)
            mean = total / num_tasks  # float64: not ops.mean
            means.append(mean)
            direction = g
            if self.uses_concurrent(training):
                if self.concurrent == "mean":
                    shared = mean
                elif num_tasks > 1:
                    total = ops.expand_dims(total, 0)
                    shared = (total - g) / ops.cast(num_tasks - 1, g.dtype)
                else:
                    shared = ops.zeros_like(g)
                direction = direction + concurrent_scales[index][row] * shared
            if self.uses_history(training):
                history = ops.stop_gradient(self.history[index].value[row])
                direction = direction + history_scales[index][row] * history
            directions.append(direction)
        return directions, means

    def updated_history(
        self, means_by_step: dict[int, list[Tensor]]
    ) -> list[Tensor]:
        """The history after one outer step, from the batch-mean gradients
        of the inner steps that computed one (`{step: means}`)."""
        decay = self.history_decay
        new_history = []
        for index, buffer in enumerate(self.history):
            rows = [buffer.value[row] for row in range(self.steps)]
            for step in sorted(means_by_step):
                row = min(step, self.steps - 1)
                rows[row] = decay * buffer.value[row] + (1.0 - decay) * (
                    ops.stop_gradient(means_by_step[step][index])
                )
            new_history.append(ops.stack(rows))
        return new_history

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "concurrent_initial": self.concurrent_initial,
                "history_initial": self.history_initial,
                "history_decay": self.history_decay,
                "concurrent": self.concurrent,
                "granularity": self.granularity,
                "steps": self.steps,
                "evaluation_sharing": self.evaluation_sharing,
            }
        )
        return config
