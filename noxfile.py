"""Developer and CI sessions: `nox -s tests` runs the suite on every backend.

Each backend gets its own virtual environment holding that framework only,
so the tests also prove that kerameta never needs the other two.
"""

import os
import pathlib
import subprocess
import sys

import nox

nox.options.sessions = ["lint", "tests", "tests_oldest_keras", "docs"]
# Local runs only: CI starts from a clean clone, so it builds every one.
nox.options.reuse_existing_virtualenvs = True
# uv creates the environments and installs into them several times faster
# than pip (CI builds four from scratch); plain virtualenv and pip where uv
# is missing. `nox[uv]` (`.ci/run`) brings it.
nox.options.default_venv_backend = "uv|virtualenv"

BACKENDS = ["jax", "tensorflow", "torch"]
TORCH_CPU = "torch==2.13.0"  # the CPU build; never let pip pick a CUDA one


def _pip_find_links() -> list[str]:
    """pip's configured `find-links`, which uv does not read."""
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    links = []
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links += value.strip("'\"").split()
    return list(dict.fromkeys(links))


def _install_torch_cpu(session: nox.Session) -> None:
    # This machine keeps the CPU build where pip's configuration points
    # (find-links); uv is told the same places.
    links = []
    if session.venv_backend == "uv":
        for link in _pip_find_links():
            links += ["--find-links", link]
    session.install(TORCH_CPU, *links)
    session.run(
        "python",
        "-c",
        "import sys, torch; sys.exit(torch.version.cuda is not None)",
    )


def _install_backend(session: nox.Session, backend: str, extras: str) -> None:
    if backend == "torch":
        _install_torch_cpu(session)
    session.install("-e", f".[{backend},{extras}]")


def _env(backend: str) -> dict[str, str]:
    return {
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # oneDNN changes TF convolution numerics by ~1e-3 relative; the
        # reference tests need the plain kernels.
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }


@nox.session(python="3.11")
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """Runs the test suite on one backend (posargs go to pytest)."""
    # The TensorFlow session also runs the TFDS (Omniglot) tests; the other
    # two prove that kerameta, Omniglot included, works without TensorFlow.
    extras = "test,datasets" if backend == "tensorflow" else "test"
    _install_backend(session, backend, extras)
    session.run("pytest", *_workers(), *session.posargs, env=_env(backend))


def _workers() -> list[str]:
    """pytest-xdist arguments: test files spread over worker processes.

    Most tests are single-threaded (tracing, compiling, small kernels), so
    two workers on CI's two cores nearly halve the suite's time.
    `KERAMETA_TEST_WORKERS=0` runs in one process (e.g. to debug).
    """
    workers = os.environ.get("KERAMETA_TEST_WORKERS", "2")
    if workers == "0":
        return []
    return ["-n", workers, "--dist", "loadfile"]


OLDEST_KERAS = "keras==3.14.0"  # the floor in pyproject.toml's dependencies
# What a Keras release can change under kerameta: its private internals
# (compat_test), how errors surface (errors_test), the reference
# meta-gradients, fit, and saving with every component (the battery).
OLDEST_KERAS_TESTS = [
    "tests/compat_test.py",
    "tests/errors_test.py",
    "tests/meta_gradient_test.py",
    "tests/fit_test.py",
    "tests/saving_test.py",
    "tests/components_test.py",
]


@nox.session(python="3.11")
def tests_oldest_keras(session: nox.Session) -> None:
    """Runs tests on JAX with the oldest Keras kerameta supports.

    Proves the floor of `dependencies` in pyproject.toml. The full suite
    takes over 8 minutes on JAX, so this runs `OLDEST_KERAS_TESTS` (or the
    posargs), about 200 of its tests, stopping at the first failure.
    """
    _install_backend(session, "jax", "test")
    session.install(OLDEST_KERAS)
    tests = session.posargs or OLDEST_KERAS_TESTS
    # The committed `.keras` fixture was written by Keras 3.15 (its
    # initializer configs gained keys that older Keras rejects): Keras
    # reads files from older releases, not from newer ones.
    fixture = "tests/saving_test.py::test_loads_a_file_saved_under_jax"
    session.run(
        "pytest",
        *_workers(),
        "-x",
        *tests,
        "--deselect",
        fixture,
        env=_env("jax"),
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Builds the documentation with `mkdocs build --strict`."""
    _install_backend(session, "jax", "docs")
    session.run("mkdocs", "build", "--strict", env=_env("jax"))


@nox.session(python="3.11", default=False)
@nox.parametrize("backend", BACKENDS)
def examples(session: nox.Session, backend: str) -> None:
    """Runs every example in full (KERAMETA_SMOKE=1 for a quick pass)."""
    _install_backend(session, backend, "examples")
    for example in sorted(pathlib.Path("examples").glob("*.py")):
        session.run("python", str(example), env=_env(backend))


@nox.session(python="3.11", default=False)
@nox.parametrize("backend", BACKENDS)
def benchmarks(session: nox.Session, backend: str) -> None:
    """Runs the meta-iteration benchmark on one backend (appends JSONL)."""
    _install_backend(session, backend, "examples")
    if backend != "torch":
        _install_torch_cpu(session)  # the baseline runs in the same process
    session.run(
        "python",
        "benchmarks/meta_iteration.py",
        *session.posargs,
        env=_env(backend),
    )
