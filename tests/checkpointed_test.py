"""The checkpointed meta-gradient (`kerameta.meta_gradients.Checkpointed`).

It is exact second-order MAML computed by an explicit adjoint: the forward
pass keeps the fast weights before a few inner steps (`checkpoints`), the
backward pass recomputes the others from them without a graph and
differentiates one step at a time. So it must equal `"second_order"` to
float tolerance wherever it is accepted (an MLP, Meta-SGD, ANIL, a conv net
with batch normalization, gradient agreement, the co-learner; vectorized
and looped; through `fit`, compiled and eager; whether steps are recomputed
or all stored), and its backward pass must differentiate each inner step
exactly once and recompute the steps its schedule says (the schedule itself:
`checkpoint_schedule_test.py`). Memory is measured by the benchmark
(`benchmarks/meta_gradient_memory.py`), and on JAX by XLA's buffer
assignment, below.
"""

import keras
import numpy as np
import pytest
from helpers import assert_keras_round_trip
from helpers import mlp
from meta_gradient_test import _assert_close as _assert_reference_close
from meta_gradient_test import _batch as _image_batch
from meta_gradient_test import _case as _reference_case
from meta_gradient_test import _check_kinks
from meta_gradient_test import _maml as _reference_maml
from meta_gradient_test import _meta_gradient
from meta_gradient_test import _reference
from methods_test import SIZES
from methods_test import _assert_close
from methods_test import _assign
from methods_test import _batch
from methods_test import _case
from methods_test import _f32
from methods_test import _gradients
from methods_test import _numpy

import kerameta
from kerameta.meta_gradients import Checkpointed
from kerameta.meta_gradients import InnerLoop
from kerameta.src.episodes import validate_episode
from kerameta.src.meta_gradients.checkpointed import DEFAULT_CHECKPOINTS
from kerameta.src.meta_gradients.checkpointed import checkpoint_schedule

BACKEND = keras.backend.backend()
LR = 0.3
RTOL = 1e-5
# The vectorized and looped task paths; TensorFlow only loops.
VECTORIZE = [False] if BACKEND == "tensorflow" else [True, False]

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


def _meta_model(params, order, steps=2, vectorize=None, **kwargs):
    model = mlp(SIZES)
    _assign(model.trainable_variables, params)
    meta = kerameta.MAML(
        model,
        inner_steps=steps,
        inner_learning_rate=LR,
        meta_gradient=order,
        vectorize_tasks=VECTORIZE[0] if vectorize is None else vectorize,
        **kwargs,
    )
    meta.compile(optimizer="sgd", loss="mse", jit_compile=False)
    return meta


def _compare(
    params,
    tasks,
    groups=("params",),
    setup=None,
    checkpointed="checkpointed",
    **kwargs,
):
    """Checkpointed against second order: objective and meta-gradients."""
    results = {}
    estimators = {"second_order": "second_order", "checkpointed": checkpointed}
    for order, estimator in estimators.items():
        meta = _meta_model(params, estimator, **kwargs)
        if setup is not None:
            setup(meta)
        results[order] = _gradients(meta, tasks)
    value, grads, aux = results["second_order"]
    checkpointed_value, checkpointed_grads, checkpointed_aux = results[
        "checkpointed"
    ]
    assert checkpointed_value == pytest.approx(value, rel=1e-6)
    # atol: second order's inner loop is rolled on JAX (float rounding in
    # another order), checkpointed's is not.
    np.testing.assert_allclose(
        _numpy(checkpointed_aux["y_pred"]),
        _numpy(aux["y_pred"]),
        rtol=1e-6,
        atol=1e-7,
    )
    for group in groups:
        assert grads[group], f"no meta-gradient for {group}"
        _assert_close(checkpointed_grads[group], grads[group], rtol=RTOL)
    return checkpointed_grads


# --------------------------------------------------------------------------
# Equal to second order
# --------------------------------------------------------------------------
@pytest.mark.parametrize("vectorize", VECTORIZE)
@pytest.mark.parametrize("steps", [1, 3])
def test_mlp_equals_second_order(steps, vectorize):
    params, tasks = _case()
    _compare(params, tasks, steps=steps, vectorize=vectorize)


