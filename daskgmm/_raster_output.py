"""Per-pixel results written as Cloud-Optimised GeoTIFFs on the input's grid.

``predict … -o labels.tif`` writes the label map to ``labels.tif`` (int16,
nodata -1: the pixels with no band observed) with the input's CRS and
transform; ``--proba`` adds ``labels.probability.tif`` (one float32 band per
component) and ``--score`` ``labels.log_density.tif`` (float64); ``anomalies
-o odd.tif`` writes the mask (uint8: 1 anomalous, 0 not, 255 nodata) and
``odd.log_density.tif``.

The blocks are computed on the cluster, one per worker thread at a time, and
written by the driver into a tiled GeoTIFF beside the target
(``labels.tif.daskgmm-partial``) as they land (memory: those blocks' results,
whatever the image's size). Every few seconds the file is closed, so that what
is written is on disk, and the blocks written since are marked done
(``labels.tif.daskgmm-progress/``): a run killed at any moment is completed by
running it again, which writes only the blocks without a mark. When every
block is written, the file is copied into the Cloud-Optimised layout (tiles,
overviews, header first) and renamed onto the target, so a reader never sees
half a file. Each file carries a ``DASKGMM_OUTPUT`` tag saying what it is of
(the model's digest, the input's shape and files); a file of this model and
the same input files is reused, one of another job is replaced only with
``overwrite``, and a file without the tag is never replaced. GeoTIFFs are
written to local paths (use a Zarr output for object stores).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dask
import numpy as np

from ._checkpoint import RefusedError, _aside, _remove_litter
from ._data import Input, resolve_path, worker_threads
from ._lock import JobLock
from ._output import _regular_blocks, block_results, output_job
from ._scheduler import active_client, blas_threads_guard
from ._stats import EStepParams, GMMParams

__all__ = ["check_geotiff_targets", "geotiff_paths", "is_geotiff_target", "write_geotiff"]

logger = logging.getLogger(__name__)

TAG = "DASKGMM_OUTPUT"
#: Beside an output being written: its tiled files, and one empty file per block
#: written and flushed (only daskgmm names files so).
PARTIAL = ".daskgmm-partial"
PROGRESS = ".daskgmm-progress"
#: dtype, nodata and overview resampling of each variable's file.
FORMATS = {
    "label": ("int16", -1, "nearest"),
    "probability": ("float32", float("nan"), "average"),
    "log_density": ("float64", float("nan"), "average"),
    "anomaly": ("uint8", 255, "nearest"),
}
TILE = 512


def is_geotiff_target(path: Any) -> bool:
    return str(path).lower().endswith((".tif", ".tiff"))


def geotiff_paths(path: str, names: tuple[str, ...]) -> dict[str, str]:
    """The file of each variable: the first at ``path``, each other at
    ``STEM.<name>.tif`` beside it."""
    stem, ext = os.path.splitext(path)
    return {name: path if i == 0 else f"{stem}.{name}{ext}" for i, name in enumerate(names)}


def _tag(path: str) -> dict[str, Any] | None:
    """The ``DASKGMM_OUTPUT`` tag of the GeoTIFF at ``path`` (None: not daskgmm's)."""
    import rasterio

    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with rasterio.open(path) as src:
            text = src.tags().get(TAG)
        found = json.loads(text) if text else None
    except (rasterio.errors.RasterioIOError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("format") == "daskgmm-output" else None


def _check_targets(paths: dict[str, str], job: dict[str, Any], files: str | None,
                   overwrite: bool) -> bool:  # fmt: skip
    """Refuse what may not be replaced; True when every file is this job's already."""
    same = True
    for path in paths.values():
        if not os.path.lexists(path):
            same = False
            continue
        tag = _tag(path)
        if tag is None:
            raise RefusedError(
                f"Output {path!r} exists and is not a daskgmm output; refusing to replace it "
                "(even with --overwrite). Choose another output path."
            )
        if tag.get("job") == job and files is not None and tag.get("files") == files:
            continue
        same = False
        if not overwrite:
            raise RefusedError(
                f"Output {path!r} was written by daskgmm for another model or other data; "
                "pass --overwrite (overwrite=True) to replace it."
            )
    return same


def check_geotiff_targets(path: str, names: tuple[str, ...], inp: Input) -> None:
    """Before any cluster starts: the input is an image, and no file at the outputs'
    paths is something daskgmm did not write (the job is compared when writing)."""
    _check_image(inp, path)
    for target in geotiff_paths(resolve_path(path), names).values():
        if os.path.lexists(target) and _tag(target) is None:
            raise RefusedError(
                f"Output {target!r} exists and is not a daskgmm output; refusing to replace it "
                "(even with --overwrite). Choose another output path."
            )


def _check_image(inp: Input, path: str) -> None:
    if "://" in path:
        raise ValueError(
            f"GeoTIFF outputs are written to local paths, not {path!r}; write a Zarr store "
            "for an object store."
        )
    if inp.sample_shape is None or len(inp.sample_shape) != 2:
        raise ValueError(
            "A GeoTIFF output needs an image input (pixels on a (y, x) grid, e.g. a GeoTIFF "
            "or an xarray image with feature_dim); write a Zarr store for other inputs."
        )


def write_geotiff(
    url: str | os.PathLike[str],
    params: GMMParams,
    inp: Input,
    names: tuple[str, ...],
    *,
    threshold: float | None = None,
    overwrite: bool = False,
    extra_attrs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    missing: bool = False,
) -> dict[str, Any]:
    """Compute per-pixel outputs and write them as COG GeoTIFFs (see the module
    docstring); the arguments are :func:`daskgmm._output.write_per_sample`'s.

    Returns
    -------
    dict
        ``blocks`` written now, ``skipped`` (0, or all when the files are this
        job's already), ``samples`` and ``files`` (variable -> path).
    """
    import rasterio

    path = os.fspath(url)
    _check_image(inp, path)
    path = resolve_path(path)
    paths = geotiff_paths(path, names)
    job = json.loads(json.dumps({**output_job(params, inp, names, threshold, missing),
                                 **(extra_attrs or {})}))  # fmt: skip
    with JobLock(path, "Output"):
        for target in paths.values():  # files a killed run was still converting
            folder, base = os.path.split(target)
            _remove_litter_files(folder, base)
        partials = {name: f"{p}{PARTIAL}" for name, p in paths.items()}
        marks = f"{path}{PROGRESS}"
        if _check_targets(paths, job, inp.files, overwrite):
            logger.info("Output %s is already complete, for this model and these files.", path)
            _discard(partials, marks)  # a run killed after its last rename left them
            n_blocks = _regular_blocks(inp.X, inp.sample_shape[1]).numblocks[0]
            return {"blocks": 0, "skipped": n_blocks, "samples": inp.X.shape[0], "files": paths}
        tag = {"format": "daskgmm-output", "job": job, "files": inp.files}
        with rasterio_env():  # GDAL's block cache: 64 MiB, not 5 % of the machine
            done, rows = _resume(partials, marks, tag)
            X = _regular_blocks(inp.X, inp.sample_shape[1], rows)
            tag["block_rows"] = int(X.chunks[0][0])
            if done is None:  # a new output: empty tiled files, then the marks' folder
                for name, partial in partials.items():
                    profile = _profile(name, inp, params.n_components)
                    with rasterio.open(partial, "w", **profile) as dst:
                        dst.update_tags(**{TAG: json.dumps(tag)})
                os.makedirs(marks, exist_ok=True)
                done = set()
            elif done:
                logger.info("Resuming %s: %d of %d blocks already written.", path, len(done),
                            X.numblocks[0])  # fmt: skip
            _write_tiled(partials, marks, done, X, params, inp, names, threshold, missing,
                         progress)  # fmt: skip
            for name, target in paths.items():
                cog = _aside_name(target, "cog")
                try:
                    _to_cog(partials[name], cog, FORMATS[name][2])
                    os.replace(cog, target)
                finally:
                    if os.path.exists(cog):
                        os.remove(cog)
            _discard(partials, marks)
    n_written = X.numblocks[0] - len(done)
    return {"blocks": n_written, "skipped": len(done), "samples": X.shape[0], "files": paths}


def _resume(
    partials: dict[str, str], marks: str, tag: dict[str, Any]
) -> tuple[set[int] | None, int | None]:
    """The blocks a killed run of this job wrote and flushed, and its block size; or
    ``(None, None)`` for a new output, after removing another job's partial files (only
    daskgmm names files so; they are never at the output's path)."""
    found = [_tag(p) for p in partials.values()]
    same = all(t is not None and {**t, "block_rows": None} == {**tag, "block_rows": None}
               for t in found) and os.path.isdir(marks)  # fmt: skip
    if same:
        done = {int(n) for n in os.listdir(marks) if n.isdigit()}
        return done, int(found[0]["block_rows"])
    if any(os.path.lexists(p) for p in partials.values()) or os.path.lexists(marks):
        logger.warning("Discarding a partial output of another job at %s.", marks)
    _discard(partials, marks)
    return None, None


def _discard(partials: dict[str, str], marks: str) -> None:
    """Remove partial files and their marks (names only daskgmm gives; a marks folder
    holding anything but block numbers is refused, never removed)."""
    if os.path.lexists(marks):
        entries = os.listdir(marks) if os.path.isdir(marks) and not os.path.islink(marks) else None
        if entries is None or not all(e.isdigit() for e in entries):
            raise RefusedError(
                f"{marks!r} holds what daskgmm did not write; refusing to remove it. Move it "
                "away, or choose another output path."
            )
    for partial in partials.values():
        if os.path.lexists(partial):
            os.remove(partial)
    if os.path.isdir(marks):
        shutil.rmtree(marks)


def rasterio_env() -> Any:
    import rasterio

    from ._raster import GDAL_CACHE_MB

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def _aside_name(path: str, kind: str) -> str:
    return f"{path}.{uuid.uuid4().hex[:8]}.{kind}"


def _remove_litter_files(folder: str, base: str) -> None:
    from fsspec.implementations.local import LocalFileSystem

    # GDAL's COG driver builds the overviews in COG.ovr.tmp (and COG.msk.ovr.tmp) beside
    # the COG it writes: a run killed then leaves them too
    _remove_litter(LocalFileSystem(), folder or ".", _aside(base, r"tmp|cog(\.msk)?(\.ovr\.tmp)?"))


def _profile(name: str, inp: Input, n_components: int) -> dict[str, Any]:
    from affine import Affine

    height, width = inp.sample_shape
    dtype, nodata, _ = FORMATS[name]
    georef = inp.georef
    return dict(
        driver="GTiff",
        height=height,
        width=width,
        count=n_components if name == "probability" else 1,
        dtype=dtype,
        nodata=nodata,
        crs=None if georef is None or georef.crs is None else georef.crs,
        transform=Affine.identity() if georef is None else Affine(*georef.transform),
        tiled=True,
        blockxsize=TILE,
        blockysize=TILE,
        compress="deflate",
        bigtiff="if_safer",
        sparse_ok=True,
    )


def _write_tiled(partials, marks, done, X, params, inp, names, threshold, missing,
                 progress) -> None:  # fmt: skip
    """Every block not in ``done`` computed on the cluster and written into the tiled
    GeoTIFFs ``partials`` (variable -> path) by the driver as it lands. Every
    :func:`flush_seconds` the files are closed (so that what is written is on disk)
    and the blocks written since are marked in ``marks``: a killed run loses at most
    the blocks since the last mark, which the next run writes again."""
    import rasterio
    from rasterio.windows import Window

    width = inp.sample_shape[1]
    # a map_blocks layer whose only dependency is the block (the parameters travel inside
    # the tasks), so that a block's read and its outputs fuse into one task: a block is
    # never held as a result of its own, nor copied to another worker
    packed = X.map_blocks(
        _pixels_packed,
        params.estep(),
        names,
        threshold,
        missing,
        drop_axis=1,
        chunks=((1,) * X.numblocks[0],),
        dtype=object,
        meta=np.empty((0,), dtype=object),
    )
    todo = [i for i in range(X.numblocks[0]) if i not in done]
    tasks = [packed.to_delayed()[i] for i in todo]
    first_rows = np.cumsum((0, *X.chunks[0]))[:-1] // width
    written: list[int] = []
    count = len(done)

    def flush(stack: contextlib.ExitStack) -> dict[str, Any]:
        stack.close()  # GDAL writes the tiles and the directory
        for i in written:
            open(os.path.join(marks, str(i)), "wb").close()
        written.clear()
        return {name: stack.enter_context(rasterio.open(p, "r+")) for name, p in partials.items()}

    with contextlib.ExitStack() as stack:
        files = flush(stack)
        last = time.monotonic()
        for k, packed_results in _as_completed(tasks, worker_threads()):
            i, results = todo[k], packed_results[0]
            top = int(first_rows[i])
            for name, values in results.items():
                rows = len(values) // width
                window = Window(0, top, width, rows)
                if values.ndim == 2:  # probability: one band per component
                    files[name].write(values.reshape(rows, width, -1).transpose(2, 0, 1),
                                      window=window)  # fmt: skip
                else:
                    files[name].write(values.reshape(rows, width), 1, window=window)
            written.append(i)
            count += 1
            if time.monotonic() - last >= flush_seconds():
                files = flush(stack)
                last = time.monotonic()
            if progress is not None:
                progress(count, X.numblocks[0])
        flush(stack)


#: Seconds between two flushes of a GeoTIFF being written, unless the Dask config
#: ``daskgmm.geotiff-flush-seconds`` says otherwise: a kill loses at most this much work.
FLUSH_SECONDS = 5.0


def flush_seconds() -> float:
    return float(dask.config.get("daskgmm.geotiff-flush-seconds", FLUSH_SECONDS))


def _pixels_block(
    block: np.ndarray, ep: EStepParams, names: tuple[str, ...], threshold: float | None,
    missing: bool,
) -> dict[str, np.ndarray]:  # fmt: skip
    """A block's outputs in their files' dtypes (nodata where no band is observed)."""
    out = block_results(block, ep, missing, names, threshold,
                        {name: FORMATS[name][0] for name in names})  # fmt: skip
    if "anomaly" in out:  # computed with the log-density, NaN where no band is observed
        out["anomaly"][np.isnan(out["log_density"])] = 255
    return out


def _pixels_packed(block: np.ndarray, ep: EStepParams, names: tuple[str, ...],
                   threshold: float | None, missing: bool) -> np.ndarray:  # fmt: skip
    """:func:`_pixels_block` as a one-element object array (a map_blocks result)."""
    out = np.empty((1,), dtype=object)
    out[0] = _pixels_block(block, ep, names, threshold, missing)
    return out


def _as_completed(tasks: list[Any], window: int) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of each delayed task as it completes, with at most
    ``window`` computed or in flight at a time (the driver's memory bound)."""
    client = active_client()
    if client is None:
        for start in range(0, len(tasks), window):
            batch = tasks[start : start + window]
            with blas_threads_guard(*batch):
                results = dask.compute(*batch)
            yield from enumerate(results, start)
        return
    from distributed import as_completed

    pending = iter(enumerate(tasks))
    index = {}
    running = as_completed()
    for _ in range(window):
        _submit(client, pending, index, running)
    for future in running:
        result = future.result()  # raises the block's error
        i = index.pop(future.key)
        future.release()
        _submit(client, pending, index, running)
        yield i, result


def _submit(client: Any, pending: Iterator[tuple[int, Any]], index: dict, running: Any) -> None:
    item = next(pending, None)
    if item is not None:
        future = client.compute(item[1])
        index[future.key] = item[0]
        running.add(future)


def _to_cog(source: str, target: str, resampling: str) -> None:
    """``source`` copied into the Cloud-Optimised layout (its tags kept)."""
    from rasterio.shutil import copy

    copy(source, target, driver="COG", compress="deflate", blocksize=TILE,
         overview_resampling=resampling, bigtiff="if_safer")  # fmt: skip
