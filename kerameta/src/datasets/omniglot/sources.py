"""Where the zips and the converted data live."""

import os
import pathlib
from collections.abc import Sequence
from typing import Any

from kerameta.src.datasets.omniglot import catalog

OMNIGLOT_DIR_ENV = "KERAMETA_OMNIGLOT_DIR"
"""Environment variable naming the folder that holds the Omniglot zips."""

CHECKSUMS_FILENAME = "tfds_checksums.tsv"
"""Checksum file in TFDS format that `source_dir` may hold."""


def default_data_dir() -> pathlib.Path:
    """`$KERAS_HOME/datasets/kerameta/omniglot` (`~/.keras` by default)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return pathlib.Path(keras_home) / "datasets" / "kerameta" / "omniglot"


def resolve_source_dir(source_dir: Any) -> pathlib.Path | None:
    """`source_dir`, else `$KERAMETA_OMNIGLOT_DIR`, else `None`."""
    if source_dir is None:
        source_dir = os.environ.get(OMNIGLOT_DIR_ENV) or None
    if source_dir is None:
        return None
    return pathlib.Path(os.fspath(source_dir)).expanduser()


def checksums_path(source_dir: pathlib.Path | None) -> pathlib.Path | None:
    """The checksum file in `source_dir`, if there is one."""
    if source_dir is None or not (source_dir / CHECKSUMS_FILENAME).is_file():
        return None
    return source_dir / CHECKSUMS_FILENAME


def missing_source_error(
    source_dir: pathlib.Path | None,
    archives: Sequence[str],
    exists: bool = True,
) -> FileNotFoundError:
    names = [catalog.ARCHIVES[a].filename for a in archives]
    if source_dir is None:
        where = "No folder was given that holds"
    elif not exists:
        where = f"The folder {str(source_dir)!r} does not exist; it should hold"
    else:
        where = f"The folder {str(source_dir)!r} does not hold"
    return FileNotFoundError(
        f"{where} the Omniglot zips {names}. Expected a folder with these "
        f"files (upstream: {catalog.URL}), and optionally the checksum file "
        f"{CHECKSUMS_FILENAME!r} for rebuilt zips. Pass "
        f"`source_dir=<folder>` or set the environment variable "
        f"{OMNIGLOT_DIR_ENV}=<folder>; with tensorflow_datasets installed, "
        f"reader='tfds' without a folder downloads the zips instead."
    )


def check_source(source_dir: pathlib.Path, archives: Sequence[str]) -> None:
    """Raises `FileNotFoundError` unless `source_dir` holds their zips."""
    if not source_dir.is_dir():
        raise missing_source_error(source_dir, archives, exists=False)
    missing = [
        a
        for a in archives
        if not (source_dir / catalog.ARCHIVES[a].filename).is_file()
    ]
    if missing:
        raise missing_source_error(source_dir, missing)
