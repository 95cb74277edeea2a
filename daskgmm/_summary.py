"""What one pass tells of the data: its rows, and each feature's mean and spread.

A :class:`Summary` serves three needs from the one pass that computes it:

- the lengths of blocks that do not know them (CSV files, dask DataFrames), so
  that a table of unknown partition lengths costs no pass of its own;
- the standardisation's means and standard deviations (``standardize=True``);
- the first round of k-means||, whose only product is the data's total squared
  distance to each restart's first centre: ``sum_j M2_j + W * ||mean - c||^2``
  (see :func:`daskgmm._init._kmeans_parallel_seeds`).

Blocks are combined with Chan, Golub and LeVeque's pairwise update, so the
spread stays exact far from the origin, where ``sum x^2 - n mean^2`` cancels.
Missing values (NaN) are left out per feature; ``inf`` is refused, naming its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Summary", "summarize", "summary_chunk"]

Float = NDArray[np.floating]


@dataclass(frozen=True, eq=False)
class Summary:
    """Rows and per-feature (weighted) moments of some samples.

    Parameters
    ----------
    rows : int
        Samples (rows), whatever their values.
    count : ndarray of shape (n_features,)
        Each feature's observed (not NaN) values, weighted by the sample weights.
    mean : ndarray of shape (n_features,)
        Their mean (0 where none is observed).
    m2 : ndarray of shape (n_features,)
        Their weighted sum of squared deviations from ``mean``.
    """

    rows: int
    count: Float
    mean: Float
    m2: Float

    def __add__(self, other: Summary) -> Summary:
        count = self.count + other.count
        delta = other.mean - self.mean
        share = np.divide(other.count, count, out=np.zeros_like(count), where=count > 0)
        return Summary(
            self.rows + other.rows,
            count,
            self.mean + delta * share,
            self.m2 + other.m2 + delta**2 * self.count * share,
        )

    @property
    def std(self) -> Float:
        """The standard deviations (``ddof=0``; 0 where nothing is observed)."""
        return np.sqrt(
            np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0)
        )

    @property
    def complete(self) -> bool:
        """Unweighted, every value observed and finite: the moments of every sample."""
        return bool(
            np.all(self.count == self.rows)
            and np.all(np.isfinite(self.mean))
            and np.all(np.isfinite(self.m2))
        )

    def cost(self, center: Float) -> float:
        """The (weighted) sum over the samples of their squared distance to ``center``."""
        return float(np.sum(self.m2) + np.sum(self.count * (self.mean - center) ** 2))

    def scaled(self, mean: Float, scale: Float) -> Summary:
        """The summary of ``(X - mean) / scale``."""
        return Summary(self.rows, self.count, (self.mean - mean) / scale, self.m2 / scale**2)


def summary_chunk(
    X: Float, finite: bool, sample_weight: Float | None = None, row_offset: int | None = 0
) -> Summary:
    """The :class:`Summary` of one block; with ``finite``, NaN is refused too (as
    every other pass refuses it without missing values), naming its row."""
    from ._stats import _raise_nonfinite

    X = np.asarray(X)
    observed = ~np.isnan(X)
    if (finite and not observed.all()) or np.isinf(X).any():
        _raise_nonfinite(X if finite else np.where(observed, X, 0.0), row_offset)
    w = np.ones((len(X), 1)) if sample_weight is None else np.asarray(sample_weight)[:, None]
    weights = np.where(observed, w, 0.0)
    values = np.where(observed, X, 0.0).astype(np.float64)
    count = weights.sum(axis=0)
    mean = np.divide(
        np.sum(weights * values, axis=0), count, out=np.zeros_like(count), where=count > 0
    )
    deviations = np.where(observed, values - mean, 0.0)
    return Summary(len(X), count, mean, np.sum(weights * deviations**2, axis=0))


def summarize(X: Any, sample_weight: Any = None, finite: bool = False) -> Summary:
    """The :class:`Summary` of a dask array of known lengths, in one pass."""
    from ._reduction import map_reduce

    return map_reduce(X, summary_chunk, finite, sample_weight=sample_weight, name="daskgmm-summary")
