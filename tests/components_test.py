"""One battery for every component of every family, driven by the registries.

Each family (`inner_optimizers`, `meta_gradients`, `task_weightings`,
`gradient_sharing`, `co_learners`, `outer_rules`) lists its built-ins in
`ALL_OBJECTS`. Each row of `CASES` names the components it covers and the
meta-model arguments that use them (components that compose share a row),
up to the full combination; a test fails when a registry gains a component
that no row covers. Every row is
checked the same way: resolution by string id and by config, a finite
`fit` step, a `.keras` round trip (same config, weights and predictions)
and resumption (the loaded model trains on exactly as the original). The
reference meta-gradient of each component is pinned in `methods_test.py`,
`meta_gradient_test.py` and the estimators' own test files.
"""

import pathlib

import keras
import numpy as np
import pytest
from keras import ops

import kerameta
from kerameta.src.engine import composition

FAMILIES = {
    "inner_optimizer": kerameta.inner_optimizers,
    "meta_gradient": kerameta.meta_gradients,
    "task_weighting": kerameta.task_weightings,
    "gradient_sharing": kerameta.gradient_sharing,
    "co_learner": kerameta.co_learners,
    "outer_rule": kerameta.outer_rules,
}


def _net():
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(8, activation="tanh", name="hidden1")(inputs)
    hidden = keras.layers.Dense(8, activation="tanh", name="hidden2")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))


