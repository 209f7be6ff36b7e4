"""The autouse seeding in `conftest.py` (`helpers.seed_everything`)."""

import random
import sys

import keras
import numpy as np
import pytest
from helpers import BACKEND
from helpers import seed_everything
from helpers import to_numpy


def _draws():
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    return [
        random.random(),
        np.random.rand(),
        to_numpy(keras.random.normal((4,))),
        to_numpy(dense.kernel),
    ]


def test_seeding_repeats_every_generator():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    second = _draws()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    seed_everything(8)
    assert not np.array_equal(_draws()[2], first[2])


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF is the backend")
def test_seeding_never_imports_tensorflow():
    if "tensorflow" in sys.modules:
        pytest.skip("something else imported TensorFlow in this process")
    seed_everything()
    assert "tensorflow" not in sys.modules
