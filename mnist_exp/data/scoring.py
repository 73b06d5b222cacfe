"""Sets a model is scored on beside its test set (`evaluate.extra`): a folder of image files, an
MNIST-format set's test images, MNIST's or the robustness set; labels matched to the model's."""

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_exp.config.schema import extra_name
from mnist_exp.data import DIGITS, preprocess
from mnist_exp.data.folder import cache_path, read_folder, read_images
from mnist_exp.data.formats import read_source
from mnist_exp.data.mnist import CACHE_DIR, CACHE_FILE, fetch_mnist
from mnist_exp.data.robustness import cached_set, handwriting_fonts_missing, label, part_of
from mnist_exp.errors import DataError


class ScoringSet(NamedTuple):
    images: np.ndarray  # (N, 28, 28, 1) in [0, 1]
    labels: np.ndarray  # one-hot over the model's classes
    source: str  # the directory or file it was read from
    parts: tuple[str, ...] = ()  # each image's part of the set, where it has parts (robustness)


def scoring_sets(
    specs: list[str], classes: tuple[str, ...], cache_dir: str = CACHE_DIR
) -> dict[str, ScoringSet]:
    """Every `evaluate.extra` entry's images and labels, by its name."""
    return {extra_name(spec): scoring_set(spec, classes, cache_dir) for spec in specs}


def scoring_set(spec: str, classes: tuple[str, ...], cache_dir: str = CACHE_DIR) -> ScoringSet:
    """The images and one-hot labels over `classes` (the model's) of an `evaluate.extra` entry;
    a DataError if its classes are not among the model's."""
    kind, _, where = spec.partition(":")
    path = Path(where).expanduser().resolve()
    parts: tuple[str, ...] = ()
    if kind == "mnist":
        raw = fetch_mnist()
        images, labels, names = raw["x_test"], raw["y_test"], DIGITS
        path = Path(CACHE_DIR).expanduser() / CACHE_FILE
    elif kind == "idx":
        raw = read_source(path)
        images, labels, names = raw["x_test"], raw["y_test"], classes
    elif kind == "robustness":
        files = cached_set(cache_dir)
        if missing := handwriting_fonts_missing():
            print(
                f"[mnist_exp.data] robustness set: {len(missing)} fonts missing (make fonts)",
                file=sys.stderr,
            )
        path = files[0].parent
        images = np.stack(read_images(files, True, cache_path(path, cache_dir))[0])
        labels, names = np.array([label(file) for file in files]), DIGITS
        parts = tuple(part_of(file) for file in files)
    else:
        images, labels, names, _ = read_folder(path, None, True, cache_dir)
    if labels.max() >= len(names):
        raise DataError(
            f"evaluate.extra={spec}: labels up to {labels.max()}, but the model has "
            f"{len(classes)} classes; score it with a model of its classes."
        )
    unknown = sorted({names[label] for label in np.unique(labels)} - set(classes))
    if unknown:
        raise DataError(
            f"evaluate.extra={spec}: its classes {', '.join(unknown)} are not the model's "
            f"({', '.join(classes)}); score it with a model of those classes."
        )
    mapped = np.array([classes.index(names[label]) for label in labels])
    return ScoringSet(*preprocess(images, mapped, len(classes)), str(path), parts)
