"""Gradient sharing: tasks of a batch lend each other their inner gradients."""

from kerameta.src.gradient_sharing import ALL_OBJECTS as ALL_OBJECTS
from kerameta.src.gradient_sharing import deserialize as deserialize
from kerameta.src.gradient_sharing import get as get
from kerameta.src.gradient_sharing import serialize as serialize
from kerameta.src.gradient_sharing.gradient_sharing import (
    GradientSharing as GradientSharing,
)
