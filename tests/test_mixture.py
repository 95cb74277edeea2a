"""The estimator: scikit-learn API, recovery, stability, equivalences, bad input."""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import daskgmm
from daskgmm import GaussianMixture
from daskgmm.bayesian import BayesianGaussianMixture

from .conftest import COVARIANCE_TYPES, RandomData, Stop, chunkings, stop_after

#: Tests of what both estimators share run on both (the driver, inputs, errors).
ESTIMATORS = [GaussianMixture, BayesianGaussianMixture]

# k-means|| draws one uniform per row, so integer weights and repeated rows draw
# different candidates; on this check's structureless data (15 uniform points in 30
# dimensions) they reach different local optima. Given the same initial parameters
# weights and repetitions agree to 1e-10: test_integer_sample_weight_equals_repeated_rows.
_EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "random k-means|| candidates differ between weighted and repeated rows"
    ),
}


@parametrize_with_checks(
    [GaussianMixture(n_components=2, max_iter=20)],
    expected_failed_checks=lambda est: _EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------ recovery
def _match(true_means, fitted_means):
    """Fitted component index for each true component (by nearest mean)."""
    from scipy.optimize import linear_sum_assignment

    cost = ((true_means[:, None] - fitted_means[None]) ** 2).sum(-1)
    return linear_sum_assignment(cost)[1]


@pytest.mark.parametrize(
    "ct, n_components, n_features",
    [("full", 3, 2), ("full", 5, 4), ("tied", 4, 3), ("diag", 3, 5), ("spherical", 6, 2)],
)
def test_recovers_known_mixture(ct, n_components, n_features):
    data = RandomData(
        np.random.RandomState(42),
        n_samples=4000,
        n_components=n_components,
        n_features=n_features,
        scale=80,
    )
    X = da.from_array(data.X[ct], chunks=(700, n_features))
    gm = GaussianMixture(n_components, covariance_type=ct, random_state=0).fit(X)
    assert gm.converged_
    idx = _match(data.means, gm.means_)
    np.testing.assert_allclose(gm.means_[idx], data.means, atol=0.3)
    np.testing.assert_allclose(gm.weights_[idx], data.weights, atol=0.02)
    labels = gm.predict(X).compute()
    assert adjusted_rand_score(data.Y, labels) >= 0.95


# ----------------------------------------------------------------- stability
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_offset_data_keep_their_covariances(ct, dtype):
    data = RandomData(
        np.random.RandomState(3), n_samples=3000, n_components=2, n_features=3, scale=10
    )
    X = data.X[ct]
    init = dict(
        weights_init=data.weights, means_init=data.means, precisions_init=data.precisions[ct]
    )
    kw = dict(n_components=2, covariance_type=ct, tol=0, max_iter=10)
    offset = 1e6
    X_off = (X + offset).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GaussianMixture(**kw, **init).fit(X)
        init["means_init"] = data.means + offset
        off = GaussianMixture(**kw, **init).fit(da.from_array(X_off, chunks=700))
    # float32 stores 1e6 + x to 1/16: that quantisation alone moves variances by ~1e-4
    np.testing.assert_allclose(
        off.covariances_, ref.covariances_, rtol=1e-3, atol=1e-3 * np.abs(ref.covariances_).max()
    )
    np.testing.assert_allclose(off.means_ - offset, ref.means_, atol=0.05)


# -------------------------------------------------------------- equivalences
def _init_of(data, ct):
    return dict(
        weights_init=data.weights, means_init=data.means + 0.5, precisions_init=data.precisions[ct]
    )


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("scale", [1e-20, 1e20, 1e-300])
def test_sample_weights_are_scale_free(ct, scale):
    """Uniform weights of any scale give the unit-weight model (1e-20 each gave
    covariances of 0.043 instead of 0.99, reported as converged)."""
    data = RandomData(np.random.RandomState(5), n_samples=400, n_components=2, n_features=2)
    X = data.X[ct]
    kw = dict(n_components=2, covariance_type=ct, random_state=0)
    unit = GaussianMixture(**kw).fit(X)
    in_memory = (np.full(len(X), scale), X)
    lazy = (da.full(len(X), scale, chunks=90), da.from_array(X, chunks=90))
    for weights, Xw in (in_memory, lazy):
        scaled = GaussianMixture(**kw).fit(Xw, sample_weight=weights)
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_allclose(getattr(scaled, name), getattr(unit, name), rtol=1e-9)
        assert scaled.lower_bound_ == pytest.approx(unit.lower_bound_, rel=1e-9)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_integer_sample_weight_equals_repeated_rows(ct):
    data = RandomData(
        np.random.RandomState(5), n_samples=400, n_components=2, n_features=2, scale=10
    )
    X = data.X[ct]
    counts = np.random.RandomState(1).randint(0, 4, size=len(X))
    kw = dict(n_components=2, covariance_type=ct, tol=0, max_iter=10, **_init_of(data, ct))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = GaussianMixture(**kw).fit(da.from_array(X, chunks=90), sample_weight=counts)
        repeated = GaussianMixture(**kw).fit(np.repeat(X, counts, axis=0))
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)
    assert weighted.lower_bound_ == pytest.approx(repeated.lower_bound_, rel=1e-10)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_chunking_does_not_change_the_fit(ct):
    data = RandomData(
        np.random.RandomState(11), n_samples=1200, n_components=3, n_features=3, scale=30
    )
    fits = [
        GaussianMixture(3, covariance_type=ct, random_state=0, tol=1e-6).fit(
            da.from_array(data.X[ct], chunks=(c, 3))
        )
        for c in chunkings(1200).values()
    ]
    for other in fits[1:]:
        assert other.n_iter_ == fits[0].n_iter_
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_allclose(
                getattr(other, name), getattr(fits[0], name), rtol=1e-10, atol=1e-12
            )


