"""Seconds per EM iteration: daskgmm against scikit-learn, and against the machine's GEMM rate.

For every configuration, both libraries start from the same parameters on the
same data, run a fixed number of iterations with ``tol=0``, and the medians of
the per-iteration times are compared in the same run. scikit-learn's time per
iteration is the difference of two fits (``m2`` and ``m1`` iterations) divided
by ``m2 - m1``, which removes its set-up and final E-step. The GEMM rate is
measured on the shape of the E-step's product with all cores.

    python benchmarks/bench_em.py --quick          # < 3 minutes
    python benchmarks/bench_em.py                  # the full grid (long)
    python benchmarks/bench_em.py --n 1e6 --d 64 --k 8 --cov full --dtype float64
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
import warnings

import dask
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _util import PeakMemory, fmt_bytes, gemm_rate


def make_data(n, d, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-4, 4, size=(k, d))
    X = means[rng.integers(0, k, size=n)] + rng.standard_normal((n, d))
    init_means = means + rng.normal(scale=0.5, size=means.shape)
    return X.astype(dtype), init_means


def init_kwargs(ct, k, d, means):
    precisions = {
        "full": np.array([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[ct]
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=precisions)


def flops(n, d, k, ct):
    """Leading arithmetic of one iteration as the issue counts it: 2 N K D^2 (full)."""
    return {
        "full": 2.0 * n * k * d * d,
        "tied": 2.0 * n * d * d + 2.0 * n * k * d,
        "diag": 6.0 * n * k * d,
        "spherical": 4.0 * n * k * d,
    }[ct]


def time_sklearn(X, ct, k, init, m1=2, m2=5):
    from sklearn.mixture import GaussianMixture

    def fit(m):
        gm = GaussianMixture(k, covariance_type=ct, tol=0, max_iter=m, **init)
        tic = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(X)
        return time.perf_counter() - tic, gm.lower_bounds_[-1]

    # A pause of the machine during the shorter fit shrinks the difference: the
    # fourth session's grid once read 9 ms for an iteration that takes 0.3 s.
    # Such a pair (an iteration under a quarter of the longer fit's average) is
    # measured again, at most twice.
    for _ in range(3):
        short, _ = fit(m1)
        long, lower_bound = fit(m2)
        per_iteration = (long - short) / (m2 - m1)
        if per_iteration >= 0.25 * long / m2:
            break
    return per_iteration, lower_bound


def time_daskgmm(X, ct, k, init, mode, iters=5):
    from daskgmm import GMMParams, fit_em
    from daskgmm._data import as_dask_array

    params = GMMParams.from_precisions(
        ct, init["weights_init"], init["means_init"], init["precisions_init"]
    )
    Xd = as_dask_array(X)
    if mode != "numpy":
        Xd = Xd.persist()
    seconds = []

    def fit(max_iter):
        return fit_em(
            Xd,
            params,
            reg_covar=1e-6,
            tol=0.0,
            max_iter=max_iter,
            callback=lambda info: seconds.append(info.seconds),
        )

    result = fit(iters)
    timed = statistics.median(seconds[1:])
    # Peak memory from a separate 2-iteration fit: the sampling thread holds the
    # GIL while it walks /proc, which slowed the threaded scheduler's iterations
    # by up to a quarter when it ran during the timed fit.
    with PeakMemory() as mem:
        fit(2)
    return timed, result.lower_bounds[-1], mem.peak


def _groups(configs):
    """Configurations by ``(n, d, k, cov)``: the dtypes of each, in order."""
    groups = {}
    for n, d, k, ct, dtype in configs:
        groups.setdefault((n, d, k, ct), []).append(dtype)
    return groups


def _group_data(group, dtypes):
    """Each dtype's data and initial parameters for one ``(n, d, k, cov)``."""
    n, d, k, ct = group
    data = {}
    for dtype in dtypes:
        X, means = make_data(n, d, k, dtype)
        data[dtype] = (X, init_kwargs(ct, k, d, means))
    return data


def _alternating(data, ct, k, mode, repeats):
    """daskgmm's repeats of every dtype of one configuration, the dtypes in turn.

    Alternating the dtypes repeat by repeat (rather than all float64 repeats,
    then all float32 ones) gives both the same share of this machine's drift,
    so that the float32 / float64 ratio of each repeat compares like with like.
    """
    ours = {dtype: [] for dtype in data}
    for _ in range(repeats):
        for dtype, (X, init) in data.items():
            ours[dtype].append(time_daskgmm(X, ct, k, init, mode))
    return ours


