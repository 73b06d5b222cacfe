"""How the 60,000 training images divide into training and validation. Each option of the `split`
group names one of these builders: it gets the training labels and returns both index arrays."""

from typing import Annotated

import numpy as np
from annotated_types import Ge, Interval

from mnist_exp.config.schema import MNIST_TRAIN_SIZE
from mnist_exp.errors import ConfigError

Indices = tuple[np.ndarray, np.ndarray]  # (training, validation) positions, each ascending
Size = Annotated[int, Interval(ge=1, lt=MNIST_TRAIN_SIZE)]


def holdout(labels: np.ndarray, size: Size = 5000) -> Indices:
    """The seed's split: the last `size` images validate, the ones before them train."""
    cut = len(labels) - size
    return np.arange(cut), np.arange(cut, len(labels))


def stratified(labels: np.ndarray, size: Size = 5000, seed: Annotated[int, Ge(0)] = 0) -> Indices:
    """A seeded random `size` images validate, each digit in the same share as in all 60,000."""
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(
        np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed
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
