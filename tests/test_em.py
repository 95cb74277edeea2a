"""The EM loop: parity with scikit-learn, monotonicity, one compute per iteration."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from daskgmm import GaussianMixture, GMMParams, fit_em

from .conftest import COVARIANCE_TYPES, RandomData, chunkings, local_cluster


def _init_kwargs(data, ct, rng):
    """Initial parameters that are deliberately off the truth."""
    means = data.means + rng.normal(scale=2.0, size=data.means.shape)
    return dict(
        weights_init=np.full(data.n_components, 1.0 / data.n_components),
        means_init=means,
        precisions_init=data.precisions[ct] * 0.5,
    )


def _fit_both(X, ct, init, max_iter=8):
    common = dict(
        n_components=len(init["means_init"]),
        covariance_type=ct,
        tol=0,
        max_iter=max_iter,
        **init,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGaussianMixture(**common).fit(X if isinstance(X, np.ndarray) else X.compute())
        ours = GaussianMixture(**common).fit(X)
    return sk, ours


def _assert_parity(sk, ours):
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(sk, name), rtol=1e-6, atol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-8)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    assert ours.n_iter_ == sk.n_iter_
    assert ours.converged_ == sk.converged_


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_parity_with_scikit_learn_numpy(rng, ct):
    data = RandomData(rng, n_samples=500, n_components=3, n_features=3, scale=8)
    sk, ours = _fit_both(data.X[ct], ct, _init_kwargs(data, ct, rng))
    _assert_parity(sk, ours)


def test_parity_with_scikit_learn_full_in_64_dimensions(rng):
    """The benchmark's D=64: the E-step in four column blocks, the second moments in two row
    blocks (each 400-row block is one tile)."""
    data = RandomData(rng, n_samples=1500, n_components=3, n_features=64, scale=3)
    X = da.from_array(data.X["full"], chunks=(400, 64))
    sk, ours = _fit_both(X, "full", _init_kwargs(data, "full", rng))
    _assert_parity(sk, ours)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_parity_with_scikit_learn_many_uneven_chunks(rng, ct):
    data = RandomData(rng, n_samples=997, n_components=3, n_features=4, scale=8)
    X = da.from_array(data.X[ct], chunks=(chunkings(997)["one-row"], 4))
    assert X.numblocks[0] > 5
    sk, ours = _fit_both(X, ct, _init_kwargs(data, ct, rng))
    _assert_parity(sk, ours)


def test_parity_under_multiprocess_cluster(cluster_client, rng):
    """The same fit on a real LocalCluster(processes=True): parameters are scattered."""
    import dask

    data = RandomData(rng, n_samples=800, n_components=2, n_features=3, scale=8)
    X = da.from_array(data.X["full"], chunks=(113, 3))
    init = _init_kwargs(data, "full", rng)
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client):
        sk, ours = _fit_both(X, "full", init, max_iter=5)
        labels = ours.predict(X)
        assert isinstance(labels, da.Array)
        np.testing.assert_array_equal(labels.compute(), sk.predict(data.X["full"]))
    _assert_parity(sk, ours)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_monotonic_likelihood(rng, ct):
    data = RandomData(rng, n_samples=600, n_components=3, n_features=2, scale=5)
    init = _init_kwargs(data, ct, rng)
    gm = GaussianMixture(3, covariance_type=ct, tol=0, max_iter=30, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(da.from_array(data.X[ct], chunks=100))
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10)


def test_one_compute_per_iteration(rng, counting_scheduler):
    data = RandomData(rng, n_samples=4000, n_components=2, n_features=2)
    X = da.from_array(data.X["full"], chunks=500)
    params = GMMParams.from_precisions(
        "full", data.weights, data.means + 1.0, data.precisions["full"]
    )
    seen = []
    result = fit_em(X, params, reg_covar=1e-6, tol=0.0, max_iter=6, callback=seen.append)
    assert counting_scheduler.computes == 6
    assert [info.n_iter for info in seen] == [1, 2, 3, 4, 5, 6]
    assert result.n_iter == 6 and len(result.lower_bounds) == 6
    assert seen[0].change == np.inf
    assert seen[-1].lower_bound == result.lower_bound
    # the statistics that come back to the driver are small (here the 8 blocks'
    # own, added on the driver): never the data
    assert max(counting_scheduler.result_nbytes) < X.nbytes / 10


def test_convergence_stops_early_and_resume_continues(rng):
    data = RandomData(rng, n_samples=500, n_components=2, n_features=2)
    X = da.from_array(data.X["diag"], chunks=100)
    params = GMMParams.from_precisions("diag", data.weights, data.means, data.precisions["diag"])
    full = fit_em(X, params, reg_covar=1e-6, tol=1e-8, max_iter=100)
    assert full.converged and full.n_iter < 100
    first = fit_em(X, params, reg_covar=1e-6, tol=1e-8, max_iter=2)
    rest = fit_em(
        X,
        first.params,
        reg_covar=1e-6,
        tol=1e-8,
        max_iter=100,
        start_iter=2,
        lower_bounds=first.lower_bounds,
        lower_bound=first.lower_bound,
    )
    assert rest.n_iter == full.n_iter
    np.testing.assert_allclose(rest.lower_bounds, full.lower_bounds, rtol=1e-12)
    np.testing.assert_allclose(rest.params.means, full.params.means, rtol=1e-12)


def test_callback_exception_stops_fit(rng):
    data = RandomData(rng, n_samples=100, n_components=2, n_features=2)
    X = da.from_array(data.X["full"], chunks=50)
    params = GMMParams.from_precisions("full", data.weights, data.means, data.precisions["full"])

    def stop(info):
        if info.n_iter == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_em(X, params, reg_covar=1e-6, tol=0.0, max_iter=10, callback=stop)


def test_degenerate_component_raises_instead_of_nan():
    X = np.vstack([np.zeros((50, 2)), np.random.RandomState(0).normal(size=(50, 2)) + 10])
    params = GMMParams.from_covariances(
        "full",
        np.array([0.5, 0.5]),
        np.array([[0.0, 0.0], [10.0, 10.0]]),
        np.array([np.eye(2), np.eye(2)]),
    )
    with pytest.raises(ValueError, match=r"component 0 .*reg_covar"):
        fit_em(da.from_array(X, chunks=30), params, reg_covar=0.0, tol=0.0, max_iter=3)


def test_restarts_share_each_pass_over_the_data(rng, counting_scheduler):
    from daskgmm import GaussianMixture
    from daskgmm._init import initialize_many, restart_seeds

    data = RandomData(rng, n_samples=800, n_components=3, n_features=2, scale=5)
    X = da.from_array(data.X["full"], chunks=100)
    kw = dict(init_params="random_from_data", tol=0, max_iter=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, n_init=4, random_state=0, **kw).fit(X)
    # persist the data, one row gather for all initialisations, then 7 passes for all 4
    assert counting_scheduler.computes == 1 + 1 + 7
    # the same answer as running the restarts one by one, each from its seed
    singles = [
        fit_em(
            X,
            initialize_many(
                X,
                seeds=[seed],
                n_components=3,
                covariance_type="full",
                init_params="random_from_data",
                reg_covar=1e-6,
            )[0],
            reg_covar=1e-6,
            tol=0.0,
            max_iter=7,
        )
        for seed in restart_seeds(np.random.RandomState(0), 4)
    ]
    best = max(singles, key=lambda r: r.lower_bound)
    assert len({round(r.lower_bound, 6) for r in singles}) > 1, "restarts should differ"
    np.testing.assert_allclose(gm.means_, best.params.means, rtol=1e-12)
    assert gm.lower_bounds_ == pytest.approx(list(best.lower_bounds), rel=1e-12)


@pytest.mark.slow
def test_workers_import_only_the_numpy_kernels():
    """A block task is unpickled by reference: every pass's kernel (k-means||, Lloyd, the
    hard assignment, gathered rows, EM) must live in a module that imports nothing heavy
    (the EM layer or the initialisation would bring the file layer and scikit-learn's
    k-means, ~65 MiB a worker)."""
    import sys

    from distributed import Client

    from daskgmm import GaussianMixture

    X = np.random.RandomState(0).normal(size=(4000, 3))
    X[::50, 1] = np.nan  # and the missing-value passes
    with local_cluster() as cluster, Client(cluster) as client:
        for init_params in ("kmeans", "random_from_data"):
            GaussianMixture(
                2, init_params=init_params, missing="marginalize", random_state=0, max_iter=3
            ).fit(da.from_array(X, chunks=1000))
        loaded = client.run(
            lambda: sorted(m for m in sys.modules if m.startswith(("daskgmm", "sklearn")))
        )
    for modules in loaded.values():
        assert "daskgmm._stats" in modules, modules
        heavy = {"daskgmm._em", "daskgmm._init", "daskgmm._checkpoint", "daskgmm._lock"}
        assert not heavy & set(modules), modules
        assert not any(m.startswith("sklearn") for m in modules), modules
