"""Rasters as remote-sensing users hold them: GeoTIFF/COG files and band stacks, NetCDF.

Opened lazily (rasterio and rioxarray: the ``geo`` extra) as a ``(y, x, band)``
image whose bands are the features:

- a GeoTIFF or Cloud-Optimised GeoTIFF (a path or a URL GDAL reads) gives its
  bands;
- several single-band files on one grid (a list of paths, a glob, or a folder
  with ``bands=[...]``) are stacked as bands, in the order given; files on
  another grid (shape, transform or CRS) are refused, naming the first;
- a NetCDF/HDF5 file is opened by xarray (its variable and feature dimension
  chosen as for a Zarr store).

Blocks are full-width strips of whole tile rows (about ``daskgmm.chunk-bytes``
each), so a block reads each of its tiles once and no tile is read by two
blocks; the file is never read whole. Each band's nodata value (from the file)
becomes NaN, which ``missing='marginalize'`` handles: a pixel with no band
observed is labelled -1.

The grid (:class:`Georef`: CRS and affine transform) travels with the input to
the outputs: a GeoTIFF label map on the input's grid, or a Zarr output with a
``spatial_ref`` variable that rioxarray reopens georeferenced.
"""

from __future__ import annotations

import glob as globbing
import logging
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Georef",
    "RasterSource",
    "band_paths",
    "georeference",
    "is_band_list",
    "is_netcdf_path",
    "is_raster_path",
    "open_geotiff",
    "open_netcdf",
]

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".he5")
_GEO_EXTRA = "pip install 'daskgmm[geo]'"


def _require_rioxarray() -> Any:
    try:
        import rioxarray
    except ImportError:
        raise ImportError(f"Reading and writing rasters needs rioxarray: {_GEO_EXTRA}.") from None
    return rioxarray


def is_raster_path(path: str) -> bool:
    """A GeoTIFF by its name (``.tif``/``.tiff``, any case), or a glob of them."""
    return str(path).lower().rstrip("/").endswith(RASTER_SUFFIXES)


def is_band_list(X: Any) -> bool:
    """A list or tuple of raster paths: single-band files to stack as bands."""
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(isinstance(p, (str, os.PathLike)) and is_raster_path(os.fspath(p)) for p in X)
    )


def is_netcdf_path(path: str) -> bool:
    return str(path).lower().rstrip("/").endswith(NETCDF_SUFFIXES)


def _expand(pattern: str) -> list[str]:
    if any(c in pattern for c in "*?[") and "://" not in pattern:
        return sorted(globbing.glob(pattern))
    return [pattern]


def band_paths(path: Any, bands: Sequence[str] | None) -> list[str]:
    """The raster files of an input: ``path`` itself (a file, a URL or a glob), or with
    ``bands`` the files (names or globs) in the folder ``path``, in the order given."""
    if isinstance(path, (list, tuple)):
        if bands:
            raise ValueError("Pass the band files either as a list or with bands=..., not both.")
        patterns = [os.fspath(p) for p in path]
    elif bands:
        base = os.fspath(path)
        join = posixpath.join if "://" in base else os.path.join
        patterns = [join(base, b) for b in bands]
    else:
        patterns = [os.fspath(path)]
    files: list[str] = []
    for pattern in patterns:
        found = _expand(pattern)
        if not found:
            raise FileNotFoundError(f"No raster file matches {pattern!r}.")
        files += found
    for name in files:
        if "://" not in name and not os.path.isfile(name):
            raise FileNotFoundError(f"Raster {name!r} does not exist.")
    if len(set(files)) != len(files):
        raise ValueError(f"The band files {files} name a file twice.")
    return files


def _float_dtype(dtypes: Sequence[Any]) -> np.dtype:
    """float32 where every band fits it exactly (8- and 16-bit integers, float32)."""
    small = all(
        np.dtype(d) == np.float32 or (np.dtype(d).kind in "iu" and np.dtype(d).itemsize <= 2)
        for d in dtypes
    )
    return np.dtype(np.float32 if small else np.float64)


