"""BayesianGaussianMixture: scikit-learn's variational mixture through daskgmm's driver.

Oracles: scikit-learn's BayesianGaussianMixture continued from the same state,
and the truth a generated mixture was drawn from.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture

import daskgmm
from daskgmm import BayesianGaussianMixture
from daskgmm._covariance import get_covariance_model

from .conftest import COVARIANCE_TYPES, Stop, chunkings, stop_after

PRIOR_TYPES = ["dirichlet_process", "dirichlet_distribution"]
ATTRIBUTES = [
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "mean_precision_",
    "degrees_of_freedom_",
]


def _quiet(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, **kw)


@pytest.fixture(scope="module")
def three():
    rng = np.random.default_rng(0)
    return np.concatenate(
        [
            rng.normal(0, 1, (300, 3)),
            rng.normal(5, 1, (300, 3)),
            rng.normal([0, 6, 2], 0.5, (300, 3)),
        ]
    )


def _assert_same(ours, sk, rtol):
    for name in ATTRIBUTES:
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=rtol, err_msg=name)
    for got, expected in zip(
        np.atleast_2d(ours.weight_concentration_),
        np.atleast_2d(sk.weight_concentration_),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected, rtol=rtol)
    assert ours.lower_bound_ == pytest.approx(float(np.ravel(sk.lower_bound_)[0]), rel=rtol)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("data", ["numpy", "dask"])
def test_parity_with_scikit_learn_from_the_same_state(three, ct, prior_type, data):
    """One scikit-learn iteration, converted; both continued 20 iterations with
    warm_start and tol=0: every attribute and the bound to 1e-8."""
    kw = dict(
        n_components=5, covariance_type=ct, weight_concentration_prior_type=prior_type,
        random_state=0,
    )  # fmt: skip
    sk = _quiet(SkBayesianGaussianMixture(max_iter=1, **kw), three)
    ours = BayesianGaussianMixture.from_sklearn(sk).set_params(warm_start=True, max_iter=20, tol=0)
    _quiet(sk.set_params(warm_start=True, max_iter=20, tol=0), three)
    X = three if data == "numpy" else da.from_array(three, chunks=((137, 263, 1, 99, 400), 3))
    _quiet(ours, X)
    _assert_same(ours, sk, rtol=1e-8)
    assert ours.n_iter_ == sk.n_iter_ == 20
    np.testing.assert_array_equal(ours.predict(three), sk.predict(three))
    np.testing.assert_allclose(ours.score_samples(three), sk.score_samples(three), rtol=1e-8)
    # and back: the scikit-learn copy predicts the same
    np.testing.assert_allclose(ours.to_sklearn().predict_proba(three), sk.predict_proba(three),
                               rtol=1e-6, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_data_priors_come_from_the_initialisation(three, ct, counting_scheduler):
    """scikit-learn's defaults: the data's mean and covariance (ddof=1), for every
    initialiser, from a pass it makes anyway ('random_from_data', which reads only its
    rows, makes one more)."""
    from daskgmm import GaussianMixture

    for init in ("kmeans", "random", "k-means++", "random_from_data"):
        kw = dict(n_components=4, covariance_type=ct, init_params=init, random_state=0, max_iter=1)
        before = counting_scheduler.computes
        _quiet(GaussianMixture(**kw), da.from_array(three, chunks=200))
        passes = counting_scheduler.computes - before
        before = counting_scheduler.computes
        ours = _quiet(BayesianGaussianMixture(**kw), da.from_array(three, chunks=200))
        assert counting_scheduler.computes - before == passes + (init == "random_from_data")
        sk = _quiet(SkBayesianGaussianMixture(**kw), three)
        np.testing.assert_allclose(ours.mean_prior_, sk.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(ours.covariance_prior_, sk.covariance_prior_, rtol=1e-12)
        assert ours.degrees_of_freedom_prior_ == sk.degrees_of_freedom_prior_
        assert ours.weight_concentration_prior_ == sk.weight_concentration_prior_


def test_a_dirichlet_process_switches_off_what_the_data_do_not_support():
    """Five true components, twenty allowed: 99 % of the weight on five that match the
    truth; the bound never decreases; the same for any chunking."""
    rng = np.random.default_rng(1)
    means = rng.normal(scale=10, size=(5, 3))
    X = means[rng.integers(0, 5, 4000)] + rng.normal(size=(4000, 3))
    kw = dict(n_components=20, random_state=0, max_iter=1000, n_init=2)
    bgm = _quiet(BayesianGaussianMixture(**kw), da.from_array(X, chunks=800))
    assert bgm.converged_
    top = np.argsort(bgm.weights_)[::-1][:5]
    assert bgm.weights_[top].sum() > 0.99
    distance = np.linalg.norm(bgm.means_[top][:, None] - means[None], axis=2)
    assert sorted(distance.argmin(axis=1)) == [0, 1, 2, 3, 4] and distance.min(axis=1).max() < 0.25
    bounds = np.array(bgm.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))
    ragged = da.from_array(X, chunks=(chunkings(len(X))["ragged"], 3))
    other = _quiet(BayesianGaussianMixture(**kw), ragged)
    np.testing.assert_allclose(other.means_, bgm.means_, rtol=1e-8, atol=1e-10)


def test_killed_fit_resumes_to_the_same_model(three, tmp_path):
    X = da.from_array(three, chunks=200)
    kw = dict(n_components=4, n_init=2, random_state=3, tol=0, max_iter=15)
    reference = _quiet(BayesianGaussianMixture(**kw), X)
    with pytest.raises(Stop):
        _quiet(
            BayesianGaussianMixture(**kw), X, checkpoint=tmp_path / "ckpt", callback=stop_after(7)
        )
    resumed = _quiet(BayesianGaussianMixture(**kw), X, checkpoint=tmp_path / "ckpt")
    _assert_same(resumed, reference, rtol=1e-12)
    assert resumed.lower_bounds_ == pytest.approx(reference.lower_bounds_, rel=1e-12)
    # a Gaussian mixture's checkpoint is another fit, and the other way round
    from daskgmm import GaussianMixture

    with pytest.raises(ValueError):
        GaussianMixture(4, n_init=2, random_state=3, tol=0, max_iter=15).fit(
            X, checkpoint=tmp_path / "ckpt"
        )


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_model_files_round_trip_and_say_what_they_hold(three, tmp_path, ct, prior_type):
    bgm = _quiet(
        BayesianGaussianMixture(
            n_components=3, covariance_type=ct, weight_concentration_prior_type=prior_type,
            random_state=0, max_iter=5,
        ),
        three.astype(np.float32),
    )  # fmt: skip
    bgm.save(tmp_path / "m.zarr")
    for loaded in (
        daskgmm.load(tmp_path / "m.zarr"),
        daskgmm.GaussianMixture.load(tmp_path / "m.zarr"),
    ):
        assert type(loaded) is BayesianGaussianMixture
        _assert_same(loaded, bgm, rtol=0)
        assert loaded.means_.dtype == np.float32
        assert loaded.get_params() == bgm.get_params()
        np.testing.assert_array_equal(loaded.predict(three), bgm.predict(three))


def test_bad_parameters_are_refused_with_scikit_learns_words(three):
    with pytest.raises(ValueError, match="'degrees_of_freedom_prior' should be greater than 2"):
        BayesianGaussianMixture(2, degrees_of_freedom_prior=1.5).fit(three)
    with pytest.raises(ValueError, match=r"'full covariance_prior' should have the shape"):
        BayesianGaussianMixture(2, covariance_prior=np.eye(2)).fit(three)
    with pytest.raises(ValueError, match="'full precision' should be symmetric"):
        BayesianGaussianMixture(2, covariance_prior=-np.eye(3)).fit(three)
    with pytest.raises(ValueError, match=r"The parameter 'means' should have the shape"):
        BayesianGaussianMixture(2, mean_prior=[0.0, 1.0]).fit(three)
    with pytest.raises(ValueError, match="weight_concentration_prior_type"):
        BayesianGaussianMixture(2, weight_concentration_prior_type="uniform").fit(three)
    with pytest.raises(AttributeError, match="no BIC or AIC"):
        _quiet(BayesianGaussianMixture(2, max_iter=2), three).bic(three)
    params = BayesianGaussianMixture().get_params()
    assert "missing" in params and not {"weights_init", "means_init"} & set(params)
    assert set(SkBayesianGaussianMixture().get_params()) <= set(
        BayesianGaussianMixture().get_params()
    )


def test_given_priors_are_used(three):
    kw = dict(
        n_components=3, mean_prior=[1.0, 2.0, 3.0], covariance_prior=2 * np.eye(3),
        degrees_of_freedom_prior=5.0, mean_precision_prior=0.5, weight_concentration_prior=0.1,
        random_state=0, max_iter=3,
    )  # fmt: skip
    ours = _quiet(BayesianGaussianMixture(**kw), three)
    sk = _quiet(SkBayesianGaussianMixture(**kw), three)
    for name in ("mean_prior_", "covariance_prior_", "degrees_of_freedom_prior_",
                 "mean_precision_prior_", "weight_concentration_prior_"):  # fmt: skip
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name))
    with dask.config.set(scheduler="sync"):
        again = _quiet(BayesianGaussianMixture(**kw), da.from_array(three, chunks=100))
    np.testing.assert_allclose(again.means_, ours.means_, rtol=1e-10)


def test_what_gaussian_mixture_takes_works_here_too(three, tmp_path):
    """Zarr streamed in blocks, xarray label maps, sample_weight (integer weights equal
    repeated samples), float32 in and out: the driver's, for this model as for EM."""
    import xarray as xr
    import zarr

    kw = dict(n_components=3, random_state=0, tol=0, max_iter=10)
    reference = _quiet(BayesianGaussianMixture(**kw), three)
    z = zarr.create_array(tmp_path / "x.zarr", shape=three.shape, chunks=(128, 3), dtype="f8")
    z[:] = three
    streamed = _quiet(BayesianGaussianMixture(cache=False, **kw), str(tmp_path / "x.zarr"))
    np.testing.assert_allclose(streamed.means_, reference.means_, rtol=1e-10)
    image = xr.DataArray(three.T.reshape(3, 30, 30), dims=("band", "y", "x"))
    labels = _quiet(BayesianGaussianMixture(feature_dim="band", **kw), image).predict(image)
    assert labels.dims == ("y", "x")
    np.testing.assert_array_equal(labels.values.ravel(), reference.predict(three))
    # integer weights equal repeated samples, from one state (warm starts continue it)
    w = np.random.RandomState(0).randint(1, 4, size=len(three))
    sk = _quiet(SkBayesianGaussianMixture(n_components=3, random_state=0, max_iter=1), three)
    fits = []
    for X, weights in ((three, w), (np.repeat(three, w, axis=0), None)):
        est = BayesianGaussianMixture.from_sklearn(sk).set_params(warm_start=True, max_iter=10)
        fits.append(_quiet(est.set_params(tol=0), X, sample_weight=weights))
    _assert_same(fits[0], fits[1], rtol=1e-9)
    single = _quiet(BayesianGaussianMixture(**kw), three.astype(np.float32))
    assert single.means_.dtype == np.float32 and single.covariances_.dtype == np.float32
    np.testing.assert_allclose(single.means_, reference.means_, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_missing_values_in_the_variational_fit(three, ct):
    """Without NaN the mode changes nothing; with holes, the statistics' entropy score is
    the one of the marginal responsibilities predict_proba gives, every pattern path
    (kernels, batched, diagonal) alike; the bound never decreases."""
    from daskgmm._stats import suffstats_chunk_many

    kw = dict(n_components=3, covariance_type=ct, init_params="random", random_state=0)
    plain = _quiet(BayesianGaussianMixture(tol=0, max_iter=8, **kw), three)
    marg = _quiet(BayesianGaussianMixture(missing="marginalize", tol=0, max_iter=8, **kw), three)
    _assert_same(marg, plain, rtol=1e-12)
    rng = np.random.RandomState(0)
    X = three.copy()
    X[rng.random_sample(X.shape) < 0.2] = np.nan
    X[:300, 2] = np.nan  # a pattern large enough for the kernels
    X[5] = np.nan
    bgm = _quiet(BayesianGaussianMixture(missing="marginalize", max_iter=200, **kw), X)
    bounds = np.array(bgm.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))
    proba = bgm.predict_proba(X)
    observed = ~np.isnan(proba[:, 0])
    assert np.array_equal(observed, ~np.isnan(X).all(axis=1)) and bgm.predict(X)[5] == -1
    # the score: sum r log r, less the missing values' entropy 1/2 sum r log det C_k
    r = np.clip(proba[observed], np.finfo(float).tiny, None)
    covariances = get_covariance_model(ct).dense_covariances(bgm._params.precisions_cholesky, 3, 3)
    conditional = 0.0
    for n, x in zip(np.flatnonzero(observed), X[observed], strict=True):
        o, m = ~np.isnan(x), np.isnan(x)
        if m.any():
            for k in range(3):
                c = covariances[k]
                cond = c[np.ix_(m, m)] - c[np.ix_(m, o)] @ np.linalg.solve(
                    c[np.ix_(o, o)], c[np.ix_(o, m)]
                )
                conditional += proba[n, k] * np.linalg.slogdet(cond)[1]
    (stats,) = suffstats_chunk_many(X, (bgm._params.estep(),), missing=True).parts
    expected = np.sum(r * np.log(r)) - 0.5 * conditional
    assert stats.loglik == pytest.approx(expected, rel=1e-8, abs=1e-8)
    assert stats.n_samples == observed.sum()


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_offset_data_keep_their_digits(three, ct):
    """A million units from the origin, from the same state: the model of the same samples
    near the origin, shifted (the statistics are shifted float64, as for EM)."""
    sk = _quiet(SkBayesianGaussianMixture(n_components=3, covariance_type=ct, max_iter=1,
                                          random_state=0), three)  # fmt: skip
    near = BayesianGaussianMixture.from_sklearn(sk)
    far = BayesianGaussianMixture.from_sklearn(sk)
    far.means_ = far.means_ + 1e6
    far.mean_prior_ = far.mean_prior_ + 1e6
    for est, X in ((near, three), (far, three + 1e6)):
        _quiet(est.set_params(warm_start=True, max_iter=20, tol=0), X)
    np.testing.assert_allclose(far.means_ - 1e6, near.means_, atol=1e-8)
    np.testing.assert_allclose(far.covariances_, near.covariances_, rtol=1e-8)
    assert far.lower_bound_ == pytest.approx(near.lower_bound_, rel=1e-9)
