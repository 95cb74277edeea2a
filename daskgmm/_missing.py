"""Missing values: the exact E-step and statistics of samples with NaN entries.

A sample with observed coordinates ``o`` and missing ones ``m`` has the
likelihood of each component's *marginal* on ``o``:
``log pi_k + log N(x_o; mu_k,o, Sigma_k,oo)``, and EM stays exact (Ghahramani &
Jordan, 1994): the M-step's formulas are unchanged, fed with conditional
expectations. Given component ``k``, the missing coordinates are expected at
``mu_k,m + B_k (x_o - mu_k,o)`` with ``B_k = Sigma_k,mo Sigma_k,oo^-1``, and their
second moments add the conditional covariance
``C_k = Sigma_k,mm - B_k Sigma_k,om``. So, around the mean, with
``e = x_o - mu_k,o``::

    x - mu_k   ->  [e ; B_k e]
    second     ->  [e e^T, e e^T B_k^T ; B_k e e^T, B_k e e^T B_k^T + C_k]

``B_k``, ``C_k`` and the Cholesky factor of ``Sigma_k,oo`` depend on the
(pattern, component) only, not on the sample: a block groups its incomplete
samples by missingness pattern, pays one small factorisation per (pattern,
component), and then per sample only products of size ``|o|``. The per-pattern
sums ``sum r e`` and ``sum r e e^T`` are lifted to the full moments once per
pattern. Everything is float64 and shifted (``e`` is formed from ``x - c`` and
``mu - c``), as the complete-data statistics are.

Complete samples never come here: they take the fused kernels of
:mod:`daskgmm._kernels` at full speed (see :func:`daskgmm._stats.suffstats_chunk_many`).
Samples with every value missing carry no information and are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._covariance import get_covariance_model

Float = NDArray[np.floating]

#: Samples of one pattern processed together (bounds the (K, rows, |o|) temporaries).
_TILE_ROWS = 2048

#: From this many samples, a pattern runs the complete-data kernels on its observed
#: features (see :meth:`MissingEStep.marginal`); below, their set-up costs more
#: than the direct products here (see benchmarks/README.md, missing values).
KERNEL_ROWS = 256


@dataclass(frozen=True, eq=False)
class _PatternPlan:
    """One restart's constants for one missingness pattern, all components at once."""

    observed: NDArray[np.intp]
    missing: NDArray[np.intp]
    deltas_o: Float  # (K, |o|): means minus the shift, observed coordinates
    whiten: Float  # (K, |o|, |o|): L_k^-1, with L_k L_k^T = Sigma_k,oo
    const: Float  # (K,): log pi_k - (|o| log 2 pi + log det Sigma_k,oo) / 2
    regression: Float  # (K, |m|, |o|): B_k
    conditional: Float  # (K, |m|, |m|): C_k


def _pattern_plan(
    covariances: Float, deltas: Float, log_weights: Float, observed_mask: NDArray[np.bool_]
) -> _PatternPlan:
    o = np.flatnonzero(observed_mask)
    m = np.flatnonzero(~observed_mask)
    s_oo = covariances[:, o[:, None], o[None, :]]
    s_mo = covariances[:, m[:, None], o[None, :]]
    s_mm = covariances[:, m[:, None], m[None, :]]
    chol = np.linalg.cholesky(s_oo)
    whiten = np.linalg.inv(chol)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
    const = log_weights - 0.5 * (len(o) * math.log(2 * math.pi) + log_det)
    # B = S_mo S_oo^-1 = S_mo L^-T L^-1
    regression = np.matmul(np.matmul(s_mo, whiten.transpose(0, 2, 1)), whiten)
    conditional = s_mm - np.matmul(regression, s_mo.transpose(0, 2, 1))
    conditional = 0.5 * (conditional + conditional.transpose(0, 2, 1))
    return _PatternPlan(o, m, deltas[:, o], whiten, const, regression, conditional)


