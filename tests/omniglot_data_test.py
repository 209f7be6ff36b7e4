"""`kerameta.datasets.omniglot.load_data` on the offline Omniglot zips.

The zips live in `../shared/data/omniglot` beside the repository (see its
README). The default tests use only the two small archives (136 and 156
characters); the full set is behind `--run-slow`. The TFDS tests need
`tensorflow_datasets` and are skipped without it.
"""

import pathlib
import re
import shutil
import zipfile

import numpy as np
import pytest

import kerameta
from kerameta.datasets import omniglot
from kerameta.src.datasets.omniglot import api
from kerameta.src.datasets.omniglot import catalog
from kerameta.src.datasets.omniglot import images
from kerameta.src.datasets.omniglot import sources
from kerameta.src.datasets.omniglot import tfds_builder
from kerameta.src.datasets.omniglot import zip_reader

SOURCE = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "omniglot"
)
SMALL1 = "images_background_small1.zip"
SMALL2 = "images_background_small2.zip"
SMALL1_IDS = catalog.character_ids("small1")


@pytest.fixture(scope="module")
def source() -> pathlib.Path:
    if not (SOURCE / SMALL1).is_file():
        pytest.skip(f"the Omniglot zips are not in {SOURCE}")
    return SOURCE


@pytest.fixture(scope="module")
def small1(source, tmp_path_factory):
    """small1 read once with the zip reader: (data_dir, splits)."""
    data_dir = tmp_path_factory.mktemp("small1_zip")
    splits = omniglot.load_data(
        source,
        data_dir=data_dir,
        archives=("small1",),
        split_sizes=(100, 16),
        reader="zip",
    )
    return data_dir, splits


def _characters(y):
    return set(np.unique(y).tolist())


def _copy_source(source, destination, *names, checksums=True):
    destination.mkdir(parents=True, exist_ok=True)
    for name in names + ((omniglot.CHECKSUMS_FILENAME,) if checksums else ()):
        shutil.copy(source / name, destination / name)
    return destination


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


# ----------------------------------------------------------------------
# The zip reader (every backend)
# ----------------------------------------------------------------------
def test_zip_reader_arrays_and_splits(small1):
    _, splits = small1
    characters = []
    for (x, y), n_chars in zip(splits, (100, 16, 20)):
        assert x.shape == (n_chars * 20, 28, 28, 1)
        assert x.dtype == np.float32
        assert y.shape == (n_chars * 20,) and y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        ids, counts = np.unique(y, return_counts=True)
        assert len(ids) == n_chars and np.all(counts == 20)
        assert np.all(np.diff(y) >= 0)  # sorted by label
        characters.append(_characters(y))
    train, val, test = characters
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(SMALL1_IDS.tolist())
    # Ink is 1: a character covers a small part of the image.
    assert 0.02 < float(splits[0][0].mean()) < 0.3


def test_cache_is_written_and_reused(small1, tmp_path, monkeypatch):
    data_dir, splits = small1
    assert _files(data_dir) == [pathlib.Path("omniglot-small1-28px.npz")]

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(zip_reader, "read_zip", no_reading)
    monkeypatch.setattr(tfds_builder, "read_tfds", no_reading)
    empty = tmp_path / "empty"
    empty.mkdir()
    for reader in ("zip", "auto"):
        again = omniglot.load_data(
            empty,
            data_dir=data_dir,
            archives=("small1",),
            split_sizes=(100, 16),
            reader=reader,
        )
        for (x, y), (x2, y2) in zip(splits, again):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)


def test_split_depends_on_seed_only(small1):
    data_dir, splits = small1
    kwargs = dict(data_dir=data_dir, archives=("small1",), reader="zip")
    same = omniglot.load_data(split_sizes=(100, 16), seed=0, **kwargs)
    other = omniglot.load_data(split_sizes=(100, 16), seed=1, **kwargs)
    for (x, y), (x2, y2) in zip(splits, same):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert _characters(splits[0][1]) != _characters(other[0][1])
    assert _characters(splits[2][1]) != _characters(other[2][1])
    # The same images, in other sets.
    pooled = np.concatenate([y for _, y in other])
    np.testing.assert_array_equal(np.sort(pooled), np.repeat(SMALL1_IDS, 20))


def test_empty_validation_and_test_sets(small1):
    data_dir, _ = small1
    (x, y), (x_val, y_val), (x_test, y_test) = omniglot.load_data(
        data_dir=data_dir,
        archives=("small1",),
        split_sizes=(136, 0),
        reader="zip",
    )
    assert x.shape == (2720, 28, 28, 1)
    for x_empty, y_empty in ((x_val, y_val), (x_test, y_test)):
        assert x_empty.shape == (0, 28, 28, 1) and x_empty.dtype == np.float32
        assert y_empty.shape == (0,) and y_empty.dtype == np.int64


