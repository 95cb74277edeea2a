"""The covariance-type registry: factors, counts, validation and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from daskgmm._covariance import COVARIANCE_MODELS, ILL_DEFINED_COVARIANCE, get_covariance_model

from .conftest import COVARIANCE_TYPES, RandomData


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_precision_factors_round_trip(rng, ct):
    data = RandomData(rng, n_components=3, n_features=4)
    model = get_covariance_model(ct)
    cov = data.covariances[ct]
    chol = model.precisions_cholesky(cov)
    np.testing.assert_allclose(model.precisions(chol), data.precisions[ct], rtol=1e-10)
    np.testing.assert_allclose(
        model.precisions_cholesky_from_precisions(data.precisions[ct]),
        chol,
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        model.covariances_from_precisions(data.precisions[ct]), cov, rtol=1e-10
    )
    expected = (
        -0.5
        * {
            "full": lambda: np.linalg.slogdet(cov)[1],
            "tied": lambda: np.full(3, np.linalg.slogdet(cov)[1]),
            "diag": lambda: np.log(cov).sum(axis=1),
            "spherical": lambda: 4 * np.log(cov),
        }[ct]()
    )
    np.testing.assert_allclose(model.log_det_cholesky(chol, 3, 4), expected, rtol=1e-10)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_n_parameters_matches_scikit_learn_bic(rng, ct):
    X = rng.rand(50, 3)
    sk = SkGaussianMixture(2, covariance_type=ct, random_state=0).fit(X)
    n = X.shape[0]
    sk_params = (sk.bic(X) + 2 * sk.score(X) * n) / np.log(n)
    assert COVARIANCE_MODELS[ct].n_parameters(2, 3) == round(sk_params)


def test_ill_defined_covariance_names_component_and_reg_covar():
    cov = np.array([np.eye(2), [[1.0, 1.0], [1.0, 1.0]]])
    with pytest.raises(ValueError, match=re.escape(ILL_DEFINED_COVARIANCE)) as err:
        get_covariance_model("full").precisions_cholesky(cov)
    assert "component 1" in str(err.value) and "reg_covar" in str(err.value)
    with pytest.raises(ValueError, match="component 2"):
        get_covariance_model("diag").precisions_cholesky(np.array([[1.0], [2.0], [0.0]]))
    with pytest.raises(ValueError, match="the tied covariance"):
        get_covariance_model("tied").precisions_cholesky(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="passing float64"):
        get_covariance_model("spherical").precisions_cholesky(np.array([-1.0], np.float32))


@pytest.mark.parametrize(
    "ct, bad, message",
    [
        ("full", np.ones((2, 2)), "The parameter 'full precision' should have the shape of"),
        ("full", -np.ones((2, 2, 2)), "'full precision' should be symmetric, positive-definite"),
        ("tied", np.array([[1.0, 2.0], [0.0, 1.0]]), "'tied precision' should be symmetric"),
        ("diag", -np.ones((2, 2)), "'diag precision' should be positive"),
        ("spherical", np.ones(3), "The parameter 'spherical precision' should have the shape"),
    ],
)
def test_check_precisions_messages(ct, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_covariance_model(ct).check_precisions(bad, 2, 2)


def test_unknown_covariance_type():
    with pytest.raises(ValueError, match=re.escape("Unknown covariance_type 'foo'")):
        get_covariance_model("foo")


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_sample_moments(ct):
    data = RandomData(np.random.RandomState(1), n_components=2, n_features=2)
    model = get_covariance_model(ct)
    rs = np.random.RandomState(0)
    X = model.sample(rs, data.means, data.covariances[ct], np.array([20000, 10]))
    assert X.shape == (20010, 2)
    np.testing.assert_allclose(X[:20000].mean(axis=0), data.means[0], atol=0.1)
