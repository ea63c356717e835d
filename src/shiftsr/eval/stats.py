"""The statistics of every evaluation: mean, standard error, paired differences and Spearman's rank correlation."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def mean(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """The arithmetic mean, or the weighted one (image counts as weights pool the means of several sets)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("the mean of no values")
    return float(np.average(values, weights=weights))


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean: the sample standard deviation (n - 1 dof) over sqrt(n); nan below two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.size))


@dataclass(frozen=True)
class Difference:
    """A paired comparison of a and b on the same items: the mean of a - b, its standard error, wins of a > b."""

    mean: float
    standard_error: float
    wins: int
    count: int


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Per-item a - b (item i of both is the same image): mean, standard error and how many items have a > b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two lists of one length, got shapes {a.shape} and {b.shape}")
    difference = a - b
    return Difference(mean(difference), standard_error(difference), int((difference > 0).sum()), difference.size)


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy.stats.rankdata, method 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordinal = np.empty(values.size)
    ordinal[order] = np.arange(1, values.size + 1)
    _, groups = np.unique(values, return_inverse=True)
    return np.bincount(groups, ordinal)[groups] / np.bincount(groups)[groups]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Spearman 1904): the Pearson correlation of the average ranks; nan where one side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two lists of one length >= 2, got {len(x)} and {len(y)}")
    rx, ry = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2
    norm = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return math.nan if norm == 0 else float((rx * ry).sum() / norm)
