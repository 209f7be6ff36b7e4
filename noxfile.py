"""Developer and CI sessions: `nox -s tests` runs the suite on every backend.

Each backend gets its own virtual environment holding that framework only,
so the tests also prove that kerameta never needs the other two.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

nox.options.sessions = [
    "lint",
    "tests",
    "tests_oldest_keras",
    "docs",
    "package",
]
# Local runs only: CI starts from a clean clone, so it builds every one.
nox.options.reuse_existing_virtualenvs = True
# uv creates the environments and installs into them several times faster
# than pip (CI builds four from scratch); plain virtualenv and pip where uv
# is missing. `nox[uv]` (`.ci/run`) brings it.
nox.options.default_venv_backend = "uv|virtualenv"

ROOT = pathlib.Path(__file__).resolve().parent
BACKENDS = ["jax", "tensorflow", "torch"]
TORCH_CPU = "torch==2.13.0"  # the CPU build; never let pip pick a CUDA one
# CI installs CPU builds, and the package metadata names none (a GPU user's
# `tensorflow[and-cuda]` or `jax[cuda12]` must satisfy the extras). How each
# framework stays on its CPU build here:
# - jax: PyPI's `jax` brings the CPU jaxlib; CUDA needs `jax[cuda12]`.
# - torch: the CPU build is installed first (`_install_torch_cpu`) and
#   satisfies the extra's `torch>=2.8`, so the resolver keeps it.
# - tensorflow: `tensorflow-cpu` is a distribution of its own, not a build of
#   `tensorflow` (both install the `tensorflow` module), so no constraint or
#   install order can make it satisfy `tensorflow>=2.20`: pip and uv would
#   add the 570 MB `tensorflow` wheel beside it, and the two would overwrite
#   each other's files. The sessions therefore install the extras'
#   requirements themselves, read from pyproject.toml, with each name below
#   replaced by its CPU distribution at the same version specifier.
CPU_DISTRIBUTIONS = {"tensorflow": "tensorflow-cpu"}


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


def _extra_requirements(extras: list[str]) -> list[str]:
    """The requirements of pyproject.toml's `extras`, on CPU distributions."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    table = pyproject["project"]["optional-dependencies"]
    requirements = []
    for extra in extras:
        if extra not in table:
            raise ValueError(f"pyproject.toml has no extra {extra!r}")
        for line in table[extra]:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            requirement.name = CPU_DISTRIBUTIONS.get(name, requirement.name)
            requirements.append(str(requirement))
    return list(dict.fromkeys(requirements))


def _install_backend(session: nox.Session, backend: str, extras: str) -> None:
    """kerameta (editable) with the `backend` extra and `extras`, CPU builds.

    Installs the extras' requirements rather than `.[backend,extras]`: see
    `CPU_DISTRIBUTIONS`. The package session installs the built wheel with
    an extra as users do.
    """
    if backend == "torch":
        _install_torch_cpu(session)
    requirements = _extra_requirements([backend, *extras.split(",")])
    session.install("-e", ".", *requirements)


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
]


