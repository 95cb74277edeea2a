"""Inputs -> a validated dask array chunked along samples only.

Accepted: NumPy arrays (and array-likes), dask arrays, ``zarr.Array``, Zarr
store paths or fsspec URLs (an array, or an xarray dataset with ``variable``),
``.npy`` files, and ``xarray.DataArray``/``Dataset`` whose dimensions other than
``feature_dim`` are stacked into samples (an image ``(band, y, x)`` with
``feature_dim='band'`` has ``y * x`` samples). Shape and dtype problems are reported before any
computation; NaN/inf in a dask array are found in the first pass over the data
by the per-block kernels (no extra pass only for validation). NumPy input gets
scikit-learn's own ``check_array`` (same messages as ``GaussianMixture``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import posixpath
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_array

from ._fingerprint import files_fingerprint
from ._raster import (
    band_paths,
    georeference,
    is_band_list,
    is_netcdf_path,
    is_raster_path,
    open_geotiff,
    open_netcdf,
)
from ._scheduler import active_client, blas_threads_guard
from ._tables import is_dataframe, is_glob, is_table_path, open_table

__all__ = [
    "Input",
    "as_dask_array",
    "check_sample_weight",
    "from_numpy",
    "open_input",
    "resolve_path",
    "row_chunks",
    "unwrap_xarray",
]

logger = logging.getLogger(__name__)

#: Target size of one block of samples, in bytes (in-memory and Zarr inputs);
#: each worker thread holds a few of them at a time.
TARGET_CHUNK_BYTES = 64 * 2**20
_ESTIMATOR = "GaussianMixture"


def target_chunk_bytes() -> int:
    """Block size to aim for: Dask config ``daskgmm.chunk-bytes`` (environment variable
    ``DASK_DASKGMM__CHUNK_BYTES``), else :data:`TARGET_CHUNK_BYTES`."""
    value = dask.config.get("daskgmm.chunk-bytes", None)
    return int(dask.utils.parse_bytes(value)) if value else TARGET_CHUNK_BYTES


def _parallel_slots() -> tuple[int, int]:
    """The threads a pass runs on, and the fewest blocks to give each of them.

    On the local threaded scheduler, two blocks per core: a thread that is
    done early takes the next block. On a ``distributed`` cluster (the active
    client's workers, once they have joined), one block per worker thread:
    persisted blocks stay on the worker that holds them, so a second block
    balances nothing and costs one more task per pass, about 1-1.5 ms of the
    scheduler's CPU on the cores the workers compute on
    (see benchmarks/README.md, scheduling measurements).
    """
    client = active_client()
    if client is not None:
        threads = sum(client.nthreads().values())
        if threads:
            return threads, 1
    return os.cpu_count() or 1, 2


def worker_threads() -> int:
    """The threads a pass runs on: the active client's workers', else this machine's cores."""
    return _parallel_slots()[0]


#: Stepwise updates an epoch aims at (an update takes one block per worker
#: thread): more make more progress per read, but each costs a round trip to
#: the scheduler and smaller blocks a task each (see benchmarks/README.md,
#: stepwise EM).
STEPWISE_UPDATES = 64

#: Bounds of a stepwise block: rows enough to be worth a task, bytes few
#: enough for many updates per read.
STEPWISE_MIN_ROWS = 1024
STEPWISE_MAX_BYTES = 8 * 2**20


def stepwise_row_chunks(n_samples: int, n_features: int, itemsize: int) -> int:
    """Rows per block for a stepwise fit: :data:`STEPWISE_UPDATES` updates per
    epoch, within :data:`STEPWISE_MIN_ROWS` rows and :data:`STEPWISE_MAX_BYTES`."""
    wanted = math.ceil(n_samples / (STEPWISE_UPDATES * worker_threads()))
    most = max(1, STEPWISE_MAX_BYTES // max(1, n_features * itemsize))
    return int(max(1, min(most, max(STEPWISE_MIN_ROWS, wanted), n_samples)))


def reblocked(inp: Input, rows: int, **options: Any) -> Input:
    """``inp`` re-opened from its store or file in blocks of about ``rows`` rows
    (whole store chunks: a block never reads a chunk another block reads too);
    in-memory and dask inputs keep their blocks. ``options`` as :func:`open_input`."""
    if inp.source is None or inp.summary is not None:  # a CSV file: no other blocks
        return inp
    if inp.feature_names is not None:
        options = {**options, "columns": list(inp.feature_names)}
    nbytes = rows * math.prod(inp.X.shape[1:]) * inp.X.dtype.itemsize
    with dask.config.set({"daskgmm.chunk-bytes": max(1, nbytes)}):
        X = open_input(inp.source, **options).X
    out = dataclasses.replace(inp, X=X)
    if "files" in vars(inp):  # listed already: a store of many chunks takes seconds
        vars(out)["files"] = inp.files
    return out


def row_chunks(n_samples: int, n_features: int, itemsize: int) -> int:
    """Rows per block for in-memory data: at most ~64 MB, at least one block per thread.

    The blocks are near-equal and a whole number per thread, so that the
    threads finish a pass together: 10^6 x 64 float64 was 7 blocks of 131072
    rows and one of 82496 (one thread then ran 524288 rows, the other
    475712), and is now 8 of 125000. How many blocks per thread at least: see
    :func:`_parallel_slots`.
    """
    threads, per_thread = _parallel_slots()
    cap = max(1, target_chunk_bytes() // max(1, n_features * itemsize))
    n_blocks = max(math.ceil(n_samples / cap), per_thread * threads)
    n_blocks = math.ceil(n_blocks / threads) * threads
    return int(max(1, min(cap, max(math.ceil(n_samples / n_blocks), 4096))))


def unwrap_xarray(X: Any) -> Any:
    """The data of a 2-D ``xarray.DataArray`` (samples, features); other inputs unchanged."""
    if hasattr(X, "dims") and hasattr(X, "data") and hasattr(X, "coords"):
        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2-D DataArray (samples, features), got dims {tuple(X.dims)}. "
                "Stack the sample dimensions first, e.g. "
                "da.stack(sample=('y', 'x')).transpose('sample', 'band')."
            )
        return X.data
    return X


def _check_dask_array(X: da.Array, min_samples: int, estimator: str = _ESTIMATOR) -> da.Array:
    if X.ndim == 1:
        raise ValueError(
            "Expected 2D array, got 1D array instead. Reshape your data either using "
            "array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
            "if it contains a single sample."
        )
    if X.ndim != 2:
        raise ValueError(
            f"Found array with dim {X.ndim}, while dim <= 2 is required by {estimator}."
        )
    if any(math.isnan(s) for s in X.shape):
        raise ValueError(
            "X has unknown chunk sizes (NaN in its shape); call X.compute_chunk_sizes() first."
        )
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    if X.dtype.kind in "biu":
        X = X.astype(np.float64)
    elif X.dtype.kind == "f" and X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    elif X.dtype.kind != "f":
        raise TypeError(
            f"X must hold numbers; got a dask array of dtype {X.dtype}. "
            "Convert it with X.astype('float64')."
        )
    n_samples, n_features = X.shape
    if n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={X.shape}) while a minimum of "
            f"{min_samples} is required by {estimator}."
        )
    if n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
            f"required by {estimator}."
        )
    if X.numblocks[1] > 1:
        logger.info(
            "X has %d chunks along the features; rechunking to one (X.rechunk({1: -1})).",
            X.numblocks[1],
        )
        X = X.rechunk({1: -1})
    return X


