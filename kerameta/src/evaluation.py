"""The meta-test protocol: adapt on each support set, score its query set."""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

METRICS = ("accuracy", "mean_squared_error")


@dataclasses.dataclass(frozen=True)
class MetaTestResult:
    """Per-episode scores of a meta-test and their summary.

    Attributes:
        mean: mean score over the episodes.
        confidence_interval: half-width of the 95% confidence interval of
            the mean, `1.96 * std / sqrt(episodes)` (sample standard
            deviation), as reported in the MAML papers.
        per_episode: the score of every episode, in order.
        metric: name of the score.
        inner_steps: inner steps taken on each support set.
    """

    mean: float
    confidence_interval: float
    per_episode: np.ndarray
    metric: str
    inner_steps: int

    @property
    def episodes(self) -> int:
        """Number of episodes scored."""
        return len(self.per_episode)

    def __str__(self) -> str:
        if self.metric == "accuracy":
            value = f"{self.mean:.2%} ± {self.confidence_interval:.2%}"
        else:
            value = f"{self.mean:.4g} ± {self.confidence_interval:.2g}"
        return (
            f"{self.metric}: {value} (95% confidence "
            f"interval, {self.episodes} episodes, {self.inner_steps} inner "
            "steps)"
        )


def _episode_scores(metric: Any, y_true, y_pred) -> np.ndarray:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if callable(metric):
        scores = np.asarray(metric(y_true, y_pred), dtype=np.float64)
        if scores.shape != (len(y_true),):
            raise ValueError(
                "Expected the `metric` callable to return one score per "
                f"episode, shaped ({len(y_true)},). Received shape "
                f"{scores.shape}."
            )
        return scores
    axes = tuple(range(1, y_true.ndim))
    if metric == "accuracy":
        if y_pred.ndim != y_true.ndim + 1:
            raise ValueError(
                "`metric='accuracy'` needs integer query labels shaped "
                "(tasks, queries) and per-class scores shaped (tasks, "
                "queries, classes). Received: query_y.shape="
                f"{y_true.shape}, predictions.shape={y_pred.shape}."
            )
        correct = np.argmax(y_pred, axis=-1) == y_true
        return correct.mean(axis=axes)
    if y_pred.shape != y_true.shape:
        raise ValueError(
            "`metric='mean_squared_error'` needs predictions shaped like the "
            f"query targets. Received: query_y.shape={y_true.shape}, "
            f"predictions.shape={y_pred.shape}."
        )
    squared = (y_pred.astype(np.float64) - y_true) ** 2
    return squared.mean(axis=tuple(range(1, squared.ndim)))


