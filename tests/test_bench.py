"""The benchmark's quick mode runs end to end and writes a consistent table (no timing asserts)."""

import json

import pytest

from .helpers import run_module

pytestmark = pytest.mark.slow


def test_bench_quick_mode_writes_a_complete_table(tmp_path):
    done = run_module(
        "mnist_exp.bench", "--quick", "--output", str(tmp_path / "bench.json"), timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    names = [row["name"] for row in result["rows"]]
    for expected in (
        "training, plain Keras model.fit, fp32",
        "training, plain Keras model.fit, mixed_bfloat16",
        "training, project run, fp32",
        "training, project run, default",
        "training, project run, default, system metrics off",
        "training, project run, default, augment=light",
        "system metrics sampler CPU / machine CPU",
        "MLflow logging per epoch / epoch time",
        "predict_digit, 1 image",
        "model.predict, 1 image",
        "POST /predict (HTTP, one 280x280 PNG)",
    ):
        assert expected in names
    assert any(name.startswith("predict CLI") for name in names)
    median = {row["name"]: row["median"] for row in result["rows"]}
    assert all(median[name] > 0 for name in names if name.startswith("training")), median
    ratios = result["ratios"]  # each ratio is made of the rows it names
    assert ratios["project default / plain Keras mixed_bfloat16"] == pytest.approx(
        median["training, project run, default"]
        / median["training, plain Keras model.fit, mixed_bfloat16"]
    )
    assert ratios["project default / same, system metrics off"] == pytest.approx(
        median["training, project run, default"]
        / median["training, project run, default, system metrics off"]
    )
    assert ratios["project default, augment=light / project default"] == pytest.approx(
        median["training, project run, default, augment=light"]
        / median["training, project run, default"]
    )
    assert 0 < median["system metrics sampler CPU / machine CPU"] < 5  # percent
    for accuracy in result["test_accuracy"].values():
        assert accuracy > 0.5  # 2 epochs on 2,000 images learn; chance is 0.1
