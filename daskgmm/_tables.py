"""Tables as samples x features: pandas and dask DataFrames, Parquet and CSV files.

The columns are checked from the schema before a row is read: present, and
numeric (booleans count; strings, dates and categories do not). Parquet files
are read by row groups, whose row counts their footers give, so the blocks'
lengths cost no pass over the data; row groups are grouped into blocks of
about ``daskgmm.chunk-bytes`` (tiny files and row groups share a block) and
never split. CSV files and dask DataFrames do not know their partitions'
lengths: opening them makes one pass that gives each partition's rows together
with the data's per-feature moments (a :class:`~daskgmm._summary.Summary`),
which a fit then uses in place of a pass of its own (k-means||'s first round,
the standardisation), so the lengths cost no pass beyond what the fit needs
anyway. Partitions are then grouped into blocks of about the same size as
Parquet's (never split, no shuffle).
"""

from __future__ import annotations

import functools
import logging
import operator
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

__all__ = [
    "TableSource",
    "is_dataframe",
    "is_glob",
    "is_table_path",
    "open_table",
    "table_columns",
]

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")


@dataclass(frozen=True, eq=False)
class TableSource:
    """Where a table's blocks come from, to read other columns of the same rows
    (ids for outputs): Parquet row groups per block, or a dask DataFrame's
    partitions (``groups``: the partitions of each block, in order)."""

    fs: Any = None
    blocks: tuple[tuple[tuple[str, int, int], ...], ...] = ()
    frame: Any = None
    schema: tuple[tuple[str, Any], ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()

    def check_ids(self, columns: Sequence[str], where: str) -> None:
        """The id columns exist, and together name each row once (read on the driver:
        the id columns only; once per source and columns)."""
        key = tuple(columns)
        checked = self.__dict__.setdefault("_checked", set())
        if key in checked:
            return
        self._check_ids(list(columns), where)
        checked.add(key)

    def _check_ids(self, columns: list[str], where: str) -> None:
        names = [name for name, _ in self.schema]
        absent = [c for c in columns if c not in names]
        if absent:
            raise ValueError(f"{where} has no id column {absent[0]!r}; its columns are {names}.")
        ids = self._all_ids(columns)
        n_rows = len(ids)
        distinct = len(ids.drop_duplicates())  # hashing: 0.3 s for 1e7 ids (a sort took 9)
        if distinct != n_rows:
            duplicated = ids[ids.duplicated()].iloc[0].tolist()
            raise ValueError(
                f"{where}: the id column(s) {list(columns)} repeat {n_rows - distinct} of "
                f"{n_rows} rows (first repeated: {duplicated}); ids must name each row once."
            )

    def _all_ids(self, columns: list[str]) -> Any:
        if self.frame is not None:
            return self.frame[columns].compute(scheduler="sync").reset_index(drop=True)
        import pandas as pd

        parts = [_read_rows(self.fs, block, tuple(columns)).to_pandas() for block in self.blocks]
        return pd.concat(parts, ignore_index=True)

    def ids(self, index: int, columns: Sequence[str]) -> Any:
        """Block ``index``'s id columns, delayed (a pyarrow Table or a pandas DataFrame)."""
        import dask

        if self.frame is not None:
            parts = self.frame[list(columns)].to_delayed()
            return dask.delayed(_concat_frames)([parts[i] for i in self.groups[index]])
        return dask.delayed(_read_rows)(self.fs, self.blocks[index], tuple(columns))


def _concat_frames(frames: list[Any]) -> Any:
    import pandas as pd

    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def is_dataframe(X: Any) -> bool:
    """A pandas or dask DataFrame (without importing either)."""
    module = type(X).__module__
    return type(X).__name__ == "DataFrame" and module.split(".")[0] in ("pandas", "dask")


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def is_table_path(fs: Any, path: str) -> bool:
    """A Parquet or CSV file, a directory holding Parquet files (and no Zarr store), or a
    glob of Parquet files."""
    if is_glob(path):
        return bool(_parquet_files(fs, path))
    lowered = path.lower().rstrip("/")
    if lowered.endswith(PARQUET_SUFFIXES + CSV_SUFFIXES):
        return True
    if not fs.isdir(path) or fs.exists(posixpath.join(path, "zarr.json")):
        return False
    return bool(_parquet_files(fs, path))


def _parquet_files(fs: Any, path: str) -> list[str]:
    found = fs.glob(path) if is_glob(path) else fs.find(path, withdirs=False)
    return sorted(f for f in found if f.lower().endswith(PARQUET_SUFFIXES))


def table_columns(
    schema: Sequence[tuple[str, Any]], columns: Sequence[str] | None, where: str
) -> list[str]:
    """The feature columns: ``columns`` if given (each present and numeric), else every
    numeric column. ``schema`` pairs each column's name with its NumPy dtype."""
    dtypes = dict(schema)
    if columns is None:
        chosen = [name for name, dtype in schema if _numeric(dtype)]
        if not chosen:
            raise ValueError(f"{where} has no numeric column; its columns are {list(dtypes)}.")
        return chosen
    chosen = list(columns)
    absent = [c for c in chosen if c not in dtypes]
    if absent:
        raise ValueError(f"{where} has no column {absent[0]!r}; its columns are {list(dtypes)}.")
    wrong = [c for c in chosen if not _numeric(dtypes[c])]
    if wrong:
        raise ValueError(
            f"{where}: column {wrong[0]!r} is not numeric ({dtypes[wrong[0]]}); choose "
            "numeric columns with columns=[...] (command line: --columns)."
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{where}: columns {chosen} name a column twice.")
    return chosen


def _numeric(dtype: Any) -> bool:
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:  # pandas extension types: nullable numbers count, categories do not
        return getattr(dtype, "kind", "O") in "biuf"


def _float_dtype(dtypes: Sequence[Any]) -> np.dtype:
    """float32 when every column is float32, else float64 (as scikit-learn's check)."""
    if all(np.dtype(d) == np.float32 for d in dtypes):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def from_pandas(df: Any, columns: Sequence[str] | None) -> Any:
    """``df``'s feature columns (checked), as a DataFrame for scikit-learn's validation."""
    where = "The DataFrame"
    labels = {str(c): c for c in df.columns}  # scikit-learn's checks name columns 0, 1, ...
    chosen = table_columns([(name, df[c].dtype) for name, c in labels.items()], columns, where)
    if len(df) == 0:
        raise ValueError(f"{where} has no rows.")
    return df[[labels[c] for c in chosen]]


def open_table(X: Any, columns: Sequence[str] | None, fs: Any = None, path: str = "") -> Any:
    """A dask DataFrame, or the Parquet/CSV file or directory at ``fs``/``path``, as
    ``(dask array, column names, identity, TableSource, Summary or None)`` (the
    summary of the pass that learnt the partitions' lengths, if one was needed)."""
    if X is not None:
        return _from_dask_dataframe(X, columns)
    if path.lower().endswith(CSV_SUFFIXES):
        import dask.dataframe as dd

        url = path if isinstance(fs, _local_fs()) else fs.unstrip_protocol(path)
        X, names, _, source, summary = _from_dask_dataframe(
            dd.read_csv(url), columns, f"Input {path!r}"
        )
        return X, names, f"csv:{path}", source, summary
    return (*_open_parquet(fs, path, columns), None)


def _local_fs() -> type:
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem


def _from_dask_dataframe(df: Any, columns: Sequence[str] | None, where: str = "The DataFrame"):
    import dask

    from ._summary import summary_chunk

    chosen = table_columns([(str(c), df.dtypes[c]) for c in df.columns], columns, where)
    dtype = _float_dtype([df.dtypes[c] for c in chosen])
    X = df[chosen].to_dask_array().astype(dtype)
    per_partition = X.to_delayed().ravel()
    logger.info("%s: reading its %d partitions' lengths and moments.", where, len(per_partition))
    parts = dask.compute(
        *[dask.delayed(summary_chunk)(p, False, None, None) for p in per_partition]
    )
    rows = [part.rows for part in parts]
    if not sum(rows):
        raise ValueError(f"{where} has no rows.")
    X = da.Array(X.dask, X.name, (tuple(rows), (len(chosen),)), dtype=dtype, meta=X._meta)
    groups = _grouped(rows, _rows_per_block(len(chosen), dtype))
    if len(groups) < len(rows):  # tiny partitions share a block
        X = X.rechunk({0: tuple(sum(rows[i] for i in g) for g in groups)})
    schema = tuple((str(c), df.dtypes[c]) for c in df.columns)
    summary = functools.reduce(operator.add, parts)
    table = TableSource(frame=df, schema=schema, groups=tuple(tuple(g) for g in groups))
    return X, chosen, f"dataframe:{X.name}", table, summary


def _open_parquet(fs: Any, path: str, columns: Sequence[str] | None):
    import pyarrow.parquet as pq

    where = f"Input {path!r}"
    files = _parquet_files(fs, path) if is_glob(path) or fs.isdir(path) else [path]
    pieces: list[tuple[str, int, int]] = []  # (file, row group, rows)
    chosen: list[str] | None = None
    for name in files:
        with fs.open(name, "rb") as f:
            meta = pq.ParquetFile(f).metadata  # the footer only
        schema = meta.schema.to_arrow_schema()
        pairs = [(field.name, _arrow_dtype(field.type)) for field in schema]
        found = table_columns(pairs, columns if chosen is None else chosen, where)
        if chosen is None:
            chosen, dtypes, first_schema = found, [dict(pairs)[c] for c in found], pairs
        pieces += [(name, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    assert chosen is not None
    dtype = _float_dtype(dtypes)
    if not sum(p[2] for p in pieces):
        raise ValueError(f"{where} has no rows.")
    groups = _grouped([p[2] for p in pieces], _rows_per_block(len(chosen), dtype))
    blocks = [[pieces[i] for i in g] for g in groups]
    token = f"parquet-{abs(hash((path, tuple(chosen), tuple(pieces)))):x}"
    dsk = {
        (token, i, 0): (_read_pieces, fs, block, tuple(chosen), dtype.str)
        for i, block in enumerate(blocks)
    }
    chunks = (tuple(sum(p[2] for p in b) for b in blocks), (len(chosen),))
    X = da.Array(dsk, token, chunks, dtype=dtype)
    source = TableSource(fs, tuple(tuple(b) for b in blocks), schema=tuple(first_schema))
    return X, chosen, f"parquet:{path}", source


def _rows_per_block(n_columns: int, dtype: np.dtype) -> int:
    from ._data import target_chunk_bytes

    return max(1, target_chunk_bytes() // (n_columns * dtype.itemsize))


def _grouped(rows: Sequence[int], per_block: int) -> list[list[int]]:
    """Consecutive parts (row groups, partitions) of ``rows`` rows each, grouped into
    blocks of at most ``per_block`` rows (a part larger than that is a block alone,
    never split; empty parts join their neighbours, so no block is empty unless all are)."""
    groups: list[list[int]] = [[]]
    size = 0
    for i, n in enumerate(rows):
        if size and size + n > per_block:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return groups


def _arrow_dtype(arrow_type: Any) -> Any:
    """A numeric Arrow type's NumPy dtype; any other type's name (for messages)."""
    import pyarrow as pa

    numeric = pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
    if numeric or pa.types.is_boolean(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype())
    return str(arrow_type)


def _read_rows(fs: Any, pieces: Sequence[tuple[str, int, int]], columns: tuple[str, ...]) -> Any:
    """The ``columns`` of a block's row groups, as one pyarrow Table (ids keep their type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for name in dict.fromkeys(p[0] for p in pieces):
        groups = [p[1] for p in pieces if p[0] == name]
        with fs.open(name, "rb") as f:
            tables.append(pq.ParquetFile(f).read_row_groups(groups, columns=list(columns)))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _read_pieces(
    fs: Any, pieces: list[tuple[str, int, int]], columns: tuple[str, ...], dtype: str
) -> np.ndarray:
    """One block: the row groups of ``pieces``, the chosen columns, as a float array."""
    table = _read_rows(fs, pieces, columns)
    return np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(dtype) for c in columns]
    )
