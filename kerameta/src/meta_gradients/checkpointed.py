"""Exact second-order meta-gradient with memory flat in the inner steps."""

import functools
import numbers
from typing import Any
from typing import NamedTuple

from keras import ops

from kerameta.src import backend as seam
from kerameta.src.api_export import kerameta_export
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.meta_gradient import stop_gradients

# Stored copies of the fast weights by default: see the class docstring.
DEFAULT_CHECKPOINTS = 4


@kerameta_export
class Checkpointed(MetaGradient):
    """Exact MAML meta-gradient that stores weights, not activations.

    The same meta-gradient as `SecondOrder`, computed by an explicit
    adjoint (backpropagation through the inner loop, one step at a time).
    The forward pass runs the inner loop without a graph and keeps the
    fast weights before a few of its steps (the checkpoints). The backward
    pass walks the steps in reverse: it recomputes the weights before step
    `k` from the nearest checkpoint, without a graph, then step `k` itself
    differentiably (one step's graph at a time), and takes its
    vector-Jacobian product, which for SGD turns the cotangent `v` of the
    weights after the step into `v - inner_learning_rate * H_k v` before
    it. The same products give the meta-gradient of every meta-learned
    value the step reads (the weights that are not adapted under
    `adapted_layers`, Meta-SGD's rates), summed over the steps.

    Which steps are stored and recomputed is the binomial schedule of
    Revolve (Griewank and Walther): for `checkpoints` copies of the
    weights and `inner_steps` steps, the one that recomputes the fewest
    steps (`kerameta.src.meta_gradients.checkpointed.checkpoint_schedule`).
    The default, 4 copies, keeps memory flat in the inner steps while
    recomputing little: nothing up to 4 steps, 22 steps at 20 (about one
    per step), 98 at 50 and 279 at 100. A count that grew with the steps
    (such as `sqrt(inner_steps)`) would save some of that time but let
    memory grow again; `None` stores every step's weights and recomputes
    none (memory linear in the steps).

    Cost: each inner step's support gradient is computed twice (once in
    the forward pass, once more in the backward pass before its
    Hessian-vector product), plus the recomputed steps, each one more
    support gradient without a graph: at 20 steps with 4 copies, 42
    support gradients without a graph (20 in the forward pass, 22
    recomputed) and 20 with their Hessian-vector products, against 20 and
    20 when every step is stored. Measured on the Conv-4 benchmark
    (`benchmarks/META_GRADIENT_MEMORY.md`, 5-way 1-shot, 4 tasks, a shared
    2-core CPU whose load makes times noisy): 5.0 s per meta-iteration on
    JAX at 20 steps, 3.5 s when every step was stored.
    Memory: `checkpoints` copies of the fast weights (per task) plus the
    one being differentiated and one inner step's graph, whatever the
    number of inner steps, instead of `SecondOrder`'s
    `O(inner_steps * activations)`; use it when many inner steps or large
    activations make `SecondOrder` run out of memory. Measured on the same
    benchmark, the memory one meta-iteration adds (peak resident memory)
    went from 49 MiB at 1 step to 56 MiB at 20 on JAX (1.12x; XLA's
    buffers: 48.6 and 53.8 MiB), against 81 MiB when every step was
    stored; on PyTorch from 35 to 42 MiB (1.21x; 147 MiB at 20 steps when
    every step was stored), most of the growth the C allocator's
    fragmentation; on TensorFlow from 32 to 39 MiB (1.21x; 83 when every
    step was stored, while its tasks still ran side by side). On a small
    conv net, TensorFlow's graph optimizer (Grappler) accounts for the
    growth that is left (see the benchmarks page).

    Works with every backend, vectorized or looped over tasks, with
    Meta-SGD, `adapted_layers` (ANIL), task weighting and the co-learner.
    Not supported, refused when the meta-model is built or compiled:
    gradient sharing (it mixes the tasks' gradients and records their batch
    means at every step, a side effect the recomputation would repeat; use
    `"second_order"` or `MultiStep` with it) and `jit_compile=True` on
    PyTorch (torch.compile does not trace the hand-written backward pass;
    PyTorch runs it eagerly). Evaluation (`evaluate`, `predict`, `adapt`)
    runs the inner loop without a graph. Layers that draw random numbers in
    training (`Dropout`) draw the same masks when a step is recomputed, so
    the meta-gradient stays exact with them.

    String id: `"checkpointed"`.

    Args:
        checkpoints: how many copies of the fast weights the forward pass
            stores for the backward pass (the initial weights count as
            one), a positive integer. Fewer copies recompute more steps:
            with 1, every step is recomputed from the initial weights
            (`inner_steps * (inner_steps - 1) / 2` steps). `None` stores
            the weights before every step and recomputes none. Defaults
            to `4`.

    Example:

    ```python
    maml = kerameta.MAML(
        model,
        inner_steps=20,
        meta_gradient=kerameta.meta_gradients.Checkpointed(checkpoints=4),
    )
    ```

    Reference:

    - [Finn et al., 2017](https://arxiv.org/abs/1703.03400) for the
      meta-gradient; [Griewank and Walther, 2000. Algorithm 799:
      Revolve](https://doi.org/10.1145/347837.347846) for checkpointing
      reverse-mode differentiation and its binomial schedule.
    """

    string_id = "checkpointed"
    create_graph = True

    def __init__(self, checkpoints: int | None = DEFAULT_CHECKPOINTS) -> None:
        if checkpoints is not None and (
            isinstance(checkpoints, bool)
            or not isinstance(checkpoints, numbers.Integral)
            or checkpoints < 1
        ):
            raise ValueError(
                "`checkpoints` is the number of copies of the fast weights "
                "the checkpointed meta-gradient stores (the initial weights "
                "count as one), so it must be a positive integer, or `None` "
                "to store the weights before every inner step. Received: "
                f"checkpoints={checkpoints!r}"
            )
        self.checkpoints = None if checkpoints is None else int(checkpoints)

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
        schedule = checkpoint_schedule(inner_steps, self.checkpoints)
        stored = set(schedule.stored)

        def forward(inputs, constants):
            fast, values = inputs[:num_fast], inputs[num_fast:]
            inner = loop.rebuild(values, constants)
            states, losses = {}, None
            for step in range(inner_steps):
                if step in stored:
                    states[step] = fast
                losses, fast = self._constant_step(inner, fast, step)
            return fast, [losses], (states, values)

        def backward(residuals, constants, cotangents):
            # `states` is the residuals' own dict: popping a state frees it
            # once its step is reversed (eager PyTorch holds what Python
            # references; a copy would keep every stored state to the end).
            states, values = residuals
            value_cotangents = [ops.zeros_like(v) for v in values]
            with seam.second_order_safe():
                for action, *steps in schedule.actions:
                    if action == "advance":
                        # Recomputed without a graph once the cotangents
                        # are known, so that it is not merged with (nor
                        # kept alive since) the forward pass.
                        start, stop = steps
                        states[stop] = seam.recompute(
                            self._advance(
                                loop, num_fast, constants, start, stop
                            ),
                            [*states[start], *values],
                            cotangents,
                        )
                        continue
                    (step,) = steps
                    step_cotangents = seam.vjp(
                        self._step_function(loop, num_fast, constants, step),
                        [*states.pop(step), *values],
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

    def _constant_step(self, inner, fast, step):
        """Inner step `step` without a graph: `(losses, fast)` after it."""
        losses, grads = inner.gradients(fast, False, step)
        grads = self.inner_gradients(stop_gradients(grads), step)
        directions = stop_gradients(inner.directions(grads, step))
        return losses, stop_gradients(inner.update(fast, directions, step))

    def _advance(self, loop, num_fast, constants, start, stop):
        """Steps `start` to `stop - 1` without a graph, as a function of
        `[*fast, *values]` (the fast weights before step `start`)."""

        def advance(inputs):
            fast, values = inputs[:num_fast], inputs[num_fast:]
            inner = loop.rebuild(values, constants)
            for step in range(start, stop):
                _, fast = self._constant_step(inner, fast, step)
            return fast

        return advance

    def _step_function(self, loop, num_fast, constants, step):
        """Inner step `step` as a function of `[*fast, *values]`."""

        def step_function(inputs):
            fast, values = inputs[:num_fast], inputs[num_fast:]
            inner = loop.rebuild(values, constants)
            _, grads = inner.gradients(fast, True, step)
            grads = self.inner_gradients(grads, step)
            return inner.update(fast, inner.directions(grads, step), step)

        return step_function

    def get_config(self) -> dict[str, Any]:
        return {"checkpoints": self.checkpoints}

    def __repr__(self) -> str:
        return f"Checkpointed(checkpoints={self.checkpoints})"


class Schedule(NamedTuple):
    """A checkpointing schedule of `inner_steps` steps.

    Attributes:
        stored: the steps whose input fast weights the forward pass stores,
            in increasing order (step 0, the initial weights, first).
        actions: what the backward pass does, in order: `("advance",
            start, stop)` recomputes the fast weights before step `stop`
            from those before step `start` (stored or recomputed earlier),
            without a graph, and keeps them; `("reverse", step)` takes the
            vector-Jacobian product of step `step` from the weights before
            it, which are then no longer needed. Every step is reversed
            once, from the last to the first.
    """

    stored: tuple[int, ...]
    actions: tuple[tuple, ...]

    @property
    def recomputed_steps(self) -> int:
        """The inner steps the backward pass recomputes without a graph."""
        return sum(a[2] - a[1] for a in self.actions if a[0] == "advance")


def checkpoint_schedule(inner_steps: int, checkpoints: int | None) -> Schedule:
    """The binomial (Revolve) schedule of `inner_steps` steps that holds
    at most `checkpoints` stored copies of the fast weights (plus the one
    being differentiated) and recomputes the fewest steps.

    `None`, or at least `inner_steps` copies: every step's input is stored
    and nothing is recomputed. One copy: every step is recomputed from the
    initial weights (`inner_steps * (inner_steps - 1) / 2` steps).

    Args:
        inner_steps: the number of inner steps, `>= 1`.
        checkpoints: the number of stored copies, `>= 1`, or `None`.

    Returns:
        A `Schedule`.
    """
    if checkpoints is None or checkpoints >= inner_steps:
        steps = range(inner_steps)
        return Schedule(
            tuple(steps), tuple(("reverse", step) for step in reversed(steps))
        )
    slots = checkpoints
    fresh, spine = _best_splits(inner_steps, slots)
    stored, actions = [0], []
    # The forward pass runs every step: on the "spine" (the range that
    # ends at the last step) its first segment's end is stored for free.
    # `todo` is a stack: ("reverse", ...) and ("advance", ...) are actions,
    # ("spine" / "fresh", start, stop, slots) ranges whose start is stored.
    todo = [("spine", 0, inner_steps, slots)]
    while todo:
        kind, *args = todo.pop()
        if kind in ("advance", "reverse"):
            actions.append((kind, *args))
            continue
        start, stop, free = args
        length = stop - start
        if length == 1:
            actions.append(("reverse", start))
        elif free == 1:
            # Every step of the range from its start, last first.
            for step in reversed(range(start + 1, stop)):
                actions += [("advance", start, step), ("reverse", step)]
            actions.append(("reverse", start))
        else:
            split = start + (spine if kind == "spine" else fresh)[free][length]
            if kind == "spine":
                stored.append(split)
            else:
                actions.append(("advance", start, split))
            # The later part with one slot fewer, then the earlier part.
            todo += [
                ("fresh", start, split, free),
                (kind, split, stop, free - 1),
            ]
    return Schedule(tuple(stored), tuple(actions))


@functools.lru_cache(maxsize=16)
def _best_splits(steps: int, slots: int) -> tuple[list, list]:
    """The first segment's length of each range of `n <= steps` steps with
    `c <= slots` copies, indexed `[c][n]`, that minimizes the recomputed
    steps: for a range the forward pass has not stored in ("fresh",
    reaching the split costs its length) and for the spine (free)."""
    cost = {"fresh": [[0] * (steps + 1)], "spine": [[0] * (steps + 1)]}
    split = {"fresh": [[1] * (steps + 1)], "spine": [[1] * (steps + 1)]}
    for c in range(1, slots + 1):
        for kind in ("fresh", "spine"):
            cost[kind].append([0] * (steps + 1))
            split[kind].append([1] * (steps + 1))
        for n in range(2, steps + 1):
            if c == 1:
                cost["fresh"][c][n] = cost["spine"][c][n] = n * (n - 1) // 2
                continue
            for kind in ("fresh", "spine"):
                toll = 1 if kind == "fresh" else 0
                cost[kind][c][n], split[kind][c][n] = min(
                    (
                        toll * j
                        + cost[kind][c - 1][n - j]
                        + cost["fresh"][c][j],
                        j,
                    )
                    for j in range(1, n)
                )
    return split["fresh"], split["spine"]
