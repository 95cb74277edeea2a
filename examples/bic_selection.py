"""Choose the number of components and the covariance type by BIC, and plot the curves.

python examples/bic_selection.py [OUT.png]
"""

import os
import sys

import numpy as np

from daskgmm import GaussianMixture
from daskgmm.datasets import make_mixture


def main(png: str = "bic.png") -> None:
    if os.path.exists(png):  # an example never replaces what is there
        sys.exit(f"{png} exists: give a new file name")
    # four components whose means lie at least 6 apart (random_state=3 put two
    # 1.3 apart: three k-means restarts, here and in scikit-learn, then mostly
    # found a worse 4-component optimum, and BIC chose 5)
    data = make_mixture(60_000, n_features=2, n_components=4, chunk_rows=15_000, random_state=5)
    X = data.X.persist()
    ks = range(1, 8)
    results = {}
    for ct in ("full", "diag", "spherical"):
        results[ct] = [
            GaussianMixture(k, covariance_type=ct, n_init=3, random_state=0).fit(X).bic(X)
            for k in ks
        ]
    best_ct = min(results, key=lambda ct: min(results[ct]))
    best_k = list(ks)[int(np.argmin(results[best_ct]))]
    print(f"lowest BIC: covariance_type={best_ct!r}, n_components={best_k} (truth: 4 full)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for ct, bics in results.items():
        ax.plot(list(ks), bics, marker="o", label=ct)
    ax.set_xlabel("n_components")
    ax.set_ylabel("BIC (lower is better)")
    ax.legend(title="covariance_type")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
