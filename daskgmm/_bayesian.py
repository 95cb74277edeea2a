"""Variational Bayesian Gaussian mixtures: scikit-learn's ``BayesianGaussianMixture``
on daskgmm's statistics.

The variational E-step is the Gaussian E-step with per-component constants
(:func:`estep_params`): the expected log-weights of the Dirichlet (process)
prior, and ``0.5 (E[log det Lambda] - D / beta)`` with the precisions scaled
by the degrees of freedom. So each block's statistics are daskgmm's shifted
float64 ``SuffStats`` with one more number, ``sum r log r`` (the E-step's
``entropy`` score), and the variational M-step (:func:`update`) and the lower
bound (:func:`lower_bound`) run on the driver from the totals. NumPy and
SciPy only, as the rest of the math.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray
from scipy.special import betaln, digamma, gammaln

from ._covariance import get_covariance_model
from ._stats import EStepParams

Float = NDArray[np.floating]

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True, eq=False)
class Priors:
    """The priors, as scikit-learn's fitted ``*_prior_`` attributes."""

    weight_concentration_prior_type: str
    weight_concentration_prior: float
    mean_precision_prior: float
    mean_prior: Float  # (D,)
    degrees_of_freedom_prior: float
    covariance_prior: Float  # the covariance type's shape without the components


