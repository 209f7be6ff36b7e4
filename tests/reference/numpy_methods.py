"""Pure-NumPy float64 reference for MAML-family meta-learning methods.

A test oracle built on :mod:`numpy_maml` (NumPy only, float64 throughout).
It evaluates a *forward* meta-objective that generalises MAML with these
switches, all carried by a :class:`MethodConfig`:

* ``adapted``: which parameter arrays the inner loop updates (ANIL adapts
  only the last layer, see :func:`last_layer_indices`); the others stay at
  ``theta`` in the inner loop but are used by every forward pass and get a
  meta-gradient.
* ``sharing``: gradient sharing (:class:`GradientSharing`).  The tasks are
  adapted in lockstep; at inner step ``k`` the direction of task ``i`` is
  ``d_i[l] = g_i[l] + lam_c[l][k] * c_i[l] + lam_p[l][k] * p[l][k]`` where
  ``g_i`` is the support gradient of task ``i`` over the adapted tensors,
  ``c_i`` the concurrent gradient (mean over tasks, or the mean over the
  other tasks) and ``p`` a constant history buffer.
* ``rates``: Meta-SGD per-element learning rates (``phi -= rates * d``)
  instead of ``phi -= learning_rate * d``.
* ``co_learner``: a linear co-learner head on the post-activation output of
  a hidden ``Dense`` layer of the adapted MLP (:class:`CoLearner`).
* ``task_weights``: per-task weights of the objective (uniform ``1/B`` by
  default; gradient agreement supplies them, see
  :func:`gradient_agreement_weights`).

The objective is ``J = sum_i w_i (L_Q_i(phi_i^K) + lambda_co * L_co_i)``
(``weighting="total"``) or ``sum_i w_i L_Q_i + (1/B) sum_i lambda_co
L_co_i`` (``weighting="meta_only"``).  :func:`meta_gradients` returns central
finite-difference gradients of ``J`` with respect to every meta-learned
array (second order: the inner loop is differentiated through).
:func:`first_order_meta_gradients` is the analytic first-order counterpart
where every inner-loop gradient ``g_i^k`` (and so ``c_i^k``) is a constant.

Parameter lists follow Keras ``trainable_variables`` order for a
``Sequential`` of ``Dense`` layers: ``[W1, b1, ..., Wout, bout]``.  Losses
are mean-reduced (``numpy_maml.MSE`` or ``numpy_maml.SPARSE_CE_FROM_LOGITS``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import numpy_maml as nm

Array = np.ndarray
Params = Sequence[Array]
Task = nm.Task
Net = nm.Net

Concurrent = Literal["mean", "leave_one_out"]
Granularity = Literal["tensor", "element"]
Weighting = Literal["total", "meta_only"]
AgreementForm = Literal["paper", "book"]


def _f64(arrays: Sequence[Array]) -> list[Array]:
    return [np.array(a, dtype=np.float64) for a in arrays]


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientSharing:
    """Gradient-sharing switches; lists follow the order of ``adapted``.

    ``lam_c[l]`` and ``lam_p[l]`` are ``(K_lam,)`` for ``"tensor"``
    granularity or ``(K_lam, *shape_l)`` for ``"element"`` granularity
    (``shape_l`` the shape of the ``l``-th adapted tensor).  ``history[l]``
    is the constant buffer ``p[l]`` shaped ``(K_p, *shape_l)``; ``None``
    means zeros.  ``lam_p=None`` drops the history term (and its gradient).
    At inner step ``k`` row ``min(k, rows - 1)`` of each array is used, so
    evaluating with more steps than were trained reuses the last row.
    ``concurrent="mean"`` uses ``c = mean_j g_j`` for every task;
    ``"leave_one_out"`` uses ``c_i = mean_{j != i} g_j`` (zeros if B = 1).
    """

    lam_c: Sequence[Array]
    lam_p: Sequence[Array] | None = None
    history: Sequence[Array] | None = None
    concurrent: Concurrent = "mean"
    granularity: Granularity = "tensor"


@dataclass(frozen=True)
class CoLearner:
    """Linear co-learner head on a hidden layer of the adapted MLP.

    ``feature_layer`` is the 1-based index of a *hidden* ``Dense`` layer
    (``1 <= feature_layer < number of Dense layers``); its post-activation
    output ``F`` on the query inputs feeds ``co_pred = F @ W_co + b_co``
    with ``params = [W_co (width, out), b_co (out,)]``.  The co-learner loss
    is the task loss of ``co_pred`` against ``query_y``, weighted by
    ``weight`` (``lambda_co``).  Co-learner params are never adapted.
    """

    feature_layer: int
    params: Sequence[Array]
    weight: float = 1.0
    weighting: Weighting = "total"


@dataclass(frozen=True)
class MethodConfig:
    """Which method variant :func:`objective` evaluates.

    ``adapted``: indices into ``params`` updated by the inner loop (``None``
    = all).  ``rates``: Meta-SGD rates, one array per adapted tensor shaped
    like it (``None`` = plain SGD with ``learning_rate``).
    ``task_weights``: ``(B,)`` objective weights (``None`` = ``1/B`` each).
    """

    inner_steps: int = 1
    learning_rate: float = 0.1
    adapted: tuple[int, ...] | None = None
    sharing: GradientSharing | None = None
    rates: Sequence[Array] | None = None
    co_learner: CoLearner | None = None
    task_weights: Array | None = None


def last_layer_indices(params: Params) -> tuple[int, ...]:
    """ANIL's ``adapted``: the indices of the last ``[W, b]`` pair."""
    n = len(params)
    if n < 2:
        raise ValueError("need at least one [W, b] pair")
    return (n - 2, n - 1)


