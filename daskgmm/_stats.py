"""Per-block E-step and sufficient statistics: pure NumPy, no Dask.

The EM iteration maps :func:`suffstats_chunk` over the row blocks of the data,
adds the resulting :class:`SuffStats` (an associative ``+``) and applies
:func:`m_step` to the total on the driver. The same accumulation serves the
initialisers: :func:`hard_assignment_stats_chunk` (k-means) and
:func:`random_resp_stats_chunk` (``init_params='random'``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ._covariance import CovarianceModel, get_covariance_model
from ._kernels import Accumulator, Plan, Tile, Workspace, centre

__all__ = [
    "EStepParams",
    "GMMParams",
    "KMeansStats",
    "SuffStats",
    "estimate_log_prob_resp",
    "estimate_weighted_log_prob",
    "hard_assignment_stats_chunk",
    "kmeans_sizes_chunk",
    "kmeans_stats_chunk",
    "m_step",
    "per_restart_chunk",
    "random_resp_stats_chunk",
    "suffstats_chunk",
    "suffstats_chunk_many",
]

Float = NDArray[np.floating]

#: ``responsibilities(tile, tile_start, workspace) -> (resp, per_row_score, products)``
#: of one tile; ``products`` (or None) go to the accumulator of the same part.
Responsibilities = Callable[[Tile, int, Workspace], tuple[Float, Float, object]]


#: scikit-learn's message (after its first line), kept so that users' ``match=``
#: patterns carry over; the first line, all a command line shows, says what to do.
_NAN_MESSAGE = (
    "Input X contains NaN{where}. daskgmm uses the observed values of such samples exactly "
    "with missing='marginalize' (command line: --missing marginalize).\n"
    "GaussianMixture does not accept missing values encoded as NaN "
    "natively. Alternatively, it is possible to preprocess the data, for instance by using "
    "an imputer transformer in a pipeline or drop samples with missing values. See "
    "https://scikit-learn.org/stable/modules/impute.html"
)


@dataclass(frozen=True, eq=False)
class GMMParams:
    """Parameters of a Gaussian mixture (float64, as scikit-learn's fitted attributes).

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        Shape as scikit-learn's ``covariances_`` for ``covariance_type``.
    precisions_cholesky : ndarray
        Same shape as ``covariances``.
    """

    covariance_type: str
    weights: Float
    means: Float
    covariances: Float
    precisions_cholesky: Float

    @property
    def model(self) -> CovarianceModel:
        return get_covariance_model(self.covariance_type)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @classmethod
    def from_covariances(
        cls, covariance_type: str, weights: Float, means: Float, covariances: Float
    ) -> GMMParams:
        """Build the parameters, computing the precision factors (may raise ValueError)."""
        model = get_covariance_model(covariance_type)
        precisions_cholesky = model.precisions_cholesky(covariances)
        return cls(covariance_type, weights, means, covariances, precisions_cholesky)

    @classmethod
    def from_precisions(
        cls, covariance_type: str, weights: Float, means: Float, precisions: Float
    ) -> GMMParams:
        """Build the parameters from user-given precisions."""
        model = get_covariance_model(covariance_type)
        return cls(
            covariance_type,
            weights,
            means,
            model.covariances_from_precisions(precisions),
            model.precisions_cholesky_from_precisions(precisions),
        )

    def estep(self, shift: Float | None = None) -> EStepParams:
        """The E-step constants (see :meth:`EStepParams.from_params`)."""
        return EStepParams.from_params(self, shift)

    def to_arrays(self) -> dict[str, Float]:
        """The four arrays by name (for saving and comparing)."""
        return {
            "weights": self.weights,
            "means": self.means,
            "covariances": self.covariances,
            "precisions_cholesky": self.precisions_cholesky,
        }


@dataclass(frozen=True, eq=False)
class EStepParams:
    """What one block needs for its E-step, prepared once per iteration on the driver.

    Shipped with the block tasks once per iteration (inside them while small,
    else as a single graph key). Never a tuple: a tuple would scatter into one
    future per item.

    Parameters
    ----------
    covariance_type : str
    log_weights : ndarray of shape (n_components,)
    shift : ndarray of shape (n_features,)
        Subtracted from every sample before any arithmetic.
    deltas : ndarray of shape (n_components, n_features)
        Means minus ``shift``.
    precisions_cholesky : ndarray
    log_det : ndarray of shape (n_components,)
    entropy : bool, default=False
        Score each sample by ``sum_k r_k log r_k`` instead of ``log p(x)``: the
        statistics' ``loglik`` then holds what a variational lower bound needs.
    """

    covariance_type: str
    log_weights: Float
    shift: Float
    deltas: Float
    precisions_cholesky: Float
    log_det: Float
    entropy: bool = False

    @classmethod
    def from_params(cls, params: GMMParams, shift: Float | None = None) -> EStepParams:
        """Constants of ``params``, around ``shift`` (default: the weighted mean of the means).

        Restarts that share a pass take one shift, so that their tiles are
        centred once for all of them.
        """
        if shift is None:
            shift = params.weights @ params.means / params.weights.sum()
        return cls(
            params.covariance_type,
            np.log(params.weights),
            shift,
            params.means - shift,
            params.precisions_cholesky,
            params.model.log_det_cholesky(
                params.precisions_cholesky, params.n_components, params.n_features
            ),
        )


def _sum_fields(a: Any, b: Any) -> Any:
    """Field-by-field sum of two instances of one statistics dataclass."""
    return type(a)(*(getattr(a, f.name) + getattr(b, f.name) for f in fields(a)))


@dataclass(frozen=True, eq=False)
class SuffStats:
    """Partial sufficient statistics of a set of samples; ``+`` merges two sets.

    Parameters
    ----------
    nk : ndarray of shape (n_components,)
        Summed (weighted) responsibilities.
    s1 : ndarray of shape (n_components, n_features)
        ``sum_n r_nk (x_n - means_k)``.
    s2 : ndarray
        Second moment, see :meth:`CovarianceModel.accumulate`.
    loglik : float
        ``sum_n w_n log p(x_n)`` under the parameters of the pass (for k-means
        passes: the summed squared distance to the nearest centre).
    weight_sum : float
        ``sum_n w_n``.
    n_samples : int
        Number of rows seen.
    """

    nk: Float
    s1: Float
    s2: Float
    loglik: float
    weight_sum: float
    n_samples: int

    def __add__(self, other: SuffStats) -> SuffStats:
        return _sum_fields(self, other)


def _raise_nonfinite(X: Float, row_offset: int | None) -> None:
    """Raise scikit-learn's error for NaN/inf in ``X``, naming the first bad row if known."""

    def where(bad: NDArray[np.bool_]) -> str:
        if row_offset is None:
            return ""
        return f" (first in row {row_offset + int(np.argwhere(bad.any(axis=1))[0, 0])})"

    bad = np.isnan(X)
    if bad.any():
        raise ValueError(_NAN_MESSAGE.format(where=where(bad)))
    bad = ~np.isfinite(X)
    if bad.any():
        raise ValueError(
            f"Input X contains infinity or a value too large for {X.dtype!r}.{where(bad)}"
        )


def _log_prob_constants(ep: EStepParams, dtype: np.dtype) -> tuple[Plan, Float]:
    """Per-block constants: the model's kernel plan and the per-component offset."""
    model = get_covariance_model(ep.covariance_type)
    n_features = ep.deltas.shape[1]
    offset = ep.log_det + ep.log_weights - 0.5 * n_features * math.log(2 * math.pi)
    return model.plan(ep.deltas, ep.precisions_cholesky, dtype), offset.astype(dtype)


def _weighted_log_prob_centred(
    tile: Tile, plan: Plan, offset: Float, ws: Workspace
) -> tuple[Float, object]:
    """``log p(x | k) + log w_k`` of a tile already minus the shift, and the plan's products."""
    out, products = plan.mahalanobis(tile, ws)
    out *= -0.5
    out += offset
    return out, products


def estimate_weighted_log_prob(X: Float, ep: EStepParams, missing: bool = False) -> Float:
    """``log p(x_n | k) + log w_k`` for one block, in the dtype of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    ep : EStepParams
    missing : bool, default=False
        NaN entries are missing values: a sample with some gets its
        components' marginal densities on its observed values, one with none
        a row of NaN.

    Returns
    -------
    ndarray of shape (n_samples, n_components)
    """
    if missing and not math.isfinite(float(np.sum(X, dtype=np.float64))):
        from ._missing import MissingEStep, diagonal, split

        _raise_infinite(X, None)
        out = np.full((len(X), len(ep.deltas)), np.nan, dtype=X.dtype)
        if get_covariance_model(ep.covariance_type).diagonal:
            some = ~np.isnan(X).all(axis=1)
            out[some] = diagonal(X[some], ep, stats=False)
            return out
        complete, incomplete = split(X)
        if complete is not None:
            out[complete] = estimate_weighted_log_prob(X.take(complete, axis=0), ep)
        if incomplete:
            rows = np.concatenate([rows for _, rows in incomplete])
            out[rows] = MissingEStep(ep).weighted_log_prob(X, incomplete)[rows]
        return out
    n_components = ep.deltas.shape[0]
    out = np.empty((X.shape[0], n_components), dtype=X.dtype)
    shift = ep.shift.astype(X.dtype)
    model = get_covariance_model(ep.covariance_type)
    plan, offset = _log_prob_constants(ep, X.dtype)
    step = model.tile_rows(n_components, X.shape[1], X.dtype.itemsize)
    ws = Workspace()
    for start in range(0, X.shape[0], step):
        tile = X[start : start + step]
        with np.errstate(invalid="ignore", over="ignore"):
            wlp, _ = _weighted_log_prob_centred(plan.centre(tile, shift, ws), plan, offset, ws)
            out[start : start + step] = wlp
        if not np.all(np.isfinite(out[start : start + step])):
            _raise_nonfinite(tile, None)
    return out


def _normalise_inplace(wlp: Float, ws: Workspace | None = None) -> Float:
    """Turn weighted log-probs into responsibilities in place; return ``log p(x)``.

    Row maxima by column passes and row sums by a GEMV: reductions along a short
    last axis are slow in NumPy. ``wlp`` may be the transpose of a C-ordered
    (n_components, n_samples) array; its columns are then contiguous. The
    per-row temporaries live in ``ws`` when given (see :func:`_nearest`); the
    result too, until the next call.
    """
    ws = ws or Workspace()
    n, n_components = wlp.shape
    top = ws.take("top", (n,), wlp.dtype)
    total = ws.take("total", (n,), wlp.dtype)
    ones = ws.take("ones-k", (n_components,), wlp.dtype)
    ones[...] = 1.0
    # Responsibilities below the smallest normal number (float32: 1.2e-38) are
    # floored there: subnormal operands make the statistics' GEMMs many times
    # slower (see benchmarks/README.md, kernel measurements); the floor moves a
    # responsibility by less than that number.
    floor = math.log(np.finfo(wlp.dtype).tiny) + math.log(n_components) + 1.0
    if not wlp.flags.c_contiguous and wlp.T.flags.c_contiguous:
        by_component = wlp.T
        np.maximum.reduce(by_component, axis=0, out=top)
        by_component -= top
        np.maximum(by_component, floor, out=by_component)
        np.exp(by_component, out=by_component)
        np.matmul(ones, by_component, out=total)
        by_component /= total
    else:
        top[...] = wlp[:, 0]
        for k in range(1, n_components):
            np.maximum(top, wlp[:, k], out=top)
        wlp -= top[:, None]
        np.maximum(wlp, floor, out=wlp)
        np.exp(wlp, out=wlp)
        np.matmul(wlp, ones, out=total)
        wlp /= total[:, None]
    np.log(total, out=total)
    total += top
    return total


def _entropy(resp: Float, ws: Workspace) -> Float:
    """``sum_k r_k log r_k`` of each row of ``resp`` (never subnormal, see
    :func:`_normalise_inplace`), summed along contiguous rows in either layout."""
    transposed = not resp.flags.c_contiguous and resp.T.flags.c_contiguous
    laid_out = resp.T if transposed else resp
    terms = np.log(laid_out, out=ws.take("entropy", laid_out.shape, resp.dtype))
    terms *= laid_out
    return terms.sum(axis=0 if transposed else 1)


def estimate_log_prob_resp(X: Float, ep: EStepParams, missing: bool = False) -> tuple[Float, Float]:
    """``log p(x_n)`` and log-responsibilities of one block.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    ep : EStepParams
    missing : bool, default=False
        See :func:`estimate_weighted_log_prob`; samples with no observed
        value get NaN.

    Returns
    -------
    log_prob_norm : ndarray of shape (n_samples,)
    log_resp : ndarray of shape (n_samples, n_components)
    """
    wlp = estimate_weighted_log_prob(X, ep, missing)
    top = wlp.max(axis=1, keepdims=True)
    with np.errstate(under="ignore"):
        log_norm = (top + np.log(np.exp(wlp - top).sum(axis=1, keepdims=True)))[:, 0]
    return log_norm, wlp - log_norm[:, None]


def _accumulate_chunk(
    X: Float,
    model: CovarianceModel,
    accumulator: Accumulator,
    shift: Float,
    responsibilities: Responsibilities,
    sample_weight: Float | None,
    row_offset: int,
) -> SuffStats:
    """Tile the rows of ``X`` and accumulate statistics of the given responsibilities.

    ``responsibilities(tile, tile_start, workspace)`` returns ``(resp,
    per_row_score, products)``; ``products`` go to the accumulator's ``add``.
    A non-finite score is traced back to NaN/inf in ``X`` (no extra pass: the
    float64 sum of the scores is finite exactly when all of them are).
    """
    (stats,) = _accumulate_chunk_many(
        X, model, [(accumulator, responsibilities)], shift, sample_weight, row_offset
    )
    return stats


def _accumulate_chunk_many(
    X: Float,
    model: CovarianceModel,
    parts: Sequence[tuple[Accumulator, Responsibilities]],
    shift: Float,
    sample_weight: Float | None,
    row_offset: int,
    plan: Plan | None = None,
) -> list[SuffStats]:
    """:func:`_accumulate_chunk` for several ``(accumulator, responsibilities)`` at once.

    Each tile is read and centred once (around the one ``shift``, laid out for
    ``plan``, the first part's E-step kernels, if it has any; in tiles of
    ``model``'s size) for all of them, in turn: the products of a part's
    E-step live in the one workspace, so every ``responsibilities`` call is
    followed by its own ``add`` before the next starts.
    """
    n_samples, n_features = X.shape
    n_components = max(acc.deltas.shape[0] for acc, _ in parts)
    nk = [np.zeros(acc.deltas.shape[0]) for acc, _ in parts]
    loglik = [0.0] * len(parts)
    weight_sum = 0.0
    shift_x = shift.astype(X.dtype)
    step = model.tile_rows(n_components, n_features, X.dtype.itemsize)
    ones = np.ones(min(step, n_samples), dtype=X.dtype)  # nk of a tile as one GEMV
    ws = Workspace()
    for start in range(0, n_samples, step):
        tile = X[start : start + step]
        centred = centre(tile, shift_x, ws) if plan is None else plan.centre(tile, shift_x, ws)
        w = None if sample_weight is None else sample_weight[start : start + step]
        weight_sum += len(tile) if w is None else float(np.sum(w, dtype=np.float64))
        for i, (accumulator, responsibilities) in enumerate(parts):
            with np.errstate(invalid="ignore", over="ignore", under="ignore"):
                resp, score, products = responsibilities(centred, start, ws)
            total = float(np.sum(score, dtype=np.float64))
            if not math.isfinite(total):
                _raise_nonfinite(tile, row_offset + start)
                raise FloatingPointError(
                    "Non-finite log-likelihood for finite input; the data or parameters "
                    "overflow. Scale the input data."
                )
            if w is None:
                loglik[i] += total
            else:
                resp *= w[:, None].astype(resp.dtype)
                loglik[i] += float(w.astype(np.float64) @ score.astype(np.float64))
            nk[i] += ones[: len(resp)] @ resp
            accumulator.add(centred.x, resp, products, ws)
    return [
        SuffStats(nk[i], *acc.finish(nk[i]), loglik[i], weight_sum, n_samples)
        for i, (acc, _) in enumerate(parts)
    ]


def suffstats_chunk(
    X: Float,
    ep: EStepParams,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> SuffStats:
    """E-step fused with the sufficient statistics of one block.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    ep : EStepParams
        Parameters of the current iteration.
    sample_weight : ndarray of shape (n_samples,), optional
        Non-negative weight of each sample's responsibilities.
    row_offset : int, default=0
        Index of the block's first row in the whole dataset (for error messages).

    Returns
    -------
    SuffStats
        Float64 statistics around the current means, and the (weighted)
        log-likelihood of the block under ``ep``.

    Raises
    ------
    ValueError
        If the block holds NaN or infinite values.
    """

    (stats,) = _suffstats_many(X, (ep,), sample_weight, row_offset)
    return stats


def _estep_part(ep: EStepParams, dtype: np.dtype) -> tuple[Plan, Accumulator, Responsibilities]:
    """The E-step kernels, accumulator and responsibilities of one restart."""
    plan, offset = _log_prob_constants(ep, dtype)

    def responsibilities(tile, start, ws):
        wlp, products = _weighted_log_prob_centred(tile, plan, offset, ws)
        log_norm = _normalise_inplace(wlp, ws)
        return wlp, _entropy(wlp, ws) if ep.entropy else log_norm, products

    return plan, plan.accumulator(ep.deltas, dtype), responsibilities


def _suffstats_many(
    X: Float, eps: Sequence[EStepParams], sample_weight: Float | None, row_offset: int
) -> list[SuffStats]:
    out: list[SuffStats | None] = [None] * len(eps)
    groups: dict[tuple, list[int]] = {}
    for i, ep in enumerate(eps):  # restarts with one shift and type share the tiles
        groups.setdefault((ep.covariance_type, ep.shift.tobytes()), []).append(i)
    for members in groups.values():
        parts = [_estep_part(eps[i], X.dtype) for i in members]
        stats = _accumulate_chunk_many(
            X,
            get_covariance_model(eps[members[0]].covariance_type),
            [(acc, resp) for _, acc, resp in parts],
            eps[members[0]].shift,
            sample_weight,
            row_offset,
            parts[0][0],
        )
        for i, st in zip(members, stats, strict=True):
            out[i] = st
    return out  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class ManyStats:
    """Statistics of several restarts over the same samples; ``+`` merges blocks."""

    parts: tuple[Any, ...]

    def __add__(self, other: ManyStats) -> ManyStats:
        return ManyStats(tuple(a + b for a, b in zip(self.parts, other.parts, strict=True)))


def suffstats_chunk_many(
    X: Float,
    eps: tuple[EStepParams, ...],
    sample_weight: Float | None = None,
    row_offset: int = 0,
    missing: bool = False,
) -> ManyStats:
    """:func:`suffstats_chunk` of several restarts from one read of the block.

    Restarts with the same shift (see :meth:`EStepParams.from_params`) and
    covariance type also share each tile's centring, and for ``full`` on
    quadratic features the features themselves: only the two GEMMs and the
    normalisation run per restart.

    With ``missing=True`` NaN entries are missing values: the block's complete
    samples take the same kernels, its incomplete ones the marginal E-step and
    conditional statistics of :mod:`daskgmm._missing`, and samples with no
    observed value are left out (of ``weight_sum`` and ``n_samples`` too).
    A block without NaN costs one sum more (a finite sum has no NaN).
    """
    if missing and not math.isfinite(float(np.sum(X, dtype=np.float64))):
        return ManyStats(tuple(_suffstats_missing(X, eps, sample_weight, row_offset)))
    return ManyStats(tuple(_suffstats_many(X, eps, sample_weight, row_offset)))


def _check_overflow(loglik: float) -> None:
    if not math.isfinite(loglik):
        raise FloatingPointError(
            "Non-finite log-likelihood for finite input; the data or parameters "
            "overflow. Scale the input data."
        )


def _raise_infinite(X: Float, row_offset: int | None) -> None:
    """Refuse ``inf`` where NaN are missing values (scikit-learn's message)."""
    if np.isinf(X).any():
        _raise_nonfinite(np.where(np.isnan(X), 0.0, X), row_offset)


def _suffstats_missing(
    X: Float, eps: Sequence[EStepParams], sample_weight: Float | None, row_offset: int
) -> list[SuffStats]:
    """:func:`suffstats_chunk_many` of a block that may hold NaN entries (see there)."""
    from ._missing import MissingEStep, diagonal, split

    _raise_infinite(X, row_offset)
    w = None if sample_weight is None else np.asarray(sample_weight)
    if get_covariance_model(eps[0].covariance_type).diagonal:
        some = ~np.isnan(X).all(axis=1)
        X_some, w_some = (X, w) if some.all() else (X[some], None if w is None else w[some])
        weight_sum = float(len(X_some) if w_some is None else np.sum(w_some, dtype=np.float64))
        out = []
        for ep in eps:
            nk, s1, s2, loglik = diagonal(X_some, ep, w_some)
            _check_overflow(loglik)
            out.append(SuffStats(nk, s1, s2, loglik, weight_sum, len(X_some)))
        return out
    complete, incomplete = split(X)
    whole: list[SuffStats | None] = [None] * len(eps)
    if complete is not None:
        w_complete = None if w is None else w[complete]
        whole = _suffstats_many(X.take(complete, axis=0), eps, w_complete, 0)
    n_rows = sum(len(rows) for _, rows in incomplete)
    if w is None:
        weight_sum = float(n_rows)
    else:
        weight_sum = sum(float(np.sum(w[rows], dtype=np.float64)) for _, rows in incomplete)
    out = []
    for i, ep in enumerate(eps):
        nk, s1, s2, loglik = MissingEStep(ep).stats(X, incomplete, w)
        _check_overflow(loglik)
        part = SuffStats(nk, s1, s2, loglik, weight_sum, n_rows)
        out.append(part if whole[i] is None else whole[i] + part)
    return out


def per_restart_chunk(
    X: Float,
    chunk_fn: Callable[..., Any],
    per_restart: tuple[tuple, ...],
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> ManyStats:
    """``chunk_fn(X, *args)`` for each restart's ``args``, from one read of the block."""
    return ManyStats(
        tuple(
            chunk_fn(X, *args, sample_weight=sample_weight, row_offset=row_offset)
            for args in per_restart
        )
    )


def _first_minimum(block: Float, best: Float, ws: Workspace, name: str) -> NDArray[np.intp]:
    """``np.argmin(block, axis=0)`` of (centres, rows) distances, given their minimum ``best``.

    One equality test per centre, from the last to the first, so that ties go to
    the lowest index as with ``argmin``. Along the contiguous rows this beats
    ``argmin`` along either axis (see benchmarks/README.md, kernel measurements).
    """
    labels = ws.take(name, (block.shape[1],), np.intp)
    labels[...] = 0
    hit = ws.take("hit", labels.shape, np.bool_)
    for k in range(len(block) - 1, -1, -1):
        np.equal(block[k], best, out=hit)
        np.copyto(labels, k, where=hit)
    return labels


#: Bytes of one set's (centres, rows) distances in a tile of a nearest-centre pass.
_NEAREST_TILE_BYTES = 1 << 20


class _CentreSets(NamedTuple):
    """Several sets of centres (one per restart) around one shift, stacked for one GEMM."""

    neg2: Float  # -2 (centres - shift), all sets' rows stacked, in the data's dtype
    squares: Float  # |centres - shift|^2, a column
    bounds: tuple[int, ...]  # set i is rows bounds[i]:bounds[i+1]

    @classmethod
    def of(cls, centers: Sequence[Float], shift: Float, dtype: np.dtype) -> _CentreSets:
        deltas = (np.concatenate(centers) - shift).astype(dtype)
        bounds = tuple(int(b) for b in np.cumsum([0, *(len(c) for c in centers)]))
        return cls(-2.0 * deltas, np.einsum("kd,kd->k", deltas, deltas)[:, None], bounds)


def _nearest(
    Xc: Float, sets: _CentreSets, ws: Workspace, labels: bool = True
) -> list[tuple[NDArray[np.intp] | None, Float]]:
    """``(labels, d2)`` per set: index of and squared distance to each row's nearest centre.

    One GEMM gives the distances of the centred rows ``Xc`` to every centre of
    every set, and the row norms are added once per set after its minimum. The
    distances are laid out (centres, rows), so that each set's minimum is a
    reduction over the first axis, vectorised along the rows (NumPy's minimum
    or argmin along a short last axis costs more than the GEMM). Everything
    lives in ``ws``: on distributed's workers (``MALLOC_TRIM_THRESHOLD_`` set)
    fresh tile temporaries made the k-means passes several times slower (see
    benchmarks/README.md, kernel measurements). ``labels=False`` gives None for
    the labels and skips them.
    """
    n = len(Xc)
    found = []
    with np.errstate(invalid="ignore", over="ignore"):
        d2 = np.matmul(sets.neg2, Xc.T, out=ws.take("d2t", (len(sets.neg2), n), Xc.dtype))
        d2 += sets.squares
        norms = np.einsum("nd,nd->n", Xc, Xc)
        for i, (lo, hi) in enumerate(itertools.pairwise(sets.bounds)):
            block = d2[lo:hi]
            best = np.minimum.reduce(block, axis=0, out=ws.take(f"best-{i}", (n,), Xc.dtype))
            nearest = _first_minimum(block, best, ws, f"labels-{i}") if labels else None
            best += norms
            found.append((nearest, np.maximum(best, 0.0, out=best)))
    return found


def _nearest_tiles(
    X: Float, centers: Sequence[Float], shift: Float, labels: bool = True, row_offset: int = 0
):
    """Yield ``(start, Xc, found)`` per tile; ``found[i]`` is ``(labels, d2)`` for ``centers[i]``.

    ``centers`` holds one set of centres per restart, all taken around the one
    ``shift``: each tile is centred once, and one GEMM gives its distances to
    every centre of every set (:func:`_nearest`). A tile holds ~1 MiB of
    distances per set, whatever the number of centres (k-means|| rounds hold
    hundreds) (see benchmarks/README.md, kernel measurements). ``labels=False`` yields None for the
    labels and skips them. Distances that are not finite are traced back to
    NaN/inf in ``X``, naming the row (``row_offset`` is ``X``'s first).
    """
    sets = _CentreSets.of(centers, shift, X.dtype)
    shift_x = shift.astype(X.dtype)
    per_row = max(len(c) for c in centers) * X.dtype.itemsize
    step = int(min(8192, max(256, _NEAREST_TILE_BYTES // per_row)))
    ws = Workspace()
    for start in range(0, len(X), step):
        tile = X[start : start + step]
        Xc = np.subtract(tile, shift_x, out=ws.take("xc", tile.shape, X.dtype))
        found = _nearest(Xc, sets, ws, labels)
        if not all(np.all(np.isfinite(d2)) for _, d2 in found):
            _raise_nonfinite(tile, row_offset + start)
        yield start, Xc, found


@dataclass(frozen=True, eq=False)
class KMeansStats:
    """Nearest-centre statistics of a set of samples (a Lloyd step); ``+`` merges sets.

    Parameters
    ----------
    nk : ndarray of shape (n_centers,)
        (Weighted) number of samples nearest to each centre.
    s1 : ndarray of shape (n_centers, n_features)
        ``sum_n w_n (x_n - center_k)`` over the samples nearest to centre ``k``.
    inertia : float
        ``sum_n w_n min_k |x_n - center_k|^2``.
    weight_sum : float
    """

    nk: Float
    s1: Float
    inertia: float
    weight_sum: float

    def __add__(self, other: KMeansStats) -> KMeansStats:
        return _sum_fields(self, other)


def kmeans_stats_chunk(
    X: Float,
    centers: Sequence[Float],
    shift: Float,
    sample_weight: Float | None = None,
    row_offset: int = 0,
    first_moments: bool = True,
) -> ManyStats:
    """:class:`KMeansStats` of the nearest-centre assignment of one block, per set of centres.

    Only what a Lloyd step needs: no second moments, tiled temporaries. Every
    set (one per restart) is taken around the one ``shift`` and shares each
    tile's centring and distance GEMM (:func:`_nearest_tiles`).
    ``first_moments=False`` leaves ``s1`` zero (see :func:`kmeans_sizes_chunk`).
    """
    n_features = X.shape[1]
    nk = [np.zeros(len(c)) for c in centers]
    s1 = [np.zeros((len(c), n_features)) for c in centers]
    inertia = [0.0] * len(centers)
    weight_sum = 0.0
    ws = Workspace()  # one one-hot matrix per block, not per tile (see _nearest)
    for start, Xc, found in _nearest_tiles(X, centers, shift, row_offset=row_offset):
        w = None if sample_weight is None else sample_weight[start : start + len(Xc)]
        weight_sum += len(Xc) if w is None else float(np.sum(w, dtype=np.float64))
        for i, (labels, d2) in enumerate(found):
            nk[i] += np.bincount(labels, weights=w, minlength=len(nk[i]))
            inertia[i] += float(np.sum(d2, dtype=np.float64) if w is None else w @ d2)
            if not first_moments:
                continue
            # per-centre sums of rows as one GEMM with the (weighted) one-hot matrix
            onehot = ws.take("onehot", (len(nk[i]), len(Xc)), X.dtype)
            onehot[...] = 0.0
            onehot[labels, np.arange(len(Xc))] = 1.0 if w is None else w
            s1[i] += (onehot @ Xc).astype(np.float64)
    if first_moments:
        for i, c in enumerate(centers):
            s1[i] -= nk[i][:, None] * (c - shift)
    return ManyStats(
        tuple(KMeansStats(*fields, weight_sum) for fields in zip(nk, s1, inertia, strict=True))
    )


def kmeans_sizes_chunk(
    X: Float,
    centers: Sequence[Float],
    shift: Float,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> ManyStats:
    """:func:`kmeans_stats_chunk` without first moments: sizes of k-means|| candidates.

    Skipping the one-hot GEMM of the first moments pays (see
    benchmarks/README.md, kernel measurements).
    """
    return kmeans_stats_chunk(X, centers, shift, sample_weight, row_offset, first_moments=False)


def hard_assignment_stats_chunk(
    X: Float,
    centers: Sequence[Float],
    shift: Float,
    covariance_type: str,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> ManyStats:
    """Statistics of a block with every sample assigned to its nearest centre, per set of centres.

    A Lloyd step of k-means is ``centers + s1 / nk``; the last one is also the
    Gaussian-mixture initialisation of ``init_params='kmeans'``. ``loglik``
    holds the (weighted) k-means inertia. The sets (one per restart) are taken
    around the one ``shift`` and share each tile's centring.
    """
    model = get_covariance_model(covariance_type)
    parts = []
    for c in centers:
        sets = _CentreSets.of([c], shift, X.dtype)
        eye = np.eye(len(c), dtype=X.dtype)

        def responsibilities(tile, start, ws, sets=sets, eye=eye):
            ((labels, d2),) = _nearest(tile.x, sets, ws)
            return eye[labels], d2, None

        parts.append((model.accumulator(c - shift, X.dtype), responsibilities))
    return ManyStats(
        tuple(_accumulate_chunk_many(X, model, parts, shift, sample_weight, row_offset))
    )


# ------------------------------------------- the initialisation's block functions
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


def kmeans_parallel_chunk(
    X: Float,
    rounds: Sequence[tuple[Float, float, int]],
    shift: Float,
    n_components: int,
    oversampling: float,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> ManyStats:
    """One k-means|| round of each restart on a block: its centres' cost and sampled rows.

    ``rounds`` holds each restart's ``(centers, cost, key)``, all centres taken
    around the one ``shift`` (:func:`_nearest_tiles` shares the tiles). A row
    is sampled with probability ``min(1, l * w d^2 / cost)``, where ``cost`` is
    the (weighted) cost found by the restart's previous pass (``0`` samples
    nothing) and ``l = oversampling * n_components``: about ``l`` rows per round
    in all.
    """
    picked: list[list[Float]] = [[np.empty((0, X.shape[1]))] for _ in rounds]
    totals = [0.0] * len(rounds)
    ws = Workspace()
    centers = [c for c, _, _ in rounds]
    # tile by tile, so the temporaries stay small whatever the block size
    for start, Xc, found in _nearest_tiles(X, centers, shift, labels=False, row_offset=row_offset):
        tile = X[start : start + len(Xc)]
        w = None if sample_weight is None else sample_weight[start : start + len(Xc)]
        for i, ((_, cost, key), (_, d2)) in enumerate(zip(rounds, found, strict=True)):
            wd2 = d2 if w is None else w * d2
            totals[i] += float(np.sum(wd2, dtype=np.float64))
            if cost > 0:
                u = uniform_rows(key, row_offset + start, len(Xc), 1, ws)[:, 0]
                chosen = u < oversampling * n_components * wd2 / cost
                picked[i].append(tile[chosen].astype(np.float64))
    return ManyStats(
        tuple(
            _Candidates(np.concatenate(rows), total, len(X))
            for rows, total in zip(picked, totals, strict=True)
        )
    )


@dataclass(frozen=True, eq=False)
class _Rows:
    """Rows gathered from the blocks, with their positions in the request."""

    positions: NDArray[np.integer]
    rows: Float

    def __add__(self, other: _Rows) -> _Rows:
        return _Rows(
            np.concatenate([self.positions, other.positions]),
            np.concatenate([self.rows, other.rows]),
        )


def rows_chunk(
    X: Float, indices: NDArray[np.integer], sample_weight: Float | None = None, row_offset: int = 0
) -> _Rows:
    """The requested rows that lie in this block (float64)."""
    local = indices - row_offset
    positions = np.flatnonzero((local >= 0) & (local < len(X)))
    rows = X[local[positions]].astype(np.float64)
    if not np.all(np.isfinite(rows)):
        _raise_nonfinite(rows, None)  # row_offset is within the gathered blocks only
    return _Rows(positions, rows)


def uniform_rows(
    seed: int, row_offset: int, n_rows: int, n_cols: int, ws: Workspace | None = None
) -> Float:
    """Uniform draws tied to global row numbers, so they do not depend on chunking.

    Draw ``j`` of row ``i`` is the ``(i * n_cols + j)``-th of one Philox stream,
    whichever block it is drawn in: the counter is positioned at the block's
    first draw (a counter step yields four 64-bit draws; the ones before it
    are skipped). With ``ws`` the draws land in a reused array (see
    :func:`_nearest`). Packed this way a k-means|| round draws one number per
    row, not four (see benchmarks/README.md, kernel measurements).
    """
    first = row_offset * n_cols
    skip = first % 4
    bit_gen = np.random.Philox(key=seed, counter=first // 4)
    total = skip + n_rows * n_cols
    out = None if ws is None else ws.take("uniform", (total,), np.float64)
    draws = np.random.Generator(bit_gen).random(total, out=out)
    return draws[skip:].reshape(n_rows, n_cols)


def with_totals_chunk(
    X: Float,
    chunk_fn: Callable[..., ManyStats],
    args: tuple,
    shift: Float,
    covariance_type: str,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> ManyStats:
    """``chunk_fn(X, *args)``'s parts and, last, the statistics of all the block's samples
    as one component around ``shift``: the data's moments from a pass made anyway."""
    parts = chunk_fn(X, *args, sample_weight=sample_weight, row_offset=row_offset).parts
    (whole,) = hard_assignment_stats_chunk(
        X, (shift[None],), shift, covariance_type, sample_weight, row_offset
    ).parts
    return ManyStats((*parts, whole))


def random_resp_stats_chunk(
    X: Float,
    seed: int,
    n_components: int,
    shift: Float,
    covariance_type: str,
    sample_weight: Float | None = None,
    row_offset: int = 0,
) -> SuffStats:
    """Statistics of random normalised responsibilities (``init_params='random'``)."""
    model = get_covariance_model(covariance_type)
    deltas = np.zeros((n_components, X.shape[1]))

    def responsibilities(tile, start, ws):
        resp = uniform_rows(seed, row_offset + start, len(tile.x), n_components, ws)
        resp /= resp.sum(axis=1, keepdims=True)
        # The score is only a finiteness probe here.
        return resp.astype(X.dtype), np.einsum("nd->n", tile.x).astype(np.float64), None

    accumulator = model.accumulator(deltas, X.dtype)
    return _accumulate_chunk(
        X, model, accumulator, shift, responsibilities, sample_weight, row_offset
    )


def m_step(
    stats: SuffStats, means: Float, shift: Float, covariance_type: str, reg_covar: float
) -> GMMParams:
    """New parameters from total statistics accumulated around ``means``.

    Parameters
    ----------
    stats : SuffStats
        Summed over all blocks.
    means : ndarray of shape (n_components, n_features)
        The means the statistics were accumulated around.
    shift : ndarray of shape (n_features,)
        The shift used in the pass.
    covariance_type : str
    reg_covar : float

    Returns
    -------
    GMMParams

    Raises
    ------
    ValueError
        If a covariance is not positive-definite (names the component).
    """
    nk, new_means, covariances = gaussian_moments(stats, means, shift, covariance_type, reg_covar)
    return GMMParams.from_covariances(covariance_type, nk / nk.sum(), new_means, covariances)


def gaussian_moments(
    stats: SuffStats, means: Float, shift: Float, covariance_type: str, reg_covar: float
) -> tuple[Float, Float, Float]:
    """scikit-learn's ``_estimate_gaussian_parameters`` from total statistics:
    ``(nk, xk, sk)``, the components' (weighted) sizes, means and covariances
    (``reg_covar`` added); see :func:`m_step` for the arguments."""
    model = get_covariance_model(covariance_type)
    # scikit-learn's guard against empty components, 10 eps, in units of the mean
    # sample weight: the same for unit weights, and scale-free for any others (an
    # absolute 10 eps swamped uniform weights of 1e-20, whose nk are ~1e-17).
    unit = stats.weight_sum / stats.n_samples if stats.n_samples and stats.weight_sum > 0 else 1.0
    nk = stats.nk + 10 * np.finfo(np.float64).eps * unit
    new_means = means + stats.s1 / nk[:, None]
    covariances = model.covariances_from_stats(nk, stats.s1, stats.s2, means - shift, reg_covar)
    return nk, new_means, covariances
