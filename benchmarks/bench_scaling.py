"""Inputs of the cost model of one EM iteration (benchmarks/README.md), measured here.

- compute per sample: seconds per iteration of the per-block kernel in one process;
- the same iteration on a LocalCluster of 1 and of 2 single-threaded workers
  (persisted data), to check the compute / W term;
- scheduling overhead per task: an iteration over many tiny blocks;
- the statistics vector's size for typical K, D (what the tree reduction moves).

    python benchmarks/bench_scaling.py [--n 2e6] [--d 16] [--k 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def per_iteration(X, params, iters=4):
    from daskgmm import fit_em

    seconds = []
    fit_em(
        X,
        params,
        reg_covar=1e-6,
        tol=0.0,
        max_iter=iters,
        callback=lambda info: seconds.append(info.seconds),
    )
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=float, default=2e6)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    n, d, k = int(args.n), args.d, args.k

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster
    from threadpoolctl import threadpool_limits

    from daskgmm import GMMParams
    from daskgmm._stats import EStepParams, suffstats_chunk

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    params = GMMParams.from_covariances(
        "full", np.full(k, 1 / k), rng.standard_normal((k, d)), np.array([np.eye(d)] * k)
    )
    with threadpool_limits(1):
        ep = EStepParams.from_params(params)
        tic = time.perf_counter()
        suffstats_chunk(X[: n // 4], ep)
        per_sample = (time.perf_counter() - tic) / (n // 4)
    print(f"N={n:,} D={d} K={k} full float64")
    print(
        f"kernel, one core: {per_sample * 1e6:.3f} us per sample "
        f"-> {per_sample * n:.2f} s per iteration on 1 core"
    )
    results = {}
    for workers in (1, 2):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
            dask.config.set(scheduler=client),
        ):
            Xd = da.from_array(X, chunks=(n // 16, d)).persist()
            results[workers] = per_iteration(Xd, params)
            tiny = da.from_array(X[:20_000], chunks=(100, d)).persist()
            overhead = per_iteration(tiny, params) / tiny.numblocks[0]
        print(
            f"{workers} worker(s): {results[workers]:.2f} s per iteration "
            f"(model compute/W: {per_sample * n / workers:.2f} s); "
            f"scheduling overhead ~{overhead * 1e3:.2f} ms per block"
        )
    print(f"speed-up 1 -> 2 workers: {results[1] / results[2]:.2f}x")
    for kk, dd in ((8, 16), (32, 64), (64, 128)):
        size = 8 * (kk * dd * dd + kk * dd + kk + 3)
        print(f"statistics of one block, K={kk} D={dd} full: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