@pytest.mark.parametrize("vectorize", VECTORIZE)
def test_meta_sgd_equals_second_order(vectorize):
    params, tasks = _case()
    rng = np.random.default_rng(2)
    rates = _f32([rng.uniform(0.05, 0.4, np.shape(p)) for p in params])

    def setup(meta):
        _assign(meta.inner_optimizer.trainable_variables, rates)

    _compare(
        params,
        tasks,
        groups=("params", "rates"),
        setup=setup,
        steps=3,
        vectorize=vectorize,
        inner_optimizer="meta_sgd",
    )


@pytest.mark.parametrize("vectorize", VECTORIZE)
def test_anil_equals_second_order(vectorize):
    params, tasks = _case()
    grads = _compare(
        params,
        tasks,
        steps=3,
        vectorize=vectorize,
        adapted_layers=["head"],
    )
    # The body is not adapted: its meta-gradient comes only through the
    # recomputed steps' products (and the query loss).
    assert all(np.any(g != 0) for g in grads["params"][:4])


def test_gradient_agreement_equals_second_order():
    params, tasks = _case(seed=4, num_tasks=4)
    _compare(params, tasks, steps=2, task_weighting="gradient_agreement")


def test_co_learner_equals_second_order():
    params, tasks = _case()
    rng = np.random.default_rng(3)
    co_params = _f32([rng.normal(size=(8, 1)), rng.normal(size=(1,))])

    def setup(meta):
        _assign(meta.co_learner.head.trainable_variables, co_params)

    _compare(
        params,
        tasks,
        groups=("params", "co_learner"),
        setup=setup,
        steps=2,
        co_learner=kerameta.CoLearner(
            keras.layers.Dense(1), "hidden2", loss_weight=0.7
        ),
    )


@pytest.mark.parametrize("vectorize", VECTORIZE)
def test_every_accepted_switch_together_equals_second_order(vectorize):
    """ANIL + Meta-SGD + gradient agreement + co-learner."""
    params, tasks = _case(seed=5, num_tasks=3)
    rng = np.random.default_rng(7)
    rates = _f32([rng.uniform(0.05, 0.4, np.shape(p)) for p in params[2:]])
    co_params = _f32([rng.normal(size=(8, 1)), rng.normal(size=(1,))])

    def setup(meta):
        _assign(meta.inner_optimizer.trainable_variables, rates)
        _assign(meta.co_learner.head.trainable_variables, co_params)

    _compare(
        params,
        tasks,
        groups=("params", "rates", "co_learner"),
        setup=setup,
        steps=3,
        vectorize=vectorize,
        adapted_layers=["hidden2", "head"],
        inner_optimizer="meta_sgd",
        task_weighting="gradient_agreement",
        co_learner=kerameta.CoLearner(keras.layers.Dense(1), "hidden1"),
    )


def _conv_paths():
    # (data_format, vectorize_tasks) pairs each backend runs eagerly. JAX
    # recompiles an eager `lax.map` over conv tasks at every call, so its
    # looped conv path is checked compiled, below; torch.vmap cannot run
    # channels_last convolutions with per-task kernels (DESIGN.md §3).
    if BACKEND == "jax":
        return [("channels_last", True)]
    if BACKEND == "torch":
        return [("channels_last", False), ("channels_first", True)]
    return [("channels_last", False)]


@pytest.mark.parametrize("data_format, vectorize", _conv_paths())
@pytest.mark.parametrize("steps", [1, 3])
def test_conv_batch_norm_equals_second_order(steps, data_format, vectorize):
    _check_kinks("conv_bn", steps)
    tasks = _reference_case("conv_bn")[2]
    x, y = _image_batch(tasks, data_format)
    results = {}
    # Two copies: at 3 steps one is recomputed (batch moments included).
    estimators = {"second_order": "second_order"}
    estimators["checkpointed"] = Checkpointed(checkpoints=2)
    for order, estimator in estimators.items():
        maml = _reference_maml(
            "conv_bn",
            estimator,
            steps,
            data_format=data_format,
            vectorize_tasks=vectorize,
        )
        assert maml.vectorize_tasks is vectorize
        results[order] = _meta_gradient(maml, x, y)
    assert results["checkpointed"][0] == pytest.approx(
        results["second_order"][0], rel=1e-6
    )
    _assert_reference_close(
        results["checkpointed"][1], results["second_order"][1]
    )
    # And both equal the float64 finite-difference reference.
    _assert_reference_close(
        results["checkpointed"][1],
        _reference("conv_bn", "second_order", steps),
    )


