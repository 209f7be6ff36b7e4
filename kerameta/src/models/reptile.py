"""`Reptile`: first-order meta-learning by moving towards adapted weights."""

from typing import Any

import keras

from kerameta.src.api_export import kerameta_export
from kerameta.src.models.meta_model import MetaModel


@kerameta_export
class Reptile(MetaModel):
    """Reptile: meta-learns an initialization by moving it towards the
    weights each task adapts to.

    `Reptile` shares everything with `kerameta.MAML` (data format, `fit`,
    `evaluate`, `predict`, `adapt`, saving, ANIL's `adapted_layers`,
    gradient sharing, task weighting, the CML co-learner) except the outer
    rule, `kerameta.outer_rules.ReptileRule`. After the inner loop on each
    task's support set, the outer optimizer receives the pseudo-gradient
    `sum_i w_i * (initial - adapted_i)`, with `w_i = 1 / tasks` (or the
    weights of a `task_weighting` such as `"gradient_agreement"`), instead
    of a differentiated query loss. No second-order graph and no query gradient
    are needed; the query set only scores the adaptation (the logged
    `loss`).

    With `keras.optimizers.SGD(learning_rate=epsilon)` as the outer
    optimizer, one step is the paper's `initial += epsilon * (mean adapted
    - initial)`; the paper anneals `epsilon` linearly from 1 to 0 (use a
    `keras.optimizers.schedules.PolynomialDecay`). Adam on the
    pseudo-gradient also works.

    Composition: gradient sharing's scales get no meta-gradient under
    Reptile, so they stay at their initial values (set them with
    `GradientSharing(concurrent_initial=...)`); a co-learner's loss adds its
    first-order gradient (through the adapted weights, with their
    dependence on the initial weights taken as the identity). Meta-SGD's
    rates would get no gradient, so `inner_optimizer="meta_sgd"` is refused.

    Args:
        model: a built `keras.Model`.
        inner_steps: inner SGD steps per task. Defaults to `5`.
        inner_learning_rate: inner step size. Defaults to `None`: the
            inner optimizer's `learning_rate` (`0.01` unless set).
        evaluation_inner_steps: inner steps in `evaluate`, `predict` and
            `adapt`. Defaults to `inner_steps`.
        vectorize_tasks: as in `kerameta.MAML`.
        inner_optimizer: `"sgd"` or an `InnerOptimizer` without trainable
            weights. Defaults to `"sgd"`.
        adapted_layers: as in `kerameta.MAML`: the layers the inner loop
            adapts (the others get a zero pseudo-gradient).
        adapt_batch_normalization: as in `kerameta.MAML`.
        gradient_sharing: as in `kerameta.MAML` (fixed scales).
        task_weighting: as in `kerameta.MAML`.
        co_learner: as in `kerameta.MAML`.
        unroll_inner_loop: as in `kerameta.MAML`.
        accumulate_tasks: as in `kerameta.MAML`.
        **kwargs: `name` and the other `keras.Model` arguments.

    Example:

    ```python
    reptile = kerameta.Reptile(net, inner_steps=5, inner_learning_rate=0.02)
    reptile.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    reptile.fit(tasks, epochs=1)
    ```

    Reference:

    - [Nichol et al., 2018. On First-Order Meta-Learning
      Algorithms](https://arxiv.org/abs/1803.02999)
    """

    def __init__(
        self,
        model: keras.Model,
        inner_steps: int = 5,
        inner_learning_rate: float | None = None,
        evaluation_inner_steps: int | None = None,
        vectorize_tasks: str | bool = "auto",
        inner_optimizer: Any = "sgd",
        adapted_layers: list[str] | None = None,
        adapt_batch_normalization: bool = True,
        gradient_sharing: Any = None,
        task_weighting: Any = None,
        co_learner: Any = None,
        unroll_inner_loop: str | bool = "auto",
        accumulate_tasks: str | bool = "auto",
        **kwargs: Any,
    ) -> None:
        for fixed in ("meta_gradient", "outer_rule"):
            if fixed in kwargs:
                raise ValueError(
                    "`Reptile` has its own first-order outer rule and takes "
                    f"no `{fixed}`. Use `kerameta.MAML` to choose one. "
                    f"Received: {fixed}={kwargs[fixed]!r}"
                )
        super().__init__(
            model,
            inner_steps=inner_steps,
            inner_learning_rate=inner_learning_rate,
            evaluation_inner_steps=evaluation_inner_steps,
            meta_gradient="first_order",
            outer_rule="reptile",
            vectorize_tasks=vectorize_tasks,
            inner_optimizer=inner_optimizer,
            adapted_layers=adapted_layers,
            adapt_batch_normalization=adapt_batch_normalization,
            gradient_sharing=gradient_sharing,
            task_weighting=task_weighting,
            co_learner=co_learner,
            unroll_inner_loop=unroll_inner_loop,
            accumulate_tasks=accumulate_tasks,
            **kwargs,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        # Fixed by the class: first-order, Reptile's rule.
        del config["meta_gradient"], config["outer_rule"]
        return config
