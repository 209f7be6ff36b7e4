"""Tasks accumulated one at a time: the same meta-gradient, less memory.

`MAML(accumulate_tasks=True)` adapts, scores and differentiates one task
at a time and sums the gradients (see `kerameta.src.engine.accumulation`);
`False` runs every task together. Both must train to the same weights and
log the same losses, whatever the components (random layers, batch
normalization, a co-learner, Reptile, the estimators).
"""

import keras
import numpy as np
import pytest
from helpers import BACKEND
from helpers import seed_everything
from helpers import to_numpy

import kerameta
from kerameta.src.engine import accumulation

TASKS, WAYS = 3, 3


def _conv_net():
    """Convolution, batch normalization, Dropout: every per-task part."""
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, padding="same", name="conv"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
            keras.layers.Dropout(0.3),
            keras.layers.Flatten(name="features"),
            keras.layers.Dense(WAYS, name="head"),
        ]
    )


def _batch():
    rng = np.random.default_rng(3)
    x = {
        "support_x": rng.normal(size=(TASKS, 3, 6, 6, 1)).astype("float32"),
        "support_y": rng.integers(0, WAYS, (TASKS, 3)).astype("int32"),
        "query_x": rng.normal(size=(TASKS, 4, 6, 6, 1)).astype("float32"),
    }
    return x, rng.integers(0, WAYS, (TASKS, 4)).astype("int32")


