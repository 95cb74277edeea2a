"""Inputs: Zarr stores (array and xarray dataset), zarr.Array, .npy, xarray images."""

from __future__ import annotations

import re
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from sklearn.exceptions import ConvergenceWarning

from daskgmm import GaussianMixture
from daskgmm._data import open_input

from .conftest import RandomData


@pytest.fixture
def data():
    return RandomData(
        np.random.RandomState(0), n_samples=3000, n_components=3, n_features=3, scale=30
    )


def _init(data):
    return dict(
        weights_init=data.weights,
        means_init=data.means + 0.3,
        precisions_init=data.precisions["full"],
    )


def _fit(X, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(3, tol=0, max_iter=4, **_init(data), **kw).fit(X)


def test_zarr_path_array_and_npy_match_in_memory(tmp_path, data):
    X = data.X["full"]
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(256, 3), dtype="f8")
    z[:] = X
    np.save(tmp_path / "x.npy", X)
    ref = _fit(X, data)
    for source in (
        str(tmp_path / "x.zarr"),
        tmp_path / "x.zarr",
        zarr.open(tmp_path / "x.zarr"),
        str(tmp_path / "x.npy"),
    ):
        got = _fit(source, data)
        np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-10)
        np.testing.assert_allclose(got.covariances_, ref.covariances_, rtol=1e-10)
    labels = got.predict(str(tmp_path / "x.zarr"))
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), ref.predict(X))


def test_directory_of_npy_and_zarr_files_is_one_dataset(tmp_path, data):
    X = data.X["full"]
    folder = tmp_path / "days"
    folder.mkdir()
    np.save(folder / "a-monday.npy", X[:1000])
    z = zarr.create_array(
        str(folder / "b-tuesday.zarr"), shape=(1200, 3), chunks=(500, 3), dtype="f8"
    )
    z[:] = X[1000:2200]
    np.save(folder / "c-wednesday.npy", X[2200:])
    (folder / "notes.txt").write_text("ignored")
    inp = open_input(str(folder))
    np.testing.assert_array_equal(inp.X.compute(), X)
    assert inp.identity.startswith("dir:") and "b-tuesday.zarr" in inp.identity
    np.save(folder / "d-bad.npy", np.ones((5, 4)))
    with pytest.raises(ValueError, match="must all be 2-D with the same number of features"):
        open_input(str(folder))


def test_zarr_chunks_are_grown_to_the_target_size(tmp_path):
    import dask

    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=(100_000, 4), chunks=(100, 4), dtype="f4")
    z[:] = 1.0
    with dask.config.set({"daskgmm.chunk-bytes": 100 * 4 * 4 * 7 + 5}):
        X = open_input(str(tmp_path / "x.zarr")).X
    assert X.chunks[0][0] == 700  # a multiple of the store's 100 rows
    X = open_input(str(tmp_path / "x.zarr")).X  # default 64 MiB: the whole 1.6 MB store
    assert X.numblocks[0] == 1


@pytest.fixture
def image_store(tmp_path):
    """A 3-band image (band, y, x) with 3 classes in known regions, as an xarray Zarr dataset."""
    rng = np.random.RandomState(1)
    ny, nx = 60, 40
    truth = np.zeros((ny, nx), dtype=int)
    truth[20:40] = 1
    truth[40:] = 2
    centres = np.array([[0.1, 0.5, 0.2], [0.6, 0.1, 0.3], [0.3, 0.3, 0.9]]) * 100
    pixels = centres[truth] + rng.normal(scale=2.0, size=(ny, nx, 3))
    ds = xr.Dataset(
        {
            "reflectance": (("band", "y", "x"), pixels.transpose(2, 0, 1).astype("f4")),
            "mask": (("y", "x"), np.ones((ny, nx), dtype="u1")),
        },
        coords={
            "band": ["red", "green", "blue"],
            "y": np.arange(ny) * 10.0,
            "x": np.arange(nx) * 10.0,
        },
    )
    path = tmp_path / "image.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.chunk({"y": 16, "x": 16}).to_zarr(path, mode="w")
    return str(path), truth


