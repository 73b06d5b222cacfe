"""Seed, compile and fit: the optimizer and callbacks come from their config groups."""

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

from mnist_exp.config import (
    BEST_FILE,
    LAST_FILE,
    STATE_FILE,
    CallbacksConfig,
    CheckpointConfig,
    Config,
)
from mnist_exp.data import Mnist
from mnist_exp.errors import DivergedError, MnistExpError


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


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `samples_per_second` (training) to each epoch's logs."""

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


def maximises(monitor: str, mode: str) -> bool:
    """Whether higher is better for `monitor` (mode auto: accuracies are maximised, as in Keras)."""
    return mode == "max" or (mode == "auto" and "acc" in monitor)


def best_epoch(history: dict[str, list[float]], cfg: CheckpointConfig) -> int:
    """Index of the epoch whose model the checkpoint kept."""
    values = np.asarray(history[cfg.monitor])
    return int(np.argmax(values) if maximises(cfg.monitor, cfg.mode) else np.argmin(values))


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
        self.better = np.greater if maximises(monitor, mode) else np.less
        self.best = -np.inf if maximises(monitor, mode) else np.inf

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in logs and self.better(logs[self.monitor], self.best):
            self.best = float(logs[self.monitor])
            save_atomically(self.model, self.path)


def build_callbacks(
    cfg: CallbacksConfig, checkpoint_path: Path
) -> tuple[BestCheckpoint, keras.callbacks.EarlyStopping]:
    """The best-model checkpoint and EarlyStopping, as the callbacks group says."""
    checkpoint, stopping = cfg.checkpoint, cfg.early_stopping
    return (
        BestCheckpoint(checkpoint_path, checkpoint.monitor, checkpoint.mode),
        keras.callbacks.EarlyStopping(
            monitor=stopping.monitor,
            mode=stopping.mode,
            patience=stopping.patience,
            min_delta=stopping.min_delta,
        ),
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
    (`last.keras`) and the epoch, history and callback state (`state.json`)."""

    def __init__(self, work_dir: Path, stopping, checkpoint, state: dict):
        super().__init__()
        self.work_dir, self.stopping, self.checkpoint = work_dir, stopping, checkpoint
        self.state = state

    def on_train_begin(self, logs=None):
        if self.state["epoch"]:  # EarlyStopping resets itself here; give it back its memory
            self.stopping.wait = self.state["wait"]
            self.stopping.best = self.state["best"]
            self.stopping.best_epoch = self.state["best_epoch"]
            self.checkpoint.best = self.state["checkpoint_best"]

    def on_epoch_end(self, epoch, logs=None):
        for key, value in logs.items():
            self.state["history"].setdefault(key, []).append(float(value))
        self.state.update(
            epoch=epoch + 1,
            wait=self.stopping.wait,
            best=None if self.stopping.best is None else float(self.stopping.best),
            best_epoch=self.stopping.best_epoch,
            checkpoint_best=float(self.checkpoint.best),
        )
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


def fit(model: keras.Model, data: Mnist, cfg: Config, initial_epoch: int, callbacks: list) -> None:
    """`model.fit` on the training split, validating each epoch; one line per epoch off a TTY."""
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        validation_data=(data.x_val, data.y_val),
        shuffle=cfg.shuffle,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )


def train(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    data: Mnist,
    cfg: Config,
    work_dir: Path,
    extra_callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """Compile and fit (with `cfg.resume`, from the state saved in `work_dir`); return the
    per-epoch history. Afterwards `model` holds the best checkpoint's weights."""
    model.compile(loss="categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    state = {"epoch": 0, "history": {}}
    if cfg.resume:
        state = json.loads((work_dir / STATE_FILE).read_text())
        model.optimizer.build(model.trainable_variables)  # so its saved state is loaded too
        model.load_weights(work_dir / LAST_FILE)
    checkpoint, stopping = build_callbacks(cfg.callbacks, work_dir / BEST_FILE)
    stop = StopOnSignal()
    callbacks = [
        stop,
        keras.callbacks.TerminateOnNaN(),
        EpochTimer(len(data.x_train)),
        checkpoint,
        stopping,
        TrainingState(work_dir, stopping, checkpoint, state),
        *extra_callbacks,
    ]
    try:
        fit(model, data, cfg, state["epoch"], callbacks)
    finally:  # outside training, a signal does what it did before (the CLI: KeyboardInterrupt)
        stop.restore()
    losses = state["history"].get("loss", [])
    if not losses or not np.all(np.isfinite(losses)):
        learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        raise DivergedError(
            f"Training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
            f"{len(losses)}. The learning rate ({learning_rate:g}) is probably too "
            "high for this optimizer; lower optimizer.learning_rate."
        )
    model.load_weights(work_dir / BEST_FILE)
    return state["history"]
