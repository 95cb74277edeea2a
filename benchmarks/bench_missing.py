"""Seconds per EM iteration with missing values, against the same rows complete.

Every configuration fits the same parameters (fixed start, ``tol=0``) over:

- the complete data (``missing='error'``, today's kernels), the reference;
- the complete data with ``missing='marginalize'`` (what a block without NaN costs);
- three missingness patterns, every sample in one of them (a band missing on a
  part of a scene, two bands on another, a third on the rest);
- values missing completely at random (10 %), many small patterns per block.

"in kernels" is the share of incomplete samples whose pattern is large enough
for the complete-data kernels (``full``, ``tied``); the others run batched by
number of missing values. ``diag`` and ``spherical`` need no patterns at all.

Iterations run through Dask's threaded scheduler on all cores, over blocks of
``--block-rows``; an iteration's time is the median of the iterations after
the first (the callback's ``seconds``). The repeats alternate the data, and the
ratio to the complete data is taken within each repeat (paired), then its
median reported.

    python benchmarks/bench_missing.py --quick     # 2e5 rows, about a minute
    python benchmarks/bench_missing.py             # 1e6 rows
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import dask.array as da
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))


def make_data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-4, 4, size=(k, d))
    X = means[rng.integers(0, k, size=n)] + rng.standard_normal((n, d))
    three = X.copy()
    group = rng.integers(0, 3, size=n)
    three[group == 0, 2] = np.nan
    three[group == 1, 0] = np.nan
    three[group == 1, d - 1] = np.nan
    three[group == 2, 1] = np.nan
    random = X.copy()
    random[rng.random(X.shape) < 0.1] = np.nan
    return means + rng.normal(scale=0.3, size=means.shape), {
        "complete": X,
        "three patterns": three,
        "random 10 %": random,
    }


def start(ct, k, d, means):
    from bench_em import init_kwargs

    from daskgmm import GMMParams

    init = init_kwargs(ct, k, d, means)
    return GMMParams.from_precisions(
        ct, init["weights_init"], init["means_init"], init["precisions_init"]
    )


def per_iteration(X, params, missing, block_rows, iters):
    from daskgmm._em import EMResult, GaussianEM, fit_em_many

    Xd = da.from_array(X, chunks=(block_rows, X.shape[1]))
    model = GaussianEM(params.covariance_type, 1e-6, params.n_components, missing=missing)
    seconds = []
    fit_em_many(
        Xd,
        [EMResult(params, 0, -np.inf, (), False, 0)],
        model=model,
        tol=0.0,
        max_iter=iters,
        callback=lambda info: seconds.append(info.seconds),
    )
    return statistics.median(seconds[1:])


def patterns_per_block(X, block_rows):
    """Distinct patterns per block, and the share of samples in patterns large
    enough for the complete-data kernels."""
    from daskgmm._missing import KERNEL_ROWS, patterns

    counts, large, incomplete = [], 0, 0
    for start_row in range(0, len(X), block_rows):
        groups = patterns(~np.isnan(X[start_row : start_row + block_rows]))
        counts.append(sum(1 for mask, _ in groups if not mask.all()))
        for mask, rows in groups:
            if not mask.all():
                incomplete += len(rows)
                large += len(rows) if len(rows) >= KERNEL_ROWS else 0
    return statistics.median(counts), large / max(incomplete, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2e5 rows, about a minute")
    parser.add_argument("--n", type=float, default=None)
    parser.add_argument("--block-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    n = int(args.n or (2e5 if args.quick else 1e6))
    configs = [("full", 16, 8), ("diag", 16, 8), ("spherical", 16, 8), ("full", 4, 5)]
    print(f"{os.cpu_count()} cores, N={n:,}, blocks of {args.block_rows:,} rows, threads")
    print(
        f"{'config':>16} {'data':>28} {'s/iter':>8} {'x complete':>10} {'patterns/block':>15} "
        f"{'in kernels':>10}"
    )
    for ct, d, k in configs:
        means, data = make_data(n, d, k)
        params = start(ct, k, d, means)
        runs = [("complete", False, "complete"), ("complete", True, "complete, marginalize")]
        runs += [(name, True, name) for name in ("three patterns", "random 10 %")]
        if d < 16:
            runs = runs[:3]
        times = {label: [] for _, _, label in runs}
        ratios = {label: [] for _, _, label in runs}
        for _ in range(args.repeats):
            reference = None
            for name, missing, label in runs:
                t = per_iteration(data[name], params, missing, args.block_rows, args.iters)
                times[label].append(t)
                if reference is None:
                    reference = t
                ratios[label].append(t / reference)
        for name, _, label in runs:
            shown = f"{'':>15} {'':>10}"
            if name != "complete":
                blocks, share = patterns_per_block(data[name], args.block_rows)
                # diagonal precisions need no patterns: every sample in one pass
                path = f"{share:>10.0%}" if ct in ("full", "tied") else f"{'(none)':>10}"
                shown = f"{blocks:>15.0f} {path}"
            print(
                f"{f'{ct} D={d} K={k}':>16} {label:>28} {statistics.median(times[label]):>8.3f} "
                f"{statistics.median(ratios[label]):>10.2f} {shown}",
                flush=True,
            )


if __name__ == "__main__":
    main()
