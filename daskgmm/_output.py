"""Per-sample results written block by block to Zarr, resumable after a kill.

The output store is an xarray-readable Zarr group (the input's sample
dimensions and coordinates: an image ``(band, y, x)`` gives ``(y, x)`` maps).
Its metadata is written first with a fingerprint of the model and the input.
Each block of samples is then computed and written to its own region, and only
then marked done by an empty object under ``.daskgmm-progress/``. A re-run after
a kill rewrites exactly the blocks without a mark; when every block is done the
group is marked complete and the marks are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import posixpath
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np

from ._data import Input
from ._reduction import blas_threads_guard
from ._stats import EStepParams, GMMParams, estimate_log_prob_resp

__all__ = ["quantile_threshold", "write_per_sample"]

logger = logging.getLogger(__name__)

_PROGRESS = ".daskgmm-progress"
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


def _regular_blocks(X: da.Array, rows_per_slab: int) -> da.Array:
    """Row blocks of one size (a multiple of a slab), so that no two write one Zarr chunk."""
    chunks = X.chunks[0]
    rows = max(chunks)
    rows = -(-rows // rows_per_slab) * rows_per_slab
    if any(c != rows for c in chunks[:-1]) or chunks[-1] > rows:
        logger.info("Rechunking the input to regular blocks of %d samples for writing.", rows)
        X = X.rechunk({0: rows})
    return X


def _params_digest(params: GMMParams) -> str:
    h = hashlib.sha256(params.covariance_type.encode())
    for array in params.to_arrays().values():
        h.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _write_block(
    block: np.ndarray,
    ep: EStepParams,
    url: str,
    index: int,
    start_slab: int,
    rows_per_slab: int,
    names: tuple[str, ...],
    threshold: float | None,
) -> int:
    import zarr

    log_norm, log_resp = estimate_log_prob_resp(block, ep)
    values = {
        "label": lambda: np.argmax(log_resp, axis=1),
        "probability": lambda: np.exp(log_resp).astype(np.float32),
        "log_density": lambda: log_norm,
        "anomaly": lambda: log_norm < threshold,
    }
    n_slabs = len(block) // rows_per_slab
    for name in names:
        out = zarr.open_array(f"{url.rstrip('/')}/{name}", mode="r+")
        value = values[name]()
        value = value.reshape((n_slabs, *out.shape[1:]))
        out[start_slab : start_slab + n_slabs] = value
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(posixpath.join(root, _PROGRESS, str(index)), b"")
    return len(block)


def write_per_sample(
    url: str | os.PathLike[str],
    params: GMMParams,
    inp: Input,
    names: tuple[str, ...],
    *,
    threshold: float | None = None,
    overwrite: bool = False,
    extra_attrs: dict[str, Any] | None = None,
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

    Returns
    -------
    dict
        ``blocks`` written now, ``skipped`` (already done), ``samples``.

    Raises
    ------
    ValueError
        An existing output of another model/input without ``overwrite``.
    """
    import xarray as xr
    import zarr

    url = os.fspath(url)
    layout = _layout(inp)
    X = _regular_blocks(inp.X, layout.rows_per_slab)
    fingerprint = {
        "model": _params_digest(params),
        "input": inp.fingerprint(),
        "variables": list(names),
        "threshold": threshold,
    }
    fingerprint = json.loads(json.dumps(fingerprint))
    fs, root = fsspec.core.url_to_fs(url)
    existing = None
    if fs.exists(root):
        try:
            existing = dict(zarr.open_group(url, mode="r").attrs).get("daskgmm")
        except Exception:  # not a Zarr group
            existing = None
        if existing is None or existing.get("fingerprint") != fingerprint:
            if existing is None and not fs.exists(posixpath.join(root, "zarr.json")):
                raise ValueError(
                    f"Output {url!r} exists and is not a Zarr store; refusing to replace it "
                    "even with --overwrite. Choose another output path."
                )
            if not overwrite:
                raise ValueError(
                    f"Output {url!r} exists and was not written by this model for this input; "
                    "pass --overwrite (overwrite=True) to replace it."
                )
            fs.rm(root, recursive=True)
            existing = None
    if existing is not None and existing.get("complete"):
        logger.info("Output %s is already complete.", url)
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
        ds.to_zarr(url, mode="w", compute=False, zarr_format=3, consolidated=False)
        group = zarr.open_group(url, mode="r+")
        group.attrs["daskgmm"] = {
            "fingerprint": fingerprint,
            "complete": False,
            **(extra_attrs or {}),
        }
        fs.makedirs(posixpath.join(root, _PROGRESS), exist_ok=True)

    done = set()
    progress = posixpath.join(root, _PROGRESS)
    if fs.exists(progress):
        done = {posixpath.basename(p) for p in fs.ls(progress, detail=False)}
    ep = dask.delayed(EStepParams.from_params(params))
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
            )
        )
    if done:
        logger.info("Resuming %s: %d of %d blocks already written.", url, len(done), len(blocks))
    with blas_threads_guard(*tasks):
        dask.compute(*tasks)
    group = zarr.open_group(url, mode="r+")
    group.attrs["daskgmm"] = {**dict(group.attrs)["daskgmm"], "complete": True}
    fs.rm(progress, recursive=True)
    return {"blocks": len(tasks), "skipped": len(blocks) - len(tasks), "samples": X.shape[0]}


def quantile_threshold(values: da.Array, q: float, bins: int = 1 << 16) -> float:
    """The ``q``-quantile of a dask array, to ``(max - min) / bins**2``, in three passes.

    Min and max, then a histogram, then a histogram of the bin holding the
    quantile: every pass is a distributed reduction; nothing is sorted or
    gathered on the driver.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be strictly between 0 and 1, got {q}")
    lo, hi = (float(v) for v in dask.compute(values.min(), values.max()))
    n = values.shape[0] if values.ndim == 1 else values.size
    target = q * n
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
