"""The parameter math of each ``covariance_type``, in one place.

One :class:`CovarianceModel` subclass per type (``full``, ``tied``, ``diag``,
``spherical``) and one registry, :data:`COVARIANCE_MODELS`: what a reviewer
compares with scikit-learn's ``_gaussian_mixture.py`` (precision Cholesky
factors, log-determinants, the M-step from statistics, parameter counts,
sampling). The BLAS tile kernels that compute the E-step and the statistics
live in :mod:`daskgmm._kernels`; a model hands out its kernels through
:meth:`CovarianceModel.plan` and :meth:`CovarianceModel.accumulator`. Nothing
here knows about Dask: every method takes and returns NumPy arrays.

Conventions
-----------
``Xc`` is a block of samples minus a *shift* vector ``c`` (one per iteration,
chosen near the data), and ``deltas`` are the component means minus the same
shift, ``deltas[k] = means[k] - c``. Working with shifted coordinates keeps
the arithmetic well conditioned when the data sit far from the origin
(mean 1e6, std 1), in float32 as well as float64.

Sufficient statistics are accumulated around the current means:
``s1[k] = sum_n r_nk (x_n - means[k])`` and the second moment ``s2`` (its shape
depends on the type, see :meth:`CovarianceModel.s2_shape`). They are float64
whatever the dtype of the data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from . import _kernels
from ._kernels import Accumulator, Moments, Plan

__all__ = ["COVARIANCE_MODELS", "CovarianceModel", "get_covariance_model"]

Float = NDArray[np.floating]

#: scikit-learn's wording, kept verbatim so that users' ``match=`` patterns carry over.
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def _ill_defined(component: int | None, covariance_type: str, dtype: np.dtype) -> ValueError:
    msg = ILL_DEFINED_COVARIANCE
    if dtype == np.float32:
        msg += (
            " The numerical accuracy can also be improved by passing float64"
            " data instead of float32."
        )
    where = "the tied covariance" if component is None else f"component {component}"
    msg += (
        f" ({where} is not positive-definite for covariance_type={covariance_type!r}; "
        "a larger reg_covar, e.g. 1e-3, adds that much variance to every feature.)"
    )
    return ValueError(msg)


def _check_shape(param: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if param.shape != shape:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}"
        )


def _cholesky_of_precision(covariance: Float) -> Float:
    """Upper-triangular ``U`` with ``U @ U.T == inv(covariance)`` (raises LinAlgError)."""
    cov_chol = scipy.linalg.cholesky(covariance, lower=True, check_finite=False)
    if not np.all(np.isfinite(cov_chol)):
        raise np.linalg.LinAlgError("non-finite Cholesky factor")
    eye = np.eye(covariance.shape[0], dtype=covariance.dtype)
    return scipy.linalg.solve_triangular(cov_chol, eye, lower=True, check_finite=False).T


def _flip(a: Float) -> Float:
    return a[::-1, ::-1]


def _precision_cholesky_from_precision(precision: Float) -> Float:
    # The precision's U U^T factor through a Cholesky of the row/column-reversed
    # matrix (scikit-learn #26415): J P J = L L^T  =>  P = (J L J)(J L J)^T.
    return np.ascontiguousarray(_flip(np.linalg.cholesky(_flip(precision))))


def _check_symmetric_pd(precision: Float, covariance_type: str) -> None:
    if not (np.allclose(precision, precision.T) and np.all(np.linalg.eigvalsh(precision) > 0.0)):
        raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")


class CovarianceModel(ABC):
    """Covariance-type specific math of a Gaussian mixture.

    Subclasses are stateless; use the instances in :data:`COVARIANCE_MODELS`.
    """

    name: ClassVar[str]

    #: This type's statistics of given responsibilities (see :data:`daskgmm._kernels.Moments`).
    moments: ClassVar[Moments]

    def tile_rows(self, n_components: int, n_features: int, itemsize: int = 8) -> int:
        """Rows per tile of this type's kernels, for data of ``itemsize`` bytes per value."""
        return _kernels.tile_rows(n_components, n_features, itemsize)

    # ----------------------------------------------------------------- shapes
    @abstractmethod
    def covariances_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_``, ``precisions_`` and ``precisions_cholesky_``."""

    def s2_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the accumulated second-moment statistic.

        ``full``/``diag`` around each mean, ``spherical`` around each mean and
        summed over features, ``tied`` around the shift and summed over
        components.
        """
        return self.covariances_shape(n_components, n_features)

    @abstractmethod
    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters in the covariances."""

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of the whole mixture (weights, means, covariances)."""
        return int(
            self.n_covariance_parameters(n_components, n_features)
            + n_features * n_components
            + n_components
            - 1
        )

    # --------------------------------------------------- precision factors
    @abstractmethod
    def precisions_cholesky(self, covariances: Float) -> Float:
        """Cholesky factors of the precisions, from the covariances.

        Raises
        ------
        ValueError
            If a covariance is not positive-definite; the message names the
            component and suggests ``reg_covar``.
        """

    @abstractmethod
    def precisions_cholesky_from_precisions(self, precisions: Float) -> Float:
        """Cholesky factors of the precisions, from the precisions themselves."""

    @abstractmethod
    def precisions(self, precisions_cholesky: Float) -> Float:
        """Precisions from their Cholesky factors."""

    @abstractmethod
    def covariances_from_precisions(self, precisions: Float) -> Float:
        """Covariances from precisions (used when only ``precisions_init`` is given)."""

    @abstractmethod
    def log_det_cholesky(
        self, precisions_cholesky: Float, n_components: int, n_features: int
    ) -> Float:
        """Log-determinant of each precision Cholesky factor, shape ``(n_components,)``.

        Equal to ``-0.5 * log det(covariance_k)``.
        """

    @abstractmethod
    def check_precisions(self, precisions: Float, n_components: int, n_features: int) -> Float:
        """Validate user-given ``precisions_init`` (scikit-learn's messages)."""

    # --------------------------------------------------------- per block
    @abstractmethod
    def plan(self, deltas: Float, precisions_cholesky: Float, dtype: np.dtype) -> Plan:
        """The E-step kernels of these parameters, in ``dtype``, built once per block.

        Parameters
        ----------
        deltas : ndarray of shape (n_components, n_features), float64
            Means minus the shift.
        precisions_cholesky : ndarray
            Shape as :meth:`covariances_shape`.
        dtype : numpy.dtype
            The dtype of the data block.
        """

    def accumulator(self, deltas: Float, dtype: np.dtype) -> Accumulator:
        """A per-block sum of :attr:`moments` over tiles, for given responsibilities.

        The E-step's own accumulator comes from its plan (:meth:`Plan.accumulator
        <daskgmm._kernels.Plan.accumulator>`), which may reuse the E-step's products.

        Parameters
        ----------
        deltas : ndarray of shape (n_components, n_features), float64
            The means the moments are taken around, minus the shift.
        dtype : numpy.dtype
            The dtype of the data block.
        """
        return Accumulator(self.moments, deltas, dtype, self.s2_shape(*deltas.shape))

    @abstractmethod
    def dense_covariances(
        self, precisions_cholesky: Float, n_components: int, n_features: int
    ) -> Float:
        """Every component's covariance as a (D, D) matrix, shape (K, D, D), float64.

        For the marginals and conditionals of the missing-value E-step, which
        need sub-blocks of the covariances, not of the precisions.
        """

    #: Whether the precisions are diagonal: features independent within a component,
    #: so that a marginal is the same model on fewer features.
    diagonal: ClassVar[bool] = False

    @abstractmethod
    def moments_from_full(self, nk: Float, s1: Float, s: Float, deltas: Float) -> Float:
        """This type's second moment ``s2`` from per-component full moments.

        Parameters
        ----------
        nk : ndarray of shape (n_components,)
        s1 : ndarray of shape (n_components, n_features)
            ``sum_n r_nk (x_n - means_k)``.
        s : ndarray of shape (n_components, n_features, n_features)
            ``sum_n r_nk (x_n - means_k)(x_n - means_k)^T`` (conditional
            expectations for samples with missing values).
        deltas : ndarray of shape (n_components, n_features)
            The means minus the shift.
        """

    @abstractmethod
    def wishart(
        self,
        nk: Float,
        xk: Float,
        sk: Float,
        mean_precision: Float,
        mean_prior: Float,
        mean_precision_prior: float,
        covariance_prior: Float,
        degrees_of_freedom_prior: float,
    ) -> tuple[Float, Float]:
        """The variational posterior of the precisions (scikit-learn's
        ``_estimate_wishart_*``): ``(degrees_of_freedom, covariances)``, the
        covariances normalised by the degrees of freedom.

        ``nk``, ``xk``, ``sk`` are the components' sizes, means and covariances
        (:func:`daskgmm._stats.gaussian_moments`); ``mean_precision`` the
        posterior's ``beta_k``.
        """

    @abstractmethod
    def covariances_from_stats(
        self, nk: Float, s1: Float, s2: Float, deltas: Float, reg_covar: float
    ) -> Float:
        """M-step for the covariances.

        Parameters
        ----------
        nk : ndarray of shape (n_components,)
            Summed responsibilities plus ``10 * eps`` (as scikit-learn).
        s1, s2 : ndarray
            Accumulated statistics, see :meth:`s2_shape` (float64, around the means of ``deltas``).
        deltas : ndarray of shape (n_components, n_features), float64
            The means around which the statistics were accumulated, minus the shift.
        reg_covar : float
            Added to the diagonal.
        """

    @abstractmethod
    def sample(
        self,
        rng: np.random.RandomState,
        means: Float,
        covariances: Float,
        counts: NDArray[np.integer],
    ) -> Float:
        """Draw ``counts[k]`` samples from each component, stacked in component order."""


