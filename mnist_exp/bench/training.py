"""Training throughput of plain Keras and of project runs, and what MLflow logging costs."""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mnist_exp.bench.table import row, timed
from mnist_exp.data import fetch_mnist
from mnist_exp.names import TEST_ACCURACY


def plain_keras(limit: int | None, epochs: int, policy: str) -> dict:
    """The reference: the seed CNN and `model.fit` written minimally, as a Keras user would."""
    import keras

    keras.utils.set_random_seed(42)
    keras.mixed_precision.set_global_policy(policy)
    raw = fetch_mnist()
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
    from mnist_exp.config.schema import MlflowConfig
    from mnist_exp.tracking.read import latest_runs, metric_series
    from mnist_exp.tracking.store import open_store

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
    store = open_store(MlflowConfig(tracking_uri=uri))
    [run] = latest_runs(store, "", limit=1)
    return {
        "samples_per_second": metric_series(store, run.info.run_id, "samples_per_second"),
        "test_accuracy": run.data.metrics[TEST_ACCURACY],
        "precision_used": run.data.params["precision_used"],
    }


def in_subprocess(function: str, *args, environment: dict | None = None):
    """Run one training measurement in a fresh process, as a user's run would be, with
    `environment` added to this one's."""
    code = f"import json, mnist_exp.bench.training as b; print(json.dumps(b.{function}(*{args!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | (environment or {}),
    )
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
    machine's CPU time: what it can take from training, which keeps every core busy. Counted on
    the threads the sampled run starts, so that a thread an earlier measurement left busy in this
    process (a tf.data iterator's teardown) is not counted as the sampler's."""
    import psutil

    from mnist_exp.tracking.store import Store, active_run

    store = Store(f"sqlite:///{workdir / 'system.db'}", "system metrics")
    with active_run(store, system_metrics=1):  # warm-up: the store's creation, the imports
        time.sleep(1.5)
    shares = []
    for _ in range(repeats):
        before = {thread.id for thread in psutil.Process().threads()}
        with active_run(store, system_metrics=1):
            time.sleep(seconds)
            started = [t for t in psutil.Process().threads() if t.id not in before]
        cpu = sum(thread.user_time + thread.system_time for thread in started)
        shares.append(cpu / (seconds * os.cpu_count()))
    return row("system metrics sampler CPU / machine CPU", shares, "%", 100)


def bench_logging(epoch_seconds: float, repeats: int, workdir: Path) -> dict:
    """One epoch's MLflow logging (six metrics to a SQLite store, by the callback a run logs them
    with) as a share of an epoch."""
    from mnist_exp.tracking.log import MlflowMetrics
    from mnist_exp.tracking.store import Store, active_run

    metrics = dict.fromkeys(
        ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "samples_per_second"), 0.5
    )
    logger = MlflowMetrics()
    with active_run(Store(f"sqlite:///{workdir / 'logging.db'}", "logging")):
        seconds = timed(lambda: logger.on_epoch_end(0, metrics), repeats)
    return row(
        "MLflow logging per epoch / epoch time", [s / epoch_seconds for s in seconds], "%", 100
    )


def throughput(overrides: list[str], limit: int, epochs: int, uint8: bool) -> list[float]:
    """Training images/s of each epoch of a recipe's model under plain `model.fit`; `uint8`: the
    images stay bytes until a Rescaling layer in the model makes each batch floats."""
    import keras

    from mnist_exp.config.build import build
    from mnist_exp.config.compose import compose_config
    from mnist_exp.config.schema import validate
    from mnist_exp.train import steps_per_epoch, steps_per_execution

    config = validate(compose_config(overrides)[0])
    keras.utils.set_random_seed(config.seed)
    raw = fetch_mnist()
    x = raw["x_train"][:limit, :, :, None]
    y = keras.utils.to_categorical(raw["y_train"][:limit], 10)
    model = build("model", config.model, input_shape=(28, 28, 1), num_classes=10)
    if uint8:
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255), model])
    else:
        x = x.astype("float32") / 255
    steps = steps_per_execution(
        steps_per_epoch(len(x), config.batch_size), config.steps_per_execution
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", steps_per_execution=steps)

    class TrainTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            rates.append(len(x) / (time.perf_counter() - self.start))

    rates = []
    model.fit(
        x, y, batch_size=config.batch_size, epochs=epochs, callbacks=[TrainTimer()], verbose=0
    )
    return rates


# Each setting against the defaults (threads = usable CPUs, oneDNN on, the recipe's batch size,
# float32 arrays, steps_per_execution chosen by the run): (environment, extra overrides, uint8).
CPU_SETTINGS = {
    "defaults": ({}, [], False),
    "1 step a call into TensorFlow": ({}, ["steps_per_execution=1"], False),
    "1 intra-op thread": ({"TF_NUM_INTRAOP_THREADS": "1"}, [], False),
    "1 inter-op thread": ({"TF_NUM_INTEROP_THREADS": "1"}, [], False),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, [], False),
    "batch size 256": ({}, ["batch_size=256"], False),
    "batch size 512": ({}, ["batch_size=512"], False),
    "uint8 until the batch": ({}, [], True),
}


def bench_cpu_settings(recipe: str, limit: int, epochs: int, repeats: int) -> list[dict]:
    """Training throughput of `recipe`'s model with each of CPU_SETTINGS, alternating, each in a
    fresh process (thread counts and oneDNN are fixed when TensorFlow starts)."""
    rates = {name: [] for name in CPU_SETTINGS}
    for _ in range(repeats):
        for name, (environment, overrides, uint8) in CPU_SETTINGS.items():
            overrides = [f"experiment={recipe}", *overrides]
            seen = in_subprocess(
                "throughput", overrides, limit, epochs, uint8, environment=environment
            )
            rates[name].append(statistics.median(seen[1:]))
    return [row(f"CPU setting, {recipe}: {name}", r, "images/s") for name, r in rates.items()]
