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

import contextlib
import dataclasses
import errno
import hashlib
import io
import itertools
import json
import logging
import math
import os
import posixpath
import re
import shutil
import stat
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ._state import EMResult
from ._stats import GMMParams
from ._stepwise import ARRAY_NAMES as RUNNING_NAMES
from ._transform import ARRAY_NAMES as TRANSFORM_NAMES

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
_POINTER_TMP = re.compile(r"LATEST\.[0-9a-f]{8}\.tmp")
_RUNNING = "running-"  # prefix of the stepwise statistics' arrays
_TRANSFORM = "transform-"  # prefix of the standardisation/PCA arrays


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
    stepwise : daskgmm._state.Stepwise, optional
        A stepwise fit's schedule (with the block order's seed).
    position : daskgmm._state.StepPosition, optional
        Where the stepwise fit is (epochs beyond the schedule's: batch EM).
    """

    restarts: tuple[EMResult, ...]
    rng_state: tuple[Any, ...]
    complete: bool = False
    stepwise: Any = None
    position: Any = None


def _fs(url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(os.fspath(url))
    return fs, path.rstrip("/")


def _json_float(x: float) -> float | str:
    return x if np.isfinite(x) else repr(float(x))


def _float(x: float | str) -> float:
    return float(x)


def _write_file(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path``; locally also flushed to the disk (fsync), so that a
    pointer switched after it never points at data a power loss could lose."""
    if isinstance(fs, LocalFileSystem):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    else:  # one object write: complete or absent
        fs.pipe_file(path, data)


def replace_file(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace ``path``'s content in one step: a reader (or a re-run after a kill) sees
    the old or the new content, never part of it. Locally written aside, flushed to
    disk, renamed over ``path`` and the folder flushed; on object stores one write."""
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _write_file(fs, tmp, data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(path: str) -> None:
    """Make a folder's entries (new files, renames) durable (Linux/macOS; no-op elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    """fsync every file and folder under a local ``root`` (a model written by Zarr)."""
    for top, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(top)


def _save_npy(fs: fsspec.AbstractFileSystem, path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, order="C"), allow_pickle=False)  # 0-d stays 0-d
    _write_file(fs, path, buffer.getvalue())


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system or filesystem cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _remove_litter(fs: fsspec.AbstractFileSystem, folder: str, pattern: re.Pattern) -> None:
    """Remove what a killed run of daskgmm left in ``folder``: entries whose names only
    daskgmm gives (``pattern``, with a random 8-hex part)."""
    try:
        entries = fs.ls(folder, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if pattern.fullmatch(posixpath.basename(entry.rstrip("/"))):
            fs.rm(entry, recursive=True)


#: Largest array a checkpoint may hold (K=1024, D=512 full is 2 GiB): a header that
#: declares more is refused before anything is allocated.
MAX_ARRAY_BYTES = 2 << 30


def _load_npy(fs: fsspec.AbstractFileSystem, path: str, where: str) -> np.ndarray:
    size = _check_plain_file(fs, path, where, MAX_ARRAY_BYTES + 4096)
    try:
        with fs.open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            nbytes = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or f.tell() + nbytes != size:
                raise ValueError(
                    f"header says {shape} {dtype} ({nbytes} bytes), the file has {size} bytes"
                )
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except ValueError as err:  # pickled object arrays, truncated or foreign files
        raise CheckpointError(
            f"{where}: {posixpath.basename(path)} is not a plain numeric .npy file ({err})."
        ) from None


def _read_json(fs: fsspec.AbstractFileSystem, path: str, where: str) -> dict[str, Any]:
    _check_plain_file(fs, path, where, 1 << 24)
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
        names = (posixpath.basename(e.rstrip("/")) for e in self.fs.ls(self.root, detail=False))
        # a run killed before its first pointer switch leaves states only: its own
        if any(not (_STATE_NAME.fullmatch(n) or _POINTER_TMP.fullmatch(n)) for n in names):
            raise RefusedError(
                f"Checkpoint {self.url!r} is a folder that is neither empty nor a daskgmm "
                "checkpoint; refusing to write into it. Choose a new or empty folder."
            )

    def clean(self) -> None:
        """Remove what killed saves left: states ``LATEST`` does not point to, pointer
        temporaries. Call only while holding the checkpoint's lock (another job's
        state in the making would look the same)."""
        if not self.fs.isdir(self.root):
            return
        keep = None
        if self.exists():
            try:
                keep = _read_json(self.fs, self._path(_POINTER), "").get("state")
            except CheckpointError:
                return  # a damaged pointer is left for the user to see
        self._remove_states_but(keep)

    def _remove_states_but(self, keep: str | None) -> None:
        """Remove every state but ``keep``, and pointer temporaries: only names that
        :meth:`save` gives, never anything else in the folder."""
        for entry in self.fs.ls(self.root, detail=False):
            base = posixpath.basename(entry.rstrip("/"))
            if (_STATE_NAME.fullmatch(base) and base != keep) or _POINTER_TMP.fullmatch(base):
                self.fs.rm(entry, recursive=True)

    # ------------------------------------------------------------------ save
    def save(self, state: FitState, meta: dict[str, Any], model: Any = None) -> None:
        """Write ``state`` aside, then switch the pointer to it, then drop older states.

        Parameters
        ----------
        state : FitState
        meta : dict
            JSON-serialisable fingerprints (data, estimator parameters) checked on load.
        model : MixtureModel, optional
            Turns the parameters into named arrays (default: Gaussian mixture
            parameters, which have ``to_arrays``).
        """
        n_iter = sum(r.n_iter for r in state.restarts)
        name = f"state-{len(state.restarts):03d}-{n_iter:06d}-{uuid.uuid4().hex[:8]}"
        folder = self._path(name)
        try:
            self._write_state(folder, state, meta, model)
        except BaseException:  # a full disk, a kill: the state LATEST points to stays
            with contextlib.suppress(Exception):
                self.fs.rm(folder, recursive=True)
            raise
        self._switch_pointer(name)
        self._remove_states_but(name)  # older states, litter

    def _write_state(self, folder: str, state: FitState, meta: dict[str, Any], model: Any) -> None:
        self.fs.makedirs(folder, exist_ok=True)
        arrays = {}
        for i, restart in enumerate(state.restarts):
            named = model.to_arrays(restart.params) if model else restart.params.to_arrays()
            arrays.update({f"r{i}-{k}": v for k, v in named.items()})
            if restart.running is not None:
                named = restart.running.to_arrays()
                arrays.update({f"r{i}-{_RUNNING}{k}": v for k, v in named.items()})
        rng_name, rng_keys, rng_pos, rng_has_gauss, rng_gauss = state.rng_state
        arrays["rng-keys"] = np.asarray(rng_keys, dtype=np.uint32)
        for key, value in arrays.items():
            _save_npy(self.fs, posixpath.join(folder, f"{key}.npy"), value)
        document = {
            "format": "daskgmm-checkpoint",
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "meta": meta,
            "covariance_type": model.kind if model else state.restarts[0].params.covariance_type,
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
            "stepwise": None if state.stepwise is None else dataclasses.asdict(state.stepwise),
            "position": None if state.position is None else dataclasses.asdict(state.position),
            "rng": {
                "name": rng_name,
                "pos": int(rng_pos),
                "has_gauss": int(rng_has_gauss),
                "gauss": float(rng_gauss),
            },
            "arrays": sorted(arrays),
        }
        _write_file(self.fs, posixpath.join(folder, "state.json"), json.dumps(document).encode())
        if isinstance(self.fs, LocalFileSystem):
            _fsync_dir(folder)
            _fsync_dir(self.root)

    def _switch_pointer(self, name: str) -> None:
        pointer = json.dumps(
            {
                "format": "daskgmm-checkpoint",
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "state": name,
            }
        ).encode()
        replace_file(self.fs, self._path(_POINTER), pointer)

    # ------------------------------------------------------------------ load
    def load(self, model: Any = None) -> tuple[FitState, dict[str, Any]]:
        """The current state and the ``meta`` it was saved with.

        ``model`` (a :class:`daskgmm._em.MixtureModel`) rebuilds and validates the
        parameters; default: Gaussian mixture parameters of the saved covariance type.

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
            if not doc["restarts"]:
                raise CheckpointError(f"{where} is corrupt: state.json lists no restart.")
            restarts = []
            if model is not None and ct != model.kind:
                raise CheckpointError(f"{where} holds {ct!r} parameters, not {model.kind!r}.")
            for i, r in enumerate(doc["restarts"]):
                prefix = f"r{i}-"
                names = [a[len(prefix) :] for a in doc["arrays"] if a.startswith(prefix)]
                arrays = {
                    n: _load_npy(self.fs, posixpath.join(folder, f"{prefix}{n}.npy"), where)
                    for n in names or _PARAM_NAMES
                }
                running = {
                    n[len(_RUNNING) :]: arrays.pop(n)
                    for n in list(arrays)
                    if n.startswith(_RUNNING)
                }
                if model is None:
                    if set(arrays) != set(_PARAM_NAMES):
                        raise CheckpointError(f"{where} is corrupt: restart {i} lacks arrays.")
                    params = check_params(_params_from_arrays(arrays, ct, where), where)
                else:
                    params = model.from_arrays(arrays, where)
                restarts.append(
                    EMResult(
                        params,
                        int(r["n_iter"]),
                        _float(r["lower_bound"]),
                        tuple(_float(x) for x in r["lower_bounds"]),
                        bool(r["converged"]),
                        int(r["init"]),
                        _running(running, params, where) if running else None,
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
                stepwise=_stepwise_schedule(doc.get("stepwise"), where),
                position=_step_position(doc.get("position"), where),
            )
            return state, doc["meta"]
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{where} is corrupt: state.json lacks {err}.") from None


def _running(arrays: dict[str, np.ndarray], params: Any, where: str) -> Any:
    from ._stepwise import Running

    shape = (params.means.shape[0], params.means.shape[1])
    try:
        return Running.from_arrays(arrays, params.covariance_type, shape, where)
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def _stepwise_schedule(doc: Any, where: str) -> Any:
    from ._state import Stepwise

    if doc is None:
        return None
    try:
        schedule = Stepwise(
            int(doc["epochs"]),
            int(doc["blocks_per_step"]),
            float(doc["learning_decay"]),
            float(doc["learning_offset"]),
            int(doc["seed"]),
        )
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where} is corrupt: its stepwise schedule is incomplete.") from None
    if (
        schedule.epochs < 0
        or schedule.blocks_per_step < 1
        or not 0.5 < schedule.learning_decay <= 1
    ):
        raise CheckpointError(f"{where} is corrupt: its stepwise schedule is invalid.")
    return schedule


def _step_position(doc: Any, where: str) -> Any:
    from ._state import StepPosition

    if doc is None:
        return None
    try:
        digest = doc.get("digest")
        position = StepPosition(
            int(doc["epoch"]),
            int(doc["block"]),
            None if digest is None else (int(digest[0]), int(digest[1])),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise CheckpointError(f"{where} is corrupt: its stepwise position is incomplete.") from None
    if position.epoch < 0 or position.block < 0:
        raise CheckpointError(f"{where} is corrupt: its stepwise position is negative.")
    return position


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


def store_attrs(
    fs: fsspec.AbstractFileSystem, root: str, fmt: str
) -> tuple[dict[str, Any], set[str]] | None:
    """The ``daskgmm`` attributes of a Zarr group whose metadata say it is a ``fmt``
    (a model, an output) and the names of its entries; None for anything else."""
    try:
        with fs.open(posixpath.join(root, "zarr.json"), "rb") as f:
            doc = json.loads(f.read(1 << 24).decode("utf-8"))
        attrs = doc.get("attributes", {}).get("daskgmm")
        entries = {posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(attrs, dict) or attrs.get("format") != fmt:
        return None
    return attrs, entries


#: The arrays of a variational Bayesian model file (see daskgmm._bayesian.array_shapes).
_BAYES_NAMES = (
    "weight_concentration",
    "mean_precision",
    "means",
    "degrees_of_freedom",
    "covariances",
    "precisions_cholesky",
    "mean_prior",
    "covariance_prior",
    "prior_scalars",
)


def _model_attrs(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    """The attributes of a daskgmm model at ``path`` holding nothing but its arrays."""
    found = store_attrs(fs, path, "daskgmm-model")
    extra = {_RUNNING + n for n in RUNNING_NAMES} | {_TRANSFORM + n for n in TRANSFORM_NAMES}
    if found is None or not found[1] <= {"zarr.json", *_PARAM_NAMES, *_BAYES_NAMES, *extra}:
        return None
    return found[0]


def _model_shapes(meta: dict, where: str) -> dict[str, tuple[int, ...]]:
    """The shape of every array a model file's metadata imply (its kind, components,
    features, covariance type), never the file's own say."""
    from ._covariance import COVARIANCE_MODELS, get_covariance_model

    params, fitted = meta.get("params"), meta.get("fitted")
    ct = meta.get("covariance_type")
    if not isinstance(params, dict) or not isinstance(fitted, dict) or ct not in COVARIANCE_MODELS:
        raise CheckpointError(f"{where} has incomplete metadata (params, fitted, covariance_type).")
    K, D = params.get("n_components"), fitted.get("n_features_in_")
    for name, value in (("n_components", K), ("n_features_in_", D)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{where}: metadata {name}={value!r} is not a positive integer.")
    if params.get("covariance_type", ct) != ct:
        raise CheckpointError(f"{where}: metadata covariance types differ.")
    kind = meta.get("model", "gaussian")
    running = {}
    transform = meta.get("transform")
    if transform is not None:  # standardisation/PCA: the mixture lives in its space
        P = transform.get("n_features_out") if isinstance(transform, dict) else None
        if not isinstance(P, int) or isinstance(P, bool) or not 1 <= P <= D:
            raise CheckpointError(f"{where}: metadata transform {transform!r} is invalid.")
        running = {_TRANSFORM + "mean": (D,), _TRANSFORM + "scale": (D,)}
        if transform.get("pca"):
            running[_TRANSFORM + "components"] = (P, D)
            running[_TRANSFORM + "explained_variance_ratio"] = (P,)
        D = P
    cov = get_covariance_model(ct).covariances_shape(K, D)
    if meta.get("running"):  # the stepwise statistics partial_fit goes on from
        shapes = {"nk": (K,), "means": (K, D), "covariances": cov}
        running.update({_RUNNING + n: shapes.get(n, ()) for n in RUNNING_NAMES})
    if kind == "bayesian":
        from ._bayesian import PRIOR_TYPES, array_shapes

        prior_type = params.get("weight_concentration_prior_type")
        if prior_type not in PRIOR_TYPES:
            raise CheckpointError(f"{where}: metadata prior type {prior_type!r} is unknown.")
        return {**array_shapes((K, D), ct, prior_type), **running}
    if kind != "gaussian":
        raise CheckpointError(f"{where}: metadata model {kind!r} is unknown.")
    shapes = {"weights": (K,), "means": (K, D), "covariances": cov, "precisions_cholesky": cov}
    return {**shapes, **running}


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
    running: Any = None,
    transform: Any = None,
) -> None:
    """Write a model as a Zarr v3 group; the metadata attribute is written last.

    ``running`` (stepwise statistics, :class:`daskgmm._stepwise.Running`) adds
    its arrays, so that a loaded model's ``partial_fit`` goes on from them.

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
    if local:  # what killed saves of this model left beside it
        _remove_litter(fs, os.path.dirname(target), _aside(os.path.basename(target)))
    staging = f"{target}.{uuid.uuid4().hex[:8]}.tmp" if local else target
    try:
        group = zarr.open_group(staging, mode="w", zarr_format=3)
        for name, array in params.to_arrays().items():
            group.create_array(name, data=np.ascontiguousarray(array, dtype=np.float64))
        if running is not None:
            for name, array in running.to_arrays().items():
                group.create_array(_RUNNING + name, data=np.array(array))  # 0-d stays 0-d
        if transform is not None:
            for name, array in transform.to_arrays().items():
                group.create_array(_TRANSFORM + name, data=np.asarray(array, np.float64))
        group.attrs["daskgmm"] = {
            "format": "daskgmm-model",
            "format_version": MODEL_FORMAT_VERSION,
            "covariance_type": params.covariance_type,
            "params_digest": params_digest(params),
            **meta,
            "running": running is not None,
            **(
                {}
                if transform is None
                else {
                    "transform": {
                        "n_features_out": int(transform.n_features_out),
                        "pca": transform.components is not None,
                    }
                }
            ),
        }
        if local:
            _fsync_tree(staging)
    except BaseException:
        if local:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if not local:
        return
    if os.path.exists(target) and _exchange(staging, target):
        shutil.rmtree(staging)  # now the old model: the switch was one atomic step
    else:
        backup = None
        if os.path.exists(target):  # no atomic exchange here: a short window, cleaned next time
            backup = f"{target}.{uuid.uuid4().hex[:8]}.old"
            os.replace(target, backup)
        os.replace(staging, target)
        if backup:
            shutil.rmtree(backup, ignore_errors=True)
    _fsync_dir(os.path.dirname(target))


def _aside(base: str, suffixes: str = "tmp|old") -> re.Pattern:
    """Names daskgmm gives what it writes beside ``base`` (a random 8-hex part)."""
    return re.compile(re.escape(base) + r"\.[0-9a-f]{8}\.(" + suffixes + ")")


def _check_plain_file(
    fs: fsspec.AbstractFileSystem, path: str, where: str, max_bytes: int, name: str = ""
) -> int:
    """A regular file (no link, FIFO or device) of at most ``max_bytes``; returns its size."""
    name = name or posixpath.basename(path)
    if isinstance(fs, LocalFileSystem):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise CheckpointError(f"{where} is incomplete: {name} is missing.") from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{where}: {name} is not a regular file (a link or device).")
        size = st.st_size
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise CheckpointError(f"{where} is incomplete: {name} is missing.") from None
        if info.get("type") != "file":
            raise CheckpointError(f"{where}: {name} is not a file.")
        size = int(info.get("size") or 0)
    if size > max_bytes:
        raise CheckpointError(f"{where}: {name} has {size} bytes, more than {max_bytes} expected.")
    return size


def check_params(params: GMMParams, where: str) -> GMMParams:
    """Refuse parameters that are not a valid mixture: non-finite values, weights that are
    negative or do not sum to 1, non-positive variances or Cholesky diagonals."""
    for name, array in params.to_arrays().items():
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{where}: '{name}' holds NaN or infinite values.")
    w = params.weights
    if np.any(w < 0) or abs(float(w.sum()) - 1.0) > 1e-6:
        raise CheckpointError(
            f"{where}: 'weights' must be non-negative and sum to 1, got sum {float(w.sum())!r}."
        )
    ct = params.covariance_type
    for name in ("covariances", "precisions_cholesky"):
        a = getattr(params, name)
        diag = np.diagonal(a, axis1=-2, axis2=-1) if ct in ("full", "tied") else a
        if np.any(diag <= 0):
            raise CheckpointError(
                f"{where}: '{name}' is not positive-definite (a diagonal entry <= 0)."
            )
    return params


def _check_model_arrays(fs: fsspec.AbstractFileSystem, root: str, meta: dict, where: str) -> None:
    """Every parameter array has the shape the metadata imply and all of its chunks (no
    fill-value chunk stands in for a lost one), as plain files inside the store: checked
    from metadata before a byte of data is read."""
    shapes = _model_shapes(meta, where)
    for name, shape in shapes.items():
        folder = posixpath.join(root, name)
        if not fs.exists(posixpath.join(folder, "zarr.json")):
            raise CheckpointError(f"{where} is incomplete: array {name!r} is missing.")
        doc = _read_json(fs, posixpath.join(folder, "zarr.json"), where)
        try:
            found = tuple(doc["shape"])
            chunk = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
            sep = doc.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")
        except (KeyError, TypeError):
            raise CheckpointError(f"{where}: array {name!r} has corrupt metadata.") from None
        if found != shape:
            K, D = meta["params"]["n_components"], meta["fitted"]["n_features_in_"]
            raise CheckpointError(
                f"{where}: '{name}' has shape {found}, expected {shape} for the metadata's "
                f"{K} components, {D} features, covariance_type={meta['covariance_type']!r}."
            )
        raw = 8 * math.prod(chunk) + 4096  # a compressed chunk is never much larger
        grid = [range(-(-n // max(c, 1))) for n, c in zip(shape, chunk)]
        for index in itertools.product(*grid):
            key = "c" + (sep + sep.join(map(str, index)) if index else "")
            _check_plain_file(
                fs, posixpath.join(folder, *key.split("/")), where, raw, f"{name}/{key}"
            )


def read_model(url: str | os.PathLike[str]) -> tuple[GMMParams, dict[str, Any], dict[str, Any]]:
    """Read a model written by :func:`write_model`; returns parameters, metadata and
    what else it holds: ``running`` (stepwise statistics) and ``transform``
    (standardisation/PCA), None where it has none.

    Nothing is trusted: the metadata must describe the arrays (shapes, every chunk
    present as a plain file of plausible size) before any is read, and the values
    must be a valid mixture (:func:`check_params`).

    Raises
    ------
    FileNotFoundError
        Nothing at ``url``.
    ValueError
        Not a daskgmm model, a newer format version, missing or damaged arrays,
        shapes other than the metadata's, invalid values: one line naming the file.
    """
    import zarr

    where = f"Model file {os.fspath(url)!r}"
    fs, path = _fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{where} does not exist.")
    try:
        doc = _read_json(fs, posixpath.join(path, "zarr.json"), where)
    except CheckpointError as err:
        raise CheckpointError(f"{where} is not a readable Zarr group ({err}).") from None
    meta = (
        doc.get("attributes", {}).get("daskgmm")
        if isinstance(doc.get("attributes"), dict)
        else None
    )
    if not isinstance(meta, dict) or meta.get("format") != "daskgmm-model":
        raise CheckpointError(f"{where} is not a daskgmm model (no 'daskgmm' metadata).")
    _check_version(meta.get("format_version"), MODEL_FORMAT_VERSION, "model", where)
    _check_model_arrays(fs, path, meta, where)
    arrays = {}
    try:
        group = zarr.open_group(os.fspath(url), mode="r")
        for name in _model_shapes(meta, where):
            arrays[name] = np.asarray(group[name][...])
    except Exception as err:  # codecs raise many types for damaged chunks
        raise CheckpointError(
            f"{where}: array {name!r} cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})."
        ) from None
    running = {n[len(_RUNNING) :]: arrays.pop(n) for n in list(arrays) if n.startswith(_RUNNING)}
    transform = {
        n[len(_TRANSFORM) :]: arrays.pop(n) for n in list(arrays) if n.startswith(_TRANSFORM)
    }
    if meta.get("model") == "bayesian":
        from ._bayesian import BayesParams

        try:
            prior_type = meta["params"]["weight_concentration_prior_type"]
            params = BayesParams.from_arrays(arrays, meta["covariance_type"], prior_type, where)
        except ValueError as err:
            raise CheckpointError(str(err)) from None
    else:
        params = check_params(
            _params_from_arrays(arrays, meta.get("covariance_type"), where), where
        )
    extras: dict[str, Any] = {"running": _running(running, params, where) if running else None}
    extras["transform"] = None
    if transform:
        from ._transform import Transform

        try:
            extras["transform"] = Transform.from_arrays(
                transform, int(meta["fitted"]["n_features_in_"]), where
            )
        except ValueError as err:
            raise CheckpointError(str(err)) from None
    return params, meta, extras