def test_numpy_and_dask_input_agree_and_outputs_follow_input_type(random_data, scheduler):
    X = random_data.X["full"]
    Xd = da.from_array(X, chunks=(97, 3))
    a = GaussianMixture(3, random_state=0).fit(X)
    b = GaussianMixture(3, random_state=0).fit(Xd)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    for method in ("predict", "predict_proba", "score_samples"):
        eager = getattr(a, method)(X)
        lazy = getattr(b, method)(Xd)
        assert isinstance(eager, np.ndarray)
        assert isinstance(lazy, da.Array)
        assert lazy.chunks[0] == Xd.chunks[0]
        np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-10)
    np.testing.assert_array_equal(b.fit_predict(Xd).compute(), b.predict(X))
    assert a.score(X) == pytest.approx(b.score(Xd), rel=1e-12)


def test_xarray_input():
    data = RandomData(np.random.RandomState(0), n_samples=500, n_components=2, n_features=3)
    arr = xr.DataArray(da.from_array(data.X["full"], chunks=100), dims=("sample", "band"))
    gm = GaussianMixture(2, random_state=0).fit(arr)
    labels = gm.predict(arr)
    assert isinstance(labels, xr.DataArray) and isinstance(labels.data, da.Array)
    assert labels.dims == ("sample",) and labels.name == "label"
    assert adjusted_rand_score(data.Y, labels.values) > 0.99
    proba = gm.predict_proba(arr)
    assert proba.dims == ("sample", "component") and isinstance(proba.data, da.Array)
    in_memory = arr.compute()
    eager = GaussianMixture(2, random_state=0).fit(in_memory)
    np.testing.assert_allclose(eager.means_, gm.means_, rtol=1e-10)
    assert isinstance(eager.predict(in_memory).data, np.ndarray)
    with pytest.raises(ValueError, match=re.escape("name the feature dimension with")):
        gm.predict(xr.DataArray(np.zeros((2, 2, 2)), dims=("a", "b", "c")))


