"""The model zoo: one builder per architecture, `f(input_shape, num_classes, **knobs) -> Model`.

A builder's signature is its schema: the annotations below are checked against the config before
TensorFlow is imported (`mnist_exp.config.build.check`), so Keras is imported inside each builder.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

from annotated_types import Ge, Interval

if TYPE_CHECKING:
    import keras

Count = Annotated[int, Ge(1)]  # units, filters or pixels
Rate = Annotated[float, Interval(ge=0, lt=1)]  # a dropout rate


def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    units: Sequence[Count] = (512, 512),
    dropout: Rate = 0.2,
) -> "keras.Model":
    """Dense layers (ReLU, then dropout) on the flattened image: the Keras mnist_mlp example."""
    import keras

    layers = [keras.Input(input_shape), keras.layers.Flatten()]
    for width in units:
        layers += [keras.layers.Dense(width, activation="relu"), keras.layers.Dropout(dropout)]
    return keras.Sequential([*layers, softmax(num_classes)], name="mlp")


def lenet5(
    input_shape: tuple[int, ...],
    num_classes: int,
    c1_filters: Count = 6,
    c3_filters: Count = 16,
    kernel_size: Annotated[int, Interval(ge=1, le=13)] = 5,
    c5_units: Count = 120,
    f6_units: Count = 84,
    activation: str = "tanh",
) -> "keras.Model":
    """LeNet-5 (LeCun et al. 1998), layers named as in the paper; how it is adapted to 28x28
    images and a softmax output: conf/model/lenet5.yaml."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(c1_filters, kernel_size, padding="same", activation=activation),
            keras.layers.AveragePooling2D(2),  # S2
            keras.layers.Conv2D(c3_filters, kernel_size, activation=activation),
            keras.layers.AveragePooling2D(2),  # S4
            keras.layers.Flatten(),
            keras.layers.Dense(c5_units, activation=activation),  # C5: 5x5 kernels on 5x5 maps
            keras.layers.Dense(f6_units, activation=activation),
            softmax(num_classes),
        ],
        name="lenet5",
    )


def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    conv1_filters: Count = 32,
    conv2_filters: Count = 64,
    kernel_size: Annotated[int, Interval(ge=1, le=12)] = 3,
    pool_size: Count = 2,
    dropout_conv: Rate = 0.25,
    dense_units: Count = 256,
    dropout_dense: Rate = 0.5,
) -> "keras.Model":
    """The seed CNN: conv-conv-pool-dropout-dense-dropout-softmax; 2,380,938 params by default."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(conv1_filters, kernel_size, activation="relu"),
            keras.layers.Conv2D(conv2_filters, kernel_size, activation="relu"),
            keras.layers.MaxPooling2D(pool_size),
            keras.layers.Dropout(dropout_conv),
            keras.layers.Flatten(),
            keras.layers.Dense(dense_units, activation="relu"),
            keras.layers.Dropout(dropout_dense),
            softmax(num_classes),
        ],
        name="seed_cnn",
    )


def narrow_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: Sequence[Count] = (24, 32),
    kernel_sizes: Sequence[Annotated[int, Interval(ge=1, le=9)]] = (5, 3),
    dense_units: Count = 256,
    dropout: Rate = 0.0,
    dropout_dense: Rate = 0.0,
) -> "keras.Model":
    """Conv-ReLU-pool stages (one per entry of `filters`, no padding), dropout, a dense layer,
    dropout and a softmax: few multiply-adds a digit, so fast on a CPU."""
    import keras

    if len(filters) != len(kernel_sizes):
        from mnist_exp.errors import ConfigError

        raise ConfigError(
            f"model: filters has {len(filters)} stages but kernel_sizes {len(kernel_sizes)}; "
            "give one kernel size per stage."
        )
    layers = [keras.Input(input_shape)]
    for width, kernel in zip(filters, kernel_sizes, strict=True):
        layers += [
            keras.layers.Conv2D(width, kernel, activation="relu"),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [keras.layers.Flatten(), keras.layers.Dropout(dropout)]
    layers += [
        keras.layers.Dense(dense_units, activation="relu"),
        keras.layers.Dropout(dropout_dense),
    ]
    return keras.Sequential([*layers, softmax(num_classes)], name="narrow_cnn")


def cnn_bn(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: Sequence[Count] = (32, 64),
    convs_per_stage: Count = 2,
    downsample: Literal["conv", "pool"] = "conv",
    head_filters: Annotated[int, Ge(0)] = 128,
    dropout: Rate = 0.4,
    bn_momentum: Rate = 0.9,
) -> "keras.Model":
    """Stages of 3x3 conv-BatchNorm-ReLU, each halving the side (a strided 5x5 conv or 2x2 max-pool)
    and ending in dropout; a 4x4 conv head, dropout and a softmax. No wide dense layer."""
    import keras

    def conv_bn(width: int, kernel: int, **options) -> list:
        return [
            keras.layers.Conv2D(width, kernel, use_bias=False, **options),  # BatchNorm has the bias
            keras.layers.BatchNormalization(momentum=bn_momentum),
            keras.layers.Activation("relu"),
        ]

    layers = [keras.Input(input_shape)]
    for width in filters:
        for _ in range(convs_per_stage):
            layers += conv_bn(width, 3, padding="same")
        if downsample == "conv":
            layers += conv_bn(width, 5, strides=2, padding="same")
        else:
            layers.append(keras.layers.MaxPooling2D(2, padding="same"))
        layers.append(keras.layers.Dropout(dropout))
    if head_filters:
        layers += conv_bn(head_filters, 4)
    layers += [keras.layers.Flatten(), keras.layers.Dropout(dropout), softmax(num_classes)]
    return keras.Sequential(layers, name="cnn_bn")


def softmax(num_classes: int) -> "keras.layers.Layer":
    """The output layer: in float32 even under a mixed policy, so bf16 stays numerically stable."""
    import keras

    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32")
