"""Checkpoints of the EM state and model files: JSON + ``.npy``/Zarr, never pickle.

Checkpoint layout (a directory, local or any fsspec URL)::

    CKPT/LATEST                   {"format": "daskgmm-checkpoint", "state": "state-..."}
    CKPT/state-000-000012-1a2b3c4d/   one complete state (restart 0, iteration 12)
        state.json                   scalars, fingerprints, estimator parameters
        params-weights.npy ...       arrays, saved with allow_pickle=False

A save writes a whole new state directory aside, then switches the small
``LATEST`` pointer (``os.replace`` locally, a single object write on object
stores), then removes older states. A reader therefore always sees one
complete state, whatever moment a writer was killed at.

Model files are Zarr v3 groups: one array per fitted parameter, and the
metadata (format version, estimator parameters, fitted scalars) in the group
attributes, written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ._state import EMResult
from ._stats import GMMParams

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "MODEL_FORMAT_VERSION",
    "Checkpoint",
    "FitState",
    "read_model",
    "write_model",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
MODEL_FORMAT_VERSION = 1
_POINTER = "LATEST"
_PARAM_NAMES = ("weights", "means", "covariances", "precisions_cholesky")
_STATE_NAME = re.compile(r"state-\d{3,}-\d{6,}-[0-9a-f]{8}")


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be used (corrupt, foreign, too new)."""


class RefusedError(ValueError):
    """A checkpoint, model or output path that belongs to something else: daskgmm
    refuses to reuse or replace it (the command line's exit status 3)."""


@dataclass(frozen=True, eq=False)
class FitState:
    """Driver state of a fit between two passes over the data.

    Parameters
    ----------
    restarts : tuple of EMResult
        Every restart initialised so far, each with its parameters and history
        (``n_iter == 0``: just initialised).
    rng_state : tuple
        ``numpy.random.RandomState.get_state()`` after the last initialisation.
    complete : bool
        The whole fit has finished.
    """

    restarts: tuple[EMResult, ...]
    rng_state: tuple[Any, ...]
    complete: bool = False


def _fs(url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(os.fspath(url))
    return fs, path.rstrip("/")


def _json_float(x: float) -> float | str:
    return x if np.isfinite(x) else repr(float(x))


def _float(x: float | str) -> float:
    return float(x)


def _save_npy(fs: fsspec.AbstractFileSystem, path: str, array: np.ndarray) -> None:
    with fs.open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _load_npy(fs: fsspec.AbstractFileSystem, path: str, where: str) -> np.ndarray:
    if not fs.exists(path):
        raise CheckpointError(f"{where} is incomplete: {posixpath.basename(path)} is missing.")
    try:
        with fs.open(path, "rb") as f:
            return np.load(f, allow_pickle=False)
    except ValueError as err:  # pickled object arrays, truncated or foreign files
        raise CheckpointError(
            f"{where}: {posixpath.basename(path)} is not a plain numeric .npy file ({err})."
        ) from None


def _read_json(fs: fsspec.AbstractFileSystem, path: str, where: str) -> dict[str, Any]:
    if not fs.exists(path):
        raise CheckpointError(f"{where} is incomplete: {posixpath.basename(path)} is missing.")
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{where} is corrupt: {posixpath.basename(path)} is not valid JSON ({err})."
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} is corrupt: {posixpath.basename(path)} holds no object.")
    return data


def _check_version(found: Any, supported: int, what: str, where: str) -> None:
    if not isinstance(found, int) or found < 1:
        raise CheckpointError(f"{where} has an unknown {what} format version {found!r}.")
    if found > supported:
        raise CheckpointError(
            f"{where} was written by a newer daskgmm ({what} format version {found}; this "
            f"version reads up to {supported}). Upgrade daskgmm to read it."
        )


def _params_from_arrays(
    arrays: dict[str, np.ndarray], covariance_type: str, where: str
) -> GMMParams:
    """Rebuild parameters, checking every shape against the means."""
    from ._covariance import get_covariance_model

    means = arrays["means"]
    if means.ndim != 2 or not np.issubdtype(means.dtype, np.floating):
        raise CheckpointError(f"{where}: 'means' has shape {means.shape}, expected 2-D floats.")
    n_components, n_features = means.shape
    expected = {
        "weights": (n_components,),
        "means": (n_components, n_features),
        "covariances": get_covariance_model(covariance_type).covariances_shape(
            n_components, n_features
        ),
    }
    expected["precisions_cholesky"] = expected["covariances"]
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise CheckpointError(
                f"{where}: '{name}' has shape {arrays[name].shape}, expected {shape} for "
                f"{n_components} components, {n_features} features, "
                f"covariance_type={covariance_type!r}."
            )
    return GMMParams(covariance_type, *(arrays[n].astype(np.float64) for n in _PARAM_NAMES))


