"""Per-sample results written block by block to Zarr, resumable after a kill.

The output store is an xarray-readable Zarr group (the input's sample
dimensions and coordinates: an image ``(band, y, x)`` gives ``(y, x)`` maps).
Its metadata is written first, with what the output is of (the model's
parameter digest, the variables, the input's shape, dtype and files
fingerprint) and the block size. An existing store is reused only when it is a
daskgmm output of the same model and input files; it is replaced only when it
is a daskgmm output (with ``overwrite`` where it is another model's or other
data's), never when it is anything else.
Each block of samples is then computed and written to its own region, and only
then marked done by an empty object under ``.daskgmm-progress/``. A re-run after
a kill rewrites exactly the blocks without a mark; when every block is done the
group is marked complete and the marks are removed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ._checkpoint import (
    RefusedError,
    _aside,
    _remove_litter,
    params_digest,
    replace_file,
    store_attrs,
)
from ._data import Input, resolve_path
from ._lock import JobLock
from ._scheduler import active_client, blas_threads_guard
from ._stats import EStepParams, GMMParams, estimate_log_prob_resp

__all__ = [
    "check_output_target",
    "log_density",
    "output_job",
    "output_names",
    "quantile_threshold",
    "sample_results",
    "write_per_sample",
]

logger = logging.getLogger(__name__)

_PROGRESS = ".daskgmm-progress"
_METADATA_TMP = _aside("zarr.json", "tmp")
#: What each output variable holds: dtype and whether it has a component axis.
VARIABLES = {
    "label": (np.int64, False),
    "probability": (np.float32, True),
    "log_density": (np.float64, False),
    "anomaly": (np.bool_, False),
}


@dataclass(frozen=True, eq=False)
class _Layout:
    sample_shape: tuple[int, ...]
    sample_dims: tuple[str, ...]
    coords: dict[str, Any]
    rows_per_slab: int  # samples in one index of the first sample dimension


def _layout(inp: Input) -> _Layout:
    if inp.sample_shape is None:
        return _Layout((inp.X.shape[0],), ("sample",), {}, 1)
    return _Layout(
        tuple(inp.sample_shape),
        tuple(inp.sample_dims),
        dict(inp.sample_coords or {}),
        math.prod(inp.sample_shape[1:]),
    )


def _regular_blocks(X: da.Array, rows_per_slab: int, rows: int | None = None) -> da.Array:
    """Row blocks of one size (a multiple of a slab), so that no two write one Zarr chunk.

    ``rows``: the block size an earlier, interrupted run of the same output used
    (its progress marks are per block), else the largest of ``X``'s blocks.
    """
    chunks = X.chunks[0]
    if rows is None:
        rows = max(chunks)
        rows = -(-rows // rows_per_slab) * rows_per_slab
    if any(c != rows for c in chunks[:-1]) or chunks[-1] > rows:
        logger.info("Rechunking the input to regular blocks of %d samples for writing.", rows)
        X = X.rechunk({0: rows})
    return X


def _output_attrs(fs: Any, root: str) -> dict[str, Any] | None:
    """The attributes of a daskgmm output at ``root`` holding only what daskgmm wrote."""
    found = store_attrs(fs, root, "daskgmm-output")
    if found is None:
        return None
    attrs, entries = found
    entries = {e for e in entries if not _METADATA_TMP.fullmatch(e)}  # see _mark_complete
    if not entries <= {"zarr.json", _PROGRESS, *attrs.get("entries", ())}:
        return None
    return attrs


def output_names(proba: bool, score: bool, anomalies: bool) -> tuple[str, ...]:
    """The variables a per-sample output holds (see :data:`VARIABLES`): the labels (and
    probabilities, log-density), or the anomaly mask and the log-density."""
    if anomalies:
        return ("anomaly", "log_density")
    return ("label",) + (("probability",) if proba else ()) + (("log_density",) if score else ())


def output_job(
    params: GMMParams, inp: Input, names: tuple[str, ...], threshold: float | None,
    missing: bool,
) -> dict[str, Any]:  # fmt: skip
    """What an output is of, JSON-comparable: an output is reused only for the same job."""
    job = {
        "model": params_digest(params),
        "variables": list(names),
        "threshold": threshold,
        "shape": list(inp.X.shape),
        "dtype": str(inp.X.dtype),
    }
    if missing:  # only then: outputs of earlier versions keep their job
        job["missing"] = "marginalize"
    return json.loads(json.dumps(job))


def sample_results(
    block: np.ndarray, ep: EStepParams, missing: bool, threshold: float | None = None
) -> dict[str, Callable[[], np.ndarray]]:
    """Every per-sample output of a block (see :data:`VARIABLES`), each computed when
    asked: ``label`` (-1 where a sample has no observed value), ``probability``
    (float32), ``log_density``, and ``anomaly`` (log-density below ``threshold``)."""
    log_norm, log_resp = estimate_log_prob_resp(block, ep, missing)
    return {
        "label": lambda: np.where(np.isnan(log_norm), -1, np.argmax(log_resp, axis=1)),
        "probability": lambda: np.exp(log_resp).astype(np.float32),
        "log_density": lambda: log_norm,
        "anomaly": lambda: log_norm < threshold,
    }


#: Samples per tile of a block's per-sample outputs: the E-step's temporaries stay a few
#: MiB whatever the block (a 512-row strip of a 12,000-pixel-wide scene is 6 million).
OUTPUT_TILE = 1 << 16


def block_results(
    block: np.ndarray,
    ep: EStepParams,
    missing: bool,
    names: tuple[str, ...],
    threshold: float | None = None,
    dtypes: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The outputs ``names`` of a block (see :func:`sample_results`), computed tile by
    tile into arrays of ``dtypes`` (default: their own)."""
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(block), OUTPUT_TILE):
        values = sample_results(block[start : start + OUTPUT_TILE], ep, missing, threshold)
        for name in names:
            value = values[name]()
            if name not in out:
                dtype = (dtypes or {}).get(name, value.dtype)
                out[name] = np.empty((len(block), *value.shape[1:]), dtype=dtype)
            out[name][start : start + len(value)] = value
    return out


