"""The fit driver serves any model: a second, deliberately small one, a mixture of
unit-covariance Gaussians (weights and means only), runs through
:func:`daskgmm._em.fit_mixture` with restarts sharing each read and
checkpoint/resume, unchanged, against a NumPy reference EM."""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import pytest
from scipy.special import logsumexp

from daskgmm._checkpoint import Checkpoint
from daskgmm._em import GaussianEM, fit_mixture
from daskgmm._init import restart_seeds

from .conftest import Stop, stop_after

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0

LOG_2PI = np.log(2 * np.pi)


@dataclass(frozen=True, eq=False)
class UnitParams:
    weights: np.ndarray
    means: np.ndarray


@dataclass(frozen=True, eq=False)
class UnitStats:
    """Statistics shifted around the current means (as the Gaussian model's)."""

    nk: np.ndarray
    s1: np.ndarray
    loglik: float
    weight_sum: float

    def __add__(self, other):
        return UnitStats(
            self.nk + other.nk,
            self.s1 + other.s1,
            self.loglik + other.loglik,
            self.weight_sum + other.weight_sum,
        )


@dataclass(frozen=True, eq=False)
class ManyUnitStats:
    parts: tuple

    def __add__(self, other):
        return ManyUnitStats(tuple(a + b for a, b in zip(self.parts, other.parts, strict=True)))


def _log_prob(X, p):
    d2 = ((X[:, None, :] - p.means[None]) ** 2).sum(-1)
    return np.log(p.weights) - 0.5 * d2 - 0.5 * X.shape[1] * LOG_2PI


@dataclass(frozen=True)
class UnitCovarianceEM:
    """A :class:`daskgmm._em.MixtureModel`: EM for weights and means, covariances fixed at I."""

    n_components: int
    kind: str = "unit-covariance"

    def initialize(self, X, seeds, sample_weight):
        out = []
        for seed in seeds:
            rows = np.sort(np.random.RandomState(seed).choice(X.shape[0], self.n_components, False))
            means = np.asarray(X[rows].compute(), dtype=np.float64)
            out.append(UnitParams(np.full(self.n_components, 1 / self.n_components), means))
        return out

    def estep_constants(self, params):
        return tuple(params)

    @staticmethod
    def chunk_stats(block, constants, *, sample_weight=None, row_offset=0):
        w = np.ones(len(block)) if sample_weight is None else sample_weight
        parts = []
        for p in constants:
            log_prob = _log_prob(block, p)
            norm = logsumexp(log_prob, axis=1)
            resp = np.exp(log_prob - norm[:, None]) * w[:, None]
            nk = resp.sum(axis=0)
            s1 = resp.T @ block - nk[:, None] * p.means
            parts.append(UnitStats(nk, s1, float(w @ norm), float(w.sum())))
        return ManyUnitStats(tuple(parts))

    def update(self, stats, params, constants):
        nk = stats.nk + 10 * np.finfo(np.float64).eps
        means = params.means + stats.s1 / nk[:, None]
        return UnitParams(nk / nk.sum(), means), stats.loglik / stats.weight_sum

    @staticmethod
    def to_arrays(params):
        return {"weights": params.weights, "means": params.means}

    @staticmethod
    def from_arrays(arrays, where):
        if set(arrays) != {"weights", "means"}:
            raise ValueError(f"{where}: not unit-covariance parameters")
        return UnitParams(arrays["weights"], arrays["means"])


def _reference_em(X, params, n_iter):
    """Textbook EM on NumPy from ``params``: lower bounds and final parameters."""
    bounds = []
    for _ in range(n_iter):
        log_prob = _log_prob(X, params)
        norm = logsumexp(log_prob, axis=1)
        resp = np.exp(log_prob - norm[:, None])
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        bounds.append(norm.mean())
        params = UnitParams(nk / nk.sum(), (resp.T @ X) / nk[:, None])
    return params, bounds


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    labels = rng.randint(0, 3, 3000)
    return centres, centres[labels] + rng.normal(size=(3000, 2))


def test_a_second_model_runs_through_the_same_driver(data, tmp_path):
    centres, X_np = data
    X = da.from_array(X_np, chunks=500)
    model = UnitCovarianceEM(3)
    kw = dict(n_init=3, tol=0, max_iter=12)
    with dask.config.set(scheduler="threads"):
        best, restarts = fit_mixture(X, model, random_state=np.random.RandomState(1), **kw)

        # each restart equals textbook EM from the initial parameters its seed gives
        seeds = restart_seeds(np.random.RandomState(1), 3)
        for restart, start in zip(restarts, model.initialize(X, seeds, None), strict=True):
            params, bounds = _reference_em(X_np, start, 12)
            np.testing.assert_allclose(restart.params.means, params.means, rtol=1e-10)
            np.testing.assert_allclose(restart.lower_bounds, bounds, rtol=1e-10)
        assert best.lower_bound == max(r.lower_bound for r in restarts)
        found = best.params.means[np.argsort(best.params.means @ [1.0, 10.0])]
        np.testing.assert_allclose(found, centres[[0, 1, 2]], atol=0.1)  # recovered

        # killed after four passes, then resumed from the checkpoint: the same result
        store = Checkpoint(tmp_path / "ckpt")

        with pytest.raises(Stop):
            fit_mixture(X, model, random_state=np.random.RandomState(1), checkpoint=store,
                        callback=stop_after(4), **kw)  # fmt: skip
        state, _ = store.load(model)
        assert [r.n_iter for r in state.restarts] == [4, 4, 4] and not state.complete
        resumed, _ = fit_mixture(
            X, model, random_state=np.random.RandomState(1), checkpoint=store, state=state, **kw
        )
    np.testing.assert_array_equal(resumed.params.means, best.params.means)
    assert resumed.lower_bounds == best.lower_bounds
    assert store.load(model)[0].complete
    with pytest.raises(ValueError, match="holds 'unit-covariance' parameters, not 'full'"):
        store.load(GaussianEM("full", 1e-6, 3))
