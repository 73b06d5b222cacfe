"""The registry's side of a run: its model logged as an MLflow model, registered under its data's
and architecture's name, and that name's alias moved when it does better."""

import contextlib
import io
from importlib.metadata import version
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mnist_exp.config.job import Job
from mnist_exp.config.schema import MlflowConfig
from mnist_exp.console import quiet_logger
from mnist_exp.names import BEST_VAL_ACCURACY
from mnist_exp.tracking import notes
from mnist_exp.tracking.store import Store


def registered_name(cfg: MlflowConfig, job: Job, dataset: str) -> str | None:
    """The registered model's name, `{dataset}` and `{model}` filled in with the data's name and
    the architecture (`mnist-cnn`): models of other data never compete with MNIST's; None: don't."""
    if cfg.registered_model is None:
        return None
    return cfg.registered_model.format(dataset=dataset, model=job.choices.get("model", "model"))


def log_model(
    model: keras.Model,
    work_dir: Path,
    job: Job,
    val_accuracy: float,
    cfg: MlflowConfig,
    dataset: str,
    store: Store,
) -> None:
    """The MLflow Keras model (with signature, registered per architecture), plus mnist.h5 and
    mnist.keras files in the run's directory (a resumed run's: where it began), in the active
    run of `store`."""
    for filename in ("mnist.h5", "mnist.keras"):
        with quiet_logger("absl"):  # Keras calls HDF5 "legacy": the seed asks for mnist.h5
            model.save(work_dir / filename)
        mlflow.log_artifact(str(work_dir / filename))
    sample = np.zeros((1, *model.input_shape[1:]), np.float32)
    signature = infer_signature(sample, model(sample, training=False).numpy())
    name = registered_name(cfg, job, dataset)
    with contextlib.redirect_stderr(
        io.StringIO()
    ):  # "Successfully registered...": our line says it
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=signature,
            registered_model_name=name,
            # Stated, not inferred: inference re-imports the model in a subprocess (~6 s a run).
            pip_requirements=[f"{p}=={version(p)}" for p in ("tensorflow", "keras")],
        )
    if name:
        run = store.client.get_run(mlflow.active_run().info.run_id)
        number = info.registered_model_version
        store.client.update_model_version(name, number, notes.version_note(run))
        promote(store, name, cfg.alias, number, val_accuracy)


def promote(store: Store, name: str, alias: str, version: int, val_accuracy: float) -> None:
    """Move `alias` to this version if its validation accuracy beats the current holder's."""
    client = store.client
    try:
        holder = client.get_model_version_by_alias(name, alias)
        holder_accuracy = client.get_run(holder.run_id).data.metrics.get(BEST_VAL_ACCURACY, 0.0)
    except MlflowException:  # no holder yet
        holder_accuracy = -1.0
    if val_accuracy > holder_accuracy:
        client.set_registered_model_alias(name, alias, version)
        print(f"Model {name} version {version} is now @{alias} (val accuracy {val_accuracy:.4f}).")
