"""How many components? One Dirichlet-process fit against a BIC sweep over K.

Five well-separated components in 3-D: a sweep fits K = 1..8 and keeps the
lowest BIC; a ``BayesianGaussianMixture`` with a Dirichlet-process prior fits
once with K = 12 and leaves weight only on the components the data support.
Both answers, the wall time of each, and a picture: the BIC curve beside the
Bayesian fit's weights. (On overlapping, non-Gaussian clusters a Dirichlet
process keeps more components than the truth, as scikit-learn's does.)

    python examples/dirichlet_process.py [OUT.png]
"""

import os
import sys
import time

import dask.array as da
import numpy as np

from daskgmm import BayesianGaussianMixture, GaussianMixture


def main(png: str = "dirichlet_process.png") -> None:
    if os.path.exists(png):  # an example never replaces what is there
        sys.exit(f"{png} exists: give a new file name")
    rng = np.random.default_rng(1)
    means = rng.normal(scale=10, size=(5, 3))
    samples = means[rng.integers(0, 5, 50_000)] + rng.normal(size=(50_000, 3))
    X = da.from_array(samples, chunks=10_000)

    tic = time.perf_counter()
    ks = range(1, 9)
    bics = [GaussianMixture(k, n_init=3, random_state=0).fit(X).bic(X) for k in ks]
    sweep = time.perf_counter() - tic
    best_k = list(ks)[int(np.argmin(bics))]

    tic = time.perf_counter()
    # 'random' responsibilities: k-means cuts each true cluster into pieces of equal
    # weight, from which a Dirichlet process switches components off very slowly
    bgm = BayesianGaussianMixture(
        n_components=12, init_params="random", max_iter=500, random_state=0
    ).fit(X)
    once = time.perf_counter() - tic
    effective = int(np.sum(bgm.weights_ >= 0.01))
    print(f"BIC sweep over K=1..8: K={best_k} in {sweep:.1f} s (8 fits, 3 restarts each)")
    print(
        f"Dirichlet process, K=12: {effective} components carry weight (>= 1 %) in "
        f"{once:.1f} s (one fit, {bgm.n_iter_} iterations) (truth: 5)"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(list(ks), bics, marker="o")
    left.axvline(best_k, color="grey", linestyle=":")
    left.set_xlabel("n_components")
    left.set_ylabel("BIC (lower is better)")
    left.set_title(f"GaussianMixture sweep: {sweep:.1f} s")
    order = np.argsort(bgm.weights_)[::-1]
    right.bar(range(len(order)), bgm.weights_[order])
    right.axhline(0.01, color="grey", linestyle=":")
    right.set_xlabel("component (by weight)")
    right.set_ylabel("weight")
    right.set_title(f"BayesianGaussianMixture, K=12: {once:.1f} s")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
