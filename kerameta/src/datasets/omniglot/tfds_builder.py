"""The TFDS reader: the stock `omniglot` builder, one split at a time.

Everything here imports `tensorflow_datasets` inside functions, so the
package loads without TensorFlow; only `reader="tfds"` and
`OmniglotBuilder` import it. Checksums are TFDS's own: the registered
ones, extended by `tfds_checksums.tsv` beside the zips.
"""

import functools
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerameta.src.datasets.omniglot import catalog
from kerameta.src.datasets.omniglot import images
from kerameta.src.datasets.omniglot import sources


@functools.cache
def builder_class() -> type:
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
            known = catalog.TFDS_SPLIT_TO_ARCHIVE
            if not splits or any(s not in known for s in splits):
                raise ValueError(
                    "Expected `splits` to be TFDS Omniglot split names from "
                    f"{sorted(known)}. Received: splits={splits!r}"
                )
            self._splits = splits
            self._extra_url_infos = {}
            if checksums_path is not None:
                # TFDS's parser fails on a bad line with a bare "invalid
                # literal for int()": check the file first, clearly.
                sources.read_checksums(pathlib.Path(os.fspath(checksums_path)))
                self._extra_url_infos = checksums.load_url_infos(checksums_path)
            super().__init__(**kwargs)

        @property
        def url_infos(self) -> dict[str, Any] | None:
            """Registered checksums, extended by `checksums_path`."""
            return {**(stock.url_infos or {}), **self._extra_url_infos}

        def _split_generators(self, dl_manager):
            known = catalog.TFDS_SPLIT_TO_ARCHIVE
            archives = catalog.ARCHIVES
            urls = {
                split: catalog.URL + archives[known[split]].filename
                for split in self._splits
            }
            extracted = dl_manager.download_and_extract(urls)
            # The stock builder takes the names from all four archives;
            # with fewer, they come from the catalog (same values).
            alphabets = sorted(catalog.ALPHABET_IDS)
            self.info.features["alphabet"].names = alphabets
            self.info.features["label"].names = catalog.label_names()
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
        against = checksums_path or "its registered checksums"
        raise ValueError(
            f"An Omniglot zip is corrupt or not the expected file (checked "
            f"by TFDS against {against}): {error}. Replace the file with a "
            f"good copy; for a rebuilt zip, list its checksum in "
            f"{sources.CHECKSUMS_FILENAME!r} (TFDS format) beside it."
        ) from error


def read_tfds(
    archive: str,
    source_dir: pathlib.Path | None,
    data_dir: pathlib.Path,
) -> tuple[np.ndarray, np.ndarray]:
    """`(labels, gray)` of one archive, prepared with TFDS if needed.

    The split is prepared alone into `<data_dir>/tfds/<archive>`, once,
    extracting into a temporary folder under `data_dir` that is deleted
    afterwards; on failure, the folders this call created are removed.
    """
    import tensorflow_datasets as tfds

    split = catalog.ARCHIVES[archive].tfds_split
    tfds_dir = data_dir / "tfds" / archive
    checksums_path = sources.checksums_path(source_dir)
    builder = builder_class()(
        splits=[split], checksums_path=checksums_path, data_dir=tfds_dir
    )
    if split not in builder.info.splits:  # not prepared yet
        if source_dir is not None:
            sources.check_source(source_dir, [archive])
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
    dataset = builder.as_dataset(split=split, batch_size=images.CHUNK)
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
    origin = f"TFDS data in {str(tfds_dir)!r}"
    images.check_contents(archive, labels, gray, origin)
    return labels, gray
