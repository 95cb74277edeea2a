"""The EM loop: map + tree-reduce + M-step + convergence + callbacks.

Each iteration is exactly one ``dask.compute``: the per-block E-step fused with
the statistics (:func:`daskgmm._stats.suffstats_chunk`), added up by a tree
(:func:`daskgmm._reduction.map_reduce`). The M-step runs on the driver. The
log-likelihood reported for iteration ``t`` is that of the parameters the
iteration started from, exactly as scikit-learn's ``lower_bound_``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import dask.array as da

from ._reduction import map_reduce
from ._stats import EStepParams, GMMParams, m_step, suffstats_chunk

__all__ = ["EMResult", "IterationInfo", "fit_em"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class IterationInfo:
    """What a callback sees after each iteration.

    Parameters
    ----------
    init : int
        Index of the restart (``0 .. n_init - 1``).
    n_iter : int
        Iterations done in this restart, this one included.
    lower_bound : float
        Mean log-likelihood of the parameters this iteration started from.
    change : float
        ``lower_bound`` minus that of the previous iteration (``inf`` at the first).
    params : GMMParams
        Parameters after this iteration's M-step.
    lower_bounds : tuple of float
        All lower bounds of this restart so far.
    converged : bool
        Whether ``abs(change) < tol``.
    seconds : float
        Wall time of this iteration.
    """

    init: int
    n_iter: int
    lower_bound: float
    change: float
    params: GMMParams
    lower_bounds: tuple[float, ...]
    converged: bool
    seconds: float


@dataclass(frozen=True, eq=False)
class EMResult:
    """Outcome of :func:`fit_em`."""

    params: GMMParams
    n_iter: int
    lower_bound: float
    lower_bounds: tuple[float, ...]
    converged: bool


def fit_em(
    X: da.Array,
    params: GMMParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    init: int = 0,
    start_iter: int = 0,
    lower_bounds: tuple[float, ...] = (),
    lower_bound: float = -math.inf,
) -> EMResult:
    """Run EM from ``params`` until ``abs(change) < tol`` or ``max_iter`` iterations.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Validated, one chunk along the features; persist it first if it fits in memory.
    params : GMMParams
        Starting parameters.
    reg_covar, tol, max_iter
        As in :class:`daskgmm.GaussianMixture`.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    split_every : int, optional
        Fan-in of the reduction tree.
    callback : callable, optional
        Called with an :class:`IterationInfo` after every iteration (checkpoints,
        progress bars). An exception it raises stops the fit.
    init : int
        Restart index passed on to the callback.
    start_iter, lower_bounds, lower_bound
        Resume state: iterations already done, their lower bounds, and the last one.

    Returns
    -------
    EMResult

    Raises
    ------
    ValueError
        NaN/inf in ``X`` (first pass), or a covariance that is not positive-definite.
    """
    history = list(lower_bounds)
    converged = False
    n_iter = start_iter
    for n_iter in range(start_iter + 1, max_iter + 1):
        tic = time.perf_counter()
        ep = EStepParams.from_params(params)
        stats = map_reduce(
            X, suffstats_chunk, ep, sample_weight=sample_weight, split_every=split_every
        )
        if not stats.weight_sum > 0:
            raise ValueError("sample_weight sums to zero; at least one weight must be positive.")
        previous, lower_bound = lower_bound, stats.loglik / stats.weight_sum
        params = m_step(stats, params.means, ep.shift, params.covariance_type, reg_covar)
        history.append(lower_bound)
        change = lower_bound - previous
        converged = abs(change) < tol
        seconds = time.perf_counter() - tic
        logger.debug(
            "init %d iteration %d: lower bound %.8g, change %.3g (%.3fs)",
            init,
            n_iter,
            lower_bound,
            change,
            seconds,
        )
        if callback is not None:
            callback(
                IterationInfo(
                    init, n_iter, lower_bound, change, params, tuple(history), converged, seconds
                )
            )
        if converged:
            break
    return EMResult(params, n_iter, lower_bound, tuple(history), converged)
