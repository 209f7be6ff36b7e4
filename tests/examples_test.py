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


def _run_example(name, output_dir, smoke, timeout, extra_env=None):
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=BACKEND,
        KERAMETA_OUTPUT_DIR=str(output_dir),
        MPLBACKEND="Agg",
    )
    env.update(extra_env or {})
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


OMNIGLOT_DIR = pathlib.Path(
    os.environ.get(
        "KERAMETA_OMNIGLOT_DIR", REPO.parent / "shared" / "data" / "omniglot"
    )
)


def _omniglot_env(tmp_path, zips):
    """The example's environment, or a skip if the Omniglot zips are absent."""
    missing = [z for z in zips if not (OMNIGLOT_DIR / z).is_file()]
    if missing:
        pytest.skip(
            f"The Omniglot zips {missing} are not in {OMNIGLOT_DIR}; set "
            "KERAMETA_OMNIGLOT_DIR to the folder that holds them."
        )
    # A fresh cache: the example converts the zips itself.
    return {
        "KERAMETA_OMNIGLOT_DIR": str(OMNIGLOT_DIR),
        "KERAMETA_DATA_DIR": str(tmp_path / "data"),
    }


def _accuracy(stdout, label):
    """The mean of a printed `MetaTestResult`, as a fraction."""
    match = re.search(rf"{re.escape(label)} accuracy: (\S+)%", stdout)
    assert match, f"no {label!r} in the output:\n{stdout[-2000:]}"
    value = float(match.group(1)) / 100
    assert 0.0 <= value <= 1.0, match.group(0)
    return value


def _number(stdout, label):
    match = re.search(rf"{re.escape(label)}\s+(\S+)", stdout)
    assert match, f"no {label!r} in the output:\n{stdout[-2000:]}"
    return float(match.group(1))


def _check_omniglot_outputs(stdout, output_dir, tasks_per_batch, episodes):
    assert f"Keras backend: {BACKEND}" in stdout
    assert f"support_x: ({tasks_per_batch}, 5, 28, 28, 1)" in stdout
    assert f"support_y: ({tasks_per_batch}, 5)" in stdout
    assert f"query_x: ({tasks_per_batch}, 5, 28, 28, 1)" in stdout
    summary = f"confidence interval, {episodes} episodes, 3 inner steps)"
    for label in ("before", "after"):
        line = f"Meta-test accuracy {label} meta-training: accuracy: "
        assert re.search(rf"{re.escape(line)}.*{re.escape(summary)}", stdout)
    figure = output_dir / "omniglot_few_shot.png"
    assert figure.is_file(), stdout[-2000:]
    content = figure.read_bytes()
    assert content.startswith(PNG_SIGNATURE)
    assert len(content) > 20_000  # 3 episodes of drawings, not a blank
    assert f"Saved the figure to {figure}" in stdout
    assert "predict output: (3, 75, 5)" in stdout
    model_path = output_dir / "omniglot_maml.keras"
    assert model_path.is_file()
    assert f"Restored MAML from {model_path}" in stdout
    assert _number(stdout, "max |restored - original| predictions:") < 1e-4
    before = _accuracy(stdout, "Meta-test accuracy before meta-training:")
    after = _accuracy(stdout, "Meta-test accuracy after meta-training:")
    return before, after


def test_omniglot_few_shot_smoke(tmp_path):
    extra_env = _omniglot_env(tmp_path, ["images_background_small1.zip"])
    output_dir = tmp_path / "output"  # created by the example
    stdout = _run_example(
        "omniglot_few_shot.py",
        output_dir,
        smoke=True,
        timeout=900,
        extra_env=extra_env,
    )
    # Smoke mode: the "small1" archive split 100 / 16 / 20 characters,
    # 4 tasks per batch, 3 meta-iterations, 20 test episodes.
    assert "train: 100 characters, 2000 images" in stdout
    assert "test: 20 characters, 400 images" in stdout
    _check_omniglot_outputs(stdout, output_dir, tasks_per_batch=4, episodes=20)
    assert (
        _number(stdout, "max |predict - adapted model| on the first episode:")
        < 1e-3
    )
    # The cache went where the test said, not to ~/.keras.
    assert (tmp_path / "data" / "omniglot-small1-28px.npz").is_file()


@pytest.mark.slow
def test_omniglot_few_shot_full(tmp_path):
    extra_env = _omniglot_env(
        tmp_path, ["images_background.zip", "images_evaluation.zip"]
    )
    output_dir = tmp_path / "output"
    stdout = _run_example(
        "omniglot_few_shot.py",
        output_dir,
        smoke=False,
        timeout=3 * 3600,
        extra_env=extra_env,
    )
    assert "train: 1200 characters, 24000 images" in stdout
    before, after = _check_omniglot_outputs(
        stdout, output_dir, tasks_per_batch=16, episodes=600
    )
    # 5-way 1-shot: chance is 20%. 1000 meta-iterations of 16 tasks are a
    # short run: the benchmark's validation accuracy was 72% after 500.
    assert after > 0.7, stdout[-3000:]
    assert after > before, stdout[-3000:]
