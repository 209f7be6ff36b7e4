"""Meta-gradient estimators: how the outer gradient sees the inner loop."""

from kerameta.src.meta_gradients.checkpointed import Checkpointed
from kerameta.src.meta_gradients.first_order import FirstOrder
from kerameta.src.meta_gradients.implicit import Implicit
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.multi_step import MultiStep
from kerameta.src.meta_gradients.second_order import SecondOrder
from kerameta.src.registry import Registry

ALL_OBJECTS = {
    cls.string_id: cls
    for cls in (SecondOrder, FirstOrder, MultiStep, Implicit, Checkpointed)
}

_REGISTRY = Registry(
    "meta_gradient",
    MetaGradient,
    ALL_OBJECTS,
    "kerameta.meta_gradients.MetaGradient",
    default=SecondOrder,
)
get = _REGISTRY.get
serialize = _REGISTRY.serialize
deserialize = _REGISTRY.deserialize
