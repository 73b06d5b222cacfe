"""The write side: a run's lifecycle (start, fail, interrupt) and everything it logs but its
model (`registry`): its config, its data sets as MLflow dataset inputs, per-epoch metrics, the
evaluation's reports and figures."""

import dataclasses
import json
import os
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import OmegaConf

from mnist_exp.config.job import Job
from mnist_exp.config.schema import Config, flatten
from mnist_exp.data import Dataset, ScoringSet, digest
from mnist_exp.errors import MnistExpError, disk_full
from mnist_exp.evaluate import Report, SplitReport
from mnist_exp.figures import (
    architecture_figure,
    confusion_figure,
    curves_figure,
    misclassified_figure,
)
from mnist_exp.machine import description
from mnist_exp.names import (
    BEST_EPOCH,
    BEST_FILE,
    BEST_TRAIN_ACCURACY,
    CLASS_BALANCE,
    CLASSES,
    CONFUSION_CSV,
    DATASET,
    EPOCHS_RUN,
    LAST_FILE,
    MACHINE,
    PREDICTIONS,
    REPORT_TEXT,
    RESUME_ARTIFACTS,
    SPLIT_METRICS,
    STATE_FILE,
    TRAIN_SECONDS,
    VALIDATED_ON,
    WALL_SECONDS,
    extra_metrics,
    part_metric,
)
from mnist_exp.tracking import notes
from mnist_exp.tracking.liveness import process_tags, start_heartbeat
from mnist_exp.tracking.read import config_hash
from mnist_exp.tracking.store import Store, abandon_run, server_gone


def job_tags(job: Job) -> dict[str, str]:
    """A job's overrides, group choices and output dir; in a sweep, its directory and number."""
    tags = {"overrides": " ".join(job.overrides), "output_dir": str(job.output_dir)}
    tags.update({f"choice.{group}": option for group, option in job.choices.items()})
    if job.sweep_dir is not None:
        tags.update(sweep_dir=job.sweep_dir, job_num=str(job.number))
    return tags


RUN_NAME_LENGTH = 250  # MLflow's runs.name column: PostgreSQL refuses longer names, SQLite not


def run_name(config: Config, job: Job) -> str:
    """What ran: `cnn_bn adam lr=0.001`, after the experiment's name if one was chosen; a sweep's
    job is named by its overrides (cut to RUN_NAME_LENGTH; the `overrides` tag holds them all)."""
    if job.sweep_dir is not None:
        name = " ".join(job.overrides) or "defaults"
        return name if len(name) <= RUN_NAME_LENGTH else f"{name[: RUN_NAME_LENGTH - 3]}..."
    learning_rate = config.optimizer.get("learning_rate")
    words = [
        f"{job.choices['experiment']}:" if "experiment" in job.choices else "",
        job.choices.get("model", "model"),
        job.choices.get("optimizer", "optimizer"),
        f"lr={learning_rate:g}" if isinstance(learning_rate, int | float) else "",
    ]
    return " ".join(word for word in words if word)


