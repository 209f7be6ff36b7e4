"""The converted arrays of one archive, one `.npz` per image size.

A cache hit needs neither TensorFlow nor Pillow, nor the zips. The file
is written atomically (a temporary file, then `os.replace`).
"""

import contextlib
import os
import pathlib
import tempfile
import zipfile

import numpy as np

from kerameta.src.datasets.omniglot import catalog

FORMAT = 1  # bump when the cached arrays change meaning


def path(data_dir: pathlib.Path, archive: str, image_size: int) -> pathlib.Path:
    return data_dir / f"omniglot-{archive}-{image_size}px.npz"


def read(
    file: pathlib.Path, archive: str, image_size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached `(x, y)`, or `None` if absent, stale or unreadable."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                return None
            x, y = data["x"], data["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = len(catalog.character_ids(archive)) * catalog.IMAGES_PER_CHARACTER
    if x.shape != (n, image_size, image_size, 1) or y.shape != (n,):
        return None
    return x, y


def write(file: pathlib.Path, x: np.ndarray, y: np.ndarray) -> None:
    """Writes the npz atomically: a temporary file, then `os.replace`."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{file.name}.", suffix=".tmp", dir=file.parent
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, x=x, y=y, format=np.int64(FORMAT))
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
