"""Random layers (Dropout, GaussianNoise, ...) in the inner and outer loop.

Every network call of a meta-step draws its own masks: per task, per inner
step and per meta-step, reproducibly (see `kerameta/src/engine/
randomness.py`). The meta-gradient is the exact gradient of the objective
with those masks fixed: checked by a directional finite difference and by
the checkpointed estimator, which recomputes each step and so must draw
the same masks again.
"""

import keras
import numpy as np
import pytest
from helpers import seed_everything
from helpers import to_numpy

import kerameta
from kerameta.meta_gradients import MetaGradient
from kerameta.src.engine.randomness import RandomLayers
from kerameta.src.episodes import validate_episode

BACKEND = keras.backend.backend()
WIDTH = 64


def _masking_net(rate=0.5):
    """Identity weights, then Dropout: its output shows the mask."""
    return keras.Sequential(
        [
            keras.Input((WIDTH,)),
            keras.layers.Dense(
                WIDTH, use_bias=False, kernel_initializer="identity"
            ),
            keras.layers.Dropout(rate),
        ]
    )


def _ones_batch(tasks=8, shots=2):
    ones = np.ones((tasks, shots, WIDTH), "float32")
    x = {"support_x": ones, "support_y": ones, "query_x": ones}
    return x, ones


def _meta(net, **kwargs):
    kwargs.setdefault("inner_learning_rate", 0.0)
    meta = kerameta.MAML(net, **kwargs)
    meta.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return meta


def test_masks_differ_across_tasks_and_meta_steps_not_across_predicts():
    seed_everything()
    meta = _meta(_masking_net())
    x, y = _ones_batch()
    first = to_numpy(meta.predict(x, batch_size=8, verbose=0))
    again = to_numpy(meta.predict(x, batch_size=8, verbose=0))
    np.testing.assert_array_equal(first, again)  # evaluation: deterministic
    masks = first[:, 0] != 0  # (tasks, width)
    assert len({m.tobytes() for m in masks}) == len(masks)
    # Inverted dropout: kept units are scaled by 1 / (1 - rate), and about
    # half are kept (8 x 64 draws: 512 +- 3 sigma of 34).
    np.testing.assert_allclose(first[first != 0], 2.0)
    assert 0.4 < masks.mean() < 0.6
    meta.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = to_numpy(meta.predict(x, batch_size=8, verbose=0))
    assert not np.array_equal(after, first)  # the meta-step moved the seed


class _RecordSupportLosses(MetaGradient):
    """Second order, recording each inner step's support losses."""

    string_id = "record_support_losses"

    def run_inner_loop(self, loop, fast, inner_steps):
        self.losses = []
        for step in range(inner_steps):
            losses, grads = loop.gradients(fast, True, step)
            self.losses.append(losses)
            fast = loop.update(fast, loop.directions(grads, step), step)
        return fast, self.losses[-1] if self.losses else None


def test_each_inner_step_draws_new_masks_and_a_repeated_step_the_same():
    seed_everything()
    recorder = _RecordSupportLosses()
    meta = _meta(_masking_net(), inner_steps=3, meta_gradient=recorder)
    x, y = _ones_batch(tasks=4)
    # Targets 0: the loss is 4 x the fraction of units the mask keeps.
    x["support_y"] = np.zeros_like(x["support_y"])
    episode = validate_episode(x, y, require_query_y=True)
    theta, non_trainable = meta._state_values()
    meta._meta_objective(theta, non_trainable, episode, 3)
    losses = [to_numpy(v) for v in recorder.losses]
    # Differs by step and by task, as the masks do.
    assert len({loss.tobytes() for loss in losses}) == 3
    assert len(set(losses[0].tolist())) >= 3  # keep counts may tie
    meta._meta_objective(theta, non_trainable, episode, 3)
    np.testing.assert_array_equal(to_numpy(recorder.losses[1]), losses[1])


def _dropout_regressor(seed):
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(
                16,
                activation="tanh",
                kernel_initializer=keras.initializers.GlorotUniform(seed),
            ),
            keras.layers.Dropout(0.3, seed=None),
            keras.layers.Dense(
                1, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
            ),
        ]
    )


def _regression_episode(seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "support_x": rng.normal(size=(3, 5, 2)).astype("float32"),
        "support_y": rng.normal(size=(3, 5, 1)).astype("float32"),
        "query_x": rng.normal(size=(3, 6, 2)).astype("float32"),
    }
    return x, rng.normal(size=(3, 6, 1)).astype("float32")


def _meta_gradient(meta, x, y):
    from kerameta.src import backend as seam

    episode = validate_episode(x, y, require_query_y=True)
    theta, non_trainable = meta._state_values()

    def objective(values):
        return meta._meta_objective(
            values, non_trainable, episode, meta.inner_steps
        )[0]

    with seam.enable_grad():
        value, grads = seam.value_and_grad(objective)(theta)
    return objective, theta, to_numpy(value), [to_numpy(g) for g in grads]


