"""`load_data`: the Omniglot arrays, split by character."""

import importlib.util
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerameta.src import checks
from kerameta.src.data.few_shot import split_classes
from kerameta.src.datasets.omniglot import cache
from kerameta.src.datasets.omniglot import catalog
from kerameta.src.datasets.omniglot import images
from kerameta.src.datasets.omniglot import sources
from kerameta.src.datasets.omniglot import tfds_builder
from kerameta.src.datasets.omniglot import zip_reader

READERS = ("auto", "tfds", "zip")


def has_tfds() -> bool:
    return importlib.util.find_spec("tensorflow_datasets") is not None


def check_archives(archives: Any) -> tuple[str, ...]:
    """`archives` as a tuple of known archives without shared characters."""
    names = tuple(catalog.ARCHIVES)
    if (
        isinstance(archives, str)
        or not isinstance(archives, Sequence)
        or not archives
    ):
        raise ValueError(
            f"`archives` must be a non-empty sequence of archive names from "
            f"{list(names)}, e.g. archives=('small1',). "
            f"Received: archives={archives!r}"
        )
    archives = tuple(archives)
    for i, archive in enumerate(archives):
        if archive in ("train", "test"):
            raise ValueError(
                "`archives` takes archive names, not TFDS split names: "
                "'train' -> 'background', 'test' -> 'evaluation'. "
                f"Received: archives={archives!r}"
            )
        checks.check_choice(f"archives[{i}]", archive, names)
    for i, a in enumerate(archives):
        for b in archives[i + 1 :]:
            if a == b:
                raise ValueError(
                    f"`archives` must hold distinct archives, but {a!r} "
                    f"appears twice. Received: archives={archives!r}"
                )
            alphabets = catalog.ARCHIVE_ALPHABETS
            shared = sorted(set(alphabets[a]) & set(alphabets[b]))
            if shared:
                raise ValueError(
                    f"Archives {a!r} and {b!r} overlap: both hold the "
                    f"alphabets {shared}, so their characters would appear "
                    f"twice. Expected archives without shared characters; "
                    f"'small1' and 'small2' are subsets of 'background', "
                    f"and they share Greek and Latin. Received: "
                    f"archives={archives!r}"
                )
    return archives


def check_split_sizes(
    split_sizes: Any, archives: tuple[str, ...]
) -> tuple[int, int]:
    """`(train, validation)` character counts that fit in `archives`."""
    try:
        train, val = split_sizes
    except (TypeError, ValueError):
        raise ValueError(
            "`split_sizes` must be a pair of non-negative integers (train "
            "characters, validation characters), e.g. (1200, 100). "
            f"Received: split_sizes={split_sizes!r}"
        ) from None
    train = checks.check_positive_int("split_sizes[0]", train, allow_zero=True)
    val = checks.check_positive_int("split_sizes[1]", val, allow_zero=True)
    available = sum(len(catalog.character_ids(a)) for a in archives)
    if train + val > available:
        raise ValueError(
            f"`split_sizes` asks for {train} + {val} = {train + val} "
            f"characters, but archives={archives!r} hold only {available} "
            f"characters. Expected train + validation <= {available}; "
            f"pass smaller split sizes (the rest of the characters form "
            f"the test set). Received: split_sizes={split_sizes!r}"
        )
    return train, val


def check_reader(reader: Any) -> str:
    """`reader`, with `"auto"` resolved to `"tfds"` or `"zip"`."""
    checks.check_choice("reader", reader, READERS)
    if reader == "auto":
        return "tfds" if has_tfds() else "zip"
    if reader == "tfds" and not has_tfds():
        raise ValueError(
            "reader='tfds' needs tensorflow_datasets; install it (pip "
            "install tensorflow-datasets) or use reader='zip'. "
            f"Received: reader={reader!r}"
        )
    return reader