class Checkpoint:
    """Atomic save and load of :class:`FitState` under a directory or URL.

    Parameters
    ----------
    url : str or path-like
        Local directory or fsspec URL (``s3://bucket/run-1`` where the
        filesystem package is installed).
    """

    def __init__(self, url: str | os.PathLike[str]):
        self.url = os.fspath(url)
        self.fs, self.root = _fs(url)

    def __repr__(self) -> str:
        return f"Checkpoint({self.url!r})"

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self) -> bool:
        """Whether a checkpoint pointer is present."""
        return self.fs.exists(self._path(_POINTER))

    def check_target(self) -> None:
        """Refuse a location that holds something other than a daskgmm checkpoint.

        A checkpoint is written into an empty or new folder, or one that holds a
        checkpoint (``LATEST``); never into a user's folder or an input store.
        """
        if not self.fs.exists(self.root) or self.exists():
            return
        if not self.fs.isdir(self.root):
            raise RefusedError(f"Checkpoint {self.url!r} exists and is not a folder.")
        if self.fs.ls(self.root, detail=False):
            raise RefusedError(
                f"Checkpoint {self.url!r} is a folder that is neither empty nor a daskgmm "
                "checkpoint; refusing to write into it. Choose a new or empty folder."
            )

    # ------------------------------------------------------------------ save
    def save(self, state: FitState, meta: dict[str, Any]) -> None:
        """Write ``state`` aside, then switch the pointer to it, then drop older states.

        Parameters
        ----------
        state : FitState
        meta : dict
            JSON-serialisable fingerprints (data, estimator parameters) checked on load.
        """
        n_iter = sum(r.n_iter for r in state.restarts)
        name = f"state-{len(state.restarts):03d}-{n_iter:06d}-{uuid.uuid4().hex[:8]}"
        folder = self._path(name)
        self.fs.makedirs(folder, exist_ok=True)
        arrays = {}
        for i, restart in enumerate(state.restarts):
            arrays.update({f"r{i}-{k}": v for k, v in restart.params.to_arrays().items()})
        rng_name, rng_keys, rng_pos, rng_has_gauss, rng_gauss = state.rng_state
        arrays["rng-keys"] = np.asarray(rng_keys, dtype=np.uint32)
        for key, value in arrays.items():
            _save_npy(self.fs, posixpath.join(folder, f"{key}.npy"), value)
        document = {
            "format": "daskgmm-checkpoint",
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "meta": meta,
            "covariance_type": state.restarts[0].params.covariance_type,
            "restarts": [
                {
                    "init": r.init,
                    "n_iter": r.n_iter,
                    "lower_bound": _json_float(r.lower_bound),
                    "lower_bounds": [_json_float(x) for x in r.lower_bounds],
                    "converged": bool(r.converged),
                }
                for r in state.restarts
            ],
            "complete": state.complete,
            "rng": {
                "name": rng_name,
                "pos": int(rng_pos),
                "has_gauss": int(rng_has_gauss),
                "gauss": float(rng_gauss),
            },
            "arrays": sorted(arrays),
        }
        with self.fs.open(posixpath.join(folder, "state.json"), "wb") as f:
            f.write(json.dumps(document, indent=1).encode())
        self._switch_pointer(name)
        for old in self.fs.ls(self.root, detail=False):
            base = posixpath.basename(old.rstrip("/"))
            if _STATE_NAME.fullmatch(base) and base != name:  # only what save() wrote
                self.fs.rm(old, recursive=True)

    def _switch_pointer(self, name: str) -> None:
        pointer = json.dumps(
            {
                "format": "daskgmm-checkpoint",
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "state": name,
            }
        ).encode()
        target = self._path(_POINTER)
        if isinstance(self.fs, LocalFileSystem):
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(pointer)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:  # one object write is atomic on object stores
            self.fs.pipe_file(target, pointer)

    # ------------------------------------------------------------------ load
    def load(self) -> tuple[FitState, dict[str, Any]]:
        """The current state and the ``meta`` it was saved with.

        Raises
        ------
        ValueError
            Corrupt pointer or state, missing or pickled arrays, wrong shapes,
            a newer format version.
        """
        where = f"Checkpoint {self.url!r}"
        pointer = _read_json(self.fs, self._path(_POINTER), where)
        if pointer.get("format") != "daskgmm-checkpoint":
            raise CheckpointError(f"{where} is not a daskgmm checkpoint.")
        _check_version(
            pointer.get("format_version"), CHECKPOINT_FORMAT_VERSION, "checkpoint", where
        )
        name = pointer.get("state")
        if not isinstance(name, str) or "/" in name or not name.startswith("state-"):
            raise CheckpointError(f"{where} is corrupt: LATEST points to {name!r}.")
        folder = self._path(name)
        doc = _read_json(self.fs, posixpath.join(folder, "state.json"), where)
        _check_version(doc.get("format_version"), CHECKPOINT_FORMAT_VERSION, "checkpoint", where)
        try:
            ct = doc["covariance_type"]
            restarts = []
            for i, r in enumerate(doc["restarts"]):
                arrays = {
                    n: _load_npy(self.fs, posixpath.join(folder, f"r{i}-{n}.npy"), where)
                    for n in _PARAM_NAMES
                }
                restarts.append(
                    EMResult(
                        _params_from_arrays(arrays, ct, where),
                        int(r["n_iter"]),
                        _float(r["lower_bound"]),
                        tuple(_float(x) for x in r["lower_bounds"]),
                        bool(r["converged"]),
                        int(r["init"]),
                    )
                )
            keys = _load_npy(self.fs, posixpath.join(folder, "rng-keys.npy"), where)
            if keys.shape != (624,) or keys.dtype != np.uint32:
                raise CheckpointError(f"{where}: rng-keys.npy has shape {keys.shape}.")
            rng = doc["rng"]
            state = FitState(
                restarts=tuple(restarts),
                rng_state=(rng["name"], keys, rng["pos"], rng["has_gauss"], rng["gauss"]),
                complete=bool(doc["complete"]),
            )
            return state, doc["meta"]
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{where} is corrupt: state.json lacks {err}.") from None


