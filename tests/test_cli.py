"""The command line, run as a user would: in subprocesses, against real Dask processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from daskgmm import GaussianMixture, load

from .conftest import RandomData

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run(*args, timeout=300, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "daskgmm", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
        **kw,
    )


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
            executable=os.path.join(os.path.dirname(sys.executable), "dask"),
        )
    ]
    for _ in range(200):
        if sched_file.exists() and sched_file.stat().st_size:
            break
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    os.path.join(os.path.dirname(sys.executable), "dask"),
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=ENV,
            )
        )
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    yield address
    # the workers first, while their scheduler is there to see them go: a worker whose
    # scheduler is gone (or that gets SIGINT) waits ~8 s before it exits
    for group in (procs[1:], procs[:1]):
        for proc in group:
            proc.send_signal(signal.SIGTERM)
        for proc in group:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    rng = np.random.RandomState(1)
    ny, nx = 120, 50
    truth = np.zeros((ny, nx), dtype=int)
    truth[40:80] = 1
    truth[80:] = 2
    centres = np.array([[10.0, 50.0, 20.0, 5.0], [60.0, 10.0, 30.0, 5.0], [30.0, 30.0, 90.0, 40.0]])
    pixels = centres[truth] + rng.normal(scale=2.0, size=(ny, nx, 4))
    ds = xr.Dataset(
        {
            "reflectance": (("band", "y", "x"), pixels.transpose(2, 0, 1)),
            "quality": (("y", "x"), np.ones((ny, nx))),
        },
        coords={
            "band": ["b1", "b2", "b3", "b4"],
            "y": np.arange(ny) * 30.0,
            "x": 500.0 + np.arange(nx) * 30.0,
        },
    )
    path = tmp / "scene.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.chunk({"y": 20}).to_zarr(path, mode="w")
    return str(path), truth


def test_help_reads_well():
    out = _run("--help")
    assert out.returncode == 0
    for command in ("fit", "predict", "select", "anomalies", "demo"):
        assert command in out.stdout
    out = _run("fit", "--help")
    assert "--checkpoint" in out.stdout and "--feature-dim" in out.stdout


def test_demo_runs_end_to_end_on_a_local_cluster(tmp_path):
    out = _run(
        "demo",
        "--n-samples",
        "30000",
        "--chunk-rows",
        "4000",
        "--cluster",
        "local:2",
        "--workdir",
        tmp_path / "demo",
    )
    assert out.returncode == 0, out.stderr
    ari = float(re.search(r"Adjusted Rand index .*: ([0-9.]+)", out.stdout).group(1))
    assert ari >= 0.95
    assert "GaussianMixture(n_components=5, covariance_type='full'): converged=True" in out.stdout
    assert (tmp_path / "demo" / "model.zarr").exists()
    assert (tmp_path / "demo" / "labels.zarr").exists()


def test_fit_and_predict_through_a_running_scheduler(scheduler_address, image_store, tmp_path):
    path, truth = image_store
    model, labels = tmp_path / "model.zarr", tmp_path / "labels.zarr"
    out = _run(
        "fit",
        path,
        "-k",
        3,
        "--variable",
        "reflectance",
        "--feature-dim",
        "band",
        "--random-state",
        3,
        "-o",
        model,
        "--scheduler",
        scheduler_address,
        "--checkpoint",
        tmp_path / "ckpt",
    )
    assert out.returncode == 0, out.stderr
    # not a terminal: one plain progress line per iteration
    assert re.search(r"restart 0 iteration 2: log-likelihood -?[0-9.]+, change", out.stderr)
    out = _run(
        "predict", model, path, "-o", labels, "--proba", "--score", "--scheduler", scheduler_address
    )
    assert out.returncode == 0, out.stderr

    in_process = GaussianMixture(3, variable="reflectance", feature_dim="band", random_state=3).fit(
        path
    )
    fitted = load(model)
    np.testing.assert_allclose(fitted.means_, in_process.means_, rtol=1e-10)
    ds = xr.open_zarr(labels, consolidated=False)
    assert ds["label"].dims == ("y", "x")
    np.testing.assert_array_equal(ds["x"].values, 500.0 + np.arange(50) * 30.0)
    np.testing.assert_array_equal(ds["label"].values, in_process.predict(path).values)
    np.testing.assert_allclose(
        ds["log_density"].values, in_process.score_samples(path).values, rtol=1e-10
    )
    assert ds["probability"].dims == ("y", "x", "component")
    np.testing.assert_allclose(ds["probability"].sum("component").values, 1.0, rtol=1e-5)
    assert dict(zarr.open_group(str(labels)).attrs)["daskgmm"]["complete"] is True
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth.ravel(), ds["label"].values.ravel()) > 0.99


def test_config_file_and_overrides(scheduler_address, tmp_path):
    data = RandomData(
        np.random.RandomState(0), n_samples=2000, n_components=3, n_features=2, scale=40
    )
    np.save(tmp_path / "x.npy", data.X["full"])
    (tmp_path / "job.toml").write_text(
        f'[cluster]\nscheduler = "{scheduler_address}"\n\n'
        f'[fit]\ninput = "{tmp_path / "x.npy"}"\nn_components = 2\noutput = '
        f'"{tmp_path / "m.zarr"}"\ncovariance_type = "diag"\n'
    )
    out = _run("fit", "--config", tmp_path / "job.toml", "-k", 3)
    assert out.returncode == 0, out.stderr
    model = load(tmp_path / "m.zarr")
    assert model.n_components == 3 and model.covariance_type == "diag"
    (tmp_path / "bad.toml").write_text("[fit]\nn_componentz = 2\n")
    out = _run("fit", "--config", tmp_path / "bad.toml")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "daskgmm: error: config file: unknown option(s) for fit: ['n_componentz']"
    )


def test_select_writes_table_plot_and_best_model(scheduler_address, tmp_path):
    data = RandomData(
        np.random.RandomState(2), n_samples=3000, n_components=3, n_features=2, scale=40
    )
    np.save(tmp_path / "x.npy", data.X["full"])
    out = _run(
        "select",
        tmp_path / "x.npy",
        "--k",
        "1..5",
        "--covariance-type",
        "full,diag",
        "--table",
        tmp_path / "sel",
        "-o",
        tmp_path / "best.zarr",
        "--scheduler",
        scheduler_address,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "sel.json").read_text())
    assert len(table["rows"]) == 10
    assert table["best"]["n_components"] == 3
    assert (tmp_path / "sel.csv").read_text().startswith("covariance_type,n_components,bic")
    assert (tmp_path / "sel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load(tmp_path / "best.zarr").n_components == 3


def test_anomalies_threshold_and_mask(scheduler_address, tmp_path):
    data = RandomData(
        np.random.RandomState(3), n_samples=20000, n_components=2, n_features=3, scale=20
    )
    np.save(tmp_path / "x.npy", data.X["full"])
    gm = GaussianMixture(2, random_state=0).fit(data.X["full"])
    gm.save(tmp_path / "m.zarr")
    out = _run(
        "anomalies",
        tmp_path / "m.zarr",
        tmp_path / "x.npy",
        "--quantile",
        "0.01",
        "-o",
        tmp_path / "a.zarr",
        "--scheduler",
        scheduler_address,
    )
    assert out.returncode == 0, out.stderr
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    mask = group["anomaly"][:]
    scores = gm.score_samples(data.X["full"])
    threshold = group.attrs["daskgmm"]["threshold"]
    ordered = np.sort(scores)
    assert ordered[198] < threshold <= ordered[201] + 1e-9  # the 200th of 20000 (1%)
    np.testing.assert_allclose(group["log_density"][:], scores, rtol=1e-10)
    np.testing.assert_array_equal(mask, group["log_density"][:] < threshold)
    assert 199 <= mask.sum() <= 201


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["fit", "{tmp}/missing.zarr", "-k", "2", "-o", "{tmp}/m.zarr"],
            "daskgmm: error: input '{tmp}/missing.zarr' does not exist",
        ),
        (
            [
                "fit",
                "{image}",
                "-k",
                "2",
                "-o",
                "{tmp}/m.zarr",
                "--feature-dim",
                "band",
                "--variable",
                "radiance",
            ],
            "daskgmm: error: Input '{image}' has no variable 'radiance'; it has ['quality', "
            "'reflectance'].",
        ),
        (
            [
                "fit",
                "{image}",
                "-k",
                "2",
                "-o",
                "{tmp}/m.zarr",
                "--variable",
                "reflectance",
                "--feature-dim",
                "wavelength",
            ],
            "daskgmm: error: feature_dim='wavelength' is not a dimension of the input ('band', "
            "'y', 'x').",
        ),
        (
            [
                "predict",
                "{tmp}/m2.zarr",
                "{image}",
                "-o",
                "{tmp}/o.zarr",
                "--variable",
                "reflectance",
                "--feature-dim",
                "band",
            ],
            "daskgmm: error: the model was trained on 2 features but '{image}' has 4",
        ),
        (
            ["predict", "{tmp}/nothing.zarr", "{image}", "-o", "{tmp}/o.zarr"],
            "daskgmm: error: model '{tmp}/nothing.zarr' does not exist",
        ),
        (
            ["fit", "{image}", "-o", "{tmp}/m.zarr"],
            "daskgmm: error: missing --n-components (on the command line or in the config file)",
        ),
    ],
)
def test_bad_input_is_one_clear_line(scheduler_address, image_store, tmp_path, args, message):
    image, _ = image_store
    GaussianMixture(2).fit(np.random.RandomState(0).normal(size=(50, 2))).save(tmp_path / "m2.zarr")
    fill = {"tmp": str(tmp_path), "image": image}
    out = _run(*[a.format(**fill) for a in args], "--scheduler", scheduler_address)
    assert out.returncode == 2
    assert out.stderr.strip() == message.format(**fill)
    assert "Traceback" not in out.stderr


def test_unknown_or_missing_cluster_kind_is_one_line():
    out = _run("demo", "--cluster", "mainframe")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "daskgmm: error: Unknown cluster 'mainframe'; expected one of local, slurm, pbs, "
        "kubernetes [:N]."
    )
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        out = _run("demo", "--cluster", "slurm:2")
        assert out.returncode == 2
        assert out.stderr.strip() == (
            "daskgmm: error: --cluster slurm needs the dask-jobqueue "
            "package: pip install 'daskgmm[slurm]'"
        )


def test_killed_predict_is_completed_by_a_rerun(scheduler_address, tmp_path):
    rng = np.random.RandomState(0)
    n, d = 400_000, 16
    store = str(tmp_path / "x.zarr")
    z = zarr.create_array(store, shape=(n, d), chunks=(4000, d), dtype="f8")
    means = rng.uniform(-5, 5, size=(8, d))
    for start in range(0, n, 200_000):
        z[start : start + 200_000] = means[rng.randint(0, 8, 200_000)] + rng.normal(
            size=(200_000, d)
        )
    GaussianMixture(
        8, covariance_type="full", max_iter=2, random_state=0, init_params="random_from_data"
    ).fit(z[:100_000]).save(tmp_path / "m.zarr")
    env = {**ENV, "DASK_DASKGMM__CHUNK_BYTES": str(4000 * d * 8)}  # 100 blocks
    args = [
        "predict",
        tmp_path / "m.zarr",
        store,
        "--proba",
        "--score",
        "--scheduler",
        scheduler_address,
    ]
    reference = _run(*args, "-o", tmp_path / "ref.zarr", env=env)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskgmm", *map(str, args), "-o", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = out / ".daskgmm-progress"
    deadline = time.time() + 120
    while time.time() < deadline:
        if progress.exists() and len(os.listdir(progress)) >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    n_done = len(os.listdir(progress))
    assert 10 <= n_done < 100, "predict finished before it was killed"
    assert dict(zarr.open_group(str(out)).attrs)["daskgmm"]["complete"] is False

    rerun = _run(*args, "-o", out, env=env)
    assert rerun.returncode == 0, rerun.stderr
    done_now = int(
        re.search(r"\((\d+) blocks written, (\d+) already done\)", rerun.stdout).group(1)
    )
    assert done_now <= 100 - n_done + 2  # only what was not finished (give or take in-flight)
    a, b = (
        zarr.open_group(str(out), mode="r"),
        zarr.open_group(str(tmp_path / "ref.zarr"), mode="r"),
    )
    for name in ("label", "probability", "log_density"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert not progress.exists()


def test_predict_never_deletes_what_it_did_not_write(scheduler_address, tmp_path):
    X = np.random.RandomState(0).normal(size=(500, 2))
    np.save(tmp_path / "x.npy", X)
    GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "m.zarr")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    out = _run(
        "predict",
        tmp_path / "m.zarr",
        tmp_path / "x.npy",
        "-o",
        precious,
        "--overwrite",
        "--scheduler",
        scheduler_address,
    )
    assert out.returncode == 3  # refused: nothing was replaced
    assert "is not a daskgmm output; refusing to replace it" in out.stderr
    assert (precious / "thesis.txt").read_text() == "do not delete"
    other = GaussianMixture(3, random_state=0).fit(X)
    other.save(tmp_path / "m3.zarr")
    first = _run(
        "predict",
        tmp_path / "m.zarr",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "o.zarr",
        "--scheduler",
        scheduler_address,
    )
    assert first.returncode == 0, first.stderr
    again = _run(
        "predict",
        tmp_path / "m3.zarr",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "o.zarr",
        "--scheduler",
        scheduler_address,
    )
    assert again.returncode == 3 and "pass --overwrite" in again.stderr
    forced = _run(
        "predict",
        tmp_path / "m3.zarr",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "o.zarr",
        "--overwrite",
        "--scheduler",
        scheduler_address,
    )
    assert forced.returncode == 0, forced.stderr
    assert zarr.open_group(str(tmp_path / "o.zarr"))["label"][:].max() <= 2


def test_missing_values_through_the_command_line(scheduler_address, tmp_path):
    """An image whose band 3 is missing on a fifth of the pixels and whose border has
    no band at all, marked by a declared ``nodata``: every pixel with a value is
    labelled, the border is -1 (the label map's declared fill value), as in Python."""
    rng = np.random.RandomState(2)
    ny, nx = 60, 40
    truth = np.zeros((ny, nx), dtype=int)
    truth[20:40] = 1
    truth[40:] = 2
    centres = np.array([[10.0, 50.0, 20.0], [60.0, 10.0, 30.0], [30.0, 30.0, 90.0]])
    pixels = centres[truth] + rng.normal(scale=2.0, size=(ny, nx, 3))
    pixels[rng.random_sample((ny, nx)) < 0.2, 2] = -9999.0
    pixels[:, :2] = -9999.0  # a border without data
    da_ = xr.DataArray(pixels.transpose(2, 0, 1), dims=("band", "y", "x"), name="reflectance")
    da_.attrs["nodata"] = -9999.0
    path = tmp_path / "scene.zarr"
    da_.to_dataset().chunk({"y": 15}).to_zarr(path, zarr_format=3, consolidated=False)
    common = ("--scheduler", scheduler_address)
    out = _run(
        "fit", path, "-k", 3, "--feature-dim", "band", "--missing", "marginalize",
        "-o", tmp_path / "m.zarr", "--random-state", 0, *common,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "declares -9999.0 for missing values" in out.stderr
    out = _run("predict", tmp_path / "m.zarr", path, "-o", tmp_path / "l.zarr", "--score", *common)
    assert out.returncode == 0, out.stderr
    gm = GaussianMixture(3, feature_dim="band", missing="marginalize", random_state=0).fit(path)
    ds = xr.open_zarr(tmp_path / "l.zarr", consolidated=False, mask_and_scale=False)
    labels = ds["label"].values
    assert ds["label"].attrs["_FillValue"] == -1
    assert (labels[:, :2] == -1).all() and (labels[:, 2:] >= 0).all()
    np.testing.assert_array_equal(labels, gm.predict(path).values)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth[:, 2:].ravel(), labels[:, 2:].ravel()) > 0.99
    assert np.isnan(ds["log_density"].values[:, :2]).all()
    # select: BIC over the samples with a value; the best model keeps the mode
    out = _run(
        "select", path, "--feature-dim", "band", "--missing", "marginalize", "--k", "2..4",
        "--table", tmp_path / "sel", "-o", tmp_path / "best.zarr", *common, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "sel.json").read_text())
    assert table["best"]["n_components"] == 3
    best = load(tmp_path / "best.zarr")
    assert best.missing == "marginalize" and best.predict(path).values[0, 0] == -1
    # anomalies: the border has no density and is never flagged
    out = _run(
        "anomalies", tmp_path / "m.zarr", path, "--quantile", 0.01, "-o", tmp_path / "a.zarr",
        *common,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    mask = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["anomaly"][:]
    assert not mask[:, :2].any() and 20 <= mask.sum() <= 26  # 1 % of 2,280 pixels
    # a model fitted on complete pixels predicts the holes once asked to, not before
    complete = xr.DataArray(
        (centres[truth] + rng.normal(scale=2.0, size=(ny, nx, 3))).transpose(2, 0, 1),
        dims=("band", "y", "x"),
    )
    GaussianMixture(3, feature_dim="band", random_state=0).fit(complete).save(tmp_path / "c.zarr")
    out = _run("predict", tmp_path / "c.zarr", path, "-o", tmp_path / "c1.zarr", *common)
    assert out.returncode == 2 and "--missing marginalize" in out.stderr.strip().splitlines()[-1]
    out = _run(
        "predict", tmp_path / "c.zarr", path, "-o", tmp_path / "c2.zarr", "--missing",
        "marginalize", *common,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    other = xr.open_zarr(tmp_path / "c2.zarr", consolidated=False, mask_and_scale=False)
    assert (other["label"].values[:, :2] == -1).all()
    assert adjusted_rand_score(labels[:, 2:].ravel(), other["label"].values[:, 2:].ravel()) > 0.99
    # --nodata for inputs that declare none; without --missing marginalize: one clear line
    np.save(tmp_path / "x.npy", pixels[:, 2:].reshape(-1, 3))
    out = _run("fit", tmp_path / "x.npy", "-k", 3, "--nodata", -9999, "-o", tmp_path / "n.zarr",
               *common)  # fmt: skip
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and "Input X contains NaN" in last and "--missing" in last


def test_a_bayesian_model_through_the_command_line(scheduler_address, tmp_path):
    """fit --model bayesian -k 10 on 3 true components: the summary lists the components
    that carry weight; predict and anomalies take the model file as they take EM's."""
    rng = np.random.RandomState(5)
    centres = np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0]])
    X = centres[rng.randint(0, 3, 3000)] + rng.normal(size=(3000, 2))
    np.save(tmp_path / "x.npy", X)
    common = ("--scheduler", scheduler_address)
    out = _run(
        "fit", tmp_path / "x.npy", "-k", 10, "--model", "bayesian", "--max-iter", 500,
        "--effective-threshold", 0.01, "-o", tmp_path / "b.zarr", *common,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "BayesianGaussianMixture(n_components=10" in out.stdout
    assert re.search(r"\b3 of 10 components carry weight \(>= 0.01\)", out.stdout), out.stdout
    model = load(tmp_path / "b.zarr")
    assert type(model).__name__ == "BayesianGaussianMixture"
    out = _run(
        "predict", tmp_path / "b.zarr", tmp_path / "x.npy", "-o", tmp_path / "l.zarr", *common
    )
    assert out.returncode == 0, out.stderr
    labels = zarr.open_group(str(tmp_path / "l.zarr"), mode="r")["label"][:]
    np.testing.assert_array_equal(labels, model.predict(X))
    assert len(np.unique(labels)) == 3
    out = _run(
        "anomalies", tmp_path / "b.zarr", tmp_path / "x.npy", "--quantile", 0.01,
        "-o", tmp_path / "a.zarr", *common,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    X[::7, 1] = np.nan  # holes: --missing marginalize works for this model too
    np.save(tmp_path / "holes.npy", X)
    out = _run(
        "fit", tmp_path / "holes.npy", "-k", 6, "--model", "bayesian", "--missing",
        "marginalize", "--init-params", "random", "--effective-threshold", 0.01,
        "-o", tmp_path / "c.zarr", *common,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"\b3 of 6 components carry weight", out.stdout), out.stdout