def as_dask_array(X: Any, *, min_samples: int = 1, estimator: str = _ESTIMATOR) -> da.Array:
    """Validate ``X`` and return it as a dask array of shape (n_samples, n_features).

    Parameters
    ----------
    X : array-like, dask.array.Array or xarray.DataArray of shape (n_samples, n_features)
    min_samples : int, default=1
        Fewer samples is an error.
    estimator : str, default='GaussianMixture'
        The estimator the error messages name (scikit-learn's wording).

    Returns
    -------
    dask.array.Array
        float32 or float64, one chunk along the features.

    Raises
    ------
    ValueError
        Wrong number of dimensions, too few samples, complex data, NaN/inf in
        NumPy input (dask input: at the first pass over the data).
    TypeError
        Non-numeric data.
    """
    X = unwrap_xarray(X)
    if isinstance(X, da.Array):
        return _check_dask_array(X, min_samples, estimator)
    X = check_array(
        X,
        dtype=[np.float64, np.float32],
        ensure_min_samples=min_samples,
        estimator=estimator,
    )
    return from_numpy(X)


def from_numpy(X: np.ndarray, rows: int | None = None) -> da.Array:
    """A dask array of row-slice views of an already validated 2-D ``X``: no copy.

    ``dask.array.from_array`` copies its input first (against later mutation),
    which doubles the memory of a fit on in-memory data. The name is a hash of
    the content, as ``from_array``'s, so the same data give the same
    fingerprint.
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    rows = rows or row_chunks(X.shape[0], X.shape[1], X.dtype.itemsize)
    chunks = da.core.normalize_chunks((rows, X.shape[1]), X.shape, dtype=X.dtype)
    name = f"array-{tokenize(X, chunks)}"
    starts = np.cumsum((0, *chunks[0]))
    dsk = {(name, i, 0): X[starts[i] : starts[i + 1]] for i in range(len(chunks[0]))}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks, meta=X[:0])


def check_sample_weight(sample_weight: Any, X: da.Array) -> da.Array | None:
    """Validate ``sample_weight`` against ``X``; returns a float64 dask array or None.

    NumPy weights are checked now; the values of dask weights when first read.
    """
    if sample_weight is None:
        return None
    n_samples = X.shape[0]
    if isinstance(sample_weight, da.Array):
        if sample_weight.ndim != 1 or sample_weight.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight.shape == {sample_weight.shape}, expected ({n_samples},)!"
            )
        return sample_weight.astype(np.float64).map_blocks(_check_weight_block, dtype=np.float64)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n_samples},)!")
    _check_weight_block(w)
    return da.from_array(w, chunks=(X.chunks[0],))


def _check_weight_block(w: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(w)):
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if np.any(w < 0):
        raise ValueError("Negative values in data passed to `sample_weight`")
    return w


@dataclass(frozen=True, eq=False)
class Input:
    """A validated input and what is needed to give per-sample results its shape back.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
    identity : str
        Names the source (store URL, file, or the dask graph's name), for messages.
    sample_dims : tuple of str or None
        For xarray inputs: the dimensions stacked into samples, in order.
    sample_coords : dict or None
        Their coordinates.
    sample_shape : tuple of int or None
    lazy : bool
        False for in-memory xarray inputs, whose per-sample results are computed.
    source : str or None
        The resolved path or URL the input was opened from (None for in-memory
        and dask inputs).
    nodata : float or None
        The value turned into NaN (missing), given or declared by the input.
    feature_names : tuple of str or None
        For tables: the feature columns, in order.
    table : daskgmm._tables.TableSource or None
        For tables: where each block's rows come from (to read their ids).
    summary : daskgmm._summary.Summary or None
        The rows and per-feature moments of ``X``, where opening it made a pass
        (tables whose partitions do not know their lengths): the fit uses them.
    georef : daskgmm._raster.Georef or None
        For images whose samples are ``(y, x)`` pixels on a known grid: its CRS
        and transform, which the outputs keep.
    band_names : tuple of str or None
        For xarray inputs: the feature dimension's coordinate (band names), for
        pictures.
    raster : daskgmm._raster.RasterSource or None
        For GeoTIFF inputs: the files, to read an overview for pictures.
    """

    X: da.Array
    identity: str
    sample_dims: tuple[str, ...] | None = None
    sample_coords: dict[str, Any] | None = None
    sample_shape: tuple[int, ...] | None = None
    lazy: bool = True
    source: str | None = None
    nodata: float | None = None
    feature_names: tuple[str, ...] | None = None
    table: Any = None
    summary: Any = None
    georef: Any = None
    band_names: tuple[str, ...] | None = None
    raster: Any = None

    @functools.cached_property
    def files(self) -> str | None:
        """:func:`daskgmm._fingerprint.files_fingerprint` of :attr:`source`; listed on
        first use only (a store of a million chunks takes seconds to list), which is
        where a checkpoint or an output is to be reused, not a plain predict."""
        return None if self.source is None else files_fingerprint(self.source)

    def fingerprint(self) -> dict[str, Any]:
        """Shape, dtype and files fingerprint: nothing that depends on the chunking,
        the number of cores or the scheduler (the content digest is added by the
        pass that reads the data)."""
        return {"shape": list(self.X.shape), "dtype": str(self.X.dtype), "files": self.files}

    def restore(self, result: Any, extra_dim: str | None = None, name: str | None = None) -> Any:
        """Give a per-sample result (dask or NumPy) the input's sample dimensions back."""
        if not self.lazy and isinstance(result, da.Array):
            with blas_threads_guard(result):
                result = result.compute()
        if self.sample_dims is None:
            return result
        import xarray as xr

        shape = tuple(self.sample_shape or ())
        dims = self.sample_dims
        if extra_dim is not None:
            shape += (result.shape[1],)
            dims += (extra_dim,)
        data = result.reshape(shape) if len(shape) != result.ndim else result
        out = xr.DataArray(data, dims=dims, coords=self.sample_coords, name=name)
        return out if self.georef is None else self.georef.attach(out)


def bounded_sample(X: da.Array, n: int, seed: int, max_blocks: int = 16) -> np.ndarray:
    """About ``n`` rows of a dask array, drawn from at most ``max_blocks`` of its blocks
    (chosen at random, their rows drawn inside the tasks): a picture's sample never
    reads the whole data nor brings more than ``n`` rows to the driver."""
    rng = np.random.RandomState(seed)
    n_blocks = X.numblocks[0]
    chosen = np.sort(rng.choice(n_blocks, size=min(max_blocks, n_blocks), replace=False))
    per_block = -(-n // len(chosen))
    parts = [
        dask.delayed(_rows_of_block)(X.blocks[int(i)], per_block, int(rng.randint(2**31 - 1)))
        for i in chosen
    ]
    return np.concatenate(dask.compute(*parts)).astype(np.float64)


def _rows_of_block(block: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(block) <= n:
        return np.asarray(block)
    rows = np.random.RandomState(seed).choice(len(block), size=n, replace=False)
    return np.asarray(block[np.sort(rows)])


def _is_path(X: Any) -> bool:
    return isinstance(X, (str, os.PathLike))


def resolve_path(url: str | os.PathLike[str]) -> str:
    """A local path made absolute (on the client, before any task sees it); URLs unchanged."""
    url = os.fspath(url)
    return url if "://" in url else os.path.abspath(os.path.expanduser(url))


def _zarr_row_chunks(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int) -> int:
    """Rows per dask block: a multiple of the store's row chunks, ~64 MB."""
    per_row = max(1, math.prod(shape[1:])) * itemsize
    step = max(1, chunks[0])
    multiple = max(1, target_chunk_bytes() // max(1, per_row * step))
    return int(min(shape[0], step * multiple)) or 1


def _from_zarr_array(z: Any) -> da.Array:
    rows = _zarr_row_chunks(tuple(z.shape), tuple(z.chunks), z.dtype.itemsize)
    chunks = (rows, *z.shape[1:])
    if len(z.chunks) > 1 and tuple(z.chunks[1:]) != tuple(z.shape[1:]):
        logger.info(
            "The store is chunked along the features %s; every block reads whole rows.",
            tuple(z.chunks[1:]),
        )
    return da.from_zarr(z, chunks=chunks)


def _open_path(path: Any, variable: str | None) -> tuple[Any, str]:
    """Open a Zarr store (array or xarray dataset) or a .npy file, lazily."""
    import fsspec
    import zarr

    url = os.fspath(path)
    # Local paths are resolved here, on the client: a task on a worker would
    # resolve a relative path against the worker's own working directory.
    target = resolve_path(url)
    fs, fs_path = fsspec.core.url_to_fs(target)
    if not fs.exists(fs_path):
        raise FileNotFoundError(f"Input {url!r} does not exist.")
    identity = target
    if fs.isdir(fs_path) and not _is_zarr_store(fs, fs_path):
        return _open_directory(fs, fs_path, url, variable)
    if url.endswith(".npy"):
        from fsspec.implementations.local import LocalFileSystem

        try:
            if isinstance(fs, LocalFileSystem):
                arr = np.load(fs_path, mmap_mode="r", allow_pickle=False)
            else:
                with fs.open(fs_path, "rb") as f:
                    arr = np.load(f, allow_pickle=False)
        except ValueError as err:
            raise ValueError(
                f"Input {url!r} is not a plain numeric .npy file; daskgmm never unpickles "
                f"objects ({err})."
            ) from None
        rows = row_chunks(arr.shape[0], max(1, math.prod(arr.shape[1:])), arr.dtype.itemsize)
        return da.from_array(arr, chunks=(rows, *arr.shape[1:])), f"npy:{identity}"
    try:
        node = zarr.open(target, mode="r")
    except Exception as err:  # zarr raises several types for "not a store"
        raise ValueError(
            f"Input {url!r} is neither a Zarr store, a .npy file nor a table (Parquet, CSV) "
            f"({err})."
        ) from None
    if isinstance(node, zarr.Array):
        if variable is not None:
            raise ValueError(f"Input {url!r} is a single Zarr array; do not pass variable.")
        return _ZarrArray(_from_zarr_array(node), declared_nodata(node)), f"zarr:{identity}"
    import xarray as xr

    names = sorted(node.array_keys())
    try:
        with warnings.catch_warnings():  # stores without consolidated metadata are fine
            warnings.filterwarnings("ignore", message=".*consolidated metadata.*")
            ds = xr.open_zarr(target, chunks={})
    except Exception:  # a plain group without xarray metadata
        ds = None
    if variable is None:
        variable = _only_variable(list(ds.data_vars) if ds is not None else names, url)
    if ds is not None:
        if variable not in ds.data_vars:
            raise ValueError(
                f"Input {url!r} has no variable {variable!r}; it has {sorted(ds.data_vars)}."
            )
        return _rechunk_store_variable(ds[variable]), f"zarr:{identity}#{variable}"
    if variable not in names:
        raise ValueError(f"Input {url!r} has no array {variable!r}; it has {names}.")
    z = node[variable]
    return _ZarrArray(_from_zarr_array(z), declared_nodata(z)), f"zarr:{identity}#{variable}"


def _resolved(X: Any) -> Any:
    return [resolve_path(p) for p in X] if isinstance(X, (list, tuple)) else resolve_path(X)


def _only_variable(names: Sequence[Any], url: str) -> str:
    """An input's one variable (several: the user must pick)."""
    if len(names) != 1:
        raise ValueError(
            f"Input {url!r} holds several variables {list(names)}; pick one with variable=... "
            "(command line: --variable)."
        )
    return str(names[0])


def _table_path(url: Any) -> bool:
    """A Parquet or CSV file, or a directory of Parquet files, that exists."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(resolve_path(url))
    return (is_glob(path) or fs.exists(path)) and is_table_path(fs, path)


def _is_zarr_store(fs: Any, path: str) -> bool:
    return any(fs.exists(posixpath.join(path, m)) for m in ("zarr.json", ".zgroup", ".zarray"))


def _open_directory(fs: Any, path: str, url: str, variable: str | None) -> tuple[Any, str]:
    """A directory of ``.npy`` files and/or Zarr arrays, concatenated along samples."""
    entries = sorted(
        p.rstrip("/")
        for p in fs.ls(path, detail=False)
        if p.rstrip("/").endswith((".npy", ".zarr"))
    )
    if not entries:
        raise ValueError(f"Input directory {url!r} holds no .npy files or .zarr stores.")
    prefix = url.split("://", 1)[0] + "://" if "://" in url else ""
    parts = [_unwrap_zarr(_open_path(prefix + e, variable)[0])[0] for e in entries]
    widths = {p.shape[1:] for p in parts}
    if len(widths) != 1 or any(not isinstance(p, da.Array) or p.ndim != 2 for p in parts):
        raise ValueError(
            f"The files in {url!r} must all be 2-D with the same number of features; "
            f"got shapes {[p.shape for p in parts]}."
        )
    names = ",".join(posixpath.basename(e) for e in entries)
    identity = url if "://" in url else os.path.abspath(url)
    return da.concatenate(parts, axis=0), f"dir:{identity}[{names}]"


def _rechunk_store_variable(arr: Any) -> Any:
    """The store's own chunks for an xarray variable."""
    enc = arr.encoding.get("chunks") or arr.encoding.get("preferred_chunks")
    if isinstance(enc, dict):
        enc = tuple(enc.get(d, n) for d, n in zip(arr.dims, arr.shape))
    store_chunks = tuple(enc) if enc else tuple(arr.shape)
    return arr.chunk(dict(zip(arr.dims, store_chunks)))


#: Attributes by which an input declares the value of its missing entries (xarray
#: decodes ``_FillValue``/``missing_value`` itself when it opens a store; rasters
#: opened by rioxarray carry ``nodata``).
NODATA_ATTRIBUTES = ("nodata", "_FillValue", "missing_value")


def declared_nodata(X: Any) -> float | None:
    """The missing-value marker an input declares, if any (see :data:`NODATA_ATTRIBUTES`).

    A raw Zarr array's own ``fill_value`` counts when it is neither 0 (the
    default of floating arrays, which real data hold) nor NaN (already missing).
    """
    attrs = dict(getattr(X, "attrs", {}) or {})
    encoding = dict(getattr(X, "encoding", None) or {})  # where xarray keeps decoded ones
    for name in NODATA_ATTRIBUTES:
        value = attrs.get(name, encoding.get(name))
        if value is not None:
            return _nodata_value(value, name)
    fill = getattr(X, "fill_value", None)
    if fill is not None and hasattr(X, "chunks") and not hasattr(X, "dims"):
        value = _nodata_value(fill, "fill_value")
        if value is not None and value != 0.0:
            return value
    return None


def _nodata_value(value: Any, name: str) -> float | None:
    try:
        value = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"The input's {name} attribute {value!r} is not a number.") from None
    return None if math.isnan(value) else value


@dataclasses.dataclass(frozen=True)
class _ZarrArray:
    """A raw Zarr array opened lazily, with the missing-value marker it declares."""

    X: da.Array
    nodata: float | None


def _unwrap_zarr(X: Any) -> tuple[Any, float | None]:
    return (X.X, X.nodata) if isinstance(X, _ZarrArray) else (X, None)


def _mark_nodata(X: da.Array, nodata: float) -> da.Array:
    return X.map_blocks(_nodata_block, nodata, dtype=X.dtype)


def _nodata_block(block: np.ndarray, nodata: float) -> np.ndarray:
    hit = block == block.dtype.type(nodata)
    return np.where(hit, np.nan, block) if hit.any() else block


def open_input(
    X: Any,
    *,
    variable: str | None = None,
    feature_dim: str | None = None,
    min_samples: int = 1,
    nodata: float | None = None,
    estimator: str = _ESTIMATOR,
    columns: Sequence[str] | None = None,
    bands: Sequence[str] | None = None,
) -> Input:
    """Open and validate any supported input as samples x features.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, xarray object, str/path-like, or Input
        See the module docstring. An :class:`Input` is returned as it is.
    variable : str, optional
        Variable of an xarray dataset or array of a Zarr group.
    feature_dim : str, optional
        The feature dimension of an xarray input; every other dimension is
        stacked into samples. Default: the last dimension of a 2-D array.
    min_samples : int, default=1
    nodata : float, optional
        Entries equal to it become NaN (missing). Default: the value the input
        declares (:func:`declared_nodata`), if any.
    estimator : str, default='GaussianMixture'
        The estimator the error messages name.
    columns : sequence of str, optional
        For tables (dask DataFrames, Parquet and CSV files): the feature
        columns; default every numeric column (see :mod:`daskgmm._tables`).
    bands : sequence of str, optional
        For a folder of single-band rasters: the files (names or globs) to stack
        as bands, in order (see :mod:`daskgmm._raster`). A list of raster paths
        as ``X`` does the same.

    Returns
    -------
    Input

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    ValueError, TypeError
        See :func:`as_dask_array`, plus an unknown variable or dimension.
    """
    if isinstance(X, Input):  # opened already (the command line's preflight)
        _check_dask_array(X.X, min_samples, estimator)  # validated then; its sample count now
        return X
    identity = source = declared = names = table = summary = raster = None
    if is_band_list(X) or (_is_path(X) and (bands or is_raster_path(os.fspath(X)))):
        files = band_paths(_resolved(X), None if is_band_list(X) else bands)  # a list: its files
        identity = "raster:" + ",".join(files)
        # one local file is fingerprinted (a glob's match is named in the identity);
        # URLs GDAL reads and band stacks: the content digest tells
        source = files[0] if len(files) == 1 and "://" not in files[0] else None
        X, raster = open_geotiff(files)
        if feature_dim is None:
            feature_dim = "band"
    elif _is_path(X) and is_netcdf_path(os.fspath(X)):
        source = resolve_path(X)
        if not os.path.exists(source) and "://" not in source:
            raise FileNotFoundError(f"Input {os.fspath(X)!r} does not exist.")
        X = open_netcdf(source)
        variable = variable or _only_variable(list(X.data_vars), os.fspath(source))
        identity = f"netcdf:{source}#{variable}"
    elif _is_path(X) and _table_path(X):
        import fsspec

        source = resolve_path(X)
        fs, fs_path = fsspec.core.url_to_fs(source)
        X, names, identity, table, summary = open_table(None, columns, fs, fs_path)
        if is_glob(fs_path):  # no one folder to fingerprint: the content digest tells
            source = None
    elif is_dataframe(X):
        X, names, identity, table, summary = open_table(X, columns)
    elif _is_path(X):
        path = resolve_path(X)
        X, identity = _open_path(X, variable)
        X, declared = _unwrap_zarr(X)
        source = path
    else:
        try:
            import zarr

            if isinstance(X, zarr.Array):
                X, declared = _from_zarr_array(X), declared_nodata(X)
        except ImportError:  # pragma: no cover - zarr is a dependency
            pass
    if hasattr(X, "data_vars"):  # xarray.Dataset
        if variable is None or variable not in X.data_vars:
            raise ValueError(
                f"Pick a variable of the dataset with variable=...; it has {sorted(X.data_vars)}."
            )
        X = X[variable]
    if nodata is None:
        nodata = declared if declared is not None else declared_nodata(X)
        if nodata is not None:
            logger.info("The input declares %r for missing values: read as NaN.", nodata)
    if hasattr(X, "dims") and hasattr(X, "coords"):
        inp = dataclasses.replace(
            _open_dataarray(X, feature_dim, min_samples, identity, estimator), source=source
        )
        inp = dataclasses.replace(inp, georef=georeference(X, inp.sample_dims or ()), raster=raster)
    else:
        if feature_dim is not None:
            raise ValueError(
                f"feature_dim={feature_dim!r} needs an xarray input with named dimensions."
            )
        Xd = as_dask_array(X, min_samples=min_samples, estimator=estimator)
        names = None if names is None else tuple(names)
        inp = Input(
            Xd,
            identity or f"dask:{Xd.name}",
            source=source,
            feature_names=names,
            table=table,
            summary=summary,
        )
    if nodata is None:
        return inp
    return dataclasses.replace(
        inp, X=_mark_nodata(inp.X, float(nodata)), nodata=float(nodata), summary=None
    )


def _open_dataarray(
    arr: Any,
    feature_dim: str | None,
    min_samples: int,
    identity: str | None,
    estimator: str = _ESTIMATOR,
) -> Input:
    dims = tuple(arr.dims)
    if feature_dim is None:
        if arr.ndim != 2:
            raise ValueError(
                f"The input has dimensions {dims}; name the feature dimension with "
                "feature_dim=... (command line: --feature-dim), e.g. feature_dim='band'."
            )
        feature_dim = dims[1]
    if feature_dim not in dims:
        raise ValueError(f"feature_dim={feature_dim!r} is not a dimension of the input {dims}.")
    sample_dims = tuple(d for d in dims if d != feature_dim)
    if not sample_dims:
        raise ValueError(f"The input has only the feature dimension {feature_dim!r}.")
    arr = arr.transpose(*sample_dims, feature_dim)
    sample_shape = tuple(arr.sizes[d] for d in sample_dims)
    n_samples = math.prod(sample_shape)
    data = arr.data
    lazy = isinstance(data, da.Array)
    if lazy:
        if len(sample_dims) > 1 and any(len(c) > 1 for c in data.chunks[1:]):
            logger.info(
                "Rechunking dims %s to whole slices so that they stack into samples.",
                sample_dims[1:],
            )
            data = data.rechunk({i: -1 for i in range(1, data.ndim)})
        data = data.reshape(n_samples, arr.sizes[feature_dim])
        if identity is None:
            identity = f"dask:{data.name}"
    else:
        data = np.asarray(data).reshape(n_samples, arr.sizes[feature_dim])
    coords = {d: arr.coords[d] for d in sample_dims if d in arr.coords}
    Xd = as_dask_array(data, min_samples=min_samples, estimator=estimator)
    bands = None
    if feature_dim in arr.coords and arr.coords[feature_dim].ndim == 1:
        bands = tuple(str(b) for b in arr.coords[feature_dim].values)
    return Input(
        Xd, identity or f"dask:{Xd.name}", sample_dims, coords, sample_shape, lazy,
        band_names=bands,
    )  # fmt: skip