def run(configs, modes, repeats):
    # Every configuration's threaded rows first, then the LocalCluster rows. A
    # cluster that has run, even closed again, leaves this process's threaded
    # iterations slower (more objects for the garbage collector, distributed's
    # offload thread): N=1e6 D=16 K=8 float32 read 0.077 s alone and 0.097 s
    # after the float64 configuration's cluster rows, which made the float32 /
    # float64 ratio depend on the order of the rows.
    rows = []
    rates = {}
    reference = {}
    paired = {}

    def measure(group, data, mode):
        """daskgmm's rows of one configuration and input, on the active scheduler."""
        k, ct = group[2:]
        ours = paired[(*group, mode)] = _alternating(data, ct, k, mode, repeats)
        for dtype, times in ours.items():
            config = (*group, dtype)
            rows.append(_row(config, mode, times, reference[config], rates))

    groups = _groups(configs)
    for group, dtypes in groups.items():
        n, d, k, ct = group
        data = _group_data(group, dtypes)
        for dtype, (X, init) in data.items():
            if (d, k, dtype) not in rates:
                rates[(d, k, dtype)] = gemm_rate(min(n, 65536), d, k * d, dtype)
            sk = [time_sklearn(X, ct, k, init) for _ in range(repeats)]
            reference[(*group, dtype)] = (statistics.median(t for t, _ in sk), sk[0][1])
        for mode in modes:
            if mode != "cluster":
                with dask.config.set(scheduler="threads"):
                    measure(group, data, mode)
    if "cluster" in modes:
        from daskgmm.cluster import connect

        for group, dtypes in groups.items():
            data = _group_data(group, dtypes)
            # The LocalCluster the command line starts (daskgmm.cluster.connect:
            # one single-threaded worker process per core, its diagnostics
            # turned down). A cluster left running (scheduler, workers, the
            # client's IO thread) took ~10 % from the next configuration's rows
            # on 2 cores (N=1e6 D=16 K=8 float32: 0.100 against 0.091 s per
            # iteration), so each configuration starts its own, shared by its
            # dtypes.
            with (
                connect(cluster=f"local:{os.cpu_count()}") as client,
                dask.config.set(scheduler=client),
            ):
                measure(group, data, "cluster")
    _print_dtype_ratios(paired)
    return rows, rates


def _print_dtype_ratios(paired):
    """float64 / float32 seconds per iteration, repeat by repeat (see :func:`_alternating`)."""
    lines = []
    for (n, d, k, ct, mode), ours in paired.items():
        if np.float64 not in ours or np.float32 not in ours:
            continue
        ratios = [a[0] / b[0] for a, b in zip(ours[np.float64], ours[np.float32], strict=True)]
        lines.append(
            f"{n:>8.0e} {d:>3} {k:>3} {ct:>9} {mode:>8} {statistics.median(ratios):>8.2f} "
            f"{min(ratios):>6.2f} {max(ratios):>6.2f}  {len(ratios)}"
        )
    if lines:
        print("\nfloat32 speed-up over float64 (float64 s/it / float32 s/it), per repeat")
        head = f"{'N':>8} {'D':>3} {'K':>3} {'cov':>9} {'input':>8}"
        print(f"{head} {'median':>8} {'min':>6} {'max':>6}  n")
        print("\n".join(lines), flush=True)


def _row(config, mode, ours, reference, rates):
    """One printed table row from daskgmm's repeats and scikit-learn's (time, ll)."""
    n, d, k, ct, dtype = config
    sk_time, sk_ll = reference
    t = statistics.median(o[0] for o in ours)
    ll = ours[0][1]
    rate = flops(n, d, k, ct) / t
    row = {
        "N": n,
        "D": d,
        "K": k,
        "cov": ct,
        "dtype": np.dtype(dtype).name,
        "input": mode,
        "sklearn_s": sk_time,
        "daskgmm_s": t,
        "speedup": sk_time / t,
        "gflops": rate / 1e9,
        "gemm_fraction": rate / rates[(d, k, dtype)] if ct == "full" else None,
        "peak": max(o[2] for o in ours),
        "ll_sklearn": sk_ll,
        "ll_daskgmm": ll,
        "ll_rel": abs(ll - sk_ll) / abs(sk_ll),
    }
    _print_row(row)
    return row


HEADER = (
    f"{'N':>8} {'D':>3} {'K':>3} {'cov':>9} {'dtype':>7} {'input':>8} "
    f"{'sklearn s/it':>12} {'daskgmm s/it':>12} {'ratio':>6} {'GFLOP/s':>8} "
    f"{'of GEMM':>7} {'peak mem':>9} {'ll rel diff':>11}"
)


def _print_row(r):
    frac = f"{r['gemm_fraction']:.0%}" if r["gemm_fraction"] is not None else "-"
    print(
        f"{r['N']:>8.0e} {r['D']:>3} {r['K']:>3} {r['cov']:>9} {r['dtype']:>7} "
        f"{r['input']:>8} {r['sklearn_s']:>12.4f} {r['daskgmm_s']:>12.4f} "
        f"{r['speedup']:>6.2f} {r['gflops']:>8.1f} {frac:>7} {fmt_bytes(r['peak']):>9} "
        f"{r['ll_rel']:>11.1e}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small grid, < 3 minutes")
    parser.add_argument("--n", type=float, nargs="*")
    parser.add_argument("--d", type=int, nargs="*")
    parser.add_argument("--k", type=int, nargs="*")
    parser.add_argument("--cov", nargs="*")
    parser.add_argument("--dtype", nargs="*")
    parser.add_argument("--input", nargs="*", choices=["numpy", "persisted", "cluster"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        grid = dict(
            n=[1e5],
            d=[2, 16],
            k=[8],
            cov=["full", "diag"],
            dtype=["float64", "float32"],
            input=["numpy"],
        )
    else:
        grid = dict(
            n=[1e5, 1e6],
            d=[2, 16, 64],
            k=[8, 32],
            cov=["full", "tied", "diag", "spherical"],
            dtype=["float64", "float32"],
            input=["numpy", "persisted", "cluster"],
        )
    for name in grid:
        if getattr(args, name):
            grid[name] = getattr(args, name)
    configs = [
        (int(n), d, k, ct, np.dtype(dt).type)
        for n, d, k, ct, dt in itertools.product(
            grid["n"], grid["d"], grid["k"], grid["cov"], grid["dtype"]
        )
    ]
    print(f"{os.cpu_count()} cores; {len(configs)} configurations x {len(grid['input'])} inputs")
    print(HEADER)
    run(configs, grid["input"], args.repeats)


if __name__ == "__main__":
    main()
