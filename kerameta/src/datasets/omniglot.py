"""Omniglot (Lake et al., 2015) as NumPy arrays, split by character.

Omniglot has 1623 handwritten characters from 50 alphabets, each drawn by
20 people, as 105x105 one-bit PNGs in four upstream zip archives:

| archive | zip | TFDS split | characters | images |
|---|---|---|---|---|
| `"background"` | `images_background.zip` | `train` | 964 | 19280 |
| `"evaluation"` | `images_evaluation.zip` | `test` | 659 | 13180 |
| `"small1"` | `images_background_small1.zip` | `small1` | 136 | 2720 |
| `"small2"` | `images_background_small2.zip` | `small2` | 156 | 3120 |

The two small archives are subsets of `"background"` and share the Greek
and Latin alphabets with each other, so at most one of `"background"`,
`"small1"` and `"small2"` can be loaded at once.

How `load_data` gets the images, per archive:

1. The cache: `<data_dir>/omniglot-<archive>-<image_size>px.npz`, the
   converted arrays of one archive, written atomically (temporary file,
   then `os.replace`) after the first load. A cache hit needs neither
   TensorFlow nor Pillow, nor the zips.
2. Otherwise a reader turns the zip into 105x105 grayscale images:
   - `reader="tfds"`: the TFDS builder `OmniglotBuilder` (a subclass of
     the stock `omniglot` 3.0.0 builder) prepares that archive's split
     alone into its own TFDS data dir, `<data_dir>/tfds/<archive>`, once,
     then reads it back. The zips come from `source_dir` (TFDS's manual
     dir) and are checked against the checksum file `tfds_checksums.tsv`
     there, if present, or else against the checksums TFDS registers for
     the upstream files. Without a `source_dir`, TFDS downloads the
     upstream files and checks them against its registered checksums. The
     prepared data has the stock name, version and features, so
     `tfds.load("omniglot", split="small1",
     data_dir="<data_dir>/tfds/small1")` reads it too. Extraction goes to
     a temporary folder under `data_dir` that is deleted afterwards.
   - `reader="zip"`: reads the zips in `source_dir` with `zipfile`, Pillow
     and NumPy, for users without TensorFlow. Each zip's size and sha256
     are checked first, against `tfds_checksums.tsv` in `source_dir` when
     it lists the file, or else against the upstream files' values.
3. Both readers order each archive's images by character id, then by a
   hash of the pixels (TFDS keeps no drawer number), turn them into ink
   (`1 - gray / 255`) and shrink them with the same exact area (box)
   filter in NumPy, so they give byte-identical arrays.

Then all characters of the requested archives are pooled, sorted by id,
shuffled by `seed` and split by character into train, validation and
test sets. Santoro et al. (2016) and Finn et al. (2017) train on 1200
random characters and test on the other 423; the default split sizes
keep the 1200 and hold 100 of the 423 out for validation (1200 / 100 /
323). Finn et al.'s code instead validates on 100 of the 1200:
`split_sizes=(1100, 100)` (with their own shuffle, so not their exact
characters).

Omniglot is (c) 2015 Brenden Lake, MIT License; cite Lake, Salakhutdinov
& Tenenbaum (2015), "Human-level concept learning through probabilistic
program induction", Science 350(6266).
"""

import contextlib
import functools
import hashlib
import importlib.util
import io
import os
import pathlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerameta.src.data.few_shot import split_classes

OMNIGLOT_DIR_ENV = "KERAMETA_OMNIGLOT_DIR"
"""Environment variable naming the folder that holds the Omniglot zips."""

CHECKSUMS_FILENAME = "tfds_checksums.tsv"
"""Checksum file in TFDS format that `source_dir` may hold."""

_SOURCE_SIZE = 105  # pixels per side of every Omniglot image
_IMAGES_PER_CHARACTER = 20
_RESIZE_CHUNK = 512  # images per einsum call
_CACHE_FORMAT = 1  # bump when the cached arrays change meaning

_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"

