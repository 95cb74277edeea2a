"""The graph layer: per-block map, tree of fan-in split_every, one compute."""

from __future__ import annotations

import sys

import dask
import dask.array as da
import numpy as np
import pytest

from daskgmm._reduction import map_reduce, tree_sum


def _rowsum(block, scale, sample_weight=None, row_offset=0):
    w = np.ones(len(block)) if sample_weight is None else sample_weight
    return np.array([w @ block.sum(axis=1) * scale, row_offset * 0 + len(block)])


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_tree_fan_in_and_result(split_every):
    X = da.from_array(np.arange(200.0).reshape(100, 2), chunks=(7, 2))
    parts = X.map_blocks(
        lambda b: np.array([b.sum()]), chunks=((1,) * X.numblocks[0], (1,)), dtype=float
    )
    (total,) = tree_sum(parts, split_every)
    graph = dict(total.__dask_graph__())
    deps = dask.core.get_dependencies
    combine_keys = [k for k in graph if "combine" in str(k[0])]
    assert combine_keys, "no combine layer"
    assert max(len(deps(graph, k)) for k in combine_keys) <= split_every
    n_levels = len({k[0] for k in combine_keys})
    assert n_levels == int(np.ceil(np.log(X.numblocks[0]) / np.log(split_every)))
    assert total.compute()[0] == pytest.approx(np.arange(200.0).sum())


def test_tree_rejects_fan_in_below_two():
    parts = da.ones((4, 1), chunks=1)
    with pytest.raises(ValueError, match="split_every must be at least 2"):
        tree_sum(parts, 1)


def test_map_reduce_passes_weights_and_offsets(counting_scheduler):
    X = np.arange(60.0).reshape(30, 2)
    w = np.linspace(0, 2, 30)
    Xd = da.from_array(X, chunks=(4, 2))
    got = map_reduce(Xd, _rowsum, 2.0, sample_weight=da.from_array(w, chunks=11))
    assert got[0] == pytest.approx(2.0 * w @ X.sum(axis=1))
    assert got[1] == 30
    assert counting_scheduler.computes == 1


def test_map_reduce_under_distributed(cluster_client):
    X = da.from_array(np.ones((50, 3)), chunks=(9, 3))
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client):
        got = map_reduce(X, _rowsum, 3.0)
    assert got[0] == pytest.approx(450.0)


def _blas_threads(block, sample_weight=None, row_offset=0):
    from threadpoolctl import threadpool_info

    return np.array([max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")])


@pytest.mark.parametrize("configured", [False, True], ids=["default-scheduler", "threads"])
def test_one_blas_thread_per_task_on_the_threaded_scheduler(configured):
    """With no scheduler configured a dask array computes on threads, so BLAS is limited too.

    Two Dask threads each running a multi-threaded GEMM made EM iterations 2.2x
    slower on 2 cores; the guard once only looked at the configured scheduler.
    """
    import os
    from contextlib import nullcontext

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: Dask runs one task at a time, BLAS may use it all")
    assert dask.config.get("scheduler", None) is None, "a test left a scheduler configured"
    X = da.ones((40, 2), chunks=(10, 2))
    with dask.config.set(scheduler="threads") if configured else nullcontext():
        total = map_reduce(X, _blas_threads)
    assert total[0] == 4  # four blocks, one BLAS thread each


def test_one_blas_thread_keeps_its_lookup_until_an_import(monkeypatch):
    """The BLAS lookup (1.3-1.6 ms, three times per iteration) is cached, but not past an import.

    A BLAS loaded after the first use comes with a new module; the limit must
    reach it too, and every library gets its own thread count back on exit.
    """
    import types

    from threadpoolctl import threadpool_info

    from daskgmm import _scheduler

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    with _scheduler.one_blas_thread():
        assert set(blas_threads()) == {1}
    first = _scheduler._blas_controller
    with _scheduler.one_blas_thread():
        pass
    assert _scheduler._blas_controller is first
    monkeypatch.setitem(sys.modules, "daskgmm_late_import", types.ModuleType("late"))
    with _scheduler.one_blas_thread():
        assert set(blas_threads()) == {1}
    assert _scheduler._blas_controller is not first
    assert blas_threads() == before


def _scaled_sum(block, scale, sample_weight=None, row_offset=0):
    return np.array([block.sum() * float(np.sum(scale))])


@pytest.mark.parametrize("chunk_rows", [25, 7])
def test_small_parameters_ride_in_tasks_and_small_results_meet_on_the_driver(
    chunk_rows, counting_scheduler
):
    """Small arguments go inside the block tasks (no key to fetch first) and the top <= split_every
    partial sums are added on the driver (no last combine task), each saving a scheduler round
    trip per pass; large ones keep the key and the combine task."""
    X = da.from_array(np.arange(200.0).reshape(100, 2), chunks=(chunk_rows, 2))
    n_blocks = X.numblocks[0]
    expected = np.arange(200.0).sum() * 2.0
    small = np.array([2.0])

    def layers(graph, part):
        return {k[0] if isinstance(k, tuple) else k for k in graph if part in str(k)}

    got = map_reduce(X, _scaled_sum, small, split_every=8, partial_nbytes=8)
    big = np.zeros((1 << 20) // n_blocks // 8 + 1)
    big[0] = 2.0
    got_big = map_reduce(X, _scaled_sum, big, split_every=8)
    assert got[0] == pytest.approx(expected) and got_big[0] == pytest.approx(expected)
    fast, slow = counting_scheduler.graphs
    assert not layers(fast, "daskgmm-arg")
    assert len(layers(slow, "daskgmm-arg")) == 1
    # 4 blocks: no combine task; 15 blocks: one level down to 2 partial sums
    assert len(layers(fast, "combine")) == (0 if n_blocks <= 8 else 1)
    assert len(layers(slow, "combine")) == int(np.ceil(np.log(n_blocks) / np.log(8)))


def _transitions(dask_scheduler):
    return [(t.key, t.finish, t.stimulus_id, t.timestamp) for t in dask_scheduler.transition_log]


def test_held_results_are_released_after_the_next_graph(cluster_client):
    """With ``hold``, a pass's results outlive it until the next pass's graph is at the scheduler.

    Released at the end of their pass, their message took the client's
    batched stream (one send per 10 ms) ahead of the next graph, which then
    waited (a pass that computes nothing: 21.8 against 16.9 ms).
    """
    import time

    X = da.from_array(np.ones((50, 3)), chunks=(9, 3))
    held: list = []
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client):
        first = map_reduce(X, _rowsum, 1.0, hold=held)
        first_keys = {f.key for f in held}
        second = map_reduce(X, _rowsum, 2.0, hold=held)
        second_keys = {f.key for f in held}
        assert first_keys and first_keys.isdisjoint(second_keys)
        assert all(f.status == "finished" for f in held)
        held.clear()
    assert (first[0], second[0]) == pytest.approx((150.0, 300.0))

    deadline = time.monotonic() + 30
    while True:  # releases reach the scheduler asynchronously
        log = cluster_client.run_on_scheduler(_transitions)
        forgotten = {key: ts for key, finish, _, ts in log if finish == "forgotten"}
        if (first_keys | second_keys) <= set(forgotten) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (first_keys | second_keys) <= set(forgotten), "held results were never released"
    # update_graph names its stimulus after the time it started
    second_graph = {
        float(stimulus.rsplit("-", 1)[1])
        for key, _, stimulus, _ in log
        if key in second_keys and stimulus.startswith("update-graph-")
    }
    assert len(second_graph) == 1
    assert min(forgotten[k] for k in first_keys) > second_graph.pop()