def test_image_dataset_label_map_is_lazy_y_x(image_store):
    from sklearn.metrics import adjusted_rand_score

    path, truth = image_store
    gm = GaussianMixture(3, feature_dim="band", variable="reflectance", random_state=0)
    gm.fit(path)
    assert gm.n_features_in_ == 3
    labels = gm.predict(path)
    assert isinstance(labels, xr.DataArray) and isinstance(labels.data, da.Array)
    assert labels.dims == ("y", "x") and labels.shape == truth.shape
    np.testing.assert_array_equal(labels["x"].values, np.arange(40) * 10.0)
    assert adjusted_rand_score(truth.ravel(), labels.values.ravel()) > 0.99
    proba = gm.predict_proba(path)
    assert proba.dims == ("y", "x", "component")
    np.testing.assert_allclose(proba.sum("component").values, 1.0, rtol=1e-6)
    ds = xr.open_zarr(path)
    in_memory = GaussianMixture(3, feature_dim="band", random_state=0).fit(
        ds["reflectance"].compute()
    )
    np.testing.assert_allclose(in_memory.means_, gm.means_, rtol=1e-6)


def test_input_errors(tmp_path, image_store):
    path, _ = image_store
    with pytest.raises(FileNotFoundError, match=re.escape("does not exist")):
        GaussianMixture(2).fit(str(tmp_path / "missing.zarr"))
    with pytest.raises(ValueError, match=re.escape("holds several variables")):
        GaussianMixture(2, feature_dim="band").fit(path)
    with pytest.raises(ValueError, match=re.escape("has no variable 'radiance'")):
        GaussianMixture(2, feature_dim="band", variable="radiance").fit(path)
    with pytest.raises(ValueError, match=re.escape("feature_dim='wavelength' is not a dimension")):
        GaussianMixture(2, feature_dim="wavelength", variable="reflectance").fit(path)
    with pytest.raises(ValueError, match=re.escape("name the feature dimension with")):
        GaussianMixture(2, variable="reflectance").fit(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=re.escape("holds no .npy files or .zarr stores")):
        GaussianMixture(2).fit(str(tmp_path / "empty"))
    (tmp_path / "junk.txt").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=re.escape("is neither a Zarr store, a .npy file nor")):
        GaussianMixture(2).fit(str(tmp_path / "junk.txt"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=re.escape("is not a plain numeric .npy file")):
        GaussianMixture(2).fit(str(tmp_path / "obj.npy"))
    gm = GaussianMixture(2, feature_dim="band", variable="reflectance").fit(path)
    with pytest.raises(
        ValueError,
        match=re.escape("X has 2 features, but GaussianMixture is expecting 3 features as input."),
    ):
        gm.predict(np.ones((4, 2)))


def test_streamed_store_of_a_few_hundred_mb_matches_in_memory_fit(tmp_path):
    """~200 MB on disk, fitted with cache=False: every iteration re-reads the store."""
    rng = np.random.RandomState(0)
    n, d = 1_600_000, 16
    means = rng.uniform(-5, 5, size=(3, d))
    z = zarr.create_array(str(tmp_path / "big.zarr"), shape=(n, d), chunks=(100_000, d), dtype="f8")
    labels = rng.randint(0, 3, size=n)
    for start in range(0, n, 400_000):
        block = labels[start : start + 400_000]
        z[start : start + 400_000] = means[block] + rng.normal(size=(len(block), d))
    init = dict(
        weights_init=np.full(3, 1 / 3),
        means_init=means + 0.5,
        precisions_init=np.array([np.eye(d)] * 3),
    )
    kw = dict(n_components=3, tol=0, max_iter=3, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        streamed = GaussianMixture(cache=False, **kw).fit(str(tmp_path / "big.zarr"))
        in_memory = GaussianMixture(**kw).fit(z[:])
    np.testing.assert_allclose(streamed.means_, in_memory.means_, rtol=1e-10)
    np.testing.assert_allclose(streamed.covariances_, in_memory.covariances_, rtol=1e-10)
    np.testing.assert_allclose(streamed.lower_bounds_, in_memory.lower_bounds_, rtol=1e-12)


def test_streamed_store_on_a_cluster_submits_each_block_key_one_way(
    tmp_path, data, cluster_client, caplog
):
    """Every pass reads the store's blocks through the same task spec.

    Gathering rows by fancy indexing submitted the blocks' keys as plain getter
    tasks after the statistics passes had submitted them as aliases, and the
    scheduler warned that this "can cause failures and deadlocks".
    """
    import logging

    store = tmp_path / "x.zarr"
    zarr.create_array(store, data=data.X["full"], chunks=(100, 3))
    X = open_input(str(store)).X
    with (
        cluster_client.as_current(),
        caplog.at_level(logging.WARNING, logger="distributed.scheduler"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, n_init=2, max_iter=5, tol=0, cache=False, random_state=0).fit(X)
    assert gm.n_iter_ == 5
    assert "run_spec" not in caplog.text


@pytest.mark.parametrize(
    "n_samples, n_features, itemsize",
    [(1_000_000, 64, 8), (1_000_000, 16, 8), (10_000_000, 64, 8), (123_457, 3, 4)],
)
def test_in_memory_blocks_are_near_equal_and_a_whole_number_per_core(
    monkeypatch, n_samples, n_features, itemsize
):
    """Cores finish a pass together: 10^6 x 64 float64 was 7 blocks of 131072 rows and one of
    82496 on 2 cores; every block stays under the 64 MB target."""
    import math

    from daskgmm._data import row_chunks, target_chunk_bytes

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    rows = row_chunks(n_samples, n_features, itemsize)
    n_blocks = math.ceil(n_samples / rows)
    last = n_samples - (n_blocks - 1) * rows
    assert n_blocks % 2 == 0 and n_blocks >= 4
    assert rows - last < n_blocks
    assert rows * n_features * itemsize <= target_chunk_bytes()


@pytest.mark.parametrize(
    "n_samples, n_features, local, cluster",
    [
        (1_000_000, 16, 4, 2),  # 128 MB: two blocks per core, one per worker thread
        (10_000, 2, 3, 2),  # blocks of at least 4096 rows
        (3_000_000, 16, 6, 6),  # 384 MB: bounded by the 64 MB blocks, not by the threads
    ],
)
def test_in_memory_blocks_on_a_cluster_are_one_per_worker_thread(
    cluster_client, monkeypatch, n_samples, n_features, local, cluster
):
    """Persisted blocks stay on their worker, so a cluster gets one block per worker thread
    (fewer tasks per pass), the threaded scheduler two per core."""
    from daskgmm._data import as_dask_array, target_chunk_bytes

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert sum(cluster_client.nthreads().values()) == 2
    X = np.zeros((n_samples, n_features))
    with dask.config.set(scheduler="threads"):
        assert as_dask_array(X).numblocks[0] == local
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client):
        Xd = as_dask_array(X)
    assert Xd.numblocks[0] == cluster
    assert max(Xd.chunks[0]) * n_features * 8 <= target_chunk_bytes()


def test_a_store_is_listed_for_its_files_fingerprint_only_when_asked(tmp_path):
    """Opening a store (predict, score) does not list it: a million chunks take seconds;
    the fingerprint is computed where a checkpoint or an output is to be reused."""
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=(1000, 2), chunks=(100, 2), dtype="f8")
    z[:] = np.random.RandomState(0).normal(size=(1000, 2))
    inp = open_input(str(tmp_path / "x.zarr"))
    assert "files" not in vars(inp)  # not listed on opening
    first = inp.files
    assert first is not None and vars(inp)["files"] == first  # listed once, then kept
    z[:10] = 0.0  # rewritten chunk files: another fingerprint for a new opening
    assert open_input(str(tmp_path / "x.zarr")).files != first
