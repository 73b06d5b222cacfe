"""One run, top to bottom: where it starts from, data, model, training, evaluation, logging.

`experiment` knows nothing of sweeps or searches: a caller (the sweep layer, a notebook) hands in
what it adds, as Keras callbacks, run tags and a parent run. Imported once TensorFlow may load.
"""

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.build import build
from mnist_exp.config.job import Job, Result
from mnist_exp.config.schema import Config, validate, validate_store
from mnist_exp.data import Dataset, ScoringSet, digest
from mnist_exp.evaluate import Report, evaluate
from mnist_exp.groups.dataset import scoring_sets
from mnist_exp.names import (
    BEST_VAL_ACCURACY,
    EPOCHS_RUN,
    TEST_ACCURACY,
    TRAIN_SECONDS,
    WALL_SECONDS,
)
from mnist_exp.tracking import log, read, registry
from mnist_exp.tracking.read import Source
from mnist_exp.tracking.store import Store, run_page, ui_command, use_store
from mnist_exp.train import (
    Training,
    check_resumable,
    seed_everything,
    set_precision,
    start_from,
    steps_per_epoch,
    steps_per_execution,
    train,
)


def experiment(
    cfg: DictConfig,
    job: Job,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    tags: Mapping[str, str] | None = None,
    parent: str | None = None,
) -> Result:
    """One run, in DESIGN.md's order; `callbacks` hear every epoch, `tags` and `parent` mark the
    run (a search's trial, a sweep's parent run)."""
    clock = Stopwatch()
    store = use_store(*validate_store(cfg))  # an unreachable store fails now, not later
    config, job, source = resolve_start(cfg, job, store)  # the one validated config from here on
    work_dir = working_directory(config, job, store)
    precision = seed_and_precision(config)
    clock.lap("start-up")
    data, extra = load_sets(config)
    if config.skip_finished and (twin := finished_twin(config, data, extra, store)):
        return reused(twin)
    clock.lap("data")
    model = build_model(config, data, source, store)
    training = build_training(config, len(data.x_train), work_dir)
    params = run_params(precision, model, training, data)
    with log.start_run(config, job, work_dir, store, params, tags, parent) as run:
        if not config.resume:  # a resumed run logged them when it began
            log.log_inputs(model, data, extra)
        clock.lap("build and log the model card")
        callbacks = [log.MlflowMetrics(), *callbacks]
        history, best = train(model, data, training, config, work_dir, callbacks)
        clock.lap("training")
        report = evaluate(model, data, extra)
        clock.lap("evaluation")
        log.log_evaluation(history, best, report, data, store)
        clock.lap("figures and reports")
        registry.log_model(model, work_dir, job, config.mlflow, data.name, store)
        clock.lap("model logging and registration")
        log.log_last(job, clock.stop())
    announce(report, history, best, run, store)
    return result(run, report, history, work_dir, clock)


class Stopwatch:
    """Seconds spent in each phase of a run, in order: `lap(name)` ends the phase `name`."""

    def __init__(self):
        self.start = self.mark = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name], self.mark = now - self.mark, now

    def stop(self) -> float:
        """The seconds from the start to now, kept as `seconds`."""
        self.seconds = time.perf_counter() - self.start
        return self.seconds


def resolve_start(cfg: DictConfig, job: Job, store: Store) -> tuple[Config, Job, Source | None]:
    """What the run starts from, put into its config before it is validated: a SLURM requeue
    resumes the run the job began, `init_from` is pinned to the one model it names now (its
    architecture trained unless the command chose one). The caller's `cfg` stays as it was."""
    cfg = copy.deepcopy(cfg)
    if not cfg.resume and (requeued := read.requeued_run(store)):
        print(f"SLURM requeued this job: it resumes run {requeued} where it stopped.")
        cfg.resume = requeued
    source = None
    if cfg.init_from:
        source = (
            read.resumed_source(cfg.resume, store)
            if cfg.resume
            else read.init_source(cfg.init_from, store)
        )
        job = take_source(cfg, job, source)
    return validate(cfg), job, source


def take_source(cfg: DictConfig, job: Job, source: Source) -> Job:
    """Pin `cfg.init_from` to the one version it resolved to (so `skip_finished` tells two
    champions apart), and train the source's architecture, with the command's `model.*` knobs,
    unless the command chose another (`model=`); the Job with the model chosen."""
    cfg.init_from = source.pinned
    keys = [o.lstrip("+~").partition("=")[0] for o in job.overrides]
    if source.model is None or "model" in keys:
        return job
    model = OmegaConf.create(source.model)
    for knob in (key.removeprefix("model.") for key in keys if key.startswith("model.")):
        OmegaConf.update(model, knob, OmegaConf.select(cfg.model, knob), merge=False)
    if OmegaConf.to_container(model) == OmegaConf.to_container(cfg.model):
        return job
    cfg.model = model
    choice = source.choice or model["_target_"].rpartition(".")[2]
    print(f"init_from: {source.pinned} is a {choice}, so this run trains a {choice}.")
    return dataclasses.replace(job, choices={**job.choices, "model": choice})


