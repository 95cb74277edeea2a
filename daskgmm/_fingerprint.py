"""Fingerprints of the data a job reads: what decides whether a checkpoint or an
output may be reused.

Two kinds, both independent of chunking, core count and scheduler:

- :func:`content_digest_chunk`: a 64-bit digest of the values themselves (and
  of the sample weights), computed per block and added up modulo 2**64. Each
  row's words are mixed with keys of their column, folded into one word per
  row, mixed with the row's global index, and summed, so a block's digest
  depends only on its rows and where they sit, and the sum over any chunking
  is the same number. It rides along in a pass the fit makes anyway (the
  first EM pass), so it costs no extra read.
- :func:`files_fingerprint`: a hash of a store's file listing (relative path,
  size and modification time, or the object store's ETag/generation), read
  from metadata only. Unchanged files mean unchanged data; changed files mean
  the content must be checked (or the work redone).

Pure NumPy and fsspec; no Dask.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Digest",
    "content_digest",
    "content_digest_chunk",
    "files_fingerprint",
    "stats_and_digest_chunk",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Digest:
    """A content digest: the sum modulo 2**64 of per-row hashes, and the row count.

    Associative and commutative ``+``, so it can be tree-reduced like the statistics.
    """

    value: int
    n_rows: int

    def __add__(self, other: Digest) -> Digest:
        return Digest((self.value + other.value) & _MASK, self.n_rows + other.n_rows)

    def hex(self) -> str:
        """The digest as 16 hex digits followed by the row count, e.g. ``'1a2b...:1000'``."""
        return f"{self.value:016x}:{self.n_rows}"


def _mix(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser, in place (uint64 arithmetic wraps modulo 2**64)."""
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _row_hashes(block: NDArray[Any], column_offset: int) -> NDArray[np.uint64]:
    """One word per row from the bit patterns of its values and their columns."""
    block = np.ascontiguousarray(block)
    words = block.view(np.uint64 if block.dtype.itemsize == 8 else np.uint32)
    words = words.astype(np.uint64, copy=True)
    keys = (np.arange(column_offset, column_offset + words.shape[1], dtype=np.uint64) + 1) * _GOLDEN
    words ^= keys
    words *= _M1
    words ^= words >> np.uint64(29)
    words *= _M2
    return np.bitwise_xor.reduce(words, axis=1)


def content_digest_chunk(
    block: NDArray[np.floating],
    *,
    sample_weight: NDArray[np.floating] | None = None,
    row_offset: int = 0,
) -> Digest:
    """The content digest of one block of rows (and of their weights).

    Parameters
    ----------
    block : ndarray of shape (n_rows, n_features)
        float32 or float64: the bit patterns are hashed, so ``-0.0`` and ``0.0``
        differ, and float32 data differ from the same values in float64.
    sample_weight : ndarray of shape (n_rows,), optional
        Hashed as one more column (as float64).
    row_offset : int
        Global index of the block's first row.

    Returns
    -------
    Digest
        Whose sum over the blocks of any chunking of the same data is the same.
    """
    n_rows, n_features = block.shape
    rows = _row_hashes(block, 0)
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64).reshape(n_rows, 1)
        rows ^= _row_hashes(w, n_features) * _M1
    rows += (np.arange(row_offset, row_offset + n_rows, dtype=np.uint64) + 1) * _GOLDEN
    return Digest(int(_mix(rows).sum(dtype=np.uint64)), n_rows)


def content_digest(
    X: NDArray[np.floating], *, sample_weight: NDArray[np.floating] | None = None
) -> Digest:
    """:func:`content_digest_chunk` of a whole in-memory array, a slice of rows at a time
    (the hashing's temporaries stay small; the sum is the same by construction)."""
    rows = max(1, (1 << 22) // max(1, X.shape[1]))  # 32 MiB of uint64 words per slice
    total = Digest(0, 0)
    for start in range(0, X.shape[0], rows):
        w = None if sample_weight is None else sample_weight[start : start + rows]
        total += content_digest_chunk(X[start : start + rows], sample_weight=w, row_offset=start)
    return total


@dataclass(frozen=True, eq=False)
class _WithDigest:
    """A block's statistics and its content digest, added pairwise."""

    stats: Any
    digest: Digest

    def __add__(self, other: _WithDigest) -> _WithDigest:
        return _WithDigest(self.stats + other.stats, self.digest + other.digest)


def stats_and_digest_chunk(
    chunk_fn: Callable[..., Any],
    block: np.ndarray,
    constants: Any,
    *,
    sample_weight: np.ndarray | None = None,
    row_offset: int = 0,
) -> _WithDigest:
    """A model's statistics of a block and the digest of its content, from one read."""
    stats = chunk_fn(block, constants, sample_weight=sample_weight, row_offset=row_offset)
    digest = content_digest_chunk(block, sample_weight=sample_weight, row_offset=row_offset)
    return _WithDigest(stats, digest)


_VERSION_KEYS = ("ETag", "etag", "generation", "md5Hash", "version_id", "VersionId")
# "created" last: objects are immutable on object stores (and fsspec's memory
# filesystem), so a rewrite is a new object with a new creation time
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "mtime_ns", "created")


def _local_listing(root: str) -> list[tuple[str, int, int]] | None:
    """(relative path, size, mtime_ns) of every regular file under ``root`` (or ``root``)."""
    st = os.lstat(root)
    if stat.S_ISREG(st.st_mode):
        return [("", st.st_size, st.st_mtime_ns)]
    out = []
    for top, dirs, files in os.walk(root):  # does not follow links to folders
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            out.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    return out


def files_fingerprint(url: str | os.PathLike[str]) -> str | None:
    """A hash of the file listing of a store or file: no data are read.

    Local paths: every regular file's relative path, size and modification time
    in nanoseconds. Other filesystems (fsspec): path, size and the entry's
    ETag / generation / checksum, else its modification time.

    Returns
    -------
    str or None
        None where the filesystem reports neither a version nor a time for some
        file: then unchanged files cannot be told from rewritten ones.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(os.fspath(url))
    h = hashlib.sha256()
    if isinstance(fs, LocalFileSystem):
        for rel, size, mtime in _local_listing(path):
            h.update(f"{rel}\0{size}\0{mtime}\n".encode())
        return h.hexdigest()[:32]
    infos = fs.find(path, withdirs=False, detail=True) if fs.isdir(path) else {path: fs.info(path)}
    for name in sorted(infos):
        info = infos[name]
        stamp = next((info[k] for k in _VERSION_KEYS + _TIME_KEYS if info.get(k)), None)
        if stamp is None:
            return None
        rel = name[len(path) :].lstrip("/")
        h.update(f"{rel}\0{info.get('size')}\0{stamp}\n".encode())
    return h.hexdigest()[:32]
