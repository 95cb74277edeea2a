"""Initial parameters of the mixture, computed on dask arrays.

``init_params``:

``'kmeans'`` (default)
    k-means|| seeding (Bahmani et al., 2012) over the dask array, the
    candidates reduced to ``n_components`` centres on the driver (weighted
    k-means++ and Lloyd on the small candidate set), then Lloyd iterations on
    the whole dataset, then one pass that assigns each sample to its nearest
    centre and accumulates the Gaussian statistics of that assignment (as
    scikit-learn's ``KMeans(...).labels_`` one-hot responsibilities).
``'k-means++'``
    The k-means|| seeding and driver reduction only: the means are data
    points, the covariances ``reg_covar`` (as scikit-learn, which puts one
    sample in each component).
``'random'``
    Random normalised responsibilities, drawn per row from a counter-based
    generator so the draw does not depend on chunking.
``'random_from_data'``
    ``n_components`` distinct random samples as means (covariances ``reg_covar``).

Every draw is tied to global row numbers, so a given ``random_state`` gives the
same initialisation whatever the chunking.

.. warning:: ``'kmeans'`` reads the data ``3 + n_rounds + n_lloyd`` times
   (typically 10-20 passes); prefer ``'k-means++'`` or ``'random_from_data'``
   for data streamed from slow storage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dask.array as da
import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans, kmeans_plusplus

from ._covariance import get_covariance_model
from ._reduction import map_reduce
from ._stats import (
    GMMParams,
    SuffStats,
    _raise_nonfinite,
    hard_assignment_stats_chunk,
    m_step,
    nearest_sqdist_chunk,
    random_resp_stats_chunk,
    uniform_rows,
)

__all__ = ["initialize"]

logger = logging.getLogger(__name__)

Float = NDArray[np.floating]

#: k-means|| rounds and oversampling factor (candidates per round = factor * n_components).
N_ROUNDS = 5
OVERSAMPLING = 2.0
#: Lloyd iterations on the whole data after seeding, and their tolerance
#: (total squared centre shift relative to the mean within-cluster variance).
LLOYD_MAX_ITER = 10
LLOYD_TOL = 1e-4


@dataclass(frozen=True, eq=False)
class _Candidates:
    """Rows sampled by one k-means|| round, and the cost of the centres of the pass."""

    rows: Float
    cost: float
    n_samples: int

    def __add__(self, other: _Candidates) -> _Candidates:
        return _Candidates(
            np.concatenate([self.rows, other.rows]),
            self.cost + other.cost,
            self.n_samples + other.n_samples,
        )


def _kmeans_parallel_chunk(
    X: Float,
    centers: Float,
    shift: Float,
    cost: float,
    key: int,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> _Candidates:
    """One k-means|| round on a block: cost of ``centers`` and the rows it samples.

    A row is sampled with probability ``min(1, l * w d^2 / cost)``, where ``cost``
    is the (weighted) cost found by the previous pass (``0`` samples nothing).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        _, d2 = nearest_sqdist_chunk(X, centers, shift)
    if not np.all(np.isfinite(d2)):
        _raise_nonfinite(X, row_offset)
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    wd2 = w * d2
    if cost > 0:
        u = uniform_rows(key, row_offset, len(X), 1)[:, 0]
        picked = u < OVERSAMPLING * len(centers) * wd2 / cost
        rows = X[picked].astype(np.float64)
    else:
        rows = np.empty((0, X.shape[1]))
    return _Candidates(rows, float(wd2.sum()), len(X))


def _take_rows(X: da.Array, indices: NDArray[np.integer]) -> Float:
    order = np.argsort(indices)
    rows = np.empty((len(indices), X.shape[1]))
    rows[order] = X[np.asarray(indices)[order]].compute()
    if not np.all(np.isfinite(rows)):
        _raise_nonfinite(rows, None)  # gathered rows: their index here is not a data row
    return rows


def _kmeans_parallel_seeds(
    X: da.Array,
    n_components: int,
    rng: np.random.RandomState,
    sample_weight: da.Array | None,
) -> tuple[Float, Float]:
    """k-means|| candidates and their (weighted) sizes."""
    n_samples = X.shape[0]
    centers = _take_rows(X, rng.randint(n_samples, size=1))
    shift = centers[0]
    cost = 0.0
    for round_ in range(N_ROUNDS + 1):
        key = int(rng.randint(2**31 - 1))
        found = map_reduce(
            X, _kmeans_parallel_chunk, centers, shift, cost, key, sample_weight=sample_weight
        )
        cost = found.cost
        if round_:
            centers = np.concatenate([centers, found.rows])
        logger.debug("k-means|| round %d: %d candidates, cost %.6g", round_, len(centers), cost)
        if cost == 0.0:
            break
    stats = map_reduce(
        X,
        hard_assignment_stats_chunk,
        centers,
        shift,
        "spherical",
        sample_weight=sample_weight,
        name="daskgmm-kmeans-weights",
    )
    return centers, stats.nk


def _reduce_candidates(
    candidates: Float, sizes: Float, n_components: int, rng: np.random.RandomState, lloyd: bool
) -> Float:
    """Pick ``n_components`` centres among weighted candidates, on the driver."""
    keep = sizes > 0
    candidates, sizes = candidates[keep], sizes[keep]
    if len(candidates) <= n_components:
        return candidates
    seed = int(rng.randint(2**31 - 1))
    if lloyd:
        km = KMeans(n_clusters=n_components, n_init=3, random_state=seed)
        return km.fit(candidates, sample_weight=sizes).cluster_centers_
    centers, _ = kmeans_plusplus(candidates, n_components, sample_weight=sizes, random_state=seed)
    return centers