class Full(CovarianceModel):
    """Each component has its own general covariance matrix."""

    name = "full"

    moments = staticmethod(_kernels.full_moments)

    def tile_rows(self, n_components, n_features, itemsize=8):
        return _kernels.full_tile_rows(n_components, n_features, itemsize)

    def covariances_shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances):
        out = np.empty_like(covariances)
        for k, covariance in enumerate(covariances):
            try:
                out[k] = _cholesky_of_precision(covariance)
            except (np.linalg.LinAlgError, ValueError):
                raise _ill_defined(k, self.name, covariances.dtype) from None
        return out

    def precisions_cholesky_from_precisions(self, precisions):
        return np.stack([_precision_cholesky_from_precision(p) for p in precisions])

    def precisions(self, precisions_cholesky):
        return np.matmul(precisions_cholesky, precisions_cholesky.transpose(0, 2, 1))

    def covariances_from_precisions(self, precisions):
        return np.linalg.inv(precisions)

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        diag = np.diagonal(precisions_cholesky, axis1=1, axis2=2)
        return np.sum(np.log(diag), axis=1)

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_components, n_features, n_features), "full precision")
        for precision in precisions:
            _check_symmetric_pd(precision, self.name)
        return precisions

    def plan(self, deltas, precisions_cholesky, dtype):
        return _kernels.full_plan(deltas, precisions_cholesky, dtype)

    def dense_covariances(self, precisions_cholesky, n_components, n_features):
        inverse = np.linalg.inv(precisions_cholesky)  # P = U U^T => P^-1 = U^-T U^-1
        return np.matmul(inverse.transpose(0, 2, 1), inverse)

    def moments_from_full(self, nk, s1, s, deltas):
        return s

    def wishart(self, nk, xk, sk, mean_precision, mean_prior, beta0, cov0, dof0):
        dof = dof0 + nk
        diff = xk - mean_prior
        scale = (nk * beta0 / mean_precision)[:, None, None]
        covariances = cov0 + nk[:, None, None] * sk + scale * diff[:, :, None] * diff[:, None, :]
        return dof, covariances / dof[:, None, None]

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        mean_shift = s1 / nk[:, None]
        cov = s2 / nk[:, None, None] - mean_shift[:, :, None] * mean_shift[:, None, :]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        idx = np.arange(cov.shape[1])
        cov[:, idx, idx] += reg_covar
        return cov

    def sample(self, rng, means, covariances, counts):
        return np.vstack(
            [rng.multivariate_normal(m, c, int(n)) for m, c, n in zip(means, covariances, counts)]
        )


