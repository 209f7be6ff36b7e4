"""Bad input gets an error that says what was received and how to fix it.

Each test checks the exception type and the meaningful parts of the message
at the call the user made (`MAML(...)`, `compile`, `fit`, `evaluate`,
`predict`, or calling the meta-model). Episodes reach `fit` through a
`keras.utils.PyDataset`, the way kerameta's own datasets feed them. On JAX
and PyTorch Keras first traces `MAML.call` to build the compiled loss and
metrics, so the message arrives wrapped in "Exception encountered when
calling MAML.call()"; on TensorFlow it comes from the traced train step.
Either way it is a `ValueError` that holds kerameta's text.
"""

import contextlib
import functools
import math
import re
import warnings

import keras
import numpy as np
import pytest
from helpers import QUERY
from helpers import SUPPORT
from helpers import episodes as _episode
from helpers import maml
from helpers import mlp

import kerameta

BACKEND = keras.backend.backend()


class _Batches(keras.utils.PyDataset):
    """Serves fixed batches, as a user's own `PyDataset` would."""

    def __init__(self, *batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


# The smallest net: one feature, two hidden units, one output.
_net = functools.partial(mlp, (1, 2, 1), activation=None)


def _maml(**kwargs):
    return maml(_net(), **kwargs)


def _shape(*dims):
    """A regex for a printed shape whose task axis may show as `None`.

    TensorFlow traces the step with an unknown batch (task) axis.
    """
    rest = ", ".join(str(d) for d in dims[1:])
    return rf"\((?:{dims[0]}|None), {rest}\)"


# ----------------------------------------------------------------------
# Episodes: keys, task counts, shot counts, ranks, empty sets
# ----------------------------------------------------------------------
def test_missing_query_x_names_the_missing_key():
    x, y = _episode()
    del x["query_x"]
    with pytest.raises(ValueError) as info:
        _maml().fit(_Batches((x, y)), verbose=0)
    message = str(info.value)
    assert re.search(
        r"Expected `x` to be a dict with keys \['support_x', 'support_y', "
        r"'query_x'\]",
        message,
    )
    assert "Received keys: ['support_x', 'support_y']" in message
    assert "Missing: ['query_x']" in message
    assert "kerameta.data.EpisodeDataset" in message  # how to fix it


def test_query_y_inside_x_says_to_pass_it_as_the_target():
    x, y = _episode()
    x["query_y"] = y
    with pytest.raises(ValueError) as info:
        _maml().fit(_Batches((x,)), verbose=0)
    message = str(info.value)
    assert "unexpected: ['query_y']" in message
    assert "`query_y` is not part of `x`: pass it as the target `y`" in message
    assert "batches of `(x, query_y)`" in message


def test_unknown_key_is_named():
    x, y = _episode()
    x["train"] = x.pop("support_x")
    with pytest.raises(
        ValueError, match=r"Missing: \['support_x'\]; unexpected: \['train'\]"
    ):
        _maml().fit(_Batches((x, y)), verbose=0)


def test_x_not_a_dict():
    x, y = _episode()
    with pytest.raises(
        ValueError,
        match=r"Expected `x` to be a dict with keys .*Received: x of type",
    ):
        _maml().fit(_Batches((x["support_x"], y)), verbose=0)


def test_missing_query_y_in_fit_says_the_target_is_missing():
    x, _ = _episode()
    with pytest.raises(
        ValueError,
        match=r"Expected batches of `\(x, query_y\)`, but the target `y` "
        r"\(the query labels\) is missing",
    ):
        _maml().fit(_Batches((x,)), verbose=0)


def test_task_count_mismatch_in_a_direct_call():
    x, _ = _episode(query_x=(3, 4, 1))
    with pytest.raises(ValueError) as info:
        _maml()(x)
    message = str(info.value)
    assert "Expected the same number of tasks (axis 0)" in message
    assert "support_x.shape=(2, 3, 1)" in message
    assert "query_x.shape=(3, 4, 1)" in message


@pytest.mark.parametrize(
    "shapes, received",
    [
        pytest.param(
            {"query_x": (3, 4, 1)},
            r"query_x\.shape=\(3, 4, 1\)",
            id="query_x",
        ),
        pytest.param(
            {"query_y": (3, 4, 1)},
            r"query_y\.shape=\(3, 4, 1\)",
            id="query_y",
        ),
    ],
)
def test_task_count_mismatch_in_fit(shapes, received):
    with pytest.raises(
        ValueError,
        match=r"Expected the same number of tasks \(axis 0\) in support_x, "
        r"support_y, query_x and the query targets\. Received: .*" + received,
    ):
        _maml().fit(_Batches(_episode(**shapes)), verbose=0)


def test_task_count_mismatch_in_arrays_is_caught_before_keras():
    # Given as arrays, the first batch is checked on the host before Keras
    # splits them (Keras would say "Data cardinality is ambiguous").
    x, y = _episode(query_x=(3, 4, 1))
    with pytest.raises(
        ValueError,
        match=r"Expected the same number of tasks \(axis 0\).*query_x\.shape="
        r"\(3, 4, 1\)",
    ):
        _maml().fit(x, y, verbose=0)


def test_support_shot_mismatch():
    with pytest.raises(
        ValueError,
        match=r"Expected `support_x` and `support_y` to hold the same number "
        r"of examples per task \(axis 1\)\. Received: support_x\.shape="
        + _shape(2, 3, 1)
        + r", support_y\.shape="
        + _shape(2, 2, 1),
    ):
        _maml().fit(_Batches(_episode(support_y=(2, 2, 1))), verbose=0)


def test_query_shot_mismatch_in_evaluate():
    with pytest.raises(
        ValueError,
        match=r"Expected `query_x` and `query_y` to hold the same number of "
        r"examples per task \(axis 1\)\. Received: query_x\.shape="
        + _shape(2, 4, 1)
        + r", query_y\.shape="
        + _shape(2, 5, 1),
    ):
        _maml().evaluate(_Batches(_episode(query_y=(2, 5, 1))), verbose=0)


def test_support_x_without_feature_axis():
    # The model takes (1,) features, so episodes are [T, S, 1].
    with pytest.raises(
        ValueError,
        match=r"Expected `support_x` to have rank >= 3, shaped \(tasks, "
        r"examples, \*features\)\. Received: support_x\.shape="
        + r"\((?:2|None), 3\)\. Add the task axis .*`x\[\.\.\., None\]`",
    ):
        _maml().fit(_Batches(_episode(support_x=(2, 3))), verbose=0)


def _functional_net():
    inputs = keras.Input((1,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def _rank_4_episode():
    # One axis too many for a model that takes (1,) features: [T, S, 1, 1].
    x, _ = _episode(support_x=(2, 3, 1, 1), query_x=(2, 4, 1, 1))
    return x


def test_rank_too_high_for_a_functional_model():
    maml = kerameta.MAML(_functional_net())
    maml.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError,
        match=r"Expected `support_x` to have rank 3: the task axis followed "
        r"by the wrapped model's input shape \(rank 2 with its batch "
        r"axis\)\. Received: support_x\.shape=\(2, 3, 1, 1\)",
    ):
        maml(_rank_4_episode())


def test_rank_too_high_for_a_sequential_model():
    maml = _maml()
    with pytest.raises(
        ValueError,
        match=r"Expected `support_x` to have rank 3: the task axis followed "
        r"by the wrapped model's input shape",
    ):
        maml(_rank_4_episode())


def test_support_y_without_example_axis():
    with pytest.raises(
        ValueError,
        match=r"Expected `support_y` to have rank >= 2, shaped \(tasks, "
        r"examples, \.\.\.\)\. Received: support_y\.shape=\((?:2|None),\)",
    ):
        _maml().fit(_Batches(_episode(support_y=(2,))), verbose=0)


def test_support_and_query_feature_mismatch():
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    maml = kerameta.MAML(net)
    maml.compile(optimizer="sgd", loss="mse")
    x, _ = _episode(support_x=(2, 3, 2), query_x=(2, 4, 3))
    with pytest.raises(
        ValueError,
        match=r"Expected support and query examples to have the same shape\. "
        r"Received: support_x\.shape=\(2, 3, 2\), query_x\.shape=\(2, 4, 3\)",
    ):
        maml(x)


def test_empty_support_set():
    with pytest.raises(
        ValueError,
        match=r"The support set is empty: adaptation needs at least one "
        r"support example per task\. Received: support_x\.shape="
        + _shape(2, 0, 1),
    ):
        _maml().fit(
            _Batches(_episode(support_x=(2, 0, 1), support_y=(2, 0, 1))),
            verbose=0,
        )


def test_empty_query_set_in_fit():
    with pytest.raises(
        ValueError,
        match=r"The query set is empty: it needs at least one query example "
        r"per task\. Received: query_x\.shape=" + _shape(2, 0, 1),
    ):
        _maml().fit(
            _Batches(_episode(query_x=(2, 0, 1), query_y=(2, 0, 1))),
            verbose=0,
        )


def test_empty_query_set_in_predict():
    x, _ = _episode(query_x=(2, 0, 1))
    with pytest.raises(
        ValueError,
        match=r"The query set is empty.*Received: query_x\.shape="
        + _shape(2, 0, 1),
    ):
        _maml().predict(x, verbose=0)


def test_per_example_sample_weight_is_refused():
    x, y = _episode()
    with pytest.raises(
        ValueError,
        match=r"kerameta does not support `sample_weight` yet: every task "
        r"and query example weighs the same",
    ):
        _maml().fit(
            x, y, sample_weight=np.ones(QUERY[:2], "float32"), verbose=0
        )


def test_per_task_sample_weight_is_refused():
    x, y = _episode()
    with pytest.raises(
        ValueError, match=r"kerameta does not support `sample_weight` yet"
    ):
        _maml().fit(_Batches((x, y, np.ones((2,), "float32"))), verbose=0)


# ----------------------------------------------------------------------
# adapt: one task's support set, without the task axis
# ----------------------------------------------------------------------
def _compiled_functional_maml():
    maml = kerameta.MAML(_functional_net())
    maml.compile(optimizer="sgd", loss="mse")
    return maml


def test_adapt_bad_inner_steps():
    x, _ = _episode()
    with pytest.raises(
        ValueError,
        match=r"`inner_steps` must be a non-negative integer\. Received: "
        r"inner_steps=-1",
    ):
        _compiled_functional_maml().adapt(
            x["support_x"][0], x["support_y"][0], inner_steps=-1
        )


@pytest.mark.parametrize(
    "support_x, support_y",
    [(SUPPORT, SUPPORT), (SUPPORT[1:2], SUPPORT[1:])],
    ids=["batch_of_tasks", "no_feature_axis"],
)
def test_adapt_explains_its_own_shapes(support_x, support_y):
    x, _ = _episode(support_x=support_x, support_y=support_y)
    with pytest.raises(
        ValueError,
        match=r"`adapt` takes the support set of one task.*Received: "
        + re.escape(f"support_x.shape={support_x}"),
    ):
        _compiled_functional_maml().adapt(x["support_x"], x["support_y"])


def test_adapt_runs_with_warnings_as_errors():
    x, _ = _episode()
    adapted = _compiled_functional_maml().adapt(
        x["support_x"][0], x["support_y"][0]
    )
    assert isinstance(adapted, keras.Model)


# ----------------------------------------------------------------------
# Constructor arguments
# ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -1, 1.0, 1.5, True, "1", None])
def test_bad_inner_steps(value):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"`inner_steps` must be a positive integer. Received: "
            f"inner_steps={value!r}"
        ),
    ):
        kerameta.MAML(_net(), inner_steps=value)


