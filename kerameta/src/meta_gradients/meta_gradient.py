"""Base class of the meta-gradient estimators."""

from typing import Any

from keras import ops

from kerameta.src.types import Tensor


class MetaGradient:
    """How the meta-gradient flows back through the inner loop.

    A meta-gradient estimator decides which derivatives of the inner loop
    the outer (meta) gradient sees. Two class attributes define it:

    - `name`: its string id, as accepted by
      `kerameta.MAML(meta_gradient=...)`.
    - `create_graph`: whether the inner gradients must themselves be
      differentiable (`True` for the exact second-order gradient). When
      `False`, the inner loop runs on detached gradients, which is cheaper.

    `inner_gradients` receives the gradients of every task at one inner step
    and returns the gradients that the inner SGD step applies; override it
    to transform them (e.g. stop their gradient, as `FirstOrder` does).

    To use a custom estimator, pass an instance: `MAML(meta_gradient=
    MyEstimator())`. Decorate the class with
    `keras.saving.register_keras_serializable()` so that `.keras` files
    that use it can be loaded.
    """

    name: str = "meta_gradient"
    create_graph: bool = True

    def inner_gradients(self, grads: list[Tensor], step: int) -> list[Tensor]:
        """Returns the inner gradients to apply at inner step `step`.

        Args:
            grads: one tensor per adapted variable, each with a leading task
                axis.
            step: the index of the inner step, from 0.

        Returns:
            A list like `grads`.
        """
        del step
        return grads

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MetaGradient":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


def stop_gradients(tensors: list[Tensor]) -> list[Tensor]:
    return [ops.stop_gradient(t) for t in tensors]
