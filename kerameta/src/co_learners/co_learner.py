"""CML: a co-learner head that augments the meta-gradient during training."""

from typing import Any

import keras

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import check_number
from kerameta.src.types import Tensor


class _Untracked:
    """Holds an object without Keras tracking it (and saving it twice)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _top_level_layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in getattr(model, "layers", [])]


@kerameta_export
class CoLearner(keras.layers.Layer):
    """CML co-learner: an outer-loop-only head that augments the meta-gradient.

    The co-learner is an extra head, fed by an intermediate layer of the
    *adapted* network on each task's query set. Its loss (the task loss of
    its predictions) is added to the meta-objective with weight
    `loss_weight`: meta-objective = mean_i (L_i + loss_weight * L_co_i).
    The co-learner is never adapted in the inner loop; the outer optimizer
    trains it together with the meta-learned weights. Its gradient reaches
    the meta-learned weights through the adapted features (and, in
    second-order mode, through the inner loop): a learned gradient
    augmentation. It takes no part in `evaluate`, `predict` or `adapt`
    (only its loss is logged, as `co_learner_loss`), and
    `meta_model.without_co_learner()` drops it after training: predictions
    are bit-identical.

    The feature layer is a top-level layer of a Sequential or functional
    model, found by name. Subclassed models have no layer graph to read an
    intermediate output from: build the network as a functional model.

    String id: `"co_learner"`.

    Args:
        head: a Keras layer or model mapping the feature layer's output to
            predictions shaped like the network's (e.g. logits). Built on
            the feature shape if it is not built yet.
        feature_layer: the name of the layer whose output feeds the head.
            The paper uses the last convolution block before pooling.
        loss_weight: the weight of the co-learner loss, `>= 0`. Defaults to
            `1.0`. With 0 the co-learner has no effect (and learns nothing).

    Example:

    ```python
    head = keras.Sequential([
        keras.layers.Conv2D(64, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    ])
    maml = kerameta.MAML(
        kerameta.models.conv4((28, 28, 1), 5),
        co_learner=kerameta.CoLearner(head, feature_layer="block4_relu"),
    )
    ```

    Reference:

    - [Shin et al., 2024. Cooperative Meta-Learning with Gradient
      Augmentation](https://arxiv.org/abs/2406.04639) (UAI 2024)
    """

    string_id = "co_learner"  # for messages; no `get` by string

    def __init__(
        self,
        head: keras.layers.Layer,
        feature_layer: str,
        loss_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(head, keras.layers.Layer):
            raise TypeError(
                "`head` must be a Keras layer or model. Received: head of "
                f"type {type(head).__name__}"
            )
        if not isinstance(feature_layer, str) or not feature_layer:
            raise ValueError(
                "`feature_layer` must be the name of a layer of the "
                f"network. Received: feature_layer={feature_layer!r}"
            )
        self.head = head
        self.feature_layer = feature_layer
        self.loss_weight = check_number("loss_weight", loss_weight, low=0.0)
        self._extractor = _Untracked(None)

    def build_for(self, model: keras.Model) -> None:
        """Connects the co-learner to `model`'s feature layer."""
        try:
            inputs = model.inputs
            outputs = model.outputs
        except (AttributeError, ValueError):
            inputs = outputs = None
        if not inputs or not outputs:
            raise ValueError(
                f"The co-learner reads the output of the layer "
                f"{self.feature_layer!r}, but the model {model.name!r} "
                f"(a subclassed {type(model).__name__}) has no layer graph "
                "to read it from. Build the network as a functional or "
                "Sequential model (starting from `keras.Input`)."
            )
        names = _top_level_layer_names(model)
        if self.feature_layer not in names:
            raise ValueError(
                f"The co-learner's feature layer {self.feature_layer!r} is "
                f"not a layer of the model {model.name!r}. Its layers are: "
                f"{names}."
            )
        if len(outputs) != 1:
            raise ValueError(
                "The co-learner needs a model with one output. Received a "
                f"model with {len(outputs)} outputs."
            )
        features = model.get_layer(self.feature_layer).output
        extractor = keras.Model(inputs, [features, outputs[0]])
        self._extractor = _Untracked(extractor)
        feature_shape = tuple(features.shape)
        output_shape = tuple(outputs[0].shape)
        try:
            if not self.head.built:
                self.head.build(feature_shape)
            spec = self.head.compute_output_spec(
                keras.KerasTensor(feature_shape, dtype=features.dtype)
            )
        except Exception as error:  # noqa: BLE001 (re-raised with context)
            raise ValueError(
                f"The co-learner head {self.head.name!r} cannot take the "
                f"output of layer {self.feature_layer!r}, shaped "
                f"{feature_shape}: {error}"
            ) from error
        if tuple(spec.shape[1:]) != output_shape[1:]:
            raise ValueError(
                f"The co-learner head {self.head.name!r} maps the features "
                f"of {self.feature_layer!r} {feature_shape} to "
                f"{tuple(spec.shape)}, but its predictions must be shaped "
                f"like the network's, {output_shape}, to be scored with the "
                "task loss. Change the head's last layer."
            )
        if not self.head.trainable_variables:
            raise ValueError(
                f"The co-learner head {self.head.name!r} has no trainable "
                "weights."
            )
        model_ids = [id(v) for v in model.trainable_variables]
        self._trainable_order = [
            model_ids.index(id(v)) for v in extractor.trainable_variables
        ]
        model_ids = [id(v) for v in model.non_trainable_variables]
        self._non_trainable_order = [
            model_ids.index(id(v)) for v in extractor.non_trainable_variables
        ]
        self.built = True

    def features_and_predictions(
        self,
        params: list[Tensor],
        non_trainable: list[Tensor],
        x: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Runs the network with `params`; returns (features, predictions).

        `params` and `non_trainable` follow the network's variable order.
        """
        (features, y_pred), _ = self._extractor.value.stateless_call(
            [params[i] for i in self._trainable_order],
            [non_trainable[i] for i in self._non_trainable_order],
            x,
            training=True,
        )
        return features, y_pred

    def head_predictions(
        self, head_values: list[Tensor], features: Tensor
    ) -> Tensor:
        """The co-learner's predictions, with its weights `head_values`."""
        non_trainable = [v.value for v in self.head.non_trainable_variables]
        y_pred, _ = self.head.stateless_call(
            head_values, non_trainable, features, training=True
        )
        return y_pred

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "head": keras.saving.serialize_keras_object(self.head),
                "feature_layer": self.feature_layer,
                "loss_weight": self.loss_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CoLearner":
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)
