"""`SGD`: plain gradient descent, MAML's inner update."""

from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.inner_optimizers.inner_optimizer import InnerOptimizer


@kerameta_export
class SGD(InnerOptimizer):
    """Plain gradient descent: MAML's inner update, and the default.

    Each inner step is `fast = fast - learning_rate * direction`.

    String id: `"sgd"`.

    Args:
        learning_rate: the inner step size. Defaults to `None`: the
            meta-model's `inner_learning_rate`, or `0.01`.

    Example:

    ```python
    maml = kerameta.MAML(
        model, inner_optimizer=kerameta.inner_optimizers.SGD(0.4)
    )
    ```
    """

    string_id = "sgd"
    tensor_steps = True

    def apply(self, fast, directions, step, values):
        del step, values
        return [
            f - ops.convert_to_tensor(self.learning_rate, f.dtype) * d
            for f, d in zip(fast, directions)
        ]
