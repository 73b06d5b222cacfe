"""The schedule group's builders: the learning rate over training, from the optimizer's rate.

Each takes what the runner passes (`learning_rate`: the optimizer's, `epochs`, `steps_per_epoch`)
plus its knobs, and returns a float (constant) or a Keras schedule evaluated at every step. Its
position is the optimizer's step counter, saved with the model, so a resumed run continues it.
"""

from typing import TYPE_CHECKING, Annotated

from annotated_types import Ge, Interval

if TYPE_CHECKING:
    import keras

Fraction = Annotated[float, Interval(ge=0, le=1)]


def constant(learning_rate: float) -> float:
    """The optimizer's learning rate throughout (the seed's recipe)."""
    return learning_rate


def exponential(
    learning_rate: float,
    steps_per_epoch: int,
    decay_per_epoch: Annotated[float, Interval(gt=0, le=1)] = 0.95,
) -> "keras.optimizers.schedules.LearningRateSchedule":
    """Multiply the rate by `decay_per_epoch` every epoch, smoothly step by step."""
    import keras

    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=decay_per_epoch
    )


def cosine(
    learning_rate: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: Annotated[int, Ge(0)] = 0,
    final_fraction: Fraction = 0.0,
) -> "keras.optimizers.schedules.LearningRateSchedule":
    """Half a cosine from the rate down to `final_fraction` of it at the last epoch (`epochs`),
    after a linear warm-up from 0 over `warmup_epochs`."""
    return warm_cosine(learning_rate, epochs, steps_per_epoch, warmup_epochs, 0.0, final_fraction)


def one_cycle(
    learning_rate: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.3,
    start_fraction: Fraction = 0.04,
    final_fraction: Fraction = 1e-3,
) -> "keras.optimizers.schedules.LearningRateSchedule":
    """Smith's one-cycle policy: up linearly from `start_fraction` of the rate to the rate over
    `warmup_fraction` of training, then down by a half cosine to `final_fraction` of it."""
    warmup_epochs = warmup_fraction * epochs
    return warm_cosine(
        learning_rate, epochs, steps_per_epoch, warmup_epochs, start_fraction, final_fraction
    )


def warm_cosine(
    learning_rate: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    start_fraction: float,
    final_fraction: float,
) -> "keras.optimizers.schedules.LearningRateSchedule":
    """Keras' CosineDecay with a linear warm-up, ending at the last step of `epochs`."""
    import keras

    from mnist_exp.errors import ConfigError

    warmup_steps = round(warmup_epochs * steps_per_epoch)
    decay_steps = epochs * steps_per_epoch - warmup_steps
    if decay_steps <= 0:
        raise ConfigError(
            f"schedule: the warm-up ({warmup_epochs:g} epochs) leaves nothing of epochs={epochs} "
            "to decay over; shorten the warm-up or raise epochs."
        )
    return keras.optimizers.schedules.CosineDecay(
        learning_rate * start_fraction if warmup_steps else learning_rate,
        decay_steps=decay_steps,
        alpha=final_fraction,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
