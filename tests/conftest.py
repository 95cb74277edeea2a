"""Shared fixtures: generated mixtures (a port of scikit-learn's RandomData),
chunkings, schedulers, and a real multi-process cluster."""

from __future__ import annotations

import dask
import numpy as np
import pytest

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


class RandomData:
    """Well-separated mixtures of known parameters, one per covariance type.

    Port of ``sklearn/mixture/tests/test_gaussian_mixture.py::RandomData``.
    """

    def __init__(self, rng, n_samples=500, n_components=2, n_features=2, scale=50):
        self.n_samples = n_samples
        self.n_components = n_components
        self.n_features = n_features
        self.weights = rng.rand(n_components)
        self.weights = self.weights / self.weights.sum()
        self.means = rng.rand(n_components, n_features) * scale
        self.covariances = {
            "spherical": 0.5 + rng.rand(n_components),
            "diag": (0.5 + rng.rand(n_components, n_features)) ** 2,
            "tied": _spd(rng, n_features),
            "full": np.array([_spd(rng, n_features) for _ in range(n_components)]),
        }
        self.precisions = {
            "spherical": 1.0 / self.covariances["spherical"],
            "diag": 1.0 / self.covariances["diag"],
            "tied": np.linalg.inv(self.covariances["tied"]),
            "full": np.array([np.linalg.inv(c) for c in self.covariances["full"]]),
        }
        counts = np.round(self.weights * n_samples).astype(int)
        counts[-1] = n_samples - counts[:-1].sum()
        self.counts = counts
        self.Y = np.repeat(np.arange(n_components), counts)
        self.X = {}
        for ct in COVARIANCE_TYPES:
            blocks = []
            for k in range(n_components):
                cov_k = _dense_covariance(ct, self.covariances[ct], k, n_features)
                blocks.append(rng.multivariate_normal(self.means[k], cov_k, counts[k]))
            self.X[ct] = np.vstack(blocks)


def _dense_covariance(ct, cov, k, n_features):
    if ct == "spherical":
        return cov[k] * np.eye(n_features)
    if ct == "diag":
        return np.diag(cov[k])
    return cov if ct == "tied" else cov[k]


def _spd(rng, n_features):
    a = rng.rand(n_features, n_features)
    return a @ a.T + np.eye(n_features)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture
def random_data(rng):
    return RandomData(rng, n_samples=600, n_components=3, n_features=3)


def chunkings(n_samples):
    """Single block, even, ragged, and ragged with a one-row block."""
    return {
        "single": (n_samples,),
        "even": (n_samples // 4,) * 3 + (n_samples - 3 * (n_samples // 4),),
        "ragged": _ragged(n_samples, [97, 13, 250, 31]),
        "one-row": (1, *_ragged(n_samples - 1, [150, 77, 203])),
    }


def _ragged(n, sizes):
    out, left, i = [], n, 0
    while left > 0:
        take = min(sizes[i % len(sizes)], left)
        out.append(take)
        left -= take
        i += 1
    return tuple(out)


@pytest.fixture(params=["single", "even", "ragged", "one-row"])
def chunk_name(request):
    return request.param


def local_cluster():
    """A real multi-process LocalCluster on 127.0.0.1: two single-threaded workers."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )


@pytest.fixture(scope="session")
def cluster_client():
    """:func:`local_cluster` for the whole session, not set as the default client."""
    from distributed import Client

    with local_cluster() as cluster, Client(cluster, set_as_default=False) as client:
        yield client


class Stop(Exception):
    """Raised by :func:`stop_after`'s callback: a fit stopped as if killed."""


def stop_after(n_iter):
    """A fit callback that stops the fit once a restart has done ``n_iter`` iterations
    (the checkpoint then holds the last completed pass)."""

    def callback(info):
        if info.n_iter >= n_iter:
            raise Stop

    return callback


@pytest.fixture(params=["sync", "threads", "distributed"])
def scheduler(request, cluster_client):
    """Run the test body under each scheduler."""
    if request.param == "distributed":
        with cluster_client.as_current(), dask.config.set(scheduler=cluster_client):
            yield request.param
    else:
        with dask.config.set(scheduler=request.param):
            yield request.param


class CountingScheduler:
    """A scheduler that counts computes and records the graph each runs and the size of
    what it returns (after xarray's ``raise_if_dask_computes``)."""

    def __init__(self):
        self.computes = 0
        self.result_nbytes = []
        self.graphs = []

    def __call__(self, dsk, keys, **kwargs):
        self.computes += 1
        self.graphs.append(dict(dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk))
        result = dask.get(dsk, keys, **kwargs)
        self.result_nbytes.append(_nbytes(result))
        return result


def _nbytes(obj):
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(_nbytes(getattr(obj, f)) for f in obj.__dataclass_fields__)
    return 0


@pytest.fixture
def counting_scheduler():
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        yield counter
