"""BLAS tile kernels of the E-step and of the statistics, one plan per parameter set.

Nothing here knows about Dask or about the parameters' own math (that is
:mod:`daskgmm._covariance`): the kernels take the numbers a block needs and
return NumPy arrays. Every path is tested against the definitions in
``tests/test_stats.py``; what each choice buys is measured in
``benchmarks/README.md`` (kernel measurements).

How a block runs
----------------
A :class:`Plan` holds the constants of one set of parameters in the data's
dtype, built once per block (:meth:`CovarianceModel.plan
<daskgmm._covariance.CovarianceModel.plan>`). Per tile of rows:

1. ``plan.centre(tile, shift, ws)`` gives a :class:`Tile`: the samples minus the
   shift, laid out for this plan (``[1, x - c]`` for the whitened ``full``
   E-step, quadratic features for the other ``full`` E-step). Restarts that
   share a shift share the tile; a plan uses the layout when it is there and
   builds its own otherwise.
2. ``plan.mahalanobis(tile, ws)`` gives the squared distances and the
   *products* the statistics can reuse (or None).
3. ``accumulator.add(tile.x, resp, products, ws)`` sums the tile's statistics;
   the accumulator comes from ``plan.accumulator(deltas)`` and takes that
   plan's products, handed over explicitly.

Conventions are those of :mod:`daskgmm._covariance`: ``Xc`` (``tile.x``) is a
tile minus the shift ``c``, ``deltas[k] = means[k] - c``, and the statistics
``s1``, ``s2`` are float64 around the current means (``tied``: ``s2`` around the
shift, summed over components).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

__all__ = ["Accumulator", "Plan", "Tile", "Workspace"]

Float = NDArray[np.floating]


class Workspace:
    """Scratch arrays reused across the tiles of a block, one per name.

    Allocating fresh tile-sized temporaries costs an ``mmap``/``munmap`` and page
    faults each time under ``MALLOC_TRIM_THRESHOLD_`` (which distributed sets for
    its workers): reusing them halves the time of a block there. A name is only
    scratch: what one step hands to the next is passed explicitly.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

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
            return a[:size].reshape(shape)
        if a is None or a.dtype != dtype or a.shape[1:] != shape[1:] or a.shape[0] < shape[0]:
            a = self._arrays[key] = np.empty(shape, dtype, order=order)
        return a[: shape[0]]


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile of samples minus the shift, and the layouts a plan built around it.

    Parameters
    ----------
    x : ndarray of shape (rows, n_features)
        The samples minus the shift, in the data's dtype.
    augmented : ndarray of shape (rows, n_features + 1), optional
        ``[1, x]``, whose columns ``1:`` are ``x`` (whitened ``full`` E-step).
    features : ndarray of shape (rows, n_quadratic), optional
        ``[x, x_i x_j, 1]`` (:func:`_quadratic_features`), whose first columns
        are ``x`` (quadratic ``full`` E-step).
    """

    x: Float
    augmented: Float | None = None
    features: Float | None = None


def centre(tile: Float, shift: Float, ws: Workspace) -> Tile:
    """``tile - shift`` in a workspace array, with no other layout."""
    return Tile(np.subtract(tile, shift, out=ws.take("xc", tile.shape, tile.dtype)))


def _first_moment(Xc: Float, resp: Float, deltas: Float) -> Float:
    """``sum_n r_nk (x_n - means_k)`` as one GEMM around the shift, in float64.

    The subtraction only costs ``eps * |deltas|`` absolute error in the means.
    """
    nk = np.ones(len(resp), dtype=resp.dtype) @ resp
    return (resp.T @ Xc).astype(np.float64) - nk.astype(np.float64)[:, None] * deltas


def _float64_tile(Xc: Float, resp: Float, ws: Workspace) -> tuple[Float, Float]:
    """``Xc`` and ``resp`` in float64: as they are, or copied into workspace arrays."""
    if Xc.dtype == np.float64 and resp.dtype == np.float64:
        return Xc, resp
    x64 = ws.take("x64", Xc.shape, np.float64)
    r64 = ws.take("resp64", resp.shape, np.float64)
    x64[...] = Xc
    r64[...] = resp
    return x64, r64


def _splits(n_features: int, n_blocks: int) -> tuple[int, ...]:
    """Bounds of ``n_blocks`` near-equal blocks of ``range(n_features)``."""
    return tuple(round(i * n_features / n_blocks) for i in range(n_blocks + 1))


def _column_blocks(n_features: int, dtype: np.dtype) -> tuple[int, ...]:
    """Bounds of the column blocks of :class:`WhitenedPlan`'s GEMMs: ``(0, D)`` for one GEMM.

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
    hands the GIL over (see :func:`full_tile_rows`).
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


