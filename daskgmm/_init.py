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

With ``n_init`` restarts, every pass serves all of them (:func:`initialize_many`):
restart ``i`` draws from its own seed, so the passes are shared without changing
any restart's result beyond rounding. The restarts' distances are all taken
around the first restart's shift, so that each tile is centred once and one
GEMM gives the distances to every restart's centres (the first restart
computes exactly as it would alone).

.. warning:: ``'kmeans'`` reads the data ``3 + n_rounds + n_lloyd`` times
   (typically 10-20 passes, whatever ``n_init``); prefer ``'k-means++'`` or
   ``'random_from_data'`` for data streamed from slow storage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans, kmeans_plusplus

from ._covariance import get_covariance_model
from ._reduction import map_reduce
from ._stats import (
    GMMParams,
    _raise_nonfinite,
    gaussian_moments,
    hard_assignment_stats_chunk,
    kmeans_parallel_chunk,
    kmeans_sizes_chunk,
    kmeans_stats_chunk,
    per_restart_chunk,
    random_resp_stats_chunk,
    rows_chunk,
    with_totals_chunk,
)
from ._summary import Summary, summarize

__all__ = ["initial_moments", "initialize", "initialize_many", "restart_seeds"]

logger = logging.getLogger(__name__)

Float = NDArray[np.floating]

#: k-means|| rounds and oversampling factor (candidates per round = factor * n_components).
N_ROUNDS = 5
OVERSAMPLING = 2.0
#: Lloyd iterations on the whole data after seeding, and their tolerance
#: (total squared centre shift relative to the mean within-cluster variance).
LLOYD_MAX_ITER = 10
LLOYD_TOL = 1e-4


def _take_rows(X: da.Array, indices: NDArray[np.integer]) -> Float:
    """Rows ``indices`` of ``X``, in that order, gathered by one pass like every other.

    (Through the same per-block layer as the statistics passes: a fancy-indexing
    graph would resubmit the blocks' keys with another task spec, which the
    distributed scheduler warns may deadlock.)
    """
    indices = np.asarray(indices, dtype=np.int64)
    # only the blocks that hold a requested row are read
    starts = np.cumsum((0, *X.chunks[0]))
    blocks = np.searchsorted(starts, indices, side="right") - 1
    wanted = np.unique(blocks)
    sub_starts = np.cumsum((0, *(X.chunks[0][b] for b in wanted)))
    local = indices - starts[blocks] + sub_starts[np.searchsorted(wanted, blocks)]
    found = map_reduce(X.blocks[wanted], rows_chunk, local, name="daskgmm-take-rows")
    rows = np.empty((len(indices), X.shape[1]))
    rows[found.positions] = found.rows
    return rows