class Tied(CovarianceModel):
    """All components share one general covariance matrix."""

    name = "tied"
    moments = staticmethod(_kernels.tied_moments)

    def covariances_shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances):
        try:
            return _cholesky_of_precision(covariances)
        except (np.linalg.LinAlgError, ValueError):
            raise _ill_defined(None, self.name, covariances.dtype) from None

    def precisions_cholesky_from_precisions(self, precisions):
        return _precision_cholesky_from_precision(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.T

    def covariances_from_precisions(self, precisions):
        return np.linalg.inv(precisions)

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        return np.full(n_components, np.sum(np.log(np.diagonal(precisions_cholesky))))

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_features, n_features), "tied precision")
        _check_symmetric_pd(precisions, self.name)
        return precisions

    def plan(self, deltas, precisions_cholesky, dtype):
        return _kernels.TiedPlan.build(deltas, precisions_cholesky, dtype)

    def dense_covariances(self, precisions_cholesky, n_components, n_features):
        inverse = np.linalg.inv(precisions_cholesky)
        return np.broadcast_to(inverse.T @ inverse, (n_components, *inverse.shape)).copy()

    def moments_from_full(self, nk, s1, s, deltas):
        # around the shift, summed over components: (x - c) = (x - mu_k) + d_k
        cross = s1.T @ deltas
        return np.sum(s, axis=0) + cross + cross.T + (deltas * nk[:, None]).T @ deltas

    def wishart(self, nk, xk, sk, mean_precision, mean_prior, beta0, cov0, dof0):
        n_components = len(nk)
        dof = dof0 + nk.sum() / n_components
        diff = xk - mean_prior
        covariances = (
            cov0
            + sk * nk.sum() / n_components
            + beta0 / n_components * np.dot((nk / mean_precision) * diff.T, diff)
        )
        return np.full(n_components, dof), covariances / dof

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        centers = deltas + s1 / nk[:, None]  # new means minus the shift
        between = (centers * nk[:, None]).T @ centers
        cov = (s2 - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov.flat[:: cov.shape[0] + 1] += reg_covar
        return cov

    def sample(self, rng, means, covariances, counts):
        return np.vstack(
            [rng.multivariate_normal(m, covariances, int(n)) for m, n in zip(means, counts)]
        )


class _Diagonal(CovarianceModel):
    """Shared code of the ``diag`` and ``spherical`` types (diagonal precisions)."""

    diagonal = True

    def s2_shape(self, n_components, n_features):
        return (n_components, n_features)

    def precisions_cholesky(self, covariances):
        bad = ~(covariances > 0.0)  # catches NaN too
        if np.any(bad):
            k = int(np.argwhere(bad.reshape(len(covariances), -1).any(axis=1))[0, 0])
            raise _ill_defined(k, self.name, covariances.dtype)
        return 1.0 / np.sqrt(covariances)

    def precisions_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky**2

    def covariances_from_precisions(self, precisions):
        return 1.0 / precisions

    def _check_positive(self, precisions):
        if np.any(np.less_equal(precisions, 0.0)):
            raise ValueError(f"'{self.name} precision' should be positive")
        return precisions

    def _diagonal_covariances(self, nk, s1, s2, reg_covar):
        mean_shift = s1 / nk[:, None]
        return s2 / nk[:, None] - mean_shift**2 + reg_covar


class Diag(_Diagonal):
    """Each component has its own diagonal covariance matrix."""

    name = "diag"
    moments = staticmethod(_kernels.diag_moments)

    def covariances_shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components * n_features

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        return np.sum(np.log(precisions_cholesky), axis=1)

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_components, n_features), "diag precision")
        return self._check_positive(precisions)

    def plan(self, deltas, precisions_cholesky, dtype):
        return _kernels.DiagPlan.build(deltas, precisions_cholesky, dtype)

    def dense_covariances(self, precisions_cholesky, n_components, n_features):
        variances = 1.0 / precisions_cholesky**2
        return variances[:, :, None] * np.eye(variances.shape[1])

    def moments_from_full(self, nk, s1, s, deltas):
        return np.diagonal(s, axis1=1, axis2=2).copy()

    def wishart(self, nk, xk, sk, mean_precision, mean_prior, beta0, cov0, dof0):
        dof = dof0 + nk
        diff = xk - mean_prior
        covariances = cov0 + nk[:, None] * (sk + (beta0 / mean_precision)[:, None] * diff**2)
        return dof, covariances / dof[:, None]

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        return self._diagonal_covariances(nk, s1, s2, reg_covar)

    def sample(self, rng, means, covariances, counts):
        return np.vstack(
            [
                m + rng.standard_normal(size=(int(n), len(m))) * np.sqrt(c)
                for m, c, n in zip(means, covariances, counts)
            ]
        )


