"""Self-tests of the NumPy meta-learning-methods reference (numpy only)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from . import numpy_maml as nm
from . import numpy_methods as mm

SCE = nm.SPARSE_CE_FROM_LOGITS
TOL = 1e-7
LR = 0.1
TANH = nm.Net.mlp("tanh")
SIZES = (3, 4, 2)  # 26 parameters


def _targets(rng, loss, n, num_out):
    if loss == nm.MSE:
        return rng.normal(size=(n, num_out))
    return rng.integers(0, num_out, size=n)


def _tasks(rng, loss, n_tasks=2, num_in=3, num_out=2, n=3):
    return [
        {
            "support_x": rng.normal(size=(n, num_in)),
            "support_y": _targets(rng, loss, n, num_out),
            "query_x": rng.normal(size=(n, num_in)),
            "query_y": _targets(rng, loss, n, num_out),
        }
        for _ in range(n_tasks)
    ]


def _setup(seed, loss=nm.MSE, n_tasks=2, sizes=SIZES):
    rng = np.random.default_rng(seed)
    params = nm.init_mlp_params(rng, sizes, scale=1.0)
    tasks = _tasks(rng, loss, n_tasks, sizes[0], sizes[-1])
    return rng, params, tasks


def _close(a, b, tol=TOL):
    assert nm.relative_error(a, b) < tol, nm.relative_error(a, b)


def _tensor_sharing(params, adapted, k, lam_c, lam_p=None, history=None):
    return mm.GradientSharing(
        lam_c=[np.full(k, lam_c) for _ in adapted],
        lam_p=None if lam_p is None else [np.full(k, lam_p) for _ in adapted],
        history=history,
    )


# --------------------------------------------------------------------------
# Reductions to MAML
# --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [nm.MSE, SCE])
def test_zero_sharing_matches_maml(loss):
    _, params, tasks = _setup(0, loss)
    k = 2
    config = mm.MethodConfig(
        inner_steps=k,
        learning_rate=LR,
        sharing=_tensor_sharing(params, range(len(params)), k, 0.0, 0.0),
    )
    want = nm.meta_loss(TANH, params, tasks, loss, k, LR)
    assert mm.objective(TANH, params, tasks, loss, config) == pytest.approx(
        want, rel=1e-13
    )
    grads = mm.meta_gradients(TANH, params, tasks, loss, config)
    _close(
        grads["params"],
        nm.second_order_meta_gradient(TANH, params, tasks, loss, k, LR),
    )
    # Cross-check against the independent reverse-mode HVP recursion.
    _close(
        grads["params"],
        nm.hvp_meta_gradient(TANH, params, tasks, loss, k, LR),
        1e-6,
    )
    assert set(grads) == {"params", "lam_c", "lam_p"}


def test_plain_config_matches_maml_and_fomaml():
    _, params, tasks = _setup(1)
    config = mm.MethodConfig(inner_steps=2, learning_rate=LR)
    assert mm.objective(TANH, params, tasks, nm.MSE, config) == pytest.approx(
        nm.meta_loss(TANH, params, tasks, nm.MSE, 2, LR), rel=1e-13
    )
    _close(
        mm.first_order_meta_gradients(TANH, params, tasks, nm.MSE, config)[
            "params"
        ],
        nm.first_order_meta_gradient(TANH, params, tasks, nm.MSE, 2, LR),
        1e-12,
    )


@pytest.mark.parametrize("concurrent", ["mean", "leave_one_out"])
def test_single_task_sharing_scales_learning_rate(concurrent):
    _, params, tasks = _setup(2, n_tasks=1)
    lam, k = 0.7, 3
    config = mm.MethodConfig(
        inner_steps=k,
        learning_rate=LR,
        sharing=dataclasses.replace(
            _tensor_sharing(
                params,
                range(len(params)),
                k,
                lam,
                0.4,
                [np.zeros((k, *p.shape)) for p in params],
            ),
            concurrent=concurrent,
        ),
    )
    # mean: c = g so the step is (1 + lam) * alpha; leave-one-out: c = 0.
    rate = (1.0 + lam) * LR if concurrent == "mean" else LR
    want = nm.meta_loss(TANH, params, tasks, nm.MSE, k, rate)
    got = mm.objective(TANH, params, tasks, nm.MSE, config)
    assert got == pytest.approx(want, rel=1e-13)
    assert got != pytest.approx(
        nm.meta_loss(TANH, params, tasks, nm.MSE, k, (1.0 + lam) * LR + 0.05)
    )


def test_meta_sgd_with_constant_rates_is_maml():
    _, params, tasks = _setup(3, SCE)
    config = mm.MethodConfig(
        inner_steps=2, rates=[np.full(p.shape, LR) for p in params]
    )
    want = nm.meta_loss(TANH, params, tasks, SCE, 2, LR)
    assert mm.objective(TANH, params, tasks, SCE, config) == pytest.approx(
        want, rel=1e-13
    )
    grads = mm.meta_gradients(TANH, params, tasks, SCE, config)
    _close(
        grads["params"],
        nm.second_order_meta_gradient(TANH, params, tasks, SCE, 2, LR),
    )
    # dJ/drates at K = 1 is exact in the first-order formula.
    one = dataclasses.replace(config, inner_steps=1)
    _close(
        mm.meta_gradients(TANH, params, tasks, SCE, one)["rates"],
        mm.first_order_meta_gradients(TANH, params, tasks, SCE, one)["rates"],
    )


def test_anil_adapts_only_last_layer():
    _, params, tasks = _setup(4, sizes=(3, 4, 4, 2))
    adapted = mm.last_layer_indices(params)
    assert adapted == (4, 5)
    config = mm.MethodConfig(inner_steps=2, adapted=adapted)
    phis = mm.adapt_tasks(TANH, params, tasks, nm.MSE, config)
    for phi in phis:
        for j in range(4):
            np.testing.assert_array_equal(phi[j], params[j])
        for j in adapted:
            assert not np.allclose(phi[j], params[j])
    # Body params still get a (nonzero) meta-gradient; the Reptile direction
    # has zeros there.
    grads = mm.meta_gradients(TANH, params, tasks, nm.MSE, config)
    assert all(np.abs(grads["params"][j]).max() > 1e-4 for j in range(6))
    reptile = mm.reptile_pseudo_gradient(TANH, params, tasks, nm.MSE, config)
    assert all(not r.any() for r in reptile[:4])
    assert all(np.abs(r).max() > 0 for r in reptile[4:])


def test_anil_with_one_inner_step_matches_closed_form():
    # With only the (linear) last layer adapted, one step on MSE moves the
    # head by -alpha * grad; check the adapted head by hand.
    _, params, tasks = _setup(5)
    config = mm.MethodConfig(inner_steps=1, adapted=(2, 3))
    phis = mm.adapt_tasks(TANH, params, tasks, nm.MSE, config)
    for phi, task in zip(phis, tasks, strict=True):
        h = np.tanh(task["support_x"] @ params[0] + params[1])
        resid = h @ params[2] + params[3] - task["support_y"]
        dout = 2.0 * resid / resid.size
        np.testing.assert_allclose(phi[2], params[2] - LR * h.T @ dout)
        np.testing.assert_allclose(phi[3], params[3] - LR * dout.sum(0))


# --------------------------------------------------------------------------
# Gradient sharing details
# --------------------------------------------------------------------------


def _grad_s(params, task, loss=nm.MSE):
    return nm.loss_and_grad(
        TANH, params, task["support_x"], task["support_y"], loss
    )[1]


@pytest.mark.parametrize("concurrent", ["mean", "leave_one_out"])
def test_one_step_sharing_directions(concurrent):
    rng, params, tasks = _setup(6, n_tasks=3)
    lam_c, lam_p = 0.3, -0.6
    history = [rng.normal(size=(2, *p.shape)) for p in params]
    sharing = dataclasses.replace(
        _tensor_sharing(params, range(4), 1, lam_c, lam_p, history),
        concurrent=concurrent,
    )
    config = mm.MethodConfig(inner_steps=1, sharing=sharing)
    phis = mm.adapt_tasks(TANH, params, tasks, nm.MSE, config)
    g = [_grad_s(params, t) for t in tasks]
    for i, phi in enumerate(phis):
        others = [j for j in range(3) if concurrent == "mean" or j != i]
        for l_idx in range(4):
            c = sum(g[j][l_idx] for j in others) / len(others)
            d = g[i][l_idx] + lam_c * c + lam_p * history[l_idx][0]
            np.testing.assert_allclose(
                phi[l_idx], params[l_idx] - LR * d, rtol=1e-12, atol=1e-14
            )


def test_extra_steps_reuse_last_row():
    rng, params, tasks = _setup(7)
    adapted = (0, 1, 2, 3)
    lam_c = [rng.normal(0.0, 0.3, size=(2, *params[i].shape)) for i in adapted]
    lam_p = [rng.normal(0.0, 0.3, size=(2, *params[i].shape)) for i in adapted]
    hist = [rng.normal(size=(2, *params[i].shape)) for i in adapted]

    def pad(arrays):
        return [np.concatenate([a, a[-1:], a[-1:]]) for a in arrays]

    short = mm.GradientSharing(lam_c, lam_p, hist, granularity="element")
    long = mm.GradientSharing(
        pad(lam_c), pad(lam_p), pad(hist), granularity="element"
    )
    values = [
        mm.objective(
            TANH,
            params,
            tasks,
            nm.MSE,
            mm.MethodConfig(inner_steps=4, adapted=adapted, sharing=s),
        )
        for s in (short, long)
    ]
    assert values[0] == values[1]
    # Changing the last row changes the 4-step objective (rows are used).
    lam_c[0][-1] += 1.0
    moved = mm.objective(
        TANH,
        params,
        tasks,
        nm.MSE,
        mm.MethodConfig(inner_steps=4, adapted=adapted, sharing=short),
    )
    assert moved != pytest.approx(values[0], rel=1e-6)


def test_element_granularity_with_equal_entries_matches_tensor():
    _, params, tasks = _setup(8)
    k = 2
    tensor = _tensor_sharing(params, range(4), k, 0.4)
    element = mm.GradientSharing(
        lam_c=[np.full((k, *p.shape), 0.4) for p in params],
        granularity="element",
    )
    values = [
        mm.objective(
            TANH,
            params,
            tasks,
            nm.MSE,
            mm.MethodConfig(inner_steps=k, sharing=s),
        )
        for s in (tensor, element)
    ]
    assert values[0] == pytest.approx(values[1], rel=1e-14)
    with pytest.raises(ValueError, match="granularity"):
        mm.objective(
            TANH,
            params,
            tasks,
            nm.MSE,
            mm.MethodConfig(
                inner_steps=k,
                sharing=dataclasses.replace(element, granularity="tensor"),
            ),
        )


@pytest.mark.parametrize("granularity", ["tensor", "element"])
@pytest.mark.parametrize("concurrent", ["mean", "leave_one_out"])
def test_one_step_first_order_lambda_gradients_equal_finite_differences(
    granularity, concurrent
):
    rng, params, tasks = _setup(9, SCE, n_tasks=3)
    adapted = (2, 3)
    shape = (lambda p: p.shape) if granularity == "element" else (lambda p: ())
    co = mm.CoLearner(
        feature_layer=1,
        params=[rng.normal(size=(4, 2)), rng.normal(size=(2,))],
        weight=0.5,
    )
    config = mm.MethodConfig(
        inner_steps=1,
        adapted=adapted,
        sharing=mm.GradientSharing(
            lam_c=[rng.normal(size=(1, *shape(params[i]))) for i in adapted],
            lam_p=[rng.normal(size=(1, *shape(params[i]))) for i in adapted],
            history=[rng.normal(size=(1, *params[i].shape)) for i in adapted],
            concurrent=concurrent,
            granularity=granularity,
        ),
        rates=[rng.uniform(0.05, 0.2, size=params[i].shape) for i in adapted],
        co_learner=co,
        task_weights=np.array([0.5, 0.2, 0.3]),
    )
    fd = mm.meta_gradients(TANH, params, tasks, SCE, config)
    fo = mm.first_order_meta_gradients(TANH, params, tasks, SCE, config)
    assert (
        set(fd)
        == set(fo)
        == {
            "params",
            "lam_c",
            "lam_p",
            "rates",
            "co_learner",
        }
    )
    for key in ("lam_c", "lam_p", "rates", "co_learner"):
        assert [a.shape for a in fd[key]] == [a.shape for a in fo[key]]
        _close(fd[key], fo[key])
    _close(
        fo["lam_c"],
        mm.first_order_sharing_gradient_k1(TANH, params, tasks, SCE, config),
        1e-15,
    )
    # The params gradient is genuinely second order.
    assert nm.relative_error(fd["params"], fo["params"]) > 1e-3


def test_first_order_sharing_gradient_k1_by_hand():
    # y = w x + b, one support and one query point per task, B = 2.
    w, b, alpha, lam = 0.5, -0.2, 0.1, 0.3
    data = [(1.0, 2.0, -1.0, 0.5), (2.0, -1.0, 0.5, 1.5)]  # xs, ys, xq, yq
    tasks = [
        {
            "support_x": np.array([[xs]]),
            "support_y": np.array([[ys]]),
            "query_x": np.array([[xq]]),
            "query_y": np.array([[yq]]),
        }
        for xs, ys, xq, yq in data
    ]
    g = [
        np.array([2 * (w * xs + b - ys) * xs, 2 * (w * xs + b - ys)])
        for xs, ys, _, _ in data
    ]
    c = (g[0] + g[1]) / 2
    want = np.zeros(2)
    for (_, _, xq, yq), g_i in zip(data, g, strict=True):
        w1, b1 = np.array([w, b]) - alpha * (g_i + lam * c)
        gq = np.array([2 * (w1 * xq + b1 - yq) * xq, 2 * (w1 * xq + b1 - yq)])
        want += -(alpha / 2) * gq * c
    params = [np.array([[w]]), np.array([b])]
    config = mm.MethodConfig(
        inner_steps=1,
        learning_rate=alpha,
        sharing=mm.GradientSharing(lam_c=[np.array([lam])] * 2),
    )
    linear = nm.Net.mlp()
    got = mm.first_order_sharing_gradient_k1(
        linear, params, tasks, nm.MSE, config
    )
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-12)
    fd = mm.meta_gradients(linear, params, tasks, nm.MSE, config)["lam_c"]
    np.testing.assert_allclose(np.concatenate(fd), want, rtol=1e-7, atol=1e-9)


def test_two_step_lambda_gradient_linear_regression_closed_form():
    # Linear regression, MSE: the support gradient is A_i t - b_i, so with
    # mean sharing phi_i^{k+1} = phi_i^k - a (A_i phi_i^k - b_i + lam_k c^k)
    # and c^k = mean_j (A_j phi_j^k - b_j).  Differentiate by hand (forward
    # mode in lam_0): v_i^1 = -a c^0, v_i^2 = (I - a A_i) v_i^1
    # - a lam_1 mean_j A_j v_j^1; dJ/dlam_0 = mean_i <A_qi phi_i^2 - b_qi,
    # v_i^2> where L_Q = 0.5 t^T A_q t - b_q^T t + const.
    rng, params, tasks = _setup(10, sizes=(3, 2), n_tasks=3)
    alpha, lam = 0.1, np.array([0.4, -0.3])
    config = mm.MethodConfig(
        inner_steps=2,
        learning_rate=alpha,
        sharing=mm.GradientSharing(lam_c=[lam, lam]),
    )
    a_s, b_s, a_q, b_q = [], [], [], []
    for task in tasks:
        h, c = nm._linear_hessian_and_offset(
            task["support_x"], task["support_y"], 2
        )
        a_s.append(h), b_s.append(c)
        h, c = nm._linear_hessian_and_offset(
            task["query_x"], task["query_y"], 2
        )
        a_q.append(h), b_q.append(c)
    theta = np.concatenate([params[0].reshape(-1), params[1]])
    n = len(tasks)
    phi = [theta.copy() for _ in range(n)]
    g = [a_s[i] @ phi[i] - b_s[i] for i in range(n)]
    c0 = sum(g) / n
    phi = [phi[i] - alpha * (g[i] + lam[0] * c0) for i in range(n)]
    v = [-alpha * c0 for _ in range(n)]
    g = [a_s[i] @ phi[i] - b_s[i] for i in range(n)]
    c1 = sum(g) / n
    phi = [phi[i] - alpha * (g[i] + lam[1] * c1) for i in range(n)]
    cv = sum(a_s[j] @ v[j] for j in range(n)) / n
    v = [v[i] - alpha * (a_s[i] @ v[i] + lam[1] * cv) for i in range(n)]
    d_lam0 = sum((a_q[i] @ phi[i] - b_q[i]) @ v[i] for i in range(n)) / n
    d_lam1 = sum((a_q[i] @ phi[i] - b_q[i]) @ (-alpha * c1) for i in range(n))
    want = np.array([d_lam0, d_lam1 / n])
    linear = nm.Net.mlp()
    fd = mm.meta_gradients(linear, params, tasks, nm.MSE, config)["lam_c"]
    # Both tensors share lam's value but are separate variables; their
    # gradients sum to the gradient wrt a single shared lam.
    np.testing.assert_allclose(fd[0] + fd[1], want, rtol=1e-7)
    # First order drops the (I - a A_i) and lam_1 * mean_j A_j v_j terms.
    fo = mm.first_order_meta_gradients(linear, params, tasks, nm.MSE, config)
    assert np.abs(fo["lam_c"][0][0] + fo["lam_c"][1][0] - d_lam0) > 1e-6
    np.testing.assert_allclose(
        fo["lam_c"][0][1] + fo["lam_c"][1][1], want[1], rtol=1e-10
    )


# --------------------------------------------------------------------------
# Co-learner
# --------------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["total", "meta_only"])
def test_co_learner_weight_zero_is_maml(weighting):
    rng, params, tasks = _setup(11, SCE)
    co = mm.CoLearner(
        feature_layer=1,
        params=[rng.normal(size=(4, 2)), rng.normal(size=(2,))],
        weight=0.0,
        weighting=weighting,
    )
    config = mm.MethodConfig(inner_steps=2, co_learner=co)
    grads = mm.meta_gradients(TANH, params, tasks, SCE, config)
    _close(
        grads["params"],
        nm.second_order_meta_gradient(TANH, params, tasks, SCE, 2, LR),
    )
    assert all(not g.any() for g in grads["co_learner"])


def test_co_learner_loss_and_weightings():
    rng, params, tasks = _setup(12, sizes=(3, 4, 5, 2))
    w_co, b_co = rng.normal(size=(5, 2)), rng.normal(size=(2,))
    weights = np.array([0.8, 0.2])
    base = mm.MethodConfig(inner_steps=1, task_weights=weights)
    phis = mm.adapt_tasks(TANH, params, tasks, nm.MSE, base)
    lq, lco = [], []
    for phi, task in zip(phis, tasks, strict=True):
        x, y = task["query_x"], task["query_y"]
        lq.append(nm.loss_value(TANH, phi, x, y, nm.MSE))
        h = np.tanh(np.tanh(x @ phi[0] + phi[1]) @ phi[2] + phi[3])
        lco.append(np.mean((h @ w_co + b_co - y) ** 2))
    lq, lco = np.array(lq), np.array(lco)
    for weighting, want in [
        ("total", weights @ (lq + 0.3 * lco)),
        ("meta_only", weights @ lq + 0.3 * lco.mean()),
    ]:
        co = mm.CoLearner(2, [w_co, b_co], 0.3, weighting)
        config = dataclasses.replace(base, co_learner=co)
        got = mm.objective(TANH, params, tasks, nm.MSE, config)
        assert got == pytest.approx(want, rel=1e-13)
    with pytest.raises(ValueError, match="hidden layer"):
        mm.objective(
            TANH,
            params,
            tasks,
            nm.MSE,
            dataclasses.replace(
                base, co_learner=mm.CoLearner(3, [w_co, b_co], 0.3)
            ),
        )


def test_zero_steps_first_order_equals_finite_differences_with_co_learner():
    rng, params, tasks = _setup(13, SCE)
    co = mm.CoLearner(
        1, [rng.normal(size=(4, 2)), rng.normal(size=(2,))], 0.7, "meta_only"
    )
    config = mm.MethodConfig(
        inner_steps=0, co_learner=co, task_weights=np.array([0.3, 0.9])
    )
    fd = mm.meta_gradients(TANH, params, tasks, SCE, config)
    fo = mm.first_order_meta_gradients(TANH, params, tasks, SCE, config)
    _close(fd["params"], fo["params"])
    _close(fd["co_learner"], fo["co_learner"])
    assert np.abs(fd["co_learner"][0]).max() > 1e-3


# --------------------------------------------------------------------------
# Gradient agreement
# --------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["paper", "book"])
def test_ga_orthogonal_updates(form):
    u = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    w = mm.gradient_agreement_weights(u, form)
    np.testing.assert_allclose(w, [9.0 / 14.0, 5.0 / 14.0], rtol=1e-12)
    half = mm.gradient_agreement_weights(u, form, divide_by_batch=True)
    np.testing.assert_allclose(half, w / 2, rtol=1e-15)


def test_ga_known_values_and_degenerate_cases():
    u = np.array([[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(
        mm.gradient_agreement_weights(u, "paper"), [0.0, 1.0], atol=1e-12
    )
    np.testing.assert_allclose(
        mm.gradient_agreement_weights(u, "book"), [0.0, 0.2], atol=1e-12
    )
    opposite = np.array([[1.0, -2.0], [-1.0, 2.0]])
    for form in ("paper", "book"):
        w = mm.gradient_agreement_weights(opposite, form)
        assert np.all(np.isfinite(w))
        np.testing.assert_array_equal(w, [0.0, 0.0])
        single = mm.gradient_agreement_weights(np.array([[0.3, -4.0]]), form)
        np.testing.assert_allclose(single, [1.0], rtol=1e-12)
    with pytest.raises(ValueError, match="form"):
        mm.gradient_agreement_weights(u, "other")


def test_ga_paper_weights_have_unit_l1_norm():
    rng = np.random.default_rng(14)
    for b in (2, 3, 5):
        u = rng.normal(size=(b, 7))
        w = mm.gradient_agreement_weights(u, "paper")
        assert np.sum(np.abs(w)) == pytest.approx(1.0, rel=1e-10)
        book = mm.gradient_agreement_weights(u, "book")
        assert np.sum(np.abs(book)) <= 1.0 + 1e-12


def test_ga_identical_tasks_reduce_to_maml():
    _, params, tasks = _setup(15)
    tasks = [tasks[0]] * 3
    config = mm.MethodConfig(inner_steps=2)
    updates = mm.task_updates(TANH, params, tasks, nm.MSE, config)
    assert updates.shape == (3, 26)
    for form in ("paper", "book"):
        w, grads = mm.gradient_agreement_meta_gradients(
            TANH, params, tasks, nm.MSE, config, form=form
        )
        np.testing.assert_allclose(w, np.full(3, 1 / 3), rtol=1e-10)
        _close(
            grads["params"],
            nm.second_order_meta_gradient(TANH, params, tasks, nm.MSE, 2, LR),
        )


def test_ga_meta_gradient_holds_weights_fixed():
    _, params, tasks = _setup(16, n_tasks=3)
    config = mm.MethodConfig(inner_steps=1, adapted=(2, 3))
    w, grads = mm.gradient_agreement_meta_gradients(
        TANH, params, tasks, nm.MSE, config, form="book"
    )
    assert not np.allclose(w, 1 / 3)
    fixed = mm.meta_gradients(
        TANH,
        params,
        tasks,
        nm.MSE,
        dataclasses.replace(config, task_weights=w),
    )
    _close(grads["params"], fixed["params"], 1e-14)
    # The weighted gradient is sum_i w_i dL_Qi, checked per task.
    per_task = [
        mm.meta_gradients(
            TANH, params, [t], nm.MSE, config, step=nm.DEFAULT_FD_STEP
        )["params"]
        for t in tasks
    ]
    want = [sum(w[i] * per_task[i][j] for i in range(3)) for j in range(4)]
    _close(grads["params"], want)


# --------------------------------------------------------------------------
# Reptile
# --------------------------------------------------------------------------


def test_reptile_one_step_is_mean_support_gradient():
    _, params, tasks = _setup(17, SCE, n_tasks=3)
    config = mm.MethodConfig(inner_steps=1, learning_rate=LR)
    got = mm.reptile_pseudo_gradient(TANH, params, tasks, SCE, config)
    grads = [_grad_s(params, t, SCE) for t in tasks]
    want = [LR * sum(g[j] for g in grads) / 3 for j in range(len(params))]
    _close(got, want, 1e-13)


def test_reptile_weights_and_multiple_steps():
    _, params, tasks = _setup(18)
    config = mm.MethodConfig(inner_steps=3, task_weights=np.array([2.0, -1.0]))
    got = mm.reptile_pseudo_gradient(TANH, params, tasks, nm.MSE, config)
    phis = [
        nm.adapt(TANH, params, t["support_x"], t["support_y"], nm.MSE, 3, LR)
        for t in tasks
    ]
    want = [
        2.0 * (params[j] - phis[0][j]) - (params[j] - phis[1][j])
        for j in range(len(params))
    ]
    _close(got, want, 1e-13)