def _co_learner():
    head = keras.Sequential(
        [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    return kerameta.CoLearner(head, "hidden2", loss_weight=0.5)


# Each row: the components it covers, as (family, string id or class name),
# and the meta-model arguments that use them. Components that compose share
# a row (each row compiles its own steps: rows cost seconds).
CASES = {
    "defaults": (
        {
            ("inner_optimizer", "sgd"),
            ("meta_gradient", "second_order"),
            ("task_weighting", "mean"),
            ("outer_rule", "maml"),
        },
        lambda: {
            "inner_optimizer": "sgd",
            "meta_gradient": "second_order",
            "task_weighting": "mean",
            "outer_rule": "maml",
        },
    ),
    "first_order_agreement": (
        {
            ("meta_gradient", "first_order"),
            ("task_weighting", "gradient_agreement"),
        },
        lambda: {
            "meta_gradient": "first_order",
            "task_weighting": kerameta.GradientAgreement(form="book"),
        },
    ),
    "checkpointed_co_learner": (
        {("meta_gradient", "checkpointed"), ("co_learner", "CoLearner")},
        lambda: {"meta_gradient": "checkpointed", "co_learner": _co_learner()},
    ),
    "implicit": (
        {("meta_gradient", "implicit")},
        # A ridge makes the head's inner problem strongly convex, so that
        # conjugate gradient converges (fit warns otherwise).
        lambda: {
            "meta_gradient": kerameta.meta_gradients.Implicit(ridge=1.0),
            "adapted_layers": ["head"],
        },
    ),
    "gradient_sharing": (
        {("gradient_sharing", "gradient_sharing")},
        lambda: {
            "gradient_sharing": kerameta.GradientSharing(
                concurrent_initial=0.2,
                history_initial=0.1,
                history_decay=0.5,
                concurrent="leave_one_out",
                granularity="element",
            )
        },
    ),
    "anil_meta_sgd": (
        {("inner_optimizer", "meta_sgd")},
        lambda: {
            "inner_optimizer": "meta_sgd",
            "adapted_layers": ["head"],
            "adapt_batch_normalization": False,
        },
    ),
    "reptile_everything": (
        {("outer_rule", "reptile")},
        lambda: {
            "cls": kerameta.Reptile,
            "gradient_sharing": kerameta.GradientSharing(
                concurrent_initial=0.5
            ),
            "task_weighting": "gradient_agreement",
            "co_learner": _co_learner(),
        },
    ),
    "everything": (
        {("meta_gradient", "multi_step")},
        lambda: {
            "inner_optimizer": kerameta.MetaSGD(
                initializer=keras.initializers.RandomUniform(0.005, 0.1)
            ),
            "meta_gradient": kerameta.meta_gradients.MultiStep(window=2),
            "adapted_layers": ["hidden2", "head"],
            "gradient_sharing": "gradient_sharing",
            "task_weighting": "gradient_agreement",
            "co_learner": _co_learner(),
        },
    ),
}


def test_every_registered_component_has_a_row():
    covered = set().union(*(components for components, _ in CASES.values()))
    for family, module in FAMILIES.items():
        for string_id in module.ALL_OBJECTS:
            assert (family, string_id) in covered, (
                f"{family}={string_id!r} is registered but no row of CASES "
                "covers it: add one."
            )
    assert ("co_learner", "CoLearner") in covered


REGISTERED = [
    (family, string_id)
    for family, module in FAMILIES.items()
    for string_id in module.ALL_OBJECTS
]


@pytest.mark.parametrize(("family", "string_id"), REGISTERED)
def test_resolution_by_string_id_config_and_instance(family, string_id):
    module = FAMILIES[family]
    component = module.get(string_id)
    assert type(component) is module.ALL_OBJECTS[string_id]
    assert component.string_id == string_id
    assert module.get(component) is component
    config = module.serialize(component)
    restored = module.deserialize(config)
    assert type(restored) is type(component)
    assert module.serialize(restored) == config
    assert type(module.get(config)) is type(component)
    with pytest.raises(ValueError, match=rf"Unknown `{family}`\. Expected"):
        module.get("no_such_component")


def _numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


def _config(meta):
    """The config, without the networks' (auto-generated) layer names."""
    config = meta.get_config()
    config.pop("model")
    if config["co_learner"] is not None:
        config["co_learner"]["config"].pop("head")
    return config


def _tasks(seed):
    return kerameta.data.SinusoidTasks(
        shots=5, query_shots=5, tasks_per_batch=4, num_batches=1, seed=seed
    )


# CI time: each `predict` compiles an evaluation step (seconds on JAX and
# TensorFlow); with equal configs and weights, and the resumed training
# checked below, two rows cover the loaded model's predictions.
PREDICTED = ("defaults", "everything")


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_round_trip_and_resumption(case, tmp_path):
    kwargs = CASES[case][1]()
    cls = kwargs.pop("cls", kerameta.MAML)
    meta = cls(_net(), inner_steps=2, inner_learning_rate=0.05, **kwargs)
    meta.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = meta.fit(_tasks(0), verbose=0).history
    assert np.isfinite(history["loss"][0])
    meta.save(tmp_path / "meta.keras")
    loaded = keras.saving.load_model(tmp_path / "meta.keras")

    assert type(loaded) is cls
    assert _config(loaded) == _config(meta)
    assert len(loaded.weights) == len(meta.weights)
    for saved, restored in zip(meta.weights, loaded.weights):
        np.testing.assert_array_equal(_numpy(restored), _numpy(saved))
    x, y = _tasks(1)[0]
    if case in PREDICTED:
        np.testing.assert_array_equal(
            _numpy(loaded.predict(x, verbose=0)),
            _numpy(meta.predict(x, verbose=0)),
        )
    # Resuming from the file continues exactly as the original would.
    meta.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for original, resumed in zip(meta.weights, loaded.weights):
        np.testing.assert_allclose(
            _numpy(resumed), _numpy(original), rtol=1e-6, atol=1e-7
        )


def test_the_docs_list_exactly_the_refused_combinations():
    root = pathlib.Path(__file__).parents[1]
    page = (root / "docs" / "methods" / "index.md").read_text()
    start = page.index("<!-- composition-table: start -->\n")
    end = page.index("\n<!-- composition-table: end -->")
    table = page[start + len("<!-- composition-table: start -->\n") : end]
    assert table == composition.markdown_table(), (
        "docs/methods/index.md is out of date: paste "
        "`composition.markdown_table()` between its composition-table marks."
    )


def test_sharing_history_is_saved(tmp_path):
    meta = kerameta.MAML(
        _net(),
        gradient_sharing=kerameta.GradientSharing(history_decay=0.5),
    )
    meta.compile(optimizer="adam", loss="mse")
    meta.fit(_tasks(0), epochs=1, verbose=0)
    history = [_numpy(v) for v in meta.gradient_sharing.history]
    assert all(np.any(h != 0) for h in history)
    meta.save(tmp_path / "sharing.keras")
    loaded = keras.saving.load_model(tmp_path / "sharing.keras")
    for saved, restored in zip(history, loaded.gradient_sharing.history):
        np.testing.assert_array_equal(_numpy(restored), saved)


def test_model_without_co_learner_saves_without_its_weights(tmp_path):
    meta = kerameta.MAML(_net(), co_learner=_co_learner())
    meta.compile(optimizer="adam", loss="mse", metrics=["mae"])
    meta.fit(_tasks(0), epochs=1, verbose=0)
    plain = meta.without_co_learner()
    plain.save(tmp_path / "plain.keras")
    loaded = keras.saving.load_model(tmp_path / "plain.keras")
    assert loaded.co_learner is None
    assert len(loaded.weights) == len(meta.model.weights)
    x, y = _tasks(1)[0]
    np.testing.assert_array_equal(
        _numpy(loaded.predict(x, verbose=0)), _numpy(meta.predict(x, verbose=0))
    )
    logs = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "mae"}
