"""Seed, compile and fit: the optimizer, schedule, callbacks and augmentation come from their
config groups, built by the runner; a run's state is saved each epoch so `resume=` continues it."""

import inspect
import json
import os
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_exp.augment import training_batches
from mnist_exp.config import COMPILED_METRICS, LAST_FILE, STATE_FILE, Config
from mnist_exp.data import Mnist
from mnist_exp.errors import ConfigError, DivergedError, MnistExpError
from mnist_exp.search import PRUNED_AT


def seed_everything(seed: int, deterministic: bool) -> None:
    """Start from a clean Keras state (what an earlier job in this process left is dropped), seed
    Python, NumPy and TensorFlow; optionally make TensorFlow ops deterministic (slower)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def cpu_has_bf16(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's flags include native bfloat16 math (AVX-512 BF16 or AMX)."""
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, cpuinfo: str, gpu_capabilities: list[tuple]) -> str:
    """`auto` -> bf16 where the hardware computes it natively (CPU flags, GPU compute >= 8.0)."""
    if precision != "auto":
        return precision
    if gpu_capabilities:
        return "bf16" if all(c >= (8, 0) for c in gpu_capabilities) else "fp32"
    return "bf16" if cpu_has_bf16(cpuinfo) else "fp32"


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy for `precision` (before building the model); return the
    precision chosen. Mixed policies keep variables, the softmax and the loss in float32."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    gpus = [
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    chosen = resolve_precision(precision, cpuinfo, gpus)
    keras.mixed_precision.set_global_policy(POLICIES[chosen])
    return chosen


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


class ReportToTrial(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to an Optuna trial, and stops training like early
    stopping once the trial's pruner calls it hopeless (`pruned_at`: that epoch)."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial
        self.pruned_at = None

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float(logs["val_accuracy"]), epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.trial.set_user_attr(PRUNED_AT, epoch + 1)
            self.model.stop_training = True


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


def memory(callback: keras.callbacks.Callback) -> dict:
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


def check_learning_rate_owner(
    optimizer: keras.optimizers.Optimizer, callbacks: dict[str, keras.callbacks.Callback]
) -> None:
    """A schedule and a callback that sets the learning rate cannot both own it."""
    setters = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)
    scheduled = isinstance(
        optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule
    )
    for name, callback in callbacks.items():
        if scheduled and isinstance(callback, setters):
            raise ConfigError(
                f"callbacks.{name} sets the learning rate, which the schedule already sets each "
                "step; use schedule=constant with it, or drop it."
            )


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
        self.state["callbacks"] = {name: memory(c) for name, c in self.callbacks.items()}
        save_atomically(self.model, self.work_dir / LAST_FILE)
        (self.work_dir / f"{STATE_FILE}.tmp").write_text(json.dumps(self.state))
        os.replace(self.work_dir / f"{STATE_FILE}.tmp", self.work_dir / STATE_FILE)


def check_resumable(work_dir: Path) -> None:
    """Refuse, in one line, to resume from a state or model file that cannot be read."""
    for path in (work_dir / STATE_FILE, work_dir / LAST_FILE):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())["epoch"]
            else:
                with zipfile.ZipFile(path) as archive:  # a .keras file is a zip archive
                    if (bad := archive.testzip()) is not None:
                        raise zipfile.BadZipFile(f"{bad} fails its CRC check")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise MnistExpError(
                f"{path} cannot be read ({type(error).__name__}: {error}), so this run cannot be "
                "resumed; run its configuration afresh (the same command without resume=)."
            ) from None


def fit(
    model: keras.Model,
    data: Mnist,
    cfg: Config,
    transform,
    initial_epoch: int,
    callbacks: list,
) -> None:
    """`model.fit` on the training split (through `transform` if one is given), validating on
    the untouched validation split each epoch; one line per epoch off a TTY."""
    inputs = dict(x=data.x_train, y=data.y_train, batch_size=cfg.batch_size, shuffle=cfg.shuffle)
    if transform is not None:
        batches, steps = training_batches(
            data.x_train,
            data.y_train,
            cfg.batch_size,
            cfg.shuffle,
            cfg.seed,
            transform,
            initial_epoch,
        )
        inputs = dict(x=batches, steps_per_epoch=steps, shuffle=False)  # shuffled above
    model.fit(
        **inputs,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        validation_data=(data.x_val, data.y_val),
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )


def train(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    data: Mnist,
    cfg: Config,
    work_dir: Path,
    callbacks: dict[str, keras.callbacks.Callback],
    transform=None,
    extra_callbacks: list[keras.callbacks.Callback] = (),
) -> tuple[dict[str, list[float]], int]:
    """Compile and fit (with `cfg.resume`, from the state saved in `work_dir`); return the
    per-epoch history and the index of the epoch whose model `model` now holds: the checkpoint's
    best, or the last without a checkpoint callback."""
    check_learning_rate_owner(optimizer, callbacks)
    model.compile(
        loss="categorical_crossentropy", optimizer=optimizer, metrics=list(COMPILED_METRICS)
    )
    state = {"epoch": 0, "history": {}}
    if cfg.resume:
        state = json.loads((work_dir / STATE_FILE).read_text())
        model.optimizer.build(model.trainable_variables)  # so its saved state is loaded too
        model.load_weights(work_dir / LAST_FILE)
    stop = StopOnSignal()
    try:
        fit(
            model,
            data,
            cfg,
            transform,
            state["epoch"],
            [
                stop,
                keras.callbacks.TerminateOnNaN(),
                EpochLogs(len(data.x_train)),
                *callbacks.values(),
                TrainingState(work_dir, callbacks, state),
                *extra_callbacks,
            ],
        )
    finally:  # outside training, a signal does what it did before (the CLI: KeyboardInterrupt)
        stop.restore()
    history = state["history"]
    losses = history.get("loss", [])
    if not losses or not np.all(np.isfinite(losses)):
        raise DivergedError(
            f"Training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
            f"{len(losses)}. The learning rate ({learning_rate(optimizer):g}) is probably too "
            "high for this optimizer; lower optimizer.learning_rate."
        )
    checkpoints = [c for c in callbacks.values() if isinstance(c, BestCheckpoint)]
    if not checkpoints or checkpoints[0].best_epoch < 0:
        return history, len(losses) - 1
    model.load_weights(checkpoints[0].path)
    return history, checkpoints[0].best_epoch