def _kmeans_parallel_seeds(
    X: da.Array,
    n_components: int,
    rngs: Sequence[np.random.RandomState],
    sample_weight: da.Array | None,
    totals: tuple[str, float] | None = None,
    summary: Summary | None = None,
) -> tuple[list[Float], list[Float], Moments | None]:
    """k-means|| candidates and their (weighted) sizes, for each restart; with
    ``totals = (covariance_type, reg_covar)`` also the moments of all the data as one
    component, from the sizes' pass.

    The first round samples nothing: it gives each restart the data's cost to its
    first centre, which the data's per-feature means and spreads give
    (:meth:`Summary.cost`). ``summary`` is those of ``X`` if they are known (as
    weighted as ``sample_weight``); else one pass computes them.
    """
    if summary is None:
        summary = summarize(X, sample_weight, finite=True)
    firsts = _take_rows(X, np.array([rng.randint(X.shape[0]) for rng in rngs]))
    centers = [firsts[i : i + 1] for i in range(len(rngs))]
    # every restart's distances around the first restart's first row (a sample,
    # so near the data), which lets them share each tile (see _nearest_tiles)
    shift = firsts[0]
    costs = [summary.cost(first) for first in firsts]
    for rng in rngs:  # the key the first round's pass drew: later rounds' keys as before
        rng.randint(2**31 - 1)
    active = [i for i in range(len(rngs)) if costs[i] != 0.0]
    for round_ in range(1, N_ROUNDS + 1):
        if not active:
            break
        keys = [int(rngs[i].randint(2**31 - 1)) for i in active]
        found = map_reduce(
            X,
            kmeans_parallel_chunk,
            tuple((centers[i], costs[i], key) for i, key in zip(active, keys, strict=True)),
            shift,
            n_components,
            OVERSAMPLING,
            sample_weight=sample_weight,
            name="daskgmm-kmeans-parallel",
        ).parts
        logger.info("initialisation: k-means|| round %d of %d", round_, N_ROUNDS)
        for i, candidates in zip(active, found):
            costs[i] = candidates.cost
            centers[i] = np.concatenate([centers[i], candidates.rows])
            logger.debug(
                "init %d k-means|| round %d: %d candidates, cost %.6g",
                i,
                round_,
                len(centers[i]),
                costs[i],
            )
        active = [i for i in active if costs[i] != 0.0]
    if totals is None:
        sizes = map_reduce(
            X,
            kmeans_sizes_chunk,
            tuple(centers),
            shift,
            sample_weight=sample_weight,
            name="daskgmm-kmeans-weights",
        ).parts
        return centers, [stats.nk for stats in sizes], None
    covariance_type, reg_covar = totals
    *sizes, whole = map_reduce(
        X,
        with_totals_chunk,
        kmeans_sizes_chunk,
        (tuple(centers), shift),
        shift,
        covariance_type,
        sample_weight=sample_weight,
        name="daskgmm-kmeans-weights",
    ).parts
    moments = gaussian_moments(whole, shift[None], shift, covariance_type, reg_covar)
    return centers, [stats.nk for stats in sizes], moments


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


def _lloyd(X: da.Array, centers: Sequence[Float], sample_weight: da.Array | None) -> list[Float]:
    """Lloyd iterations over the whole data from each restart's ``centers``, sharing passes.

    A restart stops when its centres have settled; the others go on.
    """
    centers = list(centers)
    active = list(range(len(centers)))
    held: list = []  # see map_reduce's hold
    for it in range(LLOYD_MAX_ITER):
        # one shift for all (the first active restart's centroid), so that the
        # restarts share each tile; that restart computes as it would alone
        shift = centers[active[0]].mean(axis=0)
        parts = map_reduce(
            X,
            kmeans_stats_chunk,
            tuple(centers[i] for i in active),
            shift,
            sample_weight=sample_weight,
            name="daskgmm-lloyd",
            hold=held,
        ).parts
        logger.info("initialisation: Lloyd iteration %d (at most %d)", it + 1, LLOYD_MAX_ITER)
        still = []
        for i, stats in zip(active, parts):
            moved = np.where(
                stats.nk[:, None] > 0, stats.s1 / np.maximum(stats.nk, 1e-300)[:, None], 0.0
            )
            centers[i] = centers[i] + moved
            within = stats.inertia / max(stats.weight_sum, 1e-300) / X.shape[1]
            shift_sq = float(np.sum(moved**2))
            logger.debug(
                "init %d Lloyd iteration %d: inertia %.6g, centre shift %.3g",
                i,
                it,
                stats.inertia,
                shift_sq,
            )
            if shift_sq > LLOYD_TOL * within:
                still.append(i)
        active = still
        if not active:
            break
    return centers


#: ``(nk, xk, sk)``: components' (weighted) sizes, means and covariances (``reg_covar``
#: added), scikit-learn's ``_estimate_gaussian_parameters`` of the initial responsibilities.
Moments = tuple[Float, Float, Float]


