"""Users' saved models survive: `.keras` files of kerameta 0.1.0 still load.

The files in `fixtures/` were written by `make_compatibility_fixtures.py`
before the core was split into components, once per backend. Every file
loads under every backend, predicts what it predicted when saved and keeps
every weight, the components' learned ones included.
"""

import pathlib

import keras
import numpy as np
import pytest

import kerameta

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CASES = [
    (backend, kind)
    for backend in ("jax", "tensorflow", "torch")
    for kind in ("maml", "reptile")
]


@pytest.mark.parametrize(("saved_under", "kind"), CASES)
def test_a_file_saved_by_version_0_1_loads_and_predicts_the_same(
    saved_under, kind
):
    if saved_under == "torch":
        # Keras saves the torch optimizer under its torch module path
        # (`keras.src.backend.torch.optimizers.torch_adam`), so a file
        # written under torch loads only where torch is installed.
        pytest.importorskip("torch")
    stem = FIXTURES / f"v0_1_{saved_under}_{kind}"
    loaded = keras.models.load_model(f"{stem}.keras")
    expected = np.load(f"{stem}.npz")

    assert type(loaded) is (
        kerameta.MAML if kind == "maml" else kerameta.Reptile
    )
    weights = [keras.ops.convert_to_numpy(v.value) for v in loaded.weights]
    stored = [expected[f"weight_{i}"] for i in range(len(weights))]
    assert f"weight_{len(weights)}" not in expected
    for actual, saved in zip(weights, stored):
        np.testing.assert_array_equal(actual, saved)
    episodes = kerameta.data.EpisodeDataset(
        expected["support_x"],
        expected["support_y"],
        expected["query_x"],
        expected["query_y"],
        tasks_per_batch=4,
    )
    np.testing.assert_allclose(
        loaded.predict(episodes, verbose=0),
        expected["predictions"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_full_combination_keeps_its_components():
    loaded = keras.models.load_model(FIXTURES / "v0_1_jax_maml.keras")

    assert loaded.inner_steps == 2
    assert loaded.evaluation_inner_steps == 3
    assert loaded.inner_learning_rate == pytest.approx(0.05)
    assert isinstance(loaded.inner_optimizer, kerameta.MetaSGD)
    assert loaded.adapted_layers == ["hidden2", "head"]
    assert isinstance(loaded.meta_gradient, kerameta.meta_gradients.MultiStep)
    assert loaded.meta_gradient.window == 2
    assert isinstance(loaded.gradient_sharing, kerameta.GradientSharing)
    assert isinstance(loaded.task_weighting, kerameta.GradientAgreement)
    assert isinstance(loaded.co_learner, kerameta.CoLearner)
