"""Everything that depends on ``covariance_type``, in one place.

One :class:`CovarianceModel` subclass per type (``full``, ``tied``, ``diag``,
``spherical``) and one registry, :data:`COVARIANCE_MODELS`. Nothing here knows
about Dask: every method takes and returns NumPy arrays.

Conventions
-----------
``Xc`` is a block of samples minus a *shift* vector ``c`` (one per iteration,
chosen near the data), and ``deltas`` are the component means minus the same
shift, ``deltas[k] = means[k] - c``. Working with shifted coordinates keeps
the arithmetic well conditioned when the data sit far from the origin
(mean 1e6, std 1), in float32 as well as float64.

Sufficient statistics are accumulated around the current means:
``s1[k] = sum_n r_nk (x_n - means[k])`` and the second moment ``s2`` (its shape
depends on the type, see :meth:`CovarianceModel.s2_shape`). They are float64
whatever the dtype of the data. A block's tiles are summed by the model's
:class:`Accumulator`; for ``full`` in the E-step it reuses the E-step's
products instead of forming ``x - mu_k`` again: the quadratic features
``[z, z_i z_j, 1]`` of the samples where ``D <= 2K + 8`` and the means are near
the shift (:func:`_use_quadratic`), else the whitened ``U_k^T (x - mu_k)``.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import numpy as np
import scipy.linalg
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

__all__ = ["COVARIANCE_MODELS", "Accumulator", "CovarianceModel", "get_covariance_model"]

Float = NDArray[np.floating]

#: scikit-learn's wording, kept verbatim so that users' ``match=`` patterns carry over.
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def _ill_defined(component: int | None, covariance_type: str, dtype: np.dtype) -> ValueError:
    msg = ILL_DEFINED_COVARIANCE
    if dtype == np.float32:
        msg += (
            " The numerical accuracy can also be improved by passing float64"
            " data instead of float32."
        )
    where = "the tied covariance" if component is None else f"component {component}"
    msg += (
        f" ({where} is not positive-definite for covariance_type={covariance_type!r}; "
        "a larger reg_covar, e.g. 1e-3, adds that much variance to every feature.)"
    )
    return ValueError(msg)


def _check_shape(param: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if param.shape != shape:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}"
        )


def _cholesky_of_precision(covariance: Float) -> Float:
    """Upper-triangular ``U`` with ``U @ U.T == inv(covariance)`` (raises LinAlgError)."""
    cov_chol = scipy.linalg.cholesky(covariance, lower=True, check_finite=False)
    if not np.all(np.isfinite(cov_chol)):
        raise np.linalg.LinAlgError("non-finite Cholesky factor")
    eye = np.eye(covariance.shape[0], dtype=covariance.dtype)
    return scipy.linalg.solve_triangular(cov_chol, eye, lower=True, check_finite=False).T


def _flip(a: Float) -> Float:
    return a[::-1, ::-1]


def _precision_cholesky_from_precision(precision: Float) -> Float:
    # The precision's U U^T factor through a Cholesky of the row/column-reversed
    # matrix (scikit-learn #26415): J P J = L L^T  =>  P = (J L J)(J L J)^T.
    return np.ascontiguousarray(_flip(np.linalg.cholesky(_flip(precision))))


class Workspace:
    """Scratch arrays reused across the tiles of a block.

    Allocating fresh tile-sized temporaries costs an ``mmap``/``munmap`` and page
    faults each time under ``MALLOC_TRIM_THRESHOLD_`` (which distributed sets for
    its workers): reusing them halves the time of a block there.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._last: dict[str, np.ndarray] = {}

    def take(
        self, name: str, shape: tuple[int, ...], dtype: np.dtype, order: str = "C"
    ) -> np.ndarray:
        """An uninitialised array of ``shape`` (a view of a cached, possibly larger one).

        ``order="C"`` gives a contiguous array, the start of a flat buffer
        (any shape fits one large enough); ``order="F"`` a view of the first
        rows of a column-major array: its columns are contiguous.
        """
        key = (name, order)
        a = self._arrays.get(key)
        if order == "C":
            size = math.prod(shape)
            if a is None or a.dtype != dtype or a.size < size:
                a = self._arrays[key] = np.empty(size, dtype)
            view = a[:size].reshape(shape)
        else:
            if a is None or a.dtype != dtype or a.shape[1:] != shape[1:] or a.shape[0] < shape[0]:
                a = self._arrays[key] = np.empty(shape, dtype, order=order)
            view = a[: shape[0]]
        self._last[name] = view
        return view

    def last(self, name: str) -> np.ndarray | None:
        """The array the latest :meth:`take` of ``name`` returned (None if never taken)."""
        return self._last.get(name)


def _first_moment(Xc: Float, resp: Float, deltas: Float) -> Float:
    """``sum_n r_nk (x_n - means_k)`` as one GEMM around the shift, in float64.

    The subtraction only costs ``eps * |deltas|`` absolute error in the means.
    """
    nk = np.ones(len(resp), dtype=resp.dtype) @ resp
    return (resp.T @ Xc).astype(np.float64) - nk.astype(np.float64)[:, None] * deltas


class Accumulator:
    """Sums the statistics of the tiles of one block (see :meth:`CovarianceModel.accumulator`).

    Parameters
    ----------
    model : CovarianceModel
    deltas : ndarray of shape (n_components, n_features), float64
        The current means minus the shift.
    dtype : numpy.dtype
        The dtype of the data block.
    """

    def __init__(self, model: CovarianceModel, deltas: Float, dtype: np.dtype) -> None:
        n_components, n_features = deltas.shape
        self.model = model
        self.deltas = deltas
        self.deltas_x = deltas.astype(dtype)
        self.s1 = np.zeros((n_components, n_features))
        self.s2 = np.zeros(model.s2_shape(n_components, n_features))

    def add(self, Xc: Float, resp: Float, ws: Workspace) -> None:
        """Add one tile: samples minus the shift, and their (weighted) responsibilities."""
        t1, t2 = self.model.accumulate(Xc, resp, self.deltas_x, ws)
        self.s1 += t1
        self.s2 += t2

    def finish(self, nk: Float) -> tuple[Float, Float]:
        """``(s1, s2)`` of all tiles added, as :meth:`CovarianceModel.accumulate` defines them.

        ``nk`` is the block's summed (weighted) responsibilities, for accumulators
        that move their sums to the means once per block instead of per tile.
        """
        return self.s1, self.s2


