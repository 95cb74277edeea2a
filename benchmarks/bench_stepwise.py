"""Stepwise EM against batch EM, streaming a Zarr store of at least 1 GB.

Writes a float64 Zarr store (default 1.07 GB: 8.4 million samples x 16
features, K=8 overlapping full-covariance components, 1 MiB chunks), computes one fixed
initialisation from a random sample of its rows, and fits the store with
``cache=False`` on a LocalCluster of single-threaded worker processes, once
with batch EM and once with ``algorithm='stepwise'``, from that same
initialisation, both to ``tol=1e-4``. Prints, for each, the reads of the data
and the wall time until its parameters first reached ``L* - 1e-3`` (``L*``:
batch EM's final mean log-likelihood), and until its own convergence, then the
ratios, all from one run.

How the reads are counted: batch EM's lower bound at pass ``j`` is the exact
mean log-likelihood of the parameters that ``j - 1`` reads produced; a stepwise
run's exact values come from its batch passes the same way (its epochs report
only an estimate), so the parameters after its stepwise epoch are measured by
the first batch pass. The time of ``j`` reads is the wall time at the end of
read ``j``, initialisation excluded (both runs start from the same parameters).

With root rights (``--cold``, the default then) the operating system's page
cache is dropped after every read of the whole data (a batch pass, a stepwise
epoch), outside the timings, so that every read comes from the disk, as it must
for data larger than the machine's memory.

Usage::

    python benchmarks/bench_stepwise.py [--gb 1.07] [--path /tmp/daskgmm-bench-stepwise.zarr]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _util import fmt_bytes
from bench_streaming import drop_page_cache


def write_store(path: str, n_samples: int, n_features: int, n_components: int) -> None:
    """Overlapping components: means ~ N(0, 1), covariances A A^T / D + 0.3 I; store
    chunks of 8192 rows (1 MiB)."""
    import zarr

    rng = np.random.RandomState(1)
    means = rng.normal(0, 1.0, (n_components, n_features))
    a = rng.normal(0, 1, (n_components, n_features, n_features)) / np.sqrt(n_features)
    chol = np.linalg.cholesky(a @ a.transpose(0, 2, 1) + 0.3 * np.eye(n_features))
    weights = rng.dirichlet(5 * np.ones(n_components))
    z = zarr.create_array(
        path,
        shape=(n_samples, n_features),
        chunks=(8192, n_features),
        dtype="f8",
        compressors=None,
        overwrite=True,
    )
    step = 8192 * 128
    for start in range(0, n_samples, step):
        n = min(step, n_samples - start)
        labels = rng.choice(n_components, n, p=weights)
        noise = rng.standard_normal((n, n_features))
        z[start : start + n] = means[labels] + np.einsum("nij,nj->ni", chol[labels], noise)


def can_drop_page_cache() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


class Run:
    """Times and exact bounds of one fit, the page-cache drops left out of the times."""

    def __init__(self, cold: bool):
        self.cold = cold
        self.start = time.perf_counter()
        self.excluded = 0.0
        self.ends: list[float] = []  # seconds at the end of each read, drops excluded

    def __call__(self, info) -> None:
        self.ends.append(time.perf_counter() - self.start - self.excluded)
        if self.cold:
            tic = time.perf_counter()
            drop_page_cache()
            self.excluded += time.perf_counter() - tic


def reached(bounds: list[float], ends: list[float], target: float, first_exact: int):
    """Reads (and their seconds) after which the parameters first had a bound >= target.

    ``bounds[j]`` is the exact bound of the parameters after ``j`` reads for
    ``j >= first_exact``.
    """
    for j in range(first_exact, len(bounds)):
        if bounds[j] >= target:
            return j, ends[j - 1]
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.07, help="store size in GB (1e9 bytes)")
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=1, help="stepwise_epochs")
    parser.add_argument("--decay", type=float, default=None, help="learning_decay")
    parser.add_argument("--offset", type=float, default=None, help="learning_offset")
    parser.add_argument(
        "--warm", action="store_true", help="do not drop the page cache (reads may be cached)"
    )
    parser.add_argument("--path", default="/tmp/daskgmm-bench-stepwise.zarr")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")

    import zarr
    from distributed import Client, LocalCluster

    from daskgmm import GaussianMixture

    d, k = args.n_features, args.n_components
    n = int(np.ceil(args.gb * 1e9 / (8 * d)))
    wrote = not os.path.exists(args.path)  # a store given with --path is the user's
    if wrote:
        tic = time.perf_counter()
        write_store(args.path, n, d, k)
        print(f"wrote {args.path} in {time.perf_counter() - tic:.1f} s")
    z = zarr.open_array(args.path, mode="r")
    rows = np.sort(np.random.RandomState(0).choice(z.shape[0], 20_000, replace=False))
    init = GaussianMixture(k, init_params="random_from_data", max_iter=0, random_state=0)
    init.fit(z.get_orthogonal_selection((rows, slice(None))))
    start = {
        "weights_init": init.weights_,
        "means_init": init.means_,
        "precisions_init": init.precisions_,
    }
    cold = can_drop_page_cache() and not args.warm
    stepwise = {"algorithm": "stepwise", "stepwise_epochs": args.epochs}
    if args.decay is not None:
        stepwise["learning_decay"] = args.decay
    if args.offset is not None:
        stepwise["learning_offset"] = args.offset

    results = {}
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ),
        Client(),
    ):
        for name, extra in (("batch EM", {}), ("stepwise", stepwise)):
            gm = GaussianMixture(k, tol=args.tol, max_iter=1000, cache=False, **start, **extra)
            if cold:
                drop_page_cache()  # the first read from the disk too
            run = Run(cold)
            gm.fit(args.path, callback=run)
            results[name] = (gm, run)

    reference, _ = results["batch EM"]
    target = reference.lower_bound_ - 1e-3
    print(
        f"store: {fmt_bytes(z.nbytes)} float64 Zarr, {z.shape[0]:,} x {d}, K={k} full, "
        f"overlapping; {args.workers} worker processes x 1 thread; reads "
        f"{'from the disk (page cache dropped after every read)' if cold else 'warm'}"
    )
    print(f"L* (batch EM's final mean log-likelihood) = {reference.lower_bound_:.6f}")
    rows_out = {}
    for name, (gm, run) in results.items():
        # bounds[j], the exact bound after j reads: from j = 1 for batch EM; a stepwise
        # run's first E are its epochs' estimates, bounds[E] measures its E epochs
        first_exact = gm.stepwise_epochs if name == "stepwise" else 1
        reads, seconds = reached(gm.lower_bounds_, run.ends, target, first_exact)
        rows_out[name] = (reads, seconds, gm.n_iter_, run.ends[-1], gm.lower_bound_)
        print(
            f"{name:>9}: to L*-1e-3 {reads} reads, {seconds:.1f} s; to convergence "
            f"{gm.n_iter_} reads, {run.ends[-1]:.1f} s; final L - L* = "
            f"{gm.lower_bound_ - reference.lower_bound_:+.2e}"
            + (f"; {gm.n_steps_} updates" if name == "stepwise" else "")
        )
    (rb, tb, nb, Tb, _), (rs, ts, ns, Ts, _) = rows_out["batch EM"], rows_out["stepwise"]
    if rs is not None and rb:
        print(
            f"ratios stepwise / batch EM: to L*-1e-3 reads {rs / rb:.2f}, wall time {ts / tb:.2f} "
            f"(target <= 0.25: {'met' if rs / rb <= 0.25 and ts / tb <= 0.25 else 'MISSED'}); "
            f"to convergence reads {ns / nb:.2f}, wall time {Ts / Tb:.2f}"
        )
    if wrote and not args.keep:
        shutil.rmtree(args.path, ignore_errors=True)


if __name__ == "__main__":
    main()