# --------------------------------------------------------------- tile sizes
def tile_rows(n_components: int, n_features: int, itemsize: int = 8) -> int:
    """Rows per tile of the kernels whose temporaries are (rows, K) and (rows, D).

    Smaller tiles cost more Python calls (and GIL hand-offs under the
    threaded scheduler) per sample; larger ones fall out of cache: 4096 rows,
    fewer only where such a temporary would pass 8 MiB in float64; float32
    tiles take the same rows (see benchmarks/README.md, kernel measurements).
    """
    per_row = (n_components + n_features) * 8
    return int(min(4096, max(256, (8 << 20) // per_row)))


def full_tile_rows(n_components: int, n_features: int, itemsize: int = 8) -> int:
    """Rows per tile of the ``full`` kernels (see :func:`tile_rows`)."""
    if _quadratic_pays(n_components, n_features):
        # ~4 MiB of features per tile, a whole number of _gemm_rows pieces
        # (each GEMM then is one stacked call, see _pieces): fewer NumPy calls
        # per sample, which matters most on the threaded scheduler (every call
        # hands the GIL over); float32 takes the same bytes, twice the rows.
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


# ------------------------------------------- statistics of given responsibilities
#: ``moments(Xc, resp, deltas, ws) -> (s1, s2)`` of one tile, float64; ``deltas``
#: in the dtype of ``Xc``. See :meth:`CovarianceModel.s2_shape
#: <daskgmm._covariance.CovarianceModel.s2_shape>` for ``s2``.
Moments = Callable[[Float, Float, Float, Workspace], tuple[Float, Float]]


def full_moments(Xc: Float, resp: Float, deltas: Float, ws: Workspace) -> tuple[Float, Float]:
    """Each component's first and second moments around its own mean."""
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


def tied_moments(Xc: Float, resp: Float, deltas: Float, ws: Workspace) -> tuple[Float, Float]:
    """First moments, and one (D, D) second moment around the shift.

    Each sample is weighted by its total responsibility; the M-step corrects
    the sum for every component's mean.
    """
    root = np.sqrt(resp.sum(axis=1))
    weighted = np.multiply(Xc, root[:, None], out=ws.take("weighted", Xc.shape, Xc.dtype))
    return _first_moment(Xc, resp, deltas), (weighted.T @ weighted).astype(np.float64)


def diag_moments(Xc: Float, resp: Float, deltas: Float, ws: Workspace) -> tuple[Float, Float]:
    """First moments and per-feature second moments around each mean.

    Expanded around the shift in float64, then moved to each mean:
    ``sum r (x - d)^2 = sum r x^2 - 2 d * sum r x + nk d^2``.
    """
    Xc, resp = _float64_tile(Xc, resp, ws)
    deltas = deltas.astype(np.float64)
    nk = resp.sum(axis=0)
    rx = resp.T @ Xc
    squares = np.multiply(Xc, Xc, out=ws.take("squares64", Xc.shape, np.float64))
    s2 = resp.T @ squares - 2.0 * deltas * rx + nk[:, None] * deltas**2
    return rx - nk[:, None] * deltas, s2


def spherical_moments(Xc: Float, resp: Float, deltas: Float, ws: Workspace) -> tuple[Float, Float]:
    """First moments and second moments around each mean, summed over features.

    ``sum_n r |x - d|^2 = sum_n r |x|^2 - 2 d . sum_n r x + nk |d|^2`` in
    float64: the squared norms of the rows, not the squares of every feature.
    """
    Xc, resp = _float64_tile(Xc, resp, ws)
    deltas = deltas.astype(np.float64)
    nk = resp.sum(axis=0)
    rx = resp.T @ Xc
    s2 = (
        np.einsum("nd,nd->n", Xc, Xc) @ resp
        - 2.0 * np.einsum("kd,kd->k", deltas, rx)
        + nk * np.einsum("kd,kd->k", deltas, deltas)
    )
    return rx - nk[:, None] * deltas, s2


class Accumulator:
    """Sums the statistics of the tiles of one block.

    This one forms every tile's moments from the samples and the
    responsibilities (the initialisers' passes, and the E-step of every type
    but ``full``); the ``full`` E-step's accumulators reuse its products.

    Parameters
    ----------
    moments : callable
        See :data:`Moments`.
    deltas : ndarray of shape (n_components, n_features), float64
        The current means minus the shift.
    dtype : numpy.dtype
        The dtype of the data block.
    s2_shape : tuple of int
        The shape of the second moment.
    """

    def __init__(
        self, moments: Moments, deltas: Float, dtype: np.dtype, s2_shape: tuple[int, ...]
    ) -> None:
        self.moments = moments
        self.deltas = deltas
        self.deltas_x = deltas.astype(dtype)
        self.s1 = np.zeros(deltas.shape)
        self.s2 = np.zeros(s2_shape)

    def add(self, Xc: Float, resp: Float, products: object, ws: Workspace) -> None:
        """Add one tile: samples minus the shift, their (weighted) responsibilities.

        ``products`` is what the plan's :meth:`Plan.mahalanobis` returned for
        this tile (None outside an E-step); this accumulator does not use them.
        """
        t1, t2 = self.moments(Xc, resp, self.deltas_x, ws)
        self.s1 += t1
        self.s2 += t2

    def finish(self, nk: Float) -> tuple[Float, Float]:
        """``(s1, s2)`` of all tiles added.

        ``nk`` is the block's summed (weighted) responsibilities, for accumulators
        that move their sums to the means once per block instead of per tile.
        """
        return self.s1, self.s2


class _WhitenedAccumulator(Accumulator):
    """Full-covariance second moments from the E-step's whitened products.

    :meth:`WhitenedPlan.mahalanobis` hands over ``y_nk = U_k^T (x_n - mu_k)``
    of the tile, laid out (K, rows, D). Scaled by ``r_nk``, batched products
    give ``Y_k = sum_n r_nk y_nk y_nk^T = U_k^T S_k U_k`` for all components
    (one product, or one per block of rows of :func:`_moment_blocks`, from its
    diagonal block rightwards), and at the end of the block
    ``S_k = U_k^{-T} Y_k U_k^{-1}``. This replaces K subtractions, scalings and
    SYRKs per tile by one broadcast product and a few batched GEMMs.

    Accuracy: ``y`` carries the E-step's rounding, ``eps`` times the whitened
    distance ``L`` of the component's mean from the shift, so ``S_k`` is exact
    to about ``eps * L`` relative to ``Sigma_k`` itself (``y`` on both sides; a
    one-sided product with ``x - c`` would give ``eps * L**2``, 6 % of the
    covariance in float32 at ``L = 300``; tested in ``tests/test_stats.py``).
    """

    def __init__(self, deltas: Float, dtype: np.dtype, precisions_cholesky: Float) -> None:
        n_components, n_features = deltas.shape
        super().__init__(full_moments, deltas, dtype, (n_components, n_features, n_features))
        self.precisions_cholesky = precisions_cholesky
        # Y_k by blocks of rows, each from its diagonal block rightwards;
        # finish() mirrors the rest. Where the E-step keeps one GEMM (small D),
        # one product of all rows is faster too.
        self.bounds = _moment_blocks(n_features, dtype)

    def add(self, Xc, resp, products, ws):
        y = products  # (K, rows, D)
        n, n_components = resp.shape
        if not isinstance(y, np.ndarray) or y.shape != (n_components, n, Xc.shape[1]):
            raise ValueError("add() needs the whitened products of this tile from mahalanobis()")
        # sum r (x - c) per tile; finish() moves it to the means once per block
        self.s1 += resp.T @ Xc
        ry = np.multiply(y, resp.T[:, :, None], out=ws.take("weighted", y.shape, y.dtype))
        # Distinct operands keep NumPy on GEMM (for A.T @ A it calls SYRK, 1.3x
        # slower here), and the skipped blocks save a quarter of the flops
        # with two blocks.
        for lo, hi in itertools.pairwise(self.bounds):
            a, b = ry[:, :, lo:hi], y[:, :, lo:]
            out = ws.take(f"moments-{lo}", (n_components, hi - lo, y.shape[2] - lo), y.dtype)
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


class _QuadraticAccumulator(Accumulator):
    """Full-covariance moments from the E-step's quadratic features (:class:`QuadraticPlan`).

    Per tile one GEMM, ``phi^T r``: its rows are ``sum r z``, the packed
    ``sum r z z^T`` and ``nk`` of every component; :meth:`finish` unpacks them and
    moves them from the shift to the means (an ``eps * reach**2`` relative
    error, see :func:`_use_quadratic`).
    """

    def __init__(self, deltas: Float, dtype: np.dtype) -> None:
        n_components, n_features = deltas.shape
        super().__init__(full_moments, deltas, dtype, (n_components, n_features, n_features))
        self.moments_t = np.zeros((_n_quadratic(n_features), n_components))

    def add(self, Xc, resp, products, ws):
        phi = products
        if not isinstance(phi, np.ndarray) or phi.shape != (len(Xc), len(self.moments_t)):
            raise ValueError("add() needs the quadratic features of this tile from mahalanobis()")
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
            self.moments_t += np.sum(out, axis=0, dtype=np.float64)

    def finish(self, nk):
        n_components, n_features = self.deltas.shape
        sums = self.moments_t[:n_features].T  # sum r z
        rows, cols = _quadratic_pairs(n_features)
        s2 = np.empty((n_components, n_features, n_features))
        s2[:, rows, cols] = s2[:, cols, rows] = self.moments_t[n_features:-1].T
        # sum r (z - d)(z - d)^T = sum r z z^T - d (sum r z)^T - (sum r z) d^T + nk d d^T
        d = self.deltas
        cross = d[:, :, None] * sums[:, None, :]
        s2 -= cross + cross.transpose(0, 2, 1)
        s2 += nk[:, None, None] * d[:, :, None] * d[:, None, :]
        return sums - nk[:, None] * d, s2


# -------------------------------------------------------------------- plans
class Plan(ABC):
    """E-step constants of one set of parameters for one block, in the data's dtype.

    Squared distances come out laid out (K, rows) and returned transposed:
    the GEMMs then run with the long side last, and the normalisation works
    along contiguous rows (``_stats._normalise_inplace``).
    """

    def centre(self, tile: Float, shift: Float, ws: Workspace) -> Tile:
        """The tile minus ``shift``, laid out for :meth:`mahalanobis`."""
        return centre(tile, shift, ws)

    @abstractmethod
    def mahalanobis(self, tile: Tile, ws: Workspace) -> tuple[Float, object]:
        """Squared distance of every sample to every component, and the products.

        Returns
        -------
        d2 : ndarray of shape (rows, n_components)
            In the dtype of ``tile.x``; lives in ``ws`` until the next call.
        products : object
            For this plan's :meth:`accumulator` (None where it uses none).
        """

    @abstractmethod
    def accumulator(self, deltas: Float, dtype: np.dtype) -> Accumulator:
        """The accumulator of this E-step's statistics; it takes :meth:`mahalanobis`'s products.

        ``deltas`` (float64) are the current means minus the shift.
        """


@dataclass(frozen=True, eq=False)
class QuadraticPlan(Plan):
    """``full`` on quadratic features of the samples (see :func:`_use_quadratic`).

    ``coefficients`` has shape ``(K, D + D(D+1)/2 + 1)``: the squared Mahalanobis
    distances of a tile, laid out (K, rows), are these times the transposed
    quadratic features (:func:`_quadratic_features`), which go on to the
    accumulator.
    """

    coefficients: Float

    @classmethod
    def build(cls, whitened: Float, precisions_cholesky: Float, dtype: np.dtype) -> QuadraticPlan:
        """From ``whitened = U_k^T d_k`` and the precisions' Cholesky factors ``U_k``.

        ``z^T P z - 2 (P d)^T z + d^T P d``, with ``P d = U (U^T d)``;
        off-diagonal products appear once in the features, so their
        coefficients double.
        """
        rows, cols = _quadratic_pairs(whitened.shape[1])
        precisions = np.matmul(precisions_cholesky, precisions_cholesky.transpose(0, 2, 1))
        coefficients = np.concatenate(
            [
                -2.0 * np.einsum("kde,ke->dk", precisions_cholesky, whitened),
                (precisions[:, rows, cols] * np.where(rows == cols, 1.0, 2.0)).T,
                np.sum(whitened**2, axis=1)[None],
            ]
        )
        return cls(np.ascontiguousarray(coefficients.T, dtype=dtype))

    def centre(self, tile, shift, ws):
        features = _features(tile, shift, ws)
        return Tile(features[:, : tile.shape[1]], features=features)

    def mahalanobis(self, tile, ws):
        phi = tile.features if tile.features is not None else _features(tile.x, None, ws)
        n = len(tile.x)
        coefficients = self.coefficients
        out = ws.take("mahalanobis-t", (len(coefficients), n), tile.x.dtype)
        step = _gemm_rows(*coefficients.shape)
        for phi_t, part in zip(_pieces(phi.T, step), _pieces(out, step), strict=True):
            np.matmul(coefficients, phi_t, out=part)
        return np.maximum(out, 0.0, out=out).T, phi

    def accumulator(self, deltas, dtype):
        return _QuadraticAccumulator(deltas, dtype)


def _features(Xc: Float, shift: Float | None, ws: Workspace) -> Float:
    """The quadratic features of ``Xc - shift`` in a workspace buffer."""
    n, n_features = Xc.shape
    shape = (n, n_features + _n_quadratic(n_features))
    return _quadratic_features(Xc, shift, ws.take("quadratic", shape, Xc.dtype, order="F"))


@dataclass(frozen=True, eq=False)
class WhitenedPlan(Plan):
    """``full`` through the whitened samples ``y = [1, x - c] @ factors``.

    Per component, ``[1, x - c] @ [-delta_k^T U_k; U_k] = (x - mu_k)^T U_k``:
    the subtraction of each mean happens inside the GEMM. Either ``stacked``,
    the factors side by side for one GEMM, shape ``(D+1, K*D)``, or
    ``blocks``: per block of columns ``lo:hi`` (``bounds``, see
    :func:`_column_blocks`) the factors' rows ``:hi+1``, shape
    ``(K, hi+1, hi-lo)``. ``y`` goes on to the accumulator.
    """

    stacked: Float | None
    blocks: tuple[Float, ...]
    bounds: tuple[int, ...]
    ones: Float
    precisions_cholesky: Float

    @classmethod
    def build(cls, whitened: Float, precisions_cholesky: Float, dtype: np.dtype) -> WhitenedPlan:
        """From ``whitened = U_k^T d_k`` and the precisions' Cholesky factors ``U_k``."""
        n_features = whitened.shape[1]
        factors = np.concatenate([-whitened[:, None], precisions_cholesky], axis=1).astype(dtype)
        ones = np.ones(n_features, dtype=dtype)
        bounds = _column_blocks(n_features, dtype)
        if len(bounds) == 2:
            stacked = factors.transpose(1, 0, 2).reshape(n_features + 1, -1)
            return cls(np.ascontiguousarray(stacked), (), bounds, ones, precisions_cholesky)
        blocks = tuple(
            np.ascontiguousarray(factors[:, : hi + 1, lo:hi])
            for lo, hi in itertools.pairwise(bounds)
        )
        return cls(None, blocks, bounds, ones, precisions_cholesky)

    def centre(self, tile, shift, ws):
        # straight into the columns of [1, x - c] that the E-step GEMM reads
        augmented = ws.take("augmented", (tile.shape[0], tile.shape[1] + 1), tile.dtype)
        augmented[:, 0] = 1.0
        np.subtract(tile, shift, out=augmented[:, 1:])
        return Tile(augmented[:, 1:], augmented=augmented)

    def mahalanobis(self, tile, ws):
        Xc = tile.x
        n, n_features = Xc.shape
        augmented = tile.augmented
        if augmented is None:
            augmented = ws.take("augmented", (n, n_features + 1), Xc.dtype)
            augmented[:, 0] = 1.0
            augmented[:, 1:] = Xc
        # y[k, n] = U_k^T (x_n - mu_k), laid out (K, rows, D): each component's
        # rows contiguous for the squares and the moments' GEMMs. The one GEMM
        # of small D gives (rows, K*D), copied over: cheaper than working on it
        # strided (see benchmarks/README.md, kernel measurements).
        if self.stacked is not None:
            n_components = self.stacked.shape[1] // n_features
            flat = ws.take("whitened-rows", (n, n_components * n_features), Xc.dtype)
            np.matmul(augmented, self.stacked, out=flat)
            y = ws.take("whitened", (n_components, n, n_features), Xc.dtype)
            y[...] = flat.reshape(n, n_components, n_features).transpose(1, 0, 2)
        else:
            n_components = len(self.blocks[0])
            y = ws.take("whitened", (n_components, n, n_features), Xc.dtype)
            for (lo, hi), block in zip(itertools.pairwise(self.bounds), self.blocks, strict=True):
                np.matmul(augmented[None, :, : hi + 1], block, out=y[:, :, lo:hi])
        squares = np.square(y, out=ws.take("squares", y.shape, Xc.dtype))
        # row sums of each component's D squares, a GEMV per component (faster
        # than einsum), laid out (K, rows)
        sums = ws.take("sums-t", (n_components, n), Xc.dtype)
        np.matmul(squares, self.ones, out=sums)
        return sums.T, y

    def accumulator(self, deltas, dtype):
        return _WhitenedAccumulator(deltas, dtype, self.precisions_cholesky)


def full_plan(deltas: Float, precisions_cholesky: Float, dtype: np.dtype) -> Plan:
    """The faster of :class:`QuadraticPlan` and :class:`WhitenedPlan` that is accurate here."""
    whitened = np.einsum("kd,kde->ke", deltas, precisions_cholesky)  # U_k^T d_k
    if _use_quadratic(whitened, dtype):
        return QuadraticPlan.build(whitened, precisions_cholesky, dtype)
    return WhitenedPlan.build(whitened, precisions_cholesky, dtype)


@dataclass(frozen=True, eq=False)
class TiedPlan(Plan):
    """``tied``: ``|y - U^T d_k|^2 = |y|^2 - 2 (U^T d_k) . y + |U^T d_k|^2`` with ``y = U^T x``."""

    factor: Float  # U
    cross: Float  # -2 (d_k U), (K, D)
    const: Float  # |d_k U|^2, a column

    @classmethod
    def build(cls, deltas: Float, precisions_cholesky: Float, dtype: np.dtype) -> TiedPlan:
        b = deltas @ precisions_cholesky
        return cls(
            precisions_cholesky.astype(dtype),
            np.ascontiguousarray(-2.0 * b, dtype=dtype),
            np.einsum("kd,kd->k", b, b).astype(dtype)[:, None],
        )

    def mahalanobis(self, tile, ws):
        Xc = tile.x
        y = np.matmul(Xc, self.factor, out=ws.take("whitened", Xc.shape, Xc.dtype))
        shape = (len(self.const), len(Xc))
        out = np.matmul(self.cross, y.T, out=ws.take("mahalanobis-t", shape, Xc.dtype))
        out += np.einsum("nd,nd->n", y, y)
        out += self.const
        return np.maximum(out, 0.0, out=out).T, None

    def accumulator(self, deltas, dtype):
        n_features = deltas.shape[1]
        return Accumulator(tied_moments, deltas, dtype, (n_features, n_features))


@dataclass(frozen=True, eq=False)
class DiagPlan(Plan):
    """``diag``: ``sum_d p_kd x_d^2 - 2 sum_d p_kd d_kd x_d + sum_d p_kd d_kd^2``."""

    precisions: Float  # (K, D)
    cross: Float  # -2 d_k p_k, (K, D)
    const: Float  # sum_d p_kd d_kd^2, a column

    @classmethod
    def build(cls, deltas: Float, precisions_cholesky: Float, dtype: np.dtype) -> DiagPlan:
        prec = precisions_cholesky**2
        return cls(
            np.ascontiguousarray(prec, dtype=dtype),
            np.ascontiguousarray(-2.0 * deltas * prec, dtype=dtype),
            np.sum(deltas**2 * prec, axis=1).astype(dtype)[:, None],
        )

    def mahalanobis(self, tile, ws):
        Xc = tile.x
        shape = (len(self.const), len(Xc))
        squares = np.multiply(Xc, Xc, out=ws.take("squares", Xc.shape, Xc.dtype))
        out = np.matmul(self.precisions, squares.T, out=ws.take("mahalanobis-t", shape, Xc.dtype))
        out += np.matmul(self.cross, Xc.T, out=ws.take("cross-t", shape, Xc.dtype))
        out += self.const
        return np.maximum(out, 0.0, out=out).T, None

    def accumulator(self, deltas, dtype):
        return Accumulator(diag_moments, deltas, dtype, deltas.shape)


@dataclass(frozen=True, eq=False)
class SphericalPlan(Plan):
    """``spherical``: ``p_k (|x|^2 - 2 d_k . x + |d_k|^2)``."""

    cross: Float  # -2 d_k, (K, D)
    const: Float  # |d_k|^2, a column
    precisions: Float  # p_k, a column

    @classmethod
    def build(cls, deltas: Float, precisions_cholesky: Float, dtype: np.dtype) -> SphericalPlan:
        return cls(
            np.ascontiguousarray(-2.0 * deltas, dtype=dtype),
            np.einsum("kd,kd->k", deltas, deltas).astype(dtype)[:, None],
            (precisions_cholesky**2).astype(dtype)[:, None],
        )

    def mahalanobis(self, tile, ws):
        Xc = tile.x
        shape = (len(self.const), len(Xc))
        out = np.matmul(self.cross, Xc.T, out=ws.take("mahalanobis-t", shape, Xc.dtype))
        out += np.einsum("nd,nd->n", Xc, Xc)
        out += self.const
        np.maximum(out, 0.0, out=out)
        out *= self.precisions
        return out.T, None

    def accumulator(self, deltas, dtype):
        return Accumulator(spherical_moments, deltas, dtype, (len(deltas),))