class _WhitenedAccumulator(Accumulator):
    """Full-covariance second moments from the E-step's whitened products.

    :meth:`Full.squared_mahalanobis` leaves ``y_nk = U_k^T (x_n - mu_k)`` of the
    tile in the workspace, laid out (K, rows, D). Scaled by ``r_nk``, batched products give
    ``Y_k = sum_n r_nk y_nk y_nk^T = U_k^T S_k U_k`` for all components (one
    product, or from D=16, float64, or D=24, float32, one per block of rows of
    :func:`_moment_blocks`, from its diagonal block rightwards), and at the end
    of the block ``S_k = U_k^{-T} Y_k U_k^{-1}``. This replaces K subtractions,
    scalings and SYRKs per tile by one broadcast product and a few batched GEMMs.

    Accuracy: ``y`` carries the E-step's rounding, ``eps`` times the whitened
    distance ``L`` of the component's mean from the shift, so ``S_k`` is exact
    to about ``eps * L`` relative to ``Sigma_k`` itself (``y`` on both sides; a
    one-sided product with ``x - c`` would give ``eps * L**2``, 6 % of the
    covariance in float32 at ``L = 300``; tested in ``tests/test_stats.py``).
    """

    def __init__(self, model, deltas, dtype, precisions_cholesky):
        super().__init__(model, deltas, dtype)
        self.precisions_cholesky = precisions_cholesky
        # Y_k by blocks of rows, each from its diagonal block rightwards;
        # finish() mirrors the rest. Where the E-step keeps one GEMM (small D),
        # one product of all rows is faster too (see benchmarks/README.md, kernel measurements).
        n_features = deltas.shape[1]
        self.bounds = _moment_blocks(n_features, dtype)

    def add(self, Xc, resp, ws):
        y = ws.last("whitened")  # (K, rows, D)
        n, n_components = resp.shape
        n_features = Xc.shape[1]
        if y is None or y.shape != (n_components, n, n_features):
            raise RuntimeError("add() must follow squared_mahalanobis() of the same tile")
        # sum r (x - c) per tile; finish() moves it to the means once per block
        self.s1 += resp.T @ Xc
        by_component = resp.T[:, :, None]
        ry = np.multiply(y, by_component, out=ws.take("weighted", y.shape, y.dtype))
        # Y_k = (r y_k)^T y_k, by blocks of rows, each from its diagonal block
        # rightwards; the rest is the transpose. Distinct operands keep NumPy on
        # GEMM (for A.T @ A it calls SYRK, 1.3x slower here), and the skipped
        # blocks save a quarter of the flops with two blocks: 25-30 % of this
        # step at D=16 and 64 (K=8, one core).
        for lo, hi in itertools.pairwise(self.bounds):
            a, b = ry[:, :, lo:hi], y[:, :, lo:]
            out = ws.take(f"moments-{lo}", (n_components, hi - lo, n_features - lo), y.dtype)
            self.s2[:, lo:hi, lo:] += np.matmul(a.transpose(0, 2, 1), b, out=out)

    def finish(self, nk):
        s1 = self.s1 - nk[:, None] * self.deltas
        for lo, hi in itertools.pairwise(self.bounds):
            self.s2[:, hi:, lo:hi] = self.s2[:, lo:hi, hi:].transpose(0, 2, 1)
        # S = U^{-T} Y U^{-1}: two batched solves with U^T (K tiny D x D systems)
        factors_t = self.precisions_cholesky.transpose(0, 2, 1)
        m = np.linalg.solve(factors_t, self.s2)
        m = np.linalg.solve(factors_t, m.transpose(0, 2, 1))
        return s1, 0.5 * (m + m.transpose(0, 2, 1))


def _float64_tile(Xc: Float, resp: Float, ws: Workspace) -> tuple[Float, Float]:
    """``Xc`` and ``resp`` in float64: as they are, or copied into workspace arrays."""
    if Xc.dtype == np.float64 and resp.dtype == np.float64:
        return Xc, resp
    x64 = ws.take("x64", Xc.shape, np.float64)
    r64 = ws.take("resp64", resp.shape, np.float64)
    x64[...] = Xc
    r64[...] = resp
    return x64, r64