def _write_block(
    block: np.ndarray,
    ep: EStepParams,
    url: str,
    index: int,
    start_slab: int,
    rows_per_slab: int,
    names: tuple[str, ...],
    threshold: float | None,
    missing: bool = False,
) -> int:
    import zarr

    values = block_results(block, ep, missing, names, threshold)
    n_slabs = len(block) // rows_per_slab
    for name in names:
        out = zarr.open_array(f"{url.rstrip('/')}/{name}", mode="r+")
        value = values[name].reshape((n_slabs, *out.shape[1:]))
        out[start_slab : start_slab + n_slabs] = value
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(posixpath.join(root, _PROGRESS, str(index)), b"")
    return len(block)


def check_output_target(url: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Refuse an output path that holds anything but a daskgmm output (checked before a
    cluster starts; whether an output of daskgmm is reused is decided when writing).

    Returns
    -------
    dict or None
        The attributes of the daskgmm output there; None if nothing is there.

    Raises
    ------
    RefusedError
    """
    url = resolve_path(url)
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return None
    attrs = _output_attrs(fs, root)
    if attrs is None:
        raise RefusedError(
            f"Output {url!r} exists and is not a daskgmm output; refusing to replace it "
            "even with --overwrite. Choose another output path."
        )
    return attrs


def write_per_sample(
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
    """Compute per-sample outputs and write them to a Zarr group, resumably.

    Parameters
    ----------
    url : str or path-like
        Output Zarr store (local path or fsspec URL reachable by the workers).
    params : GMMParams
    inp : Input
        The data, from :func:`daskgmm._data.open_input`.
    names : tuple of str
        Among ``'label'``, ``'probability'``, ``'log_density'``, ``'anomaly'``.
    threshold : float, optional
        Log-density below which a sample is an anomaly (needed for ``'anomaly'``).
    overwrite : bool
        Replace an existing output written for another model or input.
    extra_attrs : dict, optional
        Added to the group's ``daskgmm`` attribute (e.g. the threshold).
    progress : callable, optional
        Called with (blocks written, blocks in all) as blocks land.
    missing : bool, default=False
        NaN entries are missing values (the marginal densities); a sample with
        none observed gets label -1 (the label's declared ``_FillValue``) and
        NaN probabilities and log-density.

    Returns
    -------
    dict
        ``blocks`` written now, ``skipped`` (already done), ``samples``.

    Raises
    ------
    ValueError
        An existing output of another model/input without ``overwrite``.
    """
    url = resolve_path(url)  # tasks on workers resolve relative paths elsewhere
    with JobLock(url, "Output"):  # one job at a time on an output
        return _write_per_sample(
            url, params, inp, names, threshold, overwrite, extra_attrs, progress, missing
        )


def _write_per_sample(
    url, params, inp, names, threshold, overwrite, extra_attrs, progress, missing
):
    import xarray as xr

    layout = _layout(inp)
    job = output_job(params, inp, names, threshold, missing)
    fs, root = fsspec.core.url_to_fs(url)
    local = isinstance(fs, LocalFileSystem)
    if local:  # stores a killed run was still creating
        _remove_litter(fs, os.path.dirname(root), _aside(os.path.basename(root), "tmp"))
    existing = check_output_target(url)
    if existing is not None:
        same_job = existing.get("job") == job
        same_files = inp.files is not None and existing.get("files") == inp.files
        if same_job and same_files:
            pass  # complete: nothing to do; else resume where it stopped
        elif same_job and not existing.get("complete"):
            logger.warning(
                "Output %s was partly written for this model from input files that have "
                "changed since: writing it anew.",
                url,
            )
            fs.rm(root, recursive=True)
            existing = None
        elif not overwrite:
            what = (
                "another model"
                if not same_job
                else "other data (the input's files changed)"
                if inp.files is not None
                else "data that cannot be shown to be the same (the input's filesystem reports "
                "no modification times or versions)"
            )
            raise RefusedError(
                f"Output {url!r} was written by daskgmm for {what}; pass --overwrite "
                "(overwrite=True) to replace it."
            )
        else:
            fs.rm(root, recursive=True)
            existing = None
    X = _regular_blocks(
        inp.X, layout.rows_per_slab, None if existing is None else int(existing["block_rows"])
    )
    marks = posixpath.join(root, _PROGRESS)
    if existing is not None:
        _remove_litter(fs, root, _METADATA_TMP)
    if existing is not None and existing.get("complete"):
        logger.info("Output %s is already complete, for this model and these input files.", url)
        if fs.exists(marks):  # a run killed between marking it complete and tidying up
            fs.rm(marks, recursive=True)
        return {"blocks": 0, "skipped": X.numblocks[0], "samples": X.shape[0]}

    if existing is None:
        slab_chunk = X.chunks[0][0] // layout.rows_per_slab
        data_vars = {}
        for name in names:
            dtype, per_component = VARIABLES[name]
            shape = layout.sample_shape + ((params.n_components,) if per_component else ())
            dims = layout.sample_dims + (("component",) if per_component else ())
            chunks = (slab_chunk, *shape[1:])
            data_vars[name] = (dims, da.zeros(shape, chunks=chunks, dtype=dtype))
        ds = xr.Dataset(data_vars, coords=layout.coords)
        if inp.georef is not None:  # a spatial_ref variable: rioxarray reopens it on its grid
            ds = inp.georef.attach(ds)
        if missing and "label" in names:
            ds["label"].encoding["_FillValue"] = -1  # samples with no observed value
        ds.attrs["daskgmm"] = {
            "format": "daskgmm-output",
            "job": job,
            "files": inp.files,
            "block_rows": int(X.chunks[0][0]),
            "entries": sorted(str(v) for v in ds.variables),
            "complete": False,
            **(extra_attrs or {}),
        }
        # Locally the store is made aside and renamed into place: a kill leaves either
        # nothing at the path or a whole store (object stores: the path directly).
        where = f"{root}.{uuid.uuid4().hex[:8]}.tmp" if local else url
        ds.to_zarr(where, mode="w-", compute=False, zarr_format=3, consolidated=False)
        fs.makedirs(posixpath.join(where, _PROGRESS), exist_ok=True)
        if local:
            os.rename(where, root)

    fs.makedirs(marks, exist_ok=True)
    done = {posixpath.basename(p) for p in fs.ls(marks, detail=False)}
    ep = dask.delayed(params.estep())
    blocks = X.to_delayed()[:, 0]
    tasks = []
    offsets = np.cumsum((0, *X.chunks[0]))
    for i, block in enumerate(blocks):
        if str(i) in done:
            continue
        tasks.append(
            dask.delayed(_write_block)(
                block,
                ep,
                url,
                i,
                int(offsets[i] // layout.rows_per_slab),
                layout.rows_per_slab,
                tuple(names),
                threshold,
                missing,
            )
        )
    if done:
        logger.info("Resuming %s: %d of %d blocks already written.", url, len(done), len(blocks))
    _compute_with_progress(tasks, len(blocks) - len(tasks), len(blocks), progress)
    _mark_complete(fs, root)
    fs.rm(marks, recursive=True)
    return {"blocks": len(tasks), "skipped": len(blocks) - len(tasks), "samples": X.shape[0]}


def _mark_complete(fs: Any, root: str) -> None:
    """Set ``complete`` in the group's metadata in one step (Zarr rewrites ``zarr.json``
    in place, which a kill could leave half written)."""
    path = posixpath.join(root, "zarr.json")
    with fs.open(path, "rb") as f:
        doc = json.loads(f.read().decode("utf-8"))
    doc["attributes"]["daskgmm"]["complete"] = True
    replace_file(fs, path, json.dumps(doc, indent=2).encode())


def _compute_with_progress(
    tasks: list[Any], done: int, total: int, progress: Callable[[int, int], None] | None
) -> list[Any]:
    """Compute the block writes (their results, in order); on a ``distributed``
    cluster report each as it lands."""
    client = active_client()
    if progress is None or client is None:
        with blas_threads_guard(*tasks):
            results = list(dask.compute(*tasks))
        if progress is not None:
            progress(total, total)
        return results
    from distributed import as_completed

    progress(done, total)
    futures = client.compute(tasks)
    for future in as_completed(futures):
        future.result()  # raises the block's error
        done += 1
        progress(done, total)
    return [f.result() for f in futures]


def _log_density_block(block: np.ndarray, ep: EStepParams, missing: bool) -> np.ndarray:
    return estimate_log_prob_resp(block, ep, missing)[0].astype(np.float64)


def log_density(params: GMMParams, X: da.Array, missing: bool = False) -> da.Array:
    """The lazy log-density of each row of ``X`` (samples x features) under ``params``
    (NaN for a sample with no observed value where ``missing``)."""
    return X.map_blocks(
        _log_density_block,
        dask.delayed(params.estep()),
        missing,
        chunks=(X.chunks[0],),
        drop_axis=1,
        dtype=np.float64,
        meta=np.empty((0,), dtype=np.float64),
    )


def quantile_threshold(values: da.Array, q: float, bins: int = 1 << 16) -> float:
    """The ``q``-quantile of a dask array, to ``(max - min) / bins**2``, in three passes.

    Min, max and count, then a histogram, then a histogram of the bin holding
    the quantile: every pass is a distributed reduction; nothing is sorted or
    gathered on the driver. NaN (samples with no observed value) are left out.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be strictly between 0 and 1, got {q}")
    lo, hi, n = dask.compute(da.nanmin(values), da.nanmax(values), da.sum(~da.isnan(values)))
    if not n:
        raise ValueError("No sample has an observed value: there is no quantile to find.")
    lo, hi = float(lo), float(hi)
    target = q * int(n)
    below = 0.0
    for _ in range(2):
        if hi <= lo:
            return lo
        counts, edges = da.histogram(values, bins=bins, range=(lo, hi))
        counts = counts.compute()
        cum = below + np.cumsum(counts)
        b = int(np.searchsorted(cum, target))
        b = min(b, bins - 1)
        below = cum[b] - counts[b]
        lo, hi = float(edges[b]), float(edges[b + 1])
    return hi