@dataclass(frozen=True, eq=False)
class BayesParams:
    """The variational posterior and its priors, float64.

    ``weight_concentration`` is ``(2, K)`` (a Beta per component) for a
    Dirichlet process, ``(1, K)`` for a Dirichlet distribution;
    ``degrees_of_freedom`` is per component even for ``tied`` (all equal).
    The priors travel with the posterior: checkpoints, warm starts and model
    files keep the data-dependent ones found at the initialisation.
    """

    covariance_type: str
    weight_concentration: Float
    mean_precision: Float
    means: Float
    degrees_of_freedom: Float
    covariances: Float
    precisions_cholesky: Float
    priors: Priors

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> Float:
        """The expected weights (scikit-learn's ``weights_``)."""
        if len(self.weight_concentration) == 2:
            a, b = self.weight_concentration
            total = a + b
            weights = a / total * np.hstack((1.0, np.cumprod(b / total)[:-1]))
            return weights / weights.sum()
        concentration = self.weight_concentration[0]
        return concentration / concentration.sum()

    def estep(self, shift: Float | None = None) -> EStepParams:
        """The variational E-step's constants (see :func:`estep_params`)."""
        return estep_params(self, shift)

    def to_arrays(self) -> dict[str, Float]:
        """The arrays by name (checkpoints, model files, digests); the priors' scalars
        as ``prior_scalars``: weight concentration, mean precision, degrees of freedom."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self)[1:-1]}
        p = self.priors
        arrays["mean_prior"] = p.mean_prior
        arrays["covariance_prior"] = np.atleast_1d(np.asarray(p.covariance_prior, np.float64))
        arrays["prior_scalars"] = np.array(
            [p.weight_concentration_prior, p.mean_precision_prior, p.degrees_of_freedom_prior]
        )
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, Float], covariance_type: str, prior_type: str, where: str
    ) -> BayesParams:
        """Parameters from :meth:`to_arrays`'s arrays, every shape and value checked:
        ``ValueError`` naming ``where`` and the array otherwise."""
        expected = array_shapes(arrays.get("means", np.empty(0)).shape, covariance_type, prior_type)
        if expected is None:
            raise ValueError(f"{where}: 'means' is missing or not 2-D.")
        for name, shape in expected.items():
            if name not in arrays:
                raise ValueError(f"{where} is incomplete: array {name!r} is missing.")
            if arrays[name].shape != shape:
                raise ValueError(
                    f"{where}: '{name}' has shape {arrays[name].shape}, expected {shape}."
                )
            if not np.all(np.isfinite(arrays[name])):
                raise ValueError(f"{where}: '{name}' holds NaN or infinite values.")
        a = {name: np.asarray(arrays[name], dtype=np.float64) for name in expected}
        n_features = a["means"].shape[1]
        scalars = a["prior_scalars"]
        if not (
            np.all(a["weight_concentration"] > 0)
            and np.all(a["mean_precision"] > 0)
            and np.all(a["degrees_of_freedom"] > n_features - 1)
            and scalars[0] > 0
            and scalars[1] > 0
            and scalars[2] > n_features - 1
        ):
            raise ValueError(
                f"{where}: concentrations, mean precisions and degrees of freedom must be "
                "positive (degrees of freedom above n_features - 1)."
            )
        model = get_covariance_model(covariance_type)
        model.precisions_cholesky(a["covariances"])  # positive-definite, else ValueError
        covariance_prior = a["covariance_prior"]
        if covariance_type == "spherical":
            covariance_prior = covariance_prior[0]
        priors = Priors(prior_type, scalars[0], scalars[1], a["mean_prior"], scalars[2],
                        covariance_prior)  # fmt: skip
        return cls(
            covariance_type,
            a["weight_concentration"],
            a["mean_precision"],
            a["means"],
            a["degrees_of_freedom"],
            a["covariances"],
            a["precisions_cholesky"],
            priors,
        )


def array_shapes(
    means_shape: tuple[int, ...], covariance_type: str, prior_type: str
) -> dict[str, tuple[int, ...]] | None:
    """The shape of every array of :meth:`BayesParams.to_arrays` for ``means`` of this shape."""
    if len(means_shape) != 2:
        return None
    n_components, n_features = means_shape
    model = get_covariance_model(covariance_type)
    covariances = model.covariances_shape(n_components, n_features)
    prior = {"full": (n_features, n_features), "tied": (n_features, n_features),
             "diag": (n_features,), "spherical": (1,)}[covariance_type]  # fmt: skip
    return {
        "mean_precision": (n_components,),
        "weight_concentration": (2 if prior_type == "dirichlet_process" else 1, n_components),
        "means": (n_components, n_features),
        "degrees_of_freedom": (n_components,),
        "covariances": covariances,
        "precisions_cholesky": covariances,
        "mean_prior": (n_features,),
        "covariance_prior": prior,
        "prior_scalars": (3,),
    }


def log_weights(params: BayesParams) -> Float:
    """``E[log pi_k]`` under the posterior (scikit-learn's ``_estimate_log_weights``)."""
    if len(params.weight_concentration) == 2:
        a, b = params.weight_concentration
        digamma_sum = digamma(a + b)
        return digamma(a) - digamma_sum + np.hstack((0.0, np.cumsum(digamma(b) - digamma_sum)[:-1]))
    concentration = params.weight_concentration[0]
    return digamma(concentration) - digamma(concentration.sum())


def estep_params(params: BayesParams, shift: Float | None = None) -> EStepParams:
    """The variational E-step as a Gaussian one with per-component constants.

    scikit-learn's ``_estimate_log_prob`` + ``_estimate_log_weights``: the
    Gaussian log-density with ``precisions_cholesky`` (the expected precisions),
    minus ``D/2 log(nu_k)``, plus ``(log Lambda~_k - D / beta_k) / 2`` with
    ``log Lambda~_k = D log 2 + sum_i digamma((nu_k - i) / 2)``, plus ``E[log pi_k]``:
    all but the Mahalanobis term are constants, folded into the log-weights.
    """
    model = get_covariance_model(params.covariance_type)
    n_components, n_features = params.means.shape
    dof = params.degrees_of_freedom
    log_lambda = n_features * math.log(2.0) + np.sum(
        digamma(0.5 * (dof - np.arange(n_features)[:, None])), axis=0
    )
    constants = (
        log_weights(params)
        - 0.5 * n_features * np.log(dof)
        + 0.5 * (log_lambda - n_features / params.mean_precision)
    )
    weights = params.weights
    if shift is None:
        shift = weights @ params.means / weights.sum()
    return EStepParams(
        params.covariance_type,
        constants,
        shift,
        params.means - shift,
        params.precisions_cholesky,
        model.log_det_cholesky(params.precisions_cholesky, n_components, n_features),
        entropy=True,
    )


def data_priors(
    totals: tuple[Float, Float, Float], covariance_type: str, reg_covar: float
) -> tuple[Float, Float]:
    """scikit-learn's default ``mean_prior`` and ``covariance_prior`` (the data's mean and
    covariance with ``ddof=1``) from the moments of all the data as one component."""
    nk, xk, sk = totals
    n = float(nk[0])
    correction = n / (n - 1.0) if n > 1 else 1.0
    if covariance_type in ("full", "tied"):
        covariance = sk[0] if covariance_type == "full" else sk
        covariance = (covariance - reg_covar * np.eye(len(covariance))) * correction
    else:  # diag: per feature; spherical: their mean
        covariance = (sk[0] - reg_covar) * correction
    return xk[0], covariance


def update(nk: Float, xk: Float, sk: Float, covariance_type: str, priors: Priors) -> BayesParams:
    """The variational M-step from the components' sizes, means and covariances
    (scikit-learn's ``_estimate_weights``, ``_estimate_means``, ``_estimate_precisions``)."""
    if priors.weight_concentration_prior_type == "dirichlet_process":
        tail = np.hstack((np.cumsum(nk[::-1])[-2::-1], 0.0))
        concentration = np.stack([1.0 + nk, priors.weight_concentration_prior + tail])
    else:
        concentration = (priors.weight_concentration_prior + nk)[None]
    mean_precision = priors.mean_precision_prior + nk
    means = (priors.mean_precision_prior * priors.mean_prior + nk[:, None] * xk) / mean_precision[
        :, None
    ]
    model = get_covariance_model(covariance_type)
    dof, covariances = model.wishart(
        nk,
        xk,
        sk,
        mean_precision,
        priors.mean_prior,
        priors.mean_precision_prior,
        priors.covariance_prior,
        priors.degrees_of_freedom_prior,
    )
    return BayesParams(
        covariance_type,
        concentration,
        mean_precision,
        means,
        dof,
        covariances,
        model.precisions_cholesky(covariances),
        priors,
    )


def _log_wishart_norm(dof: Float, log_det_precisions_chol: Float, n_features: int) -> Float:
    """scikit-learn's ``_log_wishart_norm`` (without the ``log pi`` term)."""
    return -(
        dof * log_det_precisions_chol
        + dof * n_features * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(n_features)[:, None])), axis=0)
    )


def lower_bound(params: BayesParams, entropy: float) -> float:
    """scikit-learn's ``_compute_lower_bound``, with ``entropy = sum_n sum_k r log r``
    of the pass (a sum over samples, not a mean: ``tol`` means what it means there)."""
    model = get_covariance_model(params.covariance_type)
    n_components, n_features = params.means.shape
    log_det = model.log_det_cholesky(
        params.precisions_cholesky, n_components, n_features
    ) - 0.5 * n_features * np.log(params.degrees_of_freedom)
    log_wishart = np.sum(_log_wishart_norm(params.degrees_of_freedom, log_det, n_features))
    if len(params.weight_concentration) == 2:
        log_norm_weight = -np.sum(betaln(*params.weight_concentration))
    else:
        concentration = params.weight_concentration[0]
        log_norm_weight = gammaln(concentration.sum()) - np.sum(gammaln(concentration))
    return float(
        -entropy
        - log_wishart
        - log_norm_weight
        - 0.5 * n_features * np.sum(np.log(params.mean_precision))
    )
