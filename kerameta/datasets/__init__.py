"""Datasets as NumPy arrays, downloaded or read from local files."""

from kerameta.datasets import omniglot as omniglot
