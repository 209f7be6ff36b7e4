"""String ids and (de)serialization of the meta-gradient estimators."""

from typing import Any

import keras

from kerameta.src.meta_gradients.checkpointed import Checkpointed
from kerameta.src.meta_gradients.first_order import FirstOrder
from kerameta.src.meta_gradients.implicit import Implicit
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.multi_step import MultiStep
from kerameta.src.meta_gradients.second_order import SecondOrder

ALL_OBJECTS = {
    cls.name: cls
    for cls in (SecondOrder, FirstOrder, MultiStep, Implicit, Checkpointed)
}


def serialize(meta_gradient: MetaGradient) -> dict[str, Any]:
    """Returns the Keras serialization of an estimator."""
    return keras.saving.serialize_keras_object(meta_gradient)


def deserialize(config: dict[str, Any]) -> MetaGradient:
    """Rebuilds an estimator from `serialize`'s output."""
    return keras.saving.deserialize_keras_object(
        config, module_objects=ALL_OBJECTS
    )


def get(identifier: str | dict | MetaGradient) -> MetaGradient:
    """Returns an estimator from a string id, a config or an instance.

    Args:
        identifier: `"second_order"`, `"first_order"`, `"multi_step"`,
            `"implicit"`, `"checkpointed"`, a `MetaGradient` instance, or
            the output of `serialize`.

    Returns:
        A `MetaGradient` instance.

    Raises:
        ValueError: if the string id is unknown.
    """
    if isinstance(identifier, MetaGradient):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier in ALL_OBJECTS:
        return ALL_OBJECTS[identifier]()
    raise ValueError(
        "Unknown `meta_gradient`. Expected one of "
        f"{sorted(ALL_OBJECTS)} or a `kerameta.meta_gradients.MetaGradient` "
        f"instance. Received: meta_gradient={identifier!r}"
    )