@contextmanager
def start_run(
    config: Config,
    job: Job,
    work_dir: Path,
    store: Store,
    params: dict[str, object],
    tags: Mapping[str, str] | None = None,
    parent: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run in `store` (which `use_store` made MLflow's process-wide one; a child of
    `parent` in a sweep) with the config's and these params and tags, or reopen the run
    `config.resume` names. It ends FAILED with the reason, or KILLED on Ctrl-C/SIGTERM with the
    state to resume logged."""
    resume = config.resume
    name = None if resume else run_name(config, job)
    mlflow.set_system_metrics_sampling_interval(config.mlflow.system_metrics_interval)
    system_metrics = config.mlflow.system_metrics
    with mlflow.start_run(run_id=resume, run_name=name, log_system_metrics=system_metrics) as run:
        heartbeat = None
        try:
            mlflow.set_tags(process_tags())  # this process owns it now, a resumed run included
            mlflow.set_tags({f"{MACHINE}.{key}": value for key, value in description().items()})
            if resume:  # perhaps elsewhere: where its state lives now
                mlflow.set_tag("output_dir", str(work_dir))
            heartbeat = start_heartbeat(store, run.info.run_id, config.mlflow.heartbeat_seconds)
            if resume is None:
                log_config(config, job, parent, params, tags or {})
            yield run
        except BaseException as raised:
            end_unfinished(raised, run, job, work_dir, store)
        finally:
            if heartbeat:
                heartbeat.set()


def log_config(
    config: Config, job: Job, parent: str | None, params: dict[str, object], tags: Mapping
) -> None:
    """A new run's config as params and `config.yaml`, with the job's tags and these."""
    mlflow.set_tags({**job_tags(job), "config_hash": config_hash(config), **tags})
    if parent:
        mlflow.set_tag("mlflow.parentRunId", parent)
    tree = dataclasses.asdict(config)
    mlflow.log_params({**flatten(tree), **params})
    mlflow.log_text(OmegaConf.to_yaml(tree), "config.yaml")
    describe_run(job)


def end_unfinished(
    raised: BaseException, run: mlflow.ActiveRun, job: Job, work_dir: Path, store: Store
) -> None:
    """End a run that raised: FAILED with the reason, or KILLED on Ctrl-C/SIGTERM with what it
    needs to resume logged; a tracking server that is gone leaves it for `resume=`. Re-raises."""
    if isinstance(raised, Exception) and server_gone(store.uri):
        abandon_run()
        raise MnistExpError(
            f"The tracking server {store.uri} stopped answering; the "
            f"state of the last finished epoch is in {work_dir}. Once the server is back: "
            f"{notes.command(job.overrides, resume=run.info.run_id)}"
        ) from None
    error = disk_full(raised, work_dir) or raised
    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    with second_interrupt_exits(status == "KILLED"):
        if status == "KILLED":
            save_interrupted(run.info.run_id, job, work_dir)
        mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
        describe_run(job, ending=f"Ended {status}: {type(error).__name__}: {error}"[:1000])
        mlflow.end_run(status)
    if error is raised:
        raise raised
    raise error from None


def save_interrupted(run_id: str, job: Job, work_dir: Path) -> None:
    """An interrupted run logs its best checkpoint and the state to resume it on any host, and
    says how to resume it."""
    resumable = ((name, RESUME_ARTIFACTS) for name in (STATE_FILE, LAST_FILE, BEST_FILE))
    for name, folder in ((BEST_FILE, "checkpoint"), *resumable):
        if (work_dir / name).is_file():
            mlflow.log_artifact(str(work_dir / name), folder)
    again = notes.command(job.overrides, resume=run_id)
    print(
        f"\nInterrupted: run {run_id} saved up to its last finished epoch. Resume with:\n  {again}",
        file=sys.stderr,
    )


@contextmanager
def second_interrupt_exits(interrupted: bool) -> Iterator[None]:
    """While an interrupted run saves its state, a second Ctrl-C exits at once; afterwards the
    caller's own handler is back (a notebook's, say)."""
    if not interrupted or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def describe_run(job: Job, ending: str | None = None) -> None:
    """The run's description in the UI (its note), written from what it has logged so far."""
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    mlflow.set_tag("mlflow.note.content", notes.run_note(run, job.overrides, ending))


def log_inputs(model: keras.Model, data: Dataset, extra: dict[str, ScoringSet]) -> None:
    """What a new run starts with: its data sets and its model's card."""
    log_datasets(data, extra)
    log_model_card(model)


def log_input(images: np.ndarray, labels: np.ndarray, source: str, name: str, context: str):
    """One set as a dataset input of the run (UI: Datasets), digested by its exact data."""
    import mlflow.data

    with warnings.catch_warnings():  # MLflow registers its local-file source twice, and says so
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(
            images, targets=labels, source=source, name=name, digest=digest(images, labels)
        )
    try:
        mlflow.log_input(dataset, context=context)
    except mlflow.MlflowException as error:
        # MLflow's store looks the dataset up, then inserts it: a run that loses that race to
        # another starting at once (a sweep's jobs on a shared server) finds it the second time.
        if "unique constraint" not in str(error).lower():
            raise
        mlflow.log_input(dataset, context=context)


def log_datasets(data: Dataset, extra: dict[str, ScoringSet]) -> None:
    """The splits and the `evaluate.extra` sets as the run's dataset inputs; the classes, and
    the checksums of a set not known in advance (so that it is identified)."""
    for context, (images, labels) in data.splits().items():
        log_input(images, labels, Path(data.source).as_uri(), f"{data.name}-{context}", context)
    for name, scored in extra.items():
        log_input(scored.images, scored.labels, Path(scored.source).as_uri(), name, "extra")
    validated_on = digest(data.x_val, data.y_val)  # what the registry compares runs on
    mlflow.set_tags({DATASET: data.name, CLASS_BALANCE: class_balance(data)})
    mlflow.set_tags({VALIDATED_ON: validated_on, CLASSES: json.dumps(list(data.classes))})
    mlflow.log_dict({"classes": list(data.classes)}, "dataset/classes.json")
    if data.checksums:  # in the form dataset.checksums takes, to pin the set
        mlflow.log_dict(data.checksums, "dataset/checksums.yaml")
    if data.unreadable:
        mlflow.log_text("\n".join(data.unreadable) + "\n", "dataset/unreadable.txt")


