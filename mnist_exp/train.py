"""Seed, compile and fit: the optimizer and callbacks come from their config groups."""

import sys
import time
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_exp.config import CallbacksConfig, CheckpointConfig, Config, OptimizerConfig
from mnist_exp.data import Mnist
from mnist_exp.errors import DivergedError


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow ops deterministic (slower)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build_optimizer(cfg: OptimizerConfig) -> keras.optimizers.Optimizer:
    return getattr(keras.optimizers, cfg.keras_class)(**asdict(cfg))


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


def best_epoch(history: dict[str, list[float]], cfg: CheckpointConfig) -> int:
    """Index of the epoch whose model the checkpoint kept."""
    values = np.asarray(history[cfg.monitor])
    maximise = cfg.mode == "max" or (cfg.mode == "auto" and "acc" in cfg.monitor)
    return int(np.argmax(values) if maximise else np.argmin(values))


def build_callbacks(cfg: CallbacksConfig, checkpoint_path: Path) -> list[keras.callbacks.Callback]:
    """ModelCheckpoint keeping the best model, and EarlyStopping, as the callbacks group says."""
    checkpoint, stopping = cfg.checkpoint, cfg.early_stopping
    return [
        keras.callbacks.ModelCheckpoint(
            checkpoint_path, monitor=checkpoint.monitor, mode=checkpoint.mode, save_best_only=True
        ),
        keras.callbacks.EarlyStopping(
            monitor=stopping.monitor,
            mode=stopping.mode,
            patience=stopping.patience,
            min_delta=stopping.min_delta,
        ),
    ]


def train(
    model: keras.Model,
    data: Mnist,
    cfg: Config,
    checkpoint_path: Path,
    extra_callbacks: list[keras.callbacks.Callback],
) -> keras.callbacks.History:
    """Compile and fit; afterwards `model` holds the best checkpoint's weights."""
    model.compile(
        loss="categorical_crossentropy",
        optimizer=build_optimizer(cfg.optimizer),
        metrics=["accuracy"],
    )
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        EpochTimer(len(data.x_train)),
        *build_callbacks(cfg.callbacks, checkpoint_path),
        *extra_callbacks,
    ]
    history = model.fit(
        data.x_train,
        data.y_train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=(data.x_val, data.y_val),
        shuffle=cfg.shuffle,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    losses = history.history.get("loss", [])
    if not losses or not np.all(np.isfinite(losses)):
        raise DivergedError(
            f"Training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
            f"{len(losses)}. The learning rate ({cfg.optimizer.learning_rate}) is probably too "
            "high for this optimizer; lower optimizer.learning_rate."
        )
    model.load_weights(checkpoint_path)
    return history
