"""`MetaSGD`: a meta-learned learning rate for every adapted weight."""

from typing import Any

import keras

from kerameta.src.api_export import kerameta_export
from kerameta.src.inner_optimizers.inner_optimizer import InnerOptimizer


@kerameta_export
class MetaSGD(InnerOptimizer):
    """Meta-SGD: a meta-learned learning rate for every adapted weight.

    Each inner step is `fast = fast - rates * direction`, element-wise, with
    one rate tensor shaped like each adapted weight. The rates are trainable
    weights of the meta-model: the outer optimizer learns them with the
    initial weights, from the exact meta-gradient (or, with a first-order
    meta-gradient, from the first-order one, which still reaches them
    because the step is linear in the rates). `learning_rate` only
    initializes them, unless `initializer` is given.

    String id: `"meta_sgd"`.

    Args:
        initializer: the initializer of the rates. Defaults to `None`: every
            rate starts at the meta-model's `inner_learning_rate`, so
            training starts exactly as MAML. The paper draws them from
            `keras.initializers.RandomUniform(0.005, 0.1)`.
        learning_rate: the rates' initial value. Defaults to `None`: the
            meta-model's `inner_learning_rate`, or `0.01`.

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
    tensor_steps = True

    def __init__(
        self,
        initializer: Any = None,
        learning_rate: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.initializer = (
            None if initializer is None else keras.initializers.get(initializer)
        )
        self.rates = []

    def build_for(self, shapes):
        if self.built:
            return
        initializer = self.initializer or keras.initializers.Constant(
            self.learning_rate
        )
        self.rates = [
            self.add_weight(
                shape=shape, initializer=initializer, name=f"rate_{index}"
            )
            for index, shape in enumerate(shapes)
        ]
        super().build_for(shapes)

    def apply(self, fast, directions, step, values):
        del step
        return [f - a * d for f, a, d in zip(fast, values, directions)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["initializer"] = (
            None
            if self.initializer is None
            else keras.initializers.serialize(self.initializer)
        )
        return config
