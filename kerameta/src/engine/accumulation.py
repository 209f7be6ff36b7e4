"""Task by task: each task's meta-gradient summed before the next adapts.

The inner loop of `engine.adaptation` advances every task of a batch
together, so the outer backward pass holds every task's activations at
once: a Conv-4 batch of 32 tasks peaked at 8 GiB on PyTorch, against
2.3 GiB for the per-task loop that PyTorch libraries write. When the tasks
of a batch are independent, the meta-objective is a sum of per-task terms,
and so is its gradient: `train_step` may then adapt, score and
differentiate one task at a time (a `lax.scan` over the tasks on JAX, a
`tf.while_loop` on TensorFlow, a Python loop on PyTorch) and sum the
gradients, holding one
task's activations at a time. Same objective, same gradient (up to the
order of the sums), same logs.

The tasks are independent unless
- gradient sharing mixes their inner gradients;
- a task weighting (gradient agreement) weighs each by all the others;
- the estimator logs statistics of the whole batch (`Implicit`'s
  `cg_residual`);
- they are vectorized (`vectorize_tasks`), which runs them all at once;
- the batch is split over devices (data parallelism).

`MAML(accumulate_tasks=...)` chooses: `"auto"` accumulates independent
tasks (see `AUTO_BACKENDS`), `True` requires it, `False` never does.

`evaluate` and `predict` follow the same option: independent tasks are
adapted and scored one task at a time (`seam.map_over_tasks`) with `True`,
and with `"auto"` where that is what pays (`EVALUATION_AUTO_BACKENDS`).
"""

import dataclasses
from typing import Any

import keras
from keras import ops

from kerameta.src import backend as seam
from kerameta.src.engine.adaptation import Components
from kerameta.src.engine.adaptation import check_num_tasks
from kerameta.src.engine.objective import adapted_query_predictions
from kerameta.src.engine.objective import meta_objective
from kerameta.src.episodes import Episode

OPTIONS = ("auto", True, False)

#: The backends where `"auto"` accumulates independent tasks. Measured on
#: the Conv-4 benchmark (32 tasks, 2-core CPU): JAX 4.9 s and 0.9 GiB
#: accumulated against 6.2 s and 3.1 GiB together; PyTorch 4.0 s and
#: 2.7 GiB against 3.4 s and 4.6 GiB (slower on a CPU, where glibc hands
#: each task's freed buffers back to the system; GPUs cache their memory);
#: TensorFlow, since its tasks after the first run in one `tf.while_loop`
#: (2026-12-07), 3.3-3.7 s against 3.4 s, 1.1 GiB against 2.5 GiB, and a
#: first step of 12-14 s against 84-100 s (every task traced). It was
#: 12.9 s against 7.7 s when each task was traced.
AUTO_BACKENDS = ("jax", "tensorflow", "torch")

#: The backends where `"auto"` evaluates and predicts independent tasks one
#: at a time. TensorFlow traces a task loop once per task otherwise: the
#: first `evaluate` of a Conv-4 on 20 tasks with 3 inner steps took 84 s
#: (2-core CPU, 2026-12-07). JAX already runs looped tasks in a `lax.map`
#: and PyTorch compiles nothing.
EVALUATION_AUTO_BACKENDS = ("tensorflow",)


def check_option(option: Any) -> None:
    if option not in OPTIONS:
        raise ValueError(
            "`accumulate_tasks` must be 'auto', True or False. Received: "
            f"accumulate_tasks={option!r}"
        )


def reasons_against(
    gradient_sharing: Any,
    task_weighting: Any,
    meta_gradient: Any,
    vectorize: bool,
) -> list[str]:
    """Why the tasks of a batch are not independent (empty if they are)."""
    reasons = []
    if gradient_sharing is not None:
        reasons.append("gradient sharing mixes the tasks' inner gradients")
    if task_weighting is not None and not task_weighting.is_uniform:
        reasons.append(
            f"the task weighting ({task_weighting.string_id!r}) weighs each "
            "task by every other"
        )
    if getattr(meta_gradient, "log_names", ()):
        reasons.append(
            f"the meta-gradient ({meta_gradient.string_id!r}) logs "
            "statistics of the whole batch"
        )
    if vectorize:
        reasons.append(
            "the tasks are vectorized (`vectorize_tasks`), which runs them "
            "all at once"
        )
    return reasons


def distribution_reason() -> str | None:
    """Why tasks cannot be accumulated in this step's distribution."""
    if seam.replica_count() > 1 or seam.task_shards() > 1:
        return "the batch is split over devices (data parallelism)"
    return None


