"""daskgmm: Gaussian Mixture Models fitted by distributed EM on Dask.

The public names are imported lazily, so that the pure-NumPy kernels
(``daskgmm._stats``, ``daskgmm._covariance``) can be imported without Dask.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GaussianMixture": "daskgmm.mixture",
    "BayesianGaussianMixture": "daskgmm.bayesian",
    "fit_em": "daskgmm._em",
    "EMResult": "daskgmm._em",
    "IterationInfo": "daskgmm._em",
    "GMMParams": "daskgmm._stats",
    "SuffStats": "daskgmm._stats",
    "COVARIANCE_MODELS": "daskgmm._covariance",
    "CovarianceModel": "daskgmm._covariance",
}

__all__ = [*sorted(_EXPORTS), "__version__", "load"]


def load(path: Any) -> Any:
    """Load a model saved with :meth:`GaussianMixture.save` (a :class:`GaussianMixture`
    or a :class:`BayesianGaussianMixture`, as the file says).

    Parameters
    ----------
    path : str or path-like
        Directory or fsspec URL of the Zarr model.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        Not a daskgmm model, a newer format version, a missing array or a wrong shape.
    """
    from .mixture import GaussianMixture

    return GaussianMixture.load(path)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'daskgmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
