from kerameta.src.api_export import kerameta_export
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.meta_gradient import stop_gradients


@kerameta_export
class FirstOrder(MetaGradient):
    """First-order MAML (FOMAML): inner gradients are treated as constants.

    Each inner gradient goes through a stop-gradient, so the Jacobian of the
    inner loop is taken to be the identity and the meta-gradient of a task
    is the gradient of its query loss at the adapted weights. No
    second-order graph is built: faster and lighter than `SecondOrder`.

    String id: `"first_order"`.

    Example:

    ```python
    maml = kerameta.MAML(model, meta_gradient="first_order")
    ```

    Reference:

    - [Finn et al., 2017](https://arxiv.org/abs/1703.03400), section 5.2
    """

    string_id = "first_order"
    create_graph = False
    second_derivatives = False
    tensor_steps = True

    def inner_gradients(self, grads, step):
        del step
        return stop_gradients(grads)
