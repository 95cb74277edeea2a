"""The only module that builds Dask graphs for the statistics passes.

One pass = a per-block layer (``daskgmm-chunk-stats``) that calls a pure
per-block function, followed by a tree of ``daskgmm-combine`` layers that add
the partial results ``split_every`` at a time, ending in one key, or, where the
caller says the results are small, in at most ``split_every`` keys that the
driver adds. Large parameters are one graph key per pass, so they reach each
worker once, and a worker that dies holding them costs only their
recomputation; small ones travel inside the block tasks. It knows graphs only:
which scheduler runs them and BLAS's threads are :mod:`daskgmm._scheduler`'s,
what a block computes is the caller's function.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ._scheduler import active_client, blas_threads_guard

__all__ = ["map_reduce", "tree_sum"]

#: Default fan-in of the combine tree.
SPLIT_EVERY = 8

#: Largest size of all of one argument's copies that :func:`map_reduce` puts
#: inside the block tasks instead of one graph key: a worker then needs no key
#: before it starts (see benchmarks/README.md, scheduling measurements).
EMBED_BYTES = 1 << 20

#: Largest size of the top partial sums that :func:`map_reduce` gathers and
#: adds on the driver instead of a last combine task (one task's round trip
#: through the scheduler less).
GATHER_BYTES = 1 << 20


def _apply_block(
    chunk_fn: Callable[..., Any],
    block: np.ndarray,
    weight_block: np.ndarray | None,
    *args: Any,
    block_info: dict | None = None,
) -> Any:
    row_offset = block_info[0]["array-location"][0][0] if block_info else 0
    weights = None if weight_block is None else weight_block[:, 0]
    return chunk_fn(block, *args, sample_weight=weights, row_offset=row_offset)


def _apply_block_unweighted(
    chunk_fn: Callable[..., Any], block: np.ndarray, *args: Any, block_info: dict | None = None
) -> Any:
    return _apply_block(chunk_fn, block, None, *args, block_info=block_info)


def _relocated(
    chunk_fn: Callable[..., Any], offsets: dict[int, int], block: np.ndarray, *args: Any,
    sample_weight: np.ndarray | None, row_offset: int,
) -> Any:  # fmt: skip
    """``chunk_fn`` told the block's rows in the whole array, not in the selection."""
    return chunk_fn(block, *args, sample_weight=sample_weight, row_offset=offsets[row_offset])