@pytest.mark.parametrize("value", [-1, 2.0, False])
def test_bad_evaluation_inner_steps(value):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`evaluation_inner_steps` must be a non-negative integer. "
            f"Received: evaluation_inner_steps={value!r}"
        ),
    ):
        kerameta.MAML(_net(), evaluation_inner_steps=value)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("inner_steps", 0, "`inner_steps` must be a positive integer"),
        (
            "evaluation_inner_steps",
            -2,
            "`evaluation_inner_steps` must be a non-negative integer",
        ),
        (
            "inner_learning_rate",
            math.nan,
            "`inner_learning_rate` must be a finite, non-negative number",
        ),
    ],
)
def test_setters_check_too(name, value, message):
    maml = kerameta.MAML(_net())
    with pytest.raises(
        ValueError, match=re.escape(f"{message}. Received: {name}={value!r}")
    ):
        setattr(maml, name, value)


@pytest.mark.parametrize("value", [-0.01, math.nan, math.inf, True, "0.01"])
def test_bad_inner_learning_rate(value):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`inner_learning_rate` must be a finite, non-negative number. "
            f"Received: inner_learning_rate={value!r}"
        ),
    ):
        kerameta.MAML(_net(), inner_learning_rate=value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inner_steps": np.int64(2)},
        {"evaluation_inner_steps": np.int32(3)},
        {"inner_learning_rate": np.float32(0.01)},
    ],
    ids=["inner_steps", "evaluation_inner_steps", "inner_learning_rate"],
)
def test_numpy_scalars_are_accepted(kwargs):
    maml = kerameta.MAML(_net(), **kwargs)
    name, value = next(iter(kwargs.items()))
    assert getattr(maml, name) == value
    # Stored as Python numbers, so that `get_config` stays JSON.
    assert type(getattr(maml, name)) in (int, float)


