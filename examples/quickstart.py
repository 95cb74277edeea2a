"""Quick start: fit a Gaussian mixture to a dask array on a local cluster.

python examples/quickstart.py
"""

from distributed import Client, LocalCluster

from daskgmm import GaussianMixture
from daskgmm.datasets import make_mixture


def main() -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        data = make_mixture(200_000, n_features=3, n_components=4, chunk_rows=25_000)
        gm = GaussianMixture(n_components=4, random_state=0).fit(data.X)
        print("weights:", gm.weights_.round(3))
        print("means:\n", gm.means_.round(2))
        labels = gm.predict(data.X)  # lazy, chunked like X
        proba = gm.predict_proba(data.X)  # lazy (n_samples, 4)
        print("first labels:", labels[:10].compute())
        print("first probabilities:\n", proba[:3].compute().round(3))
        print(f"BIC {gm.bic(data.X):.1f}, mean log-likelihood {gm.score(data.X):.4f}")


if __name__ == "__main__":
    main()
