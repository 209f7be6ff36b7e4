"""Where the zips and the converted data live."""

import os
import pathlib
import re
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


_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHECKSUMS_FORMAT = (
    "Expected one line per file, `url<TAB>size<TAB>sha256` with an optional "
    "`<TAB>file name` (TFDS's checksum format: size in bytes, sha256 as 64 "
    "lowercase hex digits; blank lines and lines starting with '#' are "
    "ignored), e.g. 'https://github.com/brendenlake/omniglot/raw/master/"
    "python/images_background_small1.zip\\t1319022\\tf38eb80f...'"
)


def read_checksums(path: pathlib.Path) -> dict[str, tuple[int, str]]:
    """`{file name: (size, sha256)}` from a TFDS checksum file.

    Its lines are `url<TAB>size<TAB>sha256[<TAB>file name]`, as TFDS reads
    them (a line without tabs may use spaces); the file name defaults to
    the last part of the URL.

    Raises:
        ValueError: naming the file and the line, for a line of another
            form (TFDS itself would fail on it with a bare
            `invalid literal for int()`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"The checksum file {str(path)!r} is not a UTF-8 text file. "
            f"{_CHECKSUMS_FORMAT}. Replace it, or remove it to check the "
            "zips against the upstream checksums."
        ) from None
    result = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split("\t")
        if len(fields) == 1:  # TFDS's legacy form, separated by spaces
            fields = stripped.rsplit(" ", 2)
        problem = None
        if len(fields) not in (3, 4):
            problem = (
                f"expected 3 or 4 tab-separated fields, found {len(fields)}"
            )
        elif not fields[1].isdigit() or not fields[1].isascii():
            problem = f"the size {fields[1]!r} is not a whole number of bytes"
        elif not _SHA256.fullmatch(fields[2]):
            problem = f"the sha256 {fields[2]!r} is not 64 lowercase hex digits"
        if problem is not None:
            shown = line if len(line) <= 200 else line[:200] + "..."
            raise ValueError(
                f"Malformed line {number} of the checksum file "
                f"{str(path)!r}: {problem}. {_CHECKSUMS_FORMAT}. Received: "
                f"{shown!r}. Fix or remove that line (a zip that the file "
                "does not list is checked against the upstream checksum)."
            )
        name = fields[3] if len(fields) > 3 and fields[3] else fields[0]
        result[name.rsplit("/", 1)[-1]] = (int(fields[1]), fields[2])
    return result


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
    """Raises unless `source_dir` is a folder holding the zips of `archives`.

    `NotADirectoryError` if it is a file, else `FileNotFoundError`.
    """
    if source_dir.exists() and not source_dir.is_dir():
        names = [catalog.ARCHIVES[a].filename for a in archives]
        zips = {a.filename for a in catalog.ARCHIVES.values()}
        if source_dir.name in zips:
            fix = (
                "It is one of the zips: pass the folder that holds it, "
                f"source_dir={str(source_dir.parent)!r}."
            )
        else:
            fix = (
                "Pass `source_dir=<folder>` or set the environment variable "
                f"{OMNIGLOT_DIR_ENV}=<folder>."
            )
        raise NotADirectoryError(
            f"`source_dir` must be a folder holding the Omniglot zips "
            f"{names}, but {str(source_dir)!r} is a file, not a folder. " + fix
        )
    if not source_dir.is_dir():
        raise missing_source_error(source_dir, archives, exists=False)
    missing = [
        a
        for a in archives
        if not (source_dir / catalog.ARCHIVES[a].filename).is_file()
    ]
    if missing:
        raise missing_source_error(source_dir, missing)