def test_bic_aic_score_match_scikit_learn(random_data):
    X = random_data.X["diag"]
    init = _init_of(random_data, "diag")
    kw = dict(n_components=3, covariance_type="diag", max_iter=5, tol=0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGaussianMixture(**kw).fit(X)
        ours = GaussianMixture(**kw).fit(da.from_array(X, chunks=100))
    Xd = da.from_array(X, chunks=77)
    assert ours.bic(Xd) == pytest.approx(sk.bic(X), rel=1e-8)
    assert ours.aic(X) == pytest.approx(sk.aic(X), rel=1e-8)
    assert ours.score(Xd) == pytest.approx(sk.score(X), rel=1e-8)


def test_bic_selects_the_true_number_of_components():
    data = RandomData(
        np.random.RandomState(2), n_samples=3000, n_components=3, n_features=2, scale=40
    )
    X = da.from_array(data.X["full"], chunks=500)
    bics = [GaussianMixture(k, random_state=0).fit(X).bic(X) for k in (1, 2, 3, 4, 5)]
    assert int(np.argmin(bics)) + 1 == 3


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_sample_shapes_and_labels(random_data, ct):
    gm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(random_data.X[ct])
    X, y = gm.sample(5000)
    assert X.shape == (5000, 3) and y.shape == (5000,)
    for k in range(3):
        if np.sum(y == k) > 200:
            np.testing.assert_allclose(X[y == k].mean(axis=0), gm.means_[k], atol=0.3)
    with pytest.raises(ValueError, match="Invalid value for 'n_samples': 0"):
        gm.sample(0)


def test_n_init_keeps_the_best_lower_bound(random_data):
    X = random_data.X["full"]
    single = [
        GaussianMixture(3, init_params="random_from_data", random_state=s, max_iter=3)
        for s in range(1)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        best = GaussianMixture(
            3, init_params="random_from_data", n_init=4, random_state=0, max_iter=3
        ).fit(X)
        first = single[0].fit(X)
    assert best.lower_bound_ >= first.lower_bound_
    assert best.lower_bound_ == best.lower_bounds_[-1]


def test_warm_start_continues():
    X = RandomData(np.random.RandomState(0), n_samples=600, n_components=3, scale=3).X["full"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kw = dict(init_params="random_from_data", tol=0, random_state=0)
        gm = GaussianMixture(3, warm_start=True, max_iter=2, **kw).fit(X)
        means_after_2 = gm.means_.copy()
        gm.fit(X)
        ref = GaussianMixture(3, max_iter=4, **kw).fit(X)
    assert not np.allclose(gm.means_, means_after_2)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-10)


def test_pipeline_clone_and_grid_search(random_data):
    X = np.random.RandomState(0).permutation(random_data.X["full"])
    pipe = make_pipeline(StandardScaler(), GaussianMixture(random_state=0))
    search = GridSearchCV(pipe, {"gaussianmixture__n_components": [1, 3]}, cv=2).fit(X)
    assert search.best_params_["gaussianmixture__n_components"] == 3
    gm = GaussianMixture(4, covariance_type="tied", cache=False)
    assert clone(gm).get_params() == gm.get_params()


def test_fit_does_not_write_to_init_parameters(random_data):
    means = [[0.0, 0.0, 0.0], [10.0, 10.0, 10.0], [20.0, 20.0, 20.0]]
    gm = GaussianMixture(3, means_init=means, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(random_data.X["full"])
    assert gm.means_init is means


def test_verbose_output(random_data, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GaussianMixture(3, verbose=2, verbose_interval=1, max_iter=2, tol=0, random_state=0).fit(
            random_data.X["full"]
        )
    out = capsys.readouterr().out
    assert "Initialization 0" in out
    assert re.search(r"Iteration 2\t time lapse [0-9.]+s\t ll change", out)
    assert "Initialization did not converge. time lapse" in out


# ----------------------------------------------------------------- bad input
X_OK = np.random.RandomState(0).normal(size=(20, 2))


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (
            {"n_components": 0},
            ValueError,
            "The 'n_components' parameter of GaussianMixture must be an int in the range [1, inf)."
            " Got 0 instead.",
        ),
        (
            {"n_components": 21},
            ValueError,
            "Expected n_samples >= n_components but got n_components = 21, n_samples = 20",
        ),
        (
            {"covariance_type": "foo"},
            ValueError,
            "The 'covariance_type' parameter of GaussianMixture must be a str among",
        ),
        (
            {"init_params": "bar"},
            ValueError,
            "The 'init_params' parameter of GaussianMixture must be a str among",
        ),
        (
            {"n_components": 2, "means_init": np.ones((3, 2))},
            ValueError,
            "The parameter 'means' should have the shape of (2, 2), but got (3, 2)",
        ),
        (
            {"n_components": 2, "weights_init": np.ones(2)},
            ValueError,
            "The parameter 'weights' should be normalized, but got sum(weights) = 2.00000",
        ),
        (
            {"n_components": 2, "weights_init": np.ones(3) / 3},
            ValueError,
            "The parameter 'weights' should have the shape of (2,), but got (3,)",
        ),
        (
            {"n_components": 2, "precisions_init": np.ones((2, 2))},
            ValueError,
            "The parameter 'full precision' should have the shape of (2, 2, 2), but got (2, 2)",
        ),
        ({"cache": "sometimes"}, ValueError, "The 'cache' parameter of GaussianMixture"),
    ],
)
@pytest.mark.parametrize("as_dask", [False, True])
def test_bad_parameters_match_scikit_learn(kwargs, exc, message, as_dask, counting_scheduler):
    X = da.from_array(X_OK, chunks=7) if as_dask else X_OK
    with pytest.raises(exc, match=re.escape(message)):
        GaussianMixture(**kwargs).fit(X)
    assert counting_scheduler.computes == 0, "option errors come before any computation"
    sk_kwargs = {k: v for k, v in kwargs.items() if k != "cache"}
    if sk_kwargs == kwargs:
        with pytest.raises(exc, match=re.escape(message)):
            SkGaussianMixture(**kwargs).fit(X_OK)


@pytest.mark.parametrize(
    "bad, message", [(np.nan, "Input X contains NaN"), (np.inf, "Input X contains infinity")]
)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_nonfinite_dask_input_is_caught_in_the_first_pass(bad, message, init_params, Estimator):
    X = X_OK.copy()
    X[13, 0] = bad
    with pytest.raises(ValueError, match=message):
        SkGaussianMixture(2).fit(X)
    with pytest.raises(ValueError, match=message):
        Estimator(2).fit(X)
    with pytest.raises(ValueError, match=message):
        Estimator(2, init_params=init_params, random_state=0).fit(da.from_array(X, chunks=5))
    gm = Estimator(2, random_state=0).fit(X_OK)
    with pytest.raises(ValueError, match=message):
        gm.predict(da.from_array(X, chunks=5)).compute()


def test_nonfinite_found_by_em_pass_with_given_init():
    X = X_OK.copy()
    X[19, 1] = np.nan
    gm = GaussianMixture(
        2,
        weights_init=[0.5, 0.5],
        means_init=[[0, 0], [1, 1]],
        precisions_init=np.array([np.eye(2)] * 2),
    )
    with pytest.raises(ValueError, match=re.escape("(first in row 19)")):
        gm.fit(da.from_array(X, chunks=6))


@pytest.mark.parametrize(
    "X, message",
    [
        (np.ones(10), "Expected 2D array, got 1D array instead"),
        (
            np.ones((4, 2, 2)),
            "Found array with dim 3, while dim <= 2 is required by GaussianMixture.",
        ),
        (
            np.ones((1, 2)),
            "Found array with 1 sample(s) (shape=(1, 2)) while a minimum of 2 is "
            "required by GaussianMixture.",
        ),
        (np.ones((4, 2), dtype=complex), "Complex data not supported"),
    ],
)
@pytest.mark.parametrize("as_dask", [False, True])
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_bad_shapes(X, message, as_dask, Estimator):
    with pytest.raises(ValueError, match=re.escape(message)):
        SkGaussianMixture(1).fit(X)
    message = message.replace("GaussianMixture", Estimator.__name__)
    with pytest.raises(ValueError, match=re.escape(message)):
        Estimator(1).fit(da.from_array(X) if as_dask else X)


def test_non_numeric_dask_array_is_a_type_error():
    with pytest.raises(TypeError, match="X must hold numbers"):
        GaussianMixture(1).fit(da.from_array(np.array([["a", "b"], ["c", "d"]])))


@pytest.mark.parametrize("as_dask", [False, True])
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_predict_with_other_number_of_features(as_dask, Estimator):
    gm = Estimator(2, random_state=0).fit(X_OK)
    X3 = np.ones((5, 3))
    message = f"X has 3 features, but {Estimator.__name__} is expecting 2 features as input."
    reference = SkGaussianMixture if Estimator is GaussianMixture else SkBayesianGaussianMixture
    with pytest.raises(ValueError, match=re.escape(message)):
        reference(n_components=2, random_state=0).fit(X_OK).predict(X3)
    for method in ("predict", "predict_proba", "score_samples", "score"):
        with pytest.raises(ValueError, match=re.escape(message)):
            getattr(gm, method)(da.from_array(X3) if as_dask else X3)


@pytest.mark.parametrize("as_dask", [False, True])
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_bad_sample_weight(as_dask, Estimator):
    w = np.ones(20)
    w[3] = -1
    wrap = (lambda a: da.from_array(a, chunks=6)) if as_dask else (lambda a: a)
    with pytest.raises(
        ValueError, match=re.escape("Negative values in data passed to `sample_weight`")
    ):
        Estimator(2, random_state=0).fit(wrap(X_OK), sample_weight=wrap(w))
    with pytest.raises(
        ValueError, match=re.escape("sample_weight.shape == (19,), expected (20,)!")
    ):
        Estimator(2).fit(wrap(X_OK), sample_weight=wrap(np.ones(19)))
    if Estimator is not GaussianMixture:
        return  # what follows needs *_init, which the Bayesian mixture does not take
    with pytest.raises(ValueError, match="sample_weight sums to zero"):
        GaussianMixture(
            2,
            weights_init=[0.5, 0.5],
            means_init=[[0, 0], [1, 1]],
            precisions_init=np.array([np.eye(2)] * 2),
        ).fit(wrap(X_OK), sample_weight=wrap(np.zeros(20)))


def test_integer_dask_input_is_cast_to_float():
    X = da.from_array(np.random.RandomState(0).randint(0, 50, size=(200, 2)), chunks=50)
    gm = GaussianMixture(2, random_state=0).fit(X)
    assert gm.means_.dtype == np.float64


def test_features_chunked_input_is_rechunked(caplog):
    import logging

    X = da.from_array(np.random.RandomState(0).normal(size=(100, 4)), chunks=(30, 2))
    with caplog.at_level(logging.INFO, logger="daskgmm"):
        gm = GaussianMixture(1).fit(X)
    assert "rechunking to one" in caplog.text
    np.testing.assert_allclose(gm.means_[0], X.mean(axis=0).compute(), rtol=1e-10)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_path_agrees_with_float64(ct):
    """float32 data are processed in float32 (float64 accumulators and M-step)."""
    data = RandomData(
        np.random.RandomState(8), n_samples=20000, n_components=3, n_features=8, scale=12
    )
    X = data.X[ct]
    kw = dict(n_components=3, covariance_type=ct, tol=0, max_iter=8, **_init_of(data, ct))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f64 = GaussianMixture(**kw).fit(da.from_array(X, chunks=3000))
        f32 = GaussianMixture(**kw).fit(da.from_array(X.astype(np.float32), chunks=3000))
    # float32 in, float32 out (as scikit-learn >= 1.8); the float64 parameters are kept
    assert f32.means_.dtype == np.float32 and f32._params.means.dtype == np.float64
    np.testing.assert_allclose(f32.lower_bounds_, f64.lower_bounds_, rtol=1e-4)
    np.testing.assert_allclose(f32.means_, f64.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        f32.covariances_, f64.covariances_, rtol=1e-3, atol=1e-4 * np.abs(f64.covariances_).max()
    )


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_in_float32_out_with_full_precision_kept(ct, tmp_path):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    data = RandomData(np.random.RandomState(3), n_samples=3000, n_components=2, n_features=3)
    X32 = data.X[ct].astype(np.float32)
    kw = dict(n_components=2, covariance_type=ct, random_state=0, tol=0, max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(**kw).fit(X32)
        sk = SkGaussianMixture(**kw).fit(X32)
        # a float32 fit resumed from a checkpoint equals an uninterrupted one, bit for bit
        with pytest.raises(Stop):
            GaussianMixture(**kw).fit(X32, checkpoint=tmp_path / "c", callback=stop_after(3))
        resumed = GaussianMixture(**kw).fit(X32, checkpoint=tmp_path / "c")
    names = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
    for name in names:
        assert getattr(gm, name).dtype == getattr(sk, name).dtype == np.float32, name
        np.testing.assert_array_equal(getattr(resumed, name), getattr(gm, name), err_msg=name)
    full = gm._params
    assert full.means.dtype == np.float64
    np.testing.assert_array_equal(gm.means_, full.means.astype(np.float32))
    np.testing.assert_array_equal(resumed._params.means, full.means)
    for Xin in (X32, da.from_array(X32, chunks=700)):
        proba, score = gm.predict_proba(Xin), gm.score_samples(Xin)
        assert proba.dtype == score.dtype == sk.predict_proba(X32).dtype == np.float32
        # the same model's float64 scores, rounded (the start differs from scikit-learn's)
        np.testing.assert_allclose(
            np.asarray(score), gm.score_samples(X32.astype(np.float64)), rtol=1e-4
        )
    assert gm.predict_proba(X32.astype(np.float64)).dtype == np.float64
    # the model file keeps the float64 parameters and the attributes' dtype
    gm.save(tmp_path / "m.zarr")
    loaded = daskgmm.load(tmp_path / "m.zarr")
    assert loaded.means_.dtype == np.float32
    np.testing.assert_array_equal(loaded._params.means, full.means)


def test_information_criteria_in_one_read_match_scikit_learn(random_data, counting_scheduler):
    X_np = random_data.X["full"]
    gm = GaussianMixture(3, random_state=0).fit(X_np)
    before = counting_scheduler.computes
    criteria = gm.information_criteria(da.from_array(X_np, chunks=100))
    assert counting_scheduler.computes == before + 1  # both criteria from one read
    sk = gm.to_sklearn()
    assert criteria["bic"] == pytest.approx(sk.bic(X_np), rel=1e-10)
    assert criteria["aic"] == pytest.approx(sk.aic(X_np), rel=1e-10)
    assert criteria["log_likelihood"] == pytest.approx(sk.score(X_np), rel=1e-10)
    assert criteria["n_samples"] == len(X_np) and gm.bic(X_np) == pytest.approx(criteria["bic"])


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_predict_to_zarr_writes_what_predict_gives_and_reuses_it(random_data, tmp_path, Estimator):
    import zarr

    X = random_data.X["full"]
    gm = Estimator(3, random_state=0).fit(X)
    out = tmp_path / "labels.zarr"
    info = gm.predict_to_zarr(X, out, proba=True, score=True)
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["label"][:], gm.predict(X))
    np.testing.assert_allclose(group["probability"][:], gm.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(group["log_density"][:], gm.score_samples(X), rtol=1e-12)
    assert info["variables"] == ["label", "probability", "log_density"]
    anomalies = gm.predict_to_zarr(X, tmp_path / "a.zarr", anomaly_quantile=0.05)
    mask = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["anomaly"][:]
    np.testing.assert_array_equal(mask, gm.score_samples(X) < anomalies["threshold"])
    assert abs(mask.mean() - 0.05) < 0.01