# archive -> (TFDS split, zip file name, key of the stock `_DL_URLS`).
_ARCHIVES = {
    "background": ("train", "images_background.zip", "train"),
    "evaluation": ("test", "images_evaluation.zip", "eval"),
    "small1": ("small1", "images_background_small1.zip", "small1"),
    "small2": ("small2", "images_background_small2.zip", "small2"),
}
_TFDS_SPLIT_TO_ARCHIVE = {v[0]: k for k, v in _ARCHIVES.items()}

# Size and sha256 of the upstream zips (brendenlake/omniglot, `python/`),
# the values TFDS 4.9 registers for these URLs.
_UPSTREAM_CHECKSUMS = {
    "images_background.zip": (
        9464212,
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    ),
    "images_evaluation.zip": (
        6462886,
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    ),
    "images_background_small1.zip": (
        1319022,
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    ),
    "images_background_small2.zip": (
        1580917,
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    ),
}

# The 50 alphabets: (name, id of the first character, characters). Global
# character ids (`NNNN - 1` in the file names, TFDS's `label`) run
# contiguously within each alphabet; background holds ids 0..963 and
# evaluation 964..1622.
_BACKGROUND_ALPHABETS = (
    ("Alphabet_of_the_Magi", 708, 20),
    ("Anglo-Saxon_Futhorc", 295, 29),
    ("Arcadian", 0, 26),
    ("Armenian", 26, 41),
    ("Asomtavruli_(Georgian)", 67, 40),
    ("Balinese", 107, 24),
    ("Bengali", 131, 46),
    ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 177, 14),
    ("Braille", 191, 26),
    ("Burmese_(Myanmar)", 769, 34),
    ("Cyrillic", 217, 33),
    ("Early_Aramaic", 250, 22),
    ("Futurama", 324, 26),
    ("Grantha", 350, 43),
    ("Greek", 393, 24),
    ("Gujarati", 417, 48),
    ("Hebrew", 465, 22),
    ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 539, 16),
    ("Japanese_(hiragana)", 487, 52),
    ("Japanese_(katakana)", 595, 47),
    ("Korean", 642, 40),
    ("Latin", 682, 26),
    ("Malay_(Jawi_-_Arabic)", 555, 40),
    ("Mkhedruli_(Georgian)", 728, 41),
    ("N_Ko", 803, 33),
    ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 836, 14),
    ("Sanskrit", 850, 42),
    ("Syriac_(Estrangelo)", 272, 23),
    ("Tagalog", 892, 17),
    ("Tifinagh", 909, 55),
)
_EVALUATION_ALPHABETS = (
    ("Angelic", 964, 20),
    ("Atemayar_Qelisayer", 984, 26),
    ("Atlantean", 1010, 26),
    ("Aurek-Besh", 1036, 26),
    ("Avesta", 1062, 26),
    ("Ge_ez", 1088, 26),
    ("Glagolitic", 1114, 45),
    ("Gurmukhi", 1159, 45),
    ("Kannada", 1204, 41),
    ("Keble", 1245, 26),
    ("Malayalam", 1271, 47),
    ("Manipuri", 1318, 40),
    ("Mongolian", 1358, 30),
    ("Old_Church_Slavonic_(Cyrillic)", 1388, 45),
    ("Oriya", 1433, 46),
    ("Sylheti", 1502, 28),
    ("Syriac_(Serto)", 1479, 23),
    ("Tengwar", 1530, 25),
    ("Tibetan", 1555, 42),
    ("ULOG", 1597, 26),
)
_ALPHABETS = {
    name: (first, count)
    for name, first, count in _BACKGROUND_ALPHABETS + _EVALUATION_ALPHABETS
}
_ARCHIVE_ALPHABETS = {
    "background": tuple(a[0] for a in _BACKGROUND_ALPHABETS),
    "evaluation": tuple(a[0] for a in _EVALUATION_ALPHABETS),
    "small1": ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"),
    "small2": (
        "Greek",
        "Japanese_(katakana)",
        "Latin",
        "Sanskrit",
        "Tagalog",
    ),
}
_NUM_CHARACTERS = 1623

