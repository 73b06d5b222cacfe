"""`hparams_search=optuna`: a Hydra sweeper running Optuna's TPE, each trial one job of the sweep.

Hydra's own Optuna sweeper pins optuna<3; this one is small and uses Optuna 4. Hydra only loads
sweepers from the `hydra_plugins` package, hence its home here.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:  # Hydra imports every plugin at start-up: Optuna (0.2 s) only when searching
    import optuna


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_exp_optuna.OptunaSweeper"
    n_trials: int = 20  # trials in all
    n_jobs: int = 1  # trials launched together (use a parallel launcher for > 1)
    seed: int = 42  # seeds the TPE sampler: the same search suggests the same trials
    params: dict[str, str] = field(default_factory=dict)  # key: choice(...) / interval(...)


ConfigStore.instance().store(
    group="hydra/sweeper", name="mnist_exp_optuna", node=OptunaSweeperConf, provider="mnist_exp"
)


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


def override(key: str, value: object) -> str:
    """A suggested value as a Hydra override; floats to 4 significant digits, for readable runs."""
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


class OptunaSweeper(Sweeper):
    """Asks Optuna for `n_jobs` trials at a time, launches them, tells it their return values."""

    def __init__(self, n_trials: int, n_jobs: int, seed: int, params: dict[str, str]) -> None:
        self.n_trials, self.n_jobs, self.seed, self.params = n_trials, n_jobs, seed, params

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> "optuna.Study":
        import optuna

        # The config's search space first, so a command-line override of the same key wins.
        lines = [*(f"{key}={value}" for key, value in self.params.items()), *arguments]
        overrides = {
            o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)
        }
        space = {key: distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
        fixed = [
            f"{key}={o.get_value_element_as_str()}"
            for key, o in overrides.items()
            if not o.is_sweep_override()
        ]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed)
        )
        for start in range(0, self.n_trials, self.n_jobs):
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - start))]
            jobs = [[*fixed, *(override(k, v) for k, v in t.params.items())] for t in trials]
            for trial, result in zip(trials, self.launcher.launch(jobs, start), strict=True):
                value = result.return_value if result.status == JobStatus.COMPLETED else None
                failed = optuna.trial.TrialState.FAIL
                study.tell(trial, value, state=None if value is not None else failed)
        return study
