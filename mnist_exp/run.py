"""One experiment: compose the config, load MNIST, build, train, evaluate and log to MLflow.

`run_experiment(overrides)` runs one in this process; `python -m mnist_exp.run` is Hydra's shell
around the same `experiment`, for single runs and for each job of a sweep.
"""

import dataclasses
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

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
from mnist_exp.config.schema import Config, validate
from mnist_exp.console import import_tensorflow
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.names import (
    BEST_VAL_ACCURACY,
    EPOCHS_RUN,
    TEST_ACCURACY,
    TRAIN_SECONDS,
    WALL_SECONDS,
)
from mnist_exp.sweeps import sweep

if TYPE_CHECKING:
    import keras
    import numpy as np

    from mnist_exp.data import Dataset
    from mnist_exp.tracking.read import Source
    from mnist_exp.train import Recipe


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
        return experiment(cfg, job_of(hydra_node, output_dir, in_sweep=False), callbacks)


class Stopwatch:
    """Seconds spent in each phase of a run, in order: `lap(name)` ends the phase `name`."""

    def __init__(self):
        self.start = self.mark = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name], self.mark = now - self.mark, now


def experiment(
    cfg: DictConfig, job: Job, callbacks: Sequence["keras.callbacks.Callback"] = ()
) -> Result:
    """One run, told in keras.io's order: data, model, compile and fit, evaluate, log."""
    clock = Stopwatch()
    config = validate(cfg)
    check_writable("hydra.run.dir", job.output_dir)
    import_tensorflow()  # heavy imports only now, so `--help` and `--cfg job` answer at once
    from mnist_exp.config.build import build
    from mnist_exp.data import digest
    from mnist_exp.data.scoring import scoring_sets
    from mnist_exp.evaluate import evaluate
    from mnist_exp.sweeps import trial as search_trial
    from mnist_exp.tracking import datasets, log, read, registry, store
    from mnist_exp.train import check_resumable, seed_everything, set_precision, start_from, train

    tracked = store.use_store(config.mlflow, config.paths.root)  # unreachable: fails now, not later
    if not config.resume and (requeued := read.requeued_run(tracked)):
        print(f"SLURM requeued this job: it resumes run {requeued} where it stopped.")
        cfg.resume = requeued
        config = validate(cfg)
    source = None
    if config.init_from:
        source = (
            read.resumed_source(config.resume, tracked)
            if config.resume
            else read.init_source(config.init_from, tracked)
        )
        cfg, job = take_source(cfg, job, source)
        config = validate(cfg)
    work_dir = read.resume_dir(config.resume, job.output_dir, tracked)
    if config.resume:
        check_resumable(work_dir)  # before the run is reopened: it stays as it was
    seed_everything(config.seed, config.deterministic)  # also clears what earlier jobs left
    precision = set_precision(config.precision)  # before the model is built
    clock.lap("start-up")

    data = load_data(config)
    extra = scoring_sets(config.evaluate.extra, data.classes)
    if config.skip_finished:  # the same config on the same data (a folder may have changed)
        digests = {**data.digests(), **{n: digest(s.images, s.labels) for n, s in extra.items()}}
        if twin := read.finished_twin(cfg, digests, tracked):
            print(f"Skipped: this exact config already finished as run {twin.info.run_id}.")
            return reused(twin)
    clock.lap("data")
    model = build("model", config.model, input_shape=data.input_shape, num_classes=data.num_classes)
    if source and not config.resume:  # a resumed run has its own weights
        weights = read.load_source(source, tracked)
        start_from(model, weights, source.pinned, data.classes, source.classes)
    recipe = build_recipe(config, len(data.x_train), work_dir)
    trial = search_trial.job_trial(config.epochs)  # None unless an Optuna search launched this job
    reporter = search_trial.ReportToTrial(trial) if trial else None
    params = {"precision_used": precision, "model_params": model.count_params()}
    params["steps_per_execution_used"] = recipe.steps_per_execution
    params["split_digest"] = data.split_digest
    tags = search_trial.trial_tags(trial) if trial else {}
    parent = sweep.parent_run_id(job)
    with log.start_run(
        cfg, job, work_dir, tracked, resume=config.resume, parent=parent, params=params, tags=tags
    ) as run:
        if not config.resume:
            datasets.log_datasets(data, extra)
            log.log_model_card(model)
        clock.lap("build and log the model card")
        reporters = [log.MlflowMetrics(), *([reporter] if reporter else []), *callbacks]
        history, best = train(model, data, recipe, config, work_dir, reporters)
        clock.lap("training")
        if reporter and reporter.pruned_at:
            log.log_pruned(reporter.pruned_at)
        report = evaluate(model, data, extra)
        clock.lap("evaluation")
        log.log_evaluation(history, best, report, data, tracked)
        clock.lap("figures and reports")
        registry.log_model(
            model, work_dir, job, report.val.accuracy, config.mlflow, data.name, tracked
        )
        clock.lap("model logging and registration")
        wall_seconds = time.perf_counter() - clock.start
        log.log_wall_seconds(wall_seconds)
        log.describe_run(job)
    scored = "".join(f"{name} {split.accuracy:.4f} | " for name, split in report.extra.items())
    print(
        f"\nval accuracy {report.val.accuracy:.4f} | test accuracy {report.test.accuracy:.4f} | "
        f"{scored}"
        f"{len(history['loss'])} epochs (best {best + 1}) | run {run.info.run_id}\n"
        f"Browse runs: {store.ui_command(tracked)}, then {store.run_page(tracked, run.info)}"
    )
    return Result(
        run_id=run.info.run_id,
        val_accuracy=report.val.accuracy,
        test_accuracy=report.test.accuracy,
        epochs=len(history["loss"]),
        seconds=float(sum(history["epoch_seconds"])),
        wall_seconds=wall_seconds,
        output_dir=work_dir,
        pruned=bool(reporter and reporter.pruned_at),
        phases=clock.phases,
    )


