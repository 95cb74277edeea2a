"""Per-row results of a table written as a Parquet dataset, part by part, resumable.

Layout of an output (a directory, local or any fsspec URL)::

    OUT/_daskgmm.json        what it is of: model digest, columns, input files, parts
    OUT/part-00000.parquet   one per block of the input: its rows' id columns,
    OUT/part-00001.parquet   then label, probability_<k>, log_density (or, for
    ...                      anomalies, the flagged rows only)

``_daskgmm.json`` is written first. Each part is written aside and renamed into
place (one object write on object stores), so a part that exists is whole, and
a re-run of the same job writes only the parts that are missing; once all are
there the metadata is switched to complete. An output folder is reused only
for the same model and input files, replaced (with ``overwrite``) only when it
holds nothing but what daskgmm wrote there, and never otherwise. Each task
holds one block and its ids: memory is bounded by the block size.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask
import fsspec
import numpy as np

from ._checkpoint import RefusedError, _read_json, params_digest, replace_file
from ._data import Input, resolve_path
from ._lock import JobLock
from ._output import _compute_with_progress, sample_results
from ._stats import EStepParams, GMMParams

__all__ = ["check_table_target", "write_table"]

logger = logging.getLogger(__name__)

_META = "_daskgmm.json"
_PART = re.compile(r"part-\d{5,}\.parquet")
_ASIDE = re.compile(r"part-\d{5,}\.parquet\.[0-9a-f]{8}\.tmp|_daskgmm\.json\.[0-9a-f]{8}\.tmp")


def _part(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _ours(fs: Any, root: str) -> dict[str, Any] | None:
    """The metadata of a daskgmm table output at ``root`` holding only its own files."""
    try:
        meta = _read_json(fs, posixpath.join(root, _META), f"Output {root!r}")
    except (ValueError, OSError):
        return None
    if meta.get("format") != "daskgmm-table-output":
        return None
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
    if any(not (n == _META or _PART.fullmatch(n) or _ASIDE.fullmatch(n)) for n in names):
        return None
    return meta


def check_table_target(url: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Refuse an output path holding anything but a daskgmm table output (checked
    before a cluster starts). Returns its metadata, None if nothing is there."""
    url = resolve_path(url)
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return None
    meta = _ours(fs, root) if fs.isdir(root) else None
    if meta is None:
        raise RefusedError(
            f"Output {url!r} exists and is not a daskgmm table output; refusing to replace "
            "it even with --overwrite. Choose another output path."
        )
    return meta


