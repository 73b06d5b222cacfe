"""Seed, compile and fit: the optimizer, schedule, callbacks and augmentation come from their
config groups, built by the runner; a run's state is saved each epoch so `resume=` continues it."""

import json
import math
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_exp.config.schema import Config
from mnist_exp.data import Dataset
from mnist_exp.data.batches import training_batches
from mnist_exp.errors import ConfigError, DivergedError, MnistExpError
from mnist_exp.loop import (
    BestCheckpoint,
    EpochLine,
    EpochLogs,
    StopOnSignal,
    TrainingState,
    learning_rate,
)
from mnist_exp.machine import cpuinfo
from mnist_exp.names import COMPILED_METRICS, LAST_FILE, STATE_FILE


def seed_everything(seed: int, deterministic: bool) -> None:
    """Start from a clean Keras state (what an earlier job in this process left is dropped), seed
    Python, NumPy and TensorFlow; optionally make TensorFlow ops deterministic (slower)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


# oneDNN's CPU limits (`ONEDNN_MAX_CPU_ISA`) below AVX-512 BF16: under them bfloat16 is emulated.
NO_BF16_ISAS = {
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
}


def cpu_has_bf16(cpuinfo: str, isa_limit: str = "") -> bool:
    """Whether /proc/cpuinfo's flags include native bfloat16 math (AVX-512 BF16 or AMX) that
    oneDNN may use (`isa_limit`: its ONEDNN_MAX_CPU_ISA, if set)."""
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"}) and isa_limit.upper() not in NO_BF16_ISAS


def resolve_precision(
    precision: str, cpuinfo: str, gpu_capabilities: list[tuple], isa_limit: str = ""
) -> str:
    """`auto` -> bf16 where the hardware computes it natively (CPU flags and oneDNN's limit, GPU
    compute >= 8.0). bf16 on a bf16 CPU with oneDNN kept below it is refused: TensorFlow fails."""
    capped = cpu_has_bf16(cpuinfo) and not cpu_has_bf16(cpuinfo, isa_limit)
    if precision == "bf16" and not gpu_capabilities and capped:
        raise ConfigError(
            f"precision=bf16: oneDNN is kept to {isa_limit} (ONEDNN_MAX_CPU_ISA), below this "
            "CPU's bf16, and TensorFlow's bf16 kernels then fail; use precision=fp32 or auto, "
            "or unset ONEDNN_MAX_CPU_ISA."
        )
    if precision != "auto":
        return precision
    if gpu_capabilities:
        return "bf16" if all(c >= (8, 0) for c in gpu_capabilities) else "fp32"
    return "bf16" if cpu_has_bf16(cpuinfo, isa_limit) else "fp32"


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy for `precision` (before building the model); return the
    precision chosen. Mixed policies keep variables, the softmax and the loss in float32."""
    gpus = [
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    chosen = resolve_precision(precision, cpuinfo(), gpus, os.environ.get("ONEDNN_MAX_CPU_ISA", ""))
    keras.mixed_precision.set_global_policy(POLICIES[chosen])
    return chosen


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


def start_from(
    model: keras.Model,
    source: keras.Model,
    name: str,
    classes: Sequence[str],
    source_classes: Sequence[str] | None,
) -> None:
    """Give `model` the weights of `source` (`init_from=name`), whose classes must be the data's:
    the same names in the same order (or, for a bare file, the same number)."""
    known = list(source_classes or classes)
    if known != list(classes) or source.output_shape[-1] != len(classes):
        trained_on = ", ".join(known) if source_classes else f"{source.output_shape[-1]} classes"
        raise ConfigError(
            f"init_from={name} was trained on {trained_on}; the data has {', '.join(classes)}: "
            "start from a model of data with the same classes, in the same order."
        )
    try:
        model.set_weights(source.get_weights())
    except ValueError as error:
        raise ConfigError(
            f"init_from={name}: its layers are not this model's ({str(error).splitlines()[0]}); "
            "set model= to the architecture it was trained as."
        ) from None


@dataclass(frozen=True)
class Training:
    """How a model is trained, each part built from its config group by the runner."""

    optimizer: keras.optimizers.Optimizer  # its learning rate: the schedule's
    callbacks: dict[str, keras.callbacks.Callback]  # by name, as in the callbacks group
    transform: Callable | None  # the augmentation of training batches; None: the images as they are
    steps_per_epoch: int
    # training steps a call into TensorFlow runs (`steps_per_execution`); divides steps_per_epoch
    steps_per_execution: int = 1


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    """Batches in one epoch: the last one may be short."""
    return math.ceil(train_images / batch_size)


# Up to this many steps a call: Python's share of a step (the call, per-batch callbacks) is then
# spread over many, 6-9% off an epoch of experiment=fast on 2 AVX2 cores (measured).
MAX_STEPS_PER_EXECUTION = 32


def steps_per_execution(steps: int, asked: int | None) -> int:
    """`asked`, or the largest number up to MAX_STEPS_PER_EXECUTION that divides an epoch's
    `steps`: a call never runs into the next epoch (Keras would, on endless augmented batches)."""
    divisors = [n for n in range(1, steps + 1) if steps % n == 0]
    if asked is None:
        return max(n for n in divisors if n <= MAX_STEPS_PER_EXECUTION)
    if steps % asked:
        near = ", ".join(str(n) for n in divisors if n <= max(asked, MAX_STEPS_PER_EXECUTION))
        raise ConfigError(
            f"steps_per_execution={asked} does not divide the {steps} training steps of an "
            f"epoch: use one that does ({near}), or null to let the run choose."
        )
    return asked


def fit(
    model: keras.Model,
    data: Dataset,
    training: Training,
    config: Config,
    state: dict,
    callbacks: list,
):
    """`model.fit` on the training split (through the training's transform if it has one) from the
    epoch `state` holds, validating on the untouched validation split; a line as it starts,
    and one per epoch (`EpochLine`)."""
    # One endless stream for the whole fit: Keras' array inputs make a new tf.data iterator each
    # epoch, and destroying one waited up to 38 s for its autotuning thread (2 AVX2 cores).
    batches = training_batches(
        data.x_train,
        data.y_train,
        config.batch_size,
        config.shuffle,
        config.seed,
        training.transform,
        training.steps_per_epoch,
        state["epoch"],
    )
    print(
        f"training on {len(data.x_train):,} images, validating on {len(data.x_val):,}: "
        f"epochs {state['epoch'] + 1}-{config.epochs}",
        flush=True,
    )
    model.fit(
        batches,
        steps_per_epoch=training.steps_per_epoch,
        shuffle=False,  # the stream shuffles
        epochs=config.epochs,
        initial_epoch=state["epoch"],
        validation_data=(data.x_val, data.y_val),
        callbacks=[*callbacks, EpochLine(config.epochs)],  # last: once the epoch is done and logged
        verbose=0,
    )


def weight_averaging(resumed: bool) -> keras.callbacks.SwapEMAWeights:
    """Validation, the checkpoint and the saved state see the averaged weights, the steps the
    raw ones. A saved state holds them swapped, which Keras' callback can only be told through
    its private flag (no public way exists; tests/test_recipes.py fails if it goes)."""
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = resumed
    return swap


def train(
    model: keras.Model,
    data: Dataset,
    training: Training,
    config: Config,
    work_dir: Path,
    reporters: Sequence[keras.callbacks.Callback] = (),
) -> tuple[dict[str, list[float]], int]:
    """Compile and fit (with `config.resume`, from the state saved in `work_dir`), `reporters`
    hearing every epoch; return the per-epoch history and the index of the epoch whose model
    `model` now holds: the checkpoint's best, or the last without a checkpoint callback."""
    state = compiled(model, training, config, work_dir)
    averaged = [weight_averaging(bool(config.resume))] if training.optimizer.use_ema else []
    stop = StopOnSignal()
    callbacks = [
        stop,
        keras.callbacks.TerminateOnNaN(),
        EpochLogs(len(data.x_train)),
        *averaged,
        *training.callbacks.values(),
        TrainingState(work_dir, training.callbacks, state),
        *reporters,
    ]
    try:
        fit(model, data, training, config, state, callbacks)
    finally:  # outside training, a signal does what it did before (the CLI: KeyboardInterrupt)
        stop.restore()
    # Predictions after training, one batch a call: several a call trace anew for each set's size.
    model.steps_per_execution = 1
    model.make_predict_function(force=True)
    check_converged(state["history"], training.optimizer)
    return state["history"], kept_epoch(model, training, config, work_dir, state["history"])


def compiled(model: keras.Model, training: Training, config: Config, work_dir: Path) -> dict:
    """Compile the model; the training state to start from: a resumed run's, its weights and
    optimizer loaded, else the first epoch's."""
    model.compile(
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        optimizer=training.optimizer,
        metrics=list(COMPILED_METRICS),
        steps_per_execution=training.steps_per_execution,
    )
    if not config.resume:
        return {"epoch": 0, "history": {}}
    model.optimizer.build(model.trainable_variables)  # so its saved state is loaded too
    model.load_weights(work_dir / LAST_FILE)
    return json.loads((work_dir / STATE_FILE).read_text())


def check_converged(history: dict[str, list[float]], optimizer: keras.optimizers.Optimizer):
    """A DivergedError, naming the learning rate, if the loss is missing or not finite."""
    losses = history.get("loss", [])
    if not losses or not np.all(np.isfinite(losses)):
        raise DivergedError(
            f"Training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
            f"{len(losses)}. The learning rate ({learning_rate(optimizer):g}) is probably "
            "too high for this optimizer; lower optimizer.learning_rate."
        )


def kept_epoch(
    model: keras.Model, training: Training, config: Config, work_dir: Path, history: dict
) -> int:
    """Give `model` the weights the run keeps, and return their epoch's index: the checkpoint's
    best, else the last (with weight averaging, the average the last epoch saved)."""
    epochs = len(history["loss"])
    checkpoints = [c for c in training.callbacks.values() if isinstance(c, BestCheckpoint)]
    if checkpoints and checkpoints[0].best_epoch >= 0:
        model.load_weights(checkpoints[0].path)
        return checkpoints[0].best_epoch
    if training.optimizer.use_ema and epochs < config.epochs:
        model.load_weights(work_dir / LAST_FILE)  # stopped early: Keras put the raw weights back
    return epochs - 1
