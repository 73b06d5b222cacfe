"""The read side of the store: finding runs, their metrics, predictions and models."""

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import mlflow
import numpy as np
import yaml
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from mnist_exp.config.schema import Config
from mnist_exp.console import OPTIMIZER_SKIPPED, warnings_ignored
from mnist_exp.data import DIGITS
from mnist_exp.errors import ConfigError, MnistExpError
from mnist_exp.names import BEST_VAL_ACCURACY, DATASET, PREDICTIONS, RESUME_ARTIFACTS, STATE_FILE
from mnist_exp.tracking.liveness import slurm_job_id
from mnist_exp.tracking.store import Store, global_tracking_uri

if TYPE_CHECKING:  # TensorFlow only where a model is read: a sweep's summary needs none
    import keras


def config_hash(config: Config) -> str:
    """Identifies what a run computes: its config without where it logs or resumes, and without
    the knobs that are off (null, 0, false, empty), so that a knob added later, off, leaves the
    identity of earlier runs as it was."""
    tree = dataclasses.asdict(config)
    for key in ("mlflow", "paths", "resume", "skip_finished"):
        tree.pop(key)
    return hashlib.sha256(json.dumps(without_off(tree), sort_keys=True).encode()).hexdigest()[:16]


def without_off(tree: dict) -> dict:
    """The tree without its knobs that are off (null, 0, false or empty), at every depth."""
    kept = {key: without_off(v) if isinstance(v, dict) else v for key, v in tree.items()}
    return {key: value for key, value in kept.items() if value not in (None, 0, False, [], {})}


def finished_twin(
    config: Config, digests: dict[str, str], store: Store
) -> mlflow.entities.Run | None:
    """The latest FINISHED run of exactly this config on exactly this data (the digest of each of
    its MLflow datasets, by name: a folder that gained a file is other data) in the store's
    experiment, if any; a run that a search's pruner stopped early does not count."""
    identity = config_hash(config)
    runs = latest_runs(store, f"tags.config_hash = '{identity}' and attributes.status = 'FINISHED'")
    for run in runs:
        logged = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        if "pruned" not in run.data.tags and all(logged.get(n) == d for n, d in digests.items()):
            return run
    return None


def latest_runs(store: Store, filter_string: str, limit: int = 1000) -> list[mlflow.entities.Run]:
    """The runs of the store's experiment that `filter_string` selects, the latest first."""
    if (experiment := store.experiment_id()) is None:
        return []
    latest = ["attributes.start_time DESC"]
    return store.client.search_runs([experiment], filter_string, order_by=latest, max_results=limit)


def requeued_run(store: Store) -> str | None:
    """The run this SLURM job began before SLURM requeued it (preemption, `scontrol requeue`),
    to resume; None for a job's first start, or outside SLURM."""
    job = slurm_job_id()
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1 or job is None:
        return None
    runs = latest_runs(store, f"tags.slurm_job_id = '{job}'")
    if not runs or runs[0].info.status == "FINISHED":
        return None
    return runs[0].info.run_id


def resume_dir(run_id: str | None, fresh_dir: Path, store: Store) -> Path:
    """The directory holding the saved training state of the run `run_id` resumes (if any, else
    `fresh_dir`): its own where this host has it, else `fresh_dir` with the state it logged."""
    if not run_id:
        return fresh_dir
    try:
        run = store.client.get_run(run_id)
    except MlflowException:
        raise MnistExpError(f"resume={run_id}: no such run in {store.uri}.") from None
    work_dir = Path(run.data.tags.get("output_dir", ""))
    if run.info.status == "FINISHED":
        raise MnistExpError(f"resume={run_id}: the run is FINISHED; there is nothing to resume.")
    if (work_dir / STATE_FILE).is_file():
        return work_dir
    with tempfile.TemporaryDirectory(dir=fresh_dir.parent) as folder:
        try:
            saved = store.client.download_artifacts(run_id, RESUME_ARTIFACTS, folder)
        except (MlflowException, OSError):
            raise MnistExpError(
                f"resume={run_id}: the run is {run.info.status}, {work_dir / STATE_FILE} is "
                "missing here and its artifacts hold no saved state (a run killed outright saves "
                "none there): resume it on the host that has its output directory."
            ) from None
        fresh_dir.mkdir(parents=True, exist_ok=True)
        for path in Path(saved).iterdir():
            os.replace(path, fresh_dir / path.name)
    print(f"resume={run_id}: its state comes from the tracking store, into {fresh_dir}.")
    return fresh_dir