def class_balance(data: Dataset) -> str:
    """How many training images each class has, and how uneven that is: `10 classes, 4,506 to
    5,444 training images each`, `... (the largest 3.0x the smallest)`, `no images of: 4, 9`."""
    counts = data.y_train.sum(axis=0).astype(int)
    text = f"{len(counts)} classes, {counts.min():,} to {counts.max():,} training images each"
    if missing := [name for name, n in zip(data.classes, counts, strict=True) if n == 0]:
        return f"{text}; no training images of: {', '.join(missing)}"
    if counts.max() > 1.5 * counts.min():
        text += f" (imbalanced: the largest {counts.max() / counts.min():.1f}x the smallest)"
    return text


def log_model_card(model: keras.Model) -> None:
    """The model's layer table with parameter counts, and a figure of where its parameters are."""
    lines = []
    model.summary(print_fn=lambda text, line_break=True: lines.append(text))
    mlflow.log_text("\n".join(lines) + "\n", "model_summary.txt")
    mlflow.log_figure(architecture_figure(model), "architecture.png")


class MlflowMetrics(keras.callbacks.Callback):
    """Logs each epoch's metrics (loss, accuracy, val_*, epoch_seconds) with the epoch as step."""

    def on_epoch_end(self, epoch, logs=None):
        mlflow.log_metrics({key: float(value) for key, value in logs.items()}, step=epoch + 1)


def log_split(
    split: SplitReport,
    name: str,
    metrics: tuple[str, str],
    classes: tuple[str, ...],
    store: Store,
    run_id: str,
) -> None:
    """A split's loss and accuracy (as `metrics` name them), confusion matrix and report, under
    `name/`, in the run `run_id` (the active one, or one that stays as it was: FINISHED, say)."""
    client = store.client
    loss, accuracy = metrics
    client.log_metric(run_id, loss, split.loss)
    client.log_metric(run_id, accuracy, split.accuracy)
    for part, share in split.parts.items():
        client.log_metric(run_id, part_metric(accuracy, part), share)
    client.log_figure(
        run_id,
        confusion_figure(split.confusion, f"{name} confusion matrix", classes),
        f"{name}/confusion_matrix.png",
    )
    header = "true\\predicted," + ",".join(classes)
    rows = [
        f"{c}," + ",".join(map(str, row)) for c, row in zip(classes, split.confusion, strict=True)
    ]
    client.log_text(run_id, "\n".join([header, *rows]) + "\n", f"{name}/{CONFUSION_CSV}")
    client.log_text(run_id, split.report_text, f"{name}/{REPORT_TEXT}")
    report = json.dumps(split.report_dict, indent=2)
    client.log_text(run_id, report, f"{name}/classification_report.json")


def log_evaluation(
    history: dict[str, list[float]], best: int, report: Report, data: Dataset, store: Store
) -> None:
    """Final metrics of the best epoch, reports and figures, in the active run of `store`."""
    run_id = mlflow.active_run().info.run_id
    mlflow.log_metrics(
        {
            EPOCHS_RUN: len(history["loss"]),
            BEST_EPOCH: best + 1,
            BEST_TRAIN_ACCURACY: history["accuracy"][best],
            TRAIN_SECONDS: float(np.sum(history["epoch_seconds"])),
        }
    )
    for name in SPLIT_METRICS:
        log_split(getattr(report, name), name, SPLIT_METRICS[name], data.classes, store, run_id)
    for name, split in report.extra.items():
        log_split(split, f"extra/{name}", extra_metrics(name), data.classes, store, run_id)
    mlflow.log_figure(curves_figure(history), "training_curves.png")
    test = report.test
    wrong = misclassified_figure(data.x_test, test.labels, test.predicted, data.classes)
    mlflow.log_figure(wrong, "test/misclassified.png")
    log_predictions(report.test)


def log_last(job: Job, wall_seconds: float) -> None:
    """A run's last records: the job's wall time, from its start to the end of its logging (a
    sweep job's cost), and the run's description from all it logged."""
    mlflow.log_metric(WALL_SECONDS, wall_seconds)
    describe_run(job)


def log_pruned(epoch: int) -> None:
    """Mark a search trial that its pruner stopped; its metrics are those of its epochs so far."""
    mlflow.set_tag("pruned", f"after epoch {epoch}: its search's pruner stopped it")


def log_predictions(split: SplitReport) -> None:
    """Every test digit's label, predicted digit and probabilities (float16), in test-set order."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(PREDICTIONS).name
        np.savez_compressed(
            path,
            labels=split.labels.astype(np.uint8),
            predicted=split.predicted.astype(np.uint8),
            probabilities=split.probabilities.astype(np.float16),
        )
        mlflow.log_artifact(str(path), str(Path(PREDICTIONS).parent))
