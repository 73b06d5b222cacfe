"""Everything MLflow: where runs are stored, the run lifecycle, and what each run logs."""

import errno
import fcntl
import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

import keras
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mnist_exp import notes
from mnist_exp.config import BEST_FILE, PREDICTIONS, STATE_FILE, MlflowConfig, flatten
from mnist_exp.data import Mnist, digest
from mnist_exp.errors import MnistExpError
from mnist_exp.evaluate import (
    Report,
    SplitReport,
    architecture_figure,
    confusion_figure,
    curves_figure,
    misclassified_figure,
)
from mnist_exp.job import Job

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# A tracking server that stops is waited for: MLflow retries each call with backoff (0, 2, 4, ...,
# 64 s: about two minutes in all) before it gives up. The environment can change both.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
# Artifacts read back (predictions, checkpoints) are small: progress bars would only be noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri(cfg: MlflowConfig) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else the SQLite store at the project root."""
    return (
        cfg.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    )


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside it in `mlruns/`; a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(urlparse(uri).path).resolve().parent / "mlruns" / experiment).as_uri()


def job_tags(job: Job) -> dict[str, str]:
    """A job's overrides, group choices and output dir; in a sweep, its directory and number."""
    tags = {"overrides": " ".join(job.overrides), "output_dir": str(job.output_dir)}
    tags.update({f"choice.{group}": option for group, option in job.choices.items()})
    if job.sweep_dir is not None:
        tags.update(sweep_dir=job.sweep_dir, job_num=str(job.number))
    return tags


def run_name(cfg: DictConfig, job: Job) -> str:
    """What ran: `cnn_bn adam lr=0.001`, after the experiment's name if one was chosen; a sweep's
    job is named by its overrides."""
    if job.sweep_dir is not None:
        return " ".join(job.overrides) or "defaults"
    learning_rate = cfg.optimizer.get("learning_rate")
    words = [
        f"{job.choices['experiment']}:" if "experiment" in job.choices else "",
        job.choices.get("model", "model"),
        job.choices.get("optimizer", "optimizer"),
        f"lr={learning_rate:g}" if isinstance(learning_rate, int | float) else "",
    ]
    return " ".join(word for word in words if word)


def registered_name(cfg: MlflowConfig, job: Job) -> str | None:
    """The registered model's name, `{model}` filled in with the architecture; None: don't."""
    if cfg.registered_model is None:
        return None
    return cfg.registered_model.format(model=job.choices.get("model", "model"))


def check_reachable(uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
    except OSError as error:
        raise MnistExpError(
            f"MLflow tracking server {uri} is unreachable ({getattr(error, 'reason', error)}). "
            "Start the server, or point MLFLOW_TRACKING_URI (or mlflow.tracking_uri) elsewhere."
        ) from None


def use_store(cfg: MlflowConfig) -> str:
    """Point MLflow at the configured store and experiment (created if new); return the URI."""
    uri = tracking_uri(cfg)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = cfg.experiment_name
    with store_lock(uri):  # the first access creates (migrates) the store: one process at a time
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=artifact_location(uri, name))
    experiment = mlflow.set_experiment(name)
    close_dead_runs(experiment.experiment_id)
    return uri


