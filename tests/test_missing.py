"""Missing values (``missing='marginalize'``): exact EM on the observed entries.

Oracles: the conditional expectations written out sample by sample, scipy's
multivariate normal densities of the observed coordinates, EM without holes,
and the truth the data were drawn from.
"""

from __future__ import annotations

import logging
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.stats
import zarr
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from daskgmm import GaussianMixture
from daskgmm._covariance import get_covariance_model
from daskgmm._stats import EStepParams, GMMParams, suffstats_chunk_many

from .conftest import COVARIANCE_TYPES, Stop, chunkings, stop_after


def _truth(rng, ct, n_components, n_features, scale=6.0):
    """Weights, means and the type's covariances of a well-separated mixture."""
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.normal(scale=scale, size=(n_components, n_features))
    a = rng.normal(scale=0.6, size=(n_components, n_features, n_features))
    full = np.eye(n_features) * 0.5 + a @ a.transpose(0, 2, 1)
    covariances = {
        "full": full,
        "tied": full[0],
        "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": np.trace(full, axis1=1, axis2=2) / n_features,
    }[ct]
    return weights, means, covariances


def _dense(ct, covariances, n_components, n_features):
    return get_covariance_model(ct).dense_covariances(
        get_covariance_model(ct).precisions_cholesky(covariances), n_components, n_features
    )


def _draw(rng, ct, weights, means, covariances, n):
    dense = _dense(ct, covariances, *means.shape)
    labels = rng.choice(len(weights), size=n, p=weights)
    X = np.empty((n, means.shape[1]))
    for k in range(len(weights)):
        rows = labels == k
        X[rows] = rng.multivariate_normal(means[k], dense[k], rows.sum())
    return X, labels


def _holes(rng, X, fraction):
    """Values missing completely at random, and one sample with none observed."""
    Xm = X.copy()
    Xm[rng.random_sample(X.shape) < fraction] = np.nan
    Xm[7] = np.nan
    return Xm


def _quiet(gm, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X, **kw)