def test_meta_gradient_is_exact_for_the_drawn_masks():
    """A directional finite difference of the objective, masks fixed."""
    seed_everything()
    meta = _meta(_dropout_regressor(1), inner_steps=2, inner_learning_rate=0.1)
    x, y = _regression_episode()
    objective, theta, _, grads = _meta_gradient(meta, x, y)
    rng = np.random.default_rng(1)
    direction = [rng.normal(size=g.shape).astype("float32") for g in grads]
    eps = 1e-2

    def shifted(sign):
        values = [
            keras.ops.convert_to_tensor(to_numpy(t) + sign * eps * d, "float32")
            for t, d in zip(theta, direction)
        ]
        return float(to_numpy(objective(values)))

    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, direction))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def test_checkpointed_recomputes_with_the_same_masks():
    x, y = _regression_episode()
    results = []
    # One stored copy: steps 1 and 2 are recomputed without a graph, then
    # each step again with one; every time with the forward pass's masks.
    checkpointed = kerameta.meta_gradients.Checkpointed(checkpoints=1)
    for estimator in ("second_order", checkpointed):
        seed_everything()
        meta = _meta(
            _dropout_regressor(1),
            inner_steps=3,
            inner_learning_rate=0.1,
            meta_gradient=estimator,
        )
        results.append(_meta_gradient(meta, x, y)[2:])
    (value, grads), (checkpointed_value, checkpointed_grads) = results
    np.testing.assert_allclose(checkpointed_value, value, rtol=1e-6)
    for g, c in zip(grads, checkpointed_grads):
        np.testing.assert_allclose(c, g, rtol=1e-4, atol=1e-6)


def test_runs_are_reproducible_under_set_random_seed():
    x, y = _regression_episode()
    losses = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        meta = _meta(_dropout_regressor(3), inner_learning_rate=0.1)
        meta.optimizer.learning_rate.assign(0.01)
        history = meta.fit(x, y, batch_size=3, epochs=3, verbose=0)
        losses.append(history.history["loss"])
    assert losses[0] == losses[1]
    assert len(set(losses[0])) == 3


@pytest.mark.parametrize(
    "layer",
    [
        keras.layers.GaussianNoise(0.5),
        keras.layers.GaussianDropout(0.5),
        keras.layers.AlphaDropout(0.5),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_other_random_layers_differ_across_tasks(layer):
    seed_everything()
    net = keras.Sequential(
        [
            keras.Input((WIDTH,)),
            keras.layers.Dense(
                WIDTH, use_bias=False, kernel_initializer="identity"
            ),
            layer,
        ]
    )
    meta = _meta(net)
    x, y = _ones_batch(tasks=3)
    predictions = to_numpy(meta.predict(x, batch_size=3, verbose=0))
    assert not np.allclose(predictions[0], predictions[1])
    meta.fit(x, y, batch_size=3, epochs=1, verbose=0)


def test_implicit_refuses_random_layers():
    net = _dropout_regressor(0)
    with pytest.raises(ValueError, match=r"random layers draw a new loss"):
        kerameta.MAML(net, meta_gradient="implicit", adapted_layers=["dense_1"])


@pytest.mark.skipif(BACKEND != "torch", reason="torch.vmap only")
def test_torch_loops_over_tasks_with_random_layers():
    net = _dropout_regressor(0)
    assert not kerameta.MAML(net).vectorize_tasks  # 'auto'
    with pytest.raises(ValueError, match=r"random layers .*cannot batch"):
        kerameta.MAML(net, vectorize_tasks=True)


def test_seed_states_are_found_and_advance_by_one_per_meta_step():
    seed_everything()
    meta = _meta(_dropout_regressor(0), inner_learning_rate=0.1)
    random = RandomLayers.of(meta.model)
    assert random is not None and len(random.positions) == 1
    state = meta.model.non_trainable_variables[random.positions[0]]
    before = to_numpy(state.value)
    x, y = _regression_episode()
    meta.evaluate(x, y, batch_size=3, verbose=0)
    np.testing.assert_array_equal(to_numpy(state.value), before)
    meta.fit(x, y, batch_size=3, epochs=2, verbose=0)
    np.testing.assert_array_equal(to_numpy(state.value), before + [0, 2])


def test_augmentation_and_spatial_dropout_in_a_conv_net_train():
    seed_everything()
    net = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.SpatialDropout2D(0.3),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    meta = _meta(net, inner_learning_rate=0.1)
    rng = np.random.default_rng(0)
    x = {
        "support_x": rng.normal(size=(3, 4, 6, 6, 1)).astype("float32"),
        "support_y": rng.normal(size=(3, 4, 1)).astype("float32"),
        "query_x": np.ones((3, 4, 6, 6, 1), "float32"),
    }
    predictions = to_numpy(meta.predict(x, batch_size=3, verbose=0))
    assert not np.allclose(predictions[0], predictions[1])
    history = meta.fit(
        x, np.zeros((3, 4, 1), "float32"), batch_size=3, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()