def compare_meta(found: dict[str, Any], expected: dict[str, Any]) -> tuple[list[str], str | None]:
    """Whether a checkpoint belongs to this fit: the same estimator parameters and data.

    The data are the same when their content digests agree; where this run does
    not know its digest yet (dask input: the first pass computes it), when the
    files fingerprints agree; otherwise only the next pass can tell.

    Returns
    -------
    problems : list of str
        What differs (empty: reusable, perhaps pending the next pass's check).
    pending : str or None
        The content digest the data must turn out to have, where only a pass
        over them can confirm it.
    """
    problems = []
    a, b = found.get("estimator", {}), expected.get("estimator", {})
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            problems.append(f"estimator {key}: checkpoint {a.get(key)!r}, now {b.get(key)!r}")
    data, now = found.get("data", {}), expected.get("data", {})
    for key in ("shape", "dtype", "weighted"):
        if data.get(key) != now.get(key):
            problems.append(f"data {key}: checkpoint {data.get(key)!r}, now {now.get(key)!r}")
    if problems:
        return problems, None
    if data.get("content") and now.get("content"):
        if data["content"] != now["content"]:
            problems.append(f"data content: checkpoint {data['content']!r}, now {now['content']!r}")
        return problems, None
    if data.get("files") and data.get("files") == now.get("files"):
        return [], None
    if data.get("content"):
        return [], data["content"]
    return [
        "data content: not recorded (the checkpoint was saved before the first EM pass) and "
        "the input's files changed or are not files, so the data cannot be shown to be the same"
    ], None


def other_fit_message(url: str, problems: list[str]) -> str:
    """The one-line refusal of a checkpoint of another fit."""
    return (
        f"Checkpoint {url!r} belongs to another fit ("
        + "; ".join(problems)
        + "). Pass resume=False (command line: --restart) to overwrite it, resume='auto' "
        "(the command line's default) to start over whenever it is another fit's, or use "
        "another checkpoint location."
    )


