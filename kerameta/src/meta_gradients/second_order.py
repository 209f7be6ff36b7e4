from kerameta.src.api_export import kerameta_export
from kerameta.src.meta_gradients.meta_gradient import MetaGradient


@kerameta_export
class SecondOrder(MetaGradient):
    """Exact MAML meta-gradient, differentiating through every inner step.

    The meta-gradient of a task is the product of the inner-step Jacobians
    `(I - inner_learning_rate * H_k)`, one per inner step, applied to the
    gradient of the query loss at the adapted weights (`H_k` is the Hessian
    of the support loss at step `k`). It costs one Hessian-vector product per
    inner step in the backward pass, and the memory of the whole inner
    trajectory.

    String id: `"second_order"`.

    Example:

    ```python
    maml = kerameta.MAML(
        model, meta_gradient=kerameta.meta_gradients.SecondOrder()
    )
    ```

    Reference:

    - [Finn et al., 2017](https://arxiv.org/abs/1703.03400)
    """

    string_id = "second_order"
    tensor_steps = True
    create_graph = True
