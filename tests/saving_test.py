"""Saving, loading and resuming `kerameta.MAML` the Keras way."""

import json
import pathlib
import zipfile

import keras
import numpy as np
import pytest
from helpers import assert_keras_round_trip
from helpers import mlp

import kerameta

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
TASKS = 4  # tasks per batch: small, since TensorFlow traces a loop over them

# NumPy 2.4 warns when `np.array` meets an `__array__` without a `copy`
# argument: Keras variables on JAX, torch tensors, TF variables. Keras's own
# `get_weights`, `convert_to_numpy` and torch `predict` go through it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
    ":DeprecationWarning"
)


def _sinusoids(num_batches, seed, **kwargs):
    kwargs.setdefault("shots", 5)
    return kerameta.data.SinusoidTasks(
        tasks_per_batch=TASKS, num_batches=num_batches, seed=seed, **kwargs
    )


def _numpy(variables):
    return [
        np.array(keras.ops.convert_to_numpy(v.value), copy=True)
        for v in variables
    ]


def _assert_all_close(actual, expected, rtol=1e-6, atol=1e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def _normalized(config):
    """The config as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(config))


def test_keras_file_round_trip(tmp_path):
    maml = kerameta.MAML(
        mlp(),
        inner_steps=2,
        inner_learning_rate=0.03,
        evaluation_inner_steps=3,
        meta_gradient="first_order",
        name="sine_maml",
    )
    maml.compile(
        optimizer=keras.optimizers.Adam(5e-3), loss="mse", metrics=["mae"]
    )
    maml.fit(_sinusoids(3, seed=1), verbose=0)
    test_tasks = _sinusoids(1, seed=9, query_shots=3)
    # Same class, the same weights exactly, the same predictions.
    loaded = assert_keras_round_trip(
        maml, tmp_path / "maml.keras", test_tasks, atol=1e-6
    )

    assert _normalized(loaded.get_config()) == _normalized(maml.get_config())
    assert _normalized(loaded.get_compile_config()) == _normalized(
        maml.get_compile_config()
    )
    assert loaded.evaluation_inner_steps == 3
    assert type(loaded.meta_gradient) is type(maml.meta_gradient)
    expected = maml.evaluate(test_tasks, verbose=0, return_dict=True)
    actual = loaded.evaluate(test_tasks, verbose=0, return_dict=True)
    assert actual.keys() == expected.keys() == {"loss", "mae"}
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], rel=1e-6)

    # The compile state survives: same optimizer, same Adam moments, and
    # training goes on from where it stopped, step for step.
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)
    learning_rate = keras.ops.convert_to_numpy(loaded.optimizer.learning_rate)
    assert float(learning_rate) == pytest.approx(5e-3)
    _assert_all_close(
        _numpy(loaded.optimizer.variables), _numpy(maml.optimizer.variables)
    )
    histories = [
        model.fit(_sinusoids(2, seed=2), verbose=0, shuffle=False).history
        for model in (maml, loaded)
    ]
    assert histories[1].keys() == histories[0].keys() == {"loss", "mae"}
    assert histories[1]["loss"] == pytest.approx(histories[0]["loss"])
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 5
    _assert_all_close(_numpy(loaded.weights), _numpy(maml.weights))
    _assert_all_close(
        _numpy(loaded.optimizer.variables), _numpy(maml.optimizer.variables)
    )


def test_loads_a_file_saved_under_jax():
    # Written by `fixtures/make_saved_model_fixture.py` under JAX.
    loaded = keras.models.load_model(FIXTURES / "maml_jax_mlp.keras")
    expected = np.load(FIXTURES / "maml_jax_mlp.npz")

    assert type(loaded) is kerameta.MAML
    assert loaded.name == "jax_maml"
    assert loaded.inner_steps == 1
    assert loaded.evaluation_inner_steps == 2
    assert loaded.inner_learning_rate == pytest.approx(0.05)
    episodes = kerameta.data.EpisodeDataset(
        expected["support_x"],
        expected["support_y"],
        expected["query_x"],
        expected["query_y"],
        tasks_per_batch=TASKS,
    )
    np.testing.assert_allclose(
        loaded.predict(episodes, verbose=0),
        expected["predictions"],
        rtol=1e-5,
        atol=1e-5,
    )
    results = loaded.evaluate(episodes, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(float(expected["loss"]), rel=1e-5)
    assert results["mae"] == pytest.approx(float(expected["mae"]), rel=1e-5)
    # The Adam state came across too (iterations first, then the moments).
    optimizer_variables = _numpy(loaded.optimizer.variables)
    assert len(optimizer_variables) == len(
        [k for k in expected.files if k.startswith("optimizer_")]
    )
    for i, value in enumerate(optimizer_variables):
        np.testing.assert_allclose(
            value, expected[f"optimizer_{i}"], rtol=1e-6, atol=0
        )


def test_saved_compile_config_keeps_jit_compile_auto(tmp_path):
    maml = kerameta.MAML(mlp())
    maml.compile(optimizer="adam", loss="mse")
    path = tmp_path / "maml.keras"
    maml.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert config["compile_config"].get("jit_compile", "auto") == "auto"


class _StopAt(keras.callbacks.Callback):
    """Raises at the start of a given training batch, like a crash."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.stop_epoch = epoch
        self.stop_batch = batch
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == (self.stop_epoch, self.stop_batch):
            raise _Interrupted


class _Interrupted(Exception):
    pass


def _resumable_maml(seed):
    keras.utils.set_random_seed(seed)
    maml = kerameta.MAML(mlp(), inner_steps=1, inner_learning_rate=0.05)
    maml.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"]
    )
    return maml


def _training_tasks():
    # New tasks every epoch: resuming must also resume the task stream.
    return _sinusoids(3, seed=4, new_tasks_each_epoch=True)


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
    # `shuffle=False`: by default Keras shuffles the order of a PyDataset's
    # batches with Python's global `random`, which differs between the
    # reference run and the resumed one.
    epochs = 3
    reference = _resumable_maml(seed=1)
    reference.fit(_training_tasks(), epochs=epochs, verbose=0, shuffle=False)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = _resumable_maml(seed=1)
    with pytest.raises(_Interrupted):
        interrupted.fit(
            _training_tasks(),
            epochs=epochs,
            callbacks=[backup, _StopAt(epoch=1, batch=1)],
            verbose=0,
            shuffle=False,
        )

    # A new process: fresh model (other initial weights) and fresh data.
    resumed = _resumable_maml(seed=2)
    history = resumed.fit(
        _training_tasks(),
        epochs=epochs,
        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))],
        verbose=0,
        shuffle=False,
    )
    assert history.epoch == [1, 2]
    _assert_all_close(_numpy(resumed.weights), _numpy(reference.weights))
    _assert_all_close(
        _numpy(resumed.optimizer.variables),
        _numpy(reference.optimizer.variables),
    )