def _three_patterns(rng, X):
    """Every sample incomplete, in one of three patterns (many samples each)."""
    Xm = X.copy()
    group = rng.randint(0, 3, size=len(X))
    Xm[group == 0, 2] = np.nan
    Xm[group == 1, 0] = np.nan
    Xm[group == 1, 3] = np.nan
    Xm[group == 2, 1] = np.nan
    Xm[7] = np.nan
    return Xm


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "weighted, holes",
    [(False, "random"), (True, "random"), (True, "three patterns")],
)
def test_statistics_with_holes_are_the_conditional_expectations(rng, ct, weighted, holes):
    """Per sample: the marginal responsibilities on the observed values, and the
    M-step's moments of the completed sample plus the conditional covariance.
    Random holes give many small patterns (direct products); three patterns of
    hundreds of samples run the complete-data kernels on their marginals."""
    K, D = 3, 4
    weights, means, covariances = _truth(rng, ct, K, D)
    X, _ = _draw(rng, ct, weights, means, covariances, 400 if holes == "random" else 1200)
    Xm = _holes(rng, X, 0.3) if holes == "random" else _three_patterns(rng, X)
    w = rng.uniform(0.5, 2.0, size=len(X)) if weighted else None
    params = GMMParams.from_covariances(ct, weights, means + 0.3, covariances)
    ep = EStepParams.from_params(params)
    (got,) = suffstats_chunk_many(Xm, (ep,), sample_weight=w, missing=True).parts

    model = get_covariance_model(ct)
    dense = _dense(ct, covariances, K, D)
    nk, s1, s, loglik, kept = np.zeros(K), np.zeros((K, D)), np.zeros((K, D, D)), 0.0, []
    for i, x in enumerate(Xm):
        o = ~np.isnan(x)
        if not o.any():
            continue
        kept.append(i)
        m = ~o
        log_p = np.log(weights) + [
            scipy.stats.multivariate_normal(params.means[k][o], dense[k][np.ix_(o, o)]).logpdf(x[o])
            for k in range(K)
        ]
        wi = 1.0 if w is None else w[i]
        loglik += wi * logsumexp(log_p)
        r = wi * np.exp(log_p - logsumexp(log_p))
        for k in range(K):
            b = dense[k][np.ix_(m, o)] @ np.linalg.inv(dense[k][np.ix_(o, o)])
            filled = x.copy()
            filled[m] = params.means[k][m] + b @ (x[o] - params.means[k][o])
            cond = np.zeros((D, D))
            cond[np.ix_(m, m)] = dense[k][np.ix_(m, m)] - b @ dense[k][np.ix_(o, m)]
            d = filled - params.means[k]
            nk[k] += r[k]
            s1[k] += r[k] * d
            s[k] += r[k] * (np.outer(d, d) + cond)
    assert 7 not in kept and got.n_samples == len(kept)
    assert got.weight_sum == pytest.approx(len(kept) if w is None else w[kept].sum(), rel=1e-12)
    np.testing.assert_allclose(got.nk, nk, rtol=1e-11)
    np.testing.assert_allclose(got.s1, s1, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(got.s2, model.moments_from_full(nk, s1, s, ep.deltas), rtol=1e-10)
    assert got.loglik == pytest.approx(loglik, rel=1e-12)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_without_nan_marginalize_is_todays_em(rng, ct):
    weights, means, covariances = _truth(rng, ct, 3, 3)
    X, _ = _draw(rng, ct, weights, means, covariances, 1500)
    kw = dict(n_components=3, covariance_type=ct, random_state=0, tol=1e-8, max_iter=50)
    plain = _quiet(GaussianMixture(**kw), da.from_array(X, chunks=400))
    marg = _quiet(GaussianMixture(missing="marginalize", **kw), da.from_array(X, chunks=400))
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(marg, name), getattr(plain, name), rtol=1e-12)
    assert marg.lower_bounds_ == pytest.approx(plain.lower_bounds_, rel=1e-12)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_marginal_density_predictions_and_criteria(rng, ct):
    """score_samples of a sample with holes is the mixture of scipy's marginals on its
    observed values; labels, probabilities, score, BIC and AIC follow from it."""
    K, D = 3, 4
    weights, means, covariances = _truth(rng, ct, K, D)
    X, _ = _draw(rng, ct, weights, means, covariances, 1200)
    Xm = _holes(rng, X, 0.25)
    gm = GaussianMixture(K, covariance_type=ct, missing="marginalize", random_state=0).fit(Xm)
    dense = _dense(ct, gm.covariances_, K, D)
    expected = np.full(len(Xm), np.nan)
    labels = np.full(len(Xm), -1)
    for i, x in enumerate(Xm):
        o = ~np.isnan(x)
        if o.any():
            log_p = np.log(gm.weights_) + [
                scipy.stats.multivariate_normal(gm.means_[k][o], dense[k][np.ix_(o, o)]).logpdf(
                    x[o]
                )
                for k in range(K)
            ]
            expected[i], labels[i] = logsumexp(log_p), np.argmax(log_p)
    observed = ~np.isnan(expected)
    np.testing.assert_allclose(gm.score_samples(Xm), expected, rtol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(gm.predict(Xm), labels)
    proba = gm.predict_proba(Xm)
    assert np.isnan(proba[7]).all() and labels[7] == -1
    np.testing.assert_allclose(proba[observed].sum(axis=1), 1.0, rtol=1e-12)
    assert gm.score(Xm) == pytest.approx(expected[observed].mean(), rel=1e-12)
    n, p = observed.sum(), gm._n_parameters()
    assert gm.bic(Xm) == pytest.approx(-2 * expected[observed].sum() + p * np.log(n), rel=1e-12)
    assert gm.aic(Xm) == pytest.approx(-2 * expected[observed].sum() + 2 * p, rel=1e-12)
    # lazily over dask blocks: the same
    Xd = da.from_array(Xm, chunks=250)
    np.testing.assert_allclose(gm.score_samples(Xd).compute(), expected, equal_nan=True, rtol=1e-10)
    np.testing.assert_array_equal(gm.predict(Xd).compute(), labels)
    assert gm.information_criteria(Xd)["n_samples"] == n
    # a model fitted on complete samples predicts samples with holes once asked to
    complete = GaussianMixture(K, covariance_type=ct, random_state=0).fit(X)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        complete.score_samples(Xm)
    complete.set_params(missing="marginalize")
    assert np.isnan(complete.score_samples(Xm)[7]) and complete.predict(Xm)[7] == -1


def _error(ct, gm, means, covariances):
    """Mean error of the means and the covariances (relative, Frobenius), in the truth's order."""
    K, D = means.shape
    truth, fitted = _dense(ct, covariances, K, D), _dense(ct, gm.covariances_, K, D)
    mean_err = np.linalg.norm(gm.means_ - means, axis=1).mean()
    cov_err = np.mean(
        [np.linalg.norm(fitted[k] - truth[k]) / np.linalg.norm(truth[k]) for k in range(K)]
    )
    return mean_err + cov_err


@pytest.mark.parametrize(
    "ct, n_features, n_components, fraction",
    [
        ("full", 3, 2, 0.1),
        ("full", 6, 3, 0.4),
        ("tied", 5, 3, 0.25),
        ("diag", 4, 3, 0.4),
        ("spherical", 8, 2, 0.3),
    ],
)
def test_em_with_holes_is_monotone_and_beats_dropping_and_imputing(
    ct, n_features, n_components, fraction
):
    """From the same start, exact EM on the observed values recovers the truth better
    than EM on the complete samples only and than EM on mean-imputed data: the error
    of means and covariances, averaged over three draws (at 10 % missing one draw's
    sampling noise is as large as the gain over dropping)."""
    rng = np.random.RandomState(n_features * 10 + n_components)
    weights, means, covariances = _truth(rng, ct, n_components, n_features)
    errors = {"marginalize": [], "drop incomplete": [], "mean imputation": []}
    for _ in range(3):
        X, _ = _draw(rng, ct, weights, means, covariances, 4000)
        Xm = _holes(rng, X, fraction)
        start = dict(
            weights_init=np.full(n_components, 1.0 / n_components),
            means_init=means + rng.normal(scale=0.5, size=means.shape),
            tol=1e-9,
            max_iter=500,
            covariance_type=ct,
        )
        marg = _quiet(GaussianMixture(n_components, missing="marginalize", **start), Xm)
        lb = np.array(marg.lower_bounds_)
        assert np.all(np.diff(lb) >= -1e-12 * np.abs(lb[1:])), np.diff(lb).min()
        complete = ~np.isnan(Xm).any(axis=1)
        dropped = _quiet(GaussianMixture(n_components, **start), Xm[complete])
        filled = np.where(np.isnan(Xm), np.nanmean(Xm, axis=0), Xm)
        imputed = _quiet(GaussianMixture(n_components, **start), filled)
        for name, gm in zip(errors, (marg, dropped, imputed), strict=True):
            errors[name].append(_error(ct, gm, means, covariances))
    mean = {name: float(np.mean(e)) for name, e in errors.items()}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in mean.items())
    print(f"{ct} D={n_features} K={n_components} {fraction:.0%} missing: errors {shown}")
    assert mean["marginalize"] < min(mean["drop incomplete"], mean["mean imputation"])