def _grid(src: Any) -> tuple[Any, ...]:
    return (src.height, src.width, tuple(src.transform)[:6], src.crs)


#: GDAL's block cache in each process that reads a raster, in MiB: its default (5 % of
#: the machine's memory) kept ~1 GiB of decoded tiles in every worker, beyond any limit
#: the worker was given.
GDAL_CACHE_MB = 64


def open_geotiff(files: Sequence[str]) -> tuple[Any, RasterSource]:
    """The GeoTIFF ``files`` (one multi-band file, or single-band files stacked) as a
    lazy ``(y, x, band)`` xarray.DataArray of floats, each band's nodata as NaN, in
    full-width blocks of whole tile rows, with the files' grid (``spatial_ref``); and
    the :class:`RasterSource` its blocks read."""
    rioxarray = _require_rioxarray()
    import dask.array as da
    import rasterio
    import xarray as xr
    from dask.base import tokenize

    from ._data import target_chunk_bytes

    grids, nodata, dtypes, names, counts, tile_rows = [], [], [], [], [], 1
    for name in files:
        try:
            with rasterio.open(name) as src:
                grids.append(_grid(src))
                nodata += list(src.nodatavals)
                dtypes += list(src.dtypes)
                counts.append(src.count)
                tile_rows = max(tile_rows, src.block_shapes[0][0])
                stem = os.path.splitext(posixpath.basename(name))[0]
                names += [
                    d or (stem if src.count == 1 else f"{stem}:{i + 1}")
                    for i, d in enumerate(src.descriptions)
                ]
        except rasterio.errors.RasterioIOError as err:
            raise ValueError(f"Raster {name!r} cannot be read ({err}).") from None
    for name, grid in zip(files[1:], grids[1:], strict=True):
        if grid != grids[0]:
            raise ValueError(
                f"Band file {name!r} is on another grid than {files[0]!r}: "
                f"{_describe(grid)} against {_describe(grids[0])}."
            )
    height, width = grids[0][:2]
    dtype = _float_dtype(dtypes)
    per_row = width * len(names) * dtype.itemsize
    rows = min(height, tile_rows * max(1, target_chunk_bytes() // max(1, per_row * tile_rows)))
    marks = np.array([np.nan if v is None else v for v in nodata], dtype=np.float64)
    if np.any(~np.isnan(marks)):
        logger.info("Raster nodata per band %s: read as NaN.", marks.tolist())
    stamps = [os.stat(f).st_mtime_ns if os.path.isfile(f) else None for f in files]
    token = "daskgmm-geotiff-" + tokenize(tuple(files), stamps, rows, dtype.str)
    tops = range(0, height, rows)
    source = RasterSource(tuple(files), tuple(counts), marks, dtype.str, (height, width))
    dsk = {
        (token, i, 0, 0): (source.read, top, min(rows, height - top)) for i, top in enumerate(tops)
    }
    chunks = (tuple(min(rows, height - t) for t in tops), (width,), (len(names),))
    data = da.Array(dsk, token, chunks, dtype=dtype)
    grid = rioxarray.open_rasterio(files[0])  # coordinates and CRS only: no pixel is read
    coords = {"y": grid["y"].values, "x": grid["x"].values, "band": names}
    image = xr.DataArray(data, dims=("y", "x", "band"), coords=coords)
    return image.assign_coords(spatial_ref=grid["spatial_ref"]), source


def decimation(height: int, width: int, max_pixels: int) -> int:
    """The step (every ``step``-th row and column) that leaves at most ``max_pixels``."""
    return max(1, int(np.ceil(np.sqrt(height * width / max_pixels))))


@dataclass(frozen=True, eq=False)
class RasterSource:
    """The raster files of an input and how to read them: each file's band count,
    each band's nodata (NaN: none), the float dtype, and the (height, width) grid."""

    files: tuple[str, ...]
    counts: tuple[int, ...]
    marks: np.ndarray
    dtype: str
    shape: tuple[int, int]

    def read(self, top: int, rows: int) -> np.ndarray:
        """Rows ``top:top + rows`` of every band as a (rows, width, bands) float array,
        each band's nodata NaN: the files' tiles are decoded once, GDAL's cache small."""
        from rasterio.windows import Window

        return self._read(window=Window(0, top, self.shape[1], rows))

    def decimated(self, max_pixels: int) -> tuple[np.ndarray, int]:
        """The whole image on a grid of at most ``max_pixels`` pixels (every ``step``-th
        pixel, nearest): GDAL reads a file's overviews where it has them (a COG), so
        only the overview is read, else it decodes the tiles one at a time."""
        height, width = self.shape
        step = decimation(height, width, max_pixels)
        return self._read(out_shape=(-(-height // step), -(-width // step))), step

    def _read(self, **how: Any) -> np.ndarray:
        import rasterio

        out = None
        band = 0
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            for name, count in zip(self.files, self.counts, strict=True):
                with rasterio.open(name) as src:
                    shape = how.get("out_shape")
                    values = src.read(
                        window=how.get("window"),
                        out_shape=None if shape is None else (count, *shape),
                    )
                if out is None:
                    out = np.empty((*values.shape[1:], sum(self.counts)), dtype=self.dtype)
                for i in range(count):
                    out[:, :, band + i] = values[i]
                band += count
                del values
        for j, mark in enumerate(self.marks):
            if not np.isnan(mark):
                plane = out[:, :, j]
                plane[plane == out.dtype.type(mark)] = np.nan
        return out


def _describe(grid: tuple[Any, ...]) -> str:
    height, width, transform, crs = grid
    return f"{height}x{width} pixels, transform {transform}, CRS {crs}"


def open_netcdf(path: str) -> Any:
    """A NetCDF/HDF5 file as a lazy xarray.Dataset in the file's own chunks."""
    import xarray as xr

    try:
        return xr.open_dataset(path, chunks={})
    except (OSError, ValueError) as err:
        raise ValueError(f"Input {path!r} cannot be read as NetCDF/HDF5 ({err}).") from None


@dataclass(frozen=True)
class Georef:
    """Where an image's pixels lie: its CRS (WKT, or None) and affine transform
    (``a, b, c, d, e, f`` as rasterio's ``Affine``)."""

    crs: str | None
    transform: tuple[float, ...]

    def attach(self, ds: Any) -> Any:
        """``ds`` (an xarray Dataset or DataArray on this grid) with a ``spatial_ref``
        variable that rioxarray reads back."""
        rioxarray = _require_rioxarray()  # noqa: F841 (registers the .rio accessor)
        from affine import Affine

        if self.crs is not None:
            ds = ds.rio.write_crs(self.crs)
        ds = ds.rio.write_transform(Affine(*self.transform)).rio.write_coordinate_system()
        # an attribute, not an encoding: xarray then lists spatial_ref among each variable's
        # coordinates, so that it reopens as a coordinate and every variable has its CRS
        for var in ds.data_vars.values() if hasattr(ds, "data_vars") else [ds]:
            if "grid_mapping" in var.encoding:
                var.attrs["grid_mapping"] = var.encoding.pop("grid_mapping")
        return ds


def georeference(arr: Any, sample_dims: Sequence[str]) -> Georef | None:
    """The grid of an xarray image whose samples are its ``(y, x)`` pixels, where
    rioxarray is installed and finds one (a CRS, or regular coordinates); else None."""
    if len(sample_dims) != 2:
        return None
    try:
        import rioxarray  # noqa: F401 (registers the .rio accessor)
    except ImportError:
        return None
    try:
        rio = arr.rio
        if tuple(sample_dims) != (rio.y_dim, rio.x_dim):
            return None
        crs = rio.crs
        transform = tuple(rio.transform(recalc=crs is None))[:6]
    except Exception:  # no spatial dimensions rioxarray recognises
        return None
    if crs is None and transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        return None
    return Georef(None if crs is None else crs.to_wkt(), tuple(float(t) for t in transform))
