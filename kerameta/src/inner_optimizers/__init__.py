"""Inner optimizers: how each task's fast weights take an inner step."""

from kerameta.src.inner_optimizers.inner_optimizer import InnerOptimizer
from kerameta.src.inner_optimizers.meta_sgd import MetaSGD
from kerameta.src.inner_optimizers.sgd import SGD
from kerameta.src.registry import Registry

ALL_OBJECTS = {cls.string_id: cls for cls in (SGD, MetaSGD)}

_REGISTRY = Registry(
    "inner_optimizer",
    InnerOptimizer,
    ALL_OBJECTS,
    "kerameta.inner_optimizers.InnerOptimizer",
    default=SGD,
)
get = _REGISTRY.get
serialize = _REGISTRY.serialize
deserialize = _REGISTRY.deserialize
