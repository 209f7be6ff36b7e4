"""`InnerOptimizer`: the base class of the inner-loop update rules."""

from typing import Any

import keras

from kerameta.src.checks import check_number
from kerameta.src.types import Tensor

DEFAULT_LEARNING_RATE = 0.01


class InnerOptimizer(keras.layers.Layer):
    """Base class of the inner-loop update rules.

    An inner optimizer turns the direction of each inner step (the support
    gradient, possibly modified by `GradientSharing`) into new fast weights.
    It is a Keras layer so that it can own meta-learned weights (such as
    `MetaSGD`'s learning rates): they are created by `build_for`, trained by
    the outer optimizer with the rest of the meta-model, and saved with it.
    It owns its learning rate; `MAML(inner_learning_rate=...)` is a
    shortcut that sets it.

    Subclasses set `string_id` and override `build_for` (optional) and
    `apply`. Register them with `keras.saving.register_keras_serializable`
    so that `.keras` files using them load again.

    Args:
        learning_rate: the inner step size, `>= 0`. Defaults to `None`:
            the meta-model's `inner_learning_rate`, or `0.01`.
        **kwargs: the `keras.layers.Layer` arguments (`name`, ...).
    """

    string_id: str = "inner_optimizer"
    #: Whether `apply` accepts `step` as a scalar integer tensor (a rolled
    #: inner loop, see `kerameta.MAML(unroll_inner_loop=...)`); `False`
    #: keeps a custom optimizer's `step` a Python `int`.
    tensor_steps: bool = False

    def __init__(self, learning_rate: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._learning_rate = None
        if learning_rate is not None:
            self.learning_rate = learning_rate

    @property
    def learning_rate(self) -> float:
        """The inner step size (`0.01` unless set)."""
        if self._learning_rate is None:
            return DEFAULT_LEARNING_RATE
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        try:
            value = check_number("inner_learning_rate", value, low=0.0)
        except ValueError:
            raise ValueError(
                "`inner_learning_rate` must be a finite, non-negative number. "
                f"Received: inner_learning_rate={value!r}"
            ) from None
        self._learning_rate = value

    @property
    def learning_rate_is_set(self) -> bool:
        """Whether `learning_rate` was given (rather than defaulted)."""
        return self._learning_rate is not None

    def build_for(self, shapes: list[tuple[int, ...]]) -> None:
        """Creates the optimizer's weights for the adapted tensors.

        Called once by the meta-model. The default creates nothing and
        records the shapes; an override should call
        `super().build_for(shapes)`.

        Args:
            shapes: the shapes of the adapted weights, in order.
        """
        # Keras's `summary()` reads a layer's output shape from
        # `compute_output_shape(**_build_shapes_dict)`: the optimizer's row
        # then lists the shapes of the weights it steps, not "?".
        self._build_shapes_dict = {"shapes": [tuple(s) for s in shapes]}
        self.built = True

    def compute_output_shape(
        self, shapes: list[tuple[int, ...]]
    ) -> list[tuple[int, ...]]:
        """The fast weights after a step: shaped like the adapted weights."""
        return [tuple(s) for s in shapes]

    def get_build_config(self) -> None:
        """`None`: the meta-model builds its inner optimizer (`build_for`)."""
        return None

    def apply(
        self,
        fast: list[Tensor],
        directions: list[Tensor],
        step: int,
        values: list[Tensor],
    ) -> list[Tensor]:
        """Returns the fast weights after one inner step.

        Args:
            fast: the fast weights, each with a leading task axis.
            directions: the step directions, shaped like `fast`.
            step: the index of the inner step, from 0: an `int`, or a
                scalar integer tensor if `tensor_steps` is `True` and the
                inner loop is rolled.
            values: the current values of this optimizer's trainable
                weights (use them, not the variables, so that the
                meta-gradient reaches them).

        Returns:
            A list like `fast`.
        """
        raise NotImplementedError

    @property
    def learns_rates(self) -> bool:
        """Whether the optimizer has meta-learned weights."""
        return bool(self.trainable_weights)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["learning_rate"] = self._learning_rate
        return config
