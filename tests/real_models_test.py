"""Models as users write them: subclassed without `training`, several
inputs, several outputs with a loss each, on every backend."""

import keras
import numpy as np
import pytest
from helpers import assert_keras_round_trip
from helpers import seed_everything
from helpers import to_numpy

import kerameta


class GuideNet(keras.Model):
    """The form of Keras's subclassing guide: `call(self, x)`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.norm = keras.layers.BatchNormalization()
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.norm(self.hidden(x)))


class UncloneableNet(GuideNet):
    def __init__(self):  # no **kwargs: Keras cannot rebuild it
        super().__init__()


def _episode(tasks=4, shots=5, queries=6, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "support_x": rng.normal(size=(tasks, shots, 2)).astype("float32"),
        "support_y": rng.normal(size=(tasks, shots, 1)).astype("float32"),
        "query_x": rng.normal(size=(tasks, queries, 2)).astype("float32"),
    }
    return x, rng.normal(size=(tasks, queries, 1)).astype("float32")


def _compiled(net, **compile_kwargs):
    meta = kerameta.MAML(net, inner_learning_rate=0.1)
    compile_kwargs.setdefault("loss", "mse")
    meta.compile(optimizer="adam", **compile_kwargs)
    return meta


def test_subclassed_call_without_training_runs_in_training_mode():
    seed_everything()
    net = GuideNet()
    x, y = _episode()
    net(x["support_x"][0])
    # The same layers in a functional model, whose call takes `training`.
    inputs = keras.Input((2,))
    functional = keras.Model(inputs, net.out(net.norm(net.hidden(inputs))))
    subclassed_meta, functional_meta = _compiled(net), _compiled(functional)
    # Batch normalization in training mode (batch statistics) in both.
    np.testing.assert_allclose(
        to_numpy(subclassed_meta.predict(x, batch_size=4, verbose=0)),
        to_numpy(functional_meta.predict(x, batch_size=4, verbose=0)),
        rtol=1e-5,
        atol=1e-6,
    )
    history = subclassed_meta.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    adapted = subclassed_meta.adapt(x["support_x"][0], x["support_y"][0])
    assert isinstance(adapted, GuideNet)


def test_adapt_explains_a_model_keras_cannot_copy():
    net = UncloneableNet()
    x, _ = _episode()
    net(x["support_x"][0])
    meta = _compiled(net)
    with pytest.raises(TypeError, match=r"accept `\*\*kwargs` in `__init__`"):
        meta.adapt(x["support_x"][0], x["support_y"][0])


def _two_inputs_two_outputs():
    image = keras.Input((4,), name="image")
    side = keras.Input((2,), name="side")
    hidden = keras.layers.Dense(8, activation="relu")(image)
    hidden = keras.layers.Concatenate()([hidden, side])
    value = keras.layers.Dense(1, name="value")(hidden)
    label = keras.layers.Dense(3, name="label")(hidden)
    return keras.Model(
        {"image": image, "side": side}, {"value": value, "label": label}
    )


def _structured_episode(tasks=4, seed=0):
    rng = np.random.default_rng(seed)

    def inputs(n):
        return {
            "image": rng.normal(size=(tasks, n, 4)).astype("float32"),
            "side": rng.normal(size=(tasks, n, 2)).astype("float32"),
        }

    def targets(n):
        return {
            "value": rng.normal(size=(tasks, n, 1)).astype("float32"),
            "label": rng.integers(0, 3, size=(tasks, n, 1)),
        }

    return {
        "support_x": inputs(5),
        "support_y": targets(5),
        "query_x": inputs(6),
    }, targets(6)


def test_several_inputs_and_outputs_end_to_end(tmp_path):
    seed_everything()
    meta = _compiled(
        _two_inputs_two_outputs(),
        loss={
            "value": "mse",
            "label": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
        },
        loss_weights={"value": 1.0, "label": 0.5},
        metrics={"label": ["accuracy"]},
    )
    x, y = _structured_episode()
    history = meta.fit(x, y, batch_size=2, epochs=2, verbose=0).history
    for key in ("loss", "value_loss", "label_loss", "label_accuracy"):
        assert np.isfinite(history[key]).all(), key
    logs = meta.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    # The task loss is the weighted sum of the outputs' losses.
    np.testing.assert_allclose(
        logs["loss"], logs["value_loss"] + 0.5 * logs["label_loss"], rtol=1e-5
    )
    predictions = meta.predict(x, batch_size=2, verbose=0)
    assert {k: tuple(v.shape) for k, v in predictions.items()} == {
        "value": (4, 6, 1),
        "label": (4, 6, 3),
    }
    task = {k: v[0] for k, v in x["support_x"].items()}
    labels = {k: v[0] for k, v in x["support_y"].items()}
    assert isinstance(meta.adapt(task, labels), keras.Model)
    loaded = keras.saving.load_model(_saved(meta, tmp_path))
    for key, value in loaded.predict(x, batch_size=2, verbose=0).items():
        np.testing.assert_allclose(
            to_numpy(value), to_numpy(predictions[key]), rtol=1e-5, atol=1e-6
        )


def _saved(meta, tmp_path):
    path = str(tmp_path / "structured.keras")
    meta.save(path)
    return path


def test_tuple_inputs(tmp_path):
    seed_everything()
    first, second = keras.Input((3,)), keras.Input((1,))
    hidden = keras.layers.Dense(4, activation="tanh")(first)
    output = keras.layers.Dense(1)(keras.layers.Concatenate()([hidden, second]))
    meta = _compiled(keras.Model([first, second], output))
    rng = np.random.default_rng(0)

    def inputs(n):
        return (
            rng.normal(size=(2, n, 3)).astype("float32"),
            rng.normal(size=(2, n, 1)).astype("float32"),
        )

    x = {
        "support_x": inputs(3),
        "support_y": rng.normal(size=(2, 3, 1)).astype("float32"),
        "query_x": inputs(4),
    }
    y = rng.normal(size=(2, 4, 1)).astype("float32")
    meta.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert_keras_round_trip(
        meta, str(tmp_path / "tuple.keras"), x, batch_size=2
    )


def test_support_and_query_inputs_must_match():
    meta = _compiled(_two_inputs_two_outputs())
    x, y = _structured_episode()
    del x["query_x"]["side"]
    with pytest.raises(
        ValueError,
        match=r"`support_x` and `query_x` to have the same structure",
    ):
        meta.fit(x, y, batch_size=2, verbose=0)