def test_unknown_meta_gradient():
    with pytest.raises(
        ValueError,
        match=r"Unknown `meta_gradient`\. Expected one of \['checkpointed', "
        r"'first_order', 'implicit', 'multi_step', 'second_order'\] or a "
        r"`kerameta\.meta_gradients\.MetaGradient` "
        r"instance\. Received: meta_gradient='third_order'",
    ):
        kerameta.MAML(_net(), meta_gradient="third_order")


@pytest.mark.parametrize("value", ["yes", "true", None])
def test_unknown_vectorize_tasks(value):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`vectorize_tasks` must be 'auto', True or False. Received: "
            f"vectorize_tasks={value!r}"
        ),
    ):
        kerameta.MAML(_net(), vectorize_tasks=value)


def test_vectorize_tasks_true_is_refused_on_tensorflow_only(backend):
    if backend != "tensorflow":
        maml = kerameta.MAML(_net(), vectorize_tasks=True)
        assert maml.vectorize_tasks is True
        return
    with pytest.raises(
        ValueError,
        match=r"`vectorize_tasks=True` is not supported on the TensorFlow "
        r"backend.*Use 'auto' or False",
    ):
        kerameta.MAML(_net(), vectorize_tasks=True)


@pytest.mark.parametrize(
    "make_model, received",
    [
        (lambda: keras.layers.Dense(1), "Dense"),
        (lambda: lambda x: x, "function"),
        (lambda: None, "NoneType"),
    ],
    ids=["layer", "function", "none"],
)
def test_model_not_a_keras_model(make_model, received):
    with pytest.raises(
        TypeError,
        match=r"`model` must be a `keras\.Model` \(Sequential, functional "
        rf"or subclassed\)\. Received: model of type {received}$",
    ):
        kerameta.MAML(make_model())