def process_tags() -> dict[str, str]:
    """Which process on which host owns a run, so a later one can tell if it died."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "pid_started": str(psutil.Process().create_time()),
    }


def process_alive(tags: dict[str, str]) -> bool:
    """Whether the process `process_tags` described still runs (on this host)."""
    import psutil

    try:
        return psutil.Process(int(tags["pid"])).create_time() == float(tags["pid_started"])
    except (KeyError, ValueError, psutil.Error):
        return False


def close_dead_runs(experiment_id: str) -> None:
    """Runs of this host left RUNNING by a process that is gone (SIGKILL, the OOM killer, a power
    cut) end KILLED, tagged with how to resume them, so the UI tells the truth."""
    client = MlflowClient()
    running = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.host = '{socket.gethostname()}'",
    )
    for run in running:
        tags = run.data.tags
        if process_alive(tags):
            continue
        ended = f"process {tags.get('pid')} ended while the run was RUNNING (killed?)"
        client.set_tag(run.info.run_id, "error", ended)
        if "output_dir" in tags:  # a run, not a sweep's parent
            command = f"{notes.command(tags.get('overrides', '').split())} resume={run.info.run_id}"
            client.set_tag(run.info.run_id, "resume_command", command)
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"Run {run.info.run_id} ({run.info.run_name}) lost its process: marked KILLED.")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store (`mlflow.db.lock`): MLflow's schema migration of
    a new store races when two processes create it at once. Servers serialise this themselves."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(urlparse(uri).path + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def config_hash(cfg: DictConfig) -> str:
    """Identifies what a run computes: the resolved config without where it logs or resumes."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in ("mlflow", "resume", "skip_finished"):
        tree.pop(key, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def finished_twin(cfg: DictConfig) -> mlflow.entities.Run | None:
    """The latest FINISHED run of exactly this config in the current experiment, if any; a run
    that a search's pruner stopped early does not count."""
    runs = mlflow.search_runs(
        filter_string=f"tags.config_hash = '{config_hash(cfg)}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return next((run for run in runs if "pruned" not in run.data.tags), None)


def resume_dir(run_id: str) -> Path:
    """The output directory holding an interrupted run's saved training state."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        raise MnistExpError(
            f"resume={run_id}: no such run in {mlflow.get_tracking_uri()}."
        ) from None
    work_dir = Path(run.data.tags.get("output_dir", ""))
    if run.info.status == "FINISHED" or not (work_dir / STATE_FILE).is_file():
        raise MnistExpError(
            f"resume={run_id}: the run is {run.info.status} and {work_dir / 'state.json'} "
            "is missing; only interrupted runs with their output directory can be resumed."
        )
    return work_dir


def resume_command(run_id: str, job: Job) -> str:
    return f"{notes.command(job.overrides)} resume={run_id}"


@contextmanager
def start_run(
    cfg: DictConfig,
    job: Job,
    work_dir: Path,
    run_id: str | None,
    parent_id: str | None,
    extra_params: dict[str, object],
    extra_tags: dict[str, str],
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run (in the store `use_store` chose; a child of `parent_id` in a sweep), or
    reopen `run_id` to resume it. It ends FAILED with the reason, or KILLED on Ctrl-C/SIGTERM with
    the best checkpoint logged."""
    name = None if run_id else run_name(cfg, job)
    mlflow.set_system_metrics_sampling_interval(cfg.mlflow.system_metrics_interval)
    system_metrics = cfg.mlflow.system_metrics
    with mlflow.start_run(run_id=run_id, run_name=name, log_system_metrics=system_metrics) as run:
        try:
            mlflow.set_tags(process_tags())  # this process owns it now, a resumed run included
            if run_id is None:
                mlflow.set_tags({**job_tags(job), "config_hash": config_hash(cfg), **extra_tags})
                if parent_id:
                    mlflow.set_tag("mlflow.parentRunId", parent_id)
                params = flatten(OmegaConf.to_container(cfg, resolve=True))
                mlflow.log_params({**params, **extra_params})
                mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
                describe_run(job)
            yield run
        except BaseException as raised:
            if isinstance(raised, Exception) and server_gone(mlflow.get_tracking_uri()):
                abandon_run()
                raise MnistExpError(
                    f"The tracking server {mlflow.get_tracking_uri()} stopped answering; the "
                    f"state of the last finished epoch is in {work_dir}. Once the server is back: "
                    f"{resume_command(run.info.run_id, job)}"
                ) from None
            error = disk_full(raised, work_dir) or raised
            status = "FAILED"
            if isinstance(error, KeyboardInterrupt):
                status = "KILLED"
                signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C: out now
                if (work_dir / BEST_FILE).is_file():
                    mlflow.log_artifact(str(work_dir / BEST_FILE), "checkpoint")
                print(
                    f"\nInterrupted: run {run.info.run_id} saved up to its last finished epoch. "
                    f"Resume with:\n  {resume_command(run.info.run_id, job)}",
                    file=sys.stderr,
                )
            mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
            describe_run(job, ending=f"Ended {status}: {type(error).__name__}: {error}"[:1000])
            mlflow.end_run(status)
            if error is raised:
                raise
            raise error from None


def disk_full(error: BaseException, work_dir: Path) -> MnistExpError | None:
    """A full disk as a user's error naming where, or None if `error` is something else. (h5py
    reports it in its message, without an errno.)"""
    if not isinstance(error, OSError):
        return None
    if error.errno != errno.ENOSPC and "No space left on device" not in str(error):
        return None
    where = error.filename or work_dir
    return MnistExpError(
        f"No space left on device writing {where}: free some space there, or point "
        "hydra.run.dir (or the MLflow store) at a disk with room."
    )


def server_gone(uri: str) -> bool:
    """Whether a tracking server that this run was logging to no longer answers."""
    try:
        check_reachable(uri)
    except MnistExpError:
        return True
    return False


def abandon_run() -> None:
    """End the active run in this process without waiting on a server that is gone: MLflow takes
    it off its stack before it calls the server, and that call fails at once here."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        mlflow.end_run("FAILED")
    except Exception:  # the server is gone, as we know: the run is off the stack, which is enough
        pass
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def describe_run(job: Job, ending: str | None = None) -> None:
    """The run's description in the UI (its note), written from what it has logged so far."""
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    mlflow.set_tag("mlflow.note.content", notes.run_note(run, job.overrides, ending))


def log_datasets(data: Mnist) -> None:
    """The splits as the run's dataset inputs (UI: Datasets), each digested by its exact data."""
    import mlflow.data

    source = Path(data.source).as_uri()
    for context, (images, labels) in data.splits().items():
        with warnings.catch_warnings():  # MLflow registers its local-file source twice, and says so
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(
                images,
                targets=labels,
                source=source,
                name=f"mnist-{context}",
                digest=digest(images, labels),
            )
        mlflow.log_input(dataset, context=context)


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


def log_split(split: SplitReport, name: str, metric_prefix: str) -> None:
    mlflow.log_metrics(
        {f"{metric_prefix}_loss": split.loss, f"{metric_prefix}_accuracy": split.accuracy}
    )
    mlflow.log_figure(
        confusion_figure(split.confusion, f"{name} confusion matrix"),
        f"{name}/confusion_matrix.png",
    )
    header = "true\\predicted," + ",".join(str(d) for d in range(10))
    rows = [f"{d}," + ",".join(map(str, row)) for d, row in enumerate(split.confusion)]
    mlflow.log_text("\n".join([header, *rows]) + "\n", f"{name}/confusion_matrix.csv")
    mlflow.log_text(split.report_text, f"{name}/classification_report.txt")
    mlflow.log_text(json.dumps(split.report_dict, indent=2), f"{name}/classification_report.json")


def log_evaluation(
    history: dict[str, list[float]], best: int, report: Report, x_test: np.ndarray
) -> None:
    """Final metrics of the best epoch, reports and figures."""
    mlflow.log_metrics(
        {
            "epochs_run": len(history["loss"]),
            "best_epoch": best + 1,
            "best_train_accuracy": history["accuracy"][best],
            "train_seconds": float(np.sum(history["epoch_seconds"])),
        }
    )
    log_split(report.train, "train", "train")
    log_split(report.val, "val", "best_val")  # val_* is the per-epoch series
    log_split(report.test, "test", "test")
    mlflow.log_figure(curves_figure(history), "training_curves.png")
    mlflow.log_figure(misclassified_figure(x_test, report.test), "test/misclassified.png")
    log_predictions(report.test)


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


def load_predictions(run_id: str, uri: str) -> dict[str, np.ndarray]:
    """A run's test predictions (`log_predictions`); a MnistExpError if it has none."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PREDICTIONS, dst_path=folder, tracking_uri=uri
            )
        except (MlflowException, OSError) as error:
            raise MnistExpError(
                f"Run {run_id} has no {PREDICTIONS} in {uri} ({str(error).splitlines()[0][:150]})"
                ": is the id right, and did the run finish? Runs older than this artifact cannot "
                "be compared; run them again."
            ) from None
        with np.load(path) as arrays:
            return dict(arrays)


def log_model(model: keras.Model, job: Job, val_accuracy: float, cfg: MlflowConfig) -> None:
    """The MLflow Keras model (with signature, registered per architecture), plus mnist.h5 and
    mnist.keras files."""
    for filename in ("mnist.h5", "mnist.keras"):
        model.save(job.output_dir / filename)
        mlflow.log_artifact(str(job.output_dir / filename))
    sample = np.zeros((1, *model.input_shape[1:]), np.float32)
    signature = infer_signature(sample, model(sample, training=False).numpy())
    name = registered_name(cfg, job)
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        registered_model_name=name,
        # Stated, not inferred: inference re-imports the model in a subprocess (~6 s a run).
        pip_requirements=[f"{p}=={version(p)}" for p in ("tensorflow", "keras")],
    )
    if name:
        run = mlflow.get_run(mlflow.active_run().info.run_id)
        MlflowClient().update_model_version(
            name, info.registered_model_version, notes.version_note(run)
        )
        promote(name, cfg.alias, info.registered_model_version, val_accuracy)


def promote(name: str, alias: str, version: int, val_accuracy: float) -> None:
    """Move `alias` to this version if its validation accuracy beats the current holder's."""
    client = MlflowClient()
    try:
        holder = client.get_model_version_by_alias(name, alias)
        holder_accuracy = client.get_run(holder.run_id).data.metrics.get("best_val_accuracy", 0.0)
    except MlflowException:  # no holder yet
        holder_accuracy = -1.0
    if val_accuracy > holder_accuracy:
        client.set_registered_model_alias(name, alias, version)
        print(f"Model {name} version {version} is now @{alias} (val accuracy {val_accuracy:.4f}).")


def best_model_uri(cfg: MlflowConfig) -> str:
    """The model URI of the finished run with the best validation accuracy in the store."""
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        experiment_names=[cfg.experiment_name],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["metrics.best_val_accuracy DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise MnistExpError(
            f"No finished run in {uri} (experiment {cfg.experiment_name}): "
            "train one with `python -m mnist_exp.run`, or pass --model."
        )
    return f"runs:/{runs[0].info.run_id}/model"


def load_logged_model(uri: str, cfg: MlflowConfig) -> keras.Model:
    """Load a Keras model from an MLflow URI (runs:/..., models:/name@alias, ...)."""
    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        return mlflow.keras.load_model(uri, load_model_kwargs={"compile": False})
    except (MlflowException, OSError) as error:
        raise MnistExpError(f"Cannot load model {uri}: {str(error).splitlines()[0]}") from None


def model_run(uri: str, cfg: MlflowConfig) -> mlflow.entities.Run | None:
    """The run that logged a runs:/ or models:/ model (name@alias or name/version), if any."""
    client = MlflowClient(tracking_uri(cfg))
    parsed = urlparse(uri)
    path = f"{parsed.netloc}{parsed.path}".strip("/")
    try:
        if parsed.scheme == "runs":
            return client.get_run(path.split("/")[0])
        if parsed.scheme == "models":
            name, _, version = path.partition("/")
            name, _, alias = name.partition("@")
            found = (
                client.get_model_version_by_alias(name, alias)
                if alias
                else client.get_model_version(name, version)
            )
            return client.get_run(found.run_id)
    except MlflowException:
        return None
    return None


def run_record(
    run_id: str, cfg: MlflowConfig
) -> tuple[mlflow.entities.Run, dict[str, list[float]]]:
    """A tracked run and its per-epoch metric series, read back from the store."""
    client = MlflowClient(tracking_uri(cfg))
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise MnistExpError(
            f"Run {run_id} not found in {tracking_uri(cfg)}: {str(error).splitlines()[0]}"
        ) from None
    history = {
        key: metric_series(client, run_id, key)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
    }
    return run, history


def metric_series(client: MlflowClient, run_id: str, key: str) -> list[float]:
    """A run's values of one metric, in step (epoch) order."""
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def run_artifact_text(run_id: str, path: str, cfg: MlflowConfig) -> str:
    mlflow.set_tracking_uri(tracking_uri(cfg))
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
