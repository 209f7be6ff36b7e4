"""Base class of the meta-gradient estimators."""

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from keras import ops

from kerameta.src.types import Tensor


@dataclass
class InnerLoop:
    """The pieces of one task batch's inner loop, for `run_inner_loop`.

    Attributes:
        gradients: `gradients(fast, create_graph, step=None) -> (losses,
            grads)`: every task's support loss and gradient at `fast` (lists
            of tensors with a leading task axis). With `create_graph=False`
            the gradients are constants of the meta-gradient. `step` (the
            inner step's index) picks the masks of random layers (Dropout):
            a call with the same `step` draws the same ones, which an
            estimator that recomputes a step needs; without it every call
            draws new ones.
        directions: `directions(grads, step) -> directions`: the step
            directions from the gradients (gradient sharing mixes the tasks'
            gradients here; the identity otherwise).
        update: `update(fast, directions, step) -> fast`: the inner
            optimizer's step.
        query_gradients: `query_gradients(fast) -> (losses, grads)`: every
            task's query loss and its gradient in the adapted weights, as
            constants (for estimators that need it, such as `Implicit`).
        hessian_vector_products: `hessian_vector_products(fast, vectors)
            -> products`: every task's support-loss Hessian (in the adapted
            weights, at `fast`) times `vectors`, as constants.
        values: the meta-learned values the three functions read, besides
            `fast` (e.g. the weights that are not adapted, Meta-SGD's
            rates), as a flat list of tensors. Optional.
        constants: the tensors they read that get no meta-gradient (the
            support sets, the model's non-trainable weights). Optional.
        rebuild: `rebuild(values, constants) -> InnerLoop`: the same inner
            loop, reading the given tensors in place of `values` and
            `constants`. Estimators that differentiate the inner loop by
            hand (`Checkpointed`) need it. Optional.
        repeat: `repeat(lower, upper, body, carry) -> carry`: runs
            `carry = body(step, carry)` for the steps `lower, ...,
            upper - 1`. A rolled loop (one traced body, `step` a scalar
            integer tensor: compile time flat in the steps) when the
            meta-model rolls its inner loop and every component accepts
            tensor steps; a Python loop (`step` an `int`) otherwise.
    """

    gradients: Callable
    directions: Callable
    update: Callable
    query_gradients: Callable | None = None
    hessian_vector_products: Callable | None = None
    values: list[Tensor] = field(default_factory=list)
    constants: list[Tensor] = field(default_factory=list)
    rebuild: Callable | None = None
    repeat: Callable = field(default=None)

    def __post_init__(self):
        if self.repeat is None:
            self.repeat = python_loop


def python_loop(lower, upper, body, carry):
    """`InnerLoop.repeat` unrolled: `step` is a Python `int`."""
    for step in range(lower, upper):
        carry = body(step, carry)
    return carry


class MetaGradient:
    """How the meta-gradient flows back through the inner loop.

    A meta-gradient estimator decides which derivatives of the inner loop
    the outer (meta) gradient sees. Three class attributes describe it:

    - `string_id`: its string id, as accepted by
      `kerameta.MAML(meta_gradient=...)`.
    - `create_graph`: whether the inner gradients must themselves be
      differentiable (`True` for the exact second-order gradient). When
      `False`, the inner loop runs on detached gradients, which is cheaper.
    - `second_derivatives`: whether the meta-gradient needs second
      derivatives at all (`False` only for first-order estimators).

    and at most three hooks: `inner_gradients` transforms each inner step's
    gradients (e.g. stops their gradient, as `FirstOrder` does);
    `run_inner_loop` replaces the whole loop (`MultiStep`, `Checkpointed`,
    `Implicit`); `outer_terms` adds per-task terms to the meta-objective
    (`Implicit`). What an estimator cannot be combined with is declared in
    one table, `kerameta.src.engine.composition`, not in the estimator.

    To use a custom estimator, pass an instance: `MAML(meta_gradient=
    MyEstimator())`. Decorate the class with
    `keras.saving.register_keras_serializable()` so that `.keras` files
    that use it can be loaded. The docs' "Writing your own estimator"
    shows one in full.
    """

    string_id: str = "meta_gradient"
    create_graph: bool = True
    #: Whether the estimator differentiates twice (second derivatives).
    second_derivatives: bool = True
    #: Whether `inner_gradients` accepts `step` as a scalar integer tensor,
    #: which lets the default `run_inner_loop` roll the inner loop (see
    #: `kerameta.MAML(unroll_inner_loop=...)`). `False` keeps a custom
    #: estimator's `step` a Python `int`.
    tensor_steps: bool = False

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

    def run_inner_loop(
        self, loop: InnerLoop, fast: list[Tensor], inner_steps: int
    ) -> tuple[list[Tensor], Tensor | None]:
        """Runs the inner loop of a batch of tasks.

        The default takes `inner_steps` steps, each from a fresh support
        gradient (built with `create_graph`) passed through
        `inner_gradients`. Override it to change which gradients are
        computed and how the meta-gradient flows through them.

        Args:
            loop: the batch's `InnerLoop`.
            fast: the initial fast weights, with a leading task axis.
            inner_steps: the number of inner steps.

        Returns:
            `(fast, losses)`: the adapted weights and the support losses of
            the last gradient computed (`None` for zero steps).
        """
        if inner_steps == 0:
            return fast, None
        repeat = loop.repeat if self.tensor_steps else python_loop

        def step_body(step, carry):
            fast, _ = carry
            losses, grads = loop.gradients(fast, self.create_graph, step)
            grads = self.inner_gradients(grads, step)
            fast = loop.update(fast, loop.directions(grads, step), step)
            return fast, losses

        # The first step outside the loop gives the losses' shape and dtype
        # (a rolled loop's carry keeps both).
        carry = step_body(0, (fast, None))
        return repeat(1, inner_steps, step_body, carry)

    def check_inner_steps(self, inner_steps: int) -> None:
        """Raises if the estimator cannot run `inner_steps` training steps."""
        del inner_steps

    def outer_terms(
        self, loop: InnerLoop, initial_fast: list[Tensor], fast: list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Per-task terms added to the query losses of the meta-objective.

        Called after `run_inner_loop` when meta-training. An estimator whose
        meta-gradient is not the derivative of the query losses through the
        inner loop (such as `Implicit`) returns terms whose gradient
        supplies the rest; their values are not logged as loss.

        Args:
            loop: the batch's `InnerLoop`.
            initial_fast: the initial fast weights (differentiable in the
                meta-learned weights).
            fast: the adapted weights `run_inner_loop` returned.

        Returns:
            `None` (the default: nothing to add), or `(terms, logs)`: a
            `(tasks,)` tensor and a dict of scalar tensors to log, keyed by
            the names in `log_names`.
        """
        del loop, initial_fast, fast
        return None

    #: The names of the scalars `outer_terms` logs (each becomes a metric).
    log_names: tuple[str, ...] = ()

    def check_logs(self, logs: dict[str, Any]) -> str | None:
        """A warning for `fit` from an epoch's logs, or `None`."""
        del logs
        return None

    @property
    def name(self) -> str:
        """The string id (an alias of `string_id`)."""
        return self.string_id

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MetaGradient":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


def stop_gradients(tensors: list[Tensor]) -> list[Tensor]:
    return [ops.stop_gradient(t) for t in tensors]
