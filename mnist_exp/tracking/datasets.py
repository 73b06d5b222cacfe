"""A run's data sets as MLflow dataset inputs (the UI's Datasets), with the tags that say what
the training set holds."""

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np

from mnist_exp.data import Dataset, ScoringSet, digest
from mnist_exp.names import CLASS_BALANCE, CLASSES, DATASET, VALIDATED_ON


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