# --------------------------------------------------------------------------
# The backward pass recomputes each inner step once
# --------------------------------------------------------------------------
class _CountingCheckpointed(Checkpointed):
    """Counts the support gradients of the inner loops it builds."""

    def run_inner_loop(self, loop, fast, inner_steps):
        self.calls = {True: 0, False: 0}
        rebuild = loop.rebuild

        def counted_rebuild(values, constants):
            inner = rebuild(values, constants)
            gradients = inner.gradients

            def counted(fast, create_graph, step=None):
                self.calls[create_graph] += 1
                return gradients(fast, create_graph, step)

            inner.gradients = counted
            return inner

        loop.rebuild = counted_rebuild
        return super().run_inner_loop(loop, fast, inner_steps)


@pytest.mark.parametrize(
    "steps, checkpoints, recomputed",
    [(1, None, 0), (4, DEFAULT_CHECKPOINTS, 0), (5, 2, 3), (3, 1, 3)],
)
def test_backward_differentiates_each_inner_step_once(
    steps, checkpoints, recomputed
):
    assert checkpoint_schedule(steps, checkpoints).recomputed_steps == (
        recomputed
    )
    params, tasks = _case()
    counting = _CountingCheckpointed(checkpoints=checkpoints)
    meta = _meta_model(params, counting, steps=steps)
    # The objective alone: a forward pass without any graph.
    x, y = _batch(tasks)
    meta.evaluate(x, y, batch_size=len(tasks), verbose=0)
    assert counting.calls == {False: steps, True: 0}
    # With its meta-gradient: one differentiable recomputation per step,
    # and the schedule's recomputations without a graph.
    _gradients(meta, tasks)
    assert counting.calls == {False: steps + recomputed, True: steps}


@pytest.mark.skipif(
    BACKEND != "torch",
    reason="eager memory: JAX and TensorFlow compile the step, and their "
    "compilers free each buffer after its last use (XLA's buffers: below)",
)
def test_backward_frees_each_state_once_its_step_is_reversed(monkeypatch):
    """On PyTorch what Python references stays allocated: the fast weights
    before a step, stored or recomputed, must be gone once the step is
    reversed, or memory grows with the steps as if every one were stored."""
    import weakref

    from kerameta.src import backend as seam

    vjp, reversed_states, alive = seam.vjp, [], []

    def spy(fn, primals, cotangents):
        alive.append(sum(ref() is not None for ref in reversed_states))
        cotangents = vjp(fn, primals, cotangents)
        reversed_states.append(weakref.ref(primals[0]))
        return cotangents

    monkeypatch.setattr(seam, "vjp", spy)
    params, tasks = _case()
    _gradients(_meta_model(params, Checkpointed(checkpoints=2), steps=6), tasks)
    # Steps 5 to 0, each reversed with no earlier step's weights alive.
    assert alive == [0] * 6


@pytest.mark.parametrize("steps, checkpoints", [(5, 2), (7, 3)])
def test_recomputed_steps_equal_second_order(steps, checkpoints):
    """Steps recomputed from checkpoints (5 and 7 steps: segments of
    unequal lengths), with every meta-learned value they read: the body
    under ANIL and Meta-SGD's rates."""
    params, tasks = _case(seed=8)
    rng = np.random.default_rng(9)
    rates = _f32([rng.uniform(0.05, 0.2, np.shape(p)) for p in params[2:]])

    def setup(meta):
        _assign(meta.inner_optimizer.trainable_variables, rates)

    _compare(
        params,
        tasks,
        groups=("params", "rates"),
        setup=setup,
        steps=steps,
        adapted_layers=["hidden2", "head"],
        inner_optimizer="meta_sgd",
        checkpointed=Checkpointed(checkpoints=checkpoints),
    )


