"""The inner loop: every task of a batch adapts, step by step, together.

`adapt_batch` receives plain objects (the resolved `Components`, the
meta-learned values, an episode) and never the meta-model, so this module
imports nothing from `models/`.
"""

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras
from keras import ops

from kerameta.src import backend as seam
from kerameta.src import compat
from kerameta.src.engine.parameters import ParameterLayout
from kerameta.src.engine.randomness import QUERY
from kerameta.src.engine.randomness import RandomLayers
from kerameta.src.episodes import Episode
from kerameta.src.meta_gradients.meta_gradient import InnerLoop
from kerameta.src.meta_gradients.meta_gradient import python_loop
from kerameta.src.types import Tensor


@dataclass
class Components:
    """A meta-model's resolved parts, as the step code uses them.

    Attributes:
        model: the wrapped network (run with `stateless_call`).
        task_loss: `task_loss(y_true, y_pred)`, the compiled task loss.
        layout: where each weight's value sits, and the adapted split.
        inner_optimizer, meta_gradient, gradient_sharing, task_weighting,
            co_learner, outer_rule: the components (`gradient_sharing` and
            `co_learner` may be `None`).
        vectorize: whether tasks are vectorized (`vmap`) or looped over.
        random: the network's random layers (see `engine.randomness`), or
            `None` if it has none.
        call: `call(params, non_trainable, x)`: the network's stateless
            call in training mode (see `models.components.training_call`).
        unroll: whether the inner loop is a Python loop even where it
            could be rolled (see `MAML(unroll_inner_loop=...)`).
        task: `(index, count)` while one task of a batch of `count` is
            adapted alone (see `engine.accumulation`); `None` for the
            whole batch.
    """

    model: keras.Model
    task_loss: Callable[[Tensor, Tensor], Tensor]
    layout: ParameterLayout
    inner_optimizer: Any
    meta_gradient: Any
    gradient_sharing: Any
    task_weighting: Any
    co_learner: Any
    outer_rule: Any
    vectorize: bool
    call: Callable
    random: RandomLayers | None = None
    unroll: bool = False
    task: tuple[Any, int] | None = None

    def seeded(self, non_trainable, keys):
        """`(non_trainable, scope)` for a call that draws with `keys`.

        `keys` are one task's seed-generator states for this call site
        (`None` without random layers); the scope seeds what the backend's
        unseeded random ops draw from (PyTorch's global generator).
        """
        if keys is None:
            return non_trainable, contextlib.nullcontext()
        return self.random.substitute(non_trainable, keys), seam.random_scope(
            keys
        )

    def forward(self, params, non_trainable, x, keys=None):
        """The network's predictions with the given weight values.

        Batch normalization is transductive: each task is normalized with
        its own batch statistics, and the returned moving statistics are
        discarded, so adaptation never changes them.
        """
        non_trainable, scope = self.seeded(non_trainable, keys)
        with scope:
            return self.call(params, non_trainable, x)

    def mean_task_loss(self, y_true, y_pred):
        # In `floatx` at least, as Keras's losses (float32 under a mixed
        # policy), and not with `ops.mean`: on JAX and torch it averages
        # float64 in float32. Whole under `tf.distribute`, where Keras's
        # losses divide by the replicas (see `engine.replicas`).
        y_pred = keras.tree.map_structure(_at_least_floatx, y_pred)
        with compat.unscaled_losses():
            losses = self.task_loss(y_true, y_pred)
        return ops.sum(losses) / ops.sum(ops.ones_like(losses))

    def support_loss(self, fast, shared, x, y, keys=None):
        """One task's loss with adapted weights `fast`."""
        frozen, non_trainable = shared[:2]
        params = self.layout.merge(fast, frozen)
        y_pred = self.forward(params, non_trainable, x, keys)
        return self.mean_task_loss(y, y_pred)

    def query_predictions(self, fast, shared, x, keys=None):
        frozen, non_trainable = shared[:2]
        params = self.layout.merge(fast, frozen)
        return self.forward(params, non_trainable, x, keys)

    def task_keys(self, non_trainable, num_tasks, salt):
        """The per-task seed keys of call site `salt`, as extra task args.

        Returns `[]` without random layers, else `[keys]` with `keys`
        shaped `(tasks, generators, 2)` (see `engine.randomness`).
        """
        if self.random is None:
            return []
        return [self.random.keys(non_trainable, num_tasks, salt, self.task)]

    def rolls(self) -> bool:
        """Whether the inner loop may be rolled (`InnerLoop.repeat`).

        Gradient sharing records each step's batch means (a Python dict,
        by step), so it keeps the loop unrolled.
        """
        return (
            not self.unroll
            and self.gradient_sharing is None
            and self.inner_optimizer.tensor_steps
        )


