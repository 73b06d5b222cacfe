"""Prediction latency in-process, through the CLI and over HTTP, and the CLI's start-up."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_exp.bench.table import row, timed


def bench_prediction(images: np.ndarray, repeats: int) -> list[dict]:
    """One image through `predict_digit` (preprocessing included) vs `model.predict`; a batch."""
    from mnist_exp.groups.model import cnn
    from mnist_exp.serving.predict import Predictor

    model = cnn((28, 28, 1), 10)  # latency does not depend on the weights' values
    predictor = Predictor(model, "bench")
    digit, one = images[0], (images[:1, :, :, None] / np.float32(255))
    batch = images[:, :, :, None] / np.float32(255)
    for _ in range(10):  # warm-up: trace and compile both paths
        predictor.predict_digit(digit)
        model.predict(one, verbose=0)
    rows = [
        row(
            "predict_digit, 1 image",
            timed(lambda: predictor.predict_digit(digit), repeats),
            "ms",
            1000,
        ),
        row(
            "model.predict, 1 image",
            timed(lambda: model.predict(one, verbose=0), repeats),
            "ms",
            1000,
        ),
    ]
    throughput = [len(batch) / s for s in timed(lambda: predictor.probabilities(batch), 5)]
    rows.append(row(f"batch inference, {len(batch)} test images", throughput, "images/s"))
    return rows


def untrained_model(workdir: Path) -> Path:
    """The seed CNN saved untrained: prediction latency does not depend on the weights' values."""
    from mnist_exp.groups.model import cnn

    path = workdir / "bench.keras"
    cnn((28, 28, 1), 10).save(path)
    return path


def bench_cli(images: np.ndarray, repeats: int, model_path: Path, workdir: Path) -> dict:
    """`python -m mnist_exp.predict` on a folder of PNG files, start-up included."""
    folder = workdir / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(255 - image).resize((84, 84)).save(folder / f"{i:05d}.png")
    command = [sys.executable, "-m", "mnist_exp.predict", str(folder), "--model", str(model_path)]
    seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True), repeats)
    return row(
        f"predict CLI, folder of {len(images)} PNGs", [len(images) / s for s in seconds], "images/s"
    )


def bench_serve(image: np.ndarray, repeats: int, model_path: Path) -> dict:
    """`POST /predict` of the draw-a-digit server (real HTTP on 127.0.0.1, one kept-alive
    connection): a 280x280 canvas PNG in, digit, probabilities and 28x28 image out."""
    import http.client
    import io
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "mnist_exp.serve", "--model", str(model_path)]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    canvas = io.BytesIO()
    Image.fromarray(255 - image).resize((280, 280)).save(canvas, "PNG")
    body = canvas.getvalue()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", "/health")
                connection.getresponse().read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bench's mnist_exp.serve did not start") from None
                time.sleep(0.5)

        def post() -> None:
            connection.request("POST", "/predict", body, {"Content-Type": "image/png"})
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"POST /predict answered {response.status}: {response.read()}")
            response.read()

        for _ in range(10):  # warm-up
            post()
        return row("POST /predict (HTTP, one 280x280 PNG)", timed(post, repeats), "ms", 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_startup(repeats: int) -> list[dict]:
    """Seconds until `--help` and `--cfg job` answer: neither may import TensorFlow."""
    rows = []
    for flag in ("--help", "--cfg job"):
        command = [sys.executable, "-m", "mnist_exp.run", *flag.split()]
        seconds = timed(
            lambda c=command: subprocess.run(c, check=True, capture_output=True), repeats
        )
        rows.append(row(f"python -m mnist_exp.run {flag}", seconds, "s"))
    return rows
