"""The shells around one run (`mnist_exp.experiment`): `run_experiment(overrides)` in this
process, and `python -m mnist_exp.run`, Hydra's, for single runs and for each job of a sweep
(which the sweep layer runs, handing the run what the sweep adds).
"""

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_exp.config.compose import (
    CONF_DIR,
    check_overrides,
    check_writable,
    claim_dir,
    compose_config,
    home_expanded,
    job_of,
)
from mnist_exp.config.describe import describe
from mnist_exp.config.job import Job, Result
from mnist_exp.config.schema import validate
from mnist_exp.console import import_tensorflow
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.sweeps import sweep

if TYPE_CHECKING:
    import keras


def run_experiment(
    overrides: Sequence[str] = (), callbacks: Sequence["keras.callbacks.Callback"] = ()
) -> Result:
    """Run one experiment in this process, exactly as `python -m mnist_exp.run *overrides`, without
    Hydra's runtime; `callbacks` (Keras callbacks) hear every epoch too. A user's mistake raises a
    MnistExpError carrying the CLI's one-line message."""
    cfg, hydra_node = compose_config(overrides)
    output_dir = Path(hydra_node.run.dir)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        validate(cfg)  # before a directory is made for it
        # Hydra's ${now:} is fixed for the life of a process: each call claims its own directory.
        output_dir = claim_dir(output_dir)
    from mnist_exp.tracking.store import global_tracking_uri

    with global_tracking_uri():  # the caller's MLflow URI (and $MLFLOW_TRACKING_URI) kept
        return run(cfg, job_of(hydra_node, output_dir, in_sweep=False), callbacks=callbacks)


def run(cfg: DictConfig, job: Job, **hooks: Any) -> Result:
    """`experiment` (`hooks`: its callbacks, tags and parent run), imported only now, with
    TensorFlow, so that `--help` and `--cfg job` answer at once."""
    check_writable("hydra.run.dir", job.output_dir)
    import_tensorflow()
    from mnist_exp.experiment import experiment

    return experiment(cfg, job, **hooks)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task, one run or one job of a sweep; returns the best validation accuracy."""
    hydra_node = HydraConfig.get()
    in_sweep = hydra_node.mode == RunMode.MULTIRUN
    job = job_of(hydra_node, hydra_node.runtime.output_dir, in_sweep)
    # Ctrl-C and SIGTERM stop cleanly, even where a parent shell ignored SIGINT (nohup, `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if in_sweep:
        return sweep.run_job(lambda **hooks: run(cfg, job, **hooks), job, cfg.epochs)
    try:
        return run(cfg, job).val_accuracy
    except MnistExpError as error:
        exit_with(error)
    except KeyboardInterrupt:  # the run ended KILLED and said how to resume it
        raise SystemExit(130) from None


def cfg_job_overrides(arguments: list[str]) -> list[str] | None:
    """The overrides of a `--cfg job [--resolve]` call (no other flags), else None."""
    rest = [a for a in arguments if a != "--resolve"]
    for flag in ("--cfg", "-c"):
        if flag in rest and rest[rest.index(flag) + 1 : rest.index(flag) + 2] == ["job"]:
            rest = rest[: rest.index(flag)] + rest[rest.index(flag) + 2 :]
            return None if any(a.startswith("-") for a in rest) else rest
    return None


def cli() -> None:
    """`python -m mnist_exp.run`: a config mistake is one line and exit 2 before anything starts
    (in a sweep, for every value swept); `--cfg job` shows each knob with its comment."""
    arguments = sys.argv[1:]
    flags = {a for a in arguments if a.startswith("-")}
    try:
        if (overrides := cfg_job_overrides(arguments)) is not None:
            print(describe(overrides, resolve="--resolve" in arguments), end="")
            return
        if flags <= {"-m", "--multirun"}:  # other flags (--help, --info, ...) are Hydra's
            check_overrides([a for a in arguments if a not in flags], multirun=bool(flags))
    except MnistExpError as error:
        exit_with(error)
    sys.argv[1:] = home_expanded(arguments)  # what Hydra's own parser reads
    main()


if __name__ == "__main__":
    cli()
