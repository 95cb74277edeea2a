"""The one-pass data summary: rows, and each feature's weighted mean and spread.

Oracles: NumPy's weighted mean and variance of the observed values, the direct
sum of squared distances, and the same summary of the stacked blocks.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from daskgmm._summary import Summary, summarize, summary_chunk


def _data(rng, n=3000):
    X = 1e4 + rng.normal(size=(n, 3)) * [1.0, 1e-3, 50.0]  # far from the origin
    X[rng.rand(n) < 0.1, 1] = np.nan  # holes in one feature
    w = rng.uniform(0.5, 2.0, n)
    return X, w


def test_blocks_add_up_to_the_summary_of_the_whole(rng):
    X, w = _data(rng)
    whole = summary_chunk(X, False, w)
    parts = [summary_chunk(X[a:b], False, w[a:b]) for a, b in ((0, 1), (1, 1000), (1000, 3000))]
    added = parts[0] + (parts[1] + parts[2])
    for got in (added, summarize(da.from_array(X, chunks=700), da.from_array(w, chunks=700))):
        assert got.rows == 3000
        np.testing.assert_allclose(got.count, whole.count, rtol=1e-13)
        np.testing.assert_allclose(got.mean, whole.mean, rtol=1e-14)
        np.testing.assert_allclose(got.m2, whole.m2, rtol=1e-9)
    for j in range(3):  # against NumPy's weighted moments of the observed values
        seen = ~np.isnan(X[:, j])
        mean = np.average(X[seen, j], weights=w[seen])
        np.testing.assert_allclose(whole.mean[j], mean, rtol=1e-14)
        np.testing.assert_allclose(whole.m2[j], np.sum(w[seen] * (X[seen, j] - mean) ** 2),
                                   rtol=1e-9)  # fmt: skip
        np.testing.assert_allclose(whole.std[j], np.sqrt(np.cov(X[seen, j], aweights=w[seen],
                                   ddof=0)), rtol=1e-9)  # fmt: skip
    assert not whole.complete  # holes, and weights
    assert Summary.__add__(summary_chunk(X[:0], False), whole).rows == 3000  # empty blocks


def test_the_cost_to_a_centre_is_the_sum_of_squared_distances(rng):
    X = 1e4 + rng.normal(size=(2000, 4))
    centre = X[17]
    summary = summary_chunk(X, True)
    assert summary.complete
    np.testing.assert_allclose(summary.cost(centre), np.sum((X - centre) ** 2), rtol=1e-10)
    scaled = summary.scaled(X.mean(0), X.std(0))
    np.testing.assert_allclose(scaled.mean, 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled.m2 / scaled.count, 1.0, rtol=1e-10)


def test_bad_values_are_named_by_their_row():
    X = np.ones((5, 2))
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"infinity.*\(first in row 13\)"):
        summary_chunk(X, False, row_offset=10)
    X[3, 1] = np.nan
    assert summary_chunk(X, False).count.tolist() == [5.0, 4.0]  # NaN: missing
    with pytest.raises(ValueError, match=r"NaN.*first in row 3"):
        summary_chunk(X, True)  # where NaN is not a missing value
