"""One way to resolve a component: `get`, `serialize`, `deserialize`.

Every component family (inner optimizers, meta-gradient estimators, task
weightings, gradient sharing, co-learners, outer rules) is a package with
one class per file and an `ALL_OBJECTS` table of string ids, as Keras's
`keras.optimizers`. `Registry` gives each family the same three functions
and the same error for an unknown identifier.
"""

from typing import Any

import keras


class Registry:
    """The `get` / `serialize` / `deserialize` functions of one family.

    Args:
        kind: the argument name users pass it as, e.g. `"inner_optimizer"`.
        base: the family's base class.
        all_objects: the built-ins by string id (each class's `string_id`).
        public_path: how users reach `base`, for error messages.
        default: the class `get(None)` instantiates, or `None` if `None`
            means "no component".
    """

    def __init__(
        self,
        kind: str,
        base: type,
        all_objects: dict[str, type],
        public_path: str,
        default: type | None = None,
    ) -> None:
        self.kind = kind
        self.base = base
        self.all_objects = all_objects
        self.public_path = public_path
        self.default = default

    def serialize(self, component: Any) -> dict[str, Any] | None:
        """The Keras serialization of a component (`None` stays `None`)."""
        if component is None:
            return None
        return keras.saving.serialize_keras_object(component)

    def deserialize(self, config: dict[str, Any] | None) -> Any:
        """Rebuilds a component from `serialize`'s output."""
        if config is None:
            return None
        return keras.saving.deserialize_keras_object(
            config, module_objects=self.all_objects
        )

    def get(self, identifier: Any) -> Any:
        """Resolves what a user passed for a component, as Keras's `get`.

        Example: `kerameta.inner_optimizers.get("meta_sgd")` returns a
        `MetaSGD()`; `kerameta.task_weightings.get(None)` the uniform
        weighting (`"mean"`); `kerameta.co_learners.get(None)` is `None`.

        Args:
            identifier: a string id (a key of the family's `ALL_OBJECTS`),
                a config from `serialize`, an instance of the family's base
                class (returned as is), or `None` (the family's default:
                an instance, or `None` where the component is optional).

        Returns:
            The component, or `None`.

        Raises:
            ValueError: if `identifier` is none of these; the message lists
                the string ids.
        """
        if identifier is None:
            return None if self.default is None else self.default()
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, str) and identifier in self.all_objects:
            return self.all_objects[identifier]()
        if isinstance(identifier, dict) and "class_name" in identifier:
            component = self.deserialize(identifier)
            if isinstance(component, self.base):
                return component
        expected = f"a `{self.public_path}` instance"
        if self.all_objects:
            expected = f"one of {sorted(self.all_objects)} or {expected}"
        if self.default is None:
            expected = f"None, {expected}"
        raise ValueError(
            f"Unknown `{self.kind}`. Expected {expected}. Received: "
            f"{self.kind}={identifier!r}"
        )
