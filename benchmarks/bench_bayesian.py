"""Seconds per iteration of BayesianGaussianMixture against scikit-learn's, beside
GaussianMixture against scikit-learn's, in one run.

Same data; scikit-learn's time per iteration is ``(t(m2) - t(m1)) / (m2 - m1)``
of two fits from the same seed (their initialisation cancels), daskgmm's the
median of its per-iteration times (threaded scheduler, NumPy input). The two
estimators' ratios to scikit-learn are measured in turn, repeat by repeat.

    python benchmarks/bench_bayesian.py --quick    # N=1e5
    python benchmarks/bench_bayesian.py            # N=1e6, D=16, K=8, full
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_em import make_data


def sklearn_per_iteration(cls, X, kw, m1=2, m2=5):
    def fit(m):
        est = cls(max_iter=m, tol=0, **kw)
        tic = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X)
        return time.perf_counter() - tic

    return (fit(m2) - fit(m1)) / (m2 - m1)


def daskgmm_per_iteration(cls, X, kw, iters=6):
    seconds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(max_iter=iters, tol=0, **kw).fit(X, callback=lambda info: seconds.append(info.seconds))
    return statistics.median(seconds[1:])


def main() -> None:
    from sklearn.mixture import BayesianGaussianMixture as SkBayesian
    from sklearn.mixture import GaussianMixture as SkGaussian

    from daskgmm import BayesianGaussianMixture, GaussianMixture

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=float, default=None)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--cov", default="full")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = int(args.n or (1e5 if args.quick else 1e6))
    X, _ = make_data(n, args.d, args.k, np.float64)
    kw = dict(n_components=args.k, covariance_type=args.cov, random_state=0)
    print(f"{os.cpu_count()} cores; N={n:,} D={args.d} K={args.k} {args.cov}, float64")
    rows = {"GaussianMixture": [], "BayesianGaussianMixture": []}
    pairs = {
        "GaussianMixture": (GaussianMixture, SkGaussian),
        "BayesianGaussianMixture": (BayesianGaussianMixture, SkBayesian),
    }
    for _ in range(args.repeats):
        for name, (ours, theirs) in pairs.items():
            sk = sklearn_per_iteration(theirs, X, kw)
            dk = daskgmm_per_iteration(ours, X, kw)
            rows[name].append((sk, dk, sk / dk))
    print(f"{'estimator':>24} {'sklearn s/it':>12} {'daskgmm s/it':>12} {'ratio':>6} (medians)")
    for name, values in rows.items():
        sk, dk, ratio = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{name:>24} {sk:>12.4f} {dk:>12.4f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