def _at_least_floatx(x: Tensor) -> Tensor:
    half = ("float16", "bfloat16")
    floatx = keras.config.floatx()
    if keras.backend.standardize_dtype(x.dtype) in half and floatx not in half:
        return ops.cast(x, floatx)
    return x


@dataclass
class Adaptation:
    """The result of the inner loop on a batch of tasks.

    Attributes:
        fast: the adapted weights, each with a leading task axis (only the
            adapted ones).
        support_losses: the support losses at the last inner step, per
            task (`None` for zero steps).
        batch_means: for gradient sharing, the batch-mean support gradients
            of each inner step that computed one, `{step: means}` (the
            history's signal); empty otherwise.
        outer_terms: the estimator's per-task terms of the meta-objective
            (see `MetaGradient.outer_terms`), or `None`.
        logs: the estimator's scalars to log, by name.
    """

    fast: list[Tensor]
    support_losses: Tensor | None
    batch_means: dict[int, list[Tensor]] = field(default_factory=dict)
    outer_terms: Tensor | None = None
    logs: dict[str, Tensor] = field(default_factory=dict)


def _split(values: list, sizes: list[int]) -> list[list]:
    """Cuts `values` into consecutive lists of `sizes` (and the rest)."""
    parts = []
    for size in sizes:
        parts.append(list(values[:size]))
        values = values[size:]
    return [*parts, list(values)]


def check_num_tasks(num_tasks: int | None) -> None:
    if num_tasks is None:
        raise ValueError(
            "The number of tasks per batch must be known when the step "
            "is traced, but it was `None`. Feed episodes with a fixed "
            "number of tasks per batch: a `kerameta.data` dataset, a "
            "`keras.utils.PyDataset` whose batches have equal sizes, or "
            "a `tf.data.Dataset` batched with `drop_remainder=True`."
        )