def _compiled_temp_bytes(order, steps, vectorize, shots=1024, width=64):
    """XLA's scratch memory for the meta-gradient of an MLP: with the
    defaults, a wide support set (activations far larger than the weights);
    with few shots and a large `width`, the weights dominate."""
    import jax  # the JAX backend only; see the skips below

    rng = np.random.default_rng(0)
    tasks = 2
    x = {
        "support_x": rng.random((tasks, shots, 4), dtype=np.float32),
        "support_y": rng.random((tasks, shots, 1), dtype=np.float32),
        "query_x": rng.random((tasks, 8, 4), dtype=np.float32),
    }
    y = rng.random((tasks, 8, 1), dtype=np.float32)
    net = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(width, activation="tanh"),
            keras.layers.Dense(width, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    meta = kerameta.MAML(
        net, inner_steps=steps, meta_gradient=order, vectorize_tasks=vectorize
    )
    meta.compile(optimizer="sgd", loss="mse")
    episode = validate_episode(x, y, require_query_y=True)
    theta, non_trainable = meta._state_values()

    def objective(values):
        return meta._meta_objective(values, non_trainable, episode, steps)[0]

    compiled = jax.jit(jax.grad(objective)).lower(theta).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.skipif(
    BACKEND != "jax",
    reason="reads XLA's memory analysis of the compiled step (JAX only)",
)
@pytest.mark.parametrize("vectorize", [True, False])
def test_compiled_memory_does_not_grow_with_activations_per_step(vectorize):
    """XLA's buffer assignment of the jit-compiled meta-gradient: no timing,
    no RSS. XLA is free to schedule the backward's recomputations early,
    merge them with the forward pass or hoist their buffers, any of which
    brings back one step's activations per step; the seam prevents it.
    """
    one = _compiled_temp_bytes("checkpointed", 1, vectorize)
    six = _compiled_temp_bytes("checkpointed", 6, vectorize)
    # Measured: +3% (vectorized) and +2% (looped) for 5 more steps.
    assert six < 1.2 * one, (one, six)
    # Second order keeps every step's activations: the case separates.
    assert _compiled_temp_bytes("second_order", 6, vectorize) > 2.5 * one


@pytest.mark.slow  # 17 s: three compilations
@pytest.mark.skipif(
    BACKEND != "jax",
    reason="reads XLA's memory analysis of the compiled step (JAX only)",
)
def test_compiled_memory_holds_only_the_stored_copies_of_the_weights():
    """The weights dominate (256 units, 8 shots; looped over tasks, the
    benchmark's JAX path). One stored copy at 6 steps costs what 1 step
    does: XLA neither keeps the forward pass's weights alive for the
    recomputations nor allocates every step's outputs up front (which
    `lax.map`'s zero fills would, run all at the program's start)."""
    weights = 2 * 4 * (4 * 256 + 256 + 256 * 256 + 256 + 256 + 1)  # 2 tasks

    def temp_bytes(checkpoints, steps):
        estimator = Checkpointed(checkpoints=checkpoints)
        return _compiled_temp_bytes(estimator, steps, False, 8, 256)

    one = temp_bytes(None, 1)
    # Measured: +0.04 copies; storing all 6 copies: +4.
    assert temp_bytes(1, 6) < one + 0.5 * weights, one
    assert temp_bytes(None, 6) > one + 3 * weights, one


# --------------------------------------------------------------------------
# fit, compiled and eager, and saving
# --------------------------------------------------------------------------
def _fit_weights(order, steps=3, **compile_kwargs):
    params, tasks = _case(seed=6, num_tasks=4)
    meta = _meta_model(
        params,
        order,
        steps=steps,
        vectorize="auto",
        inner_optimizer="meta_sgd",
    )
    meta.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="mse",
        metrics=["mae"],
        **compile_kwargs,
    )
    x, y = _batch(tasks)
    history = meta.fit(
        x, y, batch_size=2, epochs=2, shuffle=False, verbose=0
    ).history
    return history, [_numpy(v) for v in meta.trainable_variables]


def _compiled_modes():
    if BACKEND == "torch":
        # Keras's "auto" is eager on torch; torch.compile is refused below.
        return [pytest.param({"run_eagerly": True}, id="eager")]
    # CI time: eager JAX compiles every op once (25 s); JAX users run the
    # compiled step, and TF's eager row runs here.
    eager_marks = [pytest.mark.slow] if BACKEND == "jax" else []
    return [
        pytest.param({"jit_compile": "auto"}, id="compiled"),
        pytest.param({"run_eagerly": True}, id="eager", marks=eager_marks),
    ]


