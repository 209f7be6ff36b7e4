"""Shared test setup: one backend per process, picked by `KERAS_BACKEND`.

Run `nox -s tests` for every backend, or one with e.g.
`KERAS_BACKEND=torch pytest`. `--run-slow` adds the longer tests (full
example runs); `--gpu` the ones that need an accelerator.
"""

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
from helpers import seed_everything  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow", action="store_true", help="also run @slow tests"
    )
    parser.addoption("--gpu", action="store_true", help="run @gpu tests")


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"


def pytest_collection_modifyitems(config, items):
    skips = {
        "slow": (config.getoption("--run-slow"), "needs --run-slow"),
        "gpu": (config.getoption("--gpu"), "needs --gpu"),
    }
    for item in items:
        for marker, (enabled, reason) in skips.items():
            if marker in item.keywords and not enabled:
                item.add_marker(pytest.mark.skip(reason=reason))


def _disable_tf32() -> None:
    # Reference comparisons need full float32 matmuls on GPUs.
    if BACKEND == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif BACKEND == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")


_disable_tf32()


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Every test starts from the same seeds and a fresh Keras session."""
    keras.backend.clear_session(free_memory=False)  # gc.collect() is slow
    seed_everything()
    yield


@pytest.fixture
def backend() -> str:
    return BACKEND
