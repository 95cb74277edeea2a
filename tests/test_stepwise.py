"""Stepwise (mini-batch) EM: ``algorithm='stepwise'``, ``partial_fit`` and ``daskgmm update``.

Oracles: the moments of a weighted union (what blending running statistics
must give), batch EM from the same start (a stepwise fit ends at a batch-EM
fixed point), the update written out by hand in NumPy, uninterrupted fits for
resume after a SIGKILL, and ``partial_fit`` in Python for the command line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

from daskgmm import BayesianGaussianMixture, GaussianMixture, load
from daskgmm._checkpoint import Checkpoint
from daskgmm._data import open_input, worker_threads
from daskgmm._em import GaussianEM, fit_mixture
from daskgmm._state import Stepwise
from daskgmm._stats import GMMParams, suffstats_chunk
from daskgmm._stepwise import Running, step_size

from .conftest import COVARIANCE_TYPES, RandomData
from .test_cli import ENV, _run, scheduler_address  # noqa: F401 (fixture)

ESTIMATORS = [GaussianMixture, BayesianGaussianMixture]


def _overlapping(n, seed=0, n_components=4, n_features=3):
    """Components that overlap (EM needs tens of iterations on them)."""
    rng = np.random.RandomState(seed)
    means = rng.normal(0, 1.5, (n_components, n_features))
    a = rng.normal(0, 1, (n_components, n_features, n_features)) / np.sqrt(n_features)
    chol = np.linalg.cholesky(a @ a.transpose(0, 2, 1) + 0.3 * np.eye(n_features))
    labels = rng.choice(n_components, n, p=rng.dirichlet(5 * np.ones(n_components)))
    noise = rng.standard_normal((n, n_features))
    return means[labels] + np.einsum("nij,nj->ni", chol[labels], noise)


@pytest.fixture(scope="module")
def blobs():
    return _overlapping(40_000)


def _start(X, k, ct="full", seed=0, init_params="random_from_data"):
    """A fixed initialisation (default: random points of X), for runs to share."""
    init = GaussianMixture(
        k, covariance_type=ct, init_params=init_params, max_iter=0, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        init.fit(X)
    return {
        "weights_init": init.weights_,
        "means_init": init.means_,
        "precisions_init": init.precisions_,
    }


# ------------------------------------------------------------ the statistics
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_a_step_gives_the_moments_of_the_weighted_union(ct):
    data = RandomData(np.random.RandomState(1), n_samples=900, n_components=3, n_features=4)
    X = data.X[ct] + 1e4  # far from the origin: the moments must not cancel
    a, b = X[::2], X[1::2][::2]
    params = GMMParams.from_covariances(ct, data.weights, data.means + 1e4, data.covariances[ct])
    ep = params.estep()
    ra = Running.of(suffstats_chunk(a, ep), params.means, ep.shift, ct)
    rb = Running.of(suffstats_chunk(b, ep), params.means, ep.shift, ct)
    eta = 0.3
    step = ra.step(rb, eta)
    union = np.vstack([a, b])
    w = np.concatenate([np.full(len(a), (1 - eta) / len(a)), np.full(len(b), eta / len(b))])
    ru = Running.of(suffstats_chunk(union, ep, sample_weight=w), params.means, ep.shift, ct)
    np.testing.assert_allclose(step.nk, ru.nk, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(step.means, ru.means, rtol=1e-12)
    np.testing.assert_allclose(step.covariances, ru.covariances, rtol=1e-8, atol=1e-12)
    assert (step.n_steps, step.n_samples, step.weight) == (2, len(a) + len(b), len(a) + len(b))
    assert step.score == rb.score  # the last batch's, not an average
    # a step of 1 (a batch-EM pass) replaces the statistics, and counts
    whole = ra.step(rb, 1.0)
    np.testing.assert_array_equal(whole.covariances, rb.covariances)
    assert whole.n_steps == 2


def test_step_sizes():
    assert step_size(0, 0.6, 2.0) == 1.0
    assert step_size(1, 0.6, 2.0) == pytest.approx(3.0**-0.6)
    assert step_size(98, 1.0, 2.0) == pytest.approx(0.01)


# ---------------------------------------------------------------- the fit
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_stepwise_fit_ends_at_batch_ems_fixed_point(ct):
    data = RandomData(np.random.RandomState(0), n_samples=20_000, n_components=3, n_features=3)
    X = da.from_array(data.X[ct], chunks=500)
    start = _start(data.X[ct], 3, ct, init_params="kmeans")
    batch = GaussianMixture(3, covariance_type=ct, tol=1e-8, **start).fit(X)
    gm = GaussianMixture(
        3, covariance_type=ct, tol=1e-8, algorithm="stepwise", random_state=0, **start
    ).fit(X)
    # an epoch of stepwise updates (a block per thread each), then batch EM passes
    updates = -(-X.numblocks[0] // worker_threads())
    assert gm.converged_ and gm.n_steps_ == updates + gm.n_iter_ - 1
    # ... to tol: a fixed point of batch EM (another pass moves nothing), at least as
    # good as batch EM's from the same start, with the generating means recovered
    again = GaussianMixture(
        3, covariance_type=ct, max_iter=2, tol=0, weights_init=gm.weights_,
        means_init=gm.means_, precisions_init=gm.precisions_,
    ).fit(X)  # fmt: skip
    assert abs(again.lower_bounds_[1] - again.lower_bounds_[0]) < 1e-8
    assert again.lower_bounds_[0] == pytest.approx(gm.lower_bound_, abs=1e-8)
    assert gm.lower_bound_ >= batch.lower_bound_ - 1e-6
    truth = data.means[np.argsort(data.means[:, 0])]
    np.testing.assert_allclose(gm.means_[np.argsort(gm.means_[:, 0])], truth, atol=0.2)
    assert len(gm.lower_bounds_) == gm.n_iter_


def test_one_stepwise_epoch_does_what_several_batch_passes_do(blobs):
    X = da.from_array(blobs, chunks=250)  # 160 blocks: 80 updates an epoch on 2 threads
    start = _start(blobs, 4)
    batch = GaussianMixture(4, tol=0, max_iter=5, **start)
    gm = GaussianMixture(4, tol=1e-5, max_iter=500, algorithm="stepwise", **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch.fit(X)
        gm.fit(X)
    # lower_bounds_[j]: the exact bound after j reads (a stepwise run's first is its
    # epoch's estimate; its second, the first batch pass's, measures that epoch)
    assert gm.lower_bounds_[1] > batch.lower_bounds_[4]
    assert gm.converged_


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_stepwise_fit_is_reproducible(Estimator, blobs):
    X = da.from_array(blobs[:8000], chunks=400)
    kw = dict(algorithm="stepwise", step_blocks=2, random_state=3, tol=1e-4, max_iter=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = Estimator(4, **kw).fit(X)
        b = Estimator(4, **kw).fit(X)
        c = Estimator(4, **{**kw, "random_state": 4}).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.lower_bounds_ == b.lower_bounds_
    assert c.lower_bounds_[:2] != a.lower_bounds_[:2]  # another order of the blocks


def test_scheduler_invariance(blobs, cluster_client):
    X = da.from_array(blobs[:8000], chunks=400)
    kw = dict(algorithm="stepwise", step_blocks=2, random_state=3, max_iter=3, tol=0)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for where in ("sync", "threads", cluster_client):
            with dask.config.set(scheduler=where):
                results.append(GaussianMixture(4, **kw).fit(X))
    for other in results[1:]:
        np.testing.assert_allclose(other.means_, results[0].means_, rtol=1e-12)
        assert other.n_steps_ == results[0].n_steps_


def test_restarts_share_each_update_without_changing_restart_zero(blobs):
    X = da.from_array(blobs[:8000], chunks=400)
    model = GaussianEM("full", 1e-6, 4, "kmeans")
    schedule = Stepwise(2, 2, 0.6, 2.0, 0)
    runs = [
        fit_mixture(
            X,
            model,
            n_init=n_init,
            random_state=np.random.RandomState(0),
            tol=1e-3,
            max_iter=100,
            stepwise=schedule,
        )[1]
        for n_init in (1, 3)
    ]
    assert len(runs[1]) == 3
    np.testing.assert_array_equal(runs[1][0].params.means, runs[0][0].params.means)
    assert runs[1][0].lower_bounds == runs[0][0].lower_bounds


def test_stepwise_with_weights_missing_values_and_float32(blobs):
    dtype = np.float32
    X = blobs[:5000].astype(dtype)
    holes = X.copy()
    holes[np.random.RandomState(0).rand(*X.shape) < 0.05] = np.nan
    w = np.random.RandomState(1).randint(0, 3, len(X)).astype(float)
    start = _start(blobs[:5000], 4, init_params="kmeans")
    kw = dict(tol=1e-5, max_iter=300, missing="marginalize", **start)
    Xd, wd = da.from_array(holes, chunks=300), da.from_array(w, chunks=300)
    batch = GaussianMixture(4, **kw).fit(Xd, sample_weight=wd)
    gm = GaussianMixture(4, algorithm="stepwise", random_state=0, **kw).fit(Xd, sample_weight=wd)
    assert gm.means_.dtype == dtype and gm.converged_
    assert gm.lower_bound_ == pytest.approx(batch.lower_bound_, abs=1e-3)


def test_stepwise_fit_of_an_image_gives_a_label_map(blobs):
    import xarray as xr

    image = xr.DataArray(blobs[:19_200].T.reshape(3, 120, 160), dims=("band", "y", "x")).chunk(
        {"y": 10}
    )
    gm = GaussianMixture(4, algorithm="stepwise", feature_dim="band", random_state=0).fit(image)
    labels = gm.predict(image)
    assert labels.dims == ("y", "x") and labels.shape == (120, 160)
    assert gm.n_steps_ > 1 + 12 // worker_threads()  # updates of a few 1600-pixel blocks
    pixels = image.stack(pixel=("y", "x")).transpose("pixel", "band").values
    np.testing.assert_array_equal(labels.values.ravel(), gm.predict(pixels))


def test_stepwise_names_the_row_of_a_nan(blobs):
    X = blobs[:5000].copy()
    X[4321, 1] = np.nan
    gm = GaussianMixture(2, algorithm="stepwise", init_params="random_from_data", random_state=0)
    with pytest.raises(ValueError, match=r"first in row 4321\)"):
        gm.fit(da.from_array(X, chunks=250))


# ------------------------------------------------------------ partial_fit
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_one_partial_fit_pass_is_within_1e_2_of_batch_em(Estimator, blobs):
    # the variational mixture's batch fit of the overlapping blobs finds another
    # optimum than EM's (and a stream's): it takes separated ones
    X = blobs
    if Estimator is BayesianGaussianMixture:
        X = RandomData(np.random.RandomState(2), 40_000, 4, 3, scale=8).X["full"]
        X = X[np.random.RandomState(0).permutation(len(X))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = Estimator(4, random_state=0, max_iter=500).fit(X)
    gm = Estimator(4, random_state=0)
    for chunk in np.array_split(X, 40):  # a stream of 1000-row chunks, read once
        gm.partial_fit(chunk)
    assert gm.n_steps_ == 40 and gm.n_samples_seen_ == len(X)
    # (the variational stream lands ~1e-2 below its batch fit, twice EM's gap there)
    tolerance = 1e-2 if Estimator is GaussianMixture else 2e-2
    assert gm.score(X) >= batch.score(X) - tolerance


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_partial_fit_of_a_fitted_model_is_one_update_never_an_initialisation(ct, blobs):
    X, Y = blobs[:20_000], blobs[20_000:26_000]
    gm = GaussianMixture(4, covariance_type=ct, random_state=0).fit(X)
    before, running = gm._params, gm.running_statistics_
    assert running.n_steps == gm.n_iter_ and running.n_samples == gm.n_iter_ * len(X)
    # the update by hand: Y's statistics under the fitted parameters, one step, the M-step
    ep = before.estep()
    batch = Running.of(suffstats_chunk(Y, ep), before.means, ep.shift, ct)
    step = running.step(batch, step_size(running.n_steps, gm.learning_decay, gm.learning_offset))
    nk, means, covariances = step.moments(1.0, 1e-6)
    expected = GMMParams.from_covariances(ct, nk / nk.sum(), means, covariances)
    gm.set_params(random_state=99, init_params="random")  # never used again
    gm.partial_fit(da.from_array(Y, chunks=700))
    np.testing.assert_allclose(gm.means_, expected.means, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, expected.covariances, rtol=1e-8)
    np.testing.assert_allclose(gm.weights_, expected.weights, rtol=1e-10)
    assert gm.n_steps_ == running.n_steps + 1 and not gm.converged_


def test_partial_fit_weights_equal_repeated_rows(blobs):
    X = blobs[:3000]
    w = np.random.RandomState(0).randint(0, 4, len(X))
    start = _start(blobs, 4)
    a = GaussianMixture(4, **start).partial_fit(X, sample_weight=w.astype(float))
    b = GaussianMixture(4, **start).partial_fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9)


def test_partial_fit_bad_input(blobs):
    gm = GaussianMixture(4, random_state=0)
    with pytest.raises(ValueError, match="first partial_fit batch needs n_samples >= n_components"):
        gm.partial_fit(blobs[:3])
    gm.partial_fit(blobs[:2000])
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.partial_fit(blobs[:100, :2])
    with pytest.raises(ValueError, match="sample_weight sums to zero"):
        gm.partial_fit(blobs[:100], sample_weight=np.zeros(100))
    gm.set_params(covariance_type="diag")
    with pytest.raises(ValueError, match="fitted with covariance_type='full'; partial_fit cannot"):
        gm.partial_fit(blobs[:100])
    with pytest.raises(ValueError, match="learning_decay"):
        GaussianMixture(2, learning_decay=0.5).partial_fit(blobs[:100])


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_model_file_keeps_the_running_statistics(Estimator, blobs, tmp_path):
    gm = Estimator(4, random_state=0, max_iter=3)
    gm.partial_fit(blobs[:5000])
    gm.save(tmp_path / "m.zarr")
    loaded = load(tmp_path / "m.zarr")
    assert type(loaded) is Estimator
    for name in ("nk", "means", "covariances"):
        np.testing.assert_array_equal(
            getattr(loaded.running_statistics_, name), getattr(gm.running_statistics_, name)
        )
    assert (loaded.n_steps_, loaded.n_samples_seen_) == (1, 5000)
    gm.partial_fit(blobs[5000:9000])
    loaded.partial_fit(blobs[5000:9000])
    np.testing.assert_array_equal(loaded.means_, gm.means_)
    # a damaged statistic is refused with one line naming the file
    zarr.open_array(str(tmp_path / "m.zarr" / "running-nk"), mode="r+")[0] = -1.0
    with pytest.raises(ValueError, match=r"m\.zarr.*'nk' holds invalid values"):
        load(tmp_path / "m.zarr")


# ---------------------------------------------------------- resume after kill
_FIT_SCRIPT = """
import sys, warnings
from daskgmm import GaussianMixture
warnings.simplefilter("ignore")
GaussianMixture(4, algorithm="stepwise", step_blocks=1, random_state=0, max_iter=6,
                tol=0).fit(sys.argv[1], checkpoint=sys.argv[2])