_PNG_NAME = re.compile(
    r"^images_[a-z0-9_]+/(?P<alphabet>[^/]+)/character(?P<number>\d+)/"
    r"(?P<label>\d{4})_(?P<drawer>\d{2})\.png$"
)


def _character_ids(archive: str) -> np.ndarray:
    """The sorted global character ids held by `archive`."""
    ids = []
    for name in _ARCHIVE_ALPHABETS[archive]:
        first, count = _ALPHABETS[name]
        ids.extend(range(first, first + count))
    return np.array(sorted(ids), dtype=np.int64)


def _label_names() -> list[str]:
    """TFDS's label names: `<alphabet>_<index in alphabet>` by global id."""
    names = [""] * _NUM_CHARACTERS
    for alphabet, (first, count) in _ALPHABETS.items():
        for i in range(count):
            names[first + i] = f"{alphabet}_{i}"
    return names


# ----------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------
def _check_archives(archives: Any) -> tuple[str, ...]:
    expected = (
        f"Expected a non-empty sequence of distinct archive names from "
        f"{sorted(_ARCHIVES)}"
    )
    if isinstance(archives, str) or not isinstance(archives, Sequence):
        raise ValueError(
            f"{expected}, e.g. archives=('small1',). "
            f"Received: archives={archives!r}"
        )
    archives = tuple(archives)
    unknown = [a for a in archives if a not in _ARCHIVES]
    if unknown or not archives or len(set(archives)) != len(archives):
        hint = ""
        aliases = [a for a in unknown if a in _TFDS_SPLIT_TO_ARCHIVE]
        if aliases:
            hint = " TFDS split names map to archives: " + ", ".join(
                f"{a!r} -> {_TFDS_SPLIT_TO_ARCHIVE[a]!r}" for a in aliases
            )
            hint += "."
        raise ValueError(f"{expected}.{hint} Received: archives={archives!r}")
    for i, a in enumerate(archives):
        for b in archives[i + 1 :]:
            shared = sorted(
                set(_ARCHIVE_ALPHABETS[a]) & set(_ARCHIVE_ALPHABETS[b])
            )
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


def _check_split_sizes(
    split_sizes: Any, archives: tuple[str, ...]
) -> tuple[int, int]:
    try:
        train, val = split_sizes
        ok = all(
            isinstance(s, int | np.integer)
            and not isinstance(s, bool)
            and s >= 0
            for s in (train, val)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            "Expected `split_sizes` to be a pair of non-negative integers "
            "(train characters, validation characters), e.g. (1200, 100). "
            f"Received: split_sizes={split_sizes!r}"
        )
    train, val = int(train), int(val)
    available = sum(len(_character_ids(a)) for a in archives)
    if train + val > available:
        raise ValueError(
            f"`split_sizes` asks for {train} + {val} = {train + val} "
            f"characters, but archives={archives!r} hold only {available} "
            f"characters. Expected train + validation <= {available}; "
            f"pass smaller split sizes (the rest of the characters form "
            f"the test set). Received: split_sizes={split_sizes!r}"
        )
    return train, val


def _check_image_size(image_size: Any) -> int:
    if (
        not isinstance(image_size, int | np.integer)
        or isinstance(image_size, bool)
        or image_size <= 0
    ):
        raise ValueError(
            "Expected `image_size` to be a positive integer (the side of "
            f"the square output images, e.g. 28). "
            f"Received: image_size={image_size!r}"
        )
    return int(image_size)


def _has_tfds() -> bool:
    return importlib.util.find_spec("tensorflow_datasets") is not None


def _check_reader(reader: Any) -> str:
    if reader not in ("auto", "tfds", "zip"):
        raise ValueError(
            "Expected `reader` to be one of 'auto', 'tfds', 'zip'. "
            f"Received: reader={reader!r}"
        )
    if reader == "auto":
        return "tfds" if _has_tfds() else "zip"
    return reader