def load_predictions(run_id: str, store: Store) -> dict[str, np.ndarray]:
    """A run's test predictions (`log_predictions`); a MnistExpError if it has none."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = store.client.download_artifacts(run_id, PREDICTIONS, folder)
        except (MlflowException, OSError) as error:
            raise MnistExpError(
                f"Run {run_id} has no {PREDICTIONS} in {store.uri} "
                f"({str(error).splitlines()[0][:150]})"
                ": is the id right, and did the run finish? Runs older than this artifact cannot "
                "be compared; run them again."
            ) from None
        with np.load(path) as arrays:
            return dict(arrays)


def default_model(store: Store, dataset: str = "mnist") -> tuple[str, str]:
    """The model the predict CLI and the page use when given none, and what it was chosen on:
    the finished run on `dataset`'s default split (so that validation accuracies compare: no
    fold, no other split) with the best validation accuracy in the store."""
    uri = store.uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise MnistExpError(  # MLflow would create the store only to find it empty
            f"No tracking store here ({uri.removeprefix('sqlite:///')}): train a model with "
            "`python -m mnist_exp.run` in this directory, or pass --model."
        )
    experiment = store.experiment_id()
    runs = experiment and store.client.search_runs(
        [experiment],
        filter_string="attributes.status = 'FINISHED'",
        order_by=[f"metrics.{BEST_VAL_ACCURACY} DESC"],
    )
    split = default_split()
    comparable = [
        run
        for run in runs or ()
        if run.data.tags.get(DATASET, "mnist") == dataset and on_split(run, split)
    ]
    words = ", ".join(f"{key}={value}" for key, value in split.items() if key != "_target_")
    on = f"{dataset}'s default split (split={split['_target_'].rpartition('.')[2]}, {words})"
    if not comparable:
        raise MnistExpError(
            f"No finished run on {on} in {uri} (experiment {store.experiment}): train one with "
            "`python -m mnist_exp.run`, or pass --model."
        )
    best = comparable[0]
    accuracy = best.data.metrics.get(BEST_VAL_ACCURACY, float("nan"))
    runs_on = f"{len(comparable)} finished run{'s' if len(comparable) > 1 else ''} on {on}"
    chosen = f"the best val accuracy ({accuracy:.4f}) of {runs_on}"
    return f"runs:/{best.info.run_id}/model", chosen


def default_split() -> dict[str, object]:
    """The split group's default option's config (`holdout`, 5,000 images)."""
    from mnist_exp.config.compose import CONF_DIR
    from mnist_exp.config.options import group_defaults

    option, _ = group_defaults((CONF_DIR / "config.yaml").read_text())["split"]
    return yaml.safe_load((CONF_DIR / "split" / f"{option}.yaml").read_text())


def on_split(run: mlflow.entities.Run, split: dict[str, object]) -> bool:
    """Whether a run validated on `split` (runs logged before the split group: the default)."""
    params = run.data.params
    return all(params.get(f"split.{key}", str(value)) == str(value) for key, value in split.items())


@dataclass(frozen=True)
class Source:
    """What `init_from=` names, resolved: where the model loads from, the one version it stands
    for (the config's identity), and its run's architecture and classes (None for a file)."""

    uri: str  # runs:/..., models:/name/version or a file path
    pinned: str  # models:/name@alias resolved to models:/name/version; a file with its digest
    model: dict | None  # the source run's model config
    choice: str | None  # its model group option (`cnn_bn`)
    classes: list[str] | None


def init_source(spec: str, store: Store) -> Source:
    """Resolve `init_from=` (a registered or logged model's URI, or a .keras/.h5 file) to the one
    model it names now; a ConfigError in one line if it names none."""
    if "://" not in spec and ":/" not in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file() or path.suffix not in (".keras", ".h5"):
            raise ConfigError(
                f"init_from={spec}: no such .keras or .h5 file; give a saved model file, or a "
                "model URI (models:/mnist-cnn@champion, runs:/<run id>/model)."
            )
        if path.suffix == ".keras" and not zipfile.is_zipfile(path):
            raise ConfigError(f"init_from={spec}: not a .keras archive (truncated or damaged).")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return Source(str(path), f"{path}@sha256:{digest}", None, None, None)
    missing = ConfigError(
        f"init_from={spec}: no such model in {store.uri}; name a registered one "
        "(models:/mnist-cnn@champion, models:/mnist-cnn/3) or a run's (runs:/<run id>/model)."
    )
    pinned = spec
    if spec.startswith("models:/") and "@" in spec:  # resolved once: what loads is what is logged
        name, alias = spec.removeprefix("models:/").split("@", 1)
        try:
            version = store.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise missing from None
        pinned = f"models:/{name}/{version.version}"
    if (run := model_run(pinned, store)) is None:
        raise missing
    return run_source(run, pinned, store)


def run_source(run: mlflow.entities.Run, pinned: str, store: Store) -> Source:
    """The Source of a model `run` logged: its architecture (None if it logged no config) and
    classes."""
    try:
        logged = OmegaConf.create(run_artifact_text(run.info.run_id, "config.yaml", store))
        model = OmegaConf.to_container(logged.model, resolve=True)
    except (MlflowException, OSError):  # registered by another tool: the model group's
        model = None
    classes = run_classes(run.info.run_id, store)
    return Source(pinned, pinned, model, run.data.tags.get("choice.model"), classes)


def resumed_source(run_id: str, store: Store) -> Source:
    """What an interrupted run started from and trains: its own config's `init_from` and
    architecture, whatever the alias names now (its weights are in its own state)."""
    run = store.client.get_run(run_id)
    started = OmegaConf.create(run_artifact_text(run_id, "config.yaml", store)).get("init_from")
    return run_source(run, started or "", store)


def run_classes(run_id: str, store: Store) -> list[str]:
    """A run's class names, in the order of its model's outputs (runs logged before they were
    recorded are MNIST's: the digits)."""
    try:
        return json.loads(run_artifact_text(run_id, "dataset/classes.json", store))["classes"]
    except (MlflowException, OSError):
        return list(DIGITS)


def load_source(source: Source, store: Store) -> "keras.Model":
    """The model `init_from=` resolved to, uncompiled."""
    import keras

    if source.model is not None:
        return load_logged_model(source.uri, store)
    try:
        return keras.models.load_model(source.uri, compile=False)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"init_from={source.uri} cannot be loaded as a Keras model: {str(error)[:200]}"
        ) from None


def load_logged_model(uri: str, store: Store) -> "keras.Model":
    """Load a Keras model from an MLflow URI (runs:/..., models:/name@alias, ...) of the store;
    MLflow's loader reads the process-wide URI, the caller's again after."""
    try:
        with global_tracking_uri(store.uri), warnings_ignored(OPTIMIZER_SKIPPED):
            return mlflow.keras.load_model(uri, load_model_kwargs={"compile": False})
    except (MlflowException, OSError) as error:
        raise MnistExpError(f"Cannot load model {uri}: {str(error).splitlines()[0]}") from None


def model_run(uri: str, store: Store) -> mlflow.entities.Run | None:
    """The run that logged a runs:/ or models:/ model (name@alias or name/version), if any."""
    client = store.client
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


def run_record(run_id: str, store: Store) -> tuple[mlflow.entities.Run, dict[str, list[float]]]:
    """A tracked run and its per-epoch metric series, read back from the store."""
    try:
        run = store.client.get_run(run_id)
    except MlflowException as error:
        raise MnistExpError(
            f"Run {run_id} not found in {store.uri}: {str(error).splitlines()[0]}"
        ) from None
    history = {
        key: metric_series(store, run_id, key)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
    }
    return run, history


def metric_series(store: Store, run_id: str, key: str) -> list[float]:
    """A run's values of one metric, in step (epoch) order."""
    history = store.client.get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def run_name(run_id: str, store: Store) -> str:
    """A run's name, as the UI shows it."""
    return store.client.get_run(run_id).info.run_name


def run_artifact_text(run_id: str, path: str, store: Store) -> str:
    """A text artifact of a run (a report, a confusion matrix's CSV)."""
    with tempfile.TemporaryDirectory() as folder:
        local = store.client.download_artifacts(run_id, path, folder)
        return Path(local).read_text()