"""


@pytest.mark.slow
def test_stepwise_fit_killed_mid_epoch_resumes_to_the_same_model(blobs, tmp_path, caplog):
    store = str(tmp_path / "x.zarr")
    z = zarr.create_array(store, shape=blobs.shape, chunks=(1000, 3), dtype="f8")
    z[:] = blobs
    ckpt = tmp_path / "ckpt"
    env = {**ENV, "DASK_DASKGMM__STEPWISE_SAVE_SECONDS": "0"}  # a checkpoint per update
    proc = subprocess.Popen(
        [sys.executable, "-c", _FIT_SCRIPT, store, str(ckpt)], env=env, stderr=subprocess.PIPE
    )
    position, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            latest = json.loads((ckpt / "LATEST").read_text())["state"]
            position = json.loads((ckpt / latest / "state.json").read_text())["position"]
        except (OSError, ValueError, KeyError):
            position = None
        if position and position["block"] >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state, _ = Checkpoint(ckpt).load()
    assert not state.complete and state.position.block > 0, state.position
    kw = dict(algorithm="stepwise", step_blocks=1, random_state=0, max_iter=6, tol=0)
    with warnings.catch_warnings(), caplog.at_level("INFO", logger="daskgmm"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        resumed = GaussianMixture(4, **kw).fit(store, checkpoint=ckpt)
        uninterrupted = GaussianMixture(4, **kw).fit(store)
    assert "Resuming from checkpoint" in caplog.text
    np.testing.assert_array_equal(resumed.means_, uninterrupted.means_)
    np.testing.assert_array_equal(resumed.covariances_, uninterrupted.covariances_)
    assert resumed.lower_bounds_ == uninterrupted.lower_bounds_
    assert resumed.n_steps_ == uninterrupted.n_steps_


# ------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def stores(tmp_path_factory, blobs):
    tmp = tmp_path_factory.mktemp("stepwise-cli")
    for name, rows in (("x.zarr", blobs[:20_000]), ("day.zarr", blobs[20_000:26_000])):
        z = zarr.create_array(str(tmp / name), shape=rows.shape, chunks=(500, 3), dtype="f8")
        z[:] = rows
    return tmp


SMALL_BLOCKS = {"DASK_DASKGMM__CHUNK_BYTES": str(500 * 3 * 8)}  # a block per store chunk


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_fit_command_runs_stepwise_as_python_does(
    Estimator,
    stores,
    tmp_path,
    scheduler_address,  # noqa: F811
    cluster_client,
):
    out = tmp_path / "m.zarr"
    kind = "gaussian" if Estimator is GaussianMixture else "bayesian"
    r = _run("fit", stores / "x.zarr", "-k", 4, "--model", kind, "--algorithm", "stepwise",
             "--stepwise-epochs", 2, "--learning-decay", 0.7, "--step-blocks", 2,
             "--max-iter", 4, "-o", out, "--scheduler", scheduler_address)  # fmt: skip
    assert r.returncode == 0, r.stderr
    gm = load(out)
    assert type(gm) is Estimator and gm.algorithm == "stepwise"
    assert (gm.stepwise_epochs, gm.learning_decay, gm.step_blocks) == (2, 0.7, 2)
    # the same fit in Python on a cluster of as many worker threads (two), which
    # sets the blocks a stepwise fit re-opens the store in
    kw = dict(algorithm="stepwise", stepwise_epochs=2, learning_decay=0.7, step_blocks=2)
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            python = Estimator(4, random_state=0, max_iter=4, **kw).fit(str(stores / "x.zarr"))
    assert gm.n_steps_ == python.n_steps_ > 2 * 10
    np.testing.assert_allclose(gm.means_, python.means_, rtol=1e-10)
    assert gm.lower_bounds_ == pytest.approx(python.lower_bounds_, rel=1e-10)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_update_command_equals_partial_fit(Estimator, stores, tmp_path, scheduler_address):  # noqa: F811
    model, updated = tmp_path / "m.zarr", tmp_path / "m2.zarr"
    Estimator(4, random_state=0, max_iter=20).fit(str(stores / "x.zarr")).save(model)
    original = load(model).means_
    env = {**ENV, **SMALL_BLOCKS}
    r = _run("update", model, stores / "day.zarr", "-o", updated, "--step-blocks", 3,
             "--scheduler", scheduler_address, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "4 updates from 6,000 samples" in r.stdout
    expected = load(model)
    with dask.config.set({"daskgmm.chunk-bytes": 500 * 3 * 8}):
        X = open_input(str(stores / "day.zarr")).X
    assert X.numblocks[0] == 12
    for start in range(0, 12, 3):
        expected.partial_fit(X.blocks[start : start + 3])
    got = load(updated)
    np.testing.assert_allclose(got.means_, expected.means_, rtol=1e-12)
    np.testing.assert_allclose(got.covariances_, expected.covariances_, rtol=1e-12)
    assert got.n_steps_ == expected.n_steps_
    np.testing.assert_array_equal(load(model).means_, original)  # MODEL untouched
    again = _run("update", model, stores / "day.zarr", "-o", updated, "--step-blocks", 3,
                 "--scheduler", scheduler_address, env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr  # a re-run writes the same model again
    inplace = _run("update", model, stores / "day.zarr", "-o", model,
                   "--scheduler", scheduler_address)  # fmt: skip
    assert inplace.returncode == 3 and "--overwrite" in inplace.stderr
    np.testing.assert_array_equal(load(model).means_, original)


def test_update_command_bad_input(stores, tmp_path):
    r = _run("update", tmp_path / "none.zarr", stores / "day.zarr", "-o", tmp_path / "m2.zarr")
    assert r.returncode == 2 and "does not exist" in r.stderr
    model = tmp_path / "m.zarr"
    GaussianMixture(2, random_state=0).fit(np.random.RandomState(0).rand(100, 2)).save(model)
    r = _run("update", model, stores / "day.zarr", "-o", tmp_path / "m2.zarr")
    assert r.returncode == 2 and "trained on 2 features" in r.stderr
    r = _run("update", model, stores / "day.zarr", "-o", stores / "day.zarr" / "m")
    assert r.returncode == 3 and "inside" in r.stderr