@pytest.fixture(scope="module")
def holes_data():
    rng = np.random.RandomState(11)
    weights, means, covariances = _truth(rng, "full", 3, 4)
    X, _ = _draw(rng, "full", weights, means, covariances, 2000)
    return _holes(rng, X, 0.3)


def test_fit_with_holes_does_not_depend_on_chunking_or_scheduler(holes_data, cluster_client):
    kw = dict(n_components=3, missing="marginalize", random_state=2, tol=1e-8, max_iter=40)
    reference = _quiet(GaussianMixture(**kw), holes_data)
    for name, chunks in chunkings(len(holes_data)).items():
        for scheduler in ("sync", "threads", cluster_client):
            if scheduler is cluster_client and name != "ragged":
                continue
            with dask.config.set(scheduler=scheduler):
                got = _quiet(GaussianMixture(**kw), da.from_array(holes_data, chunks=(chunks, 4)))
            np.testing.assert_allclose(got.means_, reference.means_, rtol=1e-10, err_msg=name)
            np.testing.assert_allclose(got.covariances_, reference.covariances_, rtol=1e-9)
            assert got.n_iter_ == reference.n_iter_


class _Killed(Exception):
    pass


def _dying_after(n):
    """A scheduler that runs ``n`` computes and dies in the next one (a killed driver)."""
    left = [n]

    def scheduler(dsk, keys, **kwargs):
        if left[0] == 0:
            raise _Killed
        left[0] -= 1
        return dask.get(dsk, keys, **kwargs)

    return scheduler