def test_area_filter():
    matrix = images.area_matrix(28, 105)
    assert matrix.shape == (28, 105)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # Each input pixel spreads 28/105 of its area over the outputs.
    np.testing.assert_allclose(matrix.sum(axis=0), 28 / 105, atol=1e-15)
    np.testing.assert_array_equal(images.area_matrix(105, 105), np.eye(105))
    # 105 -> 35 is a plain mean over 3x3 blocks.
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (2, 105, 105), dtype=np.uint8)
    x, _ = images.convert(np.array([5, 3]), gray, 35)
    ink = 1.0 - gray / 255.0
    blocks = ink.reshape(2, 35, 3, 35, 3).mean(axis=(2, 4))[::-1]
    np.testing.assert_allclose(x[..., 0], blocks, atol=1e-6)
    # 105 -> 28 is exact area: the mean over 15x15 blocks of the image
    # scaled up 4 times (105 * 4 = 28 * 15), fractional pixels included.
    # (Pillow's BOX filter would weigh each pixel 0 or 1 here.)
    x, _ = images.convert(np.array([3, 5]), gray, 28)
    fine = ink.repeat(4, axis=1).repeat(4, axis=2)
    blocks = fine.reshape(2, 28, 15, 28, 15).mean(axis=(2, 4))
    np.testing.assert_allclose(x[..., 0], blocks, atol=1e-6)


@pytest.mark.parametrize("archive", list(catalog.ARCHIVES))
def test_catalog_matches_the_zips(source, archive):
    # Only the file names `images_*/<alphabet>/characterNN/NNNN_MM.png`.
    with zipfile.ZipFile(source / catalog.ARCHIVES[archive].filename) as zf:
        names = [n.split("/") for n in zf.namelist() if n.endswith(".png")]
    ids = {}
    for _, alphabet, _, image in names:
        ids.setdefault(alphabet, set()).add(int(image[:4]) - 1)
    assert sorted(ids) == sorted(catalog.ARCHIVE_ALPHABETS[archive])
    for alphabet, found in ids.items():
        assert sorted(found) == list(catalog.ALPHABET_IDS[alphabet])
    assert len(names) == 20 * len(catalog.character_ids(archive))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(archives="small1"), r"archives=\('small1',\).*Received"),
        (dict(archives=("fish",)), r"Received: archives\[0\]='fish'"),
        (dict(archives=("train",)), "'train' -> 'background'"),
        (dict(archives=()), "non-empty"),
        (dict(archives=("small1", "small1")), "distinct"),
        (dict(archives=("background", "small1")), "overlap"),
        (dict(archives=("small1", "small2")), "overlap.*'Greek', 'Latin'"),
        (dict(image_size=0), "Received: image_size=0"),
        (dict(image_size=28.0), "Received: image_size=28.0"),
        (dict(image_size=True), "Received: image_size=True"),
        (dict(reader="pil"), "Received: reader='pil'"),
        (dict(seed=-1), "Received: seed=-1"),
        (dict(seed=None), "`seed` must be a non-negative integer"),
        (dict(split_sizes=(1, -1)), r"Received: split_sizes\[1\]=-1"),
        (dict(split_sizes=(1.5, 2)), r"Received: split_sizes\[0\]=1.5"),
        (dict(split_sizes=(1, 2, 3)), "pair of non-negative"),
        (
            dict(archives=("small1",)),
            r"1200 \+ 100 = 1300 characters.*hold only 136",
        ),
        (
            dict(archives=("small1",), split_sizes=(130, 7)),
            "hold only 136",
        ),
    ],
)
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        omniglot.load_data(tmp_path, data_dir=tmp_path, **kwargs)
    assert _files(tmp_path) == []