def _default_data_dir() -> pathlib.Path:
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return pathlib.Path(keras_home) / "datasets" / "kerameta" / "omniglot"


def _resolve_source_dir(source_dir: Any) -> pathlib.Path | None:
    if source_dir is None:
        source_dir = os.environ.get(OMNIGLOT_DIR_ENV) or None
    if source_dir is None:
        return None
    return pathlib.Path(os.fspath(source_dir)).expanduser()


def _missing_source_error(
    source_dir: pathlib.Path | None,
    archives: Sequence[str],
    exists: bool = True,
) -> FileNotFoundError:
    names = [_ARCHIVES[a][1] for a in archives]
    if source_dir is None:
        where = "No folder was given that holds"
    elif not exists:
        where = f"The folder {str(source_dir)!r} does not exist; it should hold"
    else:
        where = f"The folder {str(source_dir)!r} does not hold"
    return FileNotFoundError(
        f"{where} the Omniglot zips {names}. Expected a folder with these "
        f"files (upstream: {_URL}), and optionally the checksum file "
        f"{CHECKSUMS_FILENAME!r} for rebuilt zips. Pass "
        f"`source_dir=<folder>` or set the environment variable "
        f"{OMNIGLOT_DIR_ENV}=<folder>; with tensorflow_datasets installed, "
        f"reader='tfds' without a folder downloads the zips instead."
    )


def _check_source(source_dir: pathlib.Path, archives: Sequence[str]) -> None:
    if not source_dir.is_dir():
        raise _missing_source_error(source_dir, archives, exists=False)
    missing = [
        a for a in archives if not (source_dir / _ARCHIVES[a][1]).is_file()
    ]
    if missing:
        raise _missing_source_error(source_dir, missing)


# ----------------------------------------------------------------------
# Conversion shared by both readers
# ----------------------------------------------------------------------
@functools.cache
def _area_matrix(out_size: int, in_size: int) -> np.ndarray:
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