def _point_moments(centers: Float, covariance_type: str, reg_covar: float) -> Moments:
    """One sample per component at ``centers``: what scikit-learn's ``'k-means++'`` and
    ``'random_from_data'`` give (sizes 1, covariances ``reg_covar``)."""
    n_components, n_features = centers.shape
    model = get_covariance_model(covariance_type)
    shape = model.covariances_shape(n_components, n_features)
    if covariance_type in ("full", "tied"):
        covariances = np.broadcast_to(np.eye(n_features) * reg_covar, shape).copy()
    else:
        covariances = np.full(shape, reg_covar)
    return np.ones(n_components), centers, covariances


def _moments_from_data(
    X: da.Array,
    init_params: str,
    n_components: int,
    covariance_type: str,
    reg_covar: float,
    rngs: Sequence[np.random.RandomState],
    sample_weight: da.Array | None,
    totals: bool = False,
    summary: Summary | None = None,
) -> tuple[list[Moments], Moments | None]:
    """Initial moments of every restart; each pass over the data serves all of them.
    ``summary``: see :func:`initial_moments`.

    With ``totals``, also the moments of all the data as one component (their
    size, mean and covariance), from a pass that reads every sample anyway (the
    last for ``'kmeans'`` and ``'random'``, the k-means|| sizes for
    ``'k-means++'``); ``'random_from_data'`` makes one more.
    """

    def whole(stats, center, shift):
        return gaussian_moments(stats, center[None], shift, covariance_type, reg_covar)

    def points(centers: Sequence[Float], data: Moments | None) -> tuple[list[Moments], Any]:
        moments = [_point_moments(c, covariance_type, reg_covar) for c in centers]
        if totals and data is None:  # the initialisation read no sample but its rows
            data = _totals(X, covariance_type, reg_covar, sample_weight, centers[0][0])
        return moments, data

    if init_params in ("kmeans", "k-means++"):
        # k-means++ reads every sample only in k-means||: the data's moments ride there
        on_sizes = (covariance_type, reg_covar) if totals and init_params == "k-means++" else None
        candidates, sizes, data = _kmeans_parallel_seeds(
            X, n_components, rngs, sample_weight, on_sizes, summary
        )
        centers = [
            _fill_centers(
                X,
                _reduce_candidates(c, s, n_components, rng, init_params == "kmeans"),
                n_components,
                rng,
            )
            for c, s, rng in zip(candidates, sizes, rngs)
        ]
        if init_params == "k-means++":
            return points(centers, data)
        centers = _lloyd(X, centers, sample_weight)
        shift = centers[0].mean(axis=0)
        sets = tuple(centers) + ((shift[None],) if totals else ())  # all samples: one set
        parts = map_reduce(
            X,
            hard_assignment_stats_chunk,
            sets,
            shift,
            covariance_type,
            sample_weight=sample_weight,
            name="daskgmm-kmeans-init",
        ).parts
        moments = [
            gaussian_moments(stats, c, shift, covariance_type, reg_covar)
            for stats, c in zip(parts, centers, strict=False)
        ]
        return moments, whole(parts[-1], shift, shift) if totals else None
    if init_params == "random_from_data":
        indices = [rng.choice(X.shape[0], size=n_components, replace=False) for rng in rngs]
        rows = _take_rows(X, np.concatenate(indices)).reshape(len(rngs), n_components, -1)
        return points(list(rows), None)
    if init_params == "random":
        head = X[: min(X.shape[0], 1024)].compute().astype(np.float64)
        if not np.all(np.isfinite(head)):
            _raise_nonfinite(head, 0)
        shift = head.mean(axis=0)
        per_restart = [
            (int(rng.randint(2**31 - 1)), n_components, shift, covariance_type) for rng in rngs
        ]
        if totals:  # one component: every responsibility 1
            per_restart.append((0, 1, shift, covariance_type))
        parts = map_reduce_per_restart(
            X,
            random_resp_stats_chunk,
            per_restart,
            sample_weight=sample_weight,
            name="daskgmm-random-init",
        )
        means = np.broadcast_to(shift, (n_components, X.shape[1]))
        moments = [
            gaussian_moments(stats, means, shift, covariance_type, reg_covar)
            for stats in parts[: len(rngs)]
        ]
        return moments, whole(parts[-1], shift, shift) if totals else None
    raise ValueError(f"Unknown init_params {init_params!r}")


