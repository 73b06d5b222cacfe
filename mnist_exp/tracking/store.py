"""Where runs are stored: the `Store` a run or command reads and writes, its URI, the store's
creation lock and a server's health."""

import fcntl
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_exp.config.schema import MlflowConfig
from mnist_exp.errors import MnistExpError
from mnist_exp.tracking.liveness import close_dead_runs

# A run waits for a tracking server that stops: MLflow retries each call with backoff (0, 2, 4,
# ..., 64 s: about two minutes in all) before it gives up. The environment can change both.
STORE_LOCK_KEY = 7_1093_2026  # PostgreSQL advisory lock of a store's creation (any fixed number)
RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# MLflow's UI opens an experiment without this tag in its GenAI view (traces, prompts, judges);
# from 3.17 on it opens every page there unless told otherwise, by this query or a click.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
TRAINING_VIEW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` and `make ui` serve a store by default


@dataclass(frozen=True)
class Store:
    """The tracking store a run or command uses, handed to whatever reads or writes its runs:
    its URI, its experiment (by name) and a client of the two."""

    uri: str
    experiment: str

    @cached_property
    def client(self) -> MlflowClient:
        """MLflow's client of this store, made on first use (naming a SQLite store that does not
        exist creates nothing)."""
        return MlflowClient(self.uri)

    def experiment_id(self) -> str | None:
        """The experiment's id; None while no run has created it."""
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found else None


def open_store(settings: MlflowConfig, root: str | Path = ".") -> Store:
    """The configured store (`tracking_uri`), to read: nothing is created, and MLflow's
    process-wide URI stays as it was."""
    return Store(tracking_uri(settings, root), settings.experiment_name)


def make_store(uri: str) -> None:
    """Create the store at `uri` now if it is new (its tables, its first experiment), so that
    its first use later is not one that is timed."""
    MlflowClient(uri).search_experiments()


def tracking_uri(settings: MlflowConfig, root: str | Path = ".") -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else the SQLite store `mlflow.db` in `root`
    (`paths.root`; the working directory, as for every command outside Hydra)."""
    return (
        settings.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    )


def artifact_location(uri: str, experiment: str, root: str | Path = ".") -> str | None:
    """Artifacts of a SQLite store live beside it in `mlruns/`, of another database in `root`'s
    (`paths.root`; MLflow's own default: the working directory's); a server decides for itself."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    folder = Path(urlparse(uri).path).parent if uri.startswith("sqlite:///") else Path(root)
    return (folder.resolve() / "mlruns" / experiment).as_uri()


def ui_command(store: Store) -> str:
    """How to open the store's UI: a server is its own; a database needs `mlflow ui`."""
    uri = store.uri
    if uri.startswith(("http://", "https://")):
        return f"the server's UI, {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def run_page(store: Store, run: "mlflow.entities.RunInfo") -> str:
    """The run's page in the store's UI, in its model-training view."""
    uri = store.uri
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}?{TRAINING_VIEW}"


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


def use_store(settings: MlflowConfig, root: str | Path = ".") -> Store:
    """The configured store (`tracking_uri`), ready for runs: its experiment created if new, its
    runs whose process died closed, and both made MLflow's process-wide ones, for the fluent
    calls of a run (start_run, log_model, system metrics) and the jobs a sweep starts. A caller
    that keeps its own wraps this in `global_tracking_uri()`, as `run_experiment` does."""
    store = Store(tracking_uri(settings, root), settings.experiment_name)
    for key, value in RETRIES.items():
        os.environ.setdefault(key, value)
    check_reachable(store.uri)
    mlflow.set_tracking_uri(store.uri)
    try:
        with store_lock(store.uri):  # the first access creates (migrates) the store: one at a time
            if store.experiment_id() is None:
                create_experiment(store, artifact_location(store.uri, store.experiment, root))
        experiment = set_experiment(store)
    except MlflowException as error:
        if (status := error.get_http_status_code()) in (401, 403):
            raise MnistExpError(
                f"MLflow tracking server {store.uri} refused these credentials ({status}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user's that may "
                f"write to the experiment {store.experiment}."
            ) from None
        raise MnistExpError(
            f"MLflow cannot use the tracking store {store.uri} "
            f"({str(error).strip().split('. ')[0][:200]}); use sqlite:///<file>.db, "
            "http(s)://<server> or postgresql://..., set with mlflow.tracking_uri or "
            "MLFLOW_TRACKING_URI."
        ) from None
    close_dead_runs(store.client, experiment.experiment_id)
    return store


def set_experiment(store: Store) -> "mlflow.entities.Experiment":
    """Make the store's experiment (created if new) MLflow's active one, marked as model training
    so the UI opens it on its runs (an experiment made before the mark gets it now). MLflow's
    process-wide URI must be the store's."""
    experiment = mlflow.set_experiment(store.experiment)
    key, value = EXPERIMENT_KIND
    if experiment.tags.get(key) != value:
        store.client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment


@contextmanager
def active_run(
    store: Store, run_name: str | None = None, *, system_metrics: float | None = None
) -> Iterator[mlflow.ActiveRun]:
    """A new run of the store's experiment (created if new) as MLflow's active one, sampling
    system metrics every `system_metrics` seconds if given: MLflow's process-wide URI is the
    store's while in it, and the caller's again after."""
    with global_tracking_uri(store.uri):
        set_experiment(store)
        if system_metrics:
            mlflow.set_system_metrics_sampling_interval(system_metrics)
        with mlflow.start_run(run_name=run_name, log_system_metrics=bool(system_metrics)) as run:
            yield run


def create_experiment(store: Store, artifacts: str | None) -> None:
    """Create the store's experiment, unless another process just did (two workers meeting a new
    server: the server serialises them, and one of them hears that it exists)."""
    try:
        store.client.create_experiment(store.experiment, artifact_location=artifacts)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


@contextmanager
def global_tracking_uri(uri: str | None = None) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri` for a while, if given, and given back as it
    was, with $MLFLOW_TRACKING_URI (which MLflow rewrites): a caller's process keeps its own."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    environment = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if environment is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = environment


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store (`mlflow.db.lock`), or PostgreSQL's advisory
    lock: MLflow's (and Optuna's) schema creation races when two processes make a new store.
    Servers serialise this themselves."""
    if uri.startswith("postgresql"):
        with advisory_lock(uri):
            yield
        return
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


@contextmanager
def advisory_lock(uri: str) -> Iterator[None]:
    """PostgreSQL's session-level advisory lock on the store's database, held while in the block."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        connection = engine.connect()
    except sqlalchemy.exc.SQLAlchemyError as error:
        engine.dispose()
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise MnistExpError(
            f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} cannot be used "
            f"({reason}): start it, or give the role's password in ~/.pgpass or PGPASSWORD."
        ) from None
    try:
        with connection:
            connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({STORE_LOCK_KEY})"))
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({STORE_LOCK_KEY})"))
    finally:
        engine.dispose()


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
