"""Unattended jobs: never lose a user's data, never serve stale results, fail with one line.

Run as a user would: the command in subprocesses, against real `dask scheduler` /
`dask worker` processes, on real Zarr stores in temporary folders.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
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
from daskgmm._checkpoint import RefusedError

from .conftest import RandomData, Stop, stop_after
from .test_cli import ENV, _run, image_store, scheduler_address  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

NOWHERE = "tcp://127.0.0.1:9"  # no scheduler: a command that gets this far would exit 4


def _tree(path):
    return {
        os.path.relpath(os.path.join(root, f), path): open(os.path.join(root, f), "rb").read()
        for root, _, files in os.walk(path)
        for f in files
    }


def _store(path, X, chunks=500):
    z = zarr.create_array(str(path), shape=X.shape, chunks=(chunks, X.shape[1]), dtype="f8")
    z[:] = X
    return str(path)


def _night(seed, n=3000):
    data = RandomData(np.random.RandomState(seed), n_samples=n, n_components=3, n_features=2)
    return data.X["full"]


# ----------------------------------------------------------- 1. never lose data
def test_no_writer_replaces_a_folder_or_the_input(scheduler_address, tmp_path):  # noqa: F811
    X = _night(0)
    store = _store(tmp_path / "scene.zarr", X)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("four years")
    before_input, before_precious = _tree(store), _tree(precious)
    common = ["--scheduler", scheduler_address]
    for out in (precious, store):
        res = _run("fit", store, "-k", 2, "-o", out, "--overwrite", *common)
        assert res.returncode == 3, res.stderr
        assert "Traceback" not in res.stderr
    assert "refusing" in res.stderr
    res = _run("fit", store, "-k", 2, "-o", tmp_path / "m.zarr", "--checkpoint", store, *common)
    assert res.returncode == 3 and "the input" in res.stderr and "the checkpoint" in res.stderr
    res = _run("fit", store, "-k", 2, "-o", tmp_path / "m.zarr", "--checkpoint", precious, *common)
    assert res.returncode == 3 and "neither empty nor a daskgmm checkpoint" in res.stderr
    assert _run("fit", store, "-k", 2, "-o", tmp_path / "m.zarr", *common).returncode == 0
    for out in (store, precious):
        res = _run("predict", tmp_path / "m.zarr", store, "-o", out, "--overwrite", *common)
        assert res.returncode == 3, res.stderr
    assert _tree(store) == before_input and _tree(precious) == before_precious

    # the library: save() replaces only a daskgmm model, another one only with overwrite
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(RefusedError, match="is not a daskgmm model; refusing"):
        gm.save(precious, overwrite=True)
    with pytest.raises(RefusedError, match="is not a daskgmm model; refusing"):
        gm.save(store, overwrite=True)
    gm.save(tmp_path / "lib.zarr")
    gm.save(tmp_path / "lib.zarr")  # the same model again: a re-run succeeds
    other = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(RefusedError, match="holds another daskgmm model"):
        other.save(tmp_path / "lib.zarr")
    other.save(tmp_path / "lib.zarr", overwrite=True)
    assert load(tmp_path / "lib.zarr").n_components == 3
    # a Bayesian model file, under the same rules
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bayes = BayesianGaussianMixture(2, random_state=0, max_iter=5).fit(X)
    with pytest.raises(RefusedError, match="is not a daskgmm model; refusing"):
        bayes.save(precious, overwrite=True)
    with pytest.raises(RefusedError, match="holds another daskgmm model"):
        bayes.save(tmp_path / "lib.zarr")
    bayes.save(tmp_path / "lib.zarr", overwrite=True)
    bayes.save(tmp_path / "lib.zarr")  # the same model again
    assert type(load(tmp_path / "lib.zarr")) is BayesianGaussianMixture
    assert _tree(store) == before_input and _tree(precious) == before_precious


def test_demo_replaces_only_what_an_earlier_demo_wrote(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    mine = _store(work / "data.zarr", _night(0))  # a user's store where the demo writes
    before = _tree(mine)
    res = _run("demo", "--workdir", work, "--n-samples", 5000, "--cluster", "local:1")
    assert res.returncode == 3, res.stderr
    assert "was not written by daskgmm demo; refusing to replace it" in res.stderr
    assert _tree(mine) == before


# ------------------------------------------------------ 2. no stale results
def test_two_nights_on_one_path_give_each_night_its_own_model_and_labels(
    scheduler_address,  # noqa: F811
    tmp_path,
):
    """The deploy recipes' job: one input path, one checkpoint, fixed outputs, new data."""
    today = tmp_path / "today.zarr"
    (tmp_path / "job.toml").write_text(
        f'[cluster]\nscheduler = "{scheduler_address}"\n\n'
        f'[fit]\ninput = "{today}"\nn_components = 3\nrandom_state = 1\n'
        f'checkpoint = "{tmp_path / "ckpt"}"\noutput = "{tmp_path / "model.zarr"}"\n'
        "overwrite = true\n\n"
        f'[predict]\nmodel = "{tmp_path / "model.zarr"}"\ninput = "{today}"\n'
        f'output = "{tmp_path / "labels.zarr"}"\noverwrite = true\n'
    )
    for night, seed in enumerate((0, 5)):
        X = _night(seed)
        if night:
            time.sleep(0.01)  # a new night: the store is rewritten in place
        z = zarr.open_array(str(today), mode="a") if night else None
        if z is None:
            _store(today, X)
        else:
            z[:] = X
        fit = _run("fit", "--config", tmp_path / "job.toml")
        assert fit.returncode == 0, fit.stderr
        predict = _run("predict", "--config", tmp_path / "job.toml")
        assert predict.returncode == 0, predict.stderr
        if night:
            assert "holds a finished fit" not in fit.stderr
            assert "belongs to another fit" in fit.stderr and "starting over" in fit.stderr
            assert "0 blocks written" not in predict.stdout
        model = load(tmp_path / "model.zarr")
        fresh = GaussianMixture(3, random_state=1).fit(X)
        np.testing.assert_allclose(model.means_, fresh.means_, rtol=1e-8)
        labels = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")["label"][:]
        np.testing.assert_array_equal(labels, model.predict(X))
    # the same night again: everything is reused, nothing recomputed
    fit = _run("fit", "--config", tmp_path / "job.toml")
    assert fit.returncode == 0 and "holds a finished fit of the same data" in fit.stderr
    predict = _run("predict", "--config", tmp_path / "job.toml")
    assert predict.returncode == 0 and "(0 blocks written" in predict.stdout