def check(option: Any, reasons: list[str]) -> None:
    """Raises if `option` is `True` but `reasons` say it cannot be."""
    if option is True and reasons:
        raise ValueError(
            "`accumulate_tasks=True` needs tasks that are independent "
            f"within a batch, but {'; and '.join(reasons)}. Use "
            "`accumulate_tasks='auto'` (which accumulates only independent "
            "tasks) or False."
        )


def _reasons(parts: Components) -> list[str]:
    """Why this step's tasks are not independent (empty if they are)."""
    reasons = reasons_against(
        parts.gradient_sharing,
        parts.task_weighting,
        parts.meta_gradient,
        parts.vectorize,
    )
    distributed = distribution_reason()
    return reasons if distributed is None else [*reasons, distributed]


def resolve(option: Any, parts: Components) -> bool:
    """Whether this step accumulates; an error if `True` cannot."""
    if option is False:
        return False
    reasons = _reasons(parts)
    check(option, reasons)
    if reasons:
        return False
    return option is True or seam.BACKEND in AUTO_BACKENDS


def resolve_evaluation(option: Any, parts: Components) -> bool:
    """Whether a test or predict step runs one task at a time.

    Never an error: a `True` that cannot accumulate was refused when the
    meta-model was built or first trained.
    """
    if option is False or _reasons(parts):
        return False
    return option is True or seam.BACKEND in EVALUATION_AUTO_BACKENDS


def _fields(episode: Episode) -> list:
    fields = [episode.support_x, episode.support_y, episode.query_x]
    if episode.query_y is not None:
        fields.append(episode.query_y)
    return fields


def _one_task(parts, episode, task, task_data):
    """The components and the one-task episode of task `task`."""
    one = keras.tree.pack_sequence_as(
        _fields(episode), [ops.expand_dims(a, 0) for a in task_data]
    )
    query_y = one[3] if len(one) == 4 else None  # None when predicting
    task_parts = dataclasses.replace(parts, task=(task, episode.num_tasks))
    return task_parts, Episode(*one[:3], query_y)


def _first(structure):
    return keras.tree.map_structure(lambda t: t[0], structure)


def evaluated(
    parts: Components,
    theta: list,
    non_trainable: list,
    episode: Episode,
    inner_steps: int,
) -> dict:
    """The aux of `meta_objective(..., training=False)`, task by task."""
    check_num_tasks(episode.num_tasks)

    def task_outputs(task, *task_data):
        task_parts, one = _one_task(parts, episode, task, task_data)
        _, aux = meta_objective(
            task_parts, theta, non_trainable, one, inner_steps, training=False
        )
        return _first((aux["task_losses"], aux["co_losses"], aux["y_pred"]))

    task_losses, co_losses, y_pred = seam.map_over_tasks(task_outputs)(
        *keras.tree.flatten(_fields(episode))
    )
    return _aux(task_losses, co_losses, y_pred)


def predicted(
    parts: Components,
    theta: list,
    non_trainable: list,
    episode: Episode,
    inner_steps: int,
):
    """`adapted_query_predictions`, task by task."""
    check_num_tasks(episode.num_tasks)

    def task_predictions(task, *task_data):
        task_parts, one = _one_task(parts, episode, task, task_data)
        return _first(
            adapted_query_predictions(
                task_parts, theta, non_trainable, one, inner_steps
            )
        )

    return seam.map_over_tasks(task_predictions)(
        *keras.tree.flatten(_fields(episode))
    )


def _aux(task_losses, co_losses, y_pred) -> dict:
    """`meta_objective`'s aux for independent tasks."""
    return {
        "task_losses": task_losses,
        "co_losses": co_losses,
        "y_pred": y_pred,
        "batch_means": {},
        "task_weights": None,
        "estimator_logs": {},
    }


def accumulated_value_and_grad(
    parts: Components,
    theta: list,
    non_trainable: list,
    episode: Episode,
    inner_steps: int,
    scale_loss,
):
    """The meta-objective and its gradient, accumulated task by task.

    Returns:
        `((objective, aux), grads)`, as `seam.value_and_grad` of
        `engine.objective.meta_objective` (with `scale_loss` applied).
    """
    count = episode.num_tasks
    check_num_tasks(count)

    def task_objective(theta_values, task, *task_data):
        task_parts, one = _one_task(parts, episode, task, task_data)
        value, aux = meta_objective(
            task_parts, theta_values, non_trainable, one, inner_steps
        )
        first = _first((aux["task_losses"], aux["co_losses"], aux["y_pred"]))
        # Each task weighs 1 / tasks in the whole batch's mean.
        return scale_loss(value / count), first

    (objective, stacked), grads = seam.accumulate_over_tasks(task_objective)(
        theta, *keras.tree.flatten(_fields(episode))
    )
    return (objective, _aux(*stacked)), grads
