"""Time to accuracy: seconds from a command's start to the first epoch whose test accuracy reaches
each threshold, for a project run and for the same recipe as a plain-Keras script.

Test accuracy is only watched here (it chooses nothing), and the watcher's own evaluation time is
taken off the clock. Each contender runs in a fresh process: `python -m mnist_exp.bench.clock
{project,plain} OUT overrides...` writes what it saw to OUT as JSON, with wall-clock stamps the
bench compares with the moment it started the process.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

THRESHOLDS = (0.99, 0.995, 0.996, 0.997)


def watch_test_set(test_set: Callable[[], tuple[np.ndarray, np.ndarray]]):
    """A Keras callback that records, for each epoch, when it ended, its test accuracy and the
    seconds this callback has spent so far (`test_set()`, images and digits, included); and when
    the first training step began."""
    import keras

    class TestWatch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.spent, self.first_step = [], 0.0, None

        def on_train_batch_begin(self, batch, logs=None):
            self.first_step = self.first_step or time.time()

        def on_epoch_end(self, epoch, logs=None):
            ended = time.time()
            if not self.epochs:
                self.x_test, self.y_test = test_set()
            x_test, y_test = self.x_test, self.y_test
            predicted = self.model.predict(x_test, batch_size=1024, verbose=0).argmax(axis=1)
            accuracy = float(np.mean(predicted == y_test))
            self.epochs.append({"end": ended, "test_accuracy": accuracy, "watched": self.spent})
            self.spent += time.time() - ended

    return TestWatch()


def watched_project(overrides: list[str]) -> dict:
    """`run_experiment(overrides)` with the watcher: the project's whole run, logging included."""
    from mnist_exp.console import import_tensorflow
    from mnist_exp.data import fetch_mnist
    from mnist_exp.run import run_experiment

    import_tensorflow()  # as the run would, before the watcher imports Keras

    def test_set() -> tuple[np.ndarray, np.ndarray]:
        arrays = fetch_mnist()
        return arrays["x_test"][..., None] / np.float32(255), arrays["y_test"]

    watch = watch_test_set(test_set)
    result = run_experiment(overrides, callbacks=[watch])
    return {
        "epochs": watch.epochs,
        "watched": watch.spent,
        "first_step": watch.first_step,
        "phases": result.phases,
        "epochs_run": result.epochs,
        "test_accuracy": result.test_accuracy,
    }


def watched_plain(overrides: list[str], workdir: Path) -> dict:
    """The same recipe written as a Keras user would: the project's model, optimizer, schedule
    and augmentation on the same data, then `model.fit` on arrays; no callbacks, no MLflow."""
    from mnist_exp.config.build import build
    from mnist_exp.config.compose import compose_config
    from mnist_exp.config.schema import validate
    from mnist_exp.experiment import build_training, load_data

    config = validate(compose_config(overrides)[0])
    import keras

    from mnist_exp.data.batches import training_batches
    from mnist_exp.train import set_precision

    keras.utils.set_random_seed(config.seed)
    set_precision(config.precision)
    data = load_data(config)
    model = build("model", config.model, input_shape=data.input_shape, num_classes=data.num_classes)
    recipe = build_training(config, len(data.x_train), workdir)  # its callbacks stay unused
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    model.compile(loss=loss, optimizer=recipe.optimizer, metrics=["accuracy"])
    inputs = dict(x=data.x_train, y=data.y_train, batch_size=config.batch_size)
    if recipe.transform is not None:
        steps = recipe.steps_per_epoch
        batches = training_batches(
            data.x_train,
            data.y_train,
            config.batch_size,
            True,
            config.seed,
            recipe.transform,
            steps,
            0,
        )
        inputs = dict(x=batches, steps_per_epoch=steps)
    watch = watch_test_set(lambda: (data.x_test, data.y_test.argmax(axis=1)))
    model.fit(
        **inputs,
        epochs=config.epochs,
        validation_data=(data.x_val, data.y_val),
        callbacks=[watch],
        verbose=0,
    )
    return {
        "epochs": watch.epochs,
        "watched": watch.spent,
        "first_step": watch.first_step,
        "epochs_run": config.epochs,
    }


def main() -> None:
    contender, out, *overrides = sys.argv[1:]
    if contender == "project":
        seen = watched_project(overrides)
    else:
        seen = watched_plain(overrides, Path(out).parent)
    import keras

    seen.update(end=time.time(), precision=keras.mixed_precision.global_policy().name)
    Path(out).write_text(json.dumps(seen))


