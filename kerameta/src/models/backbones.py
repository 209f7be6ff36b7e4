"""The networks of the MAML papers, as plain Keras models."""

from collections.abc import Sequence

import keras

DOWNSAMPLING = ("max_pool", "strided")


def conv4(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 5,
    filters: int = 64,
    downsampling: str = "max_pool",
    head_initializer: str | keras.initializers.Initializer | None = None,
    name: str = "conv4",
) -> keras.Model:
    """The Conv-4 backbone of few-shot classification.

    Four blocks of [3x3 convolution, batch normalization, ReLU,
    down-sampling], then a linear head that returns logits. Convolutions
    use Glorot (Xavier) uniform initialization and zero biases, as in Finn et
    al.'s code. Layers are named `block{1..4}_conv`, `block{1..4}_bn` and
    `head`, so methods that adapt a subset of layers can name them.

    Two variants:

    - `downsampling="max_pool"` (miniImageNet style): 2x2 max-pooling after
      each block, then flatten.
    - `downsampling="strided"` (Finn et al.'s Omniglot network):
      stride-2 convolutions instead of pooling, then a spatial mean; the
      head starts from N(0, 1) as in their code. It is also about four times
      cheaper.

    Batch normalization is used transductively by kerameta's meta-models:
    each task is normalized with its own statistics (see Concepts).

    Args:
        input_shape: shape of one image, channels last. Defaults to
            `(28, 28, 1)` (Omniglot).
        num_classes: classes per task, the head's width. Defaults to `5`.
        filters: filters of every convolution. Defaults to `64`
            (miniImageNet papers use `32`).
        downsampling: `"max_pool"` or `"strided"`. Defaults to
            `"max_pool"`.
        head_initializer: initializer of the head's kernel. Defaults to
            `RandomNormal(stddev=1.0)` for `"strided"` and
            `"glorot_uniform"` for `"max_pool"`.
        name: model name. Defaults to `"conv4"`.

    Returns:
        A built functional `keras.Model` from images to logits.

    Example:

    ```python
    net = kerameta.models.conv4(
        input_shape=(28, 28, 1), num_classes=5, downsampling="strided"
    )
    maml = kerameta.MAML(net, inner_steps=1, inner_learning_rate=0.4)
    ```

    Reference:

    - [Vinyals et al., 2016](https://arxiv.org/abs/1606.04080)
    - [Finn et al., 2017](https://arxiv.org/abs/1703.03400), section 5.2
    """
    if downsampling not in DOWNSAMPLING:
        raise ValueError(
            f"Expected `downsampling` to be one of {DOWNSAMPLING}. "
            f"Received: downsampling={downsampling!r}"
        )
    for arg, value in (("num_classes", num_classes), ("filters", filters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{arg}` must be a positive integer. Received: {arg}={value!r}"
            )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "Expected `input_shape` to be (height, width, channels). "
            f"Received: input_shape={input_shape}. Add a channel axis to "
            "grayscale images (e.g. `x[..., None]`)."
        )
    strided = downsampling == "strided"
    if head_initializer is None:
        head_initializer = (
            keras.initializers.RandomNormal(stddev=1.0)
            if strided
            else "glorot_uniform"
        )
    inputs = keras.Input(input_shape)
    x = inputs
    for block in range(1, 5):
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=2 if strided else 1,
            padding="same",
            kernel_initializer="glorot_uniform",
            name=f"block{block}_conv",
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        if not strided:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if strided:
        x = keras.layers.GlobalAveragePooling2D(name="spatial_mean")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=head_initializer, name="head"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def mlp(
    input_shape: Sequence[int] = (1,),
    hidden_units: Sequence[int] = (40, 40),
    output_units: int = 1,
    activation: str = "relu",
    name: str = "mlp",
) -> keras.Model:
    """A multilayer perceptron, by default MAML's sinusoid network.

    Dense layers named `hidden{1..}` with `activation`, then a linear layer
    named `head`. The defaults build the 1-40-40-1 ReLU network of the
    sinusoid regression experiments.

    Args:
        input_shape: shape of one example. Defaults to `(1,)`.
        hidden_units: width of each hidden layer. Defaults to `(40, 40)`.
        output_units: width of the output. Defaults to `1`.
        activation: activation of the hidden layers. Defaults to `"relu"`.
        name: model name. Defaults to `"mlp"`.

    Returns:
        A built `keras.Sequential` model.

    Example:

    ```python
    maml = kerameta.MAML(kerameta.models.mlp(), inner_learning_rate=0.01)
    ```
    """
    for units in (*hidden_units, output_units):
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(
                "Expected positive integer layer widths. Received: "
                f"hidden_units={tuple(hidden_units)!r}, "
                f"output_units={output_units!r}"
            )
    layers = [keras.Input(tuple(input_shape))]
    layers += [
        keras.layers.Dense(units, activation=activation, name=f"hidden{i}")
        for i, units in enumerate(hidden_units, start=1)
    ]
    layers.append(keras.layers.Dense(output_units, name="head"))
    return keras.Sequential(layers, name=name)
