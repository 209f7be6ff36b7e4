"""Backbone networks of the meta-learning papers, as plain Keras models."""

from kerameta.src.models.backbones import conv4 as conv4
from kerameta.src.models.backbones import mlp as mlp