def test_missing_source(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    kwargs = dict(data_dir=data_dir, archives=("small1",), reader="zip")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        omniglot.load_data(missing, split_sizes=(100, 16), **kwargs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        omniglot.load_data(empty, split_sizes=(100, 16), **kwargs)
    message = str(info.value)
    assert str(empty) in message and SMALL1 in message
    assert omniglot.OMNIGLOT_DIR_ENV in message and "source_dir" in message
    # The environment variable is the default folder.
    monkeypatch.setenv(omniglot.OMNIGLOT_DIR_ENV, str(empty))
    with pytest.raises(FileNotFoundError, match=str(empty)):
        omniglot.load_data(split_sizes=(100, 16), **kwargs)
    monkeypatch.delenv(omniglot.OMNIGLOT_DIR_ENV)
    with pytest.raises(FileNotFoundError, match="No folder was given"):
        omniglot.load_data(split_sizes=(100, 16), **kwargs)
    assert not data_dir.exists()


def test_source_dir_that_is_a_file(tmp_path):
    data_dir = tmp_path / "data"
    kwargs = dict(
        data_dir=data_dir,
        archives=("small1",),
        split_sizes=(100, 16),
        reader="zip",
    )
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("")
    with pytest.raises(NotADirectoryError) as info:
        omniglot.load_data(not_a_folder, **kwargs)
    message = str(info.value)
    assert f"{str(not_a_folder)!r} is a file, not a folder" in message
    assert "does not exist" not in message and SMALL1 in message
    # The zip itself instead of its folder: the fix names the folder.
    a_zip = tmp_path / SMALL1
    a_zip.write_bytes(b"")
    with pytest.raises(
        NotADirectoryError,
        match=re.escape(
            f"pass the folder that holds it, source_dir={str(tmp_path)!r}"
        ),
    ):
        omniglot.load_data(a_zip, **kwargs)
    assert not data_dir.exists()


_GOOD_LINE = (
    "https://example.org/images_background_small1.zip\t1319022\t"
    + "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
)


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        (
            _GOOD_LINE.replace("1319022", "1.3 MB"),
            "the size '1.3 MB' is not a whole number of bytes",
        ),
        (
            _GOOD_LINE.replace("\t1319022", ""),
            "expected 3 or 4 tab-separated fields, found 2",
        ),
        (
            _GOOD_LINE.replace("f38eb80f", "F38EB80F"),
            "is not 64 lowercase hex digits",
        ),
        (_GOOD_LINE[:-1], "is not 64 lowercase hex digits"),
    ],
    ids=["size", "fields", "uppercase", "short_sha256"],
)
def test_malformed_checksum_file(tmp_path, bad_line, problem):
    path = tmp_path / omniglot.CHECKSUMS_FILENAME
    # Comments, blank lines and TFDS's space-separated form are accepted.
    lines = ["# comment", "", _GOOD_LINE.replace("\t", " "), bad_line]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        sources.read_checksums(path)
    message = str(info.value)
    assert message.startswith(
        f"Malformed line 4 of the checksum file {str(path)!r}: "
    )
    assert problem in message
    assert "url<TAB>size<TAB>sha256" in message
    assert f"Received: {bad_line!r}" in message
    path.write_text("\n".join(lines[:3]) + "\n")
    assert sources.read_checksums(path) == {SMALL1: (1319022, _GOOD_LINE[-64:])}


def test_malformed_checksum_file_stops_both_readers(source, tmp_path):
    broken = _copy_source(source, tmp_path / "source", SMALL1)
    path = broken / omniglot.CHECKSUMS_FILENAME
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("\t", "\t12 34\t", 1)
    path.chmod(0o644)
    path.write_text("\n".join(lines) + "\n")
    match = re.escape(f"Malformed line 2 of the checksum file {str(path)!r}")
    data_dir = tmp_path / "data"
    kwargs = dict(
        data_dir=data_dir, archives=("small1",), split_sizes=(100, 16)
    )
    with pytest.raises(ValueError, match=match):
        omniglot.load_data(broken, reader="zip", **kwargs)
    if api.has_tfds():
        with pytest.raises(ValueError, match=match):
            omniglot.load_data(broken, reader="tfds", **kwargs)
    assert not data_dir.exists() or _files(data_dir) == []


@pytest.mark.parametrize("checksums", [True, False])
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_zip_leaves_no_cache(source, tmp_path, how, checksums):
    broken = _copy_source(
        source, tmp_path / "source", SMALL1, checksums=checksums
    )
    _corrupt(broken / SMALL1, how)
    data_dir = tmp_path / "data"
    with pytest.raises(ValueError, match="corrupt or not the expected"):
        omniglot.load_data(
            broken,
            data_dir=data_dir,
            archives=("small1",),
            split_sizes=(100, 16),
            reader="zip",
        )
    assert not data_dir.exists() or _files(data_dir) == []


# ----------------------------------------------------------------------
# The TFDS reader
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_auto_reader_picks_tfds_when_installed():
    try:
        import tensorflow_datasets  # noqa: F401

        expected = "tfds"
    except ImportError:
        expected = "zip"
    assert api.check_reader("auto") == expected


def test_tfds_builder_is_the_stock_omniglot(tfds):
    builder_cls = omniglot.OmniglotBuilder
    assert issubclass(builder_cls, tfds.image_classification.Omniglot)
    assert builder_cls.name == "omniglot"
    assert builder_cls.VERSION == "3.0.0"
    # Not registered: `tfds.load("omniglot")` stays the stock builder.
    assert tfds.builder_cls("omniglot") is tfds.image_classification.Omniglot
    with pytest.raises(ValueError, match="Received: splits=\\('eval',\\)"):
        builder_cls(splits=["eval"])


