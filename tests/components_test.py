"""One battery for every component of every family, driven by the registries.

Each family (`inner_optimizers`, `meta_gradients`, `task_weightings`,
`gradient_sharing`, `co_learners`, `outer_rules`) lists its built-ins in
`ALL_OBJECTS`. `CASES` gives each one the meta-model arguments that use it
(alone, in a setup it composes with), plus the full combination; a test
fails when a registry gains a component without a row here. Every row is
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


# (family, string id or class name) -> the meta-model arguments using it.
CASES = {
    ("inner_optimizer", "sgd"): lambda: {"inner_optimizer": "sgd"},
    ("inner_optimizer", "meta_sgd"): lambda: {"inner_optimizer": "meta_sgd"},
    ("meta_gradient", "second_order"): lambda: {},
    ("meta_gradient", "first_order"): lambda: {"meta_gradient": "first_order"},
    ("meta_gradient", "multi_step"): lambda: {
        "meta_gradient": kerameta.meta_gradients.MultiStep(window=2)
    },
    ("meta_gradient", "implicit"): lambda: {
        # A ridge makes the head's inner problem strongly convex, so that
        # conjugate gradient converges (fit warns otherwise).
        "meta_gradient": kerameta.meta_gradients.Implicit(ridge=1.0),
        "adapted_layers": ["head"],
    },
    ("meta_gradient", "checkpointed"): lambda: {
        "meta_gradient": "checkpointed"
    },
    ("task_weighting", "mean"): lambda: {"task_weighting": "mean"},
    ("task_weighting", "gradient_agreement"): lambda: {
        "task_weighting": kerameta.GradientAgreement(form="book")
    },
    ("gradient_sharing", "gradient_sharing"): lambda: {
        "gradient_sharing": kerameta.GradientSharing(
            concurrent_initial=0.2, history_initial=0.1, history_decay=0.5
        )
    },
    ("co_learner", "CoLearner"): lambda: {"co_learner": _co_learner()},
    ("outer_rule", "maml"): lambda: {"outer_rule": "maml"},
    ("outer_rule", "reptile"): lambda: {
        "cls": kerameta.Reptile,
        "gradient_sharing": "gradient_sharing",
    },
    ("combination", "anil_meta_sgd"): lambda: {
        "inner_optimizer": "meta_sgd",
        "adapted_layers": ["head"],
        "adapt_batch_normalization": False,
    },
    ("combination", "reptile_everything"): lambda: {
        "cls": kerameta.Reptile,
        "gradient_sharing": kerameta.GradientSharing(concurrent_initial=0.5),
        "task_weighting": "gradient_agreement",
        "co_learner": _co_learner(),
    },
    ("combination", "everything"): lambda: {
        "inner_optimizer": kerameta.MetaSGD(
            initializer=keras.initializers.RandomUniform(0.005, 0.1)
        ),
        "meta_gradient": kerameta.meta_gradients.MultiStep(window=2),
        "adapted_layers": ["hidden2", "head"],
        "gradient_sharing": "gradient_sharing",
        "task_weighting": "gradient_agreement",
        "co_learner": _co_learner(),
    },
}


def test_every_registered_component_has_a_row():
    covered = {key for key in CASES}
    for family, module in FAMILIES.items():
        for string_id in module.ALL_OBJECTS:
            assert (family, string_id) in covered, (
                f"{family}={string_id!r} is registered but has no row in "
                "CASES: add one."
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


@pytest.mark.parametrize("case", sorted(CASES), ids="-".join)
def test_fit_round_trip_and_resumption(case, tmp_path):
    kwargs = CASES[case]()
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
    np.testing.assert_array_equal(
        _numpy(loaded.predict(x, verbose=0)), _numpy(meta.predict(x, verbose=0))
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
