"""Builders and checks that several test files share.

Test files import it as a top-level module (`from helpers import mlp`):
`tests/` has no `__init__.py`, so pytest puts it on `sys.path`, as it does
for `reference` and for the test modules that import one another.
"""

import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys
import warnings

import keras
import numpy as np

import kerameta

BACKEND = keras.backend.backend()
REPO = pathlib.Path(__file__).resolve().parents[1]
SEED = 1337

# `keras.utils.set_random_seed` seeds `random`, NumPy, torch (on torch) and
# Keras's global `SeedGenerator`, and TensorFlow whenever it can be imported:
# on the JAX and torch backends that would import TensorFlow (about 400 MB
# and seconds) if it were installed beside them. It is not in their nox
# sessions, where the public function imports nothing, but a developer's
# environment may hold all three frameworks.
_TF_IMPORT_NEEDED = BACKEND != "tensorflow" and (
    "tensorflow" not in sys.modules
    and importlib.util.find_spec("tensorflow") is not None
)


def seed_everything(seed: int = SEED) -> None:
    """Seeds Python, NumPy, the backend and Keras, never importing TF."""
    if not _TF_IMPORT_NEEDED:
        keras.utils.set_random_seed(seed)
        return
    # What `set_random_seed` does, less TensorFlow.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(
        seed_generator.GLOBAL_SEED_GENERATOR, None
    )
    random.seed(seed)
    np.random.seed(seed)
    if BACKEND == "torch":
        import torch

        torch.manual_seed(seed)


def to_numpy(tensor):
    """A NumPy copy of a backend tensor or Keras variable, as float64.

    torch 2.13's `Tensor.__array__` has no `copy` keyword, so NumPy 2 warns
    inside `keras.ops.convert_to_numpy`; that warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "__array__ implementation", DeprecationWarning
        )
        return np.array(keras.ops.convert_to_numpy(tensor), np.float64)


def mlp(sizes=(1, 8, 8, 1), activation="tanh", functional=False):
    """A small MLP, the sinusoid regressor of the tests.

    `sizes` are the input features, the hidden widths and the outputs. The
    hidden layers are named `hidden1`, `hidden2`, ..., the last `head`. A
    `keras.Sequential` model, or a functional `keras.Model` of the same
    layers (and the same initial weights) with `functional=True`.
    """
    inputs = keras.Input((sizes[0],))
    layers = [
        keras.layers.Dense(units, activation=activation, name=f"hidden{i}")
        for i, units in enumerate(sizes[1:-1], start=1)
    ]
    layers.append(keras.layers.Dense(sizes[-1], name="head"))
    if not functional:
        return keras.Sequential([inputs, *layers])
    outputs = inputs
    for layer in layers:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs)


def maml(model=None, *, optimizer="sgd", loss="mse", metrics=None, **kwargs):
    """A compiled `kerameta.MAML` (`kwargs` go to the constructor).

    The model defaults to `mlp()`.
    """
    meta = kerameta.MAML(mlp() if model is None else model, **kwargs)
    meta.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return meta


# A valid batch of episodes: 2 tasks, 3 support and 4 query examples of one
# feature each.
SUPPORT = (2, 3, 1)
QUERY = (2, 4, 1)


def episodes(
    support_x=SUPPORT, support_y=SUPPORT, query_x=QUERY, query_y=QUERY, seed=0
):
    """A batch `(x, query_y)` of random episodes with the given shapes."""
    rng = np.random.default_rng(seed)

    def array(shape):
        return rng.normal(size=shape).astype("float32")

    x = {
        "support_x": array(support_x),
        "support_y": array(support_y),
        "query_x": array(query_x),
    }
    return x, array(query_y)


def assert_keras_round_trip(
    meta, path, x, *, batch_size=None, rtol=1e-6, atol=0.0
):
    """Saves `meta` to the `.keras` file `path`, loads it and checks it.

    The loaded model has the same class and the same weights (exactly), and
    predicts on `x` what `meta` predicts (to `rtol`/`atol`). Returns it, for
    the caller's own checks.
    """
    meta.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(meta)
    assert [v.shape for v in loaded.weights] == [v.shape for v in meta.weights]
    for restored, saved in zip(loaded.weights, meta.weights):
        np.testing.assert_array_equal(to_numpy(restored), to_numpy(saved))
    np.testing.assert_allclose(
        to_numpy(loaded.predict(x, batch_size=batch_size, verbose=0)),
        to_numpy(meta.predict(x, batch_size=batch_size, verbose=0)),
        rtol=rtol,
        atol=atol,
    )
    return loaded


def run_result_script(args, env, *, cwd=None, timeout=600):
    """Runs `python *args` in a fresh interpreter; returns its result.

    This checkout's kerameta comes first on the path. The script prints one
    line `RESULT <json>`, whose decoded JSON is returned.
    """
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = [
        line[len("RESULT ") :]
        for line in completed.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    assert len(lines) == 1, completed.stdout[-2000:]
    return json.loads(lines[0])