def test_unbuilt_model():
    net = keras.Sequential([keras.layers.Dense(1)], name="unbuilt")
    with pytest.raises(
        ValueError,
        match=r"The model 'unbuilt' is not built, so its weights do not "
        r"exist yet.*`keras\.Input\(shape\)`.*`model\.build\(input_shape\)`",
    ):
        kerameta.MAML(net)


def test_model_without_trainable_weights():
    net = _net()
    net.trainable = False
    with pytest.raises(
        ValueError, match=r"has no trainable weights, so there is nothing"
    ):
        kerameta.MAML(net)


# ----------------------------------------------------------------------
# compile, and using the meta-model before compile
# ----------------------------------------------------------------------
def test_compile_without_loss():
    maml = kerameta.MAML(_net())
    with pytest.raises(
        ValueError,
        match=r"`loss` is required: it is the task loss.*Received: "
        r"loss=None\. Pass e\.g\. `loss='mse'`",
    ):
        maml.compile(optimizer="sgd")


@pytest.mark.parametrize(
    "loss, received",
    [
        (
            ["mse", "mse"],
            r"a list of 2\), but the model's targets do not "
            r"match it: a single output",
        ),
        (
            {"query": "mse"},
            r"a dict with keys \['query'\]\), but the model's "
            r"targets do not match it: a single output",
        ),
    ],
    ids=["list", "dict"],
)
def test_losses_per_output_for_a_single_output_model(loss, received):
    maml = kerameta.MAML(_net())
    maml.compile(optimizer="sgd", loss=loss)
    with pytest.raises(
        ValueError, match=r"`loss` has one loss per output \(" + received
    ):
        maml.fit(_Batches(_episode()), verbose=0)


def test_fit_before_compile():
    maml = kerameta.MAML(_net())
    with pytest.raises(ValueError, match=r"You must call `compile\(\)`"):
        maml.fit(_Batches(_episode()), verbose=0)


def test_evaluate_before_compile():
    maml = kerameta.MAML(_net())
    with pytest.raises(ValueError, match=r"You must call `compile\(\)`"):
        maml.evaluate(_Batches(_episode()), verbose=0)


def test_predict_before_compile():
    maml = kerameta.MAML(_net())
    with pytest.raises(
        ValueError,
        match=r"The meta-model has no task loss yet\. Call "
        r"`compile\(loss=\.\.\.\)` before `fit`, `evaluate`, `predict`",
    ):
        maml.predict(_episode()[0], verbose=0)