def _is_view(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` are the same view of the same memory."""
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _splits(n_features: int, n_blocks: int) -> tuple[int, ...]:
    """Bounds of ``n_blocks`` near-equal blocks of ``range(n_features)``."""
    return tuple(round(i * n_features / n_blocks) for i in range(n_blocks + 1))


def _column_blocks(n_features: int, dtype: np.dtype) -> tuple[int, ...]:
    """Bounds of the column blocks of :meth:`Full.prepare`'s GEMMs: ``(0, D)`` for one GEMM.

    ``U_k`` is upper triangular, so the outputs of a block of columns ending at
    ``hi`` need only the first ``hi`` features: a batched GEMM per block skips
    the zeros below the diagonal, a quarter of the flops with two blocks, 3/8
    with four. Blocks of ~16 columns, at least two; below 16 features (24 in
    float32) K tiny GEMMs cost more than the zeros they skip
    (see benchmarks/README.md, kernel measurements).
    """
    smallest = 16 if np.dtype(dtype).itemsize == 8 else 24
    if n_features < smallest:
        return (0, n_features)
    return _splits(n_features, max(2, n_features // 16))


def _moment_blocks(n_features: int, dtype: np.dtype) -> tuple[int, ...]:
    """Bounds of the row blocks of :class:`_WhitenedAccumulator`'s products.

    At least two where the E-step splits; ~32 rows each in float64, ~16 in
    float32. These GEMMs run along the tile's rows, and narrow blocks can lose
    more in speed than they save in flops; float32 takes twice a tile's rows
    and gains from narrower blocks (see benchmarks/README.md, kernel measurements).
    """
    if len(_column_blocks(n_features, dtype)) == 2:
        return (0, n_features)
    rows = 32 if np.dtype(dtype).itemsize == 8 else 16
    return _splits(n_features, max(2, n_features // rows))


class _WhitenedPlan(NamedTuple):
    """:meth:`Full.prepare` for the whitened E-step: ``y = [1, x - c] @ factors``.

    Either ``stacked``, the factors side by side for one GEMM, shape
    ``(D+1, K*D)``, or ``blocks``: per block of columns ``lo:hi`` (``bounds``,
    see :func:`_column_blocks`) the factors' rows ``:hi+1``, shape
    ``(K, hi+1, hi-lo)``.
    """

    stacked: Float | None
    blocks: tuple[Float, ...]
    bounds: tuple[int, ...]
    ones: Float
    precisions_cholesky: Float


class _QuadraticPlan(NamedTuple):
    """:meth:`Full.prepare` for the quadratic-feature E-step (see :func:`_use_quadratic`).

    ``coefficients`` has shape ``(K, D + D(D+1)/2 + 1)``: the squared Mahalanobis
    distances of a tile, laid out (K, rows), are these times the transposed
    quadratic features (:func:`_quadratic_features`).
    """

    coefficients: Float


def _n_quadratic(n_features: int) -> int:
    """Columns of the quadratic features ``[z, z_i z_j (i <= j), 1]``."""
    return 1 + n_features + n_features * (n_features + 1) // 2


def _quadratic_pairs(n_features: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``(i, j)`` of the products in :func:`_quadratic_features`, column by column.

    By wrapped diagonals: ``z_j z_{(j+s) mod D}`` for ``s = 0, 1, ...``, the last
    diagonal halved when ``D`` is even. Every unordered pair appears once.
    """
    j = np.arange(n_features)
    firsts, seconds = [], []
    for s in range(n_features // 2 + 1):
        rows = j[:s] if 2 * s == n_features else j
        firsts.append(rows)
        seconds.append((rows + s) % n_features)
    return np.concatenate(firsts), np.concatenate(seconds)


#: Largest ``eps * reach**2`` (see :func:`_use_quadratic`) the quadratic E-step
#: may cost, relative to each covariance: float32 keeps the log-likelihood well
#: within 1e-4 of float64's, float64 within 1e-10 of scikit-learn's arithmetic.
_QUADRATIC_ERROR = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def _quadratic_pays(n_components: int, n_features: int) -> bool:
    """Whether quadratic features beat the whitened E-step on speed (see :func:`_use_quadratic`)."""
    return n_features <= 2 * n_components + 8


def _use_quadratic(whitened: Float, dtype: np.dtype) -> bool:
    """Whether the full E-step should run on quadratic features of the samples.

    ``whitened`` holds ``U_k^T d_k`` for every component, shape (K, D).

    ``(x-mu)^T P (x-mu) = z^T P z - 2 (P d)^T z + d^T P d`` with ``z = x - c``,
    ``d = mu - c``: one GEMM of the features ``[z, z_i z_j, 1]`` (shared by all
    components) and ``K`` rows of ``D + D(D+1)/2 + 1`` coefficients gives every
    distance, and the same features times the responsibilities give every first
    and second moment. That halves the flops of the whitened E-step's two GEMMs
    and replaces its (rows, K*D) elementwise passes by a (rows, D(D+1)/2) one,
    which pays while ``D <= 2K + 8`` (see benchmarks/README.md, kernel measurements).

    The price is accuracy: the expansion cancels, with an error of about
    ``eps * reach**2`` relative to each covariance, where ``reach`` is the
    largest whitened distance ``|U_k^T d_k|`` of a mean from the shift plus the
    spread of its samples (the whitened path loses ``eps * reach``). Beyond
    :data:`_QUADRATIC_ERROR` (float32: ``reach`` ~29, float64: ~670) the
    whitened path runs instead.
    """
    n_components, n_features = whitened.shape
    if not _quadratic_pays(n_components, n_features):
        return False
    reach = float(np.sqrt(np.max(np.sum(whitened**2, axis=1)))) + math.sqrt(n_features) + 3.0
    dtype = np.dtype(dtype)
    return bool(np.finfo(dtype).eps * reach**2 <= _QUADRATIC_ERROR[dtype])


def _quadratic_features(Xc: Float, shift: Float | None, buffer: Float) -> Float:
    """Fill ``buffer`` with ``[z, z, products, 1]``; return the features ``[z, products, 1]``.

    ``z = Xc - shift`` (``Xc`` itself if ``shift`` is None); the products are
    ordered as :func:`_quadratic_pairs`. ``buffer`` is column-major, of shape
    ``(rows, D + _n_quadratic(D))``: with ``z`` twice side by side, a wrapped
    diagonal ``z_{(j+s) mod D}`` is the plain view ``[z, z][:, s:s+D]``, and
    the full diagonals side by side are one strided view of it, so all the
    products take one NumPy call (two for even ``D``, whose last diagonal is
    half). Few calls per tile matter on the threaded scheduler, where each one
    hands the GIL over (see :meth:`Full.tile_rows`).
    The features' first ``D`` columns are ``z`` (the ``Xc`` of the E-step).
    """
    n, n_features = Xc.shape
    twice = buffer[:, : 2 * n_features]
    z = twice[:, n_features:]
    if shift is None:
        z[...] = Xc
    else:
        np.subtract(Xc, shift, out=z)
    twice[:, :n_features] = z
    rows, cols = buffer.strides
    full = (n_features + 1) // 2  # diagonals s = 0 .. full-1 of width D
    shape = (full, n, n_features)
    np.multiply(
        z[None],
        as_strided(twice, shape, (cols, rows, cols), writeable=False),
        out=as_strided(buffer[:, 2 * n_features :], shape, (n_features * cols, rows, cols)),
    )
    start = 2 * n_features + full * n_features
    if n_features % 2 == 0:
        half = n_features // 2
        np.multiply(z[:, :half], twice[:, half:n_features], out=buffer[:, start : start + half])
        start += half
    buffer[:, start] = 1.0
    return buffer[:, n_features:]


def _pieces(a: Float, step: int) -> list[Float]:
    """``a`` of shape (M, n) cut along its columns: stacked views of ``step`` columns.

    Returns ``(n // step, M, step)`` and, if ``step`` does not divide ``n``, a
    ``(1, M, rest)`` remainder. ``np.matmul`` of a stack runs one BLAS call per
    piece within one NumPy call, so a tile's GEMMs run at the small-matrix
    speed of :func:`_gemm_rows` with one or two calls instead of one per piece.
    """
    n_rows, n = a.shape
    whole = n // step * step
    out = []
    if whole:
        out.append(a[:, :whole].reshape(n_rows, n // step, step).transpose(1, 0, 2))
    if whole < n:
        out.append(a[None, :, whole:])
    return out


def _gemm_rows(n_columns: int, n_components: int) -> int:
    """Rows per GEMM of the quadratic features (a tile runs several).

    OpenBLAS (SkylakeX) runs GEMMs of ``m*n*k <= 1e6`` on its small-matrix
    kernels, about twice as fast on these skinny shapes. Where that would take
    fewer than 512 rows (K=32: 204; slower there), a GEMM takes the whole tile
    (see benchmarks/README.md, kernel measurements).
    """
    rows = 1_000_000 // (n_columns * n_components)
    return rows if rows >= 512 else 1 << 30


class _QuadraticAccumulator(Accumulator):
    """Full-covariance moments from the E-step's quadratic features (:class:`_QuadraticPlan`).

    Per tile one GEMM, ``phi^T r``: its rows are ``sum r z``, the packed
    ``sum r z z^T`` and ``nk`` of every component; :meth:`finish` unpacks them and
    moves them from the shift to the means (an ``eps * reach**2`` relative
    error, see :func:`_use_quadratic`).
    """

    def __init__(self, model, deltas, dtype):
        super().__init__(model, deltas, dtype)
        n_components, n_features = deltas.shape
        self.moments = np.zeros((_n_quadratic(n_features), n_components))

    def add(self, Xc, resp, ws):
        buffer = ws.last("quadratic")
        if buffer is None or buffer.shape[0] != len(Xc):
            raise RuntimeError("add() must follow squared_mahalanobis() of the same tile")
        phi = buffer[:, Xc.shape[1] :]
        if not resp.flags.c_contiguous:
            # the E-step's (K, rows) layout: row-major again for this GEMM, which
            # is half as fast on the transposed operand, the copy included
            rows_first = ws.take("resp-rows", resp.shape, resp.dtype)
            rows_first[...] = resp
            resp = rows_first
        step = _gemm_rows(phi.shape[1], resp.shape[1])
        for phi_t, resp_t in zip(_pieces(phi.T, step), _pieces(resp.T, step), strict=True):
            # one (F, K) product per piece, summed in float64
            out = ws.take("moments", (len(phi_t), phi.shape[1], resp.shape[1]), resp.dtype)
            np.matmul(phi_t, resp_t.transpose(0, 2, 1), out=out)
            self.moments += np.sum(out, axis=0, dtype=np.float64)

    def finish(self, nk):
        n_components, n_features = self.deltas.shape
        sums = self.moments[:n_features].T  # sum r z
        rows, cols = _quadratic_pairs(n_features)
        s2 = np.empty((n_components, n_features, n_features))
        s2[:, rows, cols] = s2[:, cols, rows] = self.moments[n_features:-1].T
        # sum r (z - d)(z - d)^T = sum r z z^T - d (sum r z)^T - (sum r z) d^T + nk d d^T
        d = self.deltas
        cross = d[:, :, None] * sums[:, None, :]
        s2 -= cross + cross.transpose(0, 2, 1)
        s2 += nk[:, None, None] * d[:, :, None] * d[:, None, :]
        return sums - nk[:, None] * d, s2


def _check_symmetric_pd(precision: Float, covariance_type: str) -> None:
    if not (np.allclose(precision, precision.T) and np.all(np.linalg.eigvalsh(precision) > 0.0)):
        raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")


class CovarianceModel(ABC):
    """Covariance-type specific math of a Gaussian mixture.

    Subclasses are stateless; use the instances in :data:`COVARIANCE_MODELS`.
    """

    name: ClassVar[str]

    def tile_rows(self, n_components: int, n_features: int, itemsize: int = 8) -> int:
        """Rows per tile of the per-block kernels, for data of ``itemsize`` bytes per value.

        Smaller tiles cost more Python calls (and GIL hand-offs under the
        threaded scheduler) per sample; larger ones fall out of cache. This
        default serves the models whose per-tile temporaries are (rows, K) and
        (rows, D): 4096 rows, fewer only where such a temporary would pass
        8 MiB in float64; float32 tiles take the same rows
        (see benchmarks/README.md, kernel measurements).
        """
        per_row = (n_components + n_features) * 8
        return int(min(4096, max(256, (8 << 20) // per_row)))

    # ----------------------------------------------------------------- shapes
    @abstractmethod
    def covariances_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_``, ``precisions_`` and ``precisions_cholesky_``."""

    def s2_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the accumulated second-moment statistic."""
        return self.covariances_shape(n_components, n_features)

    @abstractmethod
    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters in the covariances."""

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of the whole mixture (weights, means, covariances)."""
        return int(
            self.n_covariance_parameters(n_components, n_features)
            + n_features * n_components
            + n_components
            - 1
        )

    # --------------------------------------------------- precision factors
    @abstractmethod
    def precisions_cholesky(self, covariances: Float) -> Float:
        """Cholesky factors of the precisions, from the covariances.

        Raises
        ------
        ValueError
            If a covariance is not positive-definite; the message names the
            component and suggests ``reg_covar``.
        """

    @abstractmethod
    def precisions_cholesky_from_precisions(self, precisions: Float) -> Float:
        """Cholesky factors of the precisions, from the precisions themselves."""

    @abstractmethod
    def precisions(self, precisions_cholesky: Float) -> Float:
        """Precisions from their Cholesky factors."""

    @abstractmethod
    def covariances_from_precisions(self, precisions: Float) -> Float:
        """Covariances from precisions (used when only ``precisions_init`` is given)."""

    @abstractmethod
    def log_det_cholesky(
        self, precisions_cholesky: Float, n_components: int, n_features: int
    ) -> Float:
        """Log-determinant of each precision Cholesky factor, shape ``(n_components,)``.

        Equal to ``-0.5 * log det(covariance_k)``.
        """

    @abstractmethod
    def check_precisions(self, precisions: Float, n_components: int, n_features: int) -> Float:
        """Validate user-given ``precisions_init`` (scikit-learn's messages)."""

    # --------------------------------------------------------- per block
    @abstractmethod
    def prepare(self, deltas: Float, precisions_cholesky: Float, dtype: np.dtype) -> tuple:
        """Constants of :meth:`squared_mahalanobis`, in ``dtype``, computed once per block.

        Parameters
        ----------
        deltas : ndarray of shape (n_components, n_features)
            Means minus the shift.
        precisions_cholesky : ndarray
            Shape as :meth:`covariances_shape`.
        dtype : numpy.dtype
            The dtype of the data block.
        """

    def centre(
        self, tile: Float, shift: Float, ws: Workspace, prepared: tuple | None = None
    ) -> Float:
        """``tile - shift`` in a workspace array (the ``Xc`` of the other methods).

        ``prepared`` (from :meth:`prepare`) is given when :meth:`squared_mahalanobis`
        follows, so that a model can lay the samples out for it.
        """
        return np.subtract(tile, shift, out=ws.take("xc", tile.shape, tile.dtype))

    @abstractmethod
    def squared_mahalanobis(self, Xc: Float, prepared: tuple, ws: Workspace | None = None) -> Float:
        """Squared Mahalanobis distance of every shifted sample to every component.

        Parameters
        ----------
        Xc : ndarray of shape (n_samples, n_features)
            Samples minus the shift.
        prepared : tuple
            From :meth:`prepare`.
        ws : Workspace, optional
            Scratch arrays reused across the tiles of a block; the result may
            live in it until the next call.

        Returns
        -------
        ndarray of shape (n_samples, n_components), dtype of ``Xc``
        """

    @abstractmethod
    def accumulate(
        self, Xc: Float, resp: Float, deltas: Float, ws: Workspace | None = None
    ) -> tuple[Float, Float]:
        """First and second moments of one block around the current means.

        Parameters
        ----------
        Xc : ndarray of shape (n_samples, n_features)
            Samples minus the shift.
        resp : ndarray of shape (n_samples, n_components)
            Responsibilities, already multiplied by sample weights.
        deltas : ndarray of shape (n_components, n_features)
            Current means minus the shift, in the dtype of ``Xc``.
        ws : Workspace, optional
            Scratch arrays reused across the tiles of a block.

        Returns
        -------
        s1 : ndarray of shape (n_components, n_features), float64
            ``sum_n r_nk (x_n - means_k)``.
        s2 : ndarray of shape :meth:`s2_shape`, float64
            Second moment; ``full``/``diag`` around each mean, ``spherical``
            around each mean and summed over features, ``tied`` around the
            shift and summed over components.
        """

    def accumulator(
        self, deltas: Float, dtype: np.dtype, prepared: tuple | None = None
    ) -> Accumulator:
        """A per-block sum of :meth:`accumulate` over tiles.

        Parameters
        ----------
        deltas : ndarray of shape (n_components, n_features), float64
            The current means minus the shift.
        dtype : numpy.dtype
            The dtype of the data block.
        prepared : tuple, optional
            From :meth:`prepare`; given when every :meth:`Accumulator.add`
            follows :meth:`squared_mahalanobis` of the same tile and workspace
            with it (the E-step), which lets a model reuse that call's products.
        """
        return Accumulator(self, deltas, dtype)

    @abstractmethod
    def covariances_from_stats(
        self, nk: Float, s1: Float, s2: Float, deltas: Float, reg_covar: float
    ) -> Float:
        """M-step for the covariances.

        Parameters
        ----------
        nk : ndarray of shape (n_components,)
            Summed responsibilities plus ``10 * eps`` (as scikit-learn).
        s1, s2 : ndarray
            Accumulated statistics, see :meth:`accumulate`.
        deltas : ndarray of shape (n_components, n_features), float64
            The means around which the statistics were accumulated, minus the shift.
        reg_covar : float
            Added to the diagonal.
        """

    @abstractmethod
    def sample(
        self,
        rng: np.random.RandomState,
        means: Float,
        covariances: Float,
        counts: NDArray[np.integer],
    ) -> Float:
        """Draw ``counts[k]`` samples from each component, stacked in component order."""


class Full(CovarianceModel):
    """Each component has its own general covariance matrix."""

    name = "full"

    def tile_rows(self, n_components, n_features, itemsize=8):
        if _quadratic_pays(n_components, n_features):
            # ~4 MiB of features per tile, a whole number of _gemm_rows pieces
            # (each GEMM then is one stacked call, see _pieces): fewer NumPy
            # calls per sample, which matters most on the threaded scheduler
            # (every call hands the GIL over): ~4 MiB of features per tile;
            # float32 takes the same bytes, twice the rows
            # (see benchmarks/README.md, kernel measurements).
            n_columns = n_features + _n_quadratic(n_features)
            rows = min(8192, max(256, (4 << 20) // (n_columns * itemsize)))
            piece = _gemm_rows(_n_quadratic(n_features), n_components)
            if piece < rows:
                rows = max(1, round(rows / piece)) * piece
            return int(rows)
        # Three (rows, K*D) temporaries per tile: 2 MiB below 32 features (fewer
        # GIL hand-offs), 1.5 MiB above (a row costs more flops; cache). float32
        # takes the same bytes, twice the rows: its NumPy calls are shorter, the
        # GIL's share larger (see benchmarks/README.md, kernel measurements).
        tile_bytes = (2 << 20) if n_features < 32 else (3 << 19)
        per_row = max(1, n_components * n_features) * itemsize
        return int(min(8192, max(256, tile_bytes // per_row)))

    def covariances_shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances):
        out = np.empty_like(covariances)
        for k, covariance in enumerate(covariances):
            try:
                out[k] = _cholesky_of_precision(covariance)
            except (np.linalg.LinAlgError, ValueError):
                raise _ill_defined(k, self.name, covariances.dtype) from None
        return out

    def precisions_cholesky_from_precisions(self, precisions):
        return np.stack([_precision_cholesky_from_precision(p) for p in precisions])

    def precisions(self, precisions_cholesky):
        return np.matmul(precisions_cholesky, precisions_cholesky.transpose(0, 2, 1))

    def covariances_from_precisions(self, precisions):
        return np.linalg.inv(precisions)

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        diag = np.diagonal(precisions_cholesky, axis1=1, axis2=2)
        return np.sum(np.log(diag), axis=1)

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_components, n_features, n_features), "full precision")
        for precision in precisions:
            _check_symmetric_pd(precision, self.name)
        return precisions

    def prepare(self, deltas, precisions_cholesky, dtype):
        n_features = deltas.shape[1]
        whitened = np.einsum("kd,kde->ke", deltas, precisions_cholesky)  # U_k^T d_k
        if _use_quadratic(whitened, dtype):
            # z^T P z - 2 (P d)^T z + d^T P d, with P d = U (U^T d); off-diagonal
            # products appear once in the features, so their coefficients double
            rows, cols = _quadratic_pairs(n_features)
            precisions = self.precisions(precisions_cholesky)
            coefficients = np.concatenate(
                [
                    -2.0 * np.einsum("kde,ke->dk", precisions_cholesky, whitened),
                    (precisions[:, rows, cols] * np.where(rows == cols, 1.0, 2.0)).T,
                    np.sum(whitened**2, axis=1)[None],
                ]
            )
            return _QuadraticPlan(np.ascontiguousarray(coefficients.T, dtype=dtype))
        # Per component, [1, x - c] @ [-delta_k^T U_k; U_k] = (x - mu_k)^T U_k: the
        # subtraction of each mean happens inside the GEMM.
        factors = np.concatenate([-whitened[:, None], precisions_cholesky], axis=1).astype(dtype)
        ones = np.ones(n_features, dtype=dtype)
        bounds = _column_blocks(n_features, dtype)
        if len(bounds) == 2:  # one GEMM with the factors side by side, (D+1, K*D)
            stacked = factors.transpose(1, 0, 2).reshape(n_features + 1, -1)
            return _WhitenedPlan(
                np.ascontiguousarray(stacked), (), bounds, ones, precisions_cholesky
            )
        blocks = tuple(
            np.ascontiguousarray(factors[:, : hi + 1, lo:hi])
            for lo, hi in itertools.pairwise(bounds)
        )
        return _WhitenedPlan(None, blocks, bounds, ones, precisions_cholesky)

    def centre(self, tile, shift, ws, prepared=None):
        if isinstance(prepared, _QuadraticPlan):
            return self._features(tile, shift, ws)[:, : tile.shape[1]]
        if prepared is None:  # no E-step follows: contiguous rows (accumulate gathers them)
            return super().centre(tile, shift, ws)
        # straight into the columns of [1, x - c] that the E-step GEMM reads
        augmented = ws.take("augmented", (tile.shape[0], tile.shape[1] + 1), tile.dtype)
        augmented[:, 0] = 1.0
        return np.subtract(tile, shift, out=augmented[:, 1:])

    @staticmethod
    def _features(Xc, shift, ws):
        n, n_features = Xc.shape
        shape = (n, n_features + _n_quadratic(n_features))
        buffer = ws.take("quadratic", shape, Xc.dtype, order="F")
        return _quadratic_features(Xc, shift, buffer)

    def squared_mahalanobis(self, Xc, prepared, ws=None):
        ws = ws or Workspace()
        n, n_features = Xc.shape
        if isinstance(prepared, _QuadraticPlan):
            buffer = ws.last("quadratic")
            phi = None if buffer is None else buffer[:, n_features:]
            if phi is None or not _is_view(Xc, phi[:, :n_features]):
                phi = self._features(Xc, None, ws)
            # laid out (K, rows): the GEMM runs with the long side last, and the
            # normalisation then works along contiguous rows (_stats._normalise_inplace;
            # see benchmarks/README.md, kernel measurements).
            coefficients = prepared.coefficients
            out = ws.take("mahalanobis-t", (len(coefficients), n), Xc.dtype)
            step = _gemm_rows(*coefficients.shape)
            for phi_t, part in zip(_pieces(phi.T, step), _pieces(out, step), strict=True):
                np.matmul(coefficients, phi_t, out=part)
            return np.maximum(out, 0.0, out=out).T
        augmented = ws.last("augmented")
        if augmented is None or not _is_view(Xc, augmented[:, 1:]):
            augmented = ws.take("augmented", (n, n_features + 1), Xc.dtype)
            augmented[:, 0] = 1.0
            augmented[:, 1:] = Xc
        # y[k, n] = U_k^T (x_n - mu_k), kept for _WhitenedAccumulator, laid out
        # (K, rows, D): each component's rows contiguous for the squares and
        # the moments' GEMMs. The one GEMM of small D gives (rows, K*D), copied
        # over: cheaper than working on it strided (see benchmarks/README.md, kernel measurements).
        stacked = prepared.stacked
        if stacked is not None:
            n_components = stacked.shape[1] // n_features
            flat = ws.take("whitened-rows", (n, n_components * n_features), Xc.dtype)
            np.matmul(augmented, stacked, out=flat)
            y = ws.take("whitened", (n_components, n, n_features), Xc.dtype)
            y[...] = flat.reshape(n, n_components, n_features).transpose(1, 0, 2)
        else:
            n_components = len(prepared.blocks[0])
            y = ws.take("whitened", (n_components, n, n_features), Xc.dtype)
            for (lo, hi), block in zip(
                itertools.pairwise(prepared.bounds), prepared.blocks, strict=True
            ):
                np.matmul(augmented[None, :, : hi + 1], block, out=y[:, :, lo:hi])
        squares = np.square(y, out=ws.take("squares", y.shape, Xc.dtype))
        # row sums of each component's D squares, a GEMV per component (faster
        # than einsum), laid out (K, rows) as the quadratic path's
        sums = ws.take("sums-t", (n_components, n), Xc.dtype)
        np.matmul(squares, prepared.ones, out=sums)
        return sums.T

    def accumulate(self, Xc, resp, deltas, ws=None):
        ws = ws or Workspace()
        n_components, n_features = deltas.shape
        s2 = np.empty((n_components, n_features, n_features))
        # sqrt(r) (x - mu) times its own transpose: numpy runs A.T @ A as one SYRK
        root = np.sqrt(resp, out=ws.take("root", resp.shape, resp.dtype))
        buf = ws.take("diff", Xc.shape, Xc.dtype)
        for k in range(n_components):
            rows = np.flatnonzero(root[:, k])
            if len(rows) <= len(Xc) // 2:
                # mostly zero weights (k-means's hard assignments): only the
                # component's own rows (see benchmarks/README.md, kernel measurements)
                diff = np.take(Xc, rows, axis=0, out=buf[: len(rows)])
                diff -= deltas[k]
                diff *= root[rows, k, None]
            else:
                diff = np.subtract(Xc, deltas[k], out=buf)
                diff *= root[:, k, None]
            s2[k] = diff.T @ diff
        return _first_moment(Xc, resp, deltas), s2

    def accumulator(self, deltas, dtype, prepared=None):
        if isinstance(prepared, _QuadraticPlan):
            return _QuadraticAccumulator(self, deltas, dtype)
        if isinstance(prepared, _WhitenedPlan):
            return _WhitenedAccumulator(self, deltas, dtype, prepared.precisions_cholesky)
        return Accumulator(self, deltas, dtype)

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        mean_shift = s1 / nk[:, None]
        cov = s2 / nk[:, None, None] - mean_shift[:, :, None] * mean_shift[:, None, :]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        idx = np.arange(cov.shape[1])
        cov[:, idx, idx] += reg_covar
        return cov

    def sample(self, rng, means, covariances, counts):
        return np.vstack(
            [rng.multivariate_normal(m, c, int(n)) for m, c, n in zip(means, covariances, counts)]
        )


class Tied(CovarianceModel):
    """All components share one general covariance matrix."""

    name = "tied"

    def covariances_shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances):
        try:
            return _cholesky_of_precision(covariances)
        except (np.linalg.LinAlgError, ValueError):
            raise _ill_defined(None, self.name, covariances.dtype) from None

    def precisions_cholesky_from_precisions(self, precisions):
        return _precision_cholesky_from_precision(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.T

    def covariances_from_precisions(self, precisions):
        return np.linalg.inv(precisions)

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        return np.full(n_components, np.sum(np.log(np.diagonal(precisions_cholesky))))

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_features, n_features), "tied precision")
        _check_symmetric_pd(precisions, self.name)
        return precisions

    def prepare(self, deltas, precisions_cholesky, dtype):
        b = deltas @ precisions_cholesky
        return (
            precisions_cholesky.astype(dtype),
            np.ascontiguousarray(-2.0 * b, dtype=dtype),
            np.einsum("kd,kd->k", b, b).astype(dtype)[:, None],
        )

    def squared_mahalanobis(self, Xc, prepared, ws=None):
        # laid out (K, rows), as Full's quadratic path (see there)
        ws = ws or Workspace()
        factor, cross, const = prepared
        y = np.matmul(Xc, factor, out=ws.take("whitened", Xc.shape, Xc.dtype))
        shape = (len(const), len(Xc))
        out = np.matmul(cross, y.T, out=ws.take("mahalanobis-t", shape, Xc.dtype))
        out += np.einsum("nd,nd->n", y, y)
        out += const
        np.maximum(out, 0.0, out=out)
        return out.T

    def accumulate(self, Xc, resp, deltas, ws=None):
        ws = ws or Workspace()
        # One (D, D) second moment around the shift, weighted by each sample's
        # total responsibility; the M-step corrects it for every component mean.
        root = np.sqrt(resp.sum(axis=1))
        weighted = np.multiply(Xc, root[:, None], out=ws.take("weighted", Xc.shape, Xc.dtype))
        return _first_moment(Xc, resp, deltas), (weighted.T @ weighted).astype(np.float64)

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        centers = deltas + s1 / nk[:, None]  # new means minus the shift
        between = (centers * nk[:, None]).T @ centers
        cov = (s2 - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov.flat[:: cov.shape[0] + 1] += reg_covar
        return cov

    def sample(self, rng, means, covariances, counts):
        return np.vstack(
            [rng.multivariate_normal(m, covariances, int(n)) for m, n in zip(means, counts)]
        )


class _Diagonal(CovarianceModel):
    """Shared code of the ``diag`` and ``spherical`` types (diagonal precisions)."""

    def s2_shape(self, n_components, n_features):
        return (n_components, n_features)

    def precisions_cholesky(self, covariances):
        bad = ~(covariances > 0.0)  # catches NaN too
        if np.any(bad):
            k = int(np.argwhere(bad.reshape(len(covariances), -1).any(axis=1))[0, 0])
            raise _ill_defined(k, self.name, covariances.dtype)
        return 1.0 / np.sqrt(covariances)

    def precisions_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky**2

    def covariances_from_precisions(self, precisions):
        return 1.0 / precisions

    def _check_positive(self, precisions):
        if np.any(np.less_equal(precisions, 0.0)):
            raise ValueError(f"'{self.name} precision' should be positive")
        return precisions

    def accumulate(self, Xc, resp, deltas, ws=None):
        ws = ws or Workspace()
        # Expanded around the shift in float64, then moved to each mean:
        # sum r (x - d)^2 = sum r x^2 - 2 d * sum r x + nk d^2.
        Xc, resp = _float64_tile(Xc, resp, ws)
        nk = resp.sum(axis=0)
        rx = resp.T @ Xc
        squares = np.multiply(Xc, Xc, out=ws.take("squares64", Xc.shape, np.float64))
        s2 = resp.T @ squares - 2.0 * deltas * rx + nk[:, None] * deltas**2
        return rx - nk[:, None] * deltas, s2

    def _diagonal_covariances(self, nk, s1, s2, reg_covar):
        mean_shift = s1 / nk[:, None]
        return s2 / nk[:, None] - mean_shift**2 + reg_covar


class Diag(_Diagonal):
    """Each component has its own diagonal covariance matrix."""

    name = "diag"

    def covariances_shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components * n_features

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        return np.sum(np.log(precisions_cholesky), axis=1)

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_components, n_features), "diag precision")
        return self._check_positive(precisions)

    def prepare(self, deltas, precisions_cholesky, dtype):
        prec = precisions_cholesky**2
        return (
            np.ascontiguousarray(prec, dtype=dtype),
            np.ascontiguousarray(-2.0 * deltas * prec, dtype=dtype),
            np.sum(deltas**2 * prec, axis=1).astype(dtype)[:, None],
        )

    def squared_mahalanobis(self, Xc, prepared, ws=None):
        # laid out (K, rows), as Full's quadratic path (see there)
        ws = ws or Workspace()
        prec, cross, const = prepared
        shape = (len(const), len(Xc))
        squares = np.multiply(Xc, Xc, out=ws.take("squares", Xc.shape, Xc.dtype))
        out = np.matmul(prec, squares.T, out=ws.take("mahalanobis-t", shape, Xc.dtype))
        out += np.matmul(cross, Xc.T, out=ws.take("cross-t", shape, Xc.dtype))
        out += const
        np.maximum(out, 0.0, out=out)
        return out.T

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        return self._diagonal_covariances(nk, s1, s2, reg_covar)

    def sample(self, rng, means, covariances, counts):
        return np.vstack(
            [
                m + rng.standard_normal(size=(int(n), len(m))) * np.sqrt(c)
                for m, c, n in zip(means, covariances, counts)
            ]
        )


class Spherical(_Diagonal):
    """Each component has its own single variance."""

    name = "spherical"

    def covariances_shape(self, n_components, n_features):
        return (n_components,)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components

    def log_det_cholesky(self, precisions_cholesky, n_components, n_features):
        return n_features * np.log(precisions_cholesky)

    def check_precisions(self, precisions, n_components, n_features):
        _check_shape(precisions, (n_components,), "spherical precision")
        return self._check_positive(precisions)

    def prepare(self, deltas, precisions_cholesky, dtype):
        return (
            np.ascontiguousarray(-2.0 * deltas, dtype=dtype),
            np.einsum("kd,kd->k", deltas, deltas).astype(dtype)[:, None],
            (precisions_cholesky**2).astype(dtype)[:, None],
        )

    def squared_mahalanobis(self, Xc, prepared, ws=None):
        # laid out (K, rows), as Full's quadratic path (see there)
        ws = ws or Workspace()
        cross, const, prec = prepared
        shape = (len(const), len(Xc))
        out = np.matmul(cross, Xc.T, out=ws.take("mahalanobis-t", shape, Xc.dtype))
        out += np.einsum("nd,nd->n", Xc, Xc)
        out += const
        np.maximum(out, 0.0, out=out)
        out *= prec
        return out.T

    def s2_shape(self, n_components, n_features):
        return (n_components,)

    def accumulate(self, Xc, resp, deltas, ws=None):
        # sum_n r |x - d|^2 = sum_n r |x|^2 - 2 d . sum_n r x + nk |d|^2, in
        # float64: the squared norms of the rows, not the squares of every feature.
        ws = ws or Workspace()
        Xc, resp = _float64_tile(Xc, resp, ws)
        nk = resp.sum(axis=0)
        rx = resp.T @ Xc
        s2 = (
            np.einsum("nd,nd->n", Xc, Xc) @ resp
            - 2.0 * np.einsum("kd,kd->k", deltas, rx)
            + nk * np.einsum("kd,kd->k", deltas, deltas)
        )
        return rx - nk[:, None] * deltas, s2

    def covariances_from_stats(self, nk, s1, s2, deltas, reg_covar):
        mean_shift = s1 / nk[:, None]
        return s2 / (nk * s1.shape[1]) - np.mean(mean_shift**2, axis=1) + reg_covar

    def sample(self, rng, means, covariances, counts):
        return Diag().sample(
            rng, means, np.repeat(covariances[:, None], means.shape[1], axis=1), counts
        )


#: The one registry of covariance types.
COVARIANCE_MODELS: dict[str, CovarianceModel] = {
    m.name: m for m in (Full(), Tied(), Diag(), Spherical())
}


def get_covariance_model(covariance_type: str) -> CovarianceModel:
    """The :class:`CovarianceModel` for ``covariance_type``.

    Raises
    ------
    ValueError
        For an unknown type, listing the known ones.
    """
    try:
        return COVARIANCE_MODELS[covariance_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}; "
            f"expected one of {sorted(COVARIANCE_MODELS)}."
        ) from None