def _totals(
    X: da.Array,
    covariance_type: str,
    reg_covar: float,
    sample_weight: da.Array | None,
    shift: Float,
) -> Moments:
    """The moments of all the data as one component, in one pass around ``shift`` (a
    sample, so near the data)."""
    (stats,) = map_reduce(
        X,
        hard_assignment_stats_chunk,
        (shift[None],),
        shift,
        covariance_type,
        sample_weight=sample_weight,
        name="daskgmm-data-moments",
    ).parts
    return gaussian_moments(stats, shift[None], shift, covariance_type, reg_covar)


def _without_holes(
    X: da.Array, sample_weight: da.Array | None, n_components: int
) -> tuple[da.Array, da.Array]:
    """Data and weights for initialising on data with missing values (NaN), one pass.

    The initialisers run unchanged on ``X`` with every hole filled with its
    feature's observed mean, and weights that keep the complete samples where
    there are at least :data:`~daskgmm._missing.COMPLETE_PER_COMPONENT` per
    component (EM then uses every observed value), else every sample with an
    observed value (the filled values only seed EM). A zero weight removes a
    sample from every initialiser's statistics and draws, except the uniform
    row draws of ``'random_from_data'``.
    """
    from ._missing import COMPLETE_PER_COMPONENT, fill_holes, observed_summary_chunk, rows_to_keep

    summary = map_reduce(X, observed_summary_chunk, name="daskgmm-missing-summary")
    never = np.flatnonzero(summary.count == 0)
    if len(never):
        raise ValueError(
            f"Feature {int(never[0])} of X has no observed value (all NaN); drop it first."
        )
    if summary.complete == X.shape[0]:  # no holes: the initialisers as without them
        return X, sample_weight
    complete_only = summary.complete >= COMPLETE_PER_COMPONENT * n_components
    logger.info(
        "Missing values: %d complete samples of %d with an observed value; initialising on %s.",
        summary.complete,
        summary.observed_rows,
        "the complete samples" if complete_only else "all of them, holes filled with the means",
    )
    means = summary.total / summary.count
    filled = X.map_blocks(fill_holes, means, dtype=X.dtype)
    keep = X.map_blocks(rows_to_keep, complete_only, drop_axis=1, dtype=np.float64)
    if sample_weight is not None:
        keep = keep * sample_weight.rechunk((X.chunks[0],))
    return filled, keep


def initial_moments(
    X: da.Array,
    *,
    seeds: Sequence[int],
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    sample_weight: da.Array | None = None,
    totals: bool = False,
    missing: bool = False,
    summary: Summary | None = None,
) -> tuple[list[Moments], Moments | None]:
    """The initial moments ``(nk, xk, sk)`` of several restarts, which
    :func:`initialize_many` turns into parameters (and a variational mixture
    starts from), and with ``totals`` the moments of all the data as one component
    (see :func:`_moments_from_data`). ``missing``: NaN entries are missing values
    (see :func:`_without_holes`). ``summary``: the :class:`~daskgmm._summary.Summary`
    of ``X`` if a pass already made it (k-means|| then needs one pass less); used
    only where it is that of the samples the initialisation sees (unweighted, no
    holes)."""
    rngs = [np.random.RandomState(seed) for seed in seeds]
    if missing:
        X, sample_weight = _without_holes(X, sample_weight, n_components)
    if summary is not None and (sample_weight is not None or not summary.complete):
        summary = None
    return _moments_from_data(
        X,
        init_params,
        n_components,
        covariance_type,
        reg_covar,
        rngs,
        sample_weight,
        totals,
        summary,
    )


def restart_seeds(random_state: np.random.RandomState, n_init: int) -> list[int]:
    """One seed per restart, drawn up front: restart ``i`` depends on ``random_state`` and ``i``."""
    return [int(s) for s in random_state.randint(2**31 - 1, size=n_init)]


