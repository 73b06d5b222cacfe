"""The registry's side of a run: its model logged as an MLflow model, registered under its data's
and architecture's name, and that name's alias moved when it does better."""

import contextlib
import io
import json
from importlib.metadata import version
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mnist_exp.config.job import Job
from mnist_exp.config.schema import MlflowConfig
from mnist_exp.console import quiet_logger
from mnist_exp.names import BEST_VAL_ACCURACY, CLASSES, VALIDATED_ON
from mnist_exp.tracking import notes
from mnist_exp.tracking.read import run_classes
from mnist_exp.tracking.store import Store


def registered_name(settings: MlflowConfig, job: Job, dataset: str) -> str | None:
    """The registered model's name, `{dataset}` and `{model}` filled in with the data's name and
    the architecture (`mnist-cnn`): models of other data never compete with MNIST's; None: don't."""
    if settings.registered_model is None:
        return None
    return settings.registered_model.format(
        dataset=dataset, model=job.choices.get("model", "model")
    )


def log_model(
    model: keras.Model,
    work_dir: Path,
    job: Job,
    settings: MlflowConfig,
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
    name = registered_name(settings, job, dataset)
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
        promote(store, name, number, run, settings)


def promote(store: Store, name: str, version: int, run: Run, settings: MlflowConfig) -> None:
    """Move the alias (`settings.alias`) to this version if it beats the holder's validation
    accuracy on the same validation data and classes; a version validated on other data leaves
    the alias where it is, and says so (`settings.promote=always` moves it all the same)."""
    alias, client = settings.alias, store.client
    accuracy = run.data.metrics[BEST_VAL_ACCURACY]
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no holder yet
        holder = None
    if holder is not None and settings.promote == "better":
        held = client.get_run(holder.run_id)
        if why := not_comparable(run, held, store):
            print(
                f"Model {name} version {version} stays beside @{alias} (version {holder.version}):"
                f" {why}, so their accuracies do not compare. To make it @{alias} anyway, set "
                f"mlflow.promote=always for its run, or move the alias in the MLflow UI."
            )
            return
        if accuracy <= held.data.metrics.get(BEST_VAL_ACCURACY, 0.0):
            return
    client.set_registered_model_alias(name, alias, version)
    print(f"Model {name} version {version} is now @{alias} (val accuracy {accuracy:.4f}).")


def not_comparable(run: Run, held: Run, store: Store) -> str | None:
    """Why `run` was validated on other data than `held` (other classes, other images), or None
    when they were validated alike."""
    digest, classes = validated_on(run, store)
    held_digest, held_classes = validated_on(held, store)
    if classes != held_classes:
        return f"its classes are {', '.join(classes)}, the holder's {', '.join(held_classes)}"
    if digest != held_digest:
        mine, theirs = split_of(run), split_of(held)
        if mine == theirs:
            return f"it was validated on other images (the same split, {mine}, of other data)"
        return f"it was validated on other images ({mine}; the holder on {theirs})"
    return None


def validated_on(run: Run, store: Store) -> tuple[str | None, tuple[str, ...]]:
    """A run's validation data: the digest of its validation images and labels, and its classes
    (for a run logged before its tags said so: its validation dataset input and classes file)."""
    tags = run.data.tags
    inputs = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    digest = tags.get(VALIDATED_ON) or next(
        (value for key, value in inputs.items() if key.endswith("-validation")), None
    )
    if CLASSES in tags:
        return digest, tuple(json.loads(tags[CLASSES]))
    return digest, tuple(run_classes(run.info.run_id, store))


def split_of(run: Run) -> str:
    """How a run's validation images were chosen, from its params: `split=kfold (fold=1, k=5,
    seed=0)`."""
    knobs = [
        f"{key.removeprefix('split.')}={value}"
        for key, value in sorted(run.data.params.items())
        if key.startswith("split.") and key != "split._target_"
    ]
    option = run.data.tags.get("choice.split", "holdout")
    return f"split={option} ({', '.join(knobs)})" if knobs else f"split={option}"
