"""The optimizer group's builders: `f(**knobs) -> keras.optimizers.Optimizer`, one YAML each.

Keras' optimizer classes take `**kwargs`, which no signature check can see, so each gets a thin
builder whose annotated signature is its schema (`mnist_exp.config.build.check`). The runner
passes `schedule`, the schedule group's learning rate over training, which a builder gives its
`learning_rate` knob (the peak, checked like any knob) to get what Keras takes.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge, Gt, Interval

if TYPE_CHECKING:
    import keras

Rate = Annotated[float, Gt(0)]  # a step size (or the peak of a schedule)
Decay = Annotated[float, Interval(ge=0, lt=1)]  # a moving average's decay per step
Epsilon = Annotated[float, Gt(0)]  # added to denominators for numerical stability
Schedule = Callable[[float], Any]  # a rate -> that rate over training (a float or Keras schedule)


def averaging(ema_momentum: float) -> dict:
    """Keras' weight averaging knobs: a moving average of the weights with this decay per step,
    0 for none."""
    return dict(use_ema=ema_momentum > 0, ema_momentum=ema_momentum or 0.99)


def adadelta(
    schedule: Schedule,
    learning_rate: Rate = 1.0,
    rho: Decay = 0.95,
    epsilon: Epsilon = 1e-7,
    ema_momentum: Decay = 0.0,
) -> "keras.optimizers.Optimizer":
    """Adadelta, the seed's optimizer."""
    import keras

    return keras.optimizers.Adadelta(
        learning_rate=schedule(learning_rate), rho=rho, epsilon=epsilon, **averaging(ema_momentum)
    )


def adam(
    schedule: Schedule,
    learning_rate: Rate = 0.001,
    beta_1: Decay = 0.9,
    beta_2: Decay = 0.999,
    epsilon: Epsilon = 1e-7,
    ema_momentum: Decay = 0.0,
) -> "keras.optimizers.Optimizer":
    """Adam."""
    import keras

    return keras.optimizers.Adam(
        learning_rate=schedule(learning_rate),
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        **averaging(ema_momentum),
    )


def adamw(
    schedule: Schedule,
    learning_rate: Rate = 0.001,
    weight_decay: Annotated[float, Ge(0)] = 0.004,
    beta_1: Decay = 0.9,
    beta_2: Decay = 0.999,
    epsilon: Epsilon = 1e-7,
    ema_momentum: Decay = 0.0,
) -> "keras.optimizers.Optimizer":
    """Adam with decoupled weight decay (Loshchilov and Hutter): each step also shrinks the
    weights by `weight_decay` times the learning rate, apart from the gradient's moments."""
    import keras

    return keras.optimizers.AdamW(
        learning_rate=schedule(learning_rate),
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        **averaging(ema_momentum),
    )


def rmsprop(
    schedule: Schedule,
    learning_rate: Rate = 0.001,
    rho: Decay = 0.9,
    momentum: Annotated[float, Ge(0)] = 0.0,
    epsilon: Epsilon = 1e-7,
    ema_momentum: Decay = 0.0,
) -> "keras.optimizers.Optimizer":
    """RMSprop."""
    import keras

    return keras.optimizers.RMSprop(
        learning_rate=schedule(learning_rate),
        rho=rho,
        momentum=momentum,
        epsilon=epsilon,
        **averaging(ema_momentum),
    )


def sgd(
    schedule: Schedule,
    learning_rate: Rate = 0.01,
    momentum: Annotated[float, Ge(0)] = 0.0,
    nesterov: bool = False,
    ema_momentum: Decay = 0.0,
) -> "keras.optimizers.Optimizer":
    """Stochastic gradient descent, optionally with (Nesterov) momentum."""
    import keras

    return keras.optimizers.SGD(
        learning_rate=schedule(learning_rate),
        momentum=momentum,
        nesterov=nesterov,
        **averaging(ema_momentum),
    )