def test_numpy_checkpoint_resumes_under_another_scheduler_and_block_count(
    tmp_path, cluster_client, caplog
):
    X = _night(2, n=20_000)  # 4 blocks of 5000 on 2 threads, 2 of 10000 on 2 workers
    kw = dict(n_components=3, random_state=0, tol=0, max_iter=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = GaussianMixture(**kw).fit(X)
        with dask.config.set(scheduler="threads"), pytest.raises(Stop):
            GaussianMixture(**kw).fit(X, checkpoint=tmp_path / "c", callback=stop_after(3))
        with (
            cluster_client.as_current(),
            dask.config.set(scheduler=cluster_client),
            caplog.at_level(logging.INFO, logger="daskgmm"),
        ):
            resumed = GaussianMixture(**kw).fit(X, checkpoint=tmp_path / "c")
    assert "Resuming from checkpoint" in caplog.text
    np.testing.assert_allclose(resumed.means_, reference.means_, rtol=1e-10)
    assert resumed.lower_bounds_ == pytest.approx(reference.lower_bounds_, rel=1e-10)


def test_streamed_store_rewritten_with_other_data_is_caught_in_the_first_pass(tmp_path, caplog):
    store = _store(tmp_path / "x.zarr", _night(0))
    kw = dict(n_components=3, random_state=0, tol=0, max_iter=6, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(Stop):
            GaussianMixture(**kw).fit(store, checkpoint=tmp_path / "c", callback=stop_after(2))
        Y = _night(9)
        zarr.open_array(store, mode="a")[:] = Y  # same shape, dtype and path; other values
        with pytest.raises(RefusedError, match="data content: checkpoint"):
            GaussianMixture(**kw).fit(store, checkpoint=tmp_path / "c", resume=True)
        with caplog.at_level(logging.WARNING, logger="daskgmm"):
            redone = GaussianMixture(**kw).fit(store, checkpoint=tmp_path / "c", resume="auto")
        fresh = GaussianMixture(**kw).fit(Y)
    assert "belongs to another fit (data content" in caplog.text and "starting over" in caplog.text
    np.testing.assert_allclose(redone.means_, fresh.means_, rtol=1e-10)


def test_content_digest_ignores_chunking_and_sees_one_changed_value():
    from daskgmm._fingerprint import content_digest, content_digest_chunk

    X = np.random.RandomState(0).normal(size=(1000, 3))
    w = np.random.RandomState(1).uniform(size=1000)
    whole = content_digest_chunk(X, sample_weight=w)
    big = np.random.RandomState(2).normal(size=(3_000_000, 2))  # four slices in memory
    assert content_digest(big) == content_digest_chunk(big)
    for cuts in ([1, 500], [333, 334, 999]):
        edges = [0, *cuts, 1000]
        parts = [
            content_digest_chunk(X[a:b], sample_weight=w[a:b], row_offset=a)
            for a, b in itertools.pairwise(edges)
        ]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        assert total == whole
    changed = X.copy()
    changed[500, 1] = np.nextafter(changed[500, 1], np.inf)
    swapped = X[[1, 0, *range(2, 1000)]]
    for other in (changed, swapped, X.astype(np.float32)):
        assert content_digest_chunk(other, sample_weight=w) != whole
    assert content_digest_chunk(X) != whole  # the weights count


# ----------------------------------------------- 3. every command, every model
def test_anomalies_and_predict_with_an_image_model(scheduler_address, image_store, tmp_path):  # noqa: F811
    path, _ = image_store
    gm = GaussianMixture(3, variable="reflectance", feature_dim="band", random_state=3).fit(path)
    gm.save(tmp_path / "m.zarr")
    res = _run(
        "anomalies", tmp_path / "m.zarr", path, "--quantile", 0.01, "-o", tmp_path / "a.zarr",
        "--scheduler", scheduler_address,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "a.zarr", consolidated=False)
    assert ds["anomaly"].dims == ("y", "x")
    np.testing.assert_allclose(ds["log_density"].values, gm.score_samples(path).values, rtol=1e-10)
    assert 55 <= int(ds["anomaly"].sum()) <= 65  # 1 % of 6000


# ----------------------------------------------------- 4. relative paths
def test_relative_paths_are_resolved_on_the_client(scheduler_address, tmp_path):  # noqa: F811
    nightly = tmp_path / "nightly"
    nightly.mkdir()
    X = _night(3)
    _store(nightly / "today.zarr", X)
    GaussianMixture(3, random_state=0).fit(X).save(nightly / "m.zarr")
    res = _run(
        "predict", "m.zarr", "today.zarr", "-o", "rel.zarr", "--scheduler", scheduler_address,
        cwd=nightly,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    labels = zarr.open_group(str(nightly / "rel.zarr"), mode="r")["label"][:]
    np.testing.assert_array_equal(labels, load(nightly / "m.zarr").predict(X))
    assert not (tmp_path / "rel.zarr").exists() and not os.path.exists("rel.zarr")


# --------------------------------------------- 6. a cluster that never comes
def test_a_scheduler_without_workers_fails_with_one_line(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    dask_bin = os.path.join(os.path.dirname(sys.executable), "dask")
    proc = subprocess.Popen(
        [dask_bin, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    try:
        for _ in range(200):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        store = _store(tmp_path / "x.zarr", _night(0))
        for how in (["--scheduler-file", sched_file], ["--scheduler", _address(sched_file)]):
            tic = time.monotonic()
            res = _run(
                "fit", store, "-k", 2, "-o", tmp_path / "m.zarr", "--worker-timeout", 3, *how
            )
            assert res.returncode == 4, res.stderr
            assert (
                res.stderr.strip()
                .splitlines()[-1]
                .startswith("daskgmm: cluster error: no Dask worker joined the scheduler")
            )
            assert "within 3 s" in res.stderr and "Traceback" not in res.stderr
            assert time.monotonic() - tic < 60
    finally:
        proc.send_signal(signal.SIGTERM)  # SIGINT: ~8 s to close
        proc.wait(timeout=30)


def _address(sched_file):
    return json.loads(sched_file.read_text())["address"]


# ------------------------------------ 7. every mistake before a cluster starts
@pytest.mark.parametrize(
    "args, message",
    [
        (["-k", "0"], "The 'n_components' parameter of GaussianMixture must be an int in the "
         "range [1, inf). Got 0 instead."),
        (["-k", "2", "--tol", "-1"], "The 'tol' parameter of GaussianMixture must be a float in "
         "the range [0.0, inf). Got -1.0 instead."),
        (["-k", "5000"], "5000 components need at least as many samples, but the input has 3000"),
        (["-k", "2", "--resume", "maybe"], "--resume must be auto, yes or no, not 'maybe'"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_before_any_cluster(tmp_path, args, message):
    store = _store(tmp_path / "x.zarr", _night(0))
    res = _run("fit", store, *args, "-o", tmp_path / "m.zarr", "--scheduler", NOWHERE)
    assert res.returncode == 2, res.stderr  # 4 would mean it tried the scheduler first
    assert res.stderr.strip() == f"daskgmm: error: {message}"


def test_an_unwritable_output_or_checkpoint_is_found_before_the_first_pass(tmp_path):
    store = _store(tmp_path / "x.zarr", _night(0))
    for extra, shown in ((["-o", "/proc/m.zarr"], "/proc/m.zarr"),
                         (["-o", tmp_path / "m.zarr", "--checkpoint", "/proc/1/ckpt"],
                          "/proc/1/ckpt")):  # fmt: skip
        res = _run("fit", store, "-k", 2, *extra, "--scheduler", NOWHERE)
        assert res.returncode == 2, res.stderr  # 4 would mean it got as far as the cluster
        assert res.stderr.strip().startswith(f"daskgmm: error: cannot write '{shown}': ")
    res = _run("predict", tmp_path / "nothing.zarr", store, "-o", "/proc/o.zarr",
               "--scheduler", NOWHERE)  # fmt: skip
    assert res.returncode == 2


def test_config_file_types_name_the_option(tmp_path):
    (tmp_path / "job.toml").write_text('[fit]\nn_components = "four"\n')
    res = _run("fit", "x.zarr", "-o", "m.zarr", "--config", tmp_path / "job.toml")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"daskgmm: error: config file '{tmp_path / 'job.toml'}': n_components must be a whole "
        "number, got 'four'"
    )


def test_nan_in_a_npy_file_and_non_convergence_are_one_line_each(tmp_path):
    X = _night(0)
    np.save(tmp_path / "ok.npy", X)
    X[17, 1] = np.nan
    np.save(tmp_path / "nan.npy", X)
    res = _run(
        "fit", tmp_path / "nan.npy", "-k", 2, "-o", tmp_path / "m.zarr", "--cluster", "local:1"
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "daskgmm: error: Input X contains NaN (first in row 17). daskgmm uses the observed "
        "values of such samples exactly with missing='marginalize' (command line: --missing "
        "marginalize)."
    )
    res = _run("fit", tmp_path / "ok.npy", "-k", 3, "--max-iter", 1, "-o", tmp_path / "m.zarr",
               "--cluster", "local:1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    warning = [line for line in res.stderr.splitlines() if "ConvergenceWarning" in line]
    assert warning == [
        "WARNING daskgmm: ConvergenceWarning: Best performing initialization did not converge. "
        "Try different init parameters, or increase max_iter, tol, or check for degenerate data."
    ]


def test_select_keeps_the_rows_it_finished(scheduler_address, tmp_path):  # noqa: F811
    # two distinct values: k=1 fits, k=2 has zero-variance components without reg_covar
    X = np.repeat([[0.0], [1.0]], 500, axis=0)
    np.save(tmp_path / "x.npy", X)
    res = _run(
        "select", tmp_path / "x.npy", "--k", "1..3", "--reg-covar", 0, "--table",
        tmp_path / "sel", "--scheduler", scheduler_address,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    table = json.loads((tmp_path / "sel.json").read_text())
    assert [r["n_components"] for r in table["rows"]] == [1]
    (tmp_path / "mine.csv").write_text("my own table\n")
    res = _run("select", tmp_path / "x.npy", "--table", tmp_path / "mine", "--scheduler", NOWHERE)
    assert res.returncode == 3 and "was not written by daskgmm select" in res.stderr
    res = _run(
        "select",
        tmp_path / "x.npy",
        "--table",
        tmp_path / "mine",
        "--overwrite",
        "--scheduler",
        NOWHERE,
    )
    assert res.returncode == 3  # --overwrite is for a model, never for a file of yours
    assert (tmp_path / "mine.csv").read_text() == "my own table\n"


# ------------------------------------------------- 9. sizes that cannot fit
@pytest.mark.parametrize("n_components", [10**6, 10**4])
def test_sizes_that_cannot_fit_are_refused_before_the_first_pass(n_components, counting_scheduler):
    X = da.random.random((2_000_000, 2), chunks=50_000)
    with pytest.raises(ValueError, match=r"needs about [0-9.]+ GiB per task, more than the"):
        GaussianMixture(n_components).fit(X)
    assert counting_scheduler.computes == 0


def test_object_store_paths_checkpoint_lock_model_and_output(tmp_path):
    """The branches for object stores (one write per object, no rename, no O_EXCL),
    through fsspec's in-process memory filesystem on the threaded scheduler."""
    import fsspec

    from daskgmm._data import open_input
    from daskgmm._output import write_per_sample

    fs = fsspec.filesystem("memory")
    X = _night(4)
    kw = dict(n_components=3, random_state=0, max_iter=4, tol=0)
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(Stop):
            GaussianMixture(**kw).fit(X, checkpoint="memory://t/ck", callback=stop_after(2))
        assert not fs.exists("/t/ck.daskgmm-lock")  # released when the fit stopped
        resumed = GaussianMixture(**kw).fit(X, checkpoint="memory://t/ck")
        np.testing.assert_allclose(resumed.means_, GaussianMixture(**kw).fit(X).means_, rtol=1e-12)
        resumed.save("memory://t/m.zarr")
        resumed.save("memory://t/m.zarr")  # the same model again
        assert load("memory://t/m.zarr").n_components == 3
        url = "memory://t/x.zarr"
        zarr.create_array(url, shape=X.shape, chunks=(500, 2), dtype="f8")[:] = X
        inp = open_input(url)
        assert inp.files is not None  # objects' creation times
        first = write_per_sample("memory://t/o.zarr", resumed._params, inp, ("label",))
        again = write_per_sample("memory://t/o.zarr", resumed._params, inp, ("label",))
        assert first["blocks"] > 0 and again["blocks"] == 0  # reused, nothing rewritten
        labels = zarr.open_group("memory://t/o.zarr", mode="r")["label"][:]
        np.testing.assert_array_equal(labels, resumed.predict(X))
        zarr.open_array(url, mode="a")[:] = _night(5)  # new objects: other data
        with pytest.raises(RefusedError, match=r"for other data \(the input's files changed\)"):
            write_per_sample("memory://t/o.zarr", resumed._params, open_input(url), ("label",))
    assert not [p for p in fs.find("/t") if p.endswith((".tmp", ".daskgmm-lock"))]


def test_a_rerun_of_the_same_job_may_replace_its_model_and_no_other(tmp_path):
    store = _store(tmp_path / "x.zarr", _night(1))
    gm = GaussianMixture(3, random_state=0).fit(store)
    gm.save(tmp_path / "m.zarr")
    assert GaussianMixture(3, random_state=0).same_fit_as(tmp_path / "m.zarr", store)
    assert not GaussianMixture(2, random_state=0).same_fit_as(tmp_path / "m.zarr", store)
    assert not GaussianMixture(3, random_state=0).same_fit_as(tmp_path / "none.zarr", store)
    # the command line refuses another job's model before any cluster starts (exit 3, not 4)
    res = _run("fit", store, "-k", 2, "--random-state", 0, "-o", tmp_path / "m.zarr",
               "--scheduler", NOWHERE)  # fmt: skip
    assert res.returncode == 3 and "holds another daskgmm model" in res.stderr
    time.sleep(0.01)
    zarr.open_array(store, mode="a")[:] = _night(2)  # the same path, new files
    assert not GaussianMixture(3, random_state=0).same_fit_as(tmp_path / "m.zarr", store)


def test_a_rerun_of_fit_lists_the_input_files_once(tmp_path, monkeypatch, scheduler_address):  # noqa: F811
    """The same job run again (a model of it at -o): preflight's check of that model and
    the fit's record take the one listing of the input's files (a store of a million
    chunks takes seconds to list)."""
    import daskgmm._data
    from daskgmm.cli import main

    X = RandomData(np.random.RandomState(0), n_samples=2000, n_features=2).X["full"]
    z = zarr.create_array(tmp_path / "x.zarr", shape=X.shape, chunks=(500, 2), dtype="f8")
    z[:] = X
    listed = []
    real = daskgmm._data.files_fingerprint
    monkeypatch.setattr(
        daskgmm._data, "files_fingerprint", lambda source: listed.append(source) or real(source)
    )
    args = ["fit", str(tmp_path / "x.zarr"), "-k", "2", "-o", str(tmp_path / "m.zarr"), "-q"]
    args += ["--scheduler", scheduler_address]
    assert main(args) == 0 and len(listed) == 1  # the fit's record
    assert main(args) == 0 and len(listed) == 2  # the same job: once for check and record