def _convert(
    labels: np.ndarray, gray: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical order, ink and area resize: `(x, y)` of one archive.

    Args:
        labels: `(n,)` integer character ids.
        gray: `(n, 105, 105)` uint8 grayscale, 255 the background.
        image_size: side of the output images.

    Returns:
        `x` float32 `(n, image_size, image_size, 1)` with ink 1, sorted by
        label, then by the sha256 of the pixels; `y` int64 `(n,)`.
    """
    keys = [hashlib.sha256(g.tobytes()).digest() for g in gray]
    order = sorted(range(len(labels)), key=lambda k: (labels[k], keys[k]))
    order = np.array(order, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)[order]
    gray = gray[order]
    matrix = _area_matrix(image_size, gray.shape[1])
    x = np.empty((len(gray), image_size, image_size, 1), dtype=np.float32)
    for start in range(0, len(gray), _RESIZE_CHUNK):
        ink = 1.0 - gray[start : start + _RESIZE_CHUNK] / 255.0
        small = np.einsum("ij,njk,lk->nil", matrix, ink, matrix, optimize=True)
        x[start : start + _RESIZE_CHUNK, ..., 0] = np.clip(small, 0.0, 1.0)
    return x, labels


def _check_contents(
    archive: str, labels: np.ndarray, gray: np.ndarray, origin: str
) -> None:
    expected = _character_ids(archive)
    ids, counts = np.unique(labels, return_counts=True)
    shape = (_SOURCE_SIZE, _SOURCE_SIZE)
    if (
        not np.array_equal(ids, expected)
        or np.any(counts != _IMAGES_PER_CHARACTER)
        or gray.shape[1:] != shape
    ):
        raise ValueError(
            f"{origin} does not hold the Omniglot archive {archive!r}: "
            f"expected {len(expected)} characters with "
            f"{_IMAGES_PER_CHARACTER} images of {shape} pixels each. "
            f"Received: {len(ids)} characters, {len(labels)} images of "
            f"shape {gray.shape[1:]}."
        )


# ----------------------------------------------------------------------
# Zip reader
# ----------------------------------------------------------------------
def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_checksum_file(path: pathlib.Path) -> dict[str, tuple[int, str]]:
    """`{file name: (size, sha256)}` from a TFDS checksum file."""
    result = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.strip().split("\t")
        if len(fields) < 3 or line.startswith("#"):
            continue
        url, size, checksum = fields[:3]
        name = fields[3] if len(fields) > 3 and fields[3] else url
        result[name.rsplit("/", 1)[-1]] = (int(size), checksum)
    return result


def _verify_zip(path: pathlib.Path) -> None:
    checksum_file = path.parent / CHECKSUMS_FILENAME
    expected, origin = None, None
    if checksum_file.is_file():
        expected = _read_checksum_file(checksum_file).get(path.name)
        origin = str(checksum_file)
    if expected is None:
        expected = _UPSTREAM_CHECKSUMS[path.name]
        origin = "the upstream file's checksum"
    got = (path.stat().st_size, _sha256(path))
    if got != expected:
        raise ValueError(
            f"The Omniglot zip {str(path)!r} is corrupt or not the expected "
            f"file: expected {expected[0]} bytes with sha256 {expected[1]} "
            f"(from {origin}). Received: {got[0]} bytes with sha256 "
            f"{got[1]}. Replace the file with a good copy; for a rebuilt "
            f"zip, list its checksum in {CHECKSUMS_FILENAME!r} (TFDS "
            f"format) beside it."
        )


def _read_zip(
    path: pathlib.Path, archive: str
) -> tuple[np.ndarray, np.ndarray]:
    """`(labels, gray)` of every PNG in the zip at `path`."""
    from PIL import Image

    _verify_zip(path)
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
    _check_contents(archive, labels, gray, repr(str(path)))
    return labels, gray


# ----------------------------------------------------------------------
# TFDS reader
# ----------------------------------------------------------------------
@functools.cache
def _builder_class() -> type:
    """Creates the TFDS builder class (imports tensorflow_datasets)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "OmniglotBuilder needs tensorflow_datasets: pip install "
            "tensorflow-datasets (or `kerameta[datasets]`). load_data("
            "..., reader='zip') works without it."
        ) from error
    from tensorflow_datasets.core.download import checksums

    stock = tfds.image_classification.Omniglot

    class OmniglotBuilder(stock, skip_registration=True):
        """The stock TFDS `omniglot` 3.0.0 builder, limited to some splits.

        It writes the stock dataset (same name, version and features, so
        `tfds.load("omniglot", data_dir=...)` reads it), with two changes:

        - only the requested `splits` are downloaded and prepared (the
          stock builder always asks for all four zips);
        - the checksums in `checksums_path` (a TFDS checksum file, such as
          the `tfds_checksums.tsv` that comes with rebuilt zips) extend
          and override the registered ones, so every byte is still
          verified.

        The class is not registered with TFDS, so it does not clash with
        the stock `omniglot`. Building it imports `tensorflow_datasets`;
        `kerameta.datasets.omniglot.OmniglotBuilder` does so on first use.

        Args:
            splits: TFDS split names to prepare, among `"train"`, `"test"`,
                `"small1"` and `"small2"`. Defaults to all four.
            checksums_path: optional TFDS checksum file.
            **kwargs: `tfds.core.DatasetBuilder` arguments (`data_dir`,
                ...).

        Example:

        ```python
        builder = kerameta.datasets.omniglot.OmniglotBuilder(
            splits=["small1"],
            checksums_path="omniglot/tfds_checksums.tsv",
            data_dir="tfds_data",
        )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir="omniglot"
            )
        )
        ds = builder.as_dataset(split="small1")
        ```
        """

        name = "omniglot"

        def __init__(
            self,
            *,
            splits: Sequence[str] = ("train", "test", "small1", "small2"),
            checksums_path: str | os.PathLike | None = None,
            **kwargs: Any,
        ) -> None:
            splits = tuple(splits)
            if not splits or any(
                s not in _TFDS_SPLIT_TO_ARCHIVE for s in splits
            ):
                raise ValueError(
                    "Expected `splits` to be TFDS Omniglot split names from "
                    f"{sorted(_TFDS_SPLIT_TO_ARCHIVE)}. "
                    f"Received: splits={splits!r}"
                )
            self._splits = splits
            self._extra_url_infos = (
                checksums.load_url_infos(checksums_path)
                if checksums_path is not None
                else {}
            )
            super().__init__(**kwargs)

        @property
        def url_infos(self) -> dict[str, Any] | None:
            """Registered checksums, extended by `checksums_path`."""
            infos = dict(stock.url_infos or {})
            infos.update(self._extra_url_infos)
            return infos

        def _split_generators(self, dl_manager):
            urls = {
                split: _URL + _ARCHIVES[_TFDS_SPLIT_TO_ARCHIVE[split]][1]
                for split in self._splits
            }
            extracted = dl_manager.download_and_extract(urls)
            # The stock builder takes the names from all four archives;
            # with fewer, they come from the table (same values).
            self.info.features["alphabet"].names = sorted(_ALPHABETS)
            self.info.features["label"].names = _label_names()
            return [
                tfds.core.SplitGenerator(
                    name=split, gen_kwargs={"directory": extracted[split]}
                )
                for split in self._splits
            ]

        def _generate_examples(self, directory):
            label_names = self.info.features["label"].names
            for key, example in super()._generate_examples(directory):
                name = f"{example['alphabet']}_{example['alphabet_char_id']}"
                if label_names[example["label"]] != name:
                    raise ValueError(
                        f"Unexpected Omniglot file {example['image']}: "
                        f"character {example['label'] + 1} should be "
                        f"{label_names[example['label']]!r}, not {name!r}."
                    )
                yield key, example

    OmniglotBuilder.__qualname__ = "OmniglotBuilder"
    return OmniglotBuilder


