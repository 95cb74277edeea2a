"""Preprocessing kept inside a model: standardisation and PCA, applied to every input.

A mixture fitted with ``standardize=True`` and/or ``pca=N`` models
``Z = ((X - mean) / scale) @ components.T``; predictions, scores and the
command line apply the same map, read from the model file (plain arrays, no
pickle). The map's statistics come from the data: their means and standard
deviations from a :class:`~daskgmm._summary.Summary` (a pass that also gives
k-means|| its first round, or an unknown-length table its lengths), and for PCA
a randomised SVD of the centred (scaled) data
(:func:`dask.array.linalg.svd_compressed`, a few more passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._summary import Summary

__all__ = ["Transform", "fit_transform"]

Float = NDArray[np.floating]

#: The arrays a model file stores, by name.
ARRAY_NAMES = ("mean", "scale", "components", "explained_variance_ratio")


@dataclass(frozen=True, eq=False)
class Transform:
    """``Z = ((X - mean) / scale) @ components.T`` (no projection without components).

    Parameters
    ----------
    mean, scale : ndarray of shape (n_features,)
        ``scale`` is the standard deviations (1 where a feature is constant), or
        ones without standardisation.
    components : ndarray of shape (n_components, n_features) or None
        Orthonormal rows: the principal axes, largest variance first.
    explained_variance_ratio : ndarray of shape (n_components,) or None
        The share of the (scaled) data's total variance along each axis.
    """

    mean: Float
    scale: Float
    components: Float | None = None
    explained_variance_ratio: Float | None = None

    @property
    def n_features_out(self) -> int:
        return len(self.mean) if self.components is None else len(self.components)

    def apply(self, X: Float) -> Float:
        """The map of a NumPy block (NaN stay NaN), in the block's float dtype."""
        Z = (np.asarray(X, np.float64) - self.mean) / self.scale
        if self.components is not None:
            Z = Z @ self.components.T
        return Z.astype(X.dtype if X.dtype in (np.float32, np.float64) else np.float64)

    def inverse(self, Z: Float) -> Float:
        """Back to the input's units (with PCA: the point of the principal subspace)."""
        Z = np.asarray(Z, np.float64)
        if self.components is not None:
            Z = Z @ self.components
        return Z * self.scale + self.mean

    def to_arrays(self) -> dict[str, Float]:
        arrays = {"mean": self.mean, "scale": self.scale}
        if self.components is not None:
            arrays["components"] = self.components
            arrays["explained_variance_ratio"] = self.explained_variance_ratio
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], n_features: int, where: str) -> Transform:
        """A transform read back, every shape and value checked."""
        n_out = None
        if "components" in arrays:
            n_out = np.shape(arrays["components"])[0]
        expected = {"mean": (n_features,), "scale": (n_features,)}
        if n_out is not None:
            expected.update(components=(n_out, n_features), explained_variance_ratio=(n_out,))
        for name, shape in expected.items():
            a = np.asarray(arrays.get(name))
            if a.shape != shape or a.dtype.kind != "f" or not np.all(np.isfinite(a)):
                raise ValueError(f"{where}: transform array {name!r} is not finite {shape}.")
        if np.any(np.asarray(arrays["scale"]) <= 0):
            raise ValueError(f"{where}: transform array 'scale' holds values <= 0.")
        return cls(
            np.asarray(arrays["mean"], np.float64),
            np.asarray(arrays["scale"], np.float64),
            None if n_out is None else np.asarray(arrays["components"], np.float64),
            None if n_out is None else np.asarray(arrays["explained_variance_ratio"], np.float64),
        )


def fit_transform(
    X: Any, summary: Summary, standardize: bool, n_pca: int | None, seed: int
) -> Transform:
    """The transform of a dask array ``X`` whose :class:`~daskgmm._summary.Summary`
    (means and standard deviations, NaN left out) is ``summary``; with ``n_pca``, a
    randomised SVD of the centred, scaled data (a few passes)."""
    import dask
    import dask.array as da

    mean, std = summary.mean, summary.std
    scale = np.where(std > 0, std, 1.0) if standardize else np.ones_like(mean)
    if not n_pca:
        return Transform(mean, scale)
    Z = (X.astype(np.float64) - mean) / scale
    _, s, v = da.linalg.svd_compressed(Z, k=int(n_pca), seed=seed, n_power_iter=2)
    s, v = dask.compute(s, v)
    total = float(np.sum((std / scale) ** 2)) * X.shape[0]
    ratio = s**2 / total if total > 0 else np.zeros_like(s)
    return Transform(mean, scale, np.asarray(v, np.float64), np.asarray(ratio, np.float64))