def patterns(observed: NDArray[np.bool_]) -> list[tuple[NDArray[np.bool_], NDArray[np.intp]]]:
    """``(observed mask, rows)`` of each distinct pattern among the rows of ``observed``.

    Each row's mask is packed into bytes and the bytes into one key, so that
    the grouping sorts plain integers (``np.unique(axis=0)`` on the boolean rows
    took 10 times the E-step of their samples).
    """
    n_rows = len(observed)
    packed = np.packbits(observed, axis=1)
    width = packed.shape[1]
    if width <= 8:
        keys = np.zeros((n_rows, 8), np.uint8)
        keys[:, :width] = packed
        keys = keys.view(np.uint64)[:, 0]
    else:
        keys = np.ascontiguousarray(packed).view(np.dtype((np.void, width)))[:, 0]
    order = np.argsort(keys, kind="stable")  # one sort: rows of a pattern in their order
    ordered = keys[order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    groups = np.split(order, bounds)
    return [(observed[rows[0]], rows) for rows in groups if len(rows)]


class MissingEStep:
    """The marginal E-step of one restart on the incomplete samples of blocks.

    Parameters
    ----------
    covariance_type : str
    log_weights : ndarray of shape (n_components,)
    shift : ndarray of shape (n_features,)
    deltas : ndarray of shape (n_components, n_features)
        Means minus ``shift``.
    precisions_cholesky : ndarray
    """

    def __init__(self, covariance_type, log_weights, shift, deltas, precisions_cholesky):
        n_components, n_features = deltas.shape
        self.model = get_covariance_model(covariance_type)
        self.covariances = self.model.dense_covariances(
            precisions_cholesky, n_components, n_features
        )
        self.log_weights = log_weights
        self.shift = shift
        self.deltas = deltas
        self._plans: dict[bytes, _PatternPlan] = {}

    def plan(self, observed_mask: NDArray[np.bool_]) -> _PatternPlan:
        key = np.packbits(observed_mask).tobytes()
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _pattern_plan(
                self.covariances, self.deltas, self.log_weights, observed_mask
            )
        return plan

    def marginal(self, plan: _PatternPlan) -> Any:
        """The E-step constants of the components' marginals on ``plan``'s observed features.

        A marginal of a Gaussian mixture is a Gaussian mixture of the
        covariance type's :attr:`marginal_type
        <daskgmm._covariance.CovarianceModel.marginal_type>`: the samples of a
        large pattern run the fused complete-data kernels of :mod:`daskgmm._stats`
        on their observed features, at their speed and with their accuracy.
        """
        from ._stats import EStepParams

        o = plan.observed
        sub = get_covariance_model(self.model.marginal_type)
        factors = sub.precisions_cholesky(
            sub.from_dense(self.covariances[:, o[:, None], o[None, :]])
        )
        n_components = len(self.deltas)
        return EStepParams(
            sub.name,
            self.log_weights,
            self.shift[o],
            self.deltas[:, o],
            factors,
            sub.log_det_cholesky(factors, n_components, len(o)),
        )

    @staticmethod
    def _tile(plan: _PatternPlan, xc_o: Float) -> tuple[Float, Float]:
        """``e`` (K, rows, |o|) and the weighted log-densities (rows, K) of one tile."""
        e = xc_o[None] - plan.deltas_o[:, None, :]
        z = np.matmul(e, plan.whiten.transpose(0, 2, 1))
        wlp = plan.const[:, None] - 0.5 * np.einsum("kno,kno->kn", z, z)
        return e, wlp.T

    def weighted_log_prob(
        self, X: Float, groups: list[tuple[NDArray[np.bool_], NDArray[np.intp]]]
    ) -> Float:
        """``log p(x_o | k) + log pi_k`` of the samples of ``groups``, (n, K), in their order.

        ``groups`` holds ``(observed mask, rows of X)`` of incomplete patterns
        (:func:`patterns`), each with at least one observed value.
        """
        from ._stats import estimate_weighted_log_prob

        parts = []
        for mask, rows in groups:
            plan = self.plan(mask)
            if len(rows) >= KERNEL_ROWS:
                X_o = X[np.ix_(rows, plan.observed)]
                parts.append(estimate_weighted_log_prob(X_o, self.marginal(plan)))
                continue
            for start in range(0, len(rows), _TILE_ROWS):
                tile = rows[start : start + _TILE_ROWS]
                xc_o = X[np.ix_(tile, plan.observed)].astype(np.float64) - self.shift[plan.observed]
                parts.append(self._tile(plan, xc_o)[1])
        return np.concatenate(parts) if parts else np.empty((0, len(self.deltas)))

    def stats(
        self,
        X: Float,
        groups: list[tuple[NDArray[np.bool_], NDArray[np.intp]]],
        sample_weight: Float | None,
    ) -> tuple[Float, Float, Float, float]:
        """Statistics of the samples of ``groups`` (see :meth:`weighted_log_prob`).

        Returns
        -------
        nk : ndarray of shape (n_components,)
        s1 : ndarray of shape (n_components, n_features)
            ``sum_n r_nk E[x_n - mu_k | x_o, k]``.
        s2 : ndarray
            The covariance type's second moment (see
            :meth:`CovarianceModel.s2_shape <daskgmm._covariance.CovarianceModel.s2_shape>`),
            from the conditional expectations.
        loglik : float
            ``sum_n w_n log p(x_n,o)``.
        """
        n_components, n_features = self.deltas.shape
        nk = np.zeros(n_components)
        s1 = np.zeros((n_components, n_features))
        s = np.zeros((n_components, n_features, n_features))
        loglik = 0.0
        for mask, rows in groups:
            plan = self.plan(mask)
            o, m = plan.observed, plan.missing
            pattern_stats = self._kernel_stats if len(rows) >= KERNEL_ROWS else self._direct_stats
            nk_p, s1_o, s2_o, ll = pattern_stats(plan, X, rows, sample_weight)
            loglik += ll
            # lift to all coordinates: x - mu -> [e ; B e], plus n_k C on the missing block
            nk += nk_p
            s1[:, o] += s1_o
            s1[:, m] += np.einsum("kmo,ko->km", plan.regression, s1_o)
            b_s = np.matmul(plan.regression, s2_o)  # (K, |m|, |o|)
            s[:, o[:, None], o[None, :]] += s2_o
            s[:, m[:, None], o[None, :]] += b_s
            s[:, o[:, None], m[None, :]] += b_s.transpose(0, 2, 1)
            s[:, m[:, None], m[None, :]] += (
                np.matmul(b_s, plan.regression.transpose(0, 2, 1))
                + nk_p[:, None, None] * plan.conditional
            )
        return nk, s1, self.model.moments_from_full(nk, s1, s, self.deltas), loglik

    def _kernel_stats(self, plan, X, rows, sample_weight):
        """``(nk, sum r e, sum r e e^T, loglik)`` of a pattern's samples by the fused
        kernels of its marginal (:meth:`marginal`)."""
        from ._stats import _suffstats_many

        X_o = X[np.ix_(rows, plan.observed)]
        w = None if sample_weight is None else sample_weight[rows]
        (st,) = _suffstats_many(X_o, (self.marginal(plan),), w, 0)
        s2_o = st.s2
        if s2_o.ndim == 2:  # diag: the diagonals (its conditionals do not need the rest)
            s2_o = s2_o[:, :, None] * np.eye(s2_o.shape[1])
        elif s2_o.ndim == 1:  # spherical: the traces, which is all its M-step reads
            s2_o = (s2_o / len(plan.observed))[:, None, None] * np.eye(len(plan.observed))
        return st.nk, st.s1, s2_o, st.loglik

    def _direct_stats(self, plan, X, rows, sample_weight):
        """:meth:`_kernel_stats` of a few samples, by direct float64 products."""
        n_components, n_o = len(self.deltas), len(plan.observed)
        o = plan.observed
        loglik = 0.0
        nk_p = np.zeros(n_components)
        s1_o = np.zeros((n_components, n_o))
        s2_o = np.zeros((n_components, n_o, n_o))
        for start in range(0, len(rows), _TILE_ROWS):
            tile = rows[start : start + _TILE_ROWS]
            xc_o = X[np.ix_(tile, o)].astype(np.float64) - self.shift[o]
            e, wlp = self._tile(plan, xc_o)
            top = wlp.max(axis=1, keepdims=True)
            log_norm = top[:, 0] + np.log(np.sum(np.exp(wlp - top), axis=1))
            resp = np.exp(wlp - log_norm[:, None])
            if sample_weight is not None:
                w = sample_weight[tile].astype(np.float64)
                resp *= w[:, None]
                loglik += float(w @ log_norm)
            else:
                loglik += float(np.sum(log_norm))
            nk_p += resp.sum(axis=0)
            s1_o += np.einsum("nk,kno->ko", resp, e)
            s2_o += np.matmul((e * resp.T[:, :, None]).transpose(0, 2, 1), e)
        return nk_p, s1_o, s2_o, loglik


# ------------------------------------------------------------ initialisation
#: Complete samples the initialisation needs to run on them alone, per component.
COMPLETE_PER_COMPONENT = 20


@dataclass(frozen=True, eq=False)
class ObservedSummary:
    """What the initialisation needs to know of the holes; ``+`` merges blocks.

    Parameters
    ----------
    count : ndarray of shape (n_features,)
        Observed values of each feature.
    total : ndarray of shape (n_features,)
        Their sum (float64).
    complete : int
        Samples with every value observed.
    observed_rows : int
        Samples with at least one value observed.
    """

    count: Float
    total: Float
    complete: int
    observed_rows: int

    def __add__(self, other: ObservedSummary) -> ObservedSummary:
        return ObservedSummary(
            self.count + other.count,
            self.total + other.total,
            self.complete + other.complete,
            self.observed_rows + other.observed_rows,
        )


def observed_summary_chunk(
    X: Float, sample_weight: Float | None = None, row_offset: int = 0
) -> ObservedSummary:
    """:class:`ObservedSummary` of one block (``inf`` is refused, naming its row)."""
    observed = ~np.isnan(X)
    if np.isinf(X).any():
        from ._stats import _raise_nonfinite

        _raise_nonfinite(np.where(observed, X, 0.0), row_offset)
    per_row = observed.sum(axis=1)
    return ObservedSummary(
        observed.sum(axis=0).astype(np.float64),
        np.sum(np.where(observed, X, 0.0), axis=0, dtype=np.float64),
        int(np.sum(per_row == X.shape[1])),
        int(np.sum(per_row > 0)),
    )


def fill_holes(X: Float, values: Float) -> Float:
    """``X`` with each NaN replaced by its feature's value in ``values``."""
    holes = np.isnan(X)
    if not holes.any():
        return X
    return np.where(holes, values.astype(X.dtype), X)


def rows_to_keep(X: Float, complete_only: bool) -> Float:
    """1.0 for the rows the initialisation uses (complete ones, or any with a value), else 0."""
    observed = ~np.isnan(X)
    keep = observed.all(axis=1) if complete_only else observed.any(axis=1)
    return keep.astype(np.float64)
