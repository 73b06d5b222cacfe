"""Prediction on real image files made from MNIST test digits, with a really trained model."""

import json
import os
import subprocess
import sys
import urllib.request

import keras
import numpy as np
import pytest
from PIL import Image

from mnist_exp.data.images import ImageError, preprocess_image
from mnist_exp.serving.predict import ModelError, load_predictor

from .helpers import ROOT, free_port, run_module, user_style_image, wait_until_up

pytestmark = pytest.mark.slow
FORMATS = ("png-rgb", "jpeg-rgb", "png-rgba", "png-grey")


@pytest.fixture(scope="session")
def user_images(tmp_path_factory, mnist_raw):
    """240 user-style files (PNG and JPEG) with their true digits."""
    folder = tmp_path_factory.mktemp("user_images")
    rng = np.random.default_rng(7)
    labels = {}
    for i in range(240):
        kind = FORMATS[i % len(FORMATS)]
        path = folder / f"digit{i:03d}.{'jpg' if kind.startswith('jpeg') else 'png'}"
        user_style_image(mnist_raw["x_test"][i], rng, kind).save(path)
        labels[path.name] = int(mnist_raw["y_test"][i])
    return folder, labels


@pytest.fixture(scope="session")
def predictor(trained_run):
    with pytest.MonkeyPatch.context() as patch:  # only while loading: no other test sees it
        patch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)
        return load_predictor(f"runs:/{trained_run.run_id}/model")


def test_user_style_images_are_read_at_97_percent_and_beat_naive_resize(predictor, user_images):
    folder, labels = user_images
    truth = np.array(list(labels.values()))
    read = [predictor.predict_digit(folder / name).digit for name in labels]
    naive = np.stack(
        [np.asarray(Image.open(folder / name).convert("L").resize((28, 28))) for name in labels]
    )
    naive_read = predictor.probabilities((naive / np.float32(255))[..., None]).argmax(axis=1)
    accuracy, naive_accuracy = np.mean(read == truth), np.mean(naive_read == truth)
    assert accuracy >= 0.97, accuracy
    assert accuracy >= naive_accuracy + 0.3, (accuracy, naive_accuracy)


def test_mnist_digits_pass_through_unchanged_in_meaning(predictor, mnist_raw):
    images, labels = mnist_raw["x_test"][:1000], mnist_raw["y_test"][:1000]
    raw = predictor.probabilities(images[..., None] / np.float32(255)).argmax(1)
    processed = predictor.probabilities(np.stack([preprocess_image(d) for d in images])).argmax(1)
    assert np.mean(processed == labels) >= np.mean(raw == labels) - 0.01
    assert np.mean(processed == raw) >= 0.98