def watched(contender: str, overrides: list[str], workdir: Path) -> dict:
    """One contender's run in a fresh process; its epochs' (seconds, test accuracy) on the clock
    that started with the command, the watcher's time taken off."""
    out = workdir / "watched.json"
    start = time.time()
    command = [sys.executable, "-m", "mnist_exp.bench.clock", contender, str(out), *overrides]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(
            f"{' '.join(command[2:])} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    seen = json.loads(out.read_text())
    return {
        "curve": [(e["end"] - start - e["watched"], e["test_accuracy"]) for e in seen["epochs"]],
        "first_step": seen["first_step"] - start,
        "wall": seen["end"] - start - seen["watched"],
        **{k: seen[k] for k in ("phases", "epochs_run", "test_accuracy", "precision") if k in seen},
    }


if __name__ == "__main__":
    main()


def store(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def recipe_overrides(recipe: str, seed: int, quick: bool, workdir: Path) -> list[str]:
    """The command line of `recipe` (`default`: no experiment) for one seed; quick: a subset."""
    overrides = [] if recipe == "default" else [f"experiment={recipe}"]
    # the bench's own store, registry and outputs, whatever $MLFLOW_TRACKING_URI names
    overrides += [f"seed={seed}", f"paths.root={workdir}", f"mlflow.tracking_uri={store(workdir)}"]
    # quick: small batches, so that BatchNorm's statistics settle in 2 epochs of 2,000 images
    return overrides + (["dataset.limit=2000", "epochs=2", "batch_size=32"] if quick else [])


def time_to_accuracy(
    recipes: list[str], seeds: list[int], quick: bool, workdir: Path, extra: list[str]
) -> dict:
    """Every recipe with the `extra` overrides, project and plain Keras, seed by seed (interleaved:
    this machine's speed drifts); each run as `watched` saw it, by recipe and contender."""
    from mnist_exp.tracking.store import make_store

    make_store(store(workdir))  # once, untimed
    runs = {(recipe, contender): [] for recipe in recipes for contender in ("project", "plain")}
    for index, seed in enumerate(seeds):
        for recipe in recipes:
            overrides = [*recipe_overrides(recipe, seed, quick, workdir), *extra]
            seen = {}
            for contender in order(index, stops_early(overrides)):
                # plain Keras runs the epochs the project ran (early stopping may end it sooner)
                epochs = [f"epochs={seen['project']['epochs_run']}"] if "project" in seen else []
                seen[contender] = watched(contender, [*overrides, *epochs], workdir)
                runs[recipe, contender].append(seen[contender])
            project, plain = seen["project"], seen["plain"]
            print(
                f"  {recipe}, seed {seed}: project {project['wall']:.0f} s "
                f"({project['test_accuracy']:.4f}), plain Keras {plain['wall']:.0f} s "
                f"({' first, '.join(seen)} second)",
                flush=True,
            )
    return runs


def order(index: int, early_stopping: bool) -> tuple[str, str]:
    """The contenders of the `index`th seed in the order they run: they take turns going first (what
    runs first may warm or tire the machine for the second), except where the project's early
    stopping decides how many epochs the plain script runs."""
    return ("plain", "project") if index % 2 and not early_stopping else ("project", "plain")


def stops_early(overrides: list[str]) -> bool:
    """Whether the recipe these overrides compose has early stopping among its callbacks."""
    from mnist_exp.config.compose import compose_config

    return "early_stopping" in compose_config(overrides)[0].callbacks


def reached(curve: list[tuple[float, float]], threshold: float) -> float | None:
    """Seconds to the first epoch at or above `threshold`; None if none reached it."""
    return next((seconds for seconds, accuracy in curve if accuracy >= threshold), None)


def clock_rows(runs: dict) -> list[dict]:
    """Rows: each contender's wall time, start-up to its first training step and time to each
    threshold (over the seeds that reached it); the project's phases."""
    from mnist_exp.bench.table import row

    rows = []
    for (recipe, contender), seen in runs.items():
        name = f"{recipe}, {'project run' if contender == 'project' else 'plain Keras'}"
        rows.append(row(f"wall, {name}", [r["wall"] for r in seen], "s"))
        rows.append(row(f"start-up to first step, {name}", [r["first_step"] for r in seen], "s"))
        for threshold in THRESHOLDS:
            times = [t for r in seen if (t := reached(r["curve"], threshold)) is not None]
            if times:
                rows.append(row(f"time to {threshold:.1%}, {name}", times, "s", of=len(seen)))
        if contender == "project":
            for phase in seen[0]["phases"]:
                rows.append(row(f"phase {phase}, {name}", [r["phases"][phase] for r in seen], "s"))
            after = [r["wall"] - r["curve"][-1][0] for r in seen]
            rows.append(row(f"after the last epoch, {name}", after, "s"))
    return rows


def clock_ratios(median: dict[str, float], recipes: list[str]) -> dict[str, float]:
    """Project / plain Keras, per recipe: wall time and the time to each threshold both reached."""
    found = {}
    for recipe in recipes:
        for measure in ("wall", *(f"time to {t:.1%}" for t in THRESHOLDS)):
            project = median.get(f"{measure}, {recipe}, project run")
            plain = median.get(f"{measure}, {recipe}, plain Keras")
            if project and plain:
                found[f"{measure}, {recipe}: project / plain Keras"] = project / plain
    return found
