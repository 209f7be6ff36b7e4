"""Type aliases that need no framework import."""

from typing import Any
from typing import TypeAlias

Tensor: TypeAlias = Any
"""A backend tensor: `jax.Array`, `tf.Tensor` or `torch.Tensor`."""