def bad_files(folder):
    """Each bad input a user may hand over, with a phrase its error must contain."""
    (folder / "notes.png").write_text("not an image")
    jpeg = folder / "truncated.jpg"
    Image.fromarray(np.full((60, 60, 3), 200, np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    Image.new("L", (64, 64), 255).save(folder / "blank.png")
    Image.new("L", (1, 1), 0).save(folder / "tiny.png")
    Image.new("1", (12000, 12000), 1).save(folder / "huge.png")
    return {
        "notes.png": "not a readable image",
        "truncated.jpg": "not a readable image",
        "blank.png": "no digit found",
        "tiny.png": "no digit found",
        "huge.png": "pixel limit",
    }


def test_cli_answers_good_files_and_reports_each_bad_one(trained_run, mnist_raw, tmp_path):
    rng = np.random.default_rng(3)
    expected = {}
    for i in range(6):
        image = user_style_image(mnist_raw["x_test"][i], rng, "png-grey")
        expected[f"good{i}.png"] = int(mnist_raw["y_test"][i])
        image.save(tmp_path / f"good{i}.png")
    sixteen = 255 - np.asarray(user_style_image(mnist_raw["x_test"][6], rng, "png-grey"))
    Image.fromarray(sixteen.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    expected["sixteen.png"] = int(mnist_raw["y_test"][6])
    frames = [user_style_image(mnist_raw["x_test"][7], rng, "png-grey"), Image.new("L", (200, 300))]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    expected["animated.gif"] = int(mnist_raw["y_test"][7])
    errors = bad_files(tmp_path)
    (tmp_path / "empty").mkdir()

    done = run_module(
        "mnist_exp.predict",
        str(tmp_path),
        str(tmp_path / "missing.png"),
        str(tmp_path / "empty"),
        "--json",
        "--model",
        f"runs:/{trained_run.run_id}/model",
        env={"MLFLOW_TRACKING_URI": trained_run.tracking_uri},
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    rows = {os.path.basename(r["file"]): r for r in map(json.loads, done.stdout.splitlines())}
    for name, digit in expected.items():
        assert rows[name]["digit"] == digit, rows[name]
        assert abs(sum(rows[name]["probabilities"]) - 1) < 1e-3
    for name, phrase in errors.items():
        assert phrase in rows[name]["error"], rows[name]
    assert "no such file" in rows["missing.png"]["error"]
    assert "no image files" in rows["empty"]["error"]


def test_explain_saves_what_the_model_saw(trained_run, mnist_raw, tmp_path):
    user_style_image(mnist_raw["x_test"][0], np.random.default_rng(0), "jpeg-rgb").save(
        tmp_path / "seven.jpg"
    )
    done = run_module(
        "mnist_exp.predict",
        str(tmp_path / "seven.jpg"),
        "--explain",
        str(tmp_path / "explain"),
        "--top-k",
        "3",
        env={"MLFLOW_TRACKING_URI": trained_run.tracking_uri},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{tmp_path / 'seven.jpg'}: 7 (")  # the best run by default
    named = f"model: runs:/{trained_run.run_id}/model, chosen as the best val accuracy ("
    assert done.stderr.startswith(named) and done.stderr.count("\n") == 1  # no warning, one line
    assert done.stderr.endswith(
        " of 1 finished run on mnist's default split (split=holdout, size=5000)\n"
    )
    assert "top-3" in done.stdout
    assert Image.open(tmp_path / "explain" / "seven.explain.png").size[0] > 100


def test_missing_images_are_named_before_any_model_or_store_is_opened(tmp_path):
    done = run_module("mnist_exp.predict", "no_such.png", "gone/", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: no_such.png: no such file or directory.",
        "error: gone/: no such file or directory.",
    ]
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no outputs/


def test_without_a_store_the_default_model_is_one_line_and_no_store_is_made(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    done = run_module("mnist_exp.predict", "x.png", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: No tracking store here") and "--model" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_missing_model_is_one_clear_line(trained_run, tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    done = run_module(
        "mnist_exp.predict",
        str(tmp_path / "x.png"),
        "--model",
        "runs:/0123456789abcdef/model",
        timeout=300,
        env={"MLFLOW_TRACKING_URI": trained_run.tracking_uri},
    )
    assert done.returncode == 2
    last_line = done.stderr.strip().splitlines()[-1]  # TensorFlow's start-up lines come first
    assert last_line.startswith("error: Cannot load model runs:/0123456789abcdef/model")
    assert "Traceback" not in done.stderr


def test_model_with_wrong_input_shape_is_refused(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / "cifar.keras")
    with pytest.raises(ModelError, match=r"expected \(None, 28, 28, 1\)"):
        load_predictor(tmp_path / "cifar.keras")


def test_registered_alias_and_saved_files_load_the_same_model(
    trained_run, predictor, mnist_raw, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)  # where the alias is
    images = mnist_raw["x_test"][:100, :, :, None] / np.float32(255)
    expected = predictor.probabilities(images)
    for source in (
        "models:/mnist-narrow_cnn@champion",
        trained_run.output_dir / "mnist.h5",
        trained_run.output_dir / "mnist.keras",
    ):
        np.testing.assert_allclose(
            load_predictor(source).probabilities(images), expected, atol=1e-5
        )


def test_blank_array_is_refused():
    with pytest.raises(ImageError, match="no digit found"):
        preprocess_image(np.zeros((28, 28), np.uint8))


def test_mlflow_models_serve_answers_a_batch_from_the_champion(trained_run, mnist_raw):
    """MLflow's own server loads the registry's champion with pyfunc, in a process of its own."""
    port = free_port()
    server = subprocess.Popen(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/mnist-narrow_cnn@champion",  # the trained run's version: its only one
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env={  # as in an activated venv: the server execs `uvicorn` from PATH
            **os.environ,
            "MLFLOW_TRACKING_URI": trained_run.tracking_uri,
            "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server)
        images = (mnist_raw["x_test"][:10, :, :, None] / 255).astype(np.float32)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            probabilities = np.asarray(json.load(response)["predictions"])
        assert probabilities.shape == (10, 10)
        assert (probabilities.argmax(1) == mnist_raw["y_test"][:10]).sum() >= 9
    finally:
        server.terminate()
        server.wait(timeout=30)