def _write_part(
    block: np.ndarray,
    ids: Any,
    ep: EStepParams,
    root_url: str,
    index: int,
    names: tuple[str, ...],
    threshold: float | None,
    missing: bool,
) -> int:
    """One block's results with its ids, written aside and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = sample_results(block, ep, missing, threshold)
    table = ids if isinstance(ids, pa.Table) else pa.Table.from_pandas(ids, preserve_index=False)
    if "label" in names:
        table = table.append_column("label", pa.array(values["label"]().astype(np.int64)))
    if "probability" in names:
        proba = values["probability"]()
        for k in range(proba.shape[1]):
            table = table.append_column(f"probability_{k}", pa.array(proba[:, k]))
    if "log_density" in names:
        table = table.append_column("log_density", pa.array(values["log_density"]()))
    if threshold is not None:  # anomalies: the flagged rows only
        table = table.filter(pa.array(values["anomaly"]()))
    fs, root = fsspec.core.url_to_fs(root_url)
    final = posixpath.join(root, _part(index))
    aside = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(aside, "wb") as f:
        pq.write_table(table, f)
    fs.mv(aside, final)
    return table.num_rows


def write_table(
    url: str | os.PathLike[str],
    params: GMMParams,
    inp: Input,
    ids: Sequence[str],
    names: tuple[str, ...],
    *,
    threshold: float | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    missing: bool = False,
) -> dict[str, Any]:
    """Compute per-row results of a table and write them with its id columns as Parquet.

    Parameters
    ----------
    url : str or path-like
        The output directory (local path or fsspec URL the workers can reach).
    params : GMMParams
    inp : Input
        A table (Parquet or CSV file, dask DataFrame), from :func:`open_input`.
    ids : sequence of str
        The id columns written first in every row (checked to name each row once).
    names : tuple of str
        Among ``'label'``, ``'probability'``, ``'log_density'``.
    threshold : float, optional
        Write only the rows whose log-density is below it (anomalies).
    overwrite : bool
        Replace a daskgmm table output of another model or other data.
    extra : dict, optional
        Added to the metadata (e.g. the anomalies' quantile).
    progress : callable, optional
        Called with (parts written, parts in all).
    missing : bool, default=False
        NaN entries are missing values; a row with none observed gets label -1.

    Returns
    -------
    dict
        ``blocks`` written now, ``skipped`` (already there), ``samples`` and
        ``rows`` (written now; for anomalies the flagged ones).
    """
    if inp.table is None:
        raise ValueError("Results with id columns need a table input (Parquet, CSV, DataFrame).")
    url = resolve_path(url)
    inp.table.check_ids(ids, f"Input {inp.identity!r}")
    with JobLock(url, "Output"):
        return _write_table(
            url, params, inp, list(ids), names, threshold, overwrite, extra, progress, missing
        )


def _write_table(url, params, inp, ids, names, threshold, overwrite, extra, progress, missing):
    job = json.loads(
        json.dumps(
            {
                "model": params_digest(params),
                "ids": ids,
                "variables": list(names),
                "threshold": threshold,
                "features": list(inp.feature_names or ()),
                "shape": list(inp.X.shape),
                "blocks": [int(c) for c in inp.X.chunks[0]],
                "missing": missing,
            }
        )
    )
    fs, root = fsspec.core.url_to_fs(url)
    existing = check_table_target(url)
    if existing is not None:
        same_job = existing.get("job") == job
        if same_job and inp.files is not None and existing.get("files") == inp.files:
            pass  # resume where it stopped, or nothing to do
        elif overwrite or (same_job and not existing.get("complete")):
            if not overwrite:
                logger.warning("Output %s was partly written from other input files: anew.", url)
            fs.rm(root, recursive=True)
            existing = None
        else:
            raise RefusedError(
                f"Output {url!r} was written by daskgmm for "
                f"{'another model or other options' if not same_job else 'other data'}; "
                "pass --overwrite (overwrite=True) to replace it."
            )
    meta_path = posixpath.join(root, _META)
    if existing is None:
        fs.makedirs(root, exist_ok=True)
        meta = {"format": "daskgmm-table-output", "job": job, "files": inp.files,
                "complete": False, **(extra or {})}  # fmt: skip
        replace_file(fs, meta_path, json.dumps(meta, indent=2).encode())
    elif existing.get("complete"):
        logger.info("Output %s is already complete, for this model and these input files.", url)
        n = inp.X.numblocks[0]
        return {"blocks": 0, "skipped": n, "samples": inp.X.shape[0], "rows": 0}
    for entry in fs.ls(root, detail=False):  # parts a killed run was writing
        if _ASIDE.fullmatch(posixpath.basename(entry)):
            fs.rm(entry)
    done = {posixpath.basename(p) for p in fs.ls(root, detail=False)}
    ep = dask.delayed(params.estep())
    blocks = inp.X.to_delayed()[:, 0]
    tasks = [
        dask.delayed(_write_part)(
            block, inp.table.ids(i, ids), ep, url, i, tuple(names), threshold, missing
        )
        for i, block in enumerate(blocks)
        if _part(i) not in done
    ]
    if len(tasks) < len(blocks):
        logger.info("Resuming %s: %d of %d parts already written.", url, len(blocks) - len(tasks),
                    len(blocks))  # fmt: skip
    rows = _compute_with_progress(tasks, len(blocks) - len(tasks), len(blocks), progress)
    meta = _read_json(fs, meta_path, f"Output {url!r}")
    meta["complete"] = True
    replace_file(fs, meta_path, json.dumps(meta, indent=2).encode())
    return {
        "blocks": len(tasks),
        "skipped": len(blocks) - len(tasks),
        "samples": inp.X.shape[0],
        "rows": int(sum(rows)),
    }