def _nbytes(obj: Any) -> int:
    """About the size of ``obj``: its NumPy arrays' bytes, through tuples, lists and dataclasses."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(item) for item in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_nbytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return sys.getsizeof(obj)


def _sum(parts: Sequence[Any]) -> Any:
    return functools.reduce(operator.add, parts)


def tree_sum(
    parts: da.Array, split_every: int = SPLIT_EVERY, name: str = "daskgmm", top: int = 1
) -> list[Delayed]:
    """Add the objects held in the blocks of ``parts`` with a tree of fan-in ``split_every``.

    Parameters
    ----------
    parts : dask.array.Array of shape (n_blocks, 1)
        One opaque object (supporting ``+``) per block.
    split_every : int
        Number of partial results added by one task.
    name : str
        Prefix of the graph layers.
    top : int
        The tree stops once at most ``top`` partial sums are left (the caller
        adds them); with 1, one key holds the whole sum.

    Returns
    -------
    list of dask.delayed.Delayed
        The partial sums left at the top, in block order.
    """
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every}")
    keys: list[Any] = [(parts.name, i, 0) for i in range(parts.numblocks[0])]
    token = uuid.uuid4().hex[:12]
    previous: Any = parts
    layer = parts.name
    level = 0
    while len(keys) > top:
        layer = f"{name}-combine-{level}-{token}"
        groups = [keys[i : i + split_every] for i in range(0, len(keys), split_every)]
        dsk = {(layer, j): (_sum, list(group)) for j, group in enumerate(groups)}
        graph = HighLevelGraph.from_collections(layer, dsk, dependencies=[previous])
        keys = list(dsk)
        previous = Delayed(keys[0], graph, layer=layer)
        level += 1
    graph = previous.__dask_graph__()
    return [Delayed(key, graph, layer=layer) for key in keys]


def map_reduce(
    X: da.Array,
    chunk_fn: Callable[..., Any],
    *args: Any,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    name: str = "daskgmm-chunk-stats",
    partial_nbytes: int | None = None,
    hold: list | None = None,
    blocks: Sequence[int] | None = None,
) -> Any:
    """Run ``chunk_fn`` on every row block of ``X`` and add the results, in one compute.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        One chunk along the features.
    chunk_fn : callable
        ``chunk_fn(block, *args, sample_weight=..., row_offset=...)``, returning
        an object with an associative ``+``.
    *args
        Passed to every call. Small ones (all blocks' copies together at most
        :data:`EMBED_BYTES`) travel inside every block's task; each larger one
        becomes one graph key, so it is shipped to each worker once, not once
        per block.
    sample_weight : dask.array.Array of shape (n_samples,), optional
        Chunked like the rows of ``X``.
    split_every : int, optional
        Fan-in of the combine tree (default 8).
    name : str
        Prefix of the per-block layer name.
    partial_nbytes : int, optional
        About the size of one block's result. When given, and the (at most
        ``split_every``) partial sums at the top of the tree hold at most
        :data:`GATHER_BYTES` together, the driver adds them itself instead of
        a last combine task.
    hold : list, optional
        For a loop of passes on a ``distributed`` scheduler: the pass leaves
        the futures of its results here, in place of the previous pass's,
        once its own graph has been submitted. Releasing results is a message
        in the client's batched stream to the scheduler, which sends at most
        once per 10 ms; released at the end of a pass, they held the next
        pass's graph back by the rest of those 10 ms. Held until the next
        pass, their release follows its graph
        (see benchmarks/README.md, scheduling measurements). The caller
        drops the list when the loop ends.
    blocks : sequence of int, optional
        Only these row blocks (a stepwise update's); ``row_offset`` stays the
        block's place in ``X``.

    Returns
    -------
    The sum of the per-block results.
    """
    # Large arguments become one graph key each: computed (deserialised) once and
    # fetched by each worker once, recomputable if the worker holding them dies.
    # (client.scatter(broadcast=True) would hang when a worker dies mid-scatter.)
    # Small ones ride in the tasks: a worker then needs no key before it starts.
    token = uuid.uuid4().hex[:12]
    if blocks is not None:
        blocks = [int(b) for b in blocks]
        starts = np.cumsum((0, *X.chunks[0]))
        within = np.cumsum((0, *(X.chunks[0][b] for b in blocks)))
        offsets = {int(a): int(starts[b]) for a, b in zip(within, blocks)}
        chunk_fn = functools.partial(_relocated, chunk_fn, offsets)
        if sample_weight is not None:
            sample_weight = sample_weight.rechunk((X.chunks[0],)).blocks[blocks]
        X = X.blocks[blocks]
    n_blocks = X.numblocks[0]
    args = tuple(
        arg
        if isinstance(arg, (int, float, str, type(None))) or _nbytes(arg) * n_blocks <= EMBED_BYTES
        else dask.delayed(arg, name=f"daskgmm-arg-{i}-{token}", traverse=False)
        for i, arg in enumerate(args)
    )
    arrays: list[Any] = [X]
    func: Callable[..., Any] = functools.partial(_apply_block_unweighted, chunk_fn)
    if sample_weight is not None:
        arrays.append(sample_weight.rechunk((X.chunks[0],))[:, None])
        func = functools.partial(_apply_block, chunk_fn)
    parts = da.map_blocks(
        func,
        *arrays,
        *args,
        chunks=((1,) * n_blocks, (1,)),
        dtype=object,
        meta=np.empty((0, 0), dtype=object),
        name=f"{name}-{token}",
    )
    split_every = split_every or SPLIT_EVERY
    top = 1
    if partial_nbytes is not None and partial_nbytes * split_every <= GATHER_BYTES:
        top = split_every
    tops = tree_sum(parts, split_every, top=top)
    client = active_client() if hold is not None else None
    if client is None:
        with blas_threads_guard(*tops):
            results = dask.compute(*tops)
    else:
        futures = client.compute(tops)
        hold[:] = futures  # the previous pass's release now follows this graph
        results = client.gather(futures)
    return _sum(results)
