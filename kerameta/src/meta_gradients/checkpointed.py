"""Exact second-order meta-gradient with memory flat in the inner steps."""

from keras import ops

from kerameta.src import backend as seam
from kerameta.src.api_export import kerameta_export
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.meta_gradient import stop_gradients


@kerameta_export
class Checkpointed(MetaGradient):
    """Exact MAML meta-gradient that stores weights, not activations.

    The same meta-gradient as `SecondOrder`, computed by an explicit
    adjoint (backpropagation through the inner loop, one step at a time).
    The forward pass runs the inner loop without a graph and keeps only
    the fast weights before each step. The backward pass walks the steps
    in reverse: it recomputes step `k` from its stored weights, this time
    differentiably (one step's graph at a time), and takes its
    vector-Jacobian product, which for SGD turns the cotangent `v` of the
    weights after the step into `v - inner_learning_rate * H_k v` before
    it. The same products give the meta-gradient of every meta-learned
    value the step reads (the weights that are not adapted under
    `adapted_layers`, Meta-SGD's rates), summed over the steps.

    Cost: each inner step's support gradient is computed twice (once in
    the forward pass, once more in the backward pass before its
    Hessian-vector product), about one extra forward and backward pass of
    the support set per inner step compared with `SecondOrder`.
    Memory: `O(inner_steps * parameters)` for the stored fast weights
    (per task) plus one inner step's graph, instead of `SecondOrder`'s
    `O(inner_steps * activations)`; use it when many inner steps or large
    activations make `SecondOrder` run out of memory.

    Works with every backend, vectorized or looped over tasks, with
    Meta-SGD, `adapted_layers` (ANIL), task weighting and the co-learner.
    Not supported, refused when the meta-model is built or compiled:
    gradient sharing (it mixes the tasks' gradients and records their batch
    means at every step, a side effect the recomputation would repeat; use
    `"second_order"` or `MultiStep` with it) and `jit_compile=True` on
    PyTorch (torch.compile does not trace the hand-written backward pass;
    PyTorch runs it eagerly). Evaluation (`evaluate`, `predict`, `adapt`)
    runs the inner loop without a graph. Layers that draw random numbers in
    training (`Dropout`) draw again when a step is recomputed, so their
    meta-gradient is not exact; MAML networks rarely use them.

    String id: `"checkpointed"`.

    Example:

    ```python
    maml = kerameta.MAML(
        model,
        inner_steps=20,
        meta_gradient=kerameta.meta_gradients.Checkpointed(),
    )
    ```

    Reference:

    - [Finn et al., 2017](https://arxiv.org/abs/1703.03400) for the
      meta-gradient; [Griewank and Walther, 2000. Algorithm 799:
      Revolve](https://doi.org/10.1145/347837.347846) for checkpointing
      reverse-mode differentiation.
    """

    string_id = "checkpointed"
    create_graph = True

    def run_inner_loop(self, loop, fast, inner_steps):
        if inner_steps == 0:
            return fast, None
        if loop.rebuild is None:
            raise ValueError(
                "The checkpointed meta-gradient recomputes inner steps from "
                "explicit inputs, so it needs an `InnerLoop` with `values`, "
                "`constants` and `rebuild`. Received an `InnerLoop` without "
                "`rebuild`."
            )
        num_fast = len(fast)

        def forward(inputs, constants):
            fast, values = inputs[:num_fast], inputs[num_fast:]
            inner = loop.rebuild(values, constants)
            trajectory, losses = [], None
            for step in range(inner_steps):
                trajectory.append(fast)
                losses, grads = inner.gradients(fast, False, step)
                grads = self.inner_gradients(stop_gradients(grads), step)
                directions = stop_gradients(inner.directions(grads, step))
                fast = stop_gradients(inner.update(fast, directions, step))
            return fast, [losses], (trajectory, values)

        def backward(residuals, constants, cotangents):
            trajectory, values = residuals
            value_cotangents = [ops.zeros_like(v) for v in values]
            with seam.second_order_safe():
                for step in reversed(range(inner_steps)):
                    step_cotangents = seam.vjp(
                        self._step_function(loop, num_fast, constants, step),
                        [*trajectory[step], *values],
                        cotangents,
                    )
                    cotangents = step_cotangents[:num_fast]
                    value_cotangents = [
                        total + c
                        for total, c in zip(
                            value_cotangents, step_cotangents[num_fast:]
                        )
                    ]
            return [*cotangents, *value_cotangents]

        fast, (losses,) = seam.custom_gradient(forward, backward)(
            [*fast, *loop.values], loop.constants
        )
        return fast, losses

    def _step_function(self, loop, num_fast, constants, step):
        """Inner step `step` as a function of `[*fast, *values]`."""

        def step_function(inputs):
            fast, values = inputs[:num_fast], inputs[num_fast:]
            inner = loop.rebuild(values, constants)
            _, grads = inner.gradients(fast, True, step)
            grads = self.inner_gradients(grads, step)
            return inner.update(fast, inner.directions(grads, step), step)

        return step_function
