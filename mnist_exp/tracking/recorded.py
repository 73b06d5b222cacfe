"""Runs as measurements: finished runs read back with their final figures, the machine they ran on
and the day they began, as a results record keeps them; a measurement (the bench's table) logged
as a run of its own."""

import datetime
from collections.abc import Sequence

import mlflow
from mlflow.exceptions import MlflowException

from mnist_exp.errors import MnistExpError
from mnist_exp.names import (
    BEST_EPOCH,
    BEST_TRAIN_ACCURACY,
    BEST_VAL_ACCURACY,
    BEST_VAL_LOSS,
    EPOCHS_RUN,
    MACHINE,
    TEST_ACCURACY,
    TEST_LOSS,
    TRAIN_ACCURACY,
    TRAIN_SECONDS,
    WALL_SECONDS,
)
from mnist_exp.tracking import notes
from mnist_exp.tracking.store import Store, active_run

# What a record keeps of a finished run: its final figures (the per-epoch series stay in MLflow).
RECORDED = (
    *(BEST_VAL_ACCURACY, BEST_VAL_LOSS, TEST_ACCURACY, TEST_LOSS, TRAIN_ACCURACY),
    *(BEST_TRAIN_ACCURACY, BEST_EPOCH, EPOCHS_RUN, TRAIN_SECONDS, WALL_SECONDS),
)


def recorded_runs(ids: Sequence[str], store: Store) -> tuple[list[dict], str | None]:
    """What a record keeps of each run `ids` names, a sweep's parent standing for its finished
    jobs in job order; and the command that ran them, where one sweep or one run did."""
    client = store.client
    runs, commands = [], []
    for run_id in ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise MnistExpError(f"Run {run_id} not found in {store.uri}: check the id.") from None
        jobs = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
        )
        if jobs:  # a sweep: its command is its parent's
            commands.append(notes.command(run.data.tags.get("overrides", "").split(), True))
            jobs = [job for job in jobs if job.info.status == "FINISHED"]
            runs += sorted(jobs, key=lambda job: int(job.data.tags.get("job_num", 0)))
        else:
            commands.append(notes.command(run.data.tags.get("overrides", "").split()))
            runs.append(run)
    unfinished = [run.info.run_id for run in runs if TEST_ACCURACY not in run.data.metrics]
    if unfinished:
        raise MnistExpError(
            f"Run {unfinished[0]} has no {TEST_ACCURACY}: record finished runs only."
        )
    return [run_figures(run) for run in runs], commands[0] if len(commands) == 1 else None


def run_figures(run: mlflow.entities.Run) -> dict:
    """A finished run as a record holds it: id, overrides, seed, precision, parameters, the
    machine it ran on, its start (UTC) and its final metrics (every `evaluate.extra` set's)."""
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    started = datetime.datetime.fromtimestamp(run.info.start_time / 1000, datetime.UTC)
    return {
        "run_id": run.info.run_id,
        "overrides": tags.get("overrides", ""),
        "seed": int(params.get("seed", 0)),
        "precision": params.get("precision_used", ""),
        "parameters": int(params.get("model_params", 0)),
        "machine": {  # the host's name says nothing to a reader of the docs
            key.removeprefix(f"{MACHINE}."): value
            for key, value in tags.items()
            if key.startswith(f"{MACHINE}.") and key != f"{MACHINE}.host"
        },
        "started": started.isoformat(timespec="seconds"),
        "metrics": {
            key: value
            for key, value in sorted(metrics.items())
            if key in RECORDED or key.startswith("extra_")
        },
    }


def log_measurement(
    store: Store,
    name: str,
    params: dict[str, object],
    metrics: dict[str, float],
    artifacts: dict[str, dict],
    figures: dict[str, object],
) -> str:
    """A measurement as a finished run named `name` of the store's experiment (created if new):
    params, metrics, JSON artifacts and figures by path; the run's id."""
    with active_run(store, name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        for path, content in artifacts.items():
            mlflow.log_dict(content, path)
        for path, figure in figures.items():
            mlflow.log_figure(figure, path)
    return run.info.run_id


def model_versions(store: Store) -> int:
    """How many model versions the store's registry holds."""
    return len(store.client.search_model_versions())
