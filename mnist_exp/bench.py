"""`make bench`: training, logging, prediction and start-up timed against plain Keras."""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_exp.config import DatasetConfig
from mnist_exp.data import fetch_mnist


def timed(call, repeats: int) -> list[float]:
    """Seconds taken by each of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def row(name: str, samples: list[float], unit: str, scale: float = 1.0) -> dict:
    values = [s * scale for s in samples]
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def plain_keras(limit: int | None, epochs: int, policy: str) -> dict:
    """The reference: the seed CNN and `model.fit` written minimally, as a Keras user would."""
    import keras

    keras.utils.set_random_seed(42)
    keras.mixed_precision.set_global_policy(policy)
    raw = fetch_mnist(DatasetConfig())
    x = raw["x_train"].reshape(-1, 28, 28, 1).astype("float32") / 255
    y = keras.utils.to_categorical(raw["y_train"], 10)
    x_train, y_train = x[:55000][:limit], y[:55000][:limit]
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax", dtype="float32"),
        ]
    )
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adadelta(1.0),
        metrics=["accuracy"],
    )

    class TrainTimer(keras.callbacks.Callback):  # training part of each epoch, as the project
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            rates.append(len(x_train) / (self.end - self.start))

    rates = []
    model.fit(
        x_train,
        y_train,
        batch_size=128,
        epochs=epochs,
        validation_data=(x[55000:], y[55000:]),
        callbacks=[TrainTimer()],
        verbose=0,
    )
    x_test = raw["x_test"].reshape(-1, 28, 28, 1).astype("float32") / 255
    accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == raw["y_test"]))
    return {"samples_per_second": rates, "test_accuracy": accuracy}


def project_run(limit: int | None, epochs: int, overrides: list[str], workdir: Path) -> dict:
    """The project's own path: `python -m mnist_exp.run`, callbacks and MLflow logging on."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'bench.db'}"
    command = [
        sys.executable,
        "-m",
        "mnist_exp.run",
        f"epochs={epochs}",
        *overrides,
        f"dataset.limit={'null' if limit is None else limit}",
        f"mlflow.tracking_uri={uri}",
        "mlflow.registered_model=null",
        f"hydra.run.dir={workdir / 'run'}",
    ]
    subprocess.run(command, check=True, capture_output=True)
    client = MlflowClient(uri)
    run = client.search_runs(
        [client.get_experiment_by_name("mnist_exp").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    history = client.get_metric_history(run.info.run_id, "samples_per_second")
    return {
        "samples_per_second": [m.value for m in sorted(history, key=lambda m: m.step)],
        "test_accuracy": run.data.metrics["test_accuracy"],
        "precision_used": run.data.params["precision_used"],
    }


def in_subprocess(function: str, *args) -> dict:
    """Run one training measurement in a fresh process, as a user's run would be."""
    code = f"import json, mnist_exp.bench as b; print(json.dumps(b.{function}(*{args!r})))"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_training(
    limit: int | None, epochs: int, repeats: int, workdir: Path, deterministic: bool
) -> tuple:
    """Plain Keras in fp32 and mixed_bfloat16 vs the project in fp32, at its default precision
    (`auto`: bf16 on CPUs with native bfloat16), with system metrics off, with light
    augmentation and, if asked, fp32 deterministic, alternating, on the same data; the first
    epoch of each run is warm-up. Returns table rows and the accuracies."""
    contenders = {
        "plain Keras model.fit, fp32": lambda: in_subprocess(
            "plain_keras", limit, epochs, "float32"
        ),
        "plain Keras model.fit, mixed_bfloat16": lambda: in_subprocess(
            "plain_keras", limit, epochs, "mixed_bfloat16"
        ),
        "project run, fp32": lambda: project_run(limit, epochs, ["precision=fp32"], workdir),
        "project run, default": lambda: project_run(limit, epochs, [], workdir),
        "project run, default, system metrics off": lambda: project_run(
            limit, epochs, ["mlflow.system_metrics=false"], workdir
        ),
        "project run, default, augment=light": lambda: project_run(
            limit, epochs, ["augment=light"], workdir
        ),
    }
    if deterministic:
        contenders["project run, fp32, deterministic"] = lambda: project_run(
            limit, epochs, ["precision=fp32", "deterministic=true"], workdir
        )
    rates = {name: [] for name in contenders}
    accuracy = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, measure in contenders.items():
            result = measure()
            rates[name].append(statistics.median(result["samples_per_second"][1:]))
            accuracy[name].append(result["test_accuracy"])
    rows = [row(f"training, {name}", rates[name], "samples/s") for name in contenders]
    return rows, {name: statistics.median(a) for name, a in accuracy.items()}


def bench_system_metrics(seconds: float, repeats: int, workdir: Path) -> dict:
    """CPU time of MLflow's system-metrics sampler (one sample a second) as a share of the
    machine's CPU time: what it can take from training, which keeps every core busy."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'system.db'}")
    mlflow.set_system_metrics_sampling_interval(1)
    for sampled in (False, True):  # warm-up: the store's creation, the sampler's imports
        with mlflow.start_run(log_system_metrics=sampled):
            time.sleep(1.5)
    shares = []
    for _ in range(repeats):
        cpu = {}
        for sampled in (False, True):
            start = time.process_time()
            with mlflow.start_run(log_system_metrics=sampled):
                time.sleep(seconds)
            cpu[sampled] = time.process_time() - start
        shares.append((cpu[True] - cpu[False]) / (seconds * os.cpu_count()))
    return row("system metrics sampler CPU / machine CPU", shares, "%", 100)


def bench_logging(epoch_seconds: float, repeats: int, workdir: Path) -> dict:
    """One epoch's MLflow logging (six metrics to a SQLite store) as a share of an epoch."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'logging.db'}")
    metrics = dict.fromkeys(
        ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "samples_per_second"), 0.5
    )
    with mlflow.start_run():
        seconds = timed(lambda: mlflow.log_metrics(metrics, step=1), repeats)
    return row(
        "MLflow logging per epoch / epoch time", [s / epoch_seconds for s in seconds], "%", 100
    )


def bench_prediction(images: np.ndarray, repeats: int) -> list[dict]:
    """One image through `predict_digit` (preprocessing included) vs `model.predict`; a batch."""
    from mnist_exp.models import cnn
    from mnist_exp.predict import Predictor

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
    from mnist_exp.models import cnn

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_exp.bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 2,000-image subset, 2 epochs, one repetition (a few minutes)",
    )
    parser.add_argument("--output", default="outputs/bench.json", help="where to write the JSON")
    args = parser.parse_args()
    limit, epochs, repeats, calls, files = (
        (2000, 2, 1, 20, 50) if args.quick else (None, 3, 2, 300, 1000)
    )

    test_images = fetch_mnist(DatasetConfig())["x_test"]
    with tempfile.TemporaryDirectory() as workdir:
        rows, accuracy = bench_training(limit, epochs, repeats, Path(workdir), not args.quick)
        project_fp32 = next(r for r in rows if r["name"] == "training, project run, fp32")
        epoch_seconds = (limit or 55000) / project_fp32["median"]
        rows.append(bench_logging(epoch_seconds, calls, Path(workdir)))
        rows.append(
            bench_system_metrics(3 if args.quick else 10, 1 if args.quick else 3, Path(workdir))
        )
        rows += bench_prediction(test_images, calls)
        model_path = untrained_model(Path(workdir))
        rows.append(
            bench_cli(test_images[:files], 1 if args.quick else 3, model_path, Path(workdir))
        )
        rows.append(bench_serve(test_images[0], calls, model_path))
    rows += bench_startup(2 if args.quick else 5)

    by_name = {r["name"]: r["median"] for r in rows}
    plain = by_name["training, plain Keras model.fit, fp32"]
    default = by_name["training, project run, default"]
    ratios = {
        "project fp32 / plain Keras fp32": by_name["training, project run, fp32"] / plain,
        "project default / plain Keras fp32": default / plain,
        "project default / plain Keras mixed_bfloat16": default
        / by_name["training, plain Keras model.fit, mixed_bfloat16"],
        "project default / same, system metrics off": default
        / by_name["training, project run, default, system metrics off"],
        "project default, augment=light / project default": by_name[
            "training, project run, default, augment=light"
        ]
        / default,
        "model.predict / predict_digit (1 image)": by_name["model.predict, 1 image"]
        / by_name["predict_digit, 1 image"],
    }
    deterministic = by_name.get("training, project run, fp32, deterministic")
    if deterministic:
        ratios["project fp32 deterministic / project fp32"] = (
            deterministic / by_name["training, project run, fp32"]
        )
    print(f"{'benchmark':52} {'median':>10} {'min':>10} {'max':>10}  unit")
    for r in rows:
        print(f"{r['name']:52} {r['median']:10.2f} {r['min']:10.2f} {r['max']:10.2f}  {r['unit']}")
    for name, value in ratios.items():
        print(f"{name:52} {value:10.2f}x")
    for name, value in accuracy.items():
        print(f"test accuracy after {epochs} epochs, {name:24} {value:10.4f}")
    result = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cores": os.cpu_count(),
        "quick": args.quick,
        "epochs": epochs,
        "train_images": limit or 55000,
        "rows": rows,
        "ratios": ratios,
        "test_accuracy": accuracy,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