def _adapted_indices(config: MethodConfig, num_params: int) -> list[int]:
    if config.adapted is None:
        return list(range(num_params))
    indices = [int(i) for i in config.adapted]
    if len(set(indices)) != len(indices):
        raise ValueError(f"duplicate adapted indices {config.adapted}")
    for i in indices:
        if not 0 <= i < num_params:
            raise ValueError(f"adapted index {i} out of range {num_params}")
    return indices


def _row(array: Array, k: int) -> Array:
    return array[min(k, array.shape[0] - 1)]


def _check_per_tensor(
    name: str, arrays: Sequence[Array], shapes: list[tuple[int, ...]]
) -> None:
    if len(arrays) != len(shapes):
        raise ValueError(
            f"{name} needs one array per adapted tensor: "
            f"{len(arrays)} vs {len(shapes)}"
        )


def _check_sharing(sharing: GradientSharing, shapes: list[tuple]) -> None:
    if sharing.concurrent not in ("mean", "leave_one_out"):
        raise ValueError(f"unknown concurrent {sharing.concurrent!r}")
    if sharing.granularity not in ("tensor", "element"):
        raise ValueError(f"unknown granularity {sharing.granularity!r}")
    lams = [("lam_c", sharing.lam_c)]
    if sharing.lam_p is not None:
        lams.append(("lam_p", sharing.lam_p))
    for name, arrays in lams:
        _check_per_tensor(name, arrays, shapes)
        for lam, shape in zip(arrays, shapes, strict=True):
            lam = np.asarray(lam)
            want = shape if sharing.granularity == "element" else ()
            if lam.ndim < 1 or lam.shape[1:] != want or lam.shape[0] < 1:
                raise ValueError(
                    f"{name} for a tensor of shape {shape} with "
                    f"{sharing.granularity} granularity must be (K, *{want})"
                    f", got {lam.shape}"
                )
    if sharing.history is not None:
        _check_per_tensor("history", sharing.history, shapes)
        for p, shape in zip(sharing.history, shapes, strict=True):
            p = np.asarray(p)
            if p.ndim < 1 or p.shape[1:] != shape or p.shape[0] < 1:
                raise ValueError(
                    f"history for shape {shape} must be (K, *{shape}), "
                    f"got {p.shape}"
                )


def _task_weights(config: MethodConfig, num_tasks: int) -> Array:
    if config.task_weights is None:
        return np.full(num_tasks, 1.0 / num_tasks)
    w = np.asarray(config.task_weights, dtype=np.float64).reshape(-1)
    if w.shape != (num_tasks,):
        raise ValueError(f"task_weights must be ({num_tasks},), got {w.shape}")
    return w


