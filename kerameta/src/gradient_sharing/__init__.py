"""Gradient sharing: tasks of a batch lend each other their inner gradients."""

from kerameta.src.gradient_sharing.gradient_sharing import GradientSharing
from kerameta.src.registry import Registry

ALL_OBJECTS = {GradientSharing.string_id: GradientSharing}

_REGISTRY = Registry(
    "gradient_sharing", GradientSharing, ALL_OBJECTS, "kerameta.GradientSharing"
)
get = _REGISTRY.get
serialize = _REGISTRY.serialize
deserialize = _REGISTRY.deserialize
