"""``BayesianGaussianMixture``: scikit-learn's variational Dirichlet-process (or
Dirichlet-distribution) mixture, distributed and out of core.

It is :class:`daskgmm.GaussianMixture` with another model for the one fit
driver (:class:`daskgmm._em.VariationalEM`): every read of the data, restart,
checkpoint, input kind, ``sample_weight``, float32 and model file works the
same way.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from ._bayesian import PRIOR_TYPES, BayesParams, Priors
from ._covariance import _check_symmetric_pd, get_covariance_model
from ._em import VariationalEM
from .mixture import GaussianMixture

__all__ = ["BayesianGaussianMixture"]

_NOT_HERE = ("weights_init", "means_init", "precisions_init")


class BayesianGaussianMixture(GaussianMixture):
    """Variational Bayesian Gaussian mixture fitted on Dask.

    A drop-in for :class:`sklearn.mixture.BayesianGaussianMixture`: the same
    parameters, defaults, fitted attributes, lower bound (a sum over samples,
    so ``tol`` means what it means there) and errors. Fit it with a generous
    ``n_components``: a Dirichlet-process prior switches off the components the
    data do not support (their ``weights_`` tend to zero).

    With many more components than the data hold, ``init_params='random'`` (or
    ``'k-means++'``) lets a Dirichlet process switch the others off in a few
    hundred iterations; ``'kmeans'`` (the default, as scikit-learn's) cuts each
    true cluster into pieces of equal weight, which it leaves very slowly (the
    same in scikit-learn).

    Parameters
    ----------
    n_components : int, default=1
        The largest number of components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol, reg_covar, max_iter, n_init, init_params, random_state, warm_start,
    verbose, verbose_interval
        As in :class:`daskgmm.GaussianMixture`.
    weight_concentration_prior_type : {'dirichlet_process', 'dirichlet_distribution'}, \
default='dirichlet_process'
    weight_concentration_prior : float, default=None
        The concentration of the weights' prior; default ``1 / n_components``.
    mean_precision_prior : float, default=None
        The precision prior on the means; default 1.
    mean_prior : array-like of shape (n_features,), default=None
        Default: the data's mean.
    degrees_of_freedom_prior : float, default=None
        Default: ``n_features``.
    covariance_prior : float or array-like, default=None
        Default: the data's covariance (``ddof=1``; per feature for 'diag',
        their mean for 'spherical'). The data's mean and covariance come from a
        pass the initialisation makes anyway (its last for 'kmeans' and
        'random', the k-means|| sizes for 'k-means++'); 'random_from_data',
        which reads only its rows, makes one more.
    cache, split_every, feature_dim, variable, missing, nodata
        As in :class:`daskgmm.GaussianMixture`. With ``missing='marginalize'`` the
        variational E-step uses each sample's observed values exactly, as EM's;
        the default priors are then the moments of the data with their holes
        filled with the features' means (the initialisation's data).
    columns, bands, standardize, pca
        As in :class:`daskgmm.GaussianMixture` (the priors then live in the
        transformed space).
    algorithm, stepwise_epochs, learning_decay, learning_offset, step_blocks
        As in :class:`daskgmm.GaussianMixture`: stepwise updates take the same
        steps on the statistics, and the variational M-step weighs them as the
        statistics of the whole data (the rows of ``X`` in :meth:`fit`, the
        rows seen so far in :meth:`partial_fit`) against the priors.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_
        As in scikit-learn.
    weight_concentration_ : array-like
        A tuple of two arrays (the Beta distributions' parameters) for a
        Dirichlet process, an array of shape (n_components,) for a Dirichlet
        distribution.
    mean_precision_ : ndarray of shape (n_components,)
    degrees_of_freedom_ : ndarray of shape (n_components,) or float ('tied')
    weight_concentration_prior_, mean_precision_prior_, mean_prior_,
    degrees_of_freedom_prior_, covariance_prior_
        The priors used.
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_
        As in scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgmm import BayesianGaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(8, 1, (500, 2))])
    >>> bgm = BayesianGaussianMixture(n_components=8, max_iter=500, random_state=0).fit(X)
    >>> np.sort(bgm.weights_)[-3:].round(2).tolist()  # two components carry the weight
    [0.0, 0.5, 0.5]
    """

    _MODEL_META = {"model": "bayesian"}

    _parameter_constraints: dict = {
        **{k: v for k, v in GaussianMixture._parameter_constraints.items() if k not in _NOT_HERE},
        "weight_concentration_prior_type": [StrOptions(set(PRIOR_TYPES))],
        "weight_concentration_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_precision_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "covariance_prior": [None, "array-like", Interval(Real, 0.0, None, closed="neither")],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        cache="auto",
        split_every=None,
        feature_dim=None,
        variable=None,
        missing="error",
        nodata=None,
        algorithm="em",
        stepwise_epochs=1,
        learning_decay=0.55,
        learning_offset=1.0,
        step_blocks=None,
        columns=None,
        bands=None,
        standardize=False,
        pca=None,
    ):
        super().__init__(
            n_components=n_components,
            covariance_type=covariance_type,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            cache=cache,
            split_every=split_every,
            feature_dim=feature_dim,
            variable=variable,
            missing=missing,
            nodata=nodata,
            algorithm=algorithm,
            stepwise_epochs=stepwise_epochs,
            learning_decay=learning_decay,
            learning_offset=learning_offset,
            step_blocks=step_blocks,
            columns=columns,
            bands=bands,
            standardize=standardize,
            pca=pca,
        )
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior

    # --------------------------------------------------------------- fitting
    def _mixture_model(self, n_features: int) -> VariationalEM:
        return VariationalEM(
            self.covariance_type,
            self.reg_covar,
            self.n_components,
            self.init_params,
            self.weight_concentration_prior_type,
            self.weight_concentration_prior,
            self.mean_precision_prior,
            *self._checked_priors(n_features),
            missing=self._marginalize,
        )

    def _checked_priors(self, n_features: int) -> tuple[Any, Any, Any]:
        """``mean_prior``, ``degrees_of_freedom_prior``, ``covariance_prior`` checked with
        scikit-learn's messages (None stays None: the data's)."""
        mean = None
        if self.mean_prior is not None:
            mean = check_array(self.mean_prior, dtype=[np.float64, np.float32], ensure_2d=False)
            if mean.shape != (n_features,):
                raise ValueError(
                    f"The parameter 'means' should have the shape of {(n_features,)}, "
                    f"but got {mean.shape}"
                )
        dof = self.degrees_of_freedom_prior
        if dof is not None and not dof > n_features - 1.0:
            raise ValueError(
                "The parameter 'degrees_of_freedom_prior' should be greater than "
                f"{n_features - 1}, but got {dof:.3f}."
            )
        covariance = self.covariance_prior
        if covariance is not None and self.covariance_type == "spherical":
            covariance = float(covariance)
        elif covariance is not None:
            covariance = check_array(covariance, dtype=[np.float64, np.float32], ensure_2d=False)
            square = self.covariance_type in ("full", "tied")
            expected = (n_features, n_features) if square else (n_features,)
            if covariance.shape != expected:
                raise ValueError(
                    f"The parameter '{self.covariance_type} covariance_prior' should have the "
                    f"shape of {expected}, but got {covariance.shape}"
                )
            if square:
                _check_symmetric_pd(covariance, self.covariance_type)
            elif np.any(covariance <= 0.0):
                raise ValueError(f"'{self.covariance_type} precision' should be positive")
        return mean, dof, covariance

    # ------------------------------------------------------------ attributes
    def _set_params_from(self, params: BayesParams, dtype: Any = np.float64) -> None:
        """Set scikit-learn's fitted attributes, in ``dtype`` (see
        :meth:`GaussianMixture._set_params_from`)."""
        self._full_params = params

        def cast(a):
            return np.asarray(a, dtype=dtype)

        concentration = params.weight_concentration
        self.weight_concentration_ = (
            (cast(concentration[0]), cast(concentration[1]))
            if len(concentration) == 2
            else cast(concentration[0])
        )
        self.mean_precision_ = cast(params.mean_precision)
        self.means_ = cast(params.means)
        dof = params.degrees_of_freedom  # one for all components when tied, as scikit-learn's
        self.degrees_of_freedom_ = (
            cast(dof[0])[()] if params.covariance_type == "tied" else cast(dof)
        )
        self.covariances_ = cast(params.covariances)
        self.precisions_cholesky_ = cast(params.precisions_cholesky)
        model = get_covariance_model(params.covariance_type)
        self.precisions_ = cast(model.precisions(params.precisions_cholesky))
        self.weights_ = cast(params.weights)
        p = params.priors
        self.weight_concentration_prior_ = p.weight_concentration_prior
        self.mean_precision_prior_ = p.mean_precision_prior
        self.mean_prior_ = cast(p.mean_prior)
        self.degrees_of_freedom_prior_ = p.degrees_of_freedom_prior
        self.covariance_prior_ = (
            float(p.covariance_prior)
            if np.ndim(p.covariance_prior) == 0
            else cast(p.covariance_prior)
        )
        self._public = self._public_arrays()

    def _public_arrays(self) -> tuple[Any, ...]:
        return (self.means_, self.covariances_, self.precisions_cholesky_, self.mean_precision_)

    def _n_parameters(self) -> int:
        raise AttributeError(
            "BayesianGaussianMixture has no BIC or AIC (as scikit-learn's): its components "
            "are chosen by the prior; compare lower_bound_ instead."
        )

    # ------------------------------------------------------------ conversion
    _FITTED = (
        *GaussianMixture._FITTED[:5],
        "weight_concentration_",
        "mean_precision_",
        "degrees_of_freedom_",
        "weight_concentration_prior_",
        "mean_precision_prior_",
        "mean_prior_",
        "degrees_of_freedom_prior_",
        "covariance_prior_",
        *GaussianMixture._FITTED[5:],
    )

    @staticmethod
    def _sklearn_class() -> type:
        from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture

        return SkBayesianGaussianMixture

    @classmethod
    def _params_from_attributes(cls, est: Any) -> BayesParams:
        return _params_from_attributes(est)


def _params_from_attributes(est: Any) -> BayesParams:
    """The float64 posterior from a (daskgmm or scikit-learn) estimator's attributes."""

    def f64(a):
        return np.asarray(a, dtype=np.float64)

    prior_type = est.weight_concentration_prior_type
    concentration = est.weight_concentration_
    concentration = (
        np.stack([f64(concentration[0]), f64(concentration[1])])
        if prior_type == "dirichlet_process"
        else f64(concentration)[None]
    )
    n_components = len(est.means_)
    priors = Priors(
        prior_type,
        float(est.weight_concentration_prior_),
        float(est.mean_precision_prior_),
        f64(est.mean_prior_),
        float(est.degrees_of_freedom_prior_),
        f64(est.covariance_prior_),
    )
    return BayesParams(
        est.covariance_type,
        concentration,
        f64(est.mean_precision_),
        f64(est.means_),
        np.broadcast_to(f64(est.degrees_of_freedom_), (n_components,)).copy(),
        f64(est.covariances_),
        f64(est.precisions_cholesky_),
        priors,
    )
