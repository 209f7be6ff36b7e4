"""Inner optimizers: how a task's fast weights step along a direction."""

from typing import Any

import keras
from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import get_component
from kerameta.src.types import Tensor


class InnerOptimizer(keras.layers.Layer):
    """Base class of the inner-loop update rules.

    An inner optimizer turns the direction of each inner step (the support
    gradient, possibly modified by `GradientSharing`) into new fast weights.
    It is a Keras layer so that it can own meta-learned weights (such as
    `MetaSGD`'s learning rates): they are created by `build_for`, trained by
    the outer optimizer with the rest of the meta-model, and saved with it.

    Subclasses set `string_id` and override `build_for` (optional) and
    `apply`. Register them with `keras.saving.register_keras_serializable`
    so that `.keras` files using them load again.
    """

    string_id: str = "inner_optimizer"

    def build_for(
        self, shapes: list[tuple[int, ...]], inner_learning_rate: float
    ) -> None:
        """Creates the optimizer's weights for the adapted tensors.

        Called once by the meta-model. The default creates nothing.

        Args:
            shapes: the shapes of the adapted weights, in order.
            inner_learning_rate: the meta-model's `inner_learning_rate`.
        """
        del shapes, inner_learning_rate
        self.built = True

    def apply(
        self,
        fast: list[Tensor],
        directions: list[Tensor],
        step: int,
        learning_rate: float,
        values: list[Tensor],
    ) -> list[Tensor]:
        """Returns the fast weights after one inner step.

        Args:
            fast: the fast weights, each with a leading task axis.
            directions: the step directions, shaped like `fast`.
            step: the index of the inner step, from 0.
            learning_rate: the meta-model's `inner_learning_rate`.
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


@kerameta_export
class SGD(InnerOptimizer):
    """Plain gradient descent with the meta-model's `inner_learning_rate`.

    Each inner step is `fast = fast - inner_learning_rate * direction`, as
    in MAML. This is the default.

    String id: `"sgd"`.
    """

    string_id = "sgd"

    def apply(self, fast, directions, step, learning_rate, values):
        del step, values
        return [
            f - ops.cast(learning_rate, f.dtype) * d
            for f, d in zip(fast, directions)
        ]


@kerameta_export
class MetaSGD(InnerOptimizer):
    """Meta-SGD: a meta-learned learning rate for every adapted weight.

    Each inner step is `fast = fast - rates * direction`, element-wise, with
    one rate tensor shaped like each adapted weight. The rates are trainable
    weights of the meta-model: the outer optimizer learns them with the
    initial weights, from the exact meta-gradient (or, with a first-order
    meta-gradient, from the first-order one, which still reaches them
    because the step is linear in the rates). `inner_learning_rate` is used
    only to initialize them, unless `initializer` is given.

    String id: `"meta_sgd"`.

    Args:
        initializer: the initializer of the rates. Defaults to `None`: every
            rate starts at the meta-model's `inner_learning_rate`, so
            training starts exactly as MAML. The paper draws them from
            `keras.initializers.RandomUniform(0.005, 0.1)`.

    Example:

    ```python
    maml = kerameta.MAML(model, inner_learning_rate=0.4,
                         inner_optimizer="meta_sgd")
    ```

    Reference:

    - [Li et al., 2017. Meta-SGD: Learning to Learn Quickly for Few-Shot
      Learning](https://arxiv.org/abs/1707.09835)
    """

    string_id = "meta_sgd"

    def __init__(self, initializer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initializer = (
            None if initializer is None else keras.initializers.get(initializer)
        )
        self.rates = []

    def build_for(self, shapes, inner_learning_rate):
        if self.built:
            return
        initializer = self.initializer or keras.initializers.Constant(
            inner_learning_rate
        )
        self.rates = [
            self.add_weight(
                shape=shape, initializer=initializer, name=f"rate_{index}"
            )
            for index, shape in enumerate(shapes)
        ]
        self.built = True

    def apply(self, fast, directions, step, learning_rate, values):
        del step, learning_rate
        return [f - a * d for f, a, d in zip(fast, values, directions)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["initializer"] = (
            None
            if self.initializer is None
            else keras.initializers.serialize(self.initializer)
        )
        return config


ALL_INNER_OPTIMIZERS = {cls.string_id: cls for cls in (SGD, MetaSGD)}


def get(identifier: Any) -> InnerOptimizer:
    """Returns an inner optimizer from a string id, config or instance."""
    if identifier is None:
        return SGD()
    return get_component(
        "inner_optimizer", identifier, InnerOptimizer, ALL_INNER_OPTIMIZERS
    )