def take_source(cfg: DictConfig, job: Job, source: "Source") -> tuple[DictConfig, Job]:
    """Pin `init_from` to the one version it resolved to (so `skip_finished` tells two champions
    apart), and train the source's architecture, with the command's `model.*` knobs, unless the
    command chose another (`model=`)."""
    cfg.init_from = source.pinned
    keys = [o.lstrip("+~").partition("=")[0] for o in job.overrides]
    if source.model is None or "model" in keys:
        return cfg, job
    model = OmegaConf.create(source.model)
    for knob in (key.removeprefix("model.") for key in keys if key.startswith("model.")):
        OmegaConf.update(model, knob, OmegaConf.select(cfg.model, knob), merge=False)
    if OmegaConf.to_container(model) == OmegaConf.to_container(cfg.model):
        return cfg, job
    cfg.model = model
    choice = source.choice or model["_target_"].rpartition(".")[2]
    print(f"init_from: {source.pinned} is a {choice}, so this run trains a {choice}.")
    return cfg, dataclasses.replace(job, choices={**job.choices, "model": choice})


def load_data(config: Config) -> "Dataset":
    """The dataset group's images, divided by the split group."""
    from mnist_exp.config.build import build

    def split(labels: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
        return build("split", config.split, labels=labels)

    return build("dataset", config.dataset, split=split)


def build_recipe(config: Config, train_images: int, work_dir: Path) -> "Recipe":
    """The optimizer (its learning rate from the schedule), the callbacks and the augmentation,
    each from its group."""
    from mnist_exp.config.build import build
    from mnist_exp.train import Recipe, steps_per_epoch, steps_per_execution

    steps = steps_per_epoch(train_images, config.batch_size)
    schedule = build(
        "schedule",
        config.schedule,
        learning_rate=config.optimizer["learning_rate"],
        epochs=config.epochs,
        steps_per_epoch=steps,
    )
    return Recipe(
        optimizer=build("optimizer", config.optimizer, learning_rate=schedule),
        callbacks={
            name: build(f"callbacks.{name}", node, work_dir=work_dir)
            for name, node in config.callbacks.items()
        },
        transform=build("augment", config.augment) if config.augment else None,
        steps_per_epoch=steps,
        steps_per_execution=steps_per_execution(steps, config.steps_per_execution),
    )


def reused(run) -> Result:
    """The Result of an earlier FINISHED run, read back from MLflow."""
    metrics = run.data.metrics
    return Result(
        run_id=run.info.run_id,
        val_accuracy=metrics[BEST_VAL_ACCURACY],
        test_accuracy=metrics[TEST_ACCURACY],
        epochs=int(metrics[EPOCHS_RUN]),
        seconds=metrics[TRAIN_SECONDS],
        wall_seconds=metrics.get(WALL_SECONDS),  # None: logged before it was measured
        output_dir=Path(run.data.tags["output_dir"]) if "output_dir" in run.data.tags else None,
        reused=True,
    )


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
        return sweep.run_job(lambda: experiment(cfg, job), job)
    try:
        return experiment(cfg, job).val_accuracy
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
