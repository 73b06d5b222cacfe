"""How a dataset's training images (MNIST's 60,000) divide into training and validation. Each
option of the `split` group names one of these builders: it gets the training labels and returns
both index arrays."""

from typing import Annotated

import numpy as np
from annotated_types import Ge
from pydantic import AfterValidator

from mnist_exp.data import Indices
from mnist_exp.errors import ConfigError


def size_given(size: int | float) -> int | float:
    if not (size >= 1 if isinstance(size, int) else 0 < size < 1):
        raise ValueError("use a number of images (>= 1) or a fraction of them (0.1: a tenth)")
    return size


Size = Annotated[int | float, AfterValidator(size_given)]  # validation images


def count(size: int | float, images: int) -> int:
    """`size` as a number of the `images` training images; a ConfigError unless some remain."""
    chosen = round(size * images) if isinstance(size, float) else size
    if not 1 <= chosen < images:
        raise ConfigError(
            f"split.size={size} is not allowed: the dataset has {images} training images; "
            "validate fewer, or give a fraction such as 0.1."
        )
    return chosen


def holdout(labels: np.ndarray, size: Size = 5000) -> Indices:
    """The seed's split: the last `size` images validate, the ones before them train."""
    cut = len(labels) - count(size, len(labels))
    return np.arange(cut), np.arange(cut, len(labels))


def stratified(labels: np.ndarray, size: Size = 5000, seed: Annotated[int, Ge(0)] = 0) -> Indices:
    """A seeded random `size` images validate, each class in the same share as in them all."""
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(
        np.arange(len(labels)),
        test_size=count(size, len(labels)),
        stratify=labels,
        random_state=seed,
    )
    return np.sort(train), np.sort(val)


def kfold(
    labels: np.ndarray,
    k: Annotated[int, Ge(2)] = 5,
    fold: Annotated[int, Ge(0)] = 0,
    seed: Annotated[int, Ge(0)] = 0,
) -> Indices:
    """Fold `fold` of k stratified folds validates, the other k - 1 train. The folds depend only on
    `k` and `seed`, so folds 0..k-1 validate every image exactly once."""
    from sklearn.model_selection import StratifiedKFold

    if fold >= k:
        raise ConfigError(f"split.fold={fold} is not allowed: use 0..{k - 1} (split.k={k}).")
    folds = StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)
    for _ in range(fold):
        next(folds)
    return next(folds)
