"""Inputs -> a validated dask array chunked along samples only.

Accepted: NumPy arrays (and array-likes), dask arrays, 2-D ``xarray.DataArray``
(samples x features). Shape and dtype problems are reported before any
computation; NaN/inf in a dask array are found in the first pass over the data
by the per-block kernels (no extra pass only for validation). NumPy input gets
scikit-learn's own ``check_array`` (same messages as ``GaussianMixture``).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import dask.array as da
import numpy as np
from sklearn.utils import check_array

__all__ = ["as_dask_array", "check_sample_weight", "is_lazy", "row_chunks", "unwrap_xarray"]

logger = logging.getLogger(__name__)

#: Target size of one block of samples, in bytes.
TARGET_CHUNK_BYTES = 64 * 2**20
_ESTIMATOR = "GaussianMixture"


def is_lazy(X: Any) -> bool:
    """True for inputs whose predictions should stay lazy (dask, or dask-backed xarray)."""
    if isinstance(X, da.Array):
        return True
    data = getattr(X, "data", None)
    return hasattr(X, "dims") and isinstance(data, da.Array)


def row_chunks(n_samples: int, n_features: int, itemsize: int) -> int:
    """Rows per block for in-memory data: ~64 MB blocks, at least two per core."""
    cap = max(1, TARGET_CHUNK_BYTES // max(1, n_features * itemsize))
    per_core = math.ceil(n_samples / (2 * (os.cpu_count() or 1)))
    return int(max(1, min(cap, max(per_core, 4096))))


def unwrap_xarray(X: Any) -> Any:
    """The data of a 2-D ``xarray.DataArray`` (samples, features); other inputs unchanged."""
    if hasattr(X, "dims") and hasattr(X, "data") and hasattr(X, "coords"):
        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2-D DataArray (samples, features), got dims {tuple(X.dims)}. "
                "Stack the sample dimensions first, e.g. "
                "da.stack(sample=('y', 'x')).transpose('sample', 'band')."
            )
        return X.data
    return X


def _check_dask_array(X: da.Array, min_samples: int) -> da.Array:
    if X.ndim == 1:
        raise ValueError(
            "Expected 2D array, got 1D array instead. Reshape your data either using "
            "array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
            "if it contains a single sample."
        )
    if X.ndim != 2:
        raise ValueError(
            f"Found array with dim {X.ndim}, while dim <= 2 is required by {_ESTIMATOR}."
        )
    if any(math.isnan(s) for s in X.shape):
        raise ValueError(
            "X has unknown chunk sizes (NaN in its shape); call X.compute_chunk_sizes() first."
        )
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    if X.dtype.kind in "biu":
        X = X.astype(np.float64)
    elif X.dtype.kind == "f" and X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    elif X.dtype.kind != "f":
        raise TypeError(
            f"X must hold numbers; got a dask array of dtype {X.dtype}. "
            "Convert it with X.astype('float64')."
        )
    n_samples, n_features = X.shape
    if n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={X.shape}) while a minimum of "
            f"{min_samples} is required by {_ESTIMATOR}."
        )
    if n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
            f"required by {_ESTIMATOR}."
        )
    if X.numblocks[1] > 1:
        logger.info(
            "X has %d chunks along the features; rechunking to one (X.rechunk({1: -1})).",
            X.numblocks[1],
        )
        X = X.rechunk({1: -1})
    return X


def as_dask_array(X: Any, *, min_samples: int = 1) -> da.Array:
    """Validate ``X`` and return it as a dask array of shape (n_samples, n_features).

    Parameters
    ----------
    X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)
    min_samples : int, default=1
        Fewer samples is an error.

    Returns
    -------
    dask.array.Array
        float32 or float64, one chunk along the features.

    Raises
    ------
    ValueError
        Wrong number of dimensions, too few samples, complex data, NaN/inf in
        NumPy input (dask input: at the first pass over the data).
    TypeError
        Non-numeric data.
    """
    X = unwrap_xarray(X)
    if isinstance(X, da.Array):
        return _check_dask_array(X, min_samples)
    X = check_array(
        X,
        dtype=[np.float64, np.float32],
        ensure_min_samples=min_samples,
        estimator=_ESTIMATOR,
    )
    rows = row_chunks(X.shape[0], X.shape[1], X.dtype.itemsize)
    return da.from_array(X, chunks=(rows, -1))


def check_sample_weight(sample_weight: Any, X: da.Array) -> da.Array | None:
    """Validate ``sample_weight`` against ``X``; returns a float64 dask array or None.

    NumPy weights are checked now; the values of dask weights when first read.
    """
    if sample_weight is None:
        return None
    n_samples = X.shape[0]
    if isinstance(sample_weight, da.Array):
        if sample_weight.ndim != 1 or sample_weight.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight.shape == {sample_weight.shape}, expected ({n_samples},)!"
            )
        return sample_weight.astype(np.float64).map_blocks(_check_weight_block, dtype=np.float64)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n_samples},)!")
    _check_weight_block(w)
    return da.from_array(w, chunks=(X.chunks[0],))


def _check_weight_block(w: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(w)):
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if np.any(w < 0):
        raise ValueError("Negative values in data passed to `sample_weight`")
    return w
