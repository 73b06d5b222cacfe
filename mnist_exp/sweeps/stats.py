"""Statistics that say whether a difference is real: a repeated configuration's spread and
t interval, and McNemar's exact test for two models scored on the same test digits."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Spread:
    """Repetitions of one measurement: n, mean, sample std, range and a t interval of the mean.
    What n cannot tell (std and interval below n = 2, everything at n = 0) is NaN."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    low: float
    high: float


def spread(values: Sequence[float], confidence: float = 0.95) -> Spread:
    """The spread of `values` and the Student-t interval holding their true mean at `confidence`."""
    x = np.asarray(values, dtype=float)
    n, nan = len(x), math.nan
    if n == 0:
        return Spread(0, nan, nan, nan, nan, nan, nan)
    mean = float(x.mean())
    if n == 1:
        return Spread(1, mean, nan, mean, mean, nan, nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, float(x.min()), float(x.max()), mean - half, mean + half)


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> tuple[int, int, float]:
    """(digits only A got right, only B got right, two-sided exact p-value): under "A and B are
    equally good" each disagreement is a fair coin, so the p-value is a binomial test."""
    a_right, b_right = np.asarray(a_right, bool), np.asarray(b_right, bool)
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(b_right & ~a_right))
    if only_a + only_b == 0:
        return 0, 0, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
