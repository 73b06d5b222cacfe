"""The seed CNN's shape and output."""

import keras
import numpy as np
import pytest

from mnist_exp.config import CNNConfig
from mnist_exp.model import build_model
from mnist_exp.train import resolve_precision, set_precision


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


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    ("precision", "cpuinfo", "gpus", "expected"),
    [
        ("auto", "flags : fpu avx512f avx512_bf16", [], "bf16"),
        ("auto", "flags : fpu amx_tile amx_bf16", [], "bf16"),
        ("auto", "flags : fpu avx2 avx512f", [], "fp32"),  # no native bf16: stay in fp32
        ("auto", "flags : avx2", [(8, 0)], "bf16"),
        ("auto", "flags : avx512_bf16", [(7, 5)], "fp32"),  # the GPU decides when there is one
        ("fp16", "flags : avx512_bf16", [], "fp16"),
    ],
)
def test_auto_precision_follows_the_hardware(precision, cpuinfo, gpus, expected):
    assert resolve_precision(precision, cpuinfo, gpus) == expected


def test_bf16_policy_keeps_the_softmax_in_float32(restore_policy):
    assert set_precision("bf16") == "bf16"
    model = build_model(CNNConfig())
    assert model.layers[0].compute_dtype == "bfloat16"
    assert model.layers[0].variable_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    assert model(np.zeros((2, 28, 28, 1), np.float32)).dtype == "float32"
