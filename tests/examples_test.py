"""The examples run end to end on the current backend.

Each example runs in its own interpreter, as a user would run it, with the
backend of this test session. `KERAMETA_SMOKE=1` selects the tiny version;
the full run is marked `slow` (`pytest --run-slow`).
"""

import math
import os
import pathlib
import re
import subprocess
import sys

import keras
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BACKEND = keras.backend.backend()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_example(name, output_dir, smoke, timeout):
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=BACKEND,
        KERAMETA_OUTPUT_DIR=str(output_dir),
        MPLBACKEND="Agg",
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("KERAMETA_SMOKE", None)
    if smoke:
        env["KERAMETA_SMOKE"] = "1"
    # Run the working tree's kerameta, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        # Elsewhere than the repository, so that nothing is written there.
        cwd=output_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, (
        f"{name} failed on {BACKEND}:\n{completed.stdout[-3000:]}\n"
        f"{completed.stderr[-5000:]}"
    )
    return completed.stdout


def _check_sinusoid_outputs(stdout, output_dir):
    assert f"Keras backend: {BACKEND}" in stdout
    figure = output_dir / "sinusoid_regression.png"
    assert figure.is_file(), stdout[-2000:]
    content = figure.read_bytes()
    assert content.startswith(PNG_SIGNATURE)
    assert len(content) > 10_000  # three panels, not an empty canvas
    assert f"Saved the figure to {figure}" in stdout
    assert (output_dir / "sinusoid_maml.keras").is_file()
    assert "predict output: (3, 200, 1)" in stdout
    assert "Restored MAML from" in stdout


def _mse(stdout, label):
    match = re.search(rf"{re.escape(label)}\s+(\S+)", stdout)
    assert match, f"no {label!r} in the output:\n{stdout[-2000:]}"
    return float(match.group(1))


def test_sinusoid_regression_smoke(tmp_path):
    output_dir = tmp_path / "output"  # created by the example
    stdout = _run_example(
        "sinusoid_regression.py", output_dir, smoke=True, timeout=600
    )
    _check_sinusoid_outputs(stdout, output_dir)
    # Smoke mode: 5 tasks per batch, 5 meta-iterations.
    assert "support_x: (5, 10, 1)" in stdout
    assert math.isfinite(_mse(stdout, "Test MSE after meta-training:"))


@pytest.mark.slow
def test_sinusoid_regression_full(tmp_path):
    output_dir = tmp_path / "output"
    stdout = _run_example(
        "sinusoid_regression.py", output_dir, smoke=False, timeout=3600
    )
    _check_sinusoid_outputs(stdout, output_dir)
    assert "support_x: (25, 10, 1)" in stdout
    before = _mse(stdout, "Test MSE before meta-training:")
    after = _mse(stdout, "Test MSE after meta-training:")
    # The example reports about 4.3 before and 0.15 after meta-training.
    assert after < before / 2, stdout[-3000:]
