"""Omniglot handwritten characters, split by character for few-shot work.

`load_data` returns NumPy arrays; `OmniglotBuilder`, the TFDS builder it
uses with `reader="tfds"`, is created on first access (it needs
`tensorflow_datasets`, which this module does not import).
"""

from typing import Any

from kerameta.src.datasets import omniglot as _omniglot
from kerameta.src.datasets.omniglot import (
    CHECKSUMS_FILENAME as CHECKSUMS_FILENAME,
)
from kerameta.src.datasets.omniglot import OMNIGLOT_DIR_ENV as OMNIGLOT_DIR_ENV
from kerameta.src.datasets.omniglot import load_data as load_data


def __getattr__(name: str) -> Any:
    """Creates `OmniglotBuilder` on first access (imports TFDS then)."""
    if name == "OmniglotBuilder":
        return _omniglot.OmniglotBuilder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