@pytest.mark.parametrize("compile_kwargs", _compiled_modes())
def test_fit_equals_second_order(compile_kwargs):
    history, weights = _fit_weights("second_order", **compile_kwargs)
    checkpointed_history, checkpointed_weights = _fit_weights(
        "checkpointed", **compile_kwargs
    )
    assert set(checkpointed_history) == {"loss", "mae"}
    np.testing.assert_allclose(
        checkpointed_history["loss"], history["loss"], rtol=1e-5
    )
    for actual, expected in zip(checkpointed_weights, weights):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="torch.compile is refused for the checkpointed meta-gradient",
)
def test_jit_compiled_conv_batch_norm_applies_the_reference_meta_gradient():
    # JAX: the looped conv path (`lax.map`) under `jit`; TensorFlow: XLA.
    steps, learning_rate = 3, 1.0
    _check_kinks("conv_bn", steps)
    tasks = _reference_case("conv_bn")[2]
    # One copy: the recomputations run under `jit` too.
    maml = _reference_maml(
        "conv_bn", Checkpointed(checkpoints=1), steps, vectorize_tasks=False
    )
    maml.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    variables = maml.model.trainable_variables
    before = [_numpy(v.value) for v in variables]
    maml.train_on_batch(*_image_batch(tasks))
    update = [
        (b - _numpy(v.value)) / learning_rate for b, v in zip(before, variables)
    ]
    _assert_reference_close(
        update,
        _reference("conv_bn", "second_order", steps),
        rtol=2e-5,
        atol=2e-6,
    )


def test_keras_file_round_trip(tmp_path):
    params, tasks = _case(num_tasks=4)
    meta = _meta_model(params, "checkpointed", steps=2)
    x, y = _batch(tasks)
    meta.fit(x, y, batch_size=2, verbose=0)
    loaded = assert_keras_round_trip(
        meta, tmp_path / "checkpointed.keras", x, batch_size=2, atol=1e-6
    )
    assert type(loaded.meta_gradient) is Checkpointed
    assert (
        loaded.get_config()["meta_gradient"]
        == (meta.get_config()["meta_gradient"])
    )


def test_string_id_and_config():
    meta = kerameta.MAML(kerameta.models.mlp(), meta_gradient="checkpointed")
    assert isinstance(meta.meta_gradient, Checkpointed)
    assert repr(meta.meta_gradient) == (
        f"Checkpointed(checkpoints={DEFAULT_CHECKPOINTS})"
    )
    config = kerameta.meta_gradients.serialize(Checkpointed(checkpoints=2))
    restored = kerameta.meta_gradients.deserialize(config)
    assert type(restored) is Checkpointed and restored.checkpoints == 2
    assert kerameta.meta_gradients.get("checkpointed").name == "checkpointed"


# --------------------------------------------------------------------------
# Refused
# --------------------------------------------------------------------------
def test_gradient_sharing_is_refused():
    with pytest.raises(
        ValueError,
        match=r"checkpointed meta-gradient cannot be used here: gradient "
        r"sharing.*meta_gradient='second_order'.*MultiStep",
    ):
        kerameta.MAML(
            kerameta.models.mlp(),
            meta_gradient="checkpointed",
            gradient_sharing=kerameta.GradientSharing(),
        )


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile only")
def test_torch_compile_is_refused():
    params, _ = _case()
    meta = _meta_model(params, "checkpointed")
    with pytest.raises(
        ValueError,
        match=r"cannot run under `jit_compile=True` on PyTorch.*"
        r"jit_compile=False",
    ):
        meta.compile(optimizer="adam", loss="mse", jit_compile=True)


def test_an_inner_loop_without_rebuild_is_refused():
    def identity(*args):
        return args[0]

    loop = InnerLoop(identity, identity, identity)
    with pytest.raises(
        ValueError, match=r"needs an `InnerLoop` with .*`rebuild`"
    ):
        Checkpointed().run_inner_loop(loop, [np.zeros((2, 3))], 2)
