"""Meta-training on a tiny real Omniglot subset learns.

The small1 archive (136 characters) is split by character; MAML meta-trains
a small strided Conv-4 for a few dozen meta-iterations on the training
characters, and `meta_test` scores episodes of characters it never saw. On
JAX and PyTorch; on TensorFlow (about 60 s there, which CI time cannot pay)
with `--run-slow`: its Omniglot loading is tested by omniglot_data_test.py.
"""

import pathlib

import keras
import numpy as np
import pytest

import kerameta

SOURCE = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "omniglot"
)
WAYS = 5


@pytest.fixture(scope="module")
def small1(tmp_path_factory):
    if not (SOURCE / "images_background_small1.zip").is_file():
        pytest.skip(f"the Omniglot zips are not in {SOURCE}")
    return kerameta.datasets.omniglot.load_data(
        SOURCE,
        data_dir=tmp_path_factory.mktemp("omniglot"),
        archives=("small1",),
        split_sizes=(100, 0),
        reader="zip",
    )


def _maml():
    net = kerameta.models.conv4(
        (28, 28, 1), WAYS, filters=16, downsampling="strided"
    )
    maml = kerameta.MAML(
        net, inner_steps=1, inner_learning_rate=0.4, evaluation_inner_steps=3
    )
    maml.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return maml


def _slow_on_tensorflow(test):
    if keras.config.backend() == "tensorflow":
        return pytest.mark.slow(test)
    return test


@_slow_on_tensorflow
def test_fit_on_tiny_omniglot_beats_chance_on_new_characters(small1):
    (x_train, y_train), _, (x_test, y_test) = small1
    assert len(np.unique(y_test)) == 36
    episode = {"ways": WAYS, "shots": 1, "rotations": True}
    train = kerameta.data.FewShotTasks(
        x_train,
        y_train,
        **episode,
        query_shots=2,
        tasks_per_batch=8,
        num_batches=20,
        new_tasks_each_epoch=True,
    )
    test = kerameta.data.FewShotTasks(
        x_test,
        y_test,
        **episode,
        query_shots=5,
        tasks_per_batch=20,
        num_batches=5,
        seed=1,
    )
    maml = _maml()
    before = kerameta.meta_test(maml, test, episodes=100)
    history = maml.fit(train, epochs=2, verbose=0)
    after = kerameta.meta_test(maml, test, episodes=100)
    assert np.isfinite(history.history["loss"]).all()
    # Chance is 1 / 5, but adapting even the untrained network with 3 steps
    # already scores about 40%: meta-training must add a clear gain on the
    # same episodes of unseen characters (paired, so the test is sharp;
    # about +7 to +9 points on each backend when this test was written).
    gain = after.per_episode - before.per_episode
    standard_error = gain.std(ddof=1) / np.sqrt(len(gain))
    assert after.mean > 0.35, (before, after)
    assert gain.mean() > max(0.03, 3 * standard_error), (before, after)