def _fill_centers(
    X: da.Array, centers: Float, n_components: int, rng: np.random.RandomState
) -> Float:
    """Top up with random samples when seeding found fewer distinct points than components."""
    missing = n_components - len(centers)
    if missing <= 0:
        return centers
    extra = _take_rows(X, rng.choice(X.shape[0], size=missing, replace=False))
    return np.concatenate([centers, extra])


def _lloyd(X: da.Array, centers: Float, sample_weight: da.Array | None) -> Float:
    """Lloyd iterations over the whole data, from ``centers``."""
    for it in range(LLOYD_MAX_ITER):
        shift = centers.mean(axis=0)
        stats = map_reduce(
            X,
            hard_assignment_stats_chunk,
            centers,
            shift,
            "spherical",
            sample_weight=sample_weight,
            name="daskgmm-lloyd",
        )
        moved = np.where(
            stats.nk[:, None] > 0, stats.s1 / np.maximum(stats.nk, 1e-300)[:, None], 0.0
        )
        centers = centers + moved
        within = stats.loglik / max(stats.weight_sum, 1e-300) / X.shape[1]
        shift_sq = float(np.sum(moved**2))
        logger.debug(
            "Lloyd iteration %d: inertia %.6g, centre shift %.3g", it, stats.loglik, shift_sq
        )
        if shift_sq <= LLOYD_TOL * within:
            break
    return centers


def _point_params(centers: Float, covariance_type: str, reg_covar: float) -> GMMParams:
    """Means at the given points, equal weights, covariances ``reg_covar``.

    What scikit-learn's ``'k-means++'``/``'random_from_data'`` produce: one
    sample per component.
    """
    n_components, n_features = centers.shape
    model = get_covariance_model(covariance_type)
    shape = model.covariances_shape(n_components, n_features)
    if covariance_type in ("full", "tied"):
        covariances = np.broadcast_to(np.eye(n_features) * reg_covar, shape).copy()
    else:
        covariances = np.full(shape, reg_covar)
    weights = np.full(n_components, 1.0 / n_components)
    return GMMParams.from_covariances(covariance_type, weights, centers, covariances)


def _params_from_resp_pass(
    X: da.Array,
    init_params: str,
    n_components: int,
    covariance_type: str,
    reg_covar: float,
    rng: np.random.RandomState,
    sample_weight: da.Array | None,
) -> GMMParams:
    if init_params in ("kmeans", "k-means++"):
        candidates, sizes = _kmeans_parallel_seeds(X, n_components, rng, sample_weight)
        centers = _reduce_candidates(candidates, sizes, n_components, rng, init_params == "kmeans")
        centers = _fill_centers(X, centers, n_components, rng)
        if init_params == "k-means++":
            return _point_params(centers, covariance_type, reg_covar)
        centers = _lloyd(X, centers, sample_weight)
        shift = centers.mean(axis=0)
        stats = map_reduce(
            X,
            hard_assignment_stats_chunk,
            centers,
            shift,
            covariance_type,
            sample_weight=sample_weight,
            name="daskgmm-kmeans-init",
        )
        return m_step(stats, centers, shift, covariance_type, reg_covar)
    if init_params == "random_from_data":
        indices = rng.choice(X.shape[0], size=n_components, replace=False)
        return _point_params(_take_rows(X, indices), covariance_type, reg_covar)
    if init_params == "random":
        head = X[: min(X.shape[0], 1024)].compute().astype(np.float64)
        if not np.all(np.isfinite(head)):
            _raise_nonfinite(head, 0)
        shift = head.mean(axis=0)
        stats: SuffStats = map_reduce(
            X,
            random_resp_stats_chunk,
            int(rng.randint(2**31 - 1)),
            n_components,
            shift,
            covariance_type,
            sample_weight=sample_weight,
            name="daskgmm-random-init",
        )
        means = np.broadcast_to(shift, (n_components, X.shape[1]))
        return m_step(stats, means, shift, covariance_type, reg_covar)
    raise ValueError(f"Unknown init_params {init_params!r}")


def initialize(
    X: da.Array,
    *,
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    random_state: np.random.RandomState,
    sample_weight: da.Array | None = None,
    weights_init: Float | None = None,
    means_init: Float | None = None,
    precisions_init: Float | None = None,
) -> GMMParams:
    """Initial parameters, as scikit-learn's ``GaussianMixture._initialize_parameters``.

    User-given ``weights_init``/``means_init``/``precisions_init`` (already
    validated) replace the corresponding computed parameters; when all three
    are given the data are not read.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
    n_components : int
    covariance_type : str
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}
    reg_covar : float
    random_state : numpy.random.RandomState
        Consumed in a fixed order, independent of chunking.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    weights_init, means_init, precisions_init : ndarray, optional

    Returns
    -------
    GMMParams
    """
    if weights_init is not None and means_init is not None and precisions_init is not None:
        return GMMParams.from_precisions(covariance_type, weights_init, means_init, precisions_init)
    params = _params_from_resp_pass(
        X, init_params, n_components, covariance_type, reg_covar, random_state, sample_weight
    )
    weights = params.weights if weights_init is None else weights_init
    means = params.means if means_init is None else means_init
    if precisions_init is not None:
        return GMMParams.from_precisions(covariance_type, weights, means, precisions_init)
    return GMMParams(
        covariance_type, weights, means, params.covariances, params.precisions_cholesky
    )
