"""A run's images: a Dataset of preprocessed splits, assembled from verified arrays (MNIST's own,
any set in its formats, a folder of image files), and the ScoringSets a model is scored on beside
them; `python -m mnist_exp.data` pre-fetches MNIST."""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mnist_exp.data.formats import (
    IDX_NAMES,
    Arrays,
    flat_bytes,
    parse_idx,
    read_npz,
    read_source,
    sha256,
)
from mnist_exp.data.mnist import CACHE_DIR, CACHE_FILE, CHECKSUMS, fetch_mnist
from mnist_exp.errors import ConfigError, DataError

__all__ = [
    "CACHE_DIR",
    "CACHE_FILE",
    "CHECKSUMS",
    "DIGITS",
    "IDX_NAMES",
    "Arrays",
    "Dataset",
    "Indices",
    "ScoringSet",
    "assemble",
    "digest",
    "fetch_mnist",
    "index_digest",
    "parse_idx",
    "preprocess",
    "read_npz",
    "read_source",
    "sha256",
]

Indices = tuple[np.ndarray, np.ndarray]  # (training, validation) positions, each ascending
DIGITS = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True)
class Dataset:
    """Preprocessed splits: images (N, 28, 28, 1) float32 in [0, 1], labels one-hot (N, classes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...] = DIGITS  # the name of each label, 0 first
    name: str = "mnist"  # names its MLflow datasets and its registered models
    source: str = ""  # the file or directory the verified arrays were read from
    split_digest: str = ""  # identifies which training images validate (`index_digest`)
    checksums: dict[str, str] | None = None  # SHA-256 of each array read (logged); MNIST's: known
    unreadable: tuple[str, ...] = ()  # one line for each file of a folder that could not be read
    parts: tuple[
        str, ...
    ] = ()  # each test image's part of the set, where it has parts (robustness)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.x_train.shape[1:]

    @property
    def num_classes(self) -> int:
        return self.y_train.shape[1]

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(images, labels) of each split, named as MLflow's dataset contexts name them."""
        return {
            "training": (self.x_train, self.y_train),
            "validation": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }

    def digests(self) -> dict[str, str]:
        """Each split's `digest` by its MLflow dataset's name (`mnist-training`, ...)."""
        return {f"{self.name}-{split}": digest(*arrays) for split, arrays in self.splits().items()}


class ScoringSet(NamedTuple):
    """An `evaluate.extra` set: a set's test images with labels over the model's classes."""

    images: np.ndarray  # (N, 28, 28, 1) in [0, 1]
    labels: np.ndarray  # one-hot over the model's classes
    source: str  # the directory or file it was read from
    parts: tuple[str, ...] = ()  # each image's part of the set, where it has parts (robustness)


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """Identifies a split by its exact images and labels: the same data, the same digest."""
    sha = hashlib.sha256(flat_bytes(images))
    sha.update(flat_bytes(labels))
    return sha.hexdigest()[:12]


def index_digest(indices: np.ndarray) -> str:
    """Identifies a split by the positions of its validation images among the training images."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


def preprocess(
    images: np.ndarray, labels: np.ndarray, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Reshape to (N, 28, 28, 1), scale pixels to [0, 1] and one-hot encode the labels."""
    x = (images.reshape(-1, 28, 28, 1) / np.float32(255)).astype(np.float32, copy=False)
    return x, np.eye(num_classes, dtype=np.float32)[labels]


def assemble(
    raw: Arrays,
    split: Callable[[np.ndarray], Indices] | None,
    limit: int | None,
    classes: tuple[str, ...],
    name: str,
    source: str,
    checksums: dict[str, str] | None = None,
) -> Dataset:
    """The Dataset of verified arrays: `split(labels)` picks the training and validation images
    among the training set, the first `limit` of them train; the test images stay the test set.
    No split: a set only tested on (`evaluate.extra`), with no training or validation images."""
    for part in ("train", "test"):
        labels = raw[f"y_{part}"]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(
                f"{source}: y_{part} holds labels "
                f"{labels.min()}..{labels.max()}, but the dataset names {len(classes)} classes; "
                "name one class for each label 0, 1, 2, ... (dataset.classes)."
            )
    none = np.arange(0)
    train, val = split(raw["y_train"]) if split else (none, none)
    if limit is not None and limit > len(train):
        raise ConfigError(
            f"dataset.limit={limit} is not allowed: this split trains on {len(train)} images; "
            "use at most that, or null."
        )
    train = train[:limit]
    return Dataset(
        *preprocess(raw["x_train"][train], raw["y_train"][train], len(classes)),
        *preprocess(raw["x_train"][val], raw["y_train"][val], len(classes)),
        *preprocess(raw["x_test"], raw["y_test"], len(classes)),
        classes=classes,
        name=name,
        source=source,
        split_digest=index_digest(val),
        checksums=checksums,
    )
