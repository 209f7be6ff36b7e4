"""Parameter bookkeeping: which weights adapt, and their values by path.

A meta-step differentiates a flat list `theta` of the meta-model's
trainable values. `ParameterLayout` reads any meta-learned variable's value
out of `theta` by its `variable.path`, and splits the wrapped model's
weights into the adapted ones (which get a task axis in the inner loop)
and the frozen ones (ANIL's body), and merges them back in the model's
order.
"""

import keras

from kerameta.src import compat
from kerameta.src.types import Tensor


def resolve_adapted_mask(
    model: keras.Model,
    adapted_layers: list[str] | tuple[str, ...] | None,
    adapt_batch_normalization: bool,
) -> list[bool]:
    """Which of `model.trainable_variables` the inner loop adapts."""
    layers = compat.flatten_layers(model)
    if adapted_layers is None:
        adapted = {id(v) for v in model.trainable_variables}
    else:
        if isinstance(adapted_layers, str) or not isinstance(
            adapted_layers, (list, tuple)
        ):
            raise ValueError(
                "`adapted_layers` must be a list of layer names (or None to "
                f"adapt every layer). Received: adapted_layers="
                f"{adapted_layers!r}"
            )
        by_name = {}
        for layer in layers:
            by_name.setdefault(layer.name, layer)
        unknown = [name for name in adapted_layers if name not in by_name]
        if unknown:
            with_weights = [
                layer.name for layer in layers if layer.trainable_weights
            ]
            raise ValueError(
                f"`adapted_layers` names layers that are not in the model "
                f"{model.name!r}: {unknown}. Layers with trainable weights: "
                f"{with_weights}."
            )
        adapted = set()
        for name in adapted_layers:
            layer = by_name[name]
            if not layer.trainable_weights:
                raise ValueError(
                    f"The layer {name!r} in `adapted_layers` has no "
                    "trainable weights, so the inner loop cannot adapt it."
                )
            adapted.update(id(v) for v in layer.trainable_weights)
    if not adapt_batch_normalization:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                adapted.difference_update(
                    id(v) for v in layer.trainable_weights
                )
    mask = [id(v) in adapted for v in model.trainable_variables]
    if not any(mask):
        raise ValueError(
            "The inner loop has no weights to adapt: `adapted_layers="
            f"{adapted_layers!r}` with `adapt_batch_normalization="
            f"{adapt_batch_normalization}` leaves none of the model's "
            "trainable weights. Name layers with trainable weights."
        )
    return mask


class ParameterLayout:
    """Where each weight's value sits in `theta`, and the adapted split.

    Args:
        meta_variables: the meta-model's trainable variables, in the order
            of `theta`.
        model_variables: the wrapped model's trainable variables.
        adapted_mask: for each of `model_variables`, whether it adapts.
    """

    def __init__(
        self,
        meta_variables: list[keras.Variable],
        model_variables: list[keras.Variable],
        adapted_mask: list[bool],
    ) -> None:
        self._index = {v.path: i for i, v in enumerate(meta_variables)}
        if len(self._index) != len(meta_variables):
            # Two variables share a path (layers named alike in separate
            # models): fall back to identity, which is always unique.
            self._index = {id(v): i for i, v in enumerate(meta_variables)}
            self._key = id
        else:
            self._key = _path
        self.model_variables = list(model_variables)
        self.adapted_mask = list(adapted_mask)

    @property
    def adapted_variables(self) -> list[keras.Variable]:
        """The wrapped model's weights that the inner loop adapts."""
        return [
            v
            for v, adapted in zip(self.model_variables, self.adapted_mask)
            if adapted
        ]

    def value(self, theta: list[Tensor], variable: keras.Variable) -> Tensor:
        """The value of `variable` in `theta`.

        A weight that is not meta-learned (e.g. frozen by the user) is a
        constant of the meta-step: its variable's value.
        """
        position = self._index.get(self._key(variable))
        return variable.value if position is None else theta[position]

    def values(
        self, theta: list[Tensor], variables: list[keras.Variable]
    ) -> list[Tensor]:
        """The values of `variables` in `theta`, in order."""
        return [self.value(theta, v) for v in variables]

    def split(self, theta: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The wrapped model's weights in `theta`: `(adapted, frozen)`."""
        adapted, frozen = [], []
        for variable, is_adapted in zip(
            self.model_variables, self.adapted_mask
        ):
            (adapted if is_adapted else frozen).append(
                self.value(theta, variable)
            )
        return adapted, frozen

    def merge(
        self, adapted: list[Tensor], frozen: list[Tensor]
    ) -> list[Tensor]:
        """The wrapped model's trainable weights, in order, from the parts."""
        adapted, frozen = iter(adapted), iter(frozen)
        return [
            next(adapted) if is_adapted else next(frozen)
            for is_adapted in self.adapted_mask
        ]


def _path(variable: keras.Variable) -> str:
    return variable.path