@pytest.mark.parametrize("die_after", [3, 30])  # in the initialisation, in EM
def test_killed_fit_with_holes_resumes_to_the_same_model(holes_data, tmp_path, die_after):
    X = da.from_array(holes_data, chunks=300)
    kw = dict(
        n_components=3, n_init=2, missing="marginalize", random_state=5, tol=1e-8, max_iter=25
    )
    reference = _quiet(GaussianMixture(**kw), X)
    with dask.config.set(scheduler=_dying_after(die_after)), pytest.raises(_Killed):
        _quiet(GaussianMixture(**kw), X, checkpoint=tmp_path / "ckpt")
    assert reference.n_iter_ >= 8
    with pytest.raises(Stop):  # and once more, stopped between two passes
        _quiet(
            GaussianMixture(**kw),
            X,
            checkpoint=tmp_path / "ckpt",
            callback=stop_after(reference.n_iter_ - 2),
        )
    resumed = _quiet(GaussianMixture(**kw), X, checkpoint=tmp_path / "ckpt")
    np.testing.assert_allclose(resumed.means_, reference.means_, rtol=1e-12)
    assert resumed.lower_bounds_ == pytest.approx(reference.lower_bounds_, rel=1e-12)
    # a checkpoint of the other mode is another fit
    with pytest.raises(ValueError, match="estimator missing: checkpoint 'marginalize', now"):
        GaussianMixture(**{**kw, "missing": "error"}).fit(X, checkpoint=tmp_path / "ckpt")


def test_sample_weight_with_holes_equals_repeated_samples(holes_data):
    w = np.random.RandomState(0).randint(1, 4, size=len(holes_data))
    start = dict(  # the k-means seeding draws differ between weights and repeats
        weights_init=np.full(3, 1 / 3),
        means_init=np.nan_to_num(holes_data[[0, 600, 1300]]),
        precisions_init=np.array([np.eye(4)] * 3),
    )
    kw = dict(n_components=3, missing="marginalize", tol=1e-10, max_iter=60, **start)
    weighted = _quiet(GaussianMixture(**kw), holes_data, sample_weight=w)
    repeated = _quiet(GaussianMixture(**kw), np.repeat(holes_data, w, axis=0))
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-9)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-8)


def test_initialisation_fills_holes_when_few_samples_are_complete(caplog):
    """12 features, 30 % missing: ~1 % complete samples, fewer than 20 per component."""
    rng = np.random.RandomState(3)
    weights, means, covariances = _truth(rng, "diag", 3, 12, scale=8.0)
    X, labels = _draw(rng, "diag", weights, means, covariances, 3000)
    Xm = _holes(rng, X, 0.3)
    assert (~np.isnan(Xm).any(axis=1)).sum() < 60
    with caplog.at_level(logging.INFO, logger="daskgmm"):
        gm = GaussianMixture(3, covariance_type="diag", missing="marginalize", random_state=0)
        gm.fit(da.from_array(Xm, chunks=500))
    assert "holes filled with the means" in caplog.text
    from sklearn.metrics import adjusted_rand_score

    found = gm.predict(Xm)
    assert adjusted_rand_score(labels[found >= 0], found[found >= 0]) > 0.95


def test_out_of_core_zarr_with_a_declared_nodata(holes_data, tmp_path, caplog):
    """A store that marks its holes with -9999 (a ``nodata`` attribute) fits, streamed,
    as the same data with NaN; so does a NumPy array with ``nodata=-9999``."""
    marked = np.where(np.isnan(holes_data), -9999.0, holes_data)
    z = zarr.create_array(tmp_path / "x.zarr", shape=marked.shape, chunks=(300, 4), dtype="f8")
    z[:] = marked
    z.attrs["nodata"] = -9999.0
    kw = dict(n_components=3, missing="marginalize", random_state=1, tol=1e-8, max_iter=30)
    reference = _quiet(GaussianMixture(**kw), holes_data)
    with caplog.at_level(logging.INFO, logger="daskgmm"):
        streamed = _quiet(GaussianMixture(cache=False, **kw), str(tmp_path / "x.zarr"))
    assert "declares -9999.0 for missing values" in caplog.text
    np.testing.assert_allclose(streamed.means_, reference.means_, rtol=1e-10)
    # a raw Zarr array whose fill value is the marker declares it too
    z = zarr.create_array(
        tmp_path / "f.zarr", shape=marked.shape, chunks=(300, 4), dtype="f8", fill_value=-9999.0
    )
    z[:] = marked
    filled = _quiet(GaussianMixture(**kw), str(tmp_path / "f.zarr"))
    np.testing.assert_allclose(filled.means_, reference.means_, rtol=1e-10)
    given = _quiet(GaussianMixture(nodata=-9999, **kw), marked)
    np.testing.assert_allclose(given.means_, reference.means_, rtol=1e-12)
    labels = streamed.predict(str(tmp_path / "x.zarr")).compute()
    np.testing.assert_array_equal(labels, reference.predict(holes_data))
    assert labels[7] == -1


