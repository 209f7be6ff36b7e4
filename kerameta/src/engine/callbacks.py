"""The callbacks every `fit` and `evaluate` of a meta-model adds."""

import math
import warnings
from typing import Any

import keras


def with_guard(callbacks: Any) -> Any:
    """Adds the non-finite-loss guard to a user's callbacks."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        # `fit` passes its own list (which holds the guard) to validation.
        return callbacks
    callbacks = list(callbacks or [])
    if not any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks):
        callbacks.append(StopOnNonFiniteLoss())
    return callbacks


class SetTaskEpoch(keras.callbacks.Callback):
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


class StopOnNonFiniteLoss(keras.callbacks.Callback):
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
