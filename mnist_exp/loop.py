"""The training loop's own Keras callbacks, which every run has whatever its `callbacks` group
holds: epoch timings, a clean stop on signals and the state a resumed run continues from; and the
best checkpoint, which `callbacks=checkpoint` builds."""

import inspect
import json
import os
import signal
import threading
import time
from pathlib import Path

import keras
import numpy as np

from mnist_exp.names import LAST_FILE, METRICS, STATE_FILE


class EpochLogs(keras.callbacks.Callback):
    """Adds `epoch_seconds`, `samples_per_second` (training) and the `learning_rate` the epoch
    ended with to each epoch's logs."""

    def __init__(self, train_samples: int):
        super().__init__()
        self.train_samples = train_samples

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.train_end = time.perf_counter()  # excludes the validation pass from the throughput

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self.start
        logs["samples_per_second"] = self.train_samples / (self.train_end - self.start)
        logs["learning_rate"] = learning_rate(self.model.optimizer)


class EpochLine(keras.callbacks.Callback):
    """The line a person reads per epoch, printed once the epoch is done and logged: its number,
    loss and accuracy on training and validation, and its seconds. (Keras' own line would add
    what `EpochLogs` puts in the logs for MLflow and resume: throughput, the learning rate.)"""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        figures = "  ".join(f"{name} {logs[name]:.4f}" for name in METRICS if name in logs)
        seconds = f"  {logs['epoch_seconds']:.1f} s" if "epoch_seconds" in logs else ""
        print(f"epoch {epoch + 1}/{self.epochs}  {figures}{seconds}", flush=True)


def learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate of the optimizer's next step (a schedule's value at its step counter)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def save_atomically(model: keras.Model, path: Path) -> None:
    """Write beside `path`, then rename over it: a process killed mid-write leaves the old file
    whole (or none), never a truncated one."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        model.save(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the model of the best epoch by `monitor` in `path`, written atomically."""

    def __init__(self, path: Path, monitor: str, mode: str):
        super().__init__()
        self.path, self.monitor = path, monitor
        self.maximise = mode == "max" or (mode == "auto" and "acc" in monitor)  # as Keras does
        self.best = -np.inf if self.maximise else np.inf
        self.best_epoch = -1

    def on_epoch_end(self, epoch, logs=None):
        value = logs.get(self.monitor)
        if value is not None and (value > self.best if self.maximise else value < self.best):
            self.best, self.best_epoch = float(value), epoch
            save_atomically(self.model, self.path)


def learned_state(callback: keras.callbacks.Callback) -> dict:
    """What a callback learned while training (counters, best values): its plain attributes
    other than its constructor's arguments, which the resumed run's config sets afresh (and a
    callback may rework, as Keras negates `min_delta` when minimising)."""
    settings = inspect.signature(type(callback)).parameters
    return {
        name: value.item() if isinstance(value, np.generic) else value
        for name, value in vars(callback).items()
        if not name.startswith("_")
        and name not in settings
        and isinstance(value, (bool, int, float, str, type(None), np.generic))
    }


class StopOnSignal(keras.callbacks.Callback):
    """The first Ctrl-C or SIGTERM stops training at the end of the current batch, a safe point
    for TensorFlow (an exception raised mid-step can crash it); a second one exits at once.
    Only the main thread can take signals: elsewhere (a server's worker) this does nothing."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.request)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before training."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def request(self, signum, frame):
        if self.requested:
            os._exit(130)
        self.requested = True

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            raise KeyboardInterrupt

    on_test_batch_end = on_train_batch_end


class TrainingState(keras.callbacks.Callback):
    """Saves everything a resumed run needs after each epoch: the model with its optimizer state
    and step counter (`last.keras`), and the epoch, history and every callback's memory
    (`state.json`), which it gives back to the callbacks when a resumed run starts."""

    def __init__(self, work_dir: Path, callbacks: dict[str, keras.callbacks.Callback], state: dict):
        super().__init__()
        self.work_dir, self.callbacks, self.state = work_dir, callbacks, state

    def on_train_begin(self, logs=None):  # after the callbacks' own (resetting) on_train_begin
        for name, remembered in self.state.get("callbacks", {}).items():
            vars(self.callbacks[name]).update(remembered)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in logs.items():
            self.state["history"].setdefault(key, []).append(float(value))
        self.state["epoch"] = epoch + 1
        self.state["callbacks"] = {name: learned_state(c) for name, c in self.callbacks.items()}
        save_atomically(self.model, self.work_dir / LAST_FILE)
        (self.work_dir / f"{STATE_FILE}.tmp").write_text(json.dumps(self.state))
        os.replace(self.work_dir / f"{STATE_FILE}.tmp", self.work_dir / STATE_FILE)