def test_torch_jit_compile_with_second_order_task_loop(backend):
    maml = kerameta.MAML(_net(), vectorize_tasks=False)
    if backend != "torch":
        pytest.skip("torch.compile only")
    with pytest.raises(
        ValueError,
        match=r"`jit_compile=True` \(torch\.compile\) cannot differentiate "
        r"twice.*Use `jit_compile=False`, a first-order meta-gradient",
    ):
        maml.compile(optimizer="sgd", loss="mse", jit_compile=True)


# ----------------------------------------------------------------------
# A non-finite meta-loss stops fit and keeps the last finite weights
# ----------------------------------------------------------------------
def _to_numpy(variable):
    """A copy of a variable's value as a NumPy array."""
    with warnings.catch_warnings():
        # NumPy 2.4 warns that Keras variables (JAX) and torch tensors
        # implement `__array__` without `copy`; `get_weights` and
        # `ops.convert_to_numpy` both go through it.
        warnings.filterwarnings(
            "ignore",
            message="__array__ implementation doesn't accept a copy keyword",
            category=DeprecationWarning,
        )
        return np.array(keras.ops.convert_to_numpy(variable.value), copy=True)


def _weights(model):
    return [_to_numpy(v) for v in model.weights]


class _WeightsAfterBatch(keras.callbacks.Callback):
    """Records the weights after each training batch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(_weights(self.model))


@contextlib.contextmanager
def _warns_non_finite(match):
    """`pytest.warns(RuntimeWarning, match=match)` for a `fit` call.

    `pytest.warns` records every warning and re-emits the others, so the
    NumPy 2.4 `__array__` deprecation that Keras's log conversion raises on
    PyTorch is silenced inside it.
    """
    with pytest.warns(RuntimeWarning, match=match):
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="__array__ implementation doesn't accept a copy",
                category=DeprecationWarning,
            )
            yield


def _assert_weights_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, e)


def test_inf_in_data_stops_fit_and_keeps_last_finite_weights():
    good = _episode(seed=1)
    x, y = _episode(seed=2)
    x["support_y"][0, 0, 0] = np.inf  # the inner step diverges on task 0
    maml = _maml()
    recorder = _WeightsAfterBatch()
    with _warns_non_finite(
        r"The meta-loss is not finite \((nan|inf)\) at batch 1: training "
        r"stopped, and the weights keep their last finite values"
    ):
        history = maml.fit(
            _Batches(good, (x, y), good),
            epochs=3,
            callbacks=[recorder],
            shuffle=False,  # Keras would shuffle the order of the batches
            verbose=0,
        )
    # Stopped in the first of three epochs, right after the bad batch.
    assert len(history.history["loss"]) == 1
    assert len(recorder.weights) == 2
    _assert_weights_equal(_weights(maml), recorder.weights[0])
    _assert_weights_equal(recorder.weights[1], recorder.weights[0])
    # The bad step did not count as an optimizer step either.
    assert int(_to_numpy(maml.optimizer.iterations)) == 1


def test_huge_inner_learning_rate_stops_fit_and_keeps_weights():
    maml = _maml(inner_learning_rate=1e30)
    before = _weights(maml)
    tasks = kerameta.data.SinusoidTasks(
        shots=3, tasks_per_batch=2, num_batches=2, seed=0
    )
    with _warns_non_finite(
        r"The meta-loss is not finite \((nan|inf)\) at batch 0.*"
        r"A smaller `inner_learning_rate`"
    ):
        history = maml.fit(tasks, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 1
    _assert_weights_equal(_weights(maml), before)


def test_update_that_overflows_the_optimizer_state_is_refused():
    # A finite but huge meta-gradient overflows Adam's second moment to inf;
    # the next step would write NaN into the weights. Neither is applied.
    net = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="zeros")]
    )
    maml = kerameta.MAML(net, inner_learning_rate=0.0)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    ones = np.ones((2, 4, 1), "float32")
    x = {"support_x": 10 * ones, "support_y": ones, "query_x": 10 * ones}
    y = np.full((2, 4, 1), 5e18, "float32")
    before = _weights(maml)
    with _warns_non_finite(
        r"The meta-loss is not finite \(nan\) at batch 0.*would overflow"
    ):
        history = maml.fit(x, y, batch_size=2, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1
    _assert_weights_equal(_weights(maml), before)
    for variable in maml.optimizer.variables:
        assert np.all(np.isfinite(_to_numpy(variable)))