def test_tfds_reader_matches_zip_reader(tfds, source, small1, tmp_path):
    data_dir = tmp_path / "data"
    splits = omniglot.load_data(
        source,
        data_dir=data_dir,
        archives=("small1",),
        split_sizes=(100, 16),
        reader="tfds",
    )
    for (x, y), (x2, y2) in zip(small1[1], splits):
        assert x.tobytes() == x2.tobytes()
        np.testing.assert_array_equal(y, y2)
    # Prepared once, in the stock layout; the download folder is gone.
    prepared = data_dir / "tfds" / "small1"
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "omniglot-small1-28px.npz",
        "tfds",
    ]
    builder = tfds.builder("omniglot", data_dir=prepared)
    assert builder.info.splits["small1"].num_examples == 2720
    assert list(builder.info.splits) == ["small1"]
    assert builder.info.features["label"].names[393] == "Greek_0"
    dataset = tfds.load(
        "omniglot", split="small1", data_dir=prepared, download=False
    )
    labels = np.concatenate(
        [b["label"] for b in tfds.as_numpy(dataset.batch(1024))]
    )
    np.testing.assert_array_equal(np.unique(labels), SMALL1_IDS)
    # The generic sampler reads the same prepared dataset by TFDS name.
    tasks = kerameta.data.FewShotTasks.from_tfds(
        "omniglot",
        "small1",
        data_dir=str(prepared),
        download=False,
        preprocess=lambda x, y: (x[:, ::4, ::4, :1], y),
        ways=5,
        tasks_per_batch=2,
    )
    np.testing.assert_array_equal(tasks.class_ids, SMALL1_IDS)
    x, _ = tasks[0]
    assert x["support_x"].shape == (2, 5, 27, 27, 1)
    assert x["support_x"].dtype == np.uint8


@pytest.mark.slow
def test_tfds_reader_small2(tfds, source, tmp_path):
    kwargs = dict(archives=("small2",), split_sizes=(150, 0))
    by_zip = omniglot.load_data(
        source, data_dir=tmp_path / "zip", reader="zip", **kwargs
    )
    by_tfds = omniglot.load_data(
        source, data_dir=tmp_path / "tfds", reader="tfds", **kwargs
    )
    assert sum(len(y) for _, y in by_tfds) == 3120
    for (x, y), (x2, y2) in zip(by_zip, by_tfds):
        assert x.tobytes() == x2.tobytes()
        np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_tfds_corrupt_zip_leaves_nothing(tfds, source, tmp_path, how):
    broken = _copy_source(source, tmp_path / "source", SMALL1)
    _corrupt(broken / SMALL1, how)
    data_dir = tmp_path / "data"
    with pytest.raises(ValueError, match="corrupt or not the expected"):
        omniglot.load_data(
            broken,
            data_dir=data_dir,
            archives=("small1",),
            split_sizes=(100, 16),
            reader="tfds",
        )
    assert _files(data_dir) == []


def test_tfds_missing_zip(tfds, tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match=SMALL1):
        omniglot.load_data(
            tmp_path,
            data_dir=data_dir,
            archives=("small1",),
            split_sizes=(100, 16),
            reader="tfds",
        )
    assert not (data_dir / "tfds").exists()


# ----------------------------------------------------------------------
# The full set
# ----------------------------------------------------------------------
def _check_standard_split(splits):
    counts = []
    for x, y in splits:
        ids, per_character = np.unique(y, return_counts=True)
        assert np.all(per_character == 20)
        assert x.shape == (len(y), 28, 28, 1)
        counts.append(len(ids))
    assert counts == [1200, 100, 323]
    pooled = np.unique(np.concatenate([y for _, y in splits]))
    np.testing.assert_array_equal(pooled, np.arange(1623))


@pytest.mark.slow
def test_full_standard_split(source, tmp_path):
    splits = omniglot.load_data(source, data_dir=tmp_path, reader="zip")
    _check_standard_split(splits)


@pytest.mark.slow
def test_full_tfds_matches_zip(tfds, source, tmp_path):
    # The rebuilt background and evaluation zips pass TFDS's checks only
    # through the checksum file beside them.
    by_tfds = omniglot.load_data(
        source, data_dir=tmp_path / "tfds", reader="tfds"
    )
    _check_standard_split(by_tfds)
    by_zip = omniglot.load_data(source, data_dir=tmp_path / "zip", reader="zip")
    for (x, y), (x2, y2) in zip(by_zip, by_tfds):
        assert x.tobytes() == x2.tobytes()
        np.testing.assert_array_equal(y, y2)
