"""Calling the wrapped network: statelessly, in training mode.

kerameta runs the network with `stateless_call(..., training=True)`: its
batch normalization is transductive (each task normalized with its own
statistics) and its random layers draw (see `engine.randomness`). Keras
passes `training` only to a `call` that accepts it, and so does kerameta:
a subclassed model whose `call(self, x)` has no `training` argument (the
form of Keras's subclassing guide) is called through Keras's `__call__`,
which hands `training` to its layers, as inside `fit`.
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


def training_call(model: keras.Model):
    """`call(params, non_trainable, x)`: the network's predictions.

    The returned state (moving statistics, seed-generator counters) is
    dropped: adaptation never changes it.
    """
    if accepts_training(model):

        def call(params, non_trainable, x):
            y_pred, _ = model.stateless_call(
                params, non_trainable, x, training=True
            )
            return y_pred

        return call

    def call_through_keras(params, non_trainable, x):
        # `stateless_call` runs `model.call` itself, which takes no
        # `training`; `model(...)` (Keras's `__call__`) accepts it and
        # passes it on to the layers, as inside `fit`.
        mapping = list(zip(model.trainable_variables, params)) + list(
            zip(model.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping):
            return model(x, training=True)

    return call_through_keras
