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

``B_k`` and ``C_k`` depend on the (pattern, component) only, not on the
sample: a block groups its incomplete samples by missingness pattern
(:func:`patterns`). A large pattern runs the complete-data kernels on its
observed features (:meth:`MissingEStep.marginal`) and its sums ``sum r e`` and
``sum r e e^T`` are lifted to all features once (:func:`_lift`); the small ones
run together, batched by number of missing values, from the precisions alone
(:class:`_Plans`). ``diag`` and ``spherical`` need no patterns at all
(:func:`diagonal`). Everything is float64 and shifted (``e`` is formed from
``x - c`` and ``mu - c``), as the complete-data statistics are.

Complete samples never come here: they take the fused kernels of
:mod:`daskgmm._kernels` at full speed (see :func:`daskgmm._stats.suffstats_chunk_many`).
Samples with every value missing carry no information and are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._covariance import get_covariance_model

Float = NDArray[np.floating]

#: Bytes of the per-sample temporaries of a tile of small patterns, (rows, K, |o|, |o|).
_TILE_BYTES = 32 << 20

#: From this many samples, a pattern runs the complete-data kernels on its observed
#: features (see :meth:`MissingEStep.marginal`); below, the samples of all the
#: small patterns with as many observed values run together here, batched
#: (see benchmarks/README.md, missing values).
KERNEL_ROWS = 256


#: Patterns found one by one (a comparison pass each) before the rest are sorted.
_PEELED = 16


