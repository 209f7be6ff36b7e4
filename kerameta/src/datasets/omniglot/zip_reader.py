"""Reads an Omniglot zip with `zipfile`, Pillow and NumPy (no TensorFlow).

Like TFDS, it checks each zip's size and sha256 first: against
`tfds_checksums.tsv` in the zip's folder when that lists the file, else
against the upstream values. `sources.read_checksums` parses the
checksum file in place of TFDS's `checksums.load_url_infos`, which would
import TensorFlow.
"""

import hashlib
import io
import pathlib
import re
import zipfile

import numpy as np

from kerameta.src.datasets.omniglot import catalog
from kerameta.src.datasets.omniglot import images
from kerameta.src.datasets.omniglot import sources

_PNG_NAME = re.compile(
    r"^images_[a-z0-9_]+/(?P<alphabet>[^/]+)/character(?P<number>\d+)/"
    r"(?P<label>\d{4})_(?P<drawer>\d{2})\.png$"
)


def verify(path: pathlib.Path) -> None:
    """Raises `ValueError` unless the zip has the expected size and sha256."""
    checksum_file = sources.checksums_path(path.parent)
    expected = None
    if checksum_file is not None:
        expected = sources.read_checksums(checksum_file).get(path.name)
        origin = str(checksum_file)
    if expected is None:
        expected = catalog.UPSTREAM_CHECKSUMS[path.name]
        origin = "the upstream file's checksum"
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    got = (path.stat().st_size, digest)
    if got != expected:
        raise ValueError(
            f"The Omniglot zip {str(path)!r} is corrupt or not the expected "
            f"file: expected {expected[0]} bytes with sha256 {expected[1]} "
            f"(from {origin}). Received: {got[0]} bytes with sha256 "
            f"{got[1]}. Replace the file with a good copy; for a rebuilt "
            f"zip, list its checksum in {sources.CHECKSUMS_FILENAME!r} "
            f"(TFDS format) beside it."
        )


def read_zip(path: pathlib.Path, archive: str) -> tuple[np.ndarray, np.ndarray]:
    """`(labels, gray)` of every PNG in the zip of `archive` at `path`."""
    from PIL import Image

    verify(path)
    labels, gray = [], []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                match = _PNG_NAME.match(info.filename)
                if match is None:
                    continue
                with Image.open(io.BytesIO(zf.read(info))) as image:
                    # One-bit PNGs: "L" maps them to 0 / 255 like TF does.
                    gray.append(np.asarray(image.convert("L")))
                labels.append(int(match["label"]) - 1)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(
            f"Could not read the Omniglot zip {str(path)!r}: {error}. "
            f"Replace the file with a good copy."
        ) from error
    labels = np.array(labels, dtype=np.int64)
    gray = np.stack(gray) if gray else np.zeros((0, 0, 0), np.uint8)
    images.check_contents(archive, labels, gray, repr(str(path)))
    return labels, gray