# --------------------------------------------------------------------------
# Inner loop
# --------------------------------------------------------------------------


@dataclass
class _Trace:
    """What the inner loop saw at each step (for first-order gradients)."""

    concurrent: list[list[list[Array]]]  # [k][i][l]
    history: list[list[Array]]  # [k][l] (zeros when no history)
    directions: list[list[list[Array]]]  # [k][i][l]


def _inner_loop(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> tuple[list[list[Array]], _Trace]:
    theta = _f64(params)
    adapted = _adapted_indices(config, len(theta))
    shapes = [theta[i].shape for i in adapted]
    sharing = config.sharing
    if sharing is not None:
        _check_sharing(sharing, shapes)
    if config.rates is not None:
        _check_per_tensor("rates", config.rates, shapes)
        steps = [np.asarray(r, dtype=np.float64) for r in config.rates]
        for r, shape in zip(steps, shapes, strict=True):
            if r.shape != shape:
                raise ValueError(f"rates must be {shape}, got {r.shape}")
    else:
        steps = [np.float64(config.learning_rate)] * len(adapted)
    if config.inner_steps < 0:
        raise ValueError("inner_steps must be >= 0")

    num_tasks = len(tasks)
    phis = [[p.copy() for p in theta] for _ in tasks]
    trace = _Trace([], [], [])
    for k in range(config.inner_steps):
        grads = []
        for phi, task in zip(phis, tasks, strict=True):
            _, g = nm.loss_and_grad(
                net, phi, task["support_x"], task["support_y"], loss
            )
            grads.append([g[i] for i in adapted])
        if sharing is None:
            directions = grads
            concurrent = [[np.zeros(s) for s in shapes] for _ in tasks]
            history = [np.zeros(s) for s in shapes]
        else:
            concurrent = []
            for i in range(num_tasks):
                others = (
                    range(num_tasks)
                    if sharing.concurrent == "mean"
                    else [j for j in range(num_tasks) if j != i]
                )
                count = len(others)
                c_i = []
                for l_idx, shape in enumerate(shapes):
                    total = np.zeros(shape)
                    for j in others:
                        total = total + grads[j][l_idx]
                    c_i.append(total / count if count else total)
                concurrent.append(c_i)
            if sharing.history is None:
                history = [np.zeros(s) for s in shapes]
            else:
                history = [
                    _row(np.asarray(p, dtype=np.float64), k)
                    for p in sharing.history
                ]
            directions = []
            for i in range(num_tasks):
                d_i = []
                for l_idx in range(len(shapes)):
                    lam_c = _row(np.asarray(sharing.lam_c[l_idx], float), k)
                    d = grads[i][l_idx] + lam_c * concurrent[i][l_idx]
                    if sharing.lam_p is not None:
                        lam_p = _row(np.asarray(sharing.lam_p[l_idx], float), k)
                        d = d + lam_p * history[l_idx]
                    d_i.append(d)
                directions.append(d_i)
        for phi, d_i in zip(phis, directions, strict=True):
            for l_idx, idx in enumerate(adapted):
                phi[idx] = phi[idx] - steps[l_idx] * d_i[l_idx]
        trace.concurrent.append(concurrent)
        trace.history.append(history)
        trace.directions.append(directions)
    return phis, trace


def adapt_tasks(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> list[list[Array]]:
    """Per-task adapted parameters ``phi_i^K`` (full lists, lockstep).

    Returns ``B`` lists shaped like ``params``; non-adapted entries are
    copies of ``params``.
    """
    return _inner_loop(net, params, tasks, loss, config)[0]


# --------------------------------------------------------------------------
# Objective and finite-difference meta-gradients
# --------------------------------------------------------------------------


def _co_params(net: Net | str, phi: Params, co: CoLearner) -> list[Array]:
    """``[W1, b1, ..., W_f, b_f, W_co, b_co]``: an MLP whose output is the
    co-learner prediction (hidden activations on layers ``1..f``)."""
    net = nm.as_net(net)
    if net.kind != "mlp":
        raise ValueError("the co-learner reference supports MLPs only")
    num_layers = len(phi) // 2
    if not 1 <= co.feature_layer < num_layers:
        raise ValueError(
            f"feature_layer must be a hidden layer in 1..{num_layers - 1}, "
            f"got {co.feature_layer}"
        )
    if len(co.params) != 2:
        raise ValueError("co-learner params must be [W_co, b_co]")
    return list(phi[: 2 * co.feature_layer]) + _f64(co.params)


def _co_weights(config: MethodConfig, weights: Array) -> Array:
    co = config.co_learner
    assert co is not None
    if co.weighting == "total":
        return co.weight * weights
    if co.weighting == "meta_only":
        return np.full(weights.shape, co.weight / weights.size)
    raise ValueError(f"unknown co-learner weighting {co.weighting!r}")


def objective(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> float:
    """Meta-objective ``J`` (see the module docstring) as a float."""
    phis = adapt_tasks(net, params, tasks, loss, config)
    weights = _task_weights(config, len(tasks))
    total = 0.0
    for w, phi, task in zip(weights, phis, tasks, strict=True):
        qx, qy = task["query_x"], task["query_y"]
        total += w * nm.loss_value(net, phi, qx, qy, loss)
    if config.co_learner is not None:
        co_w = _co_weights(config, weights)
        for w, phi, task in zip(co_w, phis, tasks, strict=True):
            co_params = _co_params(net, phi, config.co_learner)
            total += w * nm.loss_value(
                net, co_params, task["query_x"], task["query_y"], loss
            )
    return float(total)


def _groups(
    params: Params, config: MethodConfig
) -> list[tuple[str, list[Array]]]:
    groups = [("params", _f64(params))]
    if config.sharing is not None:
        groups.append(("lam_c", _f64(config.sharing.lam_c)))
        if config.sharing.lam_p is not None:
            groups.append(("lam_p", _f64(config.sharing.lam_p)))
    if config.rates is not None:
        groups.append(("rates", _f64(config.rates)))
    if config.co_learner is not None:
        groups.append(("co_learner", _f64(config.co_learner.params)))
    return groups


def _rebuild(
    config: MethodConfig, values: dict[str, list[Array]]
) -> MethodConfig:
    changes: dict[str, object] = {}
    if config.sharing is not None:
        sharing_changes = {"lam_c": values["lam_c"]}
        if "lam_p" in values:
            sharing_changes["lam_p"] = values["lam_p"]
        changes["sharing"] = dataclasses.replace(
            config.sharing, **sharing_changes
        )
    if "rates" in values:
        changes["rates"] = values["rates"]
    if config.co_learner is not None:
        changes["co_learner"] = dataclasses.replace(
            config.co_learner, params=values["co_learner"]
        )
    return dataclasses.replace(config, **changes)


def meta_gradients(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
    step: float = nm.DEFAULT_FD_STEP,
) -> dict[str, list[Array]]:
    """Second-order gradients of :func:`objective` by central differences.

    Keys (each a list of arrays shaped like the corresponding input):
    ``"params"`` always; ``"lam_c"`` (and ``"lam_p"`` when given) with
    sharing; ``"rates"`` with Meta-SGD; ``"co_learner"`` (``[dW_co,
    db_co]``) with a co-learner.  ``task_weights`` and ``history`` are
    constants.  Costs two objective evaluations per element.
    """
    groups = _groups(params, config)
    sizes = [len(arrays) for _, arrays in groups]
    flat = [a for _, arrays in groups for a in arrays]

    def split(arrays: list[Array]) -> dict[str, list[Array]]:
        out, start = {}, 0
        for (name, _), size in zip(groups, sizes, strict=True):
            out[name] = arrays[start : start + size]
            start += size
        return out

    def fn(trial: list[Array]) -> float:
        values = split(trial)
        trial_config = _rebuild(config, values)
        return objective(net, values["params"], tasks, loss, trial_config)

    return split(nm.central_difference_gradient(fn, flat, step))


# --------------------------------------------------------------------------
# First-order (analytic) gradients
# --------------------------------------------------------------------------


def first_order_meta_gradients(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> dict[str, list[Array]]:
    """First-order gradients of :func:`objective` (analytic, no FD).

    Convention: every inner-loop support gradient ``g_i^k`` (hence every
    concurrent gradient ``c_i^k``) is a constant, so with ``s_l`` the step
    (``learning_rate`` or ``rates[l]``)
    ``phi_i^K[l] = theta[l] - s_l * sum_k d_i^k[l]`` and, with
    ``G_i = dJ/dphi_i^K`` (query plus co-learner terms):

    * ``params``: ``sum_i G_i`` (identity Jacobian; FOMAML);
    * ``lam_c[l][r]``: ``-s_l * sum_i sum_{k: row(k)=r} G_i[l] * c_i^k[l]``
      summed over elements for ``"tensor"`` granularity;
    * ``lam_p[l][r]``: the same with ``p[l][row_p(k)]`` for ``c_i^k[l]``;
    * ``rates[l]``: ``-sum_i G_i[l] * sum_k d_i^k[l]``;
    * ``co_learner``: exact (co-learner params are not in the inner loop).

    With ``inner_steps == 1`` everything but ``params`` is exact (equals
    :func:`meta_gradients`): ``lam_c[0]``, ``lam_p[0]`` and ``rates`` enter
    after the only support-gradient evaluation.  With ``inner_steps == 0``
    ``params`` is exact too.
    """
    theta = _f64(params)
    phis, trace = _inner_loop(net, theta, tasks, loss, config)
    adapted = _adapted_indices(config, len(theta))
    weights = _task_weights(config, len(tasks))
    co = config.co_learner
    co_w = _co_weights(config, weights) if co is not None else None

    task_grads: list[list[Array]] = []
    co_total = [np.zeros_like(p) for p in _f64(co.params)] if co else []
    for i, (phi, task) in enumerate(zip(phis, tasks, strict=True)):
        qx, qy = task["query_x"], task["query_y"]
        _, gq = nm.loss_and_grad(net, phi, qx, qy, loss)
        g_i = [weights[i] * g for g in gq]
        if co is not None:
            assert co_w is not None
            co_params = _co_params(net, phi, co)
            _, gco = nm.loss_and_grad(net, co_params, qx, qy, loss)
            for j in range(2 * co.feature_layer):
                g_i[j] = g_i[j] + co_w[i] * gco[j]
            co_total = [
                t + co_w[i] * g for t, g in zip(co_total, gco[-2:], strict=True)
            ]
        task_grads.append(g_i)

    out: dict[str, list[Array]] = {
        "params": [
            sum((g[j] for g in task_grads), np.zeros_like(theta[j]))
            for j in range(len(theta))
        ]
    }
    if config.rates is not None:
        steps = _f64(config.rates)
    else:
        steps = [np.float64(config.learning_rate)] * len(adapted)

    sharing = config.sharing
    if sharing is not None:
        element = sharing.granularity == "element"
        names = ["lam_c"] + (["lam_p"] if sharing.lam_p is not None else [])
        for name in names:
            lams = _f64(getattr(sharing, name))
            grads = [np.zeros_like(lam) for lam in lams]
            for k in range(config.inner_steps):
                for l_idx, idx in enumerate(adapted):
                    row = min(k, lams[l_idx].shape[0] - 1)
                    for i, g_i in enumerate(task_grads):
                        if name == "lam_c":
                            source = trace.concurrent[k][i][l_idx]
                        else:
                            source = trace.history[k][l_idx]
                        contrib = -steps[l_idx] * g_i[idx] * source
                        grads[l_idx][row] += (
                            contrib if element else np.sum(contrib)
                        )
            out[name] = grads
    if config.rates is not None:
        rate_grads = []
        for l_idx, idx in enumerate(adapted):
            total = np.zeros_like(steps[l_idx])
            for i, g_i in enumerate(task_grads):
                moved = sum(
                    (d[i][l_idx] for d in trace.directions),
                    np.zeros_like(theta[idx]),
                )
                total = total - g_i[idx] * moved
            rate_grads.append(total)
        out["rates"] = rate_grads
    if co is not None:
        out["co_learner"] = co_total
    return out


def first_order_sharing_gradient_k1(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> list[Array]:
    """``dJ/dlam_c`` for one inner step, one array per adapted tensor.

    For ``"tensor"`` granularity, uniform weights and plain SGD this is
    ``dJ/dlam_c[l][0] = -(alpha/B) sum_i <grad L_Q_i(phi_i^1)[l], c^0[l]>``
    (plus the co-learner's share of ``dJ/dphi``).  Shapes follow
    ``config.sharing.lam_c``; rows past 0 are zero.  Exact for K = 1 (see
    :func:`first_order_meta_gradients`).
    """
    if config.inner_steps != 1 or config.sharing is None:
        raise ValueError("needs inner_steps == 1 and gradient sharing")
    return first_order_meta_gradients(net, params, tasks, loss, config)["lam_c"]


# --------------------------------------------------------------------------
# Gradient agreement and Reptile
# --------------------------------------------------------------------------


def task_updates(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> Array:
    """``(B, D)`` flattened ``u_i = theta_A - phi_i^K`` over adapted tensors.

    Tensors are concatenated in ``adapted`` order, each flattened row-major.
    """
    theta = _f64(params)
    adapted = _adapted_indices(config, len(theta))
    phis = adapt_tasks(net, theta, tasks, loss, config)
    rows = []
    for phi in phis:
        parts = [(theta[i] - phi[i]).reshape(-1) for i in adapted]
        rows.append(np.concatenate(parts) if parts else np.zeros(0))
    return np.stack(rows)


def gradient_agreement_weights(
    updates: Array,
    form: AgreementForm = "paper",
    divide_by_batch: bool = False,
    epsilon: float = 1e-12,
) -> Array:
    """Gradient-agreement task weights ``(B,)`` from ``(B, D)`` updates.

    ``"paper"``: ``w_i = <u_i, ubar> / (sum_k |<u_k, ubar>| + eps)`` with
    ``ubar`` the mean update.  ``"book"``: ``w_i = sum_j <u_i, u_j> /
    (sum_k sum_j |<u_k, u_j>| + eps)``.  ``divide_by_batch`` divides by B.
    """
    u = np.asarray(updates, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"updates must be (B, D), got {u.shape}")
    if form == "paper":
        scores = u @ u.mean(axis=0)
        w = scores / (np.sum(np.abs(scores)) + epsilon)
    elif form == "book":
        gram = u @ u.T
        w = gram.sum(axis=1) / (np.sum(np.abs(gram)) + epsilon)
    else:
        raise ValueError(f"unknown gradient agreement form {form!r}")
    if divide_by_batch:
        w = w / u.shape[0]
    return w


def gradient_agreement_meta_gradients(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
    form: AgreementForm = "paper",
    divide_by_batch: bool = False,
    epsilon: float = 1e-12,
    step: float = nm.DEFAULT_FD_STEP,
) -> tuple[Array, dict[str, list[Array]]]:
    """GA weights at ``params`` and the meta-gradient with them held fixed.

    Returns ``(w, grads)``: ``w`` from :func:`gradient_agreement_weights` of
    :func:`task_updates` (``config.task_weights`` is ignored), and
    :func:`meta_gradients` of the objective with ``task_weights = w``.
    """
    w = gradient_agreement_weights(
        task_updates(net, params, tasks, loss, config),
        form=form,
        divide_by_batch=divide_by_batch,
        epsilon=epsilon,
    )
    fixed = dataclasses.replace(config, task_weights=w)
    return w, meta_gradients(net, params, tasks, loss, fixed, step=step)


def reptile_pseudo_gradient(
    net: Net | str,
    params: Params,
    tasks: Sequence[Task],
    loss: str,
    config: MethodConfig,
) -> list[Array]:
    """Reptile direction ``sum_i w_i (theta - phi_i^K)`` for adapted tensors.

    ``w`` is ``config.task_weights`` (``1/B`` each by default); the inner
    loop honours sharing and Meta-SGD rates.  Non-adapted tensors get zeros.
    Shaped like ``params``.
    """
    theta = _f64(params)
    adapted = set(_adapted_indices(config, len(theta)))
    phis = adapt_tasks(net, theta, tasks, loss, config)
    weights = _task_weights(config, len(tasks))
    out = [np.zeros_like(p) for p in theta]
    for w, phi in zip(weights, phis, strict=True):
        for j in adapted:
            out[j] = out[j] + w * (theta[j] - phi[j])
    return out
