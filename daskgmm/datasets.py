"""Generated mixtures of known parameters, as lazy dask arrays (for demos, tests, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from numpy.typing import NDArray

__all__ = ["Mixture", "make_mixture"]


@dataclass(frozen=True, eq=False)
class Mixture:
    """A generated dataset and the parameters it was drawn from.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
    labels : dask.array.Array of shape (n_samples,)
        The component each sample was drawn from.
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)
    """

    X: da.Array
    labels: da.Array
    weights: NDArray[np.float64]
    means: NDArray[np.float64]
    covariances: NDArray[np.float64]


def _block(seed, weights, means, factors, dtype, block_info=None):
    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([seed, start])
    n = stop - start
    labels = rng.choice(len(weights), size=n, p=weights)
    z = rng.standard_normal((n, means.shape[1]))
    X = means[labels] + np.einsum("nd,nde->ne", z, factors[labels].transpose(0, 2, 1))
    return np.column_stack([X, labels]).astype(dtype)


def make_mixture(
    n_samples: int,
    n_features: int = 2,
    n_components: int = 3,
    *,
    separation: float = 8.0,
    chunk_rows: int = 100_000,
    dtype: type = np.float64,
    random_state: int = 0,
) -> Mixture:
    """A lazily generated Gaussian mixture with full random covariances.

    Parameters
    ----------
    n_samples, n_features, n_components : int
    separation : float, default=8.0
        Scale of the means relative to the (unit-order) covariances.
    chunk_rows : int, default=100_000
        Rows per block.
    dtype : {numpy.float64, numpy.float32}
    random_state : int
        The same seed and ``chunk_rows`` give the same data.

    Returns
    -------
    Mixture
    """
    rng = np.random.default_rng(random_state)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.uniform(-separation, separation, size=(n_components, n_features))
    a = rng.normal(size=(n_components, n_features, n_features)) / np.sqrt(n_features)
    covariances = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(n_features)
    factors = np.linalg.cholesky(covariances)
    both = da.map_blocks(
        _block,
        random_state,
        weights,
        means,
        factors,
        dtype,
        chunks=(da.core.normalize_chunks(chunk_rows, (n_samples,))[0], (n_features + 1,)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
        new_axis=[0, 1],
    )
    return Mixture(
        both[:, :n_features], both[:, n_features].astype(np.int64), weights, means, covariances
    )