def patterns(observed: NDArray[np.bool_]) -> list[tuple[NDArray[np.bool_], NDArray[np.intp]]]:
    """``(observed mask, rows)`` of each distinct pattern among the rows of ``observed``,
    rows in ascending order.

    Each row's mask becomes one number (a float64 sum of powers of two, exact up
    to 52 features; packed bytes beyond), and the patterns are peeled off one
    comparison pass at a time: blocks hold a few patterns, usually, and then no
    sort runs at all. What remains after :data:`_PEELED` patterns is grouped by
    one stable sort (``np.unique(axis=0)`` on the boolean rows took 10 times the
    E-step of their samples).
    """
    n_rows, n_features = observed.shape
    if n_features <= 24:  # float32 sums of powers of two are exact
        keys = observed.view(np.uint8).astype(np.float32) @ np.exp2(
            np.arange(n_features), dtype=np.float32
        )
    elif n_features <= 52:
        keys = observed.view(np.uint8) @ np.exp2(np.arange(n_features))
    else:
        packed = np.ascontiguousarray(np.packbits(observed, axis=1))
        keys = packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]
    groups = []
    left = np.ones(n_rows, dtype=bool)
    for _ in range(_PEELED):
        first = int(np.argmax(left))
        if not left[first]:
            return groups
        hit = keys == keys[first]
        groups.append((observed[first], np.flatnonzero(hit)))
        left &= ~hit
    rows = np.flatnonzero(left)
    order = np.argsort(keys[rows], kind="stable")
    ordered = keys[rows][order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for members in np.split(rows[order], bounds):
        if len(members):
            groups.append((observed[members[0]], members))
    return groups


def split(X: Float) -> tuple[NDArray[np.intp] | None, list]:
    """The rows of the complete samples of ``X`` (None if none), and the groups
    (:func:`patterns`) of its incomplete samples that have an observed value."""
    groups = patterns(~np.isnan(X))
    counts = np.count_nonzero([mask for mask, _ in groups], axis=1)
    n_features = X.shape[1]
    complete = [rows for (_, rows), n in zip(groups, counts, strict=True) if n == n_features]
    incomplete = [g for g, n in zip(groups, counts, strict=True) if 0 < n < n_features]
    return (complete[0] if complete else None), incomplete


@dataclass(frozen=True, eq=False)
class _Plans:
    """One restart's constants for ``P`` patterns with ``m`` missing values each.

    From the precisions ``Lambda`` alone: ``Sigma_oo^-1 = Lambda_oo - Lambda_om
    C Lambda_mo`` with the conditional covariance ``C = Lambda_mm^-1``, the
    regression ``B = Sigma_mo Sigma_oo^-1 = -C Lambda_mo``, and
    ``log det Sigma_oo = log det Sigma + log det Lambda_mm``: only ``m x m``
    matrices are inverted, batched over patterns and components, so thousands
    of small patterns (values missing at random) cost a few NumPy calls.
    """

    observed: NDArray[np.intp]  # (P, s): observed features, ascending
    missing: NDArray[np.intp]  # (P, m): missing features, ascending
    const: Float  # (P, K): log pi_k - (s log 2 pi + log det Sigma_oo) / 2
    regression: Float  # (P, K, m, s): B
    conditional: Float  # (P, K, m, m): C


def _plans(
    precisions: Float, log_det: Float, log_weights: Float, masks: NDArray[np.bool_]
) -> _Plans:
    """:class:`_Plans` of the patterns ``masks`` (P, D), all with as many missing values.

    ``precisions`` (K, D, D) and ``log_det`` (K,), ``log det Sigma_k``.
    """
    n_observed = int(masks[0].sum())
    order = np.argsort(~masks, axis=1, kind="stable")  # observed features first, ascending
    o, m = order[:, :n_observed], order[:, n_observed:]

    def block(rows, cols):  # (P, K, a, b) blocks of the (K, D, D) precisions
        picked = np.take_along_axis(precisions[None], rows[:, None, :, None], axis=2)
        return np.take_along_axis(picked, cols[:, None, None, :], axis=3)

    lam_mm, lam_mo = block(m, m), block(m, o)
    if m.shape[1] == 1:
        conditional = 1.0 / lam_mm
        log_det_mm = np.log(lam_mm[..., 0, 0])
    else:
        conditional = np.linalg.inv(lam_mm)
        conditional = 0.5 * (conditional + conditional.transpose(0, 1, 3, 2))
        log_det_mm = np.linalg.slogdet(lam_mm)[1]
    const = log_weights - 0.5 * (n_observed * math.log(2 * math.pi) + log_det + log_det_mm)
    return _Plans(o, m, const, -np.matmul(conditional, lam_mo), conditional)


def _log_det_conditional(plans: _Plans) -> Float:
    """``log det C`` of every (pattern, component), shape (P, K)."""
    c = plans.conditional
    if c.shape[-1] == 1:
        return np.log(c[..., 0, 0])
    return np.linalg.slogdet(c)[1]


def _by_size(groups):
    """The groups by their number of observed values (one count for all of them)."""
    sizes: dict[int, list] = {}
    counts = np.count_nonzero([mask for mask, _ in groups], axis=1) if groups else []
    for count, group in zip(counts, groups, strict=True):
        sizes.setdefault(int(count), []).append(group)
    return sizes.values()


class MissingEStep:
    """The marginal E-step of one restart on the incomplete samples of a block, for
    ``full`` and ``tied`` components (the diagonal types need no patterns: see
    :func:`diagonal`).

    Parameters
    ----------
    ep : daskgmm._stats.EStepParams
        The restart's E-step constants; its ``entropy`` asks for ``sum r log r``
        (less the missing values' entropy) in place of the log-likelihood.
    """

    def __init__(self, ep: Any):
        n_components, n_features = ep.deltas.shape
        precisions_cholesky = ep.precisions_cholesky
        self.entropy = ep.entropy
        self.model = get_covariance_model(ep.covariance_type)
        self.covariances = self.model.dense_covariances(
            precisions_cholesky, n_components, n_features
        )
        self.log_weights = ep.log_weights
        self.shift = ep.shift
        self.deltas = ep.deltas
        # the precisions U U^T and log det Sigma = -2 log det U, from the factors themselves
        self.precisions = np.broadcast_to(
            self.model.precisions(precisions_cholesky), (n_components, n_features, n_features)
        )
        self.log_det = -2.0 * self.model.log_det_cholesky(
            precisions_cholesky, n_components, n_features
        )

    def plans(self, masks: NDArray[np.bool_]) -> _Plans:
        return _plans(self.precisions, self.log_det, self.log_weights, masks)

    def marginal(self, plans: _Plans, p: int) -> Any:
        """The E-step constants of the components' marginals on pattern ``p``'s observed
        features.

        A marginal of a Gaussian mixture is a Gaussian mixture (``full``: the
        marginals of ``tied`` components differ in their means only, but the lift
        to all features needs per-component statistics, as ``full`` keeps them):
        the samples of a large pattern run the fused complete-data kernels of
        :mod:`daskgmm._stats` on their observed features, at their speed and with
        their accuracy.
        """
        from ._stats import EStepParams

        full = get_covariance_model("full")
        o = plans.observed[p]
        factors = full.precisions_cholesky(self.covariances[:, o[:, None], o])
        return EStepParams(
            full.name,
            self.log_weights,
            self.shift[o],
            self.deltas[:, o],
            factors,
            full.log_det_cholesky(factors, len(self.deltas), len(o)),
            entropy=self.entropy,
        )

    def _tiles(self, X: Float, plans: _Plans, members: list[NDArray[np.intp]]):
        """Yield ``(rows, pattern of each, filled, wlp)`` for tiles of the samples of
        small patterns: ``log p(x_o | k) + log pi_k`` (rows, K) and each sample's
        deviation from each mean completed in feature order, ``[e ; B e]``
        (rows, K, D), batched over the patterns in each tile.

        With ``e`` zero on the missing features, ``y = Lambda e`` is one GEMM per
        component for all patterns, ``e^T Sigma_oo^-1 e = e^T y - y_m^T C y_m``
        and ``B e = -C y_m``: per sample only ``m``-sized products differ.
        """
        rows = np.concatenate(members)
        pattern = np.repeat(np.arange(len(members)), [len(r) for r in members])
        n_components, n_features = self.deltas.shape
        n_missing = plans.missing.shape[1]
        step = max(64, _TILE_BYTES // (8 * n_components * (4 * n_features + n_missing**2)))
        for start in range(0, len(rows), step):
            tile, which = rows[start : start + step], pattern[start : start + step]
            xc = X[tile].astype(np.float64) - self.shift
            observed = ~np.isnan(xc)
            np.copyto(xc, 0.0, where=~observed)
            e = xc[:, None, :] - self.deltas  # (rows, K, D), zero where missing
            e *= observed[:, None, :]
            y = np.matmul(e.transpose(1, 0, 2), self.precisions).transpose(1, 0, 2)
            index = np.broadcast_to(plans.missing[which][:, None, :], (*e.shape[:2], n_missing))
            y_m = np.take_along_axis(y, index, axis=2)
            c_y = np.matmul(plans.conditional[which], y_m[..., None])[..., 0]
            mahalanobis = np.einsum("rkd,rkd->rk", e, y) - np.einsum("rkm,rkm->rk", y_m, c_y)
            np.put_along_axis(e, index, -c_y, axis=2)
            yield tile, which, e, plans.const[which] - 0.5 * mahalanobis

    def weighted_log_prob(
        self, X: Float, groups: list[tuple[NDArray[np.bool_], NDArray[np.intp]]]
    ) -> Float:
        """``log p(x_o | k) + log pi_k`` of the samples of ``groups``, shape (len(X), K);
        the rows of no group are left NaN.

        ``groups`` holds ``(observed mask, rows of X)`` of incomplete patterns
        (:func:`patterns`), each with at least one observed value.
        """
        from ._stats import estimate_weighted_log_prob

        out = np.full((len(X), len(self.deltas)), np.nan)
        for same in _by_size(groups):
            plans = self.plans(np.array([mask for mask, _ in same]))
            small = []
            for p, (_, rows) in enumerate(same):
                if len(rows) >= KERNEL_ROWS:
                    X_o = X[np.ix_(rows, plans.observed[p])]
                    out[rows] = estimate_weighted_log_prob(X_o, self.marginal(plans, p))
                else:
                    small.append(p)
            if small:
                sub = _select(plans, small)
                for tile, _, _, wlp in self._tiles(X, sub, [same[p][1] for p in small]):
                    out[tile] = wlp
        return out

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
        for same in _by_size(groups):
            plans = self.plans(np.array([mask for mask, _ in same]))
            large = [p for p, (_, rows) in enumerate(same) if len(rows) >= KERNEL_ROWS]
            small = [p for p, (_, rows) in enumerate(same) if len(rows) < KERNEL_ROWS]
            if large:
                n_o = plans.observed.shape[1]
                nk_p = np.zeros((len(large), n_components))
                s1_o = np.zeros((len(large), n_components, n_o))
                s2_o = np.zeros((len(large), n_components, n_o, n_o))
                for i, p in enumerate(large):
                    loglik += self._kernel_stats(
                        X, plans, p, same[p][1], sample_weight, nk_p[i], s1_o[i], s2_o[i]
                    )
                _lift(_select(plans, large), nk_p, s1_o, s2_o, nk, s1, s)
            if small:
                rows = [same[p][1] for p in small]
                sub = _select(plans, small)
                loglik += self._small_stats(X, sub, rows, sample_weight, nk, s1, s)
        return nk, s1, self.model.moments_from_full(nk, s1, s, self.deltas), loglik

    def _kernel_stats(self, X, plans, p, rows, sample_weight, nk_p, s1_o, s2_o) -> float:
        """Pattern ``p``'s ``nk``, ``sum r e``, ``sum r e e^T`` (into the given arrays) by
        the fused kernels of its marginal (:meth:`marginal`); returns its log-likelihood."""
        from ._stats import _suffstats_many

        X_o = X[np.ix_(rows, plans.observed[p])]
        w = None if sample_weight is None else sample_weight[rows]
        (st,) = _suffstats_many(X_o, (self.marginal(plans, p),), w, 0)
        nk_p[...], s1_o[...], s2_o[...] = st.nk, st.s1, st.s2
        if self.entropy:  # q(x_m | k)'s entropy: its log det C part (see _small_stats)
            return st.loglik - 0.5 * float(st.nk @ _log_det_conditional(_select(plans, [p]))[0])
        return st.loglik

    def _small_stats(self, X, plans, members, sample_weight, nk, s1, s) -> float:
        """Add the statistics of the samples of many small patterns to ``nk``, ``s1``, ``s``,
        batched; returns their log-likelihood.

        Each sample's deviation is completed in feature order, ``[e ; B e]``, so
        that the second moments of all of them are one batched GEMM per tile,
        as for complete samples; only ``n_k C`` is added per pattern.
        """
        from ._stats import _normalise_inplace

        n_components, n_features = self.deltas.shape
        nk_p = np.zeros((len(members), n_components))
        loglik = 0.0
        for tile, which, filled, wlp in self._tiles(X, plans, members):
            resp = np.ascontiguousarray(wlp)
            log_norm = _normalise_inplace(resp).copy()  # resp: the responsibilities now
            if self.entropy:
                log_norm = np.sum(resp * np.log(resp), axis=1)  # the score, per sample
            if sample_weight is not None:
                w = sample_weight[tile].astype(np.float64)
                resp *= w[:, None]
                loglik += float(w @ log_norm)
            else:
                loglik += float(np.sum(log_norm))
            weighted = resp[..., None] * filled
            s1 += weighted.sum(axis=0)
            s += np.matmul(weighted.transpose(1, 2, 0), filled.transpose(1, 0, 2))
            # the tile's rows of one pattern are consecutive
            starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
            nk_p[which[starts]] += np.add.reduceat(resp, starts, axis=0)
        nk += nk_p.sum(axis=0)
        if self.entropy:
            # A variational fit treats the missing values as latent, q(x_m | k) =
            # N(x^_m, C_k): the bound gains their entropy, whose varying part is
            # 1/2 sum r log det C (the score is subtracted from the bound).
            loglik -= 0.5 * float(np.sum(nk_p * _log_det_conditional(plans)))
        # sum_p n_pk C_pk on each pattern's (missing, missing) block
        m = plans.missing
        flat = (m[:, :, None] * n_features + m[:, None, :]).reshape(len(m), -1)  # (P, m*m)
        values = nk_p[..., None, None] * plans.conditional  # (P, K, m, m)
        for k in range(n_components):
            s[k] += np.bincount(
                flat.ravel(), values[:, k].reshape(len(m), -1).ravel(), n_features * n_features
            ).reshape(n_features, n_features)
        return loglik


def _select(plans: _Plans, which: list[int]) -> _Plans:
    """The plans of some of the patterns."""
    index = np.asarray(which)
    return _Plans(*(getattr(plans, f.name)[index] for f in fields(plans)))


#: Bytes of the per-pattern second moments lifted together, (patterns, K, D, D).
_LIFT_BYTES = 16 << 20


def _lift(plans: _Plans, nk_p, s1_o, s2_o, nk, s1, s) -> None:
    """Add the patterns' moments, lifted to all features, to ``nk``, ``s1``, ``s``.

    ``x - mu -> [e ; B e]`` and the second moments ``[S, S B^T ; B S, B S B^T + n C]``
    in each pattern's (observed, missing) order, put back in feature order.
    """
    n_patterns, n_components = s1_o.shape[:2]
    n_features = s1.shape[1]
    nk += nk_p.sum(axis=0)
    step = max(1, _LIFT_BYTES // (8 * n_components * n_features * n_features))
    for lo in range(0, n_patterns, step):
        part = slice(lo, lo + step)
        order = np.concatenate([plans.observed[part], plans.missing[part]], axis=1)  # (P, D)
        b = plans.regression[part]
        s1_m = np.matmul(b, s1_o[part][..., None])[..., 0]
        b_s = np.matmul(b, s2_o[part])  # (P, K, m, s)
        s_mm = np.matmul(b_s, b.transpose(0, 1, 3, 2))
        s_mm += nk_p[part][..., None, None] * plans.conditional[part]
        first = np.concatenate([s1_o[part], s1_m], axis=2)  # (P, K, D), pattern order
        second = np.concatenate(
            [
                np.concatenate([s2_o[part], b_s.transpose(0, 1, 3, 2)], axis=3),
                np.concatenate([b_s, s_mm], axis=3),
            ],
            axis=2,
        )
        lifted = np.zeros_like(first)
        np.put_along_axis(lifted, np.broadcast_to(order[:, None, :], first.shape), first, axis=2)
        s1 += lifted.sum(axis=0)
        rows = np.zeros_like(second)
        index = np.broadcast_to(order[:, None, :, None], second.shape)
        np.put_along_axis(rows, index, second, axis=2)
        lifted = np.zeros_like(second)
        index = np.broadcast_to(order[:, None, None, :], second.shape)
        np.put_along_axis(lifted, index, rows, axis=3)
        s += lifted.sum(axis=0)


# ------------------------------------------------- diagonal precisions
def diagonal(
    X: Float, ep: Any, sample_weight: Float | None = None, stats: bool = True
) -> tuple[Float, Float, Float, float] | Float:
    """The E-step (and statistics) of ``diag``/``spherical`` components on samples with
    holes, every sample at once: no patterns.

    With diagonal precisions ``p_k`` the features are independent within a
    component, so with the observed mask ``w`` (1 observed, 0 missing) and
    ``x~`` the shifted samples with zeros in the holes, every sum is a GEMM::

        mahalanobis = x~^2 p - 2 x~ (p d) + w (p d^2)        log det = w log p
        s1 = r^T x~ - d (r^T w)
        s2 = r^T x~^2 - 2 d (r^T x~) + d^2 (r^T w) + sigma^2 (nk - r^T w)

    (the missing features are expected at the mean, with the component's
    variance). Every row must have an observed value.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    ep : daskgmm._stats.EStepParams
        Its ``entropy`` asks for ``sum_n w_n sum_k r log r`` in place of the
        log-likelihood.
    sample_weight : ndarray of shape (n_samples,), optional
    stats : bool, default=True

    Returns
    -------
    ``(nk, s1, s2, loglik)`` with ``stats``, else the weighted log-densities (n, K).
    """
    covariance_type, log_weights, shift = ep.covariance_type, ep.log_weights, ep.shift
    deltas, precisions_cholesky, entropy = ep.deltas, ep.precisions_cholesky, ep.entropy
    model = get_covariance_model(covariance_type)
    n_components, n_features = deltas.shape
    precisions = np.broadcast_to(
        model.precisions(precisions_cholesky).reshape(n_components, -1),
        (n_components, n_features),
    )
    from ._stats import _normalise_inplace

    # -2 log N(x_o): x~^2 a + x~ b + w c, c holding the log-determinant and log 2 pi
    a, b = precisions, -2.0 * precisions * deltas
    c = precisions * deltas**2 - np.log(precisions) + math.log(2 * math.pi)
    n_samples = len(X)
    wlp_all = None if stats else np.empty((n_samples, n_components))
    r_x2, r_x, r_w = (np.zeros((n_components, n_features)) for _ in range(3))
    nk = np.zeros(n_components)
    loglik = 0.0
    step = max(256, (1 << 20) // (8 * n_features))  # (rows, D) temporaries of ~1 MiB
    for start in range(0, n_samples, step):
        xc = np.asarray(X[start : start + step], dtype=np.float64) - shift
        missing = np.isnan(xc)
        np.copyto(xc, 0.0, where=missing)
        weight = 1.0 - missing
        squares = xc * xc
        # laid out (K, rows), for _normalise_inplace and the moments' GEMMs
        wlp = a @ squares.T
        wlp += b @ xc.T
        wlp += c @ weight.T
        wlp *= -0.5
        wlp += log_weights[:, None]
        if not stats:
            wlp_all[start : start + step] = wlp.T
            continue
        log_norm = _normalise_inplace(wlp.T)  # wlp now holds the responsibilities
        if entropy:  # the score: sum r log r per sample (see EStepParams.entropy), less
            # the missing values' entropy: 1/2 sum_k r_k sum_{d missing} log sigma^2_kd
            log_var = -np.log(precisions)  # (K, D)
            log_det_c = log_var @ (1.0 - weight).T  # (K, rows)
            log_norm = np.sum(wlp * (np.log(wlp) - 0.5 * log_det_c), axis=0)
        if sample_weight is None:
            loglik += float(np.sum(log_norm))
        else:
            w = np.asarray(sample_weight[start : start + step], dtype=np.float64)
            wlp *= w
            loglik += float(w @ log_norm)
        nk += wlp.sum(axis=1)
        r_x2 += wlp @ squares
        r_x += wlp @ xc
        r_w += wlp @ weight
    if not stats:
        return wlp_all
    s1 = r_x - deltas * r_w
    s2 = r_x2 - 2.0 * deltas * r_x + deltas**2 * r_w + (nk[:, None] - r_w) / precisions
    if s2.shape != model.s2_shape(n_components, n_features):  # spherical: summed over features
        s2 = s2.sum(axis=1)
    return nk, s1, s2, loglik


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
