"""The EM loop: map + tree-reduce + M-step + convergence + callbacks.

Each iteration is exactly one ``dask.compute``: the per-block E-step fused with
the statistics (:func:`daskgmm._stats.suffstats_chunk_many`), for every unfinished
restart from the same read of the block, added up by a tree
(:func:`daskgmm._reduction.map_reduce`). The M-step runs on the driver. The
log-likelihood reported for iteration ``t`` is that of the parameters the
iteration started from, exactly as scikit-learn's ``lower_bound_``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ._fingerprint import Digest, content_digest_chunk
from ._reduction import _nbytes, map_reduce, one_blas_thread
from ._state import EMResult, IterationInfo
from ._stats import EStepParams, GMMParams, m_step, suffstats_chunk_many

__all__ = ["EMResult", "IterationInfo", "fit_em", "fit_em_many", "memory_needed"]

logger = logging.getLogger(__name__)


def _estep_params(params: Sequence[GMMParams]) -> tuple[EStepParams, ...]:
    """E-step constants of the restarts of one pass, all around one shift.

    One shift lets the pass centre every tile once for all restarts: the first
    restart's own (the weighted mean of its means; restarts of one dataset
    have theirs close together), so that it computes exactly as it would alone.
    A restart whose means sit too far from it for the quadratic features takes
    the whitened path (:func:`daskgmm._covariance._use_quadratic`).
    """
    first = EStepParams.from_params(params[0])
    return (first, *(EStepParams.from_params(p, first.shift) for p in params[1:]))


@dataclass(frozen=True, eq=False)
class _WithDigest:
    """A block's statistics and its content digest, added pairwise."""

    stats: Any
    digest: Digest

    def __add__(self, other: _WithDigest) -> _WithDigest:
        return _WithDigest(self.stats + other.stats, self.digest + other.digest)


def _suffstats_and_digest_chunk(
    block: np.ndarray,
    eps: tuple[EStepParams, ...],
    *,
    sample_weight: np.ndarray | None = None,
    row_offset: int = 0,
) -> _WithDigest:
    """The statistics of a block and the digest of its content, from one read of it."""
    stats = suffstats_chunk_many(block, eps, sample_weight=sample_weight, row_offset=row_offset)
    digest = content_digest_chunk(block, sample_weight=sample_weight, row_offset=row_offset)
    return _WithDigest(stats, digest)


def memory_needed(
    block_rows: int, n_features: int, n_components: int, covariance_type: str, n_init: int
) -> int:
    """About the bytes one block task of a pass holds at its peak, for a fit that cannot
    fit to be refused before its first pass.

    Per restart: the block's log-densities and responsibilities (and their
    working copy), ``3 x rows x K`` float64; the parameters, their E-step
    constants and the block's statistics, about ``4 x K x D x D`` float64
    (``full``), ``4 x K x D`` (``diag``, ``spherical``) or ``4 x D x D``
    (``tied``) plus the means. The block itself counts once.
    """
    K, D = n_components, n_features
    second = {"full": K * D * D, "tied": D * D, "diag": K * D, "spherical": K}[covariance_type]
    per_restart = 8 * (3 * block_rows * K + 4 * (second + K * D))
    return int(8 * block_rows * D + n_init * per_restart)


def fit_em_many(
    X: da.Array,
    restarts: Sequence[EMResult],
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    on_pass: Callable[[list[EMResult]], None] | None = None,
    on_digest: Callable[[Digest], None] | None = None,
) -> list[EMResult]:
    """Run EM for several restarts at once: one read of the data per iteration for all.

    Every pass computes the statistics of each unfinished restart from the same
    blocks; a restart drops out when it converges or reaches ``max_iter``.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Validated, one chunk along the features; persist it first if it fits in memory.
    restarts : sequence of EMResult
        Starting state of each restart (``EMResult(params, 0, -inf, (), False, init)``
        for a fresh one; a saved state to resume).
    reg_covar, tol, max_iter
        As in :class:`daskgmm.GaussianMixture`.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    split_every : int, optional
        Fan-in of the reduction tree.
    callback : callable, optional
        Called with an :class:`IterationInfo` per restart after every iteration
        (progress bars). An exception it raises stops the fit.
    on_pass : callable, optional
        Called with the states of all restarts after every pass (checkpoints).
    on_digest : callable, optional
        Called with the content digest of ``X`` (and ``sample_weight``), computed
        in the first pass from the blocks it reads anyway, before that pass's
        results are used or saved; an exception it raises (data that differ
        from a checkpoint's) stops the fit.

    Returns
    -------
    list of EMResult
        Final state of each restart, in order.

    Raises
    ------
    ValueError
        NaN/inf in ``X`` (first pass), or a covariance that is not positive-definite.
    """
    states = list(restarts)
    held: list = []  # the last pass's results, released after the next pass's graph
    while True:
        active = [i for i, s in enumerate(states) if not s.finished(max_iter)]
        if not active:
            return states
        tic = time.perf_counter()
        with one_blas_thread():  # tiny matrices; see one_blas_thread
            eps = _estep_params([states[i].params for i in active])
        total = map_reduce(
            X,
            suffstats_chunk_many if on_digest is None else _suffstats_and_digest_chunk,
            eps,
            sample_weight=sample_weight,
            split_every=split_every,
            partial_nbytes=_nbytes(eps),  # the statistics: about the parameters' size
            hold=held,
        )
        if on_digest is not None:
            on_digest(total.digest)
            total, on_digest = total.stats, None
        totals = total.parts
        seconds = time.perf_counter() - tic
        infos = []
        for i, ep, stats in zip(active, eps, totals, strict=True):
            state = states[i]
            if not stats.weight_sum > 0:
                raise ValueError(
                    "sample_weight sums to zero; at least one weight must be positive."
                )
            lower_bound = stats.loglik / stats.weight_sum
            with one_blas_thread():
                params = m_step(
                    stats, state.params.means, ep.shift, state.params.covariance_type, reg_covar
                )
            change = lower_bound - state.lower_bound
            history = (*state.lower_bounds, lower_bound)
            states[i] = EMResult(
                params, state.n_iter + 1, lower_bound, history, abs(change) < tol, state.init
            )
            logger.debug(
                "init %d iteration %d: lower bound %.8g, change %.3g (%.3fs)",
                state.init,
                state.n_iter + 1,
                lower_bound,
                change,
                seconds,
            )
            infos.append(
                IterationInfo(
                    state.init,
                    state.n_iter + 1,
                    lower_bound,
                    change,
                    params,
                    history,
                    abs(change) < tol,
                    seconds,
                )
            )
        if on_pass is not None:
            on_pass(list(states))
        if callback is not None:
            for info in infos:
                callback(info)


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

    One restart of :func:`fit_em_many`.

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
        Called with an :class:`IterationInfo` after every iteration.
    init : int
        Restart index passed on to the callback.
    start_iter, lower_bounds, lower_bound
        Resume state: iterations already done, their lower bounds, and the last one.

    Returns
    -------
    EMResult
    """
    start = EMResult(params, start_iter, lower_bound, tuple(lower_bounds), False, init)
    (result,) = fit_em_many(
        X,
        [start],
        reg_covar=reg_covar,
        tol=tol,
        max_iter=max_iter,
        sample_weight=sample_weight,
        split_every=split_every,
        callback=callback,
    )
    return result