# ------------------------------------------------------------------ models
def params_digest(params: GMMParams) -> str:
    """A hash of a model's covariance type and parameter values."""
    h = hashlib.sha256(params.covariance_type.encode())
    for array in params.to_arrays().values():
        h.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _model_attrs(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    """The ``daskgmm`` attributes of a daskgmm model at ``path``, or None if it is not one:
    a Zarr group whose metadata say so and which holds nothing but the model's arrays."""
    meta_path = posixpath.join(path, "zarr.json")
    try:
        if not fs.isfile(meta_path):
            return None
        with fs.open(meta_path, "rb") as f:
            doc = json.loads(f.read(1 << 20).decode("utf-8"))
        attrs = doc.get("attributes", {}).get("daskgmm")
        entries = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(attrs, dict) or attrs.get("format") != "daskgmm-model":
        return None
    if not entries <= {"zarr.json", *_PARAM_NAMES}:
        return None
    return attrs


def model_at(url: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of the daskgmm model at ``url``; None if nothing is there.

    Raises
    ------
    RefusedError
        Something other than a daskgmm model is there.
    """
    fs, path = _fs(url)
    if not fs.exists(path):
        return None
    attrs = _model_attrs(fs, path)
    if attrs is None:
        raise RefusedError(
            f"Model path {os.fspath(url)!r} exists and is not a daskgmm model; refusing to "
            "replace it (even with overwrite). Choose another path."
        )
    return attrs


def check_model_target(url: str | os.PathLike[str], params: GMMParams, overwrite: bool) -> None:
    """Refuse to write a model where something else than a daskgmm model is, and where
    another model is without ``overwrite`` (the same model may always be written again).

    Raises
    ------
    RefusedError
        Naming the path and what is there.
    """
    attrs = model_at(url)
    shown = os.fspath(url)
    if attrs is not None and attrs.get("params_digest") != params_digest(params) and not overwrite:
        raise RefusedError(
            f"Model path {shown!r} holds another daskgmm model; pass overwrite=True "
            "(command line: --overwrite) to replace it."
        )


def write_model(
    url: str | os.PathLike[str],
    params: GMMParams,
    meta: dict[str, Any],
    *,
    overwrite: bool = False,
) -> None:
    """Write a model as a Zarr v3 group; the metadata attribute is written last.

    Only a daskgmm model is ever replaced (another one only with ``overwrite``;
    see :func:`check_model_target`). Locally the group is written beside the
    target and renamed into place, so an existing model is replaced whole or
    not at all.
    """
    import zarr

    check_model_target(url, params, overwrite)
    fs, path = _fs(url)
    local = isinstance(fs, LocalFileSystem)
    target = os.path.abspath(path) if local else os.fspath(url)
    staging = f"{target}.{uuid.uuid4().hex[:8]}.tmp" if local else target
    group = zarr.open_group(staging, mode="w", zarr_format=3)
    for name, array in params.to_arrays().items():
        group.create_array(name, data=np.ascontiguousarray(array, dtype=np.float64))
    group.attrs["daskgmm"] = {
        "format": "daskgmm-model",
        "format_version": MODEL_FORMAT_VERSION,
        "covariance_type": params.covariance_type,
        "params_digest": params_digest(params),
        **meta,
    }
    if local:
        backup = None
        if os.path.exists(target):
            backup = f"{target}.{uuid.uuid4().hex[:8]}.old"
            os.replace(target, backup)
        os.replace(staging, target)
        if backup:
            shutil.rmtree(backup, ignore_errors=True)


def read_model(url: str | os.PathLike[str]) -> tuple[GMMParams, dict[str, Any]]:
    """Read a model written by :func:`write_model`; returns parameters and metadata.

    Raises
    ------
    FileNotFoundError
        Nothing at ``url``.
    ValueError
        Not a daskgmm model, a newer format version, missing arrays, wrong shapes.
    """
    import zarr

    where = f"Model file {os.fspath(url)!r}"
    fs, path = _fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{where} does not exist.")
    try:
        group = zarr.open_group(os.fspath(url), mode="r")
        meta = dict(group.attrs).get("daskgmm")
    except (ValueError, TypeError, KeyError, OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where} is not a readable Zarr group ({err}).") from None
    if not isinstance(meta, dict) or meta.get("format") != "daskgmm-model":
        raise CheckpointError(f"{where} is not a daskgmm model (no 'daskgmm' metadata).")
    _check_version(meta.get("format_version"), MODEL_FORMAT_VERSION, "model", where)
    arrays = {}
    for name in _PARAM_NAMES:
        try:
            arrays[name] = np.asarray(group[name][...])
        except (KeyError, FileNotFoundError, ValueError) as err:
            raise CheckpointError(
                f"{where} is incomplete: array {name!r} is missing ({err})."
            ) from None
    params = _params_from_arrays(arrays, meta.get("covariance_type"), where)
    return params, meta
