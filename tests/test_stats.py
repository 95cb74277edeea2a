"""Per-block kernels against independent references (no Dask involved)."""

from __future__ import annotations

import functools
import itertools
import operator
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskgmm._stats import (
    EStepParams,
    GMMParams,
    estimate_log_prob_resp,
    estimate_weighted_log_prob,
    m_step,
    suffstats_chunk,
    suffstats_chunk_many,
    uniform_rows,
)

from .conftest import COVARIANCE_TYPES, RandomData


def _dense_covariances(ct, cov, n_components, n_features):
    if ct == "full":
        return cov
    if ct == "tied":
        return np.repeat(cov[None], n_components, axis=0)
    if ct == "diag":
        return np.array([np.diag(c) for c in cov])
    return np.array([c * np.eye(n_features) for c in cov])


def _params(data, ct):
    return GMMParams.from_precisions(ct, data.weights, data.means, data.precisions[ct])


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_weighted_log_prob_matches_scipy(rng, ct):
    data = RandomData(rng, n_samples=200, n_components=3, n_features=4)
    X = data.X[ct]
    covs = _dense_covariances(ct, data.covariances[ct], 3, 4)
    expected = np.column_stack(
        [
            multivariate_normal(data.means[k], covs[k]).logpdf(X) + np.log(data.weights[k])
            for k in range(3)
        ]
    )
    got = estimate_weighted_log_prob(X, EStepParams.from_params(_params(data, ct)))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    log_norm, log_resp = estimate_log_prob_resp(X, EStepParams.from_params(_params(data, ct)))
    np.testing.assert_allclose(log_norm, logsumexp(expected, axis=1), rtol=1e-10)
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("layout", ["rows", "components"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalise_matches_logsumexp_in_either_layout(rng, layout, dtype):
    """Responsibilities and log p(x) in place, for (rows, K) and for the transpose
    of a (K, rows) array (the quadratic E-step's layout), with underflowing terms."""
    from daskgmm._stats import _normalise_inplace

    wlp = rng.normal(scale=30.0, size=(500, 7)) - 200.0
    wlp[:, 0] -= 700.0  # underflows in float64 too
    expected_norm = logsumexp(wlp, axis=1)
    expected_resp = np.exp(wlp - expected_norm[:, None])
    got = wlp.astype(dtype) if layout == "rows" else np.ascontiguousarray(wlp.T, dtype=dtype).T
    assert got.flags.c_contiguous == (layout == "rows")
    with np.errstate(under="ignore"):
        log_norm = _normalise_inplace(got)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(log_norm, expected_norm, rtol=rtol)
    np.testing.assert_allclose(got, expected_resp, rtol=rtol * 10, atol=rtol)
    # no subnormal responsibility (they slow the statistics' GEMMs down many times):
    # what would underflow stays at the smallest normal numbers
    assert got.min() >= np.finfo(dtype).tiny
    tiny = expected_resp < np.finfo(dtype).tiny
    assert tiny.any() and np.all(got[tiny] < 1e4 * np.finfo(dtype).tiny)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_suffstats_then_m_step_match_naive_em(rng, ct):
    """One EM step from the statistics equals the textbook formulas."""
    data = RandomData(rng, n_samples=300, n_components=2, n_features=3)
    X = data.X[ct]
    params = _params(data, ct)
    ep = EStepParams.from_params(params)
    stats = suffstats_chunk(X, ep)
    new = m_step(stats, params.means, ep.shift, ct, reg_covar=1e-6)

    log_norm, log_resp = estimate_log_prob_resp(X, ep)
    resp = np.exp(log_resp)
    nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
    means = resp.T @ X / nk[:, None]
    full = np.array(
        [(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / nk[k] for k in range(2)]
    )
    expected_cov = {
        "full": full + 1e-6 * np.eye(3),
        "tied": (full * nk[:, None, None]).sum(axis=0) / nk.sum() + 1e-6 * np.eye(3),
        "diag": np.array([np.diag(c) for c in full]) + 1e-6,
        "spherical": np.array([np.diag(c).mean() for c in full]) + 1e-6,
    }[ct]
    assert stats.loglik == pytest.approx(log_norm.sum(), rel=1e-12)
    assert stats.n_samples == 300 and stats.weight_sum == 300
    np.testing.assert_allclose(new.weights, nk / nk.sum(), rtol=1e-12)
    np.testing.assert_allclose(new.means, means, rtol=1e-10)
    np.testing.assert_allclose(new.covariances, expected_cov, rtol=1e-9)


@pytest.mark.parametrize("n_features", [1, 2, 15, 16, 17, 64, 65, 100])
def test_full_kernel_matches_the_textbook_in_any_dimension(rng, n_features):
    """The full E-step (one GEMM below D=16, blocks of ~16 columns from there) and moments.

    Odd and even D, D=1, D=64 (the benchmark's shape: four column blocks, two
    row blocks of second moments) and D=100 (six and three, uneven): scipy's
    log-density and the naive M-step.
    """
    data = RandomData(rng, n_samples=600, n_components=3, n_features=n_features, scale=4)
    X, params = data.X["full"], _params(data, "full")
    ep = EStepParams.from_params(params)
    expected = np.column_stack(
        [
            multivariate_normal(data.means[k], data.covariances["full"][k]).logpdf(X)
            + np.log(data.weights[k])
            for k in range(3)
        ]
    )
    np.testing.assert_allclose(estimate_weighted_log_prob(X, ep), expected, rtol=1e-10)
    resp = np.exp(expected - logsumexp(expected, axis=1, keepdims=True))
    nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
    means = resp.T @ X / nk[:, None]
    expected_cov = np.array(
        [(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / nk[k] for k in range(3)]
    ) + 1e-6 * np.eye(n_features)
    stats = suffstats_chunk(X, ep)
    new = m_step(stats, params.means, ep.shift, "full", reg_covar=1e-6)
    np.testing.assert_allclose(new.means, means, rtol=1e-10)
    np.testing.assert_allclose(new.covariances, expected_cov, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_chunk_stats_are_associative(rng, ct):
    data = RandomData(rng, n_samples=400, n_components=3, n_features=2)
    X = data.X[ct]
    ep = EStepParams.from_params(_params(data, ct))
    whole = suffstats_chunk(X, ep)
    parts = suffstats_chunk(X[:123], ep) + suffstats_chunk(X[123:], ep)
    for name in ("nk", "s1", "s2"):
        np.testing.assert_allclose(
            getattr(parts, name), getattr(whole, name), rtol=1e-10, atol=1e-9
        )
    assert parts.loglik == pytest.approx(whole.loglik, rel=1e-12)
    assert parts.n_samples == whole.n_samples


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_a_block_of_many_tiles_adds_up_its_tiles(rng, ct):
    """Tiling inside a block (4096-8192 rows here) changes nothing but rounding."""
    data = RandomData(rng, n_samples=20_000, n_components=3, n_features=3)
    X = data.X[ct]
    params = _params(data, ct)
    assert params.model.tile_rows(3, 3) < len(X) // 2
    ep = EStepParams.from_params(params)
    whole = suffstats_chunk(X, ep)
    pieces = [suffstats_chunk(X[i : i + 1000], ep) for i in range(0, len(X), 1000)]
    parts = functools.reduce(operator.add, pieces)
    for name in ("nk", "s1", "s2"):
        np.testing.assert_allclose(
            getattr(parts, name), getattr(whole, name), rtol=1e-10, atol=1e-8
        )
    assert parts.loglik == pytest.approx(whole.loglik, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_restarts_sharing_tiles_compute_as_alone(rng, ct, dtype):
    """Restarts of one pass share each tile's centring (and full's quadratic features).

    Four restarts: two around one shift on the quadratic path, one around that
    shift with means far from it (whitened path for full: its tiles are laid out
    for the first restart's features), one around its own shift; with weights.
    Each equals its own pass, to the bit where its arithmetic is the same.
    """
    from daskgmm._kernels import QuadraticPlan
    from daskgmm._stats import _log_prob_constants

    means = rng.uniform(-3, 3, size=(3, 4))
    X = (means[rng.randint(0, 3, size=3000)] + rng.normal(size=(3000, 4))).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=len(X))
    scales = np.array([1.0, 1.5, 0.7])
    covariances = {
        "full": scales[:, None, None] * np.eye(4),
        "tied": np.eye(4),
        "diag": np.outer(scales, np.ones(4)),
        "spherical": scales,
    }[ct]
    base = GMMParams.from_covariances(ct, np.full(3, 1 / 3), means, covariances)
    moved = GMMParams.from_covariances(ct, base.weights, means + 0.3, covariances)
    far = GMMParams.from_covariances(ct, base.weights, means * 1000.0, covariances)
    shift = EStepParams.from_params(base).shift
    eps = (
        EStepParams.from_params(base),
        EStepParams.from_params(moved, shift),
        EStepParams.from_params(far, shift),
        EStepParams.from_params(moved),
    )
    if ct == "full":
        plans = [isinstance(_log_prob_constants(ep, X.dtype)[0], QuadraticPlan) for ep in eps]
        assert plans == [True, True, False, True]
    shared = suffstats_chunk_many(X, eps, sample_weight=w, row_offset=5).parts
    for ep, got in zip(eps, shared, strict=True):
        alone = suffstats_chunk(X, ep, sample_weight=w, row_offset=5)
        for name in ("nk", "s1", "s2"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name))
        assert (got.loglik, got.weight_sum, got.n_samples) == (
            alone.loglik,
            alone.weight_sum,
            alone.n_samples,
        )


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_blocks_accumulate_in_float64(rng, ct):
    data = RandomData(rng, n_samples=400, n_components=2, n_features=3)
    X = data.X[ct]
    ep = EStepParams.from_params(_params(data, ct))
    s64 = suffstats_chunk(X, ep)
    s32 = suffstats_chunk(X.astype(np.float32), ep)
    assert s32.nk.dtype == s32.s1.dtype == s32.s2.dtype == np.float64
    assert estimate_weighted_log_prob(X.astype(np.float32), ep).dtype == np.float32
    np.testing.assert_allclose(s32.nk, s64.nk, rtol=1e-4)
    np.testing.assert_allclose(s32.s2, s64.s2, rtol=1e-3, atol=1e-3 * np.abs(s64.s2).max())
    assert s32.loglik == pytest.approx(s64.loglik, rel=1e-5)


@pytest.mark.parametrize("n_features", [16, 24, 64, 100])
def test_float32_full_kernel_layouts_agree_with_float64(rng, n_features):
    """float32 switches to two GEMMs at D=24, float64 at D=16 (different tiles too).

    float32 also sums its moments in narrower blocks of rows: four at D=64
    (float64 two), six uneven ones at D=100 (float64 three).
    """
    data = RandomData(rng, n_samples=3000, n_components=3, n_features=n_features, scale=4)
    X = data.X["full"]
    ep = EStepParams.from_params(_params(data, "full"))
    s64 = suffstats_chunk(X, ep)
    s32 = suffstats_chunk(X.astype(np.float32), ep)
    np.testing.assert_allclose(s32.nk, s64.nk, rtol=1e-4)
    np.testing.assert_allclose(s32.s1, s64.s1, atol=1e-4 * np.abs(X).max() * len(X))
    np.testing.assert_allclose(s32.s2, s64.s2, rtol=1e-3, atol=1e-4 * np.abs(s64.s2).max())
    assert s32.loglik == pytest.approx(s64.loglik, rel=1e-5)


def test_sample_weight_scales_responsibilities(rng):
    data = RandomData(rng, n_samples=100, n_components=2, n_features=2)
    X = data.X["full"]
    ep = EStepParams.from_params(_params(data, "full"))
    w = rng.randint(0, 4, size=100).astype(float)
    weighted = suffstats_chunk(X, ep, sample_weight=w)
    repeated = suffstats_chunk(np.repeat(X, w.astype(int), axis=0), ep)
    np.testing.assert_allclose(weighted.nk, repeated.nk, rtol=1e-12)
    np.testing.assert_allclose(weighted.s2, repeated.s2, rtol=1e-10)
    assert weighted.weight_sum == repeated.n_samples
    assert weighted.loglik == pytest.approx(repeated.loglik, rel=1e-12)


@pytest.mark.parametrize(
    "bad, message", [(np.nan, "Input X contains NaN"), (np.inf, "Input X contains infinity")]
)
def test_nonfinite_block_names_the_row(rng, bad, message):
    data = RandomData(rng, n_samples=50, n_components=2, n_features=2)
    X = data.X["full"].copy()
    X[17, 1] = bad
    ep = EStepParams.from_params(_params(data, "full"))
    with pytest.raises(ValueError, match=message) as err:
        suffstats_chunk(X, ep, row_offset=1000)
    assert "(first in row 1017)" in str(err.value)


@pytest.mark.parametrize("n_cols", [1, 3, 4])
def test_uniform_rows_do_not_depend_on_blocks(n_cols):
    whole = uniform_rows(7, 0, 100, n_cols)
    assert whole.shape == (100, n_cols)
    for cuts in ([31], [1, 2, 3, 50], [97]):
        bounds = [0, *cuts, 100]
        parts = [uniform_rows(7, a, b - a, n_cols) for a, b in itertools.pairwise(bounds)]
        np.testing.assert_array_equal(whole, np.vstack(parts))
    assert not np.array_equal(uniform_rows(8, 0, 100, n_cols), whole)
    # every draw distinct: no two rows share a Philox output
    assert len(np.unique(whole)) == whole.size


def test_stats_module_does_not_import_dask():
    modules = "daskgmm._stats, daskgmm._covariance, daskgmm._kernels"
    code = f"import sys, {modules}; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _centred_reference(X, ep, resp):
    """Second moments around each current mean, straight from the definition, in float64."""
    means = ep.deltas + ep.shift
    return np.array(
        [(resp[:, k, None] * (X - m)).T @ (X - m) for k, m in enumerate(means)], dtype=float
    )


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-9), (np.float32, 2e-3)])
@pytest.mark.parametrize("case", ["separated", "anisotropic", "offset"])
@pytest.mark.parametrize("d", [5, 64], ids=["one-gemm", "split"])
@pytest.mark.parametrize("plan", ["whitened", "quadratic"])
def test_full_second_moments_from_the_estep_products_are_accurate(
    rng, monkeypatch, dtype, tol, case, d, plan
):
    """The E-step's products give the centred moments, relative to each covariance.

    Hard cases for cancellation: means 300 standard deviations from the shift,
    covariances with condition number 1e4, data at 1e6 with unit spread. The
    error is measured in each component's own metric (``U^T dS U / n_k``), and the
    per-component centred path (used by the initialisers) sets the bar. Measured,
    whitened: float64 <= 6e-13, float32 <= 1.3e-4 (anisotropic; the centred
    path: 4e-5). The quadratic features (forced here; the E-step takes them only
    where ``_use_quadratic`` allows) lose ``eps * reach**2``, as documented.
    """
    import daskgmm._kernels as kernels
    from daskgmm._covariance import get_covariance_model
    from daskgmm._stats import _log_prob_constants, _normalise_inplace, _weighted_log_prob_centred

    n = 3000
    labels = rng.randint(0, 3, size=n)
    if case == "separated":
        means, scales = rng.normal(scale=300.0, size=(3, d)), np.ones((3, d))
    elif case == "anisotropic":
        means, scales = rng.normal(scale=3.0, size=(3, d)), np.tile(np.logspace(-2, 0, d), (3, 1))
    else:
        means, scales = 1e6 + rng.normal(scale=3.0, size=(3, d)), np.ones((3, d))
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = means[labels] + (rng.normal(size=(n, d)) * scales[labels]) @ rotation
    covs = np.array([rotation.T @ np.diag(s**2) @ rotation for s in scales])
    # start from slightly wrong parameters, as mid-fit
    params = GMMParams.from_covariances("full", np.full(3, 1 / 3), means + 0.1, covs * 1.2)
    ep = EStepParams.from_params(params)
    Xc = (X - ep.shift).astype(dtype)
    model = get_covariance_model("full")
    monkeypatch.setattr(kernels, "_use_quadratic", lambda *args: plan == "quadratic")
    prepared, offset = _log_prob_constants(ep, Xc.dtype)
    assert isinstance(prepared, kernels.QuadraticPlan) == (plan == "quadratic")

    def moments(estep):
        ws = kernels.Workspace()
        resp, products = _weighted_log_prob_centred(kernels.Tile(Xc), prepared, offset, ws)
        _normalise_inplace(resp)
        if estep:
            acc = prepared.accumulator(ep.deltas, Xc.dtype)
        else:
            acc = model.accumulator(ep.deltas, Xc.dtype)
        acc.add(Xc, resp, products, ws)
        return acc.finish(resp.sum(axis=0).astype(float))[1], resp.astype(float)

    got, resp = moments(estep=True)
    centred, _ = moments(estep=False)
    expected = _centred_reference(X, ep, resp)
    nk = resp.sum(axis=0)
    U = ep.precisions_cholesky

    def error(s2):
        return max(np.abs(U[k].T @ (s2[k] - expected[k]) @ U[k]).max() / nk[k] for k in range(3))

    if plan == "whitened":
        assert error(got) < tol
        assert error(got) < max(10 * error(centred), 1e-12)
    else:
        reach = np.linalg.norm(np.einsum("kd,kde->ke", ep.deltas, U), axis=1).max()
        assert error(got) < 10 * np.finfo(dtype).eps * (reach + np.sqrt(d) + 3) ** 2


def test_quadratic_features_are_chosen_by_shape_and_reach():
    """Small D against K, and means near the shift (in float32: within ~29 sigma)."""
    from daskgmm._kernels import _use_quadratic

    def use(k, d, distance, dtype):
        whitened = np.zeros((k, d))  # U_k^T d_k: one mean `distance` sigmas from the shift
        whitened[0, 0] = distance
        return _use_quadratic(whitened, dtype)

    assert use(8, 16, 5.0, np.float32) and use(8, 24, 5.0, np.float64)
    assert not use(8, 25, 5.0, np.float64) and use(32, 64, 5.0, np.float64)
    assert use(3, 5, 20.0, np.float32) and not use(3, 5, 30.0, np.float32)
    assert use(3, 5, 600.0, np.float64) and not use(3, 5, 700.0, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_center_sets_sharing_tiles_compute_as_alone(rng, dtype):
    """Restarts' k-means passes from one read: each set of centres gets what it would alone.

    Sets of different sizes (a k-means|| round's candidates), ties between
    centres (argmin's lowest index), weights and a NaN row named in the error.
    """
    from daskgmm._stats import _nearest_tiles, hard_assignment_stats_chunk, kmeans_stats_chunk

    X = (rng.normal(size=(5000, 3)) * 4).astype(dtype)
    sets = [rng.normal(size=(n, 3)) * 4 for n in (1, 7, 40)]
    sets[1][3] = sets[1][5]  # a tie: the lower index wins
    shift = sets[0][0]
    w = rng.uniform(0.5, 2.0, size=5000)
    together = kmeans_stats_chunk(X, sets, shift, sample_weight=w).parts
    for centers, got in zip(sets, together, strict=True):
        (alone,) = kmeans_stats_chunk(X, [centers], shift, sample_weight=w).parts
        for name in ("nk", "s1", "inertia", "weight_sum"):
            np.testing.assert_allclose(getattr(got, name), getattr(alone, name), rtol=1e-12)
        d2 = ((X.astype(float)[:, None] - centers[None]) ** 2).sum(-1)
        nk = np.bincount(d2.argmin(axis=1), weights=w, minlength=len(centers))
        np.testing.assert_allclose(got.nk, nk, rtol=1e-12)
    labels = np.concatenate([found[1][0].copy() for _, _, found in _nearest_tiles(X, sets, shift)])
    assert not np.any(labels == 5)  # always 3, never 5: the tie
    hard = hard_assignment_stats_chunk(X, sets[1:], shift, "full", w).parts
    for centers, got in zip(sets[1:], hard, strict=True):
        (alone,) = hard_assignment_stats_chunk(X, [centers], shift, "full", w).parts
        np.testing.assert_allclose(got.s2, alone.s2, rtol=1e-12)
    X[4321, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(first in row 4321\)"):
        kmeans_stats_chunk(X, sets, shift)


@pytest.mark.parametrize("quadratic", [False, True], ids=["whitened", "quadratic"])
def test_full_estep_accumulator_requires_the_products_of_the_same_tile(rng, quadratic):
    """The E-step's products are handed over, and products of another tile are refused."""
    from daskgmm._kernels import Workspace, full_plan

    data = RandomData(rng, n_samples=20, n_components=2, n_features=3)
    ep = EStepParams.from_params(_params(data, "full"))
    deltas = ep.deltas * (1.0 if quadratic else 1e3)  # far means take the whitened path
    plan = full_plan(deltas, ep.precisions_cholesky, np.float64)
    assert type(plan).__name__ == ("QuadraticPlan" if quadratic else "WhitenedPlan")
    Xc = data.X["full"] - ep.shift
    ws = Workspace()
    _, products = plan.mahalanobis(plan.centre(data.X["full"][:7], ep.shift, ws), ws)
    acc = plan.accumulator(deltas, np.float64)
    with pytest.raises(ValueError, match=r"needs the .* of this tile from mahalanobis"):
        acc.add(Xc, np.full((20, 2), 0.5), products, ws)
    with pytest.raises(ValueError, match=r"needs the .* of this tile from mahalanobis"):
        acc.add(Xc, np.full((20, 2), 0.5), None, ws)


def test_kmeans_stats_match_the_nearest_centre_definition(rng):
    """Counts, sums and inertia of the nearest-centre assignment, tiled across many centres."""
    from daskgmm._stats import _nearest_tiles, kmeans_sizes_chunk, kmeans_stats_chunk

    X = rng.normal(size=(3000, 3)) * 5
    centers = rng.normal(size=(700, 3)) * 5  # 700 centres: tiles of a few hundred rows
    w = rng.randint(0, 3, size=3000).astype(float)
    d2_all = ((X[:, None, :] - centers[None]) ** 2).sum(-1)
    labels = d2_all.argmin(axis=1)
    shift = centers.mean(axis=0)
    tiles = [
        (labels.copy(), d2.copy()) for _, _, ((labels, d2),) in _nearest_tiles(X, [centers], shift)
    ]
    assert len(tiles) > 1
    got_labels = np.concatenate([labels for labels, _ in tiles])
    got_d2 = np.concatenate([d2 for _, d2 in tiles])
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_d2, d2_all.min(axis=1), rtol=1e-9, atol=1e-9)
    # the yielded arrays live in the pass's workspace: copy them before the next tile
    distances_only = [
        (labels, d2.copy())
        for _, _, ((labels, d2),) in _nearest_tiles(X, [centers], shift, labels=False)
    ]
    assert all(labels is None for labels, _ in distances_only)
    np.testing.assert_allclose(
        np.concatenate([d2 for _, d2 in distances_only]), got_d2, rtol=1e-12, atol=1e-9
    )
    (stats,) = kmeans_stats_chunk(X, [centers], shift, sample_weight=w).parts
    nk = np.bincount(labels, weights=w, minlength=700)
    s1 = np.array(
        [(w[labels == k, None] * (X[labels == k] - c)).sum(0) for k, c in enumerate(centers)]
    )
    np.testing.assert_allclose(stats.nk, nk, rtol=1e-12)
    np.testing.assert_allclose(stats.s1, s1, rtol=1e-9, atol=1e-9)
    assert stats.inertia == pytest.approx(w @ d2_all.min(axis=1), rel=1e-10)
    assert stats.weight_sum == w.sum()
    (sizes,) = kmeans_sizes_chunk(X, [centers], shift, sample_weight=w).parts
    np.testing.assert_array_equal(sizes.nk, stats.nk)
    assert (sizes.inertia, sizes.weight_sum) == (stats.inertia, stats.weight_sum)
    assert not sizes.s1.any()
    halves = kmeans_stats_chunk(X[:1234], [centers], shift, w[:1234]) + kmeans_stats_chunk(
        X[1234:], [centers], shift, w[1234:]
    )
    (halves,) = halves.parts
    np.testing.assert_allclose(halves.s1, stats.s1, rtol=1e-9, atol=1e-9)
    X[2500, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(first in row 2500\)"):
        kmeans_stats_chunk(X, [centers], shift)
