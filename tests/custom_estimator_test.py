"""An estimator written outside the package: one class, no other edit.

`TruncatedSecondOrder` differentiates the last `window` inner steps exactly
and treats the earlier ones as first order (truncated backpropagation
through the inner loop). It is the example of the docs' "Writing your own
estimator" page: the class below is all it takes, and it trains through
`fit`, saves and loads on every backend.
"""

import keras
import numpy as np
from keras import ops

import kerameta


# --- the estimator: at most 60 lines -----------------------------------
@keras.saving.register_keras_serializable(package="kerameta_tests")
class TruncatedSecondOrder(kerameta.meta_gradients.MetaGradient):
    """Second order through the last `window` inner steps only."""

    string_id = "truncated_second_order"

    def __init__(self, window: int = 1) -> None:
        self.window = window

    def run_inner_loop(self, loop, fast, inner_steps):
        losses = None
        for step in range(inner_steps):
            exact = step >= inner_steps - self.window
            losses, grads = loop.gradients(fast, create_graph=exact)
            if not exact:
                grads = [ops.stop_gradient(g) for g in grads]
            fast = loop.update(fast, loop.directions(grads, step), step)
        return fast, losses

    def get_config(self):
        return {"window": self.window}


# --- its tests ---------------------------------------------------------
def _tasks(seed=0):
    return kerameta.data.SinusoidTasks(
        shots=5, query_shots=5, tasks_per_batch=4, num_batches=2, seed=seed
    )


def _trained_weights(meta_gradient):
    keras.utils.set_random_seed(7)
    meta = kerameta.MAML(
        kerameta.models.mlp(hidden_units=(8, 8)),
        inner_steps=3,
        inner_learning_rate=0.05,
        meta_gradient=meta_gradient,
    )
    meta.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    meta.fit(_tasks(), verbose=0)
    return meta, [ops.convert_to_numpy(v.value) for v in meta.weights]


def test_a_full_window_is_second_order_and_none_is_first_order():
    for window, built_in in ((3, "second_order"), (0, "first_order")):
        _, custom = _trained_weights(TruncatedSecondOrder(window))
        _, reference = _trained_weights(built_in)
        for a, b in zip(custom, reference):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_it_trains_and_survives_a_keras_round_trip(tmp_path):
    meta, weights = _trained_weights(TruncatedSecondOrder(window=1))
    assert all(np.all(np.isfinite(w)) for w in weights)
    meta.save(tmp_path / "custom.keras")
    loaded = keras.saving.load_model(tmp_path / "custom.keras")
    assert isinstance(loaded.meta_gradient, TruncatedSecondOrder)
    assert loaded.meta_gradient.window == 1
    x, _ = _tasks(seed=1)[0]
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.predict(x, verbose=0)),
        ops.convert_to_numpy(meta.predict(x, verbose=0)),
    )
