"""`MAML`: model-agnostic meta-learning through `model.fit`."""

from kerameta.src.api_export import kerameta_export
from kerameta.src.models.meta_model import MetaModel


@kerameta_export
class MAML(MetaModel):
    """Model-agnostic meta-learning (MAML) of any built Keras model.

    `MAML` wraps a Keras model and meta-learns its initial weights so that a
    few gradient steps on a new task's support set (the inner loop) give
    low loss on that task's query set. It is a `keras.Model`: `compile`
    takes the meta (outer) optimizer, the task loss and the query metrics;
    `fit` meta-trains on batches of tasks; `evaluate` adapts to each task's
    support set and scores its query set; `predict` returns the adapted
    query predictions; `adapt` returns an adapted copy of the model for one
    task. Weights never change in `evaluate`, `predict` or `adapt`.

    A batch of tasks is `(x, query_y)` with `x` a dict of `support_x`,
    `support_y` and `query_x`, each with a leading task axis. All tasks of a
    batch adapt together, step by step, vectorized over the task axis where
    the backend profits (`jax.vmap`, `torch.func`); when they are looped
    over and independent, `fit` accumulates their meta-gradients one task
    at a time (see `accumulate_tasks`).

    Batch normalization runs in training mode during adaptation and query
    prediction (each task uses its own batch statistics, as in MAML), and
    adaptation never changes the stored moving statistics.

    Args:
        model: a built `keras.Model`. Its trainable weights are
            meta-learned and adapted.
        inner_steps: number of inner-loop (adaptation) steps in training.
            Defaults to `1`.
        inner_learning_rate: step size of the inner-loop gradient descent: a
            shortcut that sets the inner optimizer's `learning_rate`.
            Defaults to `None`: the inner optimizer's (`0.01` unless set).
        evaluation_inner_steps: number of inner steps used by `evaluate`,
            `predict` and `adapt`; often larger than `inner_steps`.
            Defaults to `inner_steps`.
        meta_gradient: how the outer gradient flows through the inner loop:
            `"second_order"` (exact MAML), `"first_order"` (FOMAML),
            `"multi_step"` (one differentiable gradient per window of inner
            steps), `"implicit"` (implicit differentiation, memory
            independent of `inner_steps`; needs `adapted_layers` or
            `Implicit(proximal=...)`), `"checkpointed"` (exact, like
            `"second_order"`, with memory flat in `inner_steps`) or a
            `kerameta.meta_gradients.MetaGradient`. Defaults to
            `"second_order"`.
        vectorize_tasks: `"auto"`, `True` or `False`: whether tasks are
            vectorized (`vmap`) or looped over. `"auto"` chooses from the
            backend and the layers. Defaults to `"auto"`.
        inner_optimizer: the inner update rule: `"sgd"` (the default),
            `"meta_sgd"` (a meta-learned rate per weight, see
            `kerameta.MetaSGD`) or a `kerameta.inner_optimizers.
            InnerOptimizer`.
        adapted_layers: the names of the layers the inner loop adapts, e.g.
            `["head"]` for ANIL; the other weights are meta-learned but stay
            fixed during adaptation. Defaults to `None`: every layer.
        adapt_batch_normalization: whether the inner loop adapts batch
            normalization's scale and offset (when their layer is adapted).
            Defaults to `True`.
        gradient_sharing: `None`, `"gradient_sharing"` or a
            `kerameta.GradientSharing`: share inner gradients across the
            tasks of a batch with meta-learned scales. Defaults to `None`.
        task_weighting: how tasks weigh in the outer loss: `None` or
            `"mean"` (the default), `"gradient_agreement"` or a
            `kerameta.TaskWeighting`. Defaults to `None`.
        co_learner: `None` or a `kerameta.CoLearner`: an outer-loop-only
            head whose loss augments the meta-gradient (CML). Defaults to
            `None`.
        unroll_inner_loop: `"auto"`, `True` or `False`: whether the inner
            loop is traced as a Python loop, one copy of the step per inner
            step (`True`), or rolled into one compiled loop (`False`, as
            Keras RNNs' `unroll`), so that compile time and the compiled
            program stay flat in `inner_steps`. `"auto"` rolls on JAX and
            unrolls on TensorFlow, whose `tf.while_loop` ran a few inner
            steps about 3 times slower (roll it there for many steps).
            The loop is unrolled anyway with gradient sharing,
            `"multi_step"`, `"checkpointed"` and custom components that do
            not declare `tensor_steps`; PyTorch runs eagerly and always
            loops in Python. Defaults to `"auto"`.
        accumulate_tasks: `"auto"`, `True` or `False`: whether `fit`
            computes the meta-gradient one task at a time, each task's
            gradient summed before the next task adapts (`True`, as a
            per-task PyTorch loop does: memory of one task's activations),
            or all tasks together (`False`). Same meta-gradient either way.
            Needs independent tasks: no gradient sharing, a uniform task
            weighting, tasks not vectorized, one device. `"auto"`
            accumulates independent tasks on every backend. `evaluate` and
            `predict` follow it too: independent tasks are adapted and
            scored one at a time with `True`, and with `"auto"` on
            TensorFlow, where it keeps the traced graph one task long (a
            first Conv-4 `evaluate` of 20 tasks: 85 s down to 7 s); same
            results. Defaults to `"auto"`.
        **kwargs: `name` and the other `keras.Model` arguments.

    Example:

    ```python
    import keras
    import kerameta

    tasks = kerameta.data.SinusoidTasks(
        shots=10, query_shots=10, tasks_per_batch=25, num_batches=10, seed=0
    )
    net = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(1),
    ])
    maml = kerameta.MAML(net, inner_steps=1, inner_learning_rate=0.01)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse",
                 metrics=["mae"])
    maml.fit(tasks, epochs=1)
    ```

    The switches compose: for example Meta-SGD rates on an ANIL head, with
    gradient sharing, agreement weighting and a co-learner (on
    `kerameta.models.mlp`, whose layers are named `hidden1`, `hidden2` and
    `head`):

    ```python
    maml = kerameta.MAML(
        kerameta.models.mlp(),
        inner_steps=5,
        inner_optimizer="meta_sgd",
        adapted_layers=["head"],
        gradient_sharing=kerameta.GradientSharing(),
        task_weighting="gradient_agreement",
        co_learner=kerameta.CoLearner(keras.layers.Dense(1), "hidden2"),
    )
    ```

    Reference:

    - [Finn et al., 2017. Model-Agnostic Meta-Learning for Fast Adaptation
      of Deep Networks](https://arxiv.org/abs/1703.03400)
    """
