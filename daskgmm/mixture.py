"""``GaussianMixture``: a thin scikit-learn-compatible shell over the EM engine."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
from numbers import Integral, Real
from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._checkpoint import (
    Checkpoint,
    FitState,
    RefusedError,
    compare_meta,
    other_fit_message,
    read_model,
    write_model,
)
from ._compat import Interval, StrOptions
from ._covariance import COVARIANCE_MODELS, get_covariance_model
from ._data import (
    Input,
    check_sample_weight,
    from_numpy,
    open_input,
    reblocked,
    resolve_path,
    stepwise_row_chunks,
    worker_threads,
)
from ._em import (
    EMResult,
    GaussianEM,
    IterationInfo,
    best_restart,
    fit_mixture,
    memory_needed,
    stepwise_update,
)
from ._fingerprint import Digest, content_digest, content_digest_chunk
from ._init import restart_seeds
from ._lock import JobLock
from ._raster import is_band_list
from ._reduction import map_reduce
from ._scheduler import active_client, blas_threads_guard
from ._state import Stepwise
from ._stats import EStepParams, GMMParams, estimate_log_prob_resp, estimate_weighted_log_prob
from ._stepwise import Running
from ._summary import Summary, summarize
from ._tables import from_pandas, is_dataframe
from ._transform import Transform, fit_transform

__all__ = ["GaussianMixture"]

logger = logging.getLogger(__name__)

#: With ``cache='auto'``, persist the data when they take at most this share
#: of the memory available to the scheduler.
CACHE_MEMORY_FRACTION = 0.5


def _check_weights(weights: Any, n_components: int) -> np.ndarray:
    weights = check_array(weights, dtype=[np.float64, np.float32], ensure_2d=False)
    if weights.shape != (n_components,):
        raise ValueError(
            f"The parameter 'weights' should have the shape of {(n_components,)}, "
            f"but got {weights.shape}"
        )
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{np.max(weights):.5f}, min value {np.min(weights):.5f}"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(abs(1.0 - np.sum(weights)), 0.0, atol=atol):
        raise ValueError(
            "The parameter 'weights' should be normalized, but got sum(weights) = "
            f"{np.sum(weights):.5f}"
        )
    return weights.astype(np.float64)


def _check_means(means: Any, n_components: int, n_features: int) -> np.ndarray:
    means = check_array(means, dtype=[np.float64, np.float32], ensure_2d=False)
    if means.shape != (n_components, n_features):
        raise ValueError(
            f"The parameter 'means' should have the shape of {(n_components, n_features)}, "
            f"but got {means.shape}"
        )
    return means.astype(np.float64)


def _available_memory() -> float:
    client = active_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        return float(sum(w.get("memory_limit", 0) or 0 for w in workers))
    import psutil

    return float(psutil.virtual_memory().available)


#: Share of a worker thread's memory one task may plan to use: a ``distributed``
#: worker starts spilling to disk at 60 % of its limit ("target").
TASK_MEMORY_FRACTION = 0.6


def _task_memory() -> float:
    """The memory one task may use: a share of the smallest worker's limit per thread,
    else of this machine's RAM per core (the threaded scheduler runs one task per core)."""
    client = active_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        limits = [(w.get("memory_limit") or 0) / max(1, w.get("nthreads", 1)) for w in workers]
        if limits and min(limits) > 0:
            return TASK_MEMORY_FRACTION * min(limits)
    import psutil

    return TASK_MEMORY_FRACTION * psutil.virtual_memory().total / (os.cpu_count() or 1)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by distributed Expectation-Maximization on Dask.

    A drop-in for :class:`sklearn.mixture.GaussianMixture` that accepts NumPy
    arrays, dask arrays and :class:`xarray.DataArray` of shape
    ``(n_samples, n_features)``. Every EM iteration maps a fused E-step and
    sufficient-statistics kernel over the row blocks, adds the partial
    statistics with a tree reduction, and applies the M-step on the driver.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        - 'full': each component has its own general covariance matrix.
        - 'tied': all components share the same general covariance matrix.
        - 'diag': each component has its own diagonal covariance matrix.
        - 'spherical': each component has its own single variance.
    tol : float, default=1e-3
        EM stops when the change of the mean log-likelihood is below this.
    reg_covar : float, default=1e-6
        Non-negative regularization added to the diagonal of the covariances.
    max_iter : int, default=100
        The number of EM iterations to perform.
    n_init : int, default=1
        The number of initializations to perform. The best lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        - 'kmeans': k-means|| seeding and Lloyd iterations on the dask array,
          responsibilities from the final k-means labels.
        - 'k-means++': means at k-means|| seeds (data points).
        - 'random': random responsibilities.
        - 'random_from_data': means at random data points.
    weights_init : array-like of shape (n_components,), default=None
        The user-provided initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        The user-provided initial means.
    precisions_init : array-like, default=None
        The user-provided initial precisions (inverse covariances), of shape::

            (n_components,)                        if 'spherical',
            (n_features, n_features)               if 'tied',
            (n_components, n_features)             if 'diag',
            (n_components, n_features, n_features) if 'full'

    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and :meth:`sample`. A fixed seed gives the
        same fit whatever the chunking of the data.
    warm_start : bool, default=False
        If True, the next ``fit`` starts from the current solution (``n_init`` ignored).
    verbose : int, default=0
        1 prints each initialization and iteration, 2 adds times and changes.
    verbose_interval : int, default=10
        Number of iterations between prints.
    cache : {'auto'} or bool, default='auto'
        Persist the data in (cluster) memory once before iterating. ``'auto'``
        does so when they take at most half of the available memory; ``False``
        re-reads them from their source at every iteration.
    split_every : int, default=None
        Fan-in of the tree that adds the per-block statistics (default 8).
    feature_dim : str, default=None
        For xarray inputs and Zarr datasets: the feature dimension (e.g.
        ``'band'``); all other dimensions are stacked into samples and
        per-sample results come back with those dimensions. Default: the
        second dimension of a 2-D array.
    variable : str, default=None
        For Zarr groups and xarray datasets: the variable to model.
    missing : {'error', 'marginalize'}, default='error'
        What NaN entries of ``X`` are. ``'error'``: invalid (a ``ValueError``,
        as scikit-learn). ``'marginalize'``: missing values, used exactly: a
        sample's likelihood is the mixture of its components' marginals on its
        observed values, and EM fills the M-step with conditional expectations
        (Ghahramani & Jordan, 1994), so no observed value is thrown away and the
        covariances are not shrunk as by imputation. Samples with every value
        missing do not enter the fit; ``predict`` gives them -1 and
        ``predict_proba``/``score_samples`` NaN. ``score``, ``bic`` and ``aic``
        count the samples with an observed value. ``inf`` stays an error. The
        initialisation runs on the complete samples when there are at least
        ``20 * n_components`` of them, else on all samples with the holes filled
        with the features' observed means; it costs one more read of the data.
    nodata : float, default=None
        A value that marks missing entries of ``X`` (e.g. -9999): they are read
        as NaN. Default: the value a store or xarray input declares in a
        ``nodata``, ``_FillValue`` or ``missing_value`` attribute (or a raw Zarr
        array's non-zero ``fill_value``), if any.
    algorithm : {'em', 'stepwise'}, default='em'
        ``'em'``: batch EM, one read of the data per iteration. ``'stepwise'``:
        ``stepwise_epochs`` passes of stepwise (mini-batch) EM first (Cappé &
        Moulines, 2009; Liang & Klein, 2009), each update taking a few row blocks
        in an order drawn from ``random_state`` and moving running statistics
        towards theirs, then batch EM until ``tol``: the model is a batch-EM fixed
        point, reached in far fewer reads of data too big for memory (see the
        README for when to choose which). Each update computes as many blocks as
        the cluster has worker threads (``step_blocks``) in one graph.
    stepwise_epochs : int, default=1
        Passes of stepwise updates before batch EM takes over (each counts as
        one iteration in ``n_iter_`` and ``max_iter``).
    learning_decay : float, default=0.55
        Step sizes: update ``t`` (from 0) gives its batch the weight
        ``(t + learning_offset) ** -learning_decay`` against the running
        statistics (1 for the very first update). In (0.5, 1]; smaller keeps
        the steps large for longer. The names are those of scikit-learn's
        online LatentDirichletAllocation; the defaults are the fastest of those
        measured in ``benchmarks/bench_stepwise.py``.
    learning_offset : float, default=1.0
        Damps the first updates.
    step_blocks : int, default=None
        Row blocks per stepwise update (and per :meth:`partial_fit` batch of the
        command line's ``update``); default: the worker threads of the cluster.
        A stepwise fit re-opens a store or file in blocks that make about 64
        updates per epoch (whole store chunks, 1024 rows to 8 MiB each); dask
        arrays keep their blocks.
    columns : list of str, default=None
        For tables (pandas and dask DataFrames, Parquet and CSV files or
        directories of Parquet files): the feature columns. Default: every
        numeric column when fitting, the fitted ``feature_names_in_`` when
        predicting. A missing or non-numeric column is a ``ValueError`` naming
        it, raised from the schema before a row is read.
    bands : list of str, default=None
        For a folder of single-band rasters (GeoTIFF): the files to stack as
        bands, in order, by name or glob (``["*_B2.TIF", "*_B3.TIF"]`` finds
        the same bands in every scene's folder). Kept in the model, so that
        predicting on another folder reads the same bands.
    standardize : bool, default=False
        Model the features divided by their standard deviations (and centred):
        columns on very different scales then weigh alike in k-means and in
        ``reg_covar``. The means and deviations come from the pass that gives
        k-means|| its first round (no pass of their own with ``'kmeans'`` and
        ``'k-means++'``).
    pca : int, default=None
        Model the first ``pca`` principal components of the (standardised)
        features, from a randomised SVD (a few passes; the explained variance
        is logged and kept in ``transform_``). Not with missing values.

        Both maps are kept in the model (``transform_``, saved in model files)
        and applied by every method and command; ``means_``, ``covariances_``,
        ``*_init``, ``score_samples`` and BIC/AIC are then in the transformed
        space, ``means_in_input_units()``, ``covariances_in_input_units()`` and
        ``sample`` in the input's.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        The weight of each component.
    means_ : ndarray of shape (n_components, n_features)
        The mean of each component.
    covariances_ : ndarray
        The covariance of each component. The shape depends on ``covariance_type``::

            (n_components,)                        if 'spherical',
            (n_features, n_features)               if 'tied',
            (n_components, n_features)             if 'diag',
            (n_components, n_features, n_features) if 'full'

    precisions_ : ndarray
        The inverses of ``covariances_``, same shape.
    precisions_cholesky_ : ndarray
        Cholesky factors of ``precisions_``, same shape.
    converged_ : bool
        Whether the best restart converged.
    n_iter_ : int
        Iterations of the best restart.
    lower_bound_ : float
        Mean log-likelihood of the training data at the last iteration of the best restart.
    lower_bounds_ : list of float
        One per iteration of the best restart.
    n_features_in_ : int
        Number of features seen during :term:`fit`.
    running_statistics_ : daskgmm.stepwise.Running
        The statistics the parameters came from (per unit weight, as moments)
        and the updates counted (``n_steps``, ``n_samples``, ``weight``): what
        :meth:`partial_fit` goes on from. Saved in model files. After batch EM,
        its last pass's statistics, each pass counted as one update.
    n_steps_ : int
        Updates done (stepwise updates; a batch-EM pass counts as one).
    n_samples_seen_ : int
        Rows the updates have read (a batch-EM pass reads every row).

    See Also
    --------
    sklearn.mixture.GaussianMixture : The in-memory estimator this one mirrors.

    Notes
    -----
    .. warning:: Each EM iteration reads the whole dataset once; ``init_params='kmeans'``
       reads it 10-20 more times (``'k-means++'`` and ``'random_from_data'``: 6 and 1).
       ``fit`` persists data that fit in memory (see ``cache``); ``predict``,
       ``predict_proba`` and ``score_samples`` on dask input are lazy and read the
       data when computed; ``score``, ``bic`` and ``aic`` read them once.

    Fitted attributes have the training data's dtype (float32 in, float32 out,
    as scikit-learn >= 1.8), and so do ``predict_proba`` and ``score_samples``.
    float32 data are processed in float32 with float64 accumulators; the float64
    parameters are kept for predictions, warm starts, checkpoints and model files,
    so a resumed float32 fit equals an uninterrupted one. Given the same initial
    parameters, results match scikit-learn to floating-point reassociation.

    With ``n_init > 1`` every pass over the data serves all restarts, during
    initialisation and EM alike: restart ``i`` starts from its own seed (the
    ``i``-th drawn from ``random_state``), so sharing the passes does not change
    any restart's result, and an unfinished restart costs compute, not reads.

    ``fit`` takes a ``sample_weight`` (which scikit-learn lacks): each sample's
    responsibilities are multiplied by its weight, so integer weights equal
    repeated rows.

    Examples
    --------
    >>> import dask.array as da
    >>> from daskgmm import GaussianMixture
    >>> rng = da.random.default_rng(0)
    >>> X = da.concatenate([rng.normal(0, 1, (2000, 2), chunks=500),
    ...                     rng.normal(8, 1, (2000, 2), chunks=500)])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(gm.means_[:, 0].round().astype(int).tolist())
    [0, 8]
    >>> gm.predict(X)
    dask.array<...>
    """

    #: Added to a model file's metadata (its kind).
    _MODEL_META: dict[str, Any] = {}

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions({"kmeans", "random", "random_from_data", "k-means++"})],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_MODELS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "cache": [StrOptions({"auto"}), "boolean"],
        "split_every": [Interval(Integral, 2, None, closed="left"), None],
        "feature_dim": [str, None],
        "variable": [str, None],
        "missing": [StrOptions({"error", "marginalize"})],
        "nodata": [Real, None],
        "algorithm": [StrOptions({"em", "stepwise"})],
        "stepwise_epochs": [Interval(Integral, 1, None, closed="left")],
        "learning_decay": [Interval(Real, 0.5, 1.0, closed="right")],
        "learning_offset": [Interval(Real, 0.0, None, closed="left")],
        "step_blocks": [Interval(Integral, 1, None, closed="left"), None],
        "columns": ["array-like", None],
        "bands": ["array-like", None],
        "standardize": ["boolean"],
        "pca": [Interval(Integral, 1, None, closed="left"), None],
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
        weights_init=None,
        means_init=None,
        precisions_init=None,
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
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.cache = cache
        self.split_every = split_every
        self.feature_dim = feature_dim
        self.variable = variable
        self.missing = missing
        self.nodata = nodata
        self.algorithm = algorithm
        self.stepwise_epochs = stepwise_epochs
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.step_blocks = step_blocks
        self.columns = columns
        self.bands = bands
        self.standardize = standardize
        self.pca = pca

    # ------------------------------------------------------------ validation
    def check_parameters(self) -> GaussianMixture:
        """Validate the constructor parameters as :meth:`fit` does, without data.

        For jobs that must fail before a cluster starts (the command line's
        preflight). Returns ``self``.

        Raises
        ------
        ValueError, TypeError
            scikit-learn's ``InvalidParameterError``, naming the parameter.
        """
        self._validate_params()
        return self

    def _input(self, X: Any, *, reset: bool, min_samples: int = 1) -> Any:
        """In-memory array-likes -> NumPy (scikit-learn's own checks and messages);
        dask arrays, xarray objects, Zarr arrays and store paths -> :class:`Input`.
        Predicting (``reset=False``), the model's own transform is applied."""
        opened = self._open(X, reset=reset, min_samples=min_samples)
        transform = None if reset else getattr(self, "transform_", None)
        return opened if transform is None else _transformed(opened, transform)

    def _open(self, X: Any, *, reset: bool, min_samples: int = 1) -> Any:
        nodata = getattr(self, "nodata", None)
        columns = self._table_columns(reset)
        if is_dataframe(X) and type(X).__module__.startswith("pandas"):
            X = from_pandas(X, columns)  # named errors; scikit-learn keeps the names
        if not _is_out_of_core(X):
            X = validate_data(
                self,
                X,
                reset=reset,
                dtype=[np.float64, np.float32],
                ensure_min_samples=min_samples,
                ensure_all_finite="allow-nan" if self._marginalize else True,
            )
            if nodata is not None:
                X = np.where(X == X.dtype.type(nodata), X.dtype.type(np.nan), X)
            return X
        inp = open_input(
            X,
            variable=self.variable,
            feature_dim=self.feature_dim,
            min_samples=min_samples,
            nodata=nodata,
            estimator=type(self).__name__,
            columns=columns,
            bands=self.bands,
        )
        n_features = inp.X.shape[1]
        names = None if inp.feature_names is None else np.asarray(inp.feature_names, dtype=object)
        if reset:
            self.n_features_in_ = n_features
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif names is not None and hasattr(self, "feature_names_in_"):
            if list(names) != list(self.feature_names_in_):
                raise ValueError(
                    f"The feature names should match those that were passed during fit: "
                    f"fitted on {list(self.feature_names_in_)}, got {list(names)}."
                )
        elif n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return inp

    def _table_columns(self, reset: bool) -> list[str] | None:
        """The columns to read from a table: ``columns``, else (predicting) the
        fitted feature names, else (fitting) every numeric column."""
        if self.columns is not None:
            return list(self.columns)
        if not reset and hasattr(self, "feature_names_in_"):
            return [str(c) for c in self.feature_names_in_]
        return None

    @property
    def _marginalize(self) -> bool:
        """Whether NaN entries are missing values (``missing='marginalize'``)."""
        return self.missing == "marginalize"

    def _initial_parameters(self, n_features: int) -> tuple[Any, Any, Any]:
        """Validated copies of ``*_init`` (never written back to ``self``)."""
        K = self.n_components
        weights = None if self.weights_init is None else _check_weights(self.weights_init, K)
        means = None if self.means_init is None else _check_means(self.means_init, K, n_features)
        precisions = None
        if self.precisions_init is not None:
            model = get_covariance_model(self.covariance_type)
            precisions = check_array(
                self.precisions_init,
                dtype=[np.float64, np.float32],
                ensure_2d=False,
                allow_nd=self.covariance_type == "full",
            )
            precisions = model.check_precisions(precisions, K, n_features).astype(np.float64)
        return weights, means, precisions

    def _check_memory(self, X: da.Array) -> None:
        """Refuse, before the first pass, a fit whose block tasks cannot fit in a worker."""
        need = memory_needed(
            max(X.chunks[0]),
            X.shape[1],
            self.n_components,
            self.covariance_type,
            self.n_init,
            missing=self._marginalize,
        )
        limit = _task_memory()
        if need > limit:
            raise ValueError(
                f"n_components={self.n_components} (covariance_type={self.covariance_type!r}, "
                f"n_init={self.n_init}) on blocks of {max(X.chunks[0])} samples x {X.shape[1]} "
                f"features needs about {need / 2**30:.1f} GiB per task, more than the "
                f"{limit / 2**30:.1f} GiB a task may use (60 % of a worker thread's memory); "
                "use fewer components or smaller blocks (X.rechunk, or the dask config "
                "daskgmm.chunk-bytes for stores)."
            )

    def _maybe_cache(self, X: da.Array, sample_weight: da.Array | None, in_memory: bool):
        if self.cache is False:
            return X, sample_weight
        if in_memory and active_client() is None:
            # NumPy input on a local scheduler: already in memory, a persist would copy it
            return X, sample_weight
        nbytes = X.nbytes + (0 if sample_weight is None else sample_weight.nbytes)
        if self.cache == "auto" and nbytes > CACHE_MEMORY_FRACTION * _available_memory():
            logger.info("Data (%.1f MB) are streamed at every iteration.", nbytes / 1e6)
            return X, sample_weight
        logger.info("Persisting the data (%.1f MB) once before iterating.", nbytes / 1e6)
        if sample_weight is None:
            return X.persist(), None
        return dask.persist(X, sample_weight)

    # --------------------------------------------------------------- fitting
    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, resume=True, callback=None):
        """Estimate the model parameters with the EM algorithm.

        Fits ``n_init`` times and keeps the parameters with the largest lower
        bound. Each restart iterates until the change of the mean
        log-likelihood is below ``tol`` or ``max_iter`` is reached, otherwise a
        :class:`~sklearn.exceptions.ConvergenceWarning` is issued.

        Parameters
        ----------
        X : array-like, dask array, xarray object, zarr.Array, or str
            Samples, shape (n_samples, n_features), or a Zarr store path/URL or
            ``.npy`` file; xarray inputs and datasets are stacked into samples
            along every dimension but ``feature_dim``.
        y : Ignored
            Not used, present for API consistency by convention.
        sample_weight : array-like or dask.array.Array of shape (n_samples,), default=None
            Non-negative weight of each sample.
        checkpoint : str or path-like, default=None
            Directory or fsspec URL where the full EM state is saved atomically
            after every iteration. If it already holds a state of the same fit
            (same estimator parameters, same data *content*), the fit resumes
            from its last completed iteration and ends with the same model as an
            uninterrupted fit. The content is told by a 64-bit digest of the
            values (and weights), the same whatever the chunking, core count or
            scheduler: computed on the driver for NumPy input, else in the first
            EM pass from the blocks it reads anyway. Where the digest is not
            known before that pass, a store whose files (sizes, modification
            times, ETags) are unchanged counts as the same data; otherwise the
            checkpoint is resumed provisionally and dropped if the first pass
            shows other data (a finished one costs one read to check).
        resume : {'auto', True, False}, default=True
            What to do with a checkpoint of another fit (other data or other
            parameters): ``True`` refuses it with a ``ValueError``, ``'auto'``
            starts over (overwriting it; what scheduled jobs on a rolling input
            path want), ``False`` always starts over.
        callback : callable, default=None
            Called with a :class:`daskgmm.IterationInfo` after every EM
            iteration (progress bars, logging); an exception it raises stops
            the fit, leaving the checkpoint of the last completed iteration.

        Returns
        -------
        self : GaussianMixture
            The fitted mixture.
        """
        if resume not in ("auto", True, False):
            raise ValueError(f"resume must be 'auto', True or False, got {resume!r}")
        # one job at a time on a checkpoint (a second is refused; a dead one's lock taken over)
        lock = (
            contextlib.nullcontext()
            if checkpoint is None
            else JobLock(resolve_path(checkpoint), "Checkpoint")
        )
        with lock:
            try:
                return self._fit(X, sample_weight, checkpoint, resume, callback)
            except _OtherData as err:  # a read showed other data than the checkpoint's
                problem = f"data content: checkpoint {err.expected!r}, now {err.found!r}"
                if resume is True:
                    raise RefusedError(
                        other_fit_message(os.fspath(checkpoint), [problem])
                    ) from None
                logger.warning(
                    "Checkpoint %s belongs to another fit (%s): starting over.", checkpoint, problem
                )
                return self._fit(X, sample_weight, checkpoint, False, callback)

    def _fit(self, X, sample_weight, checkpoint, resume, callback):
        self._validate_params()
        stepwise = self.algorithm == "stepwise"
        inp = self._input(X, reset=True, min_samples=2)
        in_memory = not isinstance(inp, Input)
        if in_memory:
            # already checked by scikit-learn's validate_data: wrap, do not re-scan
            X_np = inp
            inp = _numpy_input(X_np, stepwise)
        elif stepwise:
            rows = stepwise_row_chunks(*inp.X.shape, inp.X.dtype.itemsize)
            inp = reblocked(
                inp, rows, variable=self.variable, feature_dim=self.feature_dim, nodata=self.nodata
            )
        Xd = inp.X
        n_samples = Xd.shape[0]
        if n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {n_samples}"
            )
        warm = self.warm_start and hasattr(self, "converged_")
        self.transform_, summary = self._fitted_transform(Xd, inp.summary, keep=warm)
        if self.transform_ is not None:
            inp = _transformed(inp, self.transform_)
            Xd = inp.X
        n_features = Xd.shape[1]
        self._check_memory(Xd)
        model = dataclasses.replace(self._mixture_model(n_features), summary=summary)
        sw = check_sample_weight(sample_weight, Xd)
        store = None if checkpoint is None else Checkpoint(resolve_path(checkpoint))
        if store is not None:
            store.check_target()
            store.clean()
        content = None
        if store is not None and in_memory and not isinstance(sample_weight, da.Array):
            # in memory already: the digest costs no read of a store
            w = None if sw is None else dask.compute(sw, scheduler="sync")[0]
            content = content_digest(X_np, sample_weight=w).hex()
        meta = self._checkpoint_meta(inp, sw, content)
        state, pending = self._load_checkpoint(store, meta, resume, model)
        check = _ContentCheck(meta, pending)
        if state is not None and state.complete and pending is not None:
            check(_content_digest(Xd, sw))  # the files changed (or are none): one read
        self._fit_fingerprint = meta
        if state is not None and state.complete:
            logger.info(
                "Checkpoint %s holds a finished fit of the same data; loading it.", store.url
            )
            self._set_result(best_restart(state.restarts), Xd.dtype)
            return self
        cached = self._maybe_cache(Xd, sw, in_memory)
        if store is not None and content is None and cached[0] is not Xd:
            check(_content_digest(*cached))  # persisted: reads memory, not the store
        Xd, sw = cached

        best, _ = fit_mixture(
            Xd,
            model,
            n_init=1 if warm else self.n_init,
            random_state=check_random_state(self.random_state),
            tol=self.tol,
            max_iter=self.max_iter,
            sample_weight=sw,
            split_every=self.split_every,
            checkpoint=store,
            meta=meta,
            state=state,
            start=(self._params, self.lower_bound_, self._running) if warm else None,
            stepwise=self._schedule() if stepwise else None,
            callback=self._on_iteration(callback),
            on_digest=check if store is not None and meta["data"]["content"] is None else None,
            on_restart=self._restart_reporter(),
        )
        self._set_result(best, Xd.dtype)
        return self

    def fit_predict(self, X, y=None, sample_weight=None, **fit_params):
        """Fit the model and return the component label of each sample of ``X``.

        Parameters
        ----------
        X : array-like, dask array, xarray object, zarr.Array, or str
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
        **fit_params
            ``checkpoint`` and ``resume``, as in :meth:`fit`.

        Returns
        -------
        labels : ndarray, dask.array.Array or xarray.DataArray
            Lazy for out-of-core input, with the input's sample dimensions.
        """
        return self.fit(X, y, sample_weight=sample_weight, **fit_params).predict(X)

    def _mixture_model(self, n_features: int) -> Any:
        """The :class:`daskgmm._em.MixtureModel` the fit driver runs."""
        return GaussianEM(
            self.covariance_type,
            self.reg_covar,
            self.n_components,
            self.init_params,
            *self._initial_parameters(n_features),
            missing=self._marginalize,
        )

    def _fitted_transform(
        self, X: da.Array, summary: Summary | None, keep: bool = False
    ) -> tuple[Transform | None, Summary | None]:
        """The standardisation/PCA of ``X`` this estimator asks for (None: none), with
        ``keep`` (a warm start) the one it has; and the :class:`Summary` of the data
        the mixture is fitted on, where known without a pass (None: unknown).

        ``summary`` is ``X``'s if a pass already made it; else the standardisation's
        pass makes it, and k-means|| takes the first round's costs from it, so that
        ``standardize`` costs no pass of its own.
        """
        if not self.standardize and not self.pca:
            return None, summary
        if keep and getattr(self, "transform_", None) is not None:
            transform = self.transform_
        else:
            transform, summary = self._new_transform(X, summary)
        if summary is None or transform.components is not None:
            return transform, None
        return transform, summary.scaled(transform.mean, transform.scale)

    def _new_transform(self, X: da.Array, summary: Summary | None) -> tuple[Transform, Summary]:
        if self.pca and self.pca > X.shape[1]:
            raise ValueError(
                f"pca={self.pca} needs at most as many components as features ({X.shape[1]})."
            )
        if self.pca and self._marginalize:
            raise ValueError("pca cannot be combined with missing='marginalize' (NaN entries).")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if summary is None:
            summary = summarize(X)
        transform = fit_transform(X, summary, bool(self.standardize), self.pca, seed)
        if transform.explained_variance_ratio is not None:
            logger.info(
                "PCA: %d components explain %.1f %% of the variance (%s).",
                self.pca,
                100 * transform.explained_variance_ratio.sum(),
                ", ".join(f"{100 * r:.1f}" for r in transform.explained_variance_ratio),
            )
        return transform, summary

    def means_in_input_units(self) -> np.ndarray:
        """The components' means in the units of the input's features (the fitted
        ``means_`` are in the standardised/PCA space when the model has one; with PCA,
        the point of the principal subspace)."""
        check_is_fitted(self)
        transform = getattr(self, "transform_", None)
        return self.means_ if transform is None else transform.inverse(self.means_)

    def covariances_in_input_units(self) -> np.ndarray:
        """Every component's covariance in the units of the input's features, as a
        (n_components, n_features_in_, n_features_in_) array whatever the covariance
        type (with PCA, of rank ``pca``: the covariance within the principal subspace)."""
        check_is_fitted(self)
        K, P = self.means_.shape
        cov = np.asarray(self.covariances_, np.float64)
        dense = {
            "full": lambda: cov,
            "tied": lambda: np.broadcast_to(cov, (K, P, P)),
            "diag": lambda: cov[:, :, None] * np.eye(P),
            "spherical": lambda: cov[:, None, None] * np.eye(P),
        }[self.covariance_type]()
        transform = getattr(self, "transform_", None)
        if transform is None:
            return np.array(dense)
        back = np.eye(P) if transform.components is None else transform.components
        back = back * transform.scale  # rows: a transformed axis in input units
        return np.einsum("pi,kpq,qj->kij", back, dense, back)

    def _schedule(self) -> Stepwise:
        """The stepwise schedule of this estimator on the current cluster (seed drawn later)."""
        blocks = self.step_blocks or worker_threads()
        return Stepwise(self.stepwise_epochs, blocks, self.learning_decay, self.learning_offset, 0)

    def _set_result(self, best: EMResult, dtype: Any) -> None:
        self._set_params_from(best.params, dtype)
        self.converged_ = bool(best.converged)
        self.n_iter_ = int(best.n_iter)
        self.lower_bound_ = float(best.lower_bound)
        self.lower_bounds_ = [float(x) for x in best.lower_bounds]
        self._set_running(best.running)

    def _set_running(self, running: Running | None) -> None:
        self.running_statistics_ = running
        self.n_steps_ = 0 if running is None else running.n_steps
        self.n_samples_seen_ = 0 if running is None else running.n_samples

    @property
    def _running(self) -> Running | None:
        return getattr(self, "running_statistics_", None)

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise EM update from all the rows of ``X``.

        The batch's statistics are computed under the current parameters (one
        read of ``X``, its blocks in parallel), moved into the running
        statistics with the step ``(n_steps_ + learning_offset) ** -learning_decay``,
        and the M-step is run. A model that is not fitted yet is first
        initialised from this batch (as :meth:`fit` would, from
        ``random_state``, or from ``*_init``); a fitted one is never
        re-initialised (one without running statistics, from scikit-learn,
        starts them from its parameters).

        Parameters
        ----------
        X : array-like, dask array, xarray object, zarr.Array, or str
            One batch, shape (n_samples, n_features).
        y : Ignored
        sample_weight : array-like or dask.array.Array of shape (n_samples,), default=None

        Returns
        -------
        self : GaussianMixture
        """
        self._validate_params()
        fitted = hasattr(self, "means_")
        inp = self._input(X, reset=not fitted)
        if not isinstance(inp, Input):
            inp = _numpy_input(inp)
        if not fitted:  # the first batch gives the transform, if one is asked for
            self.transform_, _ = self._fitted_transform(inp.X, inp.summary)
            if self.transform_ is not None:
                inp = _transformed(inp, self.transform_)
        Xd = inp.X
        if fitted and self._params.covariance_type != self.covariance_type:
            raise ValueError(
                f"The model was fitted with covariance_type={self._params.covariance_type!r}; "
                f"partial_fit cannot continue it as {self.covariance_type!r}."
            )
        self._check_memory(Xd)
        model = self._mixture_model(Xd.shape[1])
        sw = check_sample_weight(sample_weight, Xd)
        if fitted:
            params, running = self._params, self._running
        else:
            if Xd.shape[0] < self.n_components:
                raise ValueError(
                    "The first partial_fit batch needs n_samples >= n_components "
                    f"but got n_components = {self.n_components}, n_samples = {Xd.shape[0]}"
                )
            seeds = restart_seeds(check_random_state(self.random_state), 1)
            (params,) = model.initialize(Xd, seeds, sw)
            running = None
        (constants,) = model.estep_constants([params])
        stats = map_reduce(
            Xd, model.chunk_stats, (constants,), sample_weight=sw, split_every=self.split_every
        ).parts[0]
        model._check_weights(stats)
        params, running = stepwise_update(
            model, params, running, stats, constants, self._schedule()
        )
        scale = running.scale()
        bound = float(model.bound(params, running.score * scale, scale))
        self._set_params_from(params, Xd.dtype)
        self._set_running(running)
        self.converged_ = False
        self.n_iter_ = int(getattr(self, "n_iter_", 0))
        self.lower_bound_ = bound
        self.lower_bounds_ = [*getattr(self, "lower_bounds_", []), bound]
        self._fit_fingerprint = None  # no longer the fit of any one dataset
        return self

    # ----------------------------------------------------------- checkpoints
    def _checkpoint_meta(
        self, inp: Input, sample_weight: da.Array | None, content: str | None
    ) -> dict[str, Any]:
        data = {**inp.fingerprint(), "weighted": sample_weight is not None, "content": content}
        return {"data": data, "estimator": self._result_params()}

    def _result_params(self) -> dict[str, Any]:
        """The parameters that change the fitted model, JSON-comparable."""
        params = {}
        for key, value in self.get_params().items():
            if key in ("verbose", "verbose_interval", "cache", "split_every"):
                continue
            if key == "random_state" and not (value is None or isinstance(value, Integral)):
                value = type(value).__name__
            elif key in ("columns", "bands") and value is not None:
                value = [str(c) for c in value]
            elif value is not None and not isinstance(value, (str, Real)):  # array-likes
                arr = np.ascontiguousarray(np.asarray(value, dtype=np.float64))
                value = f"sha256:{hashlib.sha256(arr.tobytes()).hexdigest()[:16]}{arr.shape}"
            params[key] = value
        return json.loads(json.dumps(params))

    @staticmethod
    def _load_checkpoint(store, meta, resume, model) -> tuple[FitState | None, str | None]:
        """The checkpoint's state if it is this fit's, and the content digest that the
        data must still show in the first pass (None: already shown)."""
        if store is None or not store.exists():
            return None, None
        if resume is False:
            logger.info("Overwriting the checkpoint at %s (resume=False).", store.url)
            return None, None
        state, found = store.load(model)
        problems, pending = compare_meta(found, meta)
        if problems and resume is True:
            raise RefusedError(other_fit_message(store.url, problems))
        if problems:
            logger.warning(
                "Checkpoint %s belongs to another fit (%s): starting over.",
                store.url,
                "; ".join(problems),
            )
            return None, None
        if meta["data"]["content"] is None and pending is None:
            meta["data"]["content"] = found["data"].get("content")  # same files
        return state, pending

    # ---------------------------------------------------------------- files
    def save(self, path, *, overwrite=False):
        """Save the fitted model as a Zarr v3 group (no pickle).

        The four parameter arrays are Zarr arrays; the estimator parameters,
        fitted scalars and a format version are JSON attributes. A local
        target is replaced atomically.

        Parameters
        ----------
        path : str or path-like
            Directory or fsspec URL. If something is there already, it must be
            a daskgmm model: anything else (a folder of yours, a data store) is
            refused with a ``ValueError``, whatever ``overwrite`` says.
        overwrite : bool, default=False
            Replace a *different* daskgmm model at ``path``. The same model
            (same parameters) is always written again, so a re-run of a job
            that saved it succeeds.
        """
        check_is_fitted(self)
        write_model(
            resolve_path(path),
            self._params,
            {
                "daskgmm_version": _version(),
                "params": _jsonable_params(self.get_params()),
                "fitted": {
                    "converged_": bool(self.converged_),
                    "n_iter_": int(self.n_iter_),
                    "lower_bound_": float(self.lower_bound_),
                    "lower_bounds_": [float(x) for x in self.lower_bounds_],
                    "n_features_in_": int(self.n_features_in_),
                    "feature_names_in_": _feature_names(self),
                },
                # what it was fitted on: lets a re-run of the same job replace it
                "fit": getattr(self, "_fit_fingerprint", None),
                # the attributes' dtype; the arrays are the full float64 parameters
                "dtype": str(self.means_.dtype),
                **self._MODEL_META,
            },
            overwrite=overwrite,
            running=self._running,
            transform=getattr(self, "transform_", None),
        )

    def same_fit_as(self, path, X) -> bool:
        """Whether the model saved at ``path`` was fitted with these parameters on
        these input files: a re-run of the same job, whose model it may replace.

        Parameters
        ----------
        path : str or path-like
            A model written by :meth:`save`.
        X : str, path-like or daskgmm._data.Input
            The input (a store or file, or one opened already); in-memory data
            have no files to compare.

        Returns
        -------
        bool
            False also where nothing, or no record of its fit, is at ``path``.
        """
        from ._checkpoint import model_at

        attrs = model_at(resolve_path(path))
        fit = (attrs or {}).get("fit") or {}
        inp = open_input(
            X,
            variable=self.variable,
            feature_dim=self.feature_dim,
            nodata=self.nodata,
            columns=self.columns,
            bands=self.bands,
        )
        saved, now = fit.get("data") or {}, inp.fingerprint()
        return (
            now["files"] is not None
            and fit.get("estimator") == self._result_params()
            and all(saved.get(key) == now[key] for key in ("shape", "dtype", "files"))
        )

    @classmethod
    def load(cls, path) -> GaussianMixture:
        """Load a model written by :meth:`save` (see :func:`daskgmm.load`): a
        :class:`BayesianGaussianMixture` for a file of one, whichever class is asked."""
        from .bayesian import BayesianGaussianMixture

        params, meta, extras = read_model(path)
        bayesian = meta.get("model") == "bayesian"
        if bayesian and not issubclass(cls, BayesianGaussianMixture):
            cls = BayesianGaussianMixture
        elif not bayesian and issubclass(cls, BayesianGaussianMixture):
            cls = GaussianMixture
        try:
            est = cls(**meta["params"])
            fitted = meta["fitted"]
            dtype = meta.get("dtype", "float64")
            if dtype not in ("float32", "float64"):
                raise TypeError(f"dtype {dtype!r}")
            est._set_params_from(params, dtype)
            est.converged_ = bool(fitted["converged_"])
            est.n_iter_ = int(fitted["n_iter_"])
            est.lower_bound_ = float(fitted["lower_bound_"])
            est.lower_bounds_ = [float(x) for x in fitted["lower_bounds_"]]
            est.n_features_in_ = int(fitted["n_features_in_"])
            names = fitted.get("feature_names_in_")
            if names is not None:
                if not isinstance(names, list) or len(names) != est.n_features_in_:
                    raise TypeError(f"feature_names_in_ {names!r}")
                est.feature_names_in_ = np.asarray([str(n) for n in names], dtype=object)
            est._set_running(extras["running"])
            est.transform_ = extras["transform"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"Model file {os.fspath(path)!r} lacks metadata {err}.") from None
        transform = extras["transform"]
        n_model = est.n_features_in_ if transform is None else transform.n_features_out
        if n_model != params.n_features or est.covariance_type != params.covariance_type:
            raise ValueError(f"Model file {os.fspath(path)!r} has inconsistent metadata.")
        return est

    #: The fitted attributes a scikit-learn copy gets (:meth:`to_sklearn`).
    _FITTED: tuple[str, ...] = (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
        "converged_",
        "n_iter_",
        "lower_bound_",
        "lower_bounds_",
        "n_features_in_",
    )

    @staticmethod
    def _sklearn_class() -> type:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        return SkGaussianMixture

    @classmethod
    def _params_from_attributes(cls, est: Any) -> GMMParams:
        """The float64 parameters from a (daskgmm or scikit-learn) estimator's attributes."""
        return GMMParams(
            est.covariance_type,
            *(
                np.asarray(getattr(est, name), np.float64)
                for name in ("weights_", "means_", "covariances_", "precisions_cholesky_")
            ),
        )

    def to_sklearn(self):
        """An equivalent fitted scikit-learn estimator (``GaussianMixture``, or
        ``BayesianGaussianMixture`` for one)."""
        check_is_fitted(self)
        sk_class = self._sklearn_class()
        names = sk_class().get_params()
        sk = sk_class(**{k: v for k, v in self.get_params().items() if k in names})
        for name in self._FITTED:
            setattr(sk, name, getattr(self, name))
        return sk

    @classmethod
    def from_sklearn(cls, estimator, **params) -> GaussianMixture:
        """A daskgmm model from a fitted scikit-learn estimator of the same kind (a
        Bayesian one's priors included, so that a warm start continues it exactly).

        Parameters
        ----------
        estimator : sklearn.mixture.GaussianMixture or BayesianGaussianMixture
            Fitted.
        **params
            daskgmm-only constructor parameters (``cache``, ``feature_dim``, ...).
        """
        check_is_fitted(estimator)
        est = cls(**estimator.get_params(), **params)
        est._set_params_from(cls._params_from_attributes(estimator), estimator.means_.dtype)
        est.converged_ = bool(estimator.converged_)
        est.n_iter_ = int(estimator.n_iter_)
        # scikit-learn's tied Bayesian bound is a 1-element array
        est.lower_bound_ = float(np.ravel(estimator.lower_bound_)[0])
        est.lower_bounds_ = [float(np.ravel(x)[0]) for x in getattr(estimator, "lower_bounds_", [])]
        est.n_features_in_ = int(estimator.n_features_in_)
        est._set_running(None)  # scikit-learn keeps no statistics
        return est

    # ------------------------------------------------------------ attributes
    def _set_params_from(self, params: GMMParams, dtype: Any = np.float64) -> None:
        """Set the fitted attributes in ``dtype``, the training data's (float32 in,
        float32 out, as scikit-learn). The float64 parameters are kept whole: they
        are what predictions, warm starts, checkpoints and model files use, so a
        float32 fit loses no precision between passes or across a resume."""
        self._full_params = params
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = (
            np.asarray(a, dtype=dtype)
            for a in (params.weights, params.means, params.covariances, params.precisions_cholesky)
        )
        self.precisions_ = np.asarray(params.model.precisions(params.precisions_cholesky), dtype)
        self._public = self._public_arrays()

    def _public_arrays(self) -> tuple[Any, ...]:
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    @property
    def _params(self) -> GMMParams:
        """The float64 parameters; rebuilt from the attributes if someone replaced them."""
        full = getattr(self, "_full_params", None)
        public = getattr(self, "_public", ())
        if full is not None and all(
            a is b for a, b in zip(public, self._public_arrays(), strict=True)
        ):
            return full
        return self._params_from_attributes(self)

    # ------------------------------------------------------------ prediction
    def _map_rows(
        self, X: Any, block_fn, *, components: bool, dtype, name: str = "", restore: bool = True
    ):
        """Apply ``block_fn(block, ep)`` to NumPy input, or lazily to each dask block.

        ``dtype='data'``: the validated data's (float32 or float64), for block
        functions that answer in their block's dtype.
        """
        check_is_fitted(self)
        inp = self._input(X, reset=False)
        if isinstance(dtype, str) and dtype == "data":
            dtype = inp.X.dtype if isinstance(inp, Input) else inp.dtype
        ep = self._params.estep()
        if not isinstance(inp, Input):
            return block_fn(inp, ep)
        chunks = (inp.X.chunks[0], (self.n_components,)) if components else (inp.X.chunks[0],)
        ndim = 2 if components else 1
        out = inp.X.map_blocks(
            block_fn,
            dask.delayed(ep),
            chunks=chunks,
            drop_axis=None if components else 1,
            dtype=dtype,
            meta=np.empty((0,) * ndim, dtype=dtype),
        )
        if not restore:
            return out
        return inp.restore(out, "component" if components else None, name=name)

    def _block_fn(self, block_fn):
        """``block_fn`` with this estimator's missing-value mode bound (picklable)."""
        return functools.partial(block_fn, missing=self._marginalize)

    def predict(self, X):
        """Label of the most probable component of each sample.

        Parameters
        ----------
        X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
            Lazy (with the input's row chunks) for dask input.
        """
        return self._map_rows(
            X, self._block_fn(_predict_block), components=False, dtype=np.int64, name="label"
        )

    def predict_proba(self, X):
        """Posterior probability of each component for each sample.

        Parameters
        ----------
        X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray or dask.array.Array of shape (n_samples, n_components)
            Lazy for dask input.
        """
        return self._map_rows(
            X, self._block_fn(_proba_block), components=True, dtype="data", name="probability"
        )

    def score_samples(self, X):
        """Log-likelihood of each sample under the model.

        Parameters
        ----------
        X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray or dask.array.Array of shape (n_samples,)
            Lazy for dask input.
        """
        return self._map_rows(
            X, self._block_fn(_score_block), components=False, dtype="data", name="log_density"
        )

    def score(self, X, y=None):
        """Mean log-likelihood of ``X`` under the model (reads dask input once).

        Parameters
        ----------
        X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        log_likelihood : float
        """
        return self._mean_log_prob(X)[0]

    def _mean_log_prob(self, X: Any) -> tuple[float, int]:
        """Mean log-likelihood of ``X`` and its number of samples (one read)."""
        log_prob = self._map_rows(
            X, self._block_fn(_score_block64), components=False, dtype=np.float64, restore=False
        )
        if not self._marginalize:
            if isinstance(log_prob, da.Array):
                mean = log_prob.mean()
                with blas_threads_guard(mean):
                    return float(mean.compute()), int(log_prob.shape[0])
            return float(np.mean(log_prob)), len(log_prob)
        # samples with no observed value (NaN) do not count
        xp = da if isinstance(log_prob, da.Array) else np
        observed = ~xp.isnan(log_prob)
        total, count = xp.sum(xp.where(observed, log_prob, 0.0)), xp.sum(observed)
        if isinstance(log_prob, da.Array):
            with blas_threads_guard(total):
                total, count = dask.compute(total, count)
        if not count:
            raise ValueError("X has no observed value (every entry is NaN).")
        return float(total) / int(count), int(count)

    def _n_parameters(self) -> int:
        _, n_features = self.means_.shape
        return get_covariance_model(self.covariance_type).n_parameters(
            self.n_components, n_features
        )

    def bic(self, X):
        """Bayesian information criterion of the model on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)

        Returns
        -------
        bic : float
        """
        return self.information_criteria(X)["bic"]

    def aic(self, X):
        """Akaike information criterion of the model on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)

        Returns
        -------
        aic : float
        """
        return self.information_criteria(X)["aic"]

    def information_criteria(self, X) -> dict[str, float]:
        """BIC and AIC of the model on ``X`` from one read of the data.

        Parameters
        ----------
        X : array-like, dask.array.Array, xarray object or store path
            Of shape (n_samples, n_features).

        Returns
        -------
        dict
            ``bic``, ``aic`` (lower is better), ``log_likelihood`` (the mean per
            sample), ``n_parameters`` and ``n_samples``.
        """
        mean, n_samples = self._mean_log_prob(X)
        n_parameters = self._n_parameters()
        return {
            "bic": -2 * mean * n_samples + n_parameters * math.log(n_samples),
            "aic": -2 * mean * n_samples + 2 * n_parameters,
            "log_likelihood": mean,
            "n_parameters": n_parameters,
            "n_samples": n_samples,
        }

    def predict_to_zarr(
        self,
        X,
        path,
        *,
        proba=False,
        score=False,
        anomaly_quantile=None,
        overwrite=False,
        progress=None,
    ) -> dict[str, Any]:
        """Write per-sample results of ``X`` to a Zarr store, block by block.

        The store is an xarray-readable group with the input's sample dimensions
        (an image ``(band, y, x)`` gives ``(y, x)`` maps). A run killed at any
        moment is completed by running it again; a store of this model and the
        same input files is reused; one of another model or other data is
        replaced only with ``overwrite``; anything that is not a daskgmm output
        is never replaced. One job at a time writes a store (a lock beside it).

        Parameters
        ----------
        X : array-like, dask.array.Array, xarray object or store path
            Of shape (n_samples, n_features) (or an image with ``feature_dim``).
        path : str or path-like
            The output store (local path or fsspec URL the workers can reach).
        proba, score : bool, default=False
            Also write ``probability`` (per component, float32) and ``log_density``.
        anomaly_quantile : float, optional
            Write instead an ``anomaly`` mask of the samples whose log-density is
            below this quantile (found in three distributed passes), and the
            ``log_density``.
        overwrite : bool, default=False
            Replace a daskgmm output of another model or other data.
        progress : callable, optional
            Called with (blocks written, blocks in all) as blocks land.

        Returns
        -------
        dict
            ``blocks`` written now, ``skipped`` (already done), ``samples``, and
            for anomalies the log-density ``threshold``.
        """
        from ._output import write_per_sample

        return self._write_outputs(
            write_per_sample, X, path, proba, score, anomaly_quantile, overwrite, progress
        )

    def predict_to_geotiff(
        self,
        X,
        path,
        *,
        proba=False,
        score=False,
        anomaly_quantile=None,
        overwrite=False,
        progress=None,
    ) -> dict[str, Any]:
        """Write per-pixel results of an image as Cloud-Optimised GeoTIFFs on its grid.

        ``path`` gets the labels (int16, nodata -1) or, with ``anomaly_quantile``,
        the anomaly mask (uint8, nodata 255); ``proba`` and ``score`` add
        ``STEM.probability.tif`` and ``STEM.log_density.tif`` beside it. The
        input's CRS and transform are kept. Blocks are written as they are
        computed (bounded memory), into files beside the targets that are renamed
        into place when complete; a file that is not a daskgmm output is never
        replaced, one of another model only with ``overwrite``.

        Parameters
        ----------
        X : GeoTIFF path, list of single-band GeoTIFF paths, or an image
            Pixels on a (y, x) grid (see :meth:`predict_to_zarr`).
        path : str or path-like
            A local ``.tif`` path.
        proba, score, anomaly_quantile, overwrite, progress
            As in :meth:`predict_to_zarr`.

        Returns
        -------
        dict
            ``blocks``, ``skipped``, ``samples``, ``files`` (variable -> path),
            ``variables`` and for anomalies the log-density ``threshold``.
        """
        from ._raster_output import write_geotiff

        return self._write_outputs(
            write_geotiff, X, path, proba, score, anomaly_quantile, overwrite, progress
        )

    def _write_outputs(
        self, writer, X, path, proba, score, anomaly_quantile, overwrite, progress
    ) -> dict[str, Any]:
        """Per-sample outputs of ``X`` written by ``writer`` (Zarr or GeoTIFF: one
        interface, :func:`daskgmm._output.write_per_sample`'s)."""
        check_is_fitted(self)
        inp = self._input(X, reset=False)
        if not isinstance(inp, Input):
            inp = _numpy_input(inp)
        names, threshold, extra = self._per_sample_job(inp, proba, score, anomaly_quantile)
        info = writer(
            path,
            self._params,
            inp,
            names,
            threshold=threshold,
            overwrite=overwrite,
            extra_attrs=extra,
            progress=progress,
            missing=self._marginalize,
        )
        info = {**info, "variables": list(names)}
        return info if threshold is None else {**info, "threshold": threshold}

    def _per_sample_job(
        self, inp: Input, proba: bool, score: bool, anomaly_quantile: float | None
    ) -> tuple[tuple[str, ...], float | None, dict[str, Any] | None]:
        """What a per-sample output holds (:data:`daskgmm._output.VARIABLES`) and, for
        anomalies, the log-density threshold (three passes) and the attributes that
        record it."""
        from ._output import log_density, output_names, quantile_threshold

        names = output_names(proba, score, anomaly_quantile is not None)
        if anomaly_quantile is None:
            return names, None, None
        q = float(anomaly_quantile)
        logger.info("Finding the log-density threshold at quantile %s (three passes)", q)
        threshold = quantile_threshold(log_density(self._params, inp.X, self._marginalize), q)
        return names, threshold, {"quantile": q, "threshold": threshold}

    def predict_to_table(
        self,
        X,
        path,
        *,
        ids,
        proba=False,
        score=False,
        anomaly_quantile=None,
        overwrite=False,
        progress=None,
    ) -> dict[str, Any]:
        """Write per-row results of a table, with its id columns, as a Parquet dataset.

        One Parquet part per block of the input, each holding the rows' ``ids``
        columns then ``label``, ``probability_<k>`` (with ``proba``) and
        ``log_density`` (with ``score``); with ``anomaly_quantile``, only the
        rows whose log-density is below that quantile, with their
        ``log_density``. Written part by part (memory bounded by a block), a run
        killed at any moment is completed by running it again; an output of
        another model or other data is replaced only with ``overwrite``; a
        folder daskgmm did not write is never replaced.

        Parameters
        ----------
        X : pandas or dask DataFrame, or a Parquet/CSV path
            The table (its feature columns: ``columns``, else ``feature_names_in_``).
        path : str or path-like
            The output directory (local path or fsspec URL the workers can reach).
        ids : list of str
            Columns that name each row once (checked: duplicates are an error).
        proba, score : bool, default=False
        anomaly_quantile : float, optional
        overwrite : bool, default=False
        progress : callable, optional
            Called with (parts written, parts in all).

        Returns
        -------
        dict
            ``blocks`` written now, ``skipped``, ``samples``, ``rows`` written,
            and for anomalies the log-density ``threshold``.
        """
        from ._table_output import write_table

        check_is_fitted(self)
        if is_dataframe(X) and type(X).__module__.startswith("pandas"):
            import dask.dataframe as dd

            X = dd.from_pandas(X, chunksize=max(1, 2**20 // max(1, X.shape[1])))
        inp = self._input(X, reset=False)
        if not isinstance(inp, Input) or inp.table is None:
            raise TypeError(
                "predict_to_table needs a table: a pandas or dask DataFrame, or a Parquet or "
                "CSV path."
            )
        ids = [ids] if isinstance(ids, str) else list(ids)
        names, threshold, extra = self._per_sample_job(inp, proba, score, anomaly_quantile)
        columns = tuple(n for n in names if n != "anomaly")  # anomalies: a row filter
        info = write_table(path, self._params, inp, ids, columns, threshold=threshold,
                           overwrite=overwrite, extra=extra, progress=progress,
                           missing=self._marginalize)  # fmt: skip
        if threshold is None:
            return {**info, "variables": list(columns)}
        return {**info, "variables": list(columns), "threshold": threshold}

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample."
            )
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        X = get_covariance_model(self.covariance_type).sample(
            rng, self.means_, self.covariances_, counts
        )
        transform = getattr(self, "transform_", None)
        if transform is not None:  # in the input's units (PCA: on the principal subspace)
            X = transform.inverse(X).astype(self.means_.dtype)
        y = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
        return X, y

    # ------------------------------------------------------------- verbosity
    def _restart_reporter(self):
        """scikit-learn's verbose lines: when a restart starts, and how it ended."""
        started: dict[int, float] = {}

        def report(init: int, result: EMResult | None) -> None:
            if result is None:
                started[init] = time.perf_counter()
                if self.verbose >= 1:
                    print(f"Initialization {init}")
            else:
                now = time.perf_counter()
                self._verbose_init_end(result, now - started.get(init, now))

        return report

    def _on_iteration(self, callback):
        def on_iteration(info: IterationInfo) -> None:
            self._verbose_iteration(info)
            if callback is not None:
                callback(info)

        return on_iteration

    def _verbose_iteration(self, info: IterationInfo) -> None:
        if self.verbose and info.n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print(f"  Iteration {info.n_iter}")
            else:
                print(
                    f"  Iteration {info.n_iter}\t time lapse {info.seconds:.5f}s\t "
                    f"ll change {info.change:.5f}"
                )

    def _verbose_init_end(self, result: EMResult, seconds: float) -> None:
        msg = "converged" if result.converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {msg}.")
        elif self.verbose >= 2:
            print(
                f"Initialization {msg}. time lapse {seconds:.5f}s\t lower bound "
                f"{result.lower_bound:.5f}."
            )


def _numpy_input(X: np.ndarray, stepwise: bool = False) -> Input:
    """An array scikit-learn's ``validate_data`` has checked, as an :class:`Input` of row
    views (no copy, no second scan); in a stepwise fit's smaller blocks."""
    rows = stepwise_row_chunks(*X.shape, X.dtype.itemsize) if stepwise else None
    Xd = from_numpy(X, rows)
    return Input(Xd, f"dask:{Xd.name}")


def _content_digest(X: da.Array, sample_weight: da.Array | None) -> Digest:
    """One pass over ``X`` that only computes its content digest."""
    return map_reduce(X, content_digest_chunk, sample_weight=sample_weight, name="daskgmm-digest")


class _OtherData(Exception):
    """A pass found data other than the checkpoint's (caught in ``fit``)."""

    def __init__(self, expected: str, found: str):
        super().__init__(found)
        self.expected, self.found = expected, found


class _ContentCheck:
    """Records the data's content digest in the checkpoint metadata when a pass has
    computed it, after checking it against the checkpoint's where only a pass can tell."""

    def __init__(self, meta: dict[str, Any], expected: str | None):
        self.meta, self.expected = meta, expected

    def __call__(self, digest: Digest) -> None:
        if self.expected is not None and digest.hex() != self.expected:
            raise _OtherData(self.expected, digest.hex())
        self.meta["data"]["content"] = digest.hex()
        self.expected = None


def _is_out_of_core(X: Any) -> bool:
    """Inputs handled by :func:`open_input` rather than scikit-learn's ``validate_data``."""
    if isinstance(X, (str, os.PathLike, da.Array, Input)) or hasattr(X, "dims"):
        return True
    if is_band_list(X):  # single-band rasters to stack
        return True
    if is_dataframe(X):
        return type(X).__module__.startswith("dask")
    return type(X).__module__.startswith("zarr")


def _transformed(opened: Any, transform: Transform) -> Any:
    """An opened input (NumPy or :class:`Input`) under ``transform``, lazily for dask."""
    if not isinstance(opened, Input):
        return transform.apply(opened)
    X = opened.X
    mapped = X.map_blocks(
        transform.apply, chunks=(X.chunks[0], (transform.n_features_out,)), dtype=X.dtype
    )
    return dataclasses.replace(opened, X=mapped)


def _feature_names(est: Any) -> list[str] | None:
    names = getattr(est, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _version() -> str:
    from . import __version__

    return __version__


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if key == "random_state" and not (value is None or isinstance(value, Integral)):
            value = None
        elif key in ("columns", "bands") and value is not None:
            value = [str(c) for c in value]
        elif value is not None and not isinstance(value, (str, Real)):  # array-likes
            value = np.asarray(value, dtype=np.float64).tolist()
        out[key] = value
    return json.loads(json.dumps(out))


def _predict_block(X: np.ndarray, ep: EStepParams, missing: bool = False) -> np.ndarray:
    wlp = estimate_weighted_log_prob(X, ep, missing)
    labels = np.argmax(wlp, axis=1).astype(np.int64)
    if missing:
        labels[np.isnan(wlp[:, 0])] = -1  # no observed value
    return labels


def _proba_block(X: np.ndarray, ep: EStepParams, missing: bool = False) -> np.ndarray:
    """Probabilities in the data's dtype (float32 in, float32 out, as scikit-learn)."""
    return np.exp(estimate_log_prob_resp(X, ep, missing)[1]).astype(X.dtype)


def _score_block(X: np.ndarray, ep: EStepParams, missing: bool = False) -> np.ndarray:
    """Log-densities in the data's dtype."""
    return estimate_log_prob_resp(X, ep, missing)[0].astype(X.dtype)


def _score_block64(X: np.ndarray, ep: EStepParams, missing: bool = False) -> np.ndarray:
    """Log-densities in float64: what score, BIC and AIC average."""
    return estimate_log_prob_resp(X, ep, missing)[0].astype(np.float64)