def load_archive(
    archive: str,
    image_size: int,
    source_dir: pathlib.Path | None,
    data_dir: pathlib.Path,
    reader: str,
) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` of one archive: from the cache, else read and cached."""
    path = cache.path(data_dir, archive, image_size)
    cached = cache.read(path, archive, image_size)
    if cached is not None:
        return cached
    if reader == "zip":
        if source_dir is None:
            raise sources.missing_source_error(None, [archive])
        sources.check_source(source_dir, [archive])
        zip_path = source_dir / catalog.ARCHIVES[archive].filename
        labels, gray = zip_reader.read_zip(zip_path, archive)
    else:
        labels, gray = tfds_builder.read_tfds(archive, source_dir, data_dir)
    x, y = images.convert(labels, gray, image_size)
    cache.write(path, x, y)
    return x, y


def load_data(
    source_dir: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    archives: Sequence[str] = ("background", "evaluation"),
    split_sizes: tuple[int, int] = (1200, 100),
    seed: int = 0,
    image_size: int = 28,
    reader: str = "auto",
) -> tuple[
    tuple[np.ndarray, np.ndarray],
    tuple[np.ndarray, np.ndarray],
    tuple[np.ndarray, np.ndarray],
]:
    """Loads Omniglot, split by character into train, validation and test.

    The characters of `archives` are pooled, sorted by id, shuffled with
    `np.random.default_rng(seed)` and split: the first `split_sizes[0]`
    characters train, the next `split_sizes[1]` validate, the rest test.
    All 20 drawings of a character go to the same set. The defaults give
    1200 / 100 / 323 characters of all 1623, images shrunk to 28x28: the
    1200 training characters of Santoro et al. (2016) and Finn et al.
    (2017), with 100 of their 423 test characters held out for
    validation.

    The first load of an archive reads its zip and caches the converted
    arrays under `data_dir`; later loads read the cache only. The
    Datasets page of the documentation describes the archives, the
    readers and the files.

    Args:
        source_dir: folder holding the Omniglot zips (`images_background.zip`,
            `images_evaluation.zip`, `images_background_small1.zip`,
            `images_background_small2.zip`) and optionally their checksum
            file `tfds_checksums.tsv` (TFDS format). Defaults to the
            environment variable `KERAMETA_OMNIGLOT_DIR`; without either,
            `reader="tfds"` downloads the upstream zips.
        data_dir: folder for the cache and the TFDS data. Defaults to
            `$KERAS_HOME/datasets/kerameta/omniglot` (`KERAS_HOME` defaults
            to `~/.keras`).
        archives: archives to pool, among `"background"` (TFDS split
            `train`, 964 characters), `"evaluation"` (`test`, 659),
            `"small1"` (136) and `"small2"` (156). The small ones are
            subsets of `"background"` and overlap each other, so only one
            of these three can be used at a time. Defaults to
            `("background", "evaluation")`, all 1623 characters.
        split_sizes: `(train, validation)` numbers of characters; the
            remaining characters are the test set. Either may be 0.
            Defaults to `(1200, 100)`.
        seed: seed of the character shuffle. Defaults to `0`.
        image_size: side of the output images, shrunk from 105 pixels
            with an exact area (box) filter. Defaults to `28`.
        reader: how to read the zips: `"tfds"` through the TFDS builder
            `OmniglotBuilder`, `"zip"` with `zipfile` and Pillow (no
            TensorFlow needed), or `"auto"`: `"tfds"` when
            `tensorflow_datasets` is installed, else `"zip"`. Both give
            identical arrays. Defaults to `"auto"`.

    Returns:
        `((x_train, y_train), (x_val, y_val), (x_test, y_test))`: images
        float32 `(n, image_size, image_size, 1)`, ink 1.0 and background
        0.0; labels int64 `(n,)`, the global character ids 0..1622 (TFDS's
        `label`, `NNNN - 1` in the file names). Each set is sorted by
        label.

    Raises:
        ValueError: for bad arguments, overlapping archives, split sizes
            larger than the archives, a zip that is corrupt or fails its
            checksum, or a malformed checksum file.
        FileNotFoundError: if `source_dir` or a zip in it is missing.
        NotADirectoryError: if `source_dir` is a file.

    Example:

    ```python
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        kerameta.datasets.omniglot.load_data("path/to/omniglot")
    )
    x_train.shape  # (24000, 28, 28, 1): 1200 characters x 20 drawings
    ```
    """
    archives = check_archives(archives)
    n_train, n_val = check_split_sizes(split_sizes, archives)
    image_size = checks.check_positive_int("image_size", image_size)
    seed = checks.check_positive_int("seed", seed, allow_zero=True)
    reader = check_reader(reader)
    source_dir = sources.resolve_source_dir(source_dir)
    data_dir = (
        pathlib.Path(os.fspath(data_dir)).expanduser()
        if data_dir is not None
        else sources.default_data_dir()
    )
    xs, ys = zip(
        *(
            load_archive(archive, image_size, source_dir, data_dir, reader)
            for archive in archives
        )
    )
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = np.argsort(y, kind="stable")
    return tuple(
        split_classes(x[order], y[order], (n_train, n_val, None), seed=seed)
    )
