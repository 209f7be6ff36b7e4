"""Calling the wrapped network: statelessly, in training mode.

kerameta runs the network with `stateless_call(..., training=True)`: its
batch normalization is transductive (each task normalized with its own
statistics) and its random layers draw (see `engine.randomness`). Keras
passes `training` only to a `call` that accepts it, and so does kerameta:
a subclassed model whose `call(self, x)` has no `training` argument (the
form of Keras's subclassing guide) gets training mode through an outer
call, which its layers inherit, as they would inside `fit`.
"""

import inspect

import keras


def accepts_training(model: keras.Model) -> bool:
    """Whether `model.call` takes a `training` argument (or `**kwargs`)."""
    parameters = inspect.signature(model.call).parameters.values()
    return any(
        p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )


class _TrainingMode(keras.layers.Layer):
    """Calls `model` inside a call with `training=True`, which it inherits.

    Holds no weights of its own, so its variable lists are the model's,
    in the model's order, and `stateless_call` takes the model's values.
    """

    def __init__(self, model: keras.Model) -> None:
        super().__init__(dtype=model.dtype_policy, name=f"{model.name}_call")
        self.network = model
        self.built = True

    def call(self, inputs, training=None):
        del training  # inherited by the network's layers
        return self.network(inputs)


def training_call(model: keras.Model):
    """`call(params, non_trainable, x)`: the network's predictions.

    The returned state (moving statistics, seed-generator counters) is
    dropped: adaptation never changes it.
    """
    callee = model if accepts_training(model) else _TrainingMode(model)

    def call(params, non_trainable, x):
        y_pred, _ = callee.stateless_call(
            params, non_trainable, x, training=True
        )
        return y_pred

    return call
