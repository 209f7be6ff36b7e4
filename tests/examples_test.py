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


# CI time: the method examples' smoke runs cost 10-70 s each where the
# step is compiled (JAX, TensorFlow), so there they need --run-slow; they
# run on PyTorch (eager), and the engine under them is tested on every
# backend.
def slow_unless_torch(test):
    return pytest.mark.slow(test) if BACKEND != "torch" else test


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


def _check_figure(stdout, output_dir, name, min_bytes=10_000):
    assert f"Keras backend: {BACKEND}" in stdout
    figure = output_dir / f"{name}.png"
    assert figure.is_file(), stdout[-2000:]
    content = figure.read_bytes()
    assert content.startswith(PNG_SIGNATURE)
    assert len(content) > min_bytes  # several panels, not an empty canvas
    assert f"Saved the figure to {figure}" in stdout


def _meta_test_mse(stdout, label, episodes):
    """The mean of a printed MSE `MetaTestResult` labelled `label`."""
    match = re.search(
        rf"{re.escape(label)}.*meta-test mean_squared_error: (\S+) ± \S+ "
        rf"\(95% confidence interval, {episodes} episodes,",
        stdout,
    )
    assert match, f"no {label!r} in the output:\n{stdout[-2000:]}"
    return float(match.group(1))


def _check_gradient_sharing(stdout, output_dir, tasks_per_batch, episodes):
    _check_figure(stdout, output_dir, "gradient_sharing")
    assert f"support_x: ({tasks_per_batch}, 5, 1)" in stdout
    assert f"query_x: ({tasks_per_batch}, 10, 1)" in stdout
    results = {}
    for rate in ("0.01", "0.1"):
        for name in ("MAML", "MAML + sharing"):
            label = f"inner_learning_rate={rate}, {name}: final"
            results[rate, name] = _meta_test_mse(stdout, label, episodes)
            assert math.isfinite(results[rate, name])
        assert f"Learned scales at inner_learning_rate={rate}:" in stdout
        assert re.search(
            rf"inner_learning_rate={re.escape(rate)}: MAML .* -> lower: ",
            stdout,
        )
    # One concurrent and one history scale per adapted tensor (6 tensors).
    assert stdout.count("concurrent_scale") == 12
    return results


@slow_unless_torch
def test_gradient_sharing_smoke(tmp_path):
    output_dir = tmp_path / "output"  # created by the example
    stdout = _run_example(
        "gradient_sharing.py", output_dir, smoke=True, timeout=600
    )
    # Smoke mode: 2 tasks per batch, 6 meta-iterations, 25 test tasks.
    _check_gradient_sharing(stdout, output_dir, tasks_per_batch=2, episodes=25)


@pytest.mark.slow
def test_gradient_sharing_full(tmp_path):
    output_dir = tmp_path / "output"
    stdout = _run_example(
        "gradient_sharing.py", output_dir, smoke=False, timeout=3600
    )
    results = _check_gradient_sharing(
        stdout, output_dir, tasks_per_batch=10, episodes=600
    )
    # Every run learns (an untrained network scores about 4); which of
    # MAML and MAML + sharing is better is the example's open question.
    for mse in results.values():
        assert mse < 3.0, stdout[-3000:]


def _check_gradient_agreement(stdout, output_dir, tasks_per_batch, episodes):
    _check_figure(stdout, output_dir, "gradient_agreement")
    assert f"support_x: ({tasks_per_batch}, 10, 1)" in stdout
    results = {}
    for name in ("MAML", "MAML + GA", "Reptile", "Reptile + GA"):
        match = re.search(
            rf"^{re.escape(name)}: meta-test mean_squared_error: (\S+) ± "
            rf"\S+ \(95% confidence interval, {episodes} episodes, 5 inner",
            stdout,
            re.M,
        )
        assert match, f"no {name!r} in the output:\n{stdout[-2000:]}"
        results[name] = float(match.group(1))
        assert math.isfinite(results[name])
    for name in ("MAML + GA", "Reptile + GA"):
        match = re.search(
            rf"{re.escape(name)} weights of one batch: (.*) \(sum (\S+), "
            rf"sum of \|w\| (\S+)\)",
            stdout,
        )
        assert match, stdout[-2000:]
        assert len(match.group(1).split()) == tasks_per_batch
        # The paper form's absolute weights sum to 1.
        assert abs(float(match.group(3)) - 1.0) < 1e-3
    for method in ("MAML", "Reptile"):
        assert re.search(rf"^{method}: .* -> lower: ", stdout, re.M)
    return results


@slow_unless_torch
def test_gradient_agreement_smoke(tmp_path):
    output_dir = tmp_path / "output"  # created by the example
    stdout = _run_example(
        "gradient_agreement.py", output_dir, smoke=True, timeout=600
    )
    _check_gradient_agreement(
        stdout, output_dir, tasks_per_batch=4, episodes=25
    )


@pytest.mark.slow
def test_gradient_agreement_full(tmp_path):
    output_dir = tmp_path / "output"
    stdout = _run_example(
        "gradient_agreement.py", output_dir, smoke=False, timeout=3600
    )
    results = _check_gradient_agreement(
        stdout, output_dir, tasks_per_batch=10, episodes=600
    )
    for mse in results.values():
        assert mse < 2.0, stdout[-3000:]