@nox.session(python="3.11")
def tests_oldest_keras(session: nox.Session) -> None:
    """Runs tests on JAX with the oldest Keras kerameta supports.

    Proves the floor of `dependencies` in pyproject.toml. The full suite
    takes over 8 minutes on JAX, so this runs `OLDEST_KERAS_TESTS` (or the
    posargs): the private Keras internals kerameta reads (compat), the
    exact meta-gradients, fit, errors and saving, stopping at the first
    failure. (The components battery exercises kerameta's own code, the
    same on every Keras; CI time pays for the distributed tests instead.)
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
    """Builds the documentation with `mkdocs build --strict`.

    Strict, with mkdocs.yml's `validation`, also checks every link between
    pages and files and every #anchor; links to other sites are not checked
    (the build runs offline).
    """
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
    # TensorFlow's oneDNN kernels as the user's machine has them: on by
    # default on some CPUs, off on others (the tests turn them off).
    env = _env(backend)
    del env["TF_ENABLE_ONEDNN_OPTS"]
    session.run(
        "python", "benchmarks/meta_iteration.py", *session.posargs, env=env
    )


# What the built distributions must hold besides the package's tracked files.
SDIST_FILES = ["pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"]
# The frameworks a backend extra may name: the framework alone, never a
# build of it (no `tensorflow-cpu`, no `jax[cuda12]`, no CUDA libraries).
BACKEND_EXTRAS = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}


def _package_files() -> list[str]:
    """The files under kerameta/ that git tracks (the checkout's if no git)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "kerameta"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listing = [
            str(path.relative_to(ROOT))
            for path in (ROOT / "kerameta").rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
    return sorted(listing)


def _version() -> str:
    """`__version__` from kerameta/src/version.py, without importing it."""
    text = (ROOT / "kerameta" / "src" / "version.py").read_text("utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not match:
        raise ValueError("kerameta/src/version.py sets no __version__")
    return match.group(1)


def _check_distributions(wheel: pathlib.Path, sdist: pathlib.Path) -> list[str]:
    """What is wrong with the built files: missing or stray files, version.

    Also that each backend extra names its framework alone.
    """
    version = _version()
    expected = _package_files()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"kerameta-{version}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode("utf-8")
    problems = [
        f"the wheel lacks {name}" for name in expected if name not in names
    ]
    strays = [
        name for name in names if not name.startswith(("kerameta/", f"{info}/"))
    ]
    problems += [
        f"the wheel holds {name} (outside the package)" for name in strays
    ]
    problems += [f"the wheel holds {n}" for n in names if "__pycache__" in n]
    if f"\nVersion: {version}\n" not in metadata:
        problems.append(f"the wheel's METADATA is not version {version}")
    requires = [
        Requirement(line.partition(":")[2].strip())
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    for extra, framework in BACKEND_EXTRAS.items():
        required = [
            r
            for r in requires
            if r.marker is not None and r.marker.evaluate({"extra": extra})
        ]
        frameworks = [canonicalize_name(r.name) for r in required]
        if frameworks != [framework] or any(
            r.extras or r.url for r in required
        ):
            problems.append(
                f"the {extra!r} extra requires {[str(r) for r in required]}, "
                f"not {framework!r} alone (no build such as tensorflow-cpu "
                "or jax[cuda12])"
            )
    with tarfile.open(sdist) as archive:
        top = f"kerameta-{version}/"
        members = {m.name.removeprefix(top) for m in archive.getmembers()}
    problems += [
        f"the sdist lacks {name}"
        for name in [*expected, *SDIST_FILES]
        if name not in members
    ]
    return problems


@nox.session(python="3.11")
def package(session: nox.Session) -> None:
    """Builds the sdist and wheel, checks them, and runs the installed wheel.

    `python -m build` (the wheel built from the sdist), `twine check
    --strict`, the files and metadata of both (`_check_distributions`), then
    a fresh virtual environment outside the checkout gets the wheel with the
    `jax` extra (and `examples`, for matplotlib), and runs the import and
    version check `tests/package/check_installed.py` and the sinusoid
    example (`KERAMETA_SMOKE=1`) from there.
    """
    session.install("build[uv]>=1.2", "twine>=6.1")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kerameta-package-"))
    try:
        dist = workdir / "dist"
        session.run(
            "python",
            "-m",
            "build",
            "--quiet",
            "--installer",
            "uv",
            "--outdir",
            str(dist),
            str(ROOT),
        )
        (wheel,) = dist.glob("kerameta-*.whl")
        (sdist,) = dist.glob("kerameta-*.tar.gz")
        session.run("twine", "check", "--strict", str(wheel), str(sdist))
        problems = _check_distributions(wheel, sdist)
        if problems:
            session.error("\n".join(problems))

        venv = workdir / "venv"
        python = str(venv / "bin" / "python")
        base = str(pathlib.Path(session.bin) / "python")
        session.run("uv", "venv", "--quiet", "--python", base, str(venv))
        session.run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            f"{wheel}[jax,examples]",
        )
        env = {**_env("jax"), "MPLBACKEND": "Agg"}
        for script in (
            "tests/package/check_installed.py",
            "examples/sinusoid_regression.py",
        ):
            shutil.copy(ROOT / script, workdir)
        session.chdir(workdir)
        session.run(
            python,
            "check_installed.py",
            str(ROOT),
            _version(),
            env=env,
            external=True,
        )
        output = workdir / "output"
        session.run(
            python,
            "sinusoid_regression.py",
            env={
                **env,
                "KERAMETA_SMOKE": "1",
                "KERAMETA_OUTPUT_DIR": str(output),
            },
            external=True,
        )
        for name in ("sinusoid_regression.png", "sinusoid_maml.keras"):
            if not (output / name).is_file():
                session.error(f"The example wrote no {name}")
    finally:
        session.chdir(ROOT)
        shutil.rmtree(workdir, ignore_errors=True)
