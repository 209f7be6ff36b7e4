"""The update: apply the meta-gradient, or leave every weight as it was."""

import keras
from keras import ops

from kerameta.src import backend as seam
from kerameta.src.engine import replicas
from kerameta.src.types import Tensor

_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


def check_replicated_optimizer(optimizer) -> None:
    """Refuses gradient clipping under data parallelism.

    Keras's optimizer clips each replica's gradient before the replicas'
    gradients are summed, which is not the clipped one-device gradient.
    """
    if seam.replica_count() == 1:
        return
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
    clipping = {a: getattr(inner, a, None) for a in _CLIPPING}
    clipping = {a: v for a, v in clipping.items() if v is not None}
    if clipping:
        raise ValueError(
            f"Under data parallelism ({seam.replica_count()} replicas), "
            "Keras's optimizer clips each replica's share of the "
            "meta-gradient before the shares are summed, which is not the "
            "clipped meta-gradient of the batch. Received an optimizer "
            f"with {clipping}. Build the optimizer without `clipnorm`, "
            "`clipvalue` and `global_clipnorm`, or train on one device."
        )


def apply_if_finite(optimizer, variables, loss: Tensor, grads) -> Tensor:
    """Applies `grads` with `optimizer` unless something is not finite.

    A non-finite loss or gradient is refused, and so is an update that
    leaves a non-finite value behind: a finite but huge gradient can still
    overflow the optimizer's state (Adam's second moment) and, a step
    later, the weights. Under data parallelism the replicas decide
    together: every replica applies the summed gradients, or none does.

    Returns:
        A boolean scalar tensor: whether the update was applied.
    """
    finite = ops.all(ops.isfinite(loss))
    # A `LossScaleOptimizer` skips overflowed gradients itself (and lowers
    # its scale): they are no divergence.
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        for g in grads:
            finite = ops.logical_and(finite, ops.all(ops.isfinite(g)))
    finite = replicas.all_agree(finite)
    variables = list(variables)
    with seam.no_grad():
        if not optimizer.built:
            optimizer.build(variables)
        watched = variables + list(optimizer.variables)
        before = [ops.copy(v.value) for v in watched]
        safe_grads = [ops.where(finite, g, ops.zeros_like(g)) for g in grads]
        _apply(optimizer, safe_grads, variables)
        for v in watched:
            if "float" in str(v.dtype):
                finite = ops.logical_and(finite, ops.all(ops.isfinite(v.value)))
        finite = replicas.all_agree(finite)
        for v, old in zip(watched, before):
            v.assign(ops.where(finite, v.value, old))
    return finite


def _apply(optimizer, grads, variables) -> None:
    if seam.BACKEND != "jax" or not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        optimizer.apply(grads, variables)
        return
    # JAX: `LossScaleOptimizer.apply` assigns in the branches of a
    # `lax.cond`, which leaks tracers; its stateless form (what Keras's JAX
    # trainer calls) runs under the meta-trainer's `StatelessScope`.
    values, optimizer_values = optimizer.stateless_apply(
        [v.value for v in optimizer.variables],
        grads,
        [v.value for v in variables],
    )
    for variable, value in zip(
        [*variables, *optimizer.variables], [*values, *optimizer_values]
    ):
        variable.assign(value)


def update_sharing_history(sharing, batch_means, applied: Tensor) -> None:
    """Moves gradient sharing's history after an applied outer step."""
    with seam.no_grad():
        new_history = sharing.updated_history(batch_means)
        for variable, value in zip(sharing.history, new_history):
            variable.assign(ops.where(applied, value, variable.value))