def working_directory(config: Config, job: Job, store: Store) -> Path:
    """Where the run writes its state: its own output directory, or a resumed run's (checked
    before the run is reopened, so that a state that cannot be read leaves it as it was)."""
    if not config.resume:
        return job.output_dir
    work_dir = read.resume_dir(config.resume, job.output_dir, store)
    check_resumable(work_dir)
    return work_dir


def seed_and_precision(config: Config) -> str:
    """Seed everything (which also clears what earlier jobs in this process left) and set the
    precision, before the model is built; the precision used."""
    seed_everything(config.seed, config.deterministic)
    return set_precision(config.precision)


def load_sets(config: Config) -> tuple[Dataset, dict[str, ScoringSet]]:
    """The data the run trains, validates and tests on, and the `evaluate.extra` sets it is also
    scored on, labelled over the data's classes."""
    data = load_data(config)
    return data, scoring_sets(config.evaluate.extra, data.classes)


def load_data(config: Config) -> Dataset:
    """The dataset group's images, divided by the split group."""

    def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return build("split", config.split, labels=labels)

    return build("dataset", config.dataset, split=split)


def finished_twin(config: Config, data: Dataset, extra: dict[str, ScoringSet], store: Store):
    """The FINISHED run of this config on this very data (a folder may have changed), if any."""
    digests = {**data.digests(), **{n: digest(s.images, s.labels) for n, s in extra.items()}}
    if twin := read.finished_twin(config, digests, store):
        print(f"Skipped: this exact config already finished as run {twin.info.run_id}.")
    return twin


def build_model(config: Config, data: Dataset, source: Source | None, store: Store) -> keras.Model:
    """The model group's architecture for the data, with `init_from`'s weights (a resumed run
    has its own)."""
    shape, classes = data.input_shape, data.num_classes
    model = build("model", config.model, input_shape=shape, num_classes=classes)
    if source and not config.resume:
        weights = read.load_source(source, store)
        start_from(model, weights, source.pinned, data.classes, source.classes)
    return model


def build_training(config: Config, train_images: int, work_dir: Path) -> Training:
    """The optimizer (its learning rate through the schedule), the callbacks and the
    augmentation, each from its group."""
    steps = steps_per_epoch(train_images, config.batch_size)

    def schedule(learning_rate: float):
        return build(
            "schedule",
            config.schedule,
            learning_rate=learning_rate,
            epochs=config.epochs,
            steps_per_epoch=steps,
        )

    return Training(
        optimizer=build("optimizer", config.optimizer, schedule=schedule),
        callbacks={
            name: build(f"callbacks.{name}", node, work_dir=work_dir)
            for name, node in config.callbacks.items()
        },
        transform=build("augment", config.augment) if config.augment else None,
        steps_per_epoch=steps,
        steps_per_execution=steps_per_execution(steps, config.steps_per_execution),
    )


def run_params(precision: str, model: keras.Model, training: Training, data: Dataset) -> dict:
    """What the run chose for itself, logged beside the config's params."""
    return {
        "precision_used": precision,
        "model_params": model.count_params(),
        "steps_per_execution_used": training.steps_per_execution,
        "split_digest": data.split_digest,
    }


def announce(report: Report, history: dict, best: int, run, store: Store) -> None:
    """The run's figures in one line, and where to browse it."""
    scored = "".join(f"{name} {split.accuracy:.4f} | " for name, split in report.extra.items())
    print(
        f"\nval accuracy {report.val.accuracy:.4f} | test accuracy {report.test.accuracy:.4f} | "
        f"{scored}"
        f"{len(history['loss'])} epochs (best {best + 1}) | run {run.info.run_id}\n"
        f"Browse runs: {ui_command(store)}, then {run_page(store, run.info)}"
    )


def result(run, report: Report, history: dict, work_dir: Path, clock: Stopwatch) -> Result:
    return Result(
        run_id=run.info.run_id,
        val_accuracy=report.val.accuracy,
        test_accuracy=report.test.accuracy,
        epochs=len(history["loss"]),
        seconds=float(sum(history["epoch_seconds"])),
        wall_seconds=clock.seconds,
        output_dir=work_dir,
        phases=clock.phases,
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