def test_bad_input_with_missing_values_is_one_clear_error(holes_data):
    X = holes_data.copy()
    with pytest.raises(ValueError, match="Input X contains NaN"):
        GaussianMixture(3).fit(X)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        GaussianMixture(3).fit(da.from_array(X, chunks=500))
    X[1234, 1] = np.inf
    with pytest.raises(ValueError, match=r"infinity .*\(first in row 1234\)"):
        GaussianMixture(3, missing="marginalize").fit(da.from_array(X, chunks=500))
    X = holes_data.copy()
    X[:, 2] = np.nan
    with pytest.raises(ValueError, match="Feature 2 of X has no observed value"):
        GaussianMixture(3, missing="marginalize").fit(X)
    with pytest.raises(ValueError, match="'missing' parameter of GaussianMixture must be"):
        GaussianMixture(3, missing="drop").fit(holes_data)


def test_float32_with_holes_stays_float32_and_close_to_float64(holes_data):
    kw = dict(n_components=3, missing="marginalize", random_state=4, tol=1e-6)
    single = GaussianMixture(**kw).fit(holes_data.astype(np.float32))
    double = GaussianMixture(**kw).fit(holes_data)
    assert single.means_.dtype == np.float32 and single.covariances_.dtype == np.float32
    assert single.score_samples(holes_data.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(single.means_, double.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(single.covariances_, double.covariances_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n_features", [5, 30, 60])  # keys: float32, float64, bytes
def test_patterns_group_every_sample_once_in_order(rng, n_features):
    from daskgmm._missing import patterns

    observed = rng.random_sample((3000, n_features)) > 3 / n_features / 5  # dozens of patterns
    observed[::7] = observed[0]
    groups = patterns(observed)
    expected: dict[bytes, list[int]] = {}
    for i, row in enumerate(observed):
        expected.setdefault(row.tobytes(), []).append(i)
    assert len(groups) == len(expected) > 16
    for mask, rows in groups:
        np.testing.assert_array_equal(rows, expected[mask.tobytes()])


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_offset_data_with_holes_keep_their_digits(rng, ct):
    """Samples a million units from the origin, with holes: the shifted float64
    statistics give the model of the same samples near the origin."""
    weights, means, covariances = _truth(rng, ct, 3, 4)
    X, _ = _draw(rng, ct, weights, means, covariances, 3000)
    Xm = _holes(rng, X, 0.3)
    model = get_covariance_model(ct)
    kw = dict(  # no data-dependent initialisation: the same start for both
        n_components=3,
        covariance_type=ct,
        missing="marginalize",
        weights_init=np.full(3, 1 / 3),
        precisions_init=model.precisions(model.precisions_cholesky(covariances)),
        tol=0.0,
        max_iter=20,
    )
    near = _quiet(GaussianMixture(means_init=means, **kw), Xm)
    far = _quiet(GaussianMixture(means_init=means + 1e6, **kw), Xm + 1e6)
    np.testing.assert_allclose(far.means_ - 1e6, near.means_, atol=1e-8)
    np.testing.assert_allclose(far.covariances_, near.covariances_, rtol=1e-8)
    assert far.lower_bound_ == pytest.approx(near.lower_bound_, rel=1e-9)


def test_missing_values_count_a_second_copy_of_the_block_before_the_fit(monkeypatch):
    """Samples regrouped by pattern are a float64 copy of the block: the memory check that
    refuses fits before their first pass counts it."""
    import daskgmm.mixture
    from daskgmm._em import memory_needed

    plain = memory_needed(50_000, 4, 2, "full", 1)
    with_holes = memory_needed(50_000, 4, 2, "full", 1, missing=True)
    assert with_holes == plain + 8 * 50_000 * 4
    monkeypatch.setattr(daskgmm.mixture, "_task_memory", lambda: (plain + with_holes) / 2)
    X = da.random.random((50_000, 4), chunks=50_000)
    with pytest.raises(ValueError, match=r"needs about [0-9.]+ GiB per task"):
        GaussianMixture(2, missing="marginalize").fit(X)
    _quiet(GaussianMixture(2, max_iter=1), X)  # fits without the mode
