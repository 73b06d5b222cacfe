"""Metrics, confusion matrices and classification reports of a trained model on each split."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from mnist_exp.data import Dataset, ScoringSet

# The training split is scored on its first images only: what it tells (how well the model fits,
# dropout off) needs no more, and all 55,000 would cost the default CNN 15 s at the end of a run.
TRAIN_SCORED = 10_000


@dataclass(frozen=True)
class SplitReport:
    """How the model does on one split."""

    loss: float
    accuracy: float
    labels: np.ndarray  # true labels
    predicted: np.ndarray  # predicted labels
    probabilities: np.ndarray  # (N, classes): the model's softmax output
    confusion: np.ndarray  # (classes, classes): rows true, columns predicted
    report_text: str
    report_dict: dict
    parts: dict[str, float] = field(default_factory=dict)  # accuracy on each part of the set


@dataclass(frozen=True)
class Report:
    train: SplitReport  # its first TRAIN_SCORED images, dropout off (unlike per-epoch accuracy)
    val: SplitReport
    test: SplitReport
    extra: dict[str, SplitReport] = field(default_factory=dict)  # evaluate.extra, by name


def evaluate_split(
    model: keras.Model,
    images: np.ndarray,
    onehot: np.ndarray,
    classes: tuple[str, ...],
    parts: Sequence[str] = (),
) -> SplitReport:
    """Score the model on one split's images and one-hot labels; `classes` name the labels, and
    `parts`, if given, each image's part of the set (scored apart too)."""
    probabilities = model.predict(images, batch_size=1024, verbose=0)
    loss = float(np.mean(keras.losses.categorical_crossentropy(onehot, probabilities)))
    labels, predicted = onehot.argmax(axis=1), probabilities.argmax(axis=1)
    right, members = labels == predicted, np.array(parts)
    return SplitReport(
        parts={name: float(np.mean(right[members == name])) for name in dict.fromkeys(parts)},
        loss=loss,
        accuracy=float(np.mean(labels == predicted)),
        labels=labels,
        predicted=predicted,
        probabilities=probabilities,
        confusion=confusion_matrix(labels, predicted, labels=range(len(classes))),
        report_text=classification_report(
            labels,
            predicted,
            labels=range(len(classes)),
            target_names=classes,
            digits=4,
            zero_division=0,
        ),
        report_dict=classification_report(
            labels,
            predicted,
            labels=range(len(classes)),
            target_names=classes,
            output_dict=True,
            zero_division=0,
        ),
    )


def evaluate(model: keras.Model, data: Dataset, extra: dict[str, ScoringSet]) -> Report:
    """Loss, accuracy, confusion matrix and classification report on every split (of training,
    its first TRAIN_SCORED images) and on each `extra` set (images, one-hot labels) by name."""
    first = slice(TRAIN_SCORED)
    return Report(
        train=evaluate_split(model, data.x_train[first], data.y_train[first], data.classes),
        val=evaluate_split(model, data.x_val, data.y_val, data.classes),
        test=evaluate_split(model, data.x_test, data.y_test, data.classes),
        extra={
            name: evaluate_split(model, scored.images, scored.labels, data.classes, scored.parts)
            for name, scored in extra.items()
        },
    )
