"""daskgmm: Gaussian Mixture Models fitted by distributed EM on Dask."""

from ._covariance import COVARIANCE_MODELS, CovarianceModel
from ._em import EMResult, IterationInfo, fit_em
from ._stats import GMMParams, SuffStats
from .mixture import GaussianMixture

__version__ = "0.1.0"

__all__ = [
    "COVARIANCE_MODELS",
    "CovarianceModel",
    "EMResult",
    "GMMParams",
    "GaussianMixture",
    "IterationInfo",
    "SuffStats",
    "__version__",
    "fit_em",
]