def initialize_many(
    X: da.Array,
    *,
    seeds: Sequence[int],
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    sample_weight: da.Array | None = None,
    weights_init: Float | None = None,
    means_init: Float | None = None,
    precisions_init: Float | None = None,
    missing: bool = False,
    summary: Summary | None = None,
) -> list[GMMParams]:
    """Initial parameters of several restarts, as scikit-learn's ``_initialize_parameters``.

    Restart ``i`` draws from ``RandomState(seeds[i])`` only, so its result does
    not depend on how many restarts are initialised together (beyond rounding:
    they share the first one's shift); every pass over the data (k-means||
    rounds, Lloyd iterations, statistics) serves all of them.
    User-given ``weights_init``/``means_init``/``precisions_init`` (already
    validated) replace the corresponding computed parameters; when all three
    are given the data are not read.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
    seeds : sequence of int
        One per restart (see :func:`restart_seeds`).
    n_components : int
    covariance_type : str
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}
    reg_covar : float
    sample_weight : dask.array.Array of shape (n_samples,), optional
    weights_init, means_init, precisions_init : ndarray, optional
    missing : bool, default=False
        NaN entries are missing values: see :func:`_without_holes`.
    summary : Summary, optional
        ``X``'s, if known: see :func:`initial_moments`.

    Returns
    -------
    list of GMMParams
        One per seed, in order.
    """
    if weights_init is not None and means_init is not None and precisions_init is not None:
        params = GMMParams.from_precisions(
            covariance_type, weights_init, means_init, precisions_init
        )
        return [params for _ in seeds]
    moments, _ = initial_moments(
        X,
        seeds=seeds,
        n_components=n_components,
        covariance_type=covariance_type,
        init_params=init_params,
        reg_covar=reg_covar,
        sample_weight=sample_weight,
        missing=missing,
        summary=summary,
    )
    computed = [
        GMMParams.from_covariances(covariance_type, nk / nk.sum(), xk, sk) for nk, xk, sk in moments
    ]
    return [
        _override(p, covariance_type, weights_init, means_init, precisions_init) for p in computed
    ]


def _override(
    params: GMMParams,
    covariance_type: str,
    weights_init: Float | None,
    means_init: Float | None,
    precisions_init: Float | None,
) -> GMMParams:
    weights = params.weights if weights_init is None else weights_init
    means = params.means if means_init is None else means_init
    if precisions_init is not None:
        return GMMParams.from_precisions(covariance_type, weights, means, precisions_init)
    return GMMParams(
        covariance_type, weights, means, params.covariances, params.precisions_cholesky
    )


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
    """Initial parameters of one restart: :func:`initialize_many` with one seed.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
    n_components : int
    covariance_type : str
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}
    reg_covar : float
    random_state : numpy.random.RandomState
        One seed is drawn from it (:func:`restart_seeds`), whatever the chunking.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    weights_init, means_init, precisions_init : ndarray, optional

    Returns
    -------
    GMMParams
    """
    (params,) = initialize_many(
        X,
        seeds=restart_seeds(random_state, 1),
        n_components=n_components,
        covariance_type=covariance_type,
        init_params=init_params,
        reg_covar=reg_covar,
        sample_weight=sample_weight,
        weights_init=weights_init,
        means_init=means_init,
        precisions_init=precisions_init,
    )
    return params


def map_reduce_per_restart(
    X: da.Array,
    chunk_fn: Callable[..., Any],
    per_restart: Sequence[tuple],
    *,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    name: str = "daskgmm-chunk-stats",
) -> tuple[Any, ...]:
    """:func:`map_reduce` of ``chunk_fn`` for several restarts, in one pass over ``X``.

    ``per_restart`` holds each restart's positional arguments after the block;
    returns each restart's total, in order.
    """
    total = map_reduce(
        X,
        per_restart_chunk,
        chunk_fn,
        tuple(per_restart),
        sample_weight=sample_weight,
        split_every=split_every,
        name=name,
    )
    return total.parts
