"""A search space from Hydra's sweep grammar: choice/range/interval overrides as Optuna
distributions, a trial's values as overrides, and a study's name from what it searches."""

import hashlib
from decimal import Decimal
from typing import TYPE_CHECKING

from hydra.core.override_parser.types import Glob, IntervalSweep, Override, RangeSweep, Transformer

if TYPE_CHECKING:  # Hydra imports every plugin at start-up: Optuna (0.2 s) only when searching
    import optuna


def distribution(override: Override) -> "optuna.distributions.BaseDistribution":
    """choice(a, b) -> categorical; range(start, stop, step) -> the values Hydra enumerates, stop
    excluded; [int(]interval(lo, hi)[)], log-scaled if tagged log -> a uniform distribution."""
    import optuna

    value = override.value()
    if override.is_choice_sweep() and not isinstance(value, Glob):
        return optuna.distributions.CategoricalDistribution(
            list(override.sweep_iterator(transformer=Transformer.encode))
        )
    if override.is_range_sweep() and isinstance(value, RangeSweep):
        return range_distribution(override, value)
    if override.is_interval_sweep() and isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(value.start, value.end, log=log)
        return optuna.distributions.FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{override.input_line}: use choice(...), range(...) or interval(...)")


def range_distribution(
    override: Override, sweep: RangeSweep
) -> "optuna.distributions.BaseDistribution":
    """The evenly spaced values of a range, as many as Hydra yields, each start + k * step written
    in decimal (0.3, not 0.30000000000000004)."""
    import optuna

    count = len(list(override.sweep_iterator())) if sweep.step > 0 else 0
    if count == 0:
        raise ValueError(
            f"{override.input_line}: the range has no increasing values; use "
            "range(start, stop, step) with start < stop and step > 0 (stop is excluded)"
        )
    if isinstance(sweep.range(), range):  # Hydra enumerates ints only if all three are ints
        high = sweep.start + (count - 1) * sweep.step
        return optuna.distributions.IntDistribution(sweep.start, high, step=sweep.step)
    start, step = Decimal(str(sweep.start)), Decimal(str(sweep.step))
    high = float(start + (count - 1) * step)
    return optuna.distributions.FloatDistribution(float(start), high, step=float(step))


def suggest(trial: "optuna.Trial", name: str, found: "optuna.distributions.BaseDistribution"):
    """The trial's value of one dimension, through Optuna's public suggest API."""
    import optuna

    if isinstance(found, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, found.choices)
    suggest_number = (
        trial.suggest_int
        if isinstance(found, optuna.distributions.IntDistribution)
        else trial.suggest_float
    )
    return suggest_number(name, found.low, found.high, step=found.step, log=found.log)


def override(key: str, value: object) -> str:
    """A suggested value as a Hydra override; floats to 4 significant digits, for readable runs."""
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def study_name(model: str, space: dict, fixed: list[str], pruner: str) -> str:
    """The default name: the architecture and a digest of the search as parsed (each dimension's
    distribution, the fixed overrides, the pruner; not where runs are logged), so rerunning the
    same search finds the same study however its command was spelled."""
    ignored = ("mlflow.", "skip_finished", "model=")  # the model is in the name already
    kept = [line for line in fixed if not line.lstrip("+~").startswith(ignored)]
    parts = [*(f"{key}~{space[key]!r}" for key in sorted(space)), *sorted(kept), pruner]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]
    return f"{model}-{digest}"
