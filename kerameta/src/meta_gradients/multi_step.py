"""Multi-step estimation of the meta-gradient."""

from typing import Any

from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import check_choice
from kerameta.src.checks import check_positive_int
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.meta_gradient import stop_gradients

_VARIANTS = ("forward", "straight_through")


@kerameta_export
class MultiStep(MetaGradient):
    """Multi-step estimation: one inner gradient reused over a window.

    The inner steps are grouped in windows of `window` steps (the last
    window is shorter when `window` does not divide `inner_steps`). Only the
    gradient at the start of each window is differentiable, so the backward
    pass stores and differentiates `ceil(inner_steps / window)` gradients
    instead of `inner_steps`: less time and memory than `SecondOrder`, at
    the cost of an estimated meta-gradient. `window=1` is exactly
    `SecondOrder`.

    Two variants:

    - `"forward"` (the default): the window-start gradient is reused for
      every step of the window, in the forward pass too. Only
      `ceil(inner_steps / window)` support gradients are computed, so time
      falls with the window; with plain SGD this equals
      `ceil(inner_steps / window)` steps of `window` times the learning rate
      (the steps differ only where per-step quantities exist, such as
      gradient sharing's per-step scales).
    - `"straight_through"`: the forward pass is exactly MAML's (a fresh,
      constant gradient at every step); the backward pass sees each window
      as one step along its window-start gradient, whose Jacobian is
      `I - (sum of the window's learning rates) * H` at the window start.
      The adapted weights and query loss equal MAML's; only the
      meta-gradient is estimated. All `inner_steps` gradients are still
      computed, so the saving is in the backward pass and its memory.

    With gradient sharing, the window-start gradients are shared. With a
    first-order meta-gradient this estimator is pointless: use
    `"first_order"`.

    String id: `"multi_step"`.

    Args:
        window: the number of inner steps per window, `>= 1`. Defaults to
            `2`. It may not exceed the meta-model's `inner_steps`.
        variant: `"forward"` or `"straight_through"`. Defaults to
            `"forward"`.

    Example:

    ```python
    maml = kerameta.MAML(
        model,
        inner_steps=10,
        meta_gradient=kerameta.meta_gradients.MultiStep(window=5),
    )
    ```

    Reference:

    - [Kim et al., 2020. Multi-step Estimation for Gradient-based
      Meta-learning](https://arxiv.org/abs/2006.04298). No code is public;
      both variants are kerameta's reading of the paper.
    """

    string_id = "multi_step"
    create_graph = True

    def __init__(self, window: int = 2, variant: str = "forward") -> None:
        self.window = check_positive_int("window", window)
        self.variant = check_choice("variant", variant, _VARIANTS)

    def check_inner_steps(self, inner_steps: int) -> None:
        if self.window > inner_steps:
            raise ValueError(
                f"The multi-step window ({self.window}) is longer than the "
                f"inner loop (inner_steps={inner_steps}). Use a window of at "
                f"most {inner_steps} steps (a window of 1 is exact "
                "second-order MAML)."
            )

    def run_inner_loop(self, loop, fast, inner_steps):
        if self.variant == "forward":
            return self._forward(loop, fast, inner_steps)
        return self._straight_through(loop, fast, inner_steps)

    def _forward(self, loop, fast, inner_steps):
        losses = None
        for step in range(inner_steps):
            if step % self.window == 0:
                losses, grads = loop.gradients(fast, True, step)
                directions = loop.directions(grads, step)
            fast = loop.update(fast, directions, step)
        return fast, losses

    def _straight_through(self, loop, fast, inner_steps):
        losses = None
        for step in range(inner_steps):
            if step % self.window == 0:
                # The window-start gradient, differentiable: the backward
                # pass sees the whole window as steps along it.
                losses, grads = loop.gradients(fast, True, step)
                directions = loop.directions(grads, step)
                exact = stop_gradients(fast)
                exact_directions = stop_gradients(directions)
                estimate = fast
            else:
                # The exact forward step, from a fresh constant gradient.
                losses, grads = loop.gradients(exact, False, step)
                exact_directions = stop_gradients(
                    loop.directions(stop_gradients(grads), step)
                )
            exact = stop_gradients(loop.update(exact, exact_directions, step))
            estimate = loop.update(estimate, directions, step)
            # Forward: the exact values; backward: the estimate's Jacobian.
            fast = [
                e + ops.stop_gradient(x - e) for e, x in zip(estimate, exact)
            ]
        return fast, losses

    def get_config(self) -> dict[str, Any]:
        return {"window": self.window, "variant": self.variant}

    def __repr__(self) -> str:
        return f"MultiStep(window={self.window}, variant={self.variant!r})"
