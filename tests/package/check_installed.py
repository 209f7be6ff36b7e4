"""Checks an installed kerameta wheel (run by `nox -s package`).

Run with the interpreter of a fresh virtual environment that holds the built
wheel and one backend extra, from a folder outside the checkout:

    python check_installed.py CHECKOUT VERSION

It checks that kerameta is imported from that environment's site-packages
(not from CHECKOUT), that `kerameta.__version__` is VERSION and the installed
distribution's version, that `py.typed` ships, and that importing every
module of the package (save the other backends' seam modules) on the current
`KERAS_BACKEND` neither imports nor even tries to import another framework.
It prints `OK` and exits 0, or names what failed and exits 1.
"""

import importlib
import importlib.abc
import importlib.metadata
import os
import pathlib
import pkgutil
import sys
import sysconfig

FRAMEWORKS = {
    "jax": {"jax", "jaxlib"},
    "tensorflow": {"tensorflow"},
    "torch": {"torch"},
}
BACKEND = os.environ["KERAS_BACKEND"]
OTHER = set().union(*(m for b, m in FRAMEWORKS.items() if b != BACKEND))


def _other_seam(name: str) -> bool:
    """A seam module of another backend (`backend/torch.py`, `jax_*.py`)."""
    package, _, module = name.rpartition(".")
    return package == "kerameta.src.backend" and any(
        module.startswith(b) for b in FRAMEWORKS if b != BACKEND
    )


attempts = []


class Watch(importlib.abc.MetaPathFinder):
    """Notes every attempt to import another framework; finds nothing."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in OTHER:
            attempts.append(name)
        return None


def main(checkout: pathlib.Path, version: str) -> list[str]:
    errors = []
    sys.meta_path.insert(0, Watch())
    import keras

    after_keras = {m for m in sys.modules if m.partition(".")[0] in OTHER}
    attempts.clear()  # Keras's own probes are Keras's business

    import kerameta

    package = pathlib.Path(kerameta.__file__).resolve().parent
    site = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
    if package.parent != site:
        errors.append(f"kerameta imported from {package}, not from {site}")
    if checkout == package or checkout in package.parents:
        errors.append(f"kerameta imported from the checkout: {package}")
    installed = importlib.metadata.version("kerameta")
    if not kerameta.__version__ == installed == version:
        errors.append(
            f"versions differ: kerameta.__version__ {kerameta.__version__!r}"
            f", installed {installed!r}, wheel {version!r}"
        )
    if not (package / "py.typed").is_file():
        errors.append(f"no py.typed in {package}")

    modules = sorted(
        info.name
        for info in pkgutil.walk_packages(kerameta.__path__, "kerameta.")
        if not _other_seam(info.name)
    )
    for name in modules:
        importlib.import_module(name)
    if attempts:
        errors.append(f"kerameta tried to import {sorted(set(attempts))}")
    loaded = {m for m in sys.modules if m.partition(".")[0] in OTHER}
    if loaded - after_keras:
        errors.append(f"kerameta imported {sorted(loaded - after_keras)}")
    if keras.config.backend() != BACKEND:
        errors.append(f"Keras runs on {keras.config.backend()}")
    print(
        f"kerameta {installed} from {package}: {len(modules)} modules "
        f"imported on {BACKEND}"
    )
    return errors


if __name__ == "__main__":
    checkout, version = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2]
    errors = main(checkout, version)
    for error in errors:
        print("FAILED:", error)
    print("FAILED" if errors else "OK")
    sys.exit(1 if errors else 0)
