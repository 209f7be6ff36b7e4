"""Registration of public classes for `.keras` serialization."""

import keras


def kerameta_export(cls):
    """Registers `cls` with Keras under the `kerameta` package."""
    return keras.saving.register_keras_serializable(package="kerameta")(cls)