def meta_test(
    meta_model: Any,
    tasks: Any,
    episodes: int | None = 600,
    inner_steps: int | None = None,
    metric: str | Callable[[np.ndarray, np.ndarray], np.ndarray] = ("accuracy"),
) -> MetaTestResult:
    """Meta-tests a meta-model: adapts to each task, scores its query set.

    For every episode of `tasks`, in order, the meta-model adapts a copy of
    its weights to the support set (`inner_steps` steps) and predicts the
    query set; the episode's score is the accuracy (or squared error) of
    those predictions. The meta-model's weights never change. Returns the
    mean over episodes with its 95% confidence interval, and every
    episode's score.

    This is the protocol of the MAML papers (600 test episodes, mean ±
    1.96 standard errors). Use test tasks whose classes were never seen in
    meta-training, with `new_tasks_each_epoch=False` so that every run sees
    the same episodes.

    Args:
        meta_model: a compiled meta-model, such as `kerameta.MAML`.
        tasks: batches of test episodes, e.g. `kerameta.data.FewShotTasks`
            or any sequence or iterable of `(x, query_y)` batches.
        episodes: number of episodes to score, taken from the first
            batches; `None` scores all of them. Defaults to `600`.
        inner_steps: adaptation steps per support set. Defaults to the
            meta-model's `evaluation_inner_steps`.
        metric: `"accuracy"` (query labels against the arg-max of the
            predicted scores), `"mean_squared_error"`, or a callable
            `(query_y, predictions) -> scores` returning one score per
            episode. Defaults to `"accuracy"`.

    Returns:
        A `kerameta.MetaTestResult`; `print` it for a one-line summary.

    Raises:
        ValueError: if `tasks` holds fewer than `episodes` episodes, or
            has no query targets.

    Example:

    ```python
    test_tasks = kerameta.data.FewShotTasks(
        x_test, y_test, ways=5, shots=1, query_shots=15,
        tasks_per_batch=25, num_batches=24, rotations=True,
    )
    result = kerameta.meta_test(maml, test_tasks, episodes=600,
                                inner_steps=3)
    print(result)  # accuracy: 98.12% ± 0.31% (95% confidence interval...
    result.per_episode  # (600,) array
    ```
    """
    if not (callable(metric) or metric in METRICS):
        raise ValueError(
            f"Expected `metric` to be one of {METRICS} or a callable. "
            f"Received: metric={metric!r}"
        )
    if (
        episodes is not None
        and (isinstance(episodes, bool) or not isinstance(episodes, int))
        or (episodes is not None and episodes < 1)
    ):
        raise ValueError(
            "Expected `episodes` to be a positive integer or None. "
            f"Received: episodes={episodes!r}"
        )
    if getattr(meta_model, "compiled", False) is not True:
        raise ValueError(
            "The meta-model must be compiled before `meta_test` (it uses "
            "the compiled loss to adapt). Call `meta_model.compile(...)`."
        )
    previous = meta_model.evaluation_inner_steps
    if inner_steps is not None:
        meta_model.evaluation_inner_steps = inner_steps
    steps = meta_model.evaluation_inner_steps
    scores = []
    count = 0
    try:
        for batch in _batches(tasks):
            if episodes is not None and count >= episodes:
                break
            if not isinstance(batch, tuple) or len(batch) < 2:
                raise ValueError(
                    "Expected `tasks` to give `(x, query_y)` batches with "
                    f"query targets. Received a batch of type "
                    f"{type(batch).__name__}"
                    + (
                        f" of length {len(batch)}"
                        if isinstance(batch, tuple)
                        else ""
                    )
                    + "."
                )
            x, query_y = batch[0], batch[1]
            predictions = ops.convert_to_numpy(meta_model.predict_on_batch(x))
            batch_scores = _episode_scores(
                metric, ops.convert_to_numpy(query_y), predictions
            )
            scores.append(batch_scores)
            count += len(batch_scores)
    finally:
        meta_model.evaluation_inner_steps = previous
    per_episode = np.concatenate(scores) if scores else np.zeros(0)
    if episodes is not None:
        if count < episodes:
            raise ValueError(
                f"`tasks` holds {count} episodes, fewer than the {episodes} "
                "requested. Give it more batches (e.g. `num_batches`) or "
                "lower `episodes`."
            )
        per_episode = per_episode[:episodes]
    if len(per_episode) == 0:
        raise ValueError("Expected `tasks` to hold episodes. Received none.")
    std = per_episode.std(ddof=1) if len(per_episode) > 1 else 0.0
    return MetaTestResult(
        mean=float(per_episode.mean()),
        confidence_interval=float(1.96 * std / math.sqrt(len(per_episode))),
        per_episode=per_episode,
        metric=metric if isinstance(metric, str) else _name(metric),
        inner_steps=int(steps),
    )


def _name(function: Callable) -> str:
    return getattr(function, "__name__", type(function).__name__)


def _batches(tasks: Any):
    if hasattr(tasks, "__getitem__") and hasattr(tasks, "__len__"):
        for index in range(len(tasks)):
            yield tasks[index]
    elif hasattr(tasks, "as_numpy_iterator"):
        yield from tasks.as_numpy_iterator()
    else:
        yield from tasks
