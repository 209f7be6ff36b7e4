"""Omniglot (Lake et al., 2015) as NumPy arrays, split by character.

The Datasets page of the documentation describes the archives, the two
readers (TFDS and plain zips), the cache and the split protocol.
`OmniglotBuilder` is created on first access: it imports
`tensorflow_datasets`, which nothing else here imports at load time.
"""

from typing import Any

from kerameta.src.datasets.omniglot.api import load_data as load_data
from kerameta.src.datasets.omniglot.sources import (
    CHECKSUMS_FILENAME as CHECKSUMS_FILENAME,
)
from kerameta.src.datasets.omniglot.sources import (
    OMNIGLOT_DIR_ENV as OMNIGLOT_DIR_ENV,
)


def __getattr__(name: str) -> Any:
    """Creates `OmniglotBuilder` on first access (imports TFDS then)."""
    if name == "OmniglotBuilder":
        from kerameta.src.datasets.omniglot import tfds_builder

        return tfds_builder.builder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
