"""`GradientAgreement`: tasks that agree with the batch weigh more."""

import keras
from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import check_choice
from kerameta.src.checks import check_number
from kerameta.src.task_weightings.task_weighting import TaskWeighting

_FORMS = ("paper", "book")


@kerameta_export
class GradientAgreement(TaskWeighting):
    """Gradient agreement: tasks that agree with the batch weigh more.

    Each task's update `u_i = initial - adapted` (flattened over the adapted
    weights: only the head for ANIL; with Meta-SGD it includes the learned
    rates; with gradient sharing it is the shared update) is compared with
    the batch: in the paper form, `w_i = <u_i, u_mean> / (sum_k
    |<u_k, u_mean>| + epsilon)` with `u_mean` the mean update, so that the
    absolute weights sum to 1 and a task that disagrees with the batch gets
    a negative weight. The "book" form uses all pairs: `w_i = sum_j <u_i,
    u_j> / (sum_k sum_j |<u_k, u_j>| + epsilon)`. The weights are constants
    of the meta-gradient. With one task, `w = 1`; when the mean update is
    zero, every weight is 0 (never NaN).

    With MAML the meta-objective is `sum_i w_i * L_i`; with `kerameta.
    Reptile` the update is `sum_i w_i * (initial - adapted_i)`.

    String id: `"gradient_agreement"`.

    Args:
        form: `"paper"` or `"book"` (see above). Defaults to `"paper"`.
        divide_by_batch: also divide the weights by the number of tasks (as
            the textbook code does; Adam absorbs the scale). Defaults to
            `False`.
        epsilon: added to the normalizer. Defaults to `1e-12`.
        apply_to: `"total"` or `"meta_loss"` (see `TaskWeighting`).

    Example:

    ```python
    maml = kerameta.MAML(model, task_weighting="gradient_agreement")
    ```

    Reference:

    - [Eshratifar et al., 2018. Gradient Agreement as an Optimization
      Objective for Meta-Learning](https://arxiv.org/abs/1810.08178). No
      official code exists; the paper form's normalizer is recalled from
      the paper, the book form follows "Hands-On Meta Learning with
      Python" (chapter 8).
    """

    string_id = "gradient_agreement"

    def __init__(
        self,
        form: str = "paper",
        divide_by_batch: bool = False,
        epsilon: float = 1e-12,
        apply_to: str = "total",
    ) -> None:
        super().__init__(apply_to=apply_to)
        self.form = check_choice("form", form, _FORMS)
        self.divide_by_batch = bool(divide_by_batch)
        self.epsilon = check_number("epsilon", epsilon, low=0.0)

    def weights(self, updates):
        num_tasks = updates[0].shape[0]
        if num_tasks == 1:
            # One task agrees with itself: exactly the base method.
            return ops.ones((1,), dtype=updates[0].dtype)
        # float32 at least (float16 would overflow); float64 stays float64.
        wide = keras.backend.standardize_dtype(updates[0].dtype) == "float64"
        compute_dtype = "float64" if wide else "float32"
        flat = ops.concatenate(
            [
                ops.reshape(ops.cast(u, compute_dtype), (num_tasks, -1))
                for u in updates
            ],
            axis=1,
        )
        flat = ops.stop_gradient(flat)
        if self.form == "paper":
            scores = ops.matmul(flat, ops.sum(flat, axis=0) / num_tasks)
            normalizer = ops.sum(ops.abs(scores))
        else:
            gram = ops.matmul(flat, ops.transpose(flat))
            scores = ops.sum(gram, axis=1)
            normalizer = ops.sum(ops.abs(gram))
        weights = scores / (normalizer + self.epsilon)
        if self.divide_by_batch:
            weights = weights / num_tasks
        return ops.cast(weights, updates[0].dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "form": self.form,
                "divide_by_batch": self.divide_by_batch,
                "epsilon": self.epsilon,
            }
        )
        return config