def _meta_model(
    accumulate, meta_class=kerameta.MAML, co_learner=False, metrics=None, **kw
):
    """A seeded, compiled meta-model of `_conv_net`."""
    seed_everything()
    if co_learner:  # built after the seed, as the network
        kw["co_learner"] = kerameta.CoLearner(
            keras.layers.Dense(WAYS), "features"
        )
    meta = meta_class(
        _conv_net(),
        inner_learning_rate=0.1,
        vectorize_tasks=False,
        accumulate_tasks=accumulate,
        **kw,
    )
    meta.compile(
        optimizer=keras.optimizers.SGD(0.3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
    )
    return meta


def _train(accumulate, **kwargs):
    kwargs.setdefault("inner_steps", 2)
    meta = _meta_model(accumulate, **kwargs)
    x, y = _batch()
    history = meta.fit(x, y, batch_size=TASKS, epochs=2, verbose=0)
    weights = [to_numpy(v) for v in meta.trainable_variables]
    return weights, history.history


CASES = {
    "second_order": {},
    "checkpointed": {"meta_gradient": "checkpointed", "inner_steps": 3},
    "meta_sgd_anil": {
        "inner_optimizer": "meta_sgd",
        "adapted_layers": ["head"],
    },
    "co_learner": {"co_learner": True},
    "reptile": {"meta_class": kerameta.Reptile},
}


# CI time: each row compiles two fits for 10-20 s on JAX and TensorFlow
# (which accumulates only when asked); PyTorch, eager, runs every row.
COMPILED_ROWS = {
    "jax": ("second_order", "checkpointed", "co_learner"),
    "tensorflow": ("second_order", "co_learner"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_accumulated_tasks_train_as_tasks_together(case):
    if case not in COMPILED_ROWS.get(BACKEND, (case,)):
        pytest.skip("CI time: this row runs on PyTorch")
    together, together_logs = _train(False, **CASES[case])
    accumulated, accumulated_logs = _train(True, **CASES[case])
    for a, b in zip(accumulated, together):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
    assert together_logs.keys() == accumulated_logs.keys()
    for name in together_logs:
        np.testing.assert_allclose(
            accumulated_logs[name], together_logs[name], rtol=1e-5
        )


def _evaluate_and_predict(accumulate, monkeypatch, co_learner=False):
    """`evaluate` logs, `predict` outputs, and whether tasks were mapped."""
    meta = _meta_model(
        accumulate,
        co_learner=co_learner,
        metrics=["accuracy"],
        evaluation_inner_steps=2,
    )
    mapped = []
    map_over_tasks = accumulation.seam.map_over_tasks

    def recorded(fn):
        mapped.append(fn)
        return map_over_tasks(fn)

    monkeypatch.setattr(accumulation.seam, "map_over_tasks", recorded)
    x, y = _batch()
    logs = meta.evaluate(x, y, batch_size=TASKS, verbose=0, return_dict=True)
    predictions = meta.predict(x, batch_size=TASKS, verbose=0)
    return logs, predictions, len(mapped)


@pytest.mark.parametrize("co_learner", [False, True], ids=["maml", "cml"])
def test_tasks_evaluated_one_at_a_time_score_as_tasks_together(
    co_learner, monkeypatch
):
    if co_learner and BACKEND == "jax":
        pytest.skip("CI time: four more compiles; TF and PyTorch run it")
    together, together_predictions, mapped = _evaluate_and_predict(
        False, monkeypatch, co_learner
    )
    assert mapped == 0
    one_at_a_time, predictions, mapped = _evaluate_and_predict(
        True, monkeypatch, co_learner
    )
    assert mapped  # traced by the test and predict steps
    assert one_at_a_time.keys() == together.keys()
    for name in together:
        np.testing.assert_allclose(
            one_at_a_time[name], together[name], rtol=1e-5
        )
    np.testing.assert_allclose(
        predictions, together_predictions, rtol=1e-5, atol=1e-6
    )


def test_auto_evaluates_one_task_at_a_time_where_it_pays(monkeypatch):
    _, _, mapped = _evaluate_and_predict("auto", monkeypatch)
    expected = BACKEND in accumulation.EVALUATION_AUTO_BACKENDS
    assert bool(mapped) == expected


def _dense_net():
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, name="body"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def _resolved(**kwargs):
    meta = kerameta.MAML(_dense_net(), vectorize_tasks=False, **kwargs)
    meta.compile(loss="mse")
    return accumulation.resolve(meta.accumulate_tasks, meta._components())


def test_auto_accumulates_independent_looped_tasks_only():
    assert _resolved() == (BACKEND in accumulation.AUTO_BACKENDS)
    assert not _resolved(gradient_sharing="gradient_sharing")
    assert not _resolved(task_weighting="gradient_agreement")
    assert not _resolved(meta_gradient="implicit", adapted_layers=["head"])


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"gradient_sharing": "gradient_sharing"}, "gradient sharing"),
        ({"task_weighting": "gradient_agreement"}, "weighs each task"),
        (
            {"meta_gradient": "implicit", "adapted_layers": ["head"]},
            "logs statistics of the whole batch",
        ),
    ],
    ids=["sharing", "agreement", "implicit"],
)
def test_accumulating_dependent_tasks_is_refused(kwargs, reason):
    network = _dense_net()
    with pytest.raises(ValueError, match=reason) as error:
        kerameta.MAML(
            network, vectorize_tasks=False, accumulate_tasks=True, **kwargs
        )
    assert "accumulate_tasks='auto'" in str(error.value)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF never vectorizes")
def test_accumulating_vectorized_tasks_is_refused():
    dense = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="vectorized"):
        kerameta.MAML(dense, vectorize_tasks=True, accumulate_tasks=True)


def test_accumulate_tasks_is_validated_and_saved():
    with pytest.raises(ValueError, match="accumulate_tasks"):
        kerameta.MAML(_conv_net(), accumulate_tasks="yes")
    meta = kerameta.MAML(_conv_net(), accumulate_tasks=False)
    config = meta.get_config()
    assert config["accumulate_tasks"] is False
    assert kerameta.MAML.from_config(config).accumulate_tasks is False
    reptile = kerameta.Reptile(_conv_net(), accumulate_tasks=True)
    assert kerameta.Reptile.from_config(reptile.get_config()).accumulate_tasks
