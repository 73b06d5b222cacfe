"""The seed CNN's shape and output."""

import numpy as np

from mnist_exp.config import CNNConfig
from mnist_exp.model import build_model


def test_seed_cnn_has_2_380_938_params():
    assert build_model(CNNConfig()).count_params() == 2_380_938


def test_output_is_a_softmax_over_10_digits():
    model = build_model(CNNConfig())
    assert model.output_shape == (None, 10)
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    probabilities = model(images, training=False).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()


def test_sizes_are_config_knobs():
    model = build_model(CNNConfig(dense_units=128, conv1_filters=16))
    assert model.count_params() == 2_380_938 - (256 - 128) * (9216 + 1 + 10) - 16 * 10 - 16 * 9 * 64