def adapt_batch(
    parts: Components,
    theta: list[Tensor],
    non_trainable: list[Tensor],
    episode: Episode,
    inner_steps: int,
    training: bool = True,
) -> Adaptation:
    """Runs the step-major inner loop for every task of a batch.

    All tasks advance together: at each inner step every task's support
    gradient is computed (vectorized over the task axis where the backend
    profits), the meta-gradient estimator and gradient sharing turn the
    gradients into step directions, and the inner optimizer takes every
    task's step.

    Args:
        parts: the meta-model's resolved components.
        theta: the values of the meta-model's trainable variables.
        non_trainable: the values of the model's non-trainable weights.
        episode: the batch of tasks.
        inner_steps: the number of inner steps.
        training: whether this is meta-training (gradient sharing at
            evaluation follows its `evaluation_sharing`).
    """
    num_tasks = episode.num_tasks
    check_num_tasks(num_tasks)
    layout, sharing = parts.layout, parts.gradient_sharing
    adapted, frozen = layout.split(theta)
    fast = [
        ops.broadcast_to(ops.expand_dims(p, 0), (num_tasks, *p.shape))
        for p in adapted
    ]
    batch_means = {}
    concurrent_scales, history_scales = [], []
    if sharing is not None:
        concurrent_scales = layout.values(theta, sharing.concurrent_scales)
        history_scales = layout.values(theta, sharing.history_scales)
    optimizer_values = layout.values(
        theta, parts.inner_optimizer.trainable_variables
    )
    # The support set may be structures (several inputs or outputs); the
    # closures' constants are flat lists of tensors.
    support = [episode.support_x, episode.support_y]
    shared_state = list(non_trainable)
    # The closures read the meta-learned values and the data they need
    # from explicit lists, which `InnerLoop.rebuild` can replace (an
    # estimator that differentiates the inner loop by hand needs them as
    # inputs).
    sizes = [len(frozen), len(optimizer_values), len(concurrent_scales)]

    def inner_loop(values, constants):
        frozen, optimizer_values, concurrent_scales, history_scales = _split(
            values, sizes
        )
        non_trainable = list(constants[: len(shared_state)])
        support_x, support_y = keras.tree.pack_sequence_as(
            support, list(constants[len(shared_state) :])
        )
        shared = (frozen, non_trainable)
        gradient_fns = {}
        # Estimators that do not pass `step` get a new step per call.
        calls = itertools.count()
        key_table = []

        def step_keys(step):
            if isinstance(step, int) or parts.random is None:
                return parts.task_keys(non_trainable, num_tasks, step + 1)
            # A rolled loop's step is a tensor: every step's keys, stacked.
            if not key_table:
                key_table.append(
                    ops.stack(
                        [
                            parts.task_keys(non_trainable, num_tasks, s + 1)[0]
                            for s in range(inner_steps)
                        ]
                    )
                )
            return [ops.take(key_table[0], step, axis=0)]

        def gradients(fast, create_graph, step=None):
            if create_graph not in gradient_fns:
                gradient_fns[create_graph] = seam.per_task_value_and_grad(
                    parts.support_loss,
                    create_graph=create_graph,
                    vectorize=parts.vectorize,
                )
            step = next(calls) if step is None else step
            keys = step_keys(step)
            losses, grads = gradient_fns[create_graph](
                fast, shared, support_x, support_y, *keys
            )
            return losses, list(grads)

        def directions(grads, step):
            if sharing is None:
                return grads
            grads, means = sharing.directions(
                grads, step, concurrent_scales, history_scales, training
            )
            batch_means[step] = means
            return grads

        def update(fast, directions, step):
            return parts.inner_optimizer.apply(
                fast, directions, step, optimizer_values
            )

        return InnerLoop(
            gradients,
            directions,
            update,
            query_gradients=query_gradients,
            hessian_vector_products=hessian_vector_products,
            values=list(values),
            constants=list(constants),
            rebuild=inner_loop,
            repeat=seam.fori_loop if parts.rolls() else python_loop,
        )

    shared = (frozen, non_trainable)

    def query_gradients(fast):
        keys = parts.task_keys(non_trainable, num_tasks, QUERY)
        return seam.per_task_value_and_grad(
            parts.support_loss, create_graph=False, vectorize=parts.vectorize
        )(fast, shared, episode.query_x, episode.query_y, *keys)

    def hessian_vector_products(fast, vectors):
        return seam.per_task_hvp(parts.support_loss, vectorize=parts.vectorize)(
            fast, shared, vectors, episode.support_x, episode.support_y
        )

    loop = inner_loop(
        [*frozen, *optimizer_values, *concurrent_scales, *history_scales],
        [*shared_state, *keras.tree.flatten(support)],
    )
    initial_fast = fast
    fast, losses = parts.meta_gradient.run_inner_loop(loop, fast, inner_steps)
    adaptation = Adaptation(fast, losses, batch_means)
    if training:
        extra = parts.meta_gradient.outer_terms(loop, initial_fast, fast)
        if extra is not None:
            adaptation.outer_terms, adaptation.logs = extra
    return adaptation
