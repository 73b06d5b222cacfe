"""The seed CNN, every size a config knob."""

import keras

from mnist_exp.config import CNNConfig


def build_model(cfg: CNNConfig) -> keras.Model:
    """Conv-conv-pool-dropout-dense-dropout-softmax on 28x28x1; 2,380,938 params by default."""
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(cfg.conv1_filters, cfg.kernel_size, activation="relu"),
            keras.layers.Conv2D(cfg.conv2_filters, cfg.kernel_size, activation="relu"),
            keras.layers.MaxPooling2D(cfg.pool_size),
            keras.layers.Dropout(cfg.dropout_conv),
            keras.layers.Flatten(),
            keras.layers.Dense(cfg.dense_units, activation="relu"),
            keras.layers.Dropout(cfg.dropout_dense),
            keras.layers.Dense(10, activation="softmax", dtype="float32"),  # stable under bf16
        ],
        name="seed_cnn",
    )
