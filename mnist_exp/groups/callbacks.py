"""The callbacks group's builders: `f(**knobs) -> keras.callbacks.Callback`, one YAML each.

Signatures are schemas, checked before TensorFlow is imported (`mnist_exp.config.build.check`);
a knob named `monitor` must name a metric the model compiles (`mnist_exp.names.METRICS`). The
runner passes `work_dir` (the run's directory) to a builder that takes it.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from annotated_types import Ge, Interval

if TYPE_CHECKING:
    import keras

Mode = Literal["min", "max", "auto"]  # auto: accuracies are maximised, anything else minimised
Epochs = Annotated[int, Ge(0)]


def checkpoint(
    work_dir: Path, monitor: str = "val_accuracy", mode: Mode = "max"
) -> "keras.callbacks.Callback":
    """Keep the model of the best epoch by `monitor`: the one evaluated, logged and registered."""
    from mnist_exp.loop import BestCheckpoint
    from mnist_exp.names import BEST_FILE

    return BestCheckpoint(work_dir / BEST_FILE, monitor, mode)


def early_stopping(
    monitor: str = "val_loss",
    mode: Mode = "min",
    patience: Epochs = 5,
    min_delta: Annotated[float, Ge(0)] = 0.0,
) -> "keras.callbacks.Callback":
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""
    import keras

    return keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=patience, min_delta=min_delta
    )


def reduce_lr(
    monitor: str = "val_loss",
    mode: Mode = "min",
    factor: Annotated[float, Interval(gt=0, lt=1)] = 0.5,
    patience: Epochs = 2,
    min_delta: Annotated[float, Ge(0)] = 1e-4,
    cooldown: Epochs = 0,
    min_lr: Annotated[float, Ge(0)] = 1e-5,
) -> "keras.callbacks.ReduceLROnPlateau":
    """Multiply the learning rate by `factor` when `monitor` has not improved by `min_delta`
    for more than `patience` epochs."""
    import keras

    return keras.callbacks.ReduceLROnPlateau(
        monitor=monitor,
        mode=mode,
        factor=factor,
        patience=patience,
        min_delta=min_delta,
        cooldown=cooldown,
        min_lr=min_lr,
    )