class Spherical(_Diagonal):
    """Each component has its own single variance."""

    name = "spherical"
    moments = staticmethod(_kernels.spherical_moments)

    def covariances_shape(self, n_components, n_features):
        return (n_components,)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        return n_features * np.log(precisions_cholesky)

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_components,), "spherical precision")
        return self._check_positive(precisions)

    def plan(self, deltas, precisions_cholesky, dtype):
        return _kernels.SphericalPlan.build(deltas, precisions_cholesky, dtype)

    def s2_shape(self, n_components, n_features):
        return (n_components,)

    def dense_covariances(self, precisions_cholesky, n_components, n_features):
        return (1.0 / precisions_cholesky**2)[:, None, None] * np.eye(n_features)

    def moments_from_full(self, nk, s1, s, deltas):
        return np.trace(s, axis1=1, axis2=2)

    def wishart(self, nk, xk, sk, mean_precision, mean_prior, beta0, cov0, dof0):
        dof = dof0 + nk
        diff = xk - mean_prior
        covariances = cov0 + nk * (sk + beta0 / mean_precision * np.mean(diff**2, axis=1))
        return dof, covariances / dof

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        mean_shift = s1 / nk[:, None]
        return s2 / (nk * s1.shape[1]) - np.mean(mean_shift**2, axis=1) + reg_covar

    def sample(self, rng, means, covariances, counts):
        return Diag().sample(
            rng, means, np.repeat(covariances[:, None], means.shape[1], axis=1), counts
        )


#: The one registry of covariance types.
COVARIANCE_MODELS: dict[str, CovarianceModel] = {
    m.name: m for m in (Full(), Tied(), Diag(), Spherical())
}


def get_covariance_model(covariance_type: str) -> CovarianceModel:
    """The :class:`CovarianceModel` for ``covariance_type``.

    Raises
    ------
    ValueError
        For an unknown type, listing the known ones.
    """
    try:
        return COVARIANCE_MODELS[covariance_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}; "
            f"expected one of {sorted(COVARIANCE_MODELS)}."
        ) from None
