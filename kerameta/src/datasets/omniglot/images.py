"""Conversion shared by both readers: canonical order, ink, area resize.

The resize is an exact area (box) filter: output pixel `i` averages the
input interval `[i, i + 1) * 105 / image_size`, with fractional weights
for the pixels it covers in part. Pillow's `Image.Resampling.BOX` is not
the same filter when `105 / image_size` is not an integer (it gives each
input pixel to one output pixel, weight 0 or 1): at 28 pixels its
results differ from these by up to 0.28 of full ink. So the two-matrix
NumPy product stays: it keeps the arrays (and the caches) of earlier
versions, and needs no Pillow on the TFDS path.
"""

import functools
import hashlib

import numpy as np

from kerameta.src.datasets.omniglot import catalog

CHUNK = 512  # images per einsum call (and per TFDS batch)


@functools.cache
def area_matrix(out_size: int, in_size: int) -> np.ndarray:
    """The `(out_size, in_size)` exact area (box) resampling matrix.

    Output pixel `i` covers the input interval `[i, i + 1) * in / out`;
    its weight on input pixel `j` is the overlap of that interval with
    `[j, j + 1)` divided by the interval's length, so rows sum to 1.
    Computed in integers scaled by `out_size`, so the weights are exact
    up to the final division.
    """
    i = np.arange(out_size)[:, None]
    j = np.arange(in_size)[None, :]
    low = np.maximum(i * in_size, j * out_size)
    high = np.minimum((i + 1) * in_size, (j + 1) * out_size)
    matrix = np.maximum(high - low, 0) / in_size
    matrix.setflags(write=False)
    return matrix


def convert(
    labels: np.ndarray, gray: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical order, ink and area resize: `(x, y)` of one archive.

    Args:
        labels: `(n,)` integer character ids.
        gray: `(n, 105, 105)` uint8 grayscale, 255 the background.
        image_size: side of the output images.

    Returns:
        `x` float32 `(n, image_size, image_size, 1)` with ink 1, sorted by
        label, then by the sha256 of the pixels (TFDS keeps no drawer
        number, so both readers need an order of their own); `y` int64
        `(n,)`.
    """
    keys = [hashlib.sha256(g.tobytes()).digest() for g in gray]
    order = sorted(range(len(labels)), key=lambda k: (labels[k], keys[k]))
    order = np.array(order, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)[order]
    gray = gray[order]
    matrix = area_matrix(image_size, gray.shape[1])
    x = np.empty((len(gray), image_size, image_size, 1), dtype=np.float32)
    for start in range(0, len(gray), CHUNK):
        ink = 1.0 - gray[start : start + CHUNK] / 255.0
        small = np.einsum("ij,njk,lk->nil", matrix, ink, matrix, optimize=True)
        x[start : start + CHUNK, ..., 0] = np.clip(small, 0.0, 1.0)
    return x, labels


def check_contents(
    archive: str, labels: np.ndarray, gray: np.ndarray, origin: str
) -> None:
    """Raises unless `(labels, gray)` is all of `archive`, 20 per character."""
    expected = catalog.character_ids(archive)
    ids, counts = np.unique(labels, return_counts=True)
    shape = (catalog.SOURCE_SIZE, catalog.SOURCE_SIZE)
    per_character = catalog.IMAGES_PER_CHARACTER
    if (
        not np.array_equal(ids, expected)
        or np.any(counts != per_character)
        or gray.shape[1:] != shape
    ):
        raise ValueError(
            f"{origin} does not hold the Omniglot archive {archive!r}: "
            f"expected {len(expected)} characters with {per_character} "
            f"images of {shape} pixels each. Received: {len(ids)} "
            f"characters, {len(labels)} images of shape {gray.shape[1:]}."
        )