def _prepare(
    builder: Any,
    source_dir: pathlib.Path | None,
    checksums_path: pathlib.Path | None,
    download_dir: str,
) -> None:
    """`builder.download_and_prepare`, with a clear checksum error."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import download_manager

    try:
        builder.download_and_prepare(
            download_dir=download_dir,
            download_config=tfds.download.DownloadConfig(manual_dir=source_dir),
        )
    except download_manager.NonMatchingChecksumError as error:
        against = (
            str(checksums_path)
            if checksums_path is not None
            else "its registered checksums"
        )
        raise ValueError(
            f"An Omniglot zip is corrupt or not the expected file (checked "
            f"by TFDS against {against}): {error}. Replace the file with a "
            f"good copy; for a rebuilt zip, list its checksum in "
            f"{CHECKSUMS_FILENAME!r} (TFDS format) beside it."
        ) from error


def _read_tfds(
    archive: str,
    source_dir: pathlib.Path | None,
    data_dir: pathlib.Path,
) -> tuple[np.ndarray, np.ndarray]:
    """`(labels, gray)` of one archive, prepared with TFDS if needed."""
    import tensorflow_datasets as tfds

    split = _ARCHIVES[archive][0]
    tfds_dir = data_dir / "tfds" / archive
    checksums_path = None
    if source_dir is not None:
        if (source_dir / CHECKSUMS_FILENAME).is_file():
            checksums_path = source_dir / CHECKSUMS_FILENAME
    builder = _builder_class()(
        splits=[split], checksums_path=checksums_path, data_dir=tfds_dir
    )
    if split not in builder.info.splits:  # not prepared yet
        if source_dir is not None:
            _check_source(source_dir, [archive])
        # The outermost folder this call creates, removed on failure.
        created = next(
            (p for p in (data_dir / "tfds", tfds_dir) if not p.exists()),
            None,
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        download_dir = tempfile.mkdtemp(prefix="tmp-download-", dir=data_dir)
        try:
            _prepare(builder, source_dir, checksums_path, download_dir)
        except BaseException:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)
    labels, gray = [], []
    dataset = builder.as_dataset(split=split, batch_size=_RESIZE_CHUNK)
    for batch in tfds.as_numpy(dataset):
        image = batch["image"]
        if not (
            np.array_equal(image[..., 0], image[..., 1])
            and np.array_equal(image[..., 0], image[..., 2])
        ):
            raise ValueError(
                f"The TFDS split {split!r} in {str(tfds_dir)!r} holds "
                "color images; expected grayscale Omniglot images."
            )
        gray.append(image[..., 0])
        labels.append(batch["label"].astype(np.int64))
    labels = np.concatenate(labels)
    gray = np.concatenate(gray)
    _check_contents(archive, labels, gray, f"TFDS data in {str(tfds_dir)!r}")
    return labels, gray


# ----------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------
def _cache_path(
    data_dir: pathlib.Path, archive: str, image_size: int
) -> pathlib.Path:
    return data_dir / f"omniglot-{archive}-{image_size}px.npz"


def _read_cache(
    path: pathlib.Path, archive: str, image_size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached `(x, y)`, or `None` if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != _CACHE_FORMAT:
                return None
            x, y = data["x"], data["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = len(_character_ids(archive)) * _IMAGES_PER_CHARACTER
    if x.shape != (n, image_size, image_size, 1) or y.shape != (n,):
        return None
    return x, y


def _write_cache(path: pathlib.Path, x: np.ndarray, y: np.ndarray) -> None:
    """Writes the npz atomically: a temporary file, then `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, x=x, y=y, format=np.int64(_CACHE_FORMAT))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _load_archive(
    archive: str,
    image_size: int,
    source_dir: pathlib.Path | None,
    data_dir: pathlib.Path,
    reader: str,
) -> tuple[np.ndarray, np.ndarray]:
    path = _cache_path(data_dir, archive, image_size)
    cached = _read_cache(path, archive, image_size)
    if cached is not None:
        return cached
    if reader == "zip":
        if source_dir is None:
            raise _missing_source_error(None, [archive])
        _check_source(source_dir, [archive])
        labels, gray = _read_zip(source_dir / _ARCHIVES[archive][1], archive)
    else:
        labels, gray = _read_tfds(archive, source_dir, data_dir)
    x, y = _convert(labels, gray, image_size)
    _write_cache(path, x, y)
    return x, y


# ----------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------
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
    arrays under `data_dir`; later loads read the cache only. See the
    module documentation for the readers and files.

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
            larger than the archives, or a zip that is corrupt or fails
            its checksum.
        FileNotFoundError: if `source_dir` or a zip in it is missing.

    Example:

    ```python
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        kerameta.datasets.omniglot.load_data("path/to/omniglot")
    )
    x_train.shape  # (24000, 28, 28, 1): 1200 characters x 20 drawings
    ```
    """
    archives = _check_archives(archives)
    n_train, n_val = _check_split_sizes(split_sizes, archives)
    image_size = _check_image_size(image_size)
    reader = _check_reader(reader)
    source_dir = _resolve_source_dir(source_dir)
    if reader == "tfds" and not _has_tfds():
        raise ValueError(
            "reader='tfds' needs tensorflow_datasets; install it (pip "
            "install tensorflow-datasets) or use reader='zip'. "
            f"Received: reader={reader!r}"
        )
    data_dir = (
        pathlib.Path(os.fspath(data_dir)).expanduser()
        if data_dir is not None
        else _default_data_dir()
    )

    xs, ys = zip(
        *(
            _load_archive(archive, image_size, source_dir, data_dir, reader)
            for archive in archives
        )
    )
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]

    return tuple(split_classes(x, y, (n_train, n_val, None), seed=seed))


def __getattr__(name: str) -> Any:
    """Creates `OmniglotBuilder` on first access (imports TFDS then)."""
    if name == "OmniglotBuilder":
        return _builder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
