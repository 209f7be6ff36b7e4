"""`.keras` round trips and resumed training with every method component."""

import keras
import numpy as np
import pytest
from helpers import assert_keras_round_trip
from helpers import mlp
from keras import ops

import kerameta

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


def _co_learner():
    head = keras.Sequential(
        [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    return kerameta.CoLearner(head, "hidden2", loss_weight=0.5)


COMBINATIONS = {
    "anil_meta_sgd": lambda: {
        "inner_optimizer": "meta_sgd",
        "adapted_layers": ["head"],
        "adapt_batch_normalization": False,
    },
    "gradient_sharing": lambda: {
        "gradient_sharing": kerameta.GradientSharing(
            concurrent_initial=0.2,
            history_initial=0.1,
            history_decay=0.5,
            concurrent="leave_one_out",
            granularity="element",
        )
    },
    "gradient_agreement": lambda: {
        "task_weighting": kerameta.GradientAgreement(
            form="book", apply_to="meta_loss"
        )
    },
    "co_learner": lambda: {"co_learner": _co_learner()},
    "everything": lambda: {
        "inner_optimizer": kerameta.MetaSGD(
            initializer=keras.initializers.RandomUniform(0.005, 0.1)
        ),
        "adapted_layers": ["hidden2", "head"],
        "gradient_sharing": "gradient_sharing",
        "task_weighting": "gradient_agreement",
        "co_learner": _co_learner(),
    },
    "reptile": lambda: {
        "cls": kerameta.Reptile,
        "gradient_sharing": kerameta.GradientSharing(concurrent_initial=0.5),
        "task_weighting": "gradient_agreement",
        "co_learner": _co_learner(),
    },
}


def _numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


def _method_config(meta):
    """The config, without the networks' (auto-generated) layer names."""
    config = meta.get_config()
    config.pop("model")
    if config["co_learner"] is not None:
        config["co_learner"]["config"].pop("head")
    return config


def _tasks(seed, num_batches=2):
    return kerameta.data.SinusoidTasks(
        shots=5,
        query_shots=5,
        tasks_per_batch=4,
        num_batches=num_batches,
        seed=seed,
    )


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_round_trip_and_resumed_training(name, tmp_path):
    kwargs = COMBINATIONS[name]()
    cls = kwargs.pop("cls", kerameta.MAML)
    meta = cls(
        mlp(functional=True), inner_steps=2, inner_learning_rate=0.05, **kwargs
    )
    meta.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    meta.fit(_tasks(0), epochs=1, verbose=0)
    x, y = _tasks(1)[0]
    loaded = assert_keras_round_trip(
        meta, tmp_path / f"{name}.keras", x, rtol=0
    )
    assert type(loaded) is cls
    assert _method_config(loaded) == _method_config(meta)
    # Resuming from the file continues exactly as the original would
    # (optimizer state, sharing history and every learned weight restored).
    meta.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for original, resumed in zip(meta.weights, loaded.weights):
        np.testing.assert_allclose(
            _numpy(resumed), _numpy(original), rtol=1e-6, atol=1e-7
        )


def test_sharing_history_is_saved(tmp_path):
    meta = kerameta.MAML(
        mlp(functional=True),
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
    meta = kerameta.MAML(mlp(functional=True), co_learner=_co_learner())
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