def _check_co_learner(stdout, output_dir, tasks_per_batch, episodes):
    _check_figure(stdout, output_dir, "co_learner")
    assert f"support_x: ({tasks_per_batch}, 10, 1)" in stdout
    results = {}
    for name in ("MAML", "MAML + co-learner"):
        label = f"{name}: final validation MSE"
        results[name] = _meta_test_mse(stdout, label, episodes)
        assert math.isfinite(results[name])
    assert "co_learner_loss, first and last epoch:" in stdout
    assert re.search(r"MAML .* -> lower: ", stdout)
    # The deployed network and the adapted model are the plain MLP.
    layers = "['hidden1', 'hidden2', 'head']"
    assert f"meta-learned network layers: {layers}" in stdout
    assert "meta-learned network parameters: 1761" in stdout
    assert "co-learner head parameters: 1681" in stdout
    assert f"adapted model layers: {layers}" in stdout
    assert "adapted model parameters: 1761" in stdout
    model_path = output_dir / "co_learner_adapted.keras"
    assert model_path.is_file()
    assert f"from {model_path}: 1761 parameters" in stdout
    assert (
        _number(stdout, "max |predict - adapted model| on the first test task:")
        < 1e-4
    )
    return results


@slow_unless_torch
def test_co_learner_smoke(tmp_path):
    output_dir = tmp_path / "output"  # created by the example
    stdout = _run_example("co_learner.py", output_dir, smoke=True, timeout=600)
    _check_co_learner(stdout, output_dir, tasks_per_batch=4, episodes=25)


@pytest.mark.slow
def test_co_learner_full(tmp_path):
    output_dir = tmp_path / "output"
    stdout = _run_example(
        "co_learner.py", output_dir, smoke=False, timeout=3600
    )
    results = _check_co_learner(
        stdout, output_dir, tasks_per_batch=10, episodes=600
    )
    for mse in results.values():
        assert mse < 2.0, stdout[-3000:]


MEMORY_ESTIMATORS = (
    "MAML, second order",
    "MAML, multi-step",
    "MAML, multi-step (straight-through)",
    "MAML, checkpointed",
    "ANIL, second order",
    "ANIL, implicit",
)


# The smoke run times one estimator of each kind, the full run all six.
SMOKE_TIMED_ESTIMATORS = (
    "MAML, second order",
    "MAML, checkpointed",
    "ANIL, implicit",
)


def _check_memory_efficient(stdout, output_dir, iterations, episodes, timed):
    _check_figure(stdout, output_dir, "memory_efficient_meta_gradients")
    results = {}
    for name in MEMORY_ESTIMATORS:
        label = f"{name}: {iterations} meta-iterations in"
        results[name] = _meta_test_mse(stdout, label, episodes)
        assert math.isfinite(results[name])
        timing = rf"{re.escape(name)}: \S+ ms per meta-iteration at K=1, "
        assert bool(re.search(timing, stdout)) == (name in timed), name
    for name, reference in (
        ("MAML, multi-step", "MAML, second order"),
        ("MAML, checkpointed", "MAML, second order"),
        ("ANIL, implicit", "ANIL, second order"),
    ):
        assert re.search(
            rf"{re.escape(name)} vs {re.escape(reference)}: .* -> ", stdout
        )
    # The checkpointed meta-gradient is second order's: same training.
    assert results["MAML, checkpointed"] == pytest.approx(
        results["MAML, second order"], rel=1e-3
    )
    return results


@slow_unless_torch
def test_memory_efficient_meta_gradients_smoke(tmp_path):
    output_dir = tmp_path / "output"  # created by the example
    stdout = _run_example(
        "memory_efficient_meta_gradients.py",
        output_dir,
        smoke=True,
        timeout=900,
    )
    # Smoke mode: 2 tasks per batch, 2 inner steps, 6 meta-iterations.
    assert "support_x: (2, 10, 1)" in stdout
    _check_memory_efficient(
        stdout,
        output_dir,
        iterations=6,
        episodes=25,
        timed=SMOKE_TIMED_ESTIMATORS,
    )


@pytest.mark.slow
def test_memory_efficient_meta_gradients_full(tmp_path):
    output_dir = tmp_path / "output"
    stdout = _run_example(
        "memory_efficient_meta_gradients.py",
        output_dir,
        smoke=False,
        timeout=3600,
    )
    assert "support_x: (10, 10, 1)" in stdout
    results = _check_memory_efficient(
        stdout,
        output_dir,
        iterations=1000,
        episodes=600,
        timed=MEMORY_ESTIMATORS,
    )
    for mse in results.values():
        assert mse < 4.0, stdout[-3000:]


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


# CI time: 60-70 s on JAX and TensorFlow, whose Omniglot meta-training on
# the real images is tested by omniglot_fit_test.py (and loading, TFDS
# included, by omniglot_data_test.py); the script's smoke runs on PyTorch.
@slow_unless_torch
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


def _check_multi_device(stdout):
    assert f"Keras backend: {BACKEND}" in stdout
    assert math.isfinite(_mse(stdout, "Final meta-training loss:"))
    assert math.isfinite(_mse(stdout, "Test MSE after meta-training:"))
    if BACKEND == "torch":  # two processes; only the first prints logs
        assert "Process 1 of 2" in stdout
        assert stdout.count("Final meta-training loss:") == 1
    elif BACKEND == "tensorflow":
        assert "Replicas: 2" in stdout


# The distributed tests check every engine against one device; the smoke run
# of the example (its device set-up costs 30-60 s on JAX and TensorFlow) is
# in CI on PyTorch, where it also proves the torchrun relaunch.
@pytest.mark.parametrize(
    "smoke",
    [
        pytest.param(
            True,
            marks=[pytest.mark.slow] if BACKEND != "torch" else [],
            id="smoke",
        ),
        pytest.param(False, marks=pytest.mark.slow, id="full"),
    ],
)
def test_multi_device(tmp_path, smoke):
    stdout = _run_example(
        "multi_device.py",
        tmp_path / "output",
        smoke=smoke,
        timeout=600 if smoke else 3600,
    )
    _check_multi_device(stdout)
