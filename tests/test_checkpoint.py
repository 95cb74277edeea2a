"""Checkpoints (atomic, resumable, refused when foreign or corrupt) and model files."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import daskgmm
from daskgmm import BayesianGaussianMixture, GaussianMixture
from daskgmm._checkpoint import Checkpoint

from .conftest import COVARIANCE_TYPES, RandomData

ESTIMATORS = [GaussianMixture, BayesianGaussianMixture]


class _Killed(Exception):
    pass


class _DyingScheduler:
    """Runs ``n`` computes, then dies in the middle of the next one (like a killed driver)."""

    def __init__(self, n):
        self.left = n

    def __call__(self, dsk, keys, **kwargs):
        if self.left == 0:
            raise _Killed
        self.left -= 1
        return dask.get(dsk, keys, **kwargs)


@pytest.fixture
def data():
    return RandomData(
        np.random.RandomState(4), n_samples=900, n_components=3, n_features=2, scale=6
    )


def _snapshot(path):
    return {
        os.path.relpath(os.path.join(root, f), path): open(os.path.join(root, f), "rb").read()
        for root, _, files in os.walk(path)
        for f in files
    }


def _quiet_fit(gm, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X, **kw)


# Here the k-means initialisation takes 19 computes (as many for three restarts
# sharing their passes: as many as the longest one), then 30 EM passes serve all
# restarts: die during the initialisation, at the first EM pass, and later.
@pytest.mark.parametrize(
    "n_init, init_passes, die_after",
    [(1, 19, 3), (1, 19, 20), (1, 19, 40), (3, 19, 10), (3, 19, 25), (3, 19, 48)],
)
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_killed_fit_resumes_to_the_same_model(
    tmp_path, data, die_after, n_init, init_passes, caplog, counting_scheduler, Estimator
):
    """The same for the Bayesian mixture, whose data priors come from the initialisation's
    last pass (no pass more)."""
    X = da.from_array(data.X["full"], chunks=200)
    kw = dict(n_components=3, n_init=n_init, random_state=7, tol=1e-6, max_iter=30)
    if Estimator is BayesianGaussianMixture:
        kw["tol"] = 0.0  # a bound summed over samples: 30 passes as for EM
    reference = _quiet_fit(Estimator(**kw), X)
    total = counting_scheduler.computes
    assert total == init_passes + 30
    ckpt = tmp_path / "ckpt"
    # +1: a fit with a checkpoint makes one more pass, the content digest of the
    # persisted data, so it dies at the same point of the fit as intended
    with dask.config.set(scheduler=_DyingScheduler(die_after + 1)), pytest.raises(_Killed):
        _quiet_fit(Estimator(**kw), X, checkpoint=ckpt)
    assert Checkpoint(ckpt).exists() == (die_after > init_passes)
    before = counting_scheduler.computes
    with caplog.at_level(logging.INFO, logger="daskgmm"):
        resumed = _quiet_fit(Estimator(**kw), X, checkpoint=ckpt)
    if die_after > init_passes:  # past the initialisation: must not start over
        assert "Resuming from checkpoint" in caplog.text
        # only the passes that had not completed, and the content check of the
        # persisted data (one pass over memory, also made before the killed run's)
        redone = counting_scheduler.computes - before - 1
        assert total - die_after + 1 <= redone <= total - init_passes
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(resumed, name), getattr(reference, name), rtol=1e-12, err_msg=name
        )
    assert resumed.lower_bounds_ == pytest.approx(reference.lower_bounds_, rel=1e-12)
    assert resumed.n_iter_ == reference.n_iter_ and resumed.converged_ == reference.converged_
    # a finished checkpoint of a dask array (no files to compare) costs one read:
    # the content digest, nothing else
    before = counting_scheduler.computes
    again = Estimator(**kw).fit(X, checkpoint=ckpt)
    assert counting_scheduler.computes == before + 1
    np.testing.assert_array_equal(again.means_, resumed.means_)


def test_checkpoint_of_other_data_or_parameters_is_refused_and_kept(tmp_path, data):
    X = data.X["full"]
    ckpt = tmp_path / "ckpt"
    GaussianMixture(3, random_state=0).fit(X, checkpoint=ckpt)
    before = _snapshot(ckpt)
    with pytest.raises(ValueError, match=r"belongs to another fit \(data content") as err:
        GaussianMixture(3, random_state=0).fit(X + 1.0, checkpoint=ckpt)
    assert "resume=False" in str(err.value)
    with pytest.raises(ValueError, match="data shape"):
        GaussianMixture(3, random_state=0).fit(X[:-5], checkpoint=ckpt)
    with pytest.raises(ValueError, match=re.escape("estimator n_components: checkpoint 3, now 4")):
        GaussianMixture(4, random_state=0).fit(X, checkpoint=ckpt)
    with pytest.raises(ValueError, match="data weighted: checkpoint False, now True"):
        GaussianMixture(3, random_state=0).fit(X, sample_weight=np.ones(len(X)), checkpoint=ckpt)
    assert _snapshot(ckpt) == before
    # verbosity and caching do not change the model: not part of the fingerprint
    GaussianMixture(3, random_state=0, verbose=0, cache=False).fit(X, checkpoint=ckpt)
    fresh = GaussianMixture(4, random_state=0).fit(X, checkpoint=ckpt, resume=False)
    assert fresh.means_.shape == (4, 2)
    assert Checkpoint(ckpt).load()[1]["estimator"]["n_components"] == 4


def _corrupt_latest(ckpt):
    (ckpt / "LATEST").write_text('{"format": "daskgmm-check')


def _state_dir(ckpt):
    return ckpt / json.loads((ckpt / "LATEST").read_text())["state"]


def _drop_array(ckpt):
    os.remove(_state_dir(ckpt) / "r0-means.npy")


def _pickle_array(ckpt):
    np.save(
        _state_dir(ckpt) / "r0-means.npy", np.array([object()], dtype=object), allow_pickle=True
    )


def _newer_version(ckpt):
    doc = json.loads((ckpt / "LATEST").read_text())
    doc["format_version"] = 99
    (ckpt / "LATEST").write_text(json.dumps(doc))


def _wrong_shape(ckpt):
    np.save(_state_dir(ckpt) / "r0-weights.npy", np.ones(7))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_corrupt_latest, "is corrupt: LATEST is not valid JSON"),
        (_drop_array, "is incomplete: r0-means.npy is missing"),
        (_pickle_array, "r0-means.npy is not a plain numeric .npy file"),
        (_newer_version, "was written by a newer daskgmm (checkpoint format version 99"),
        (_wrong_shape, "'weights' has shape (7,), expected (3,)"),
    ],
)
def test_damaged_checkpoint_is_a_clear_error_and_left_alone(tmp_path, data, damage, message):
    X = data.X["full"]
    ckpt = tmp_path / "ckpt"
    _quiet_fit(GaussianMixture(3, random_state=0, max_iter=3), X, checkpoint=ckpt)
    damage(ckpt)
    before = _snapshot(ckpt)
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(3, random_state=0, max_iter=3).fit(X, checkpoint=ckpt)
    assert _snapshot(ckpt) == before


def test_checkpoint_keeps_one_state(tmp_path, data):
    ckpt = tmp_path / "ckpt"
    _quiet_fit(
        GaussianMixture(3, random_state=0, max_iter=5, tol=0), data.X["full"], checkpoint=ckpt
    )
    assert sorted(p.name for p in ckpt.iterdir() if p.name.startswith("state-")) == [
        json.loads((ckpt / "LATEST").read_text())["state"]
    ]
    assert not [p for p in ckpt.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_model_round_trip(tmp_path, data, ct):
    gm = GaussianMixture(3, covariance_type=ct, random_state=0, reg_covar=1e-5).fit(data.X[ct])
    gm.save(tmp_path / "model.zarr")
    loaded = daskgmm.load(tmp_path / "model.zarr")
    assert loaded.get_params() == gm.get_params()
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
        "converged_",
        "n_iter_",
        "lower_bound_",
        "lower_bounds_",
        "n_features_in_",
    ):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(gm, name), err_msg=name)
    np.testing.assert_array_equal(loaded.predict(data.X[ct]), gm.predict(data.X[ct]))
    # another model replaces it only when asked to, and then whole
    other = GaussianMixture(2, covariance_type=ct, random_state=0).fit(data.X[ct])
    with pytest.raises(ValueError, match="holds another daskgmm model; pass overwrite=True"):
        other.save(tmp_path / "model.zarr")
    other.save(tmp_path / "model.zarr", overwrite=True)
    assert daskgmm.load(tmp_path / "model.zarr").n_components == 2
    assert [p.name for p in tmp_path.iterdir()] == ["model.zarr"]


def _model(tmp_path, data):
    path = tmp_path / "model.zarr"
    GaussianMixture(3, random_state=0).fit(data.X["full"]).save(path)
    return path


def test_model_file_errors(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        daskgmm.load(tmp_path / "nothing.zarr")
    path = _model(tmp_path, data)
    shutil.rmtree(path / "means")
    with pytest.raises(ValueError, match=re.escape("is incomplete: array 'means' is missing")):
        daskgmm.load(path)

    path = _model(tmp_path, data)
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs)["daskgmm"]
    group.attrs["daskgmm"] = {**meta, "format_version": 2}
    with pytest.raises(ValueError, match=re.escape("newer daskgmm (model format version 2")):
        daskgmm.load(path)

    path = _model(tmp_path, data)
    group = zarr.open_group(str(path), mode="r+")
    del group["weights"]
    group.create_array("weights", data=np.ones(5))
    with pytest.raises(ValueError, match=re.escape("'weights' has shape (5,), expected (3,)")):
        daskgmm.load(path)

    path = _model(tmp_path, data)
    text = (path / "zarr.json").read_text()
    (path / "zarr.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="is not a readable Zarr group"):
        daskgmm.load(path)

    other = tmp_path / "plain.zarr"
    zarr.open_group(str(other), mode="w").create_array("x", data=np.ones(3))
    with pytest.raises(ValueError, match="is not a daskgmm model"):
        daskgmm.load(other)


def test_no_pickle_anywhere_in_files(tmp_path, data):
    gm = GaussianMixture(3, random_state=0, max_iter=4)
    _quiet_fit(gm, data.X["full"], checkpoint=tmp_path / "ckpt")
    gm.save(tmp_path / "model.zarr")
    for root, _, files in os.walk(tmp_path):
        for name in files:
            head = open(os.path.join(root, name), "rb").read()
            assert b"\x80\x04\x95" not in head and b"cnumpy" not in head, name
            if name.endswith(".npy"):
                np.load(os.path.join(root, name), allow_pickle=False)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_to_and_from_scikit_learn(data, ct):
    X = data.X[ct]
    gm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    sk = gm.to_sklearn()
    assert isinstance(sk, SkGaussianMixture)
    np.testing.assert_allclose(sk.score_samples(X), gm.score_samples(X), rtol=1e-12)
    np.testing.assert_array_equal(sk.predict(X), gm.predict(X))
    sk2 = SkGaussianMixture(3, covariance_type=ct, random_state=1).fit(X)
    back = GaussianMixture.from_sklearn(sk2, cache=False)
    assert back.cache is False and back.n_components == 3
    np.testing.assert_allclose(back.predict_proba(X), sk2.predict_proba(X), rtol=1e-10, atol=1e-300)
    assert back.bic(X) == pytest.approx(sk2.bic(X), rel=1e-10)


# ------------------------------------------------ files read back with distrust
def _edit_attrs(model, **changes):
    doc = json.loads((model / "zarr.json").read_text())
    for key, value in changes.items():
        section, _, name = key.partition("__")
        doc["attributes"]["daskgmm"][section][name] = value
    (model / "zarr.json").write_text(json.dumps(doc))


def _link_chunk(target):
    def damage(model, first):
        chunk = model / first / "c" / "0"
        chunk.unlink()
        os.symlink(target, chunk)

    return damage


def _fifo_chunk(model, first):
    chunk = model / "means" / "c" / "0" / "0"
    chunk.unlink()
    os.mkfifo(chunk)


def _truncate_chunk(model, first):
    chunk = model / "means" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:7])


def _huge_declared_shape(model, first):
    doc = json.loads((model / "means" / "zarr.json").read_text())
    doc["shape"] = [10**12, 2]
    (model / "means" / "zarr.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m, first: os.remove(m / first / "c" / "0"),
         "is incomplete: {first}/c/0 is missing"),
        (lambda m, first: _edit_attrs(m, params__n_components=4),
         "'{first}' has shape (3,), expected (4,) for the metadata's 4 components"),
        (lambda m, first: _edit_attrs(m, params__n_components="four"),
         "metadata n_components='four' is not a positive integer"),
        (_huge_declared_shape, "'means' has shape (1000000000000, 2), expected (3, 2)"),
        (_truncate_chunk, "array 'means' cannot be read"),
        (_link_chunk("/dev/zero"), "{first}/c/0 is not a regular file (a link or device)"),
        (_fifo_chunk, "means/c/0/0 is not a regular file (a link or device)"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_damaged_model_file_is_one_clear_line(tmp_path, data, damage, message, Estimator):
    """For model files of either kind: the first per-component array of each."""
    model = tmp_path / "m.zarr"
    first = "weights" if Estimator is GaussianMixture else "mean_precision"
    _quiet_fit(Estimator(3, random_state=0, max_iter=5), data.X["full"]).save(model)
    damage(model, first)
    with pytest.raises(ValueError, match=re.escape(message.format(first=first))) as err:
        daskgmm.load(model)
    assert str(model) in str(err.value) and "\n" not in str(err.value)


def _nan_weights(ckpt):
    w = np.load(_state_dir(ckpt) / "r0-weights.npy")
    w[0] = np.nan
    np.save(_state_dir(ckpt) / "r0-weights.npy", w)


def _latest_is_a_folder(ckpt):
    (ckpt / "LATEST").unlink()
    (ckpt / "LATEST").mkdir()


def _no_restarts(ckpt):
    doc = json.loads((_state_dir(ckpt) / "state.json").read_text())
    doc["restarts"] = []
    (_state_dir(ckpt) / "state.json").write_text(json.dumps(doc))


def _huge_npy_header(ckpt):
    path = _state_dir(ckpt) / "r0-means.npy"
    raw = path.read_bytes().replace(b"(3, 2)", b"(999999999999, 2)")
    path.write_bytes(raw)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_nan_weights, "'weights' holds NaN or infinite values"),
        (_latest_is_a_folder, "LATEST is not a regular file"),
        (_no_restarts, "is corrupt: state.json lists no restart"),
        (_huge_npy_header, "r0-means.npy is not a plain numeric .npy file"),
    ],
)
def test_damaged_finished_checkpoint_is_refused_not_loaded(tmp_path, data, damage, message):
    ckpt = tmp_path / "ckpt"
    GaussianMixture(3, random_state=0).fit(data.X["full"], checkpoint=ckpt)
    damage(ckpt)
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(3, random_state=0).fit(data.X["full"], checkpoint=ckpt)
