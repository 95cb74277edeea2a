"""Rasters: GeoTIFF files, band stacks of single-band files, NetCDF; georeferenced outputs.

Oracles: the files' own grid (CRS, transform, nodata) read back by rasterio and
rioxarray, ``model.predict`` of the same pixels, and the pixels the fixture
made nodata.
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
rioxarray = pytest.importorskip("rioxarray")

import xarray as xr  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from daskgmm import GaussianMixture, load  # noqa: E402
from daskgmm._data import open_input  # noqa: E402

from .test_cli import _run  # noqa: E402

H, W, TILE = 192, 160, 64
CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 4_000_000.0, 10.0, 10.0)
CENTRES = np.array([[300, 900, 500, 2000], [1200, 400, 800, 900], [700, 700, 2500, 300]])
NODATA = [0, 65535, 1]  # the band stack's files, each its own


@pytest.fixture(scope="module")
def truth():
    """Three land covers in patches, and the pixels with no band: a border."""
    rng = np.random.RandomState(0)
    cover = (np.add.outer(np.arange(H) // 48, np.arange(W) // 40) % 3).astype(int)
    pixels = CENTRES[cover] + rng.normal(0, 40, (H, W, 4))
    border = np.zeros((H, W), bool)
    border[:8], border[:, :6] = True, True
    return cover, pixels.round().clip(2, 60000).astype(np.uint16), border


def _write(path, bands, nodata, **extra):
    height, width = bands[0].shape
    profile = dict(driver="GTiff", height=height, width=width, count=len(bands), dtype="uint16",
                   crs=CRS, transform=TRANSFORM, nodata=nodata, tiled=True,
                   blockxsize=TILE, blockysize=TILE, **extra)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(bands))


@pytest.fixture(scope="module")
def scene(truth, tmp_path_factory):
    """A 4-band GeoTIFF whose border is nodata (0) in every band."""
    _, pixels, border = truth
    data = np.where(border[:, :, None], 0, pixels)
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    _write(path, [data[:, :, b] for b in range(4)], 0)
    return path


@pytest.fixture(scope="module")
def stack(truth, tmp_path_factory):
    """Three single-band files, each with its own nodata, and a patch missing in B3 only."""
    _, pixels, border = truth
    folder = tmp_path_factory.mktemp("stack")
    for i, (band, nodata) in enumerate(zip((0, 1, 2), NODATA, strict=True)):
        values = np.where(border, nodata, pixels[:, :, band])
        if i == 1:
            values[100:110, 50:60] = nodata  # missing in this band only
        _write(folder / f"LC08_B{i + 2}.TIF", [values], nodata)
    (folder / "LC08_QA.TIF").write_bytes(b"not a band")
    return folder


def _refused(capsys, *args):
    """The command line in this process, for what it refuses before any cluster starts
    (the scheduler address is one where nothing listens): exit status and stderr."""
    from daskgmm.cli import main

    capsys.readouterr()
    status = main([str(a) for a in (*args, "--scheduler", "tcp://127.0.0.1:9")])
    return status, capsys.readouterr().err


def _valid(labels, border):
    assert np.array_equal(labels == -1, border)


def test_a_geotiff_opens_lazily_in_tile_rows_with_its_grid(scene):
    import dask

    with dask.config.set({"daskgmm.chunk-bytes": TILE * W * 4 * 4}):
        inp = open_input(str(scene))
    assert inp.X.shape == (H * W, 4) and inp.X.dtype == np.float32
    assert all(rows % (TILE * W) == 0 for rows in inp.X.chunks[0][:-1])  # whole tile rows
    assert len(inp.X.chunks[0]) == H // TILE
    assert inp.georef.transform == tuple(TRANSFORM)[:6]
    assert rasterio.crs.CRS.from_wkt(inp.georef.crs) == rasterio.crs.CRS.from_string(CRS)
    assert inp.sample_dims == ("y", "x")
    assert open_input([str(scene)]).source == str(scene)  # a list of one file


def test_geotiff_round_trip_through_the_command_line(truth, scene, tmp_path):
    """fit -> predict -o labels.tif: the input's grid, -1 exactly on the nodata
    border, the labels of model.predict elsewhere; probabilities and log-density
    beside it."""
    from sklearn.metrics import adjusted_rand_score

    cover, _, border = truth
    model, labels = tmp_path / "m.zarr", tmp_path / "labels.tif"
    r = _run("fit", scene, "-k", 3, "--missing", "marginalize", "-o", model,
             "--cluster", "local:1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _run("predict", model, scene, "-o", labels, "--proba", "--score", "--cluster", "local:1")
    assert r.returncode == 0, r.stderr
    gm = load(model)
    with rasterio.open(labels) as src:
        assert src.crs == rasterio.crs.CRS.from_string(CRS) and src.transform == TRANSFORM
        assert (src.height, src.width, src.nodata, src.dtypes[0]) == (H, W, -1, "int16")
        assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
        written = src.read(1)
    _valid(written, border)
    expected = gm.predict(str(scene)).values
    np.testing.assert_array_equal(written, expected)
    assert adjusted_rand_score(cover[~border], written[~border]) == 1.0
    reopened = rioxarray.open_rasterio(tmp_path / "labels.probability.tif")
    assert reopened.shape == (3, H, W) and reopened.rio.crs == CRS
    np.testing.assert_allclose(reopened.values.sum(axis=0)[~border], 1.0, rtol=1e-5)
    assert np.isnan(reopened.values[:, border]).all()
    density = rioxarray.open_rasterio(tmp_path / "labels.log_density.tif").values[0]
    expected_density = gm.score_samples(str(scene)).values
    np.testing.assert_allclose(density[~border], expected_density[~border], rtol=1e-12)


def test_a_band_stack_with_per_band_nodata(truth, stack, tmp_path):
    """Single-band files stacked in the order given, each file's nodata NaN in its
    band only; a pixel with no band observed is -1; the model keeps the band names so
    that predicting reads the same files."""
    _, _, border = truth
    bands = ["*_B2.TIF", "*_B3.TIF", "*_B4.TIF"]
    inp = open_input(str(stack), bands=bands)
    values = inp.X.compute().reshape(H, W, 3)
    assert np.array_equal(np.isnan(values).all(axis=2), border)
    missing_b3 = np.isnan(values[:, :, 1]) & ~border
    assert missing_b3.sum() == 100 and not np.isnan(values[:, :, [0, 2]][~border]).any()
    gm = GaussianMixture(3, missing="marginalize", random_state=0, bands=bands).fit(str(stack))
    as_list = sorted(str(p) for p in stack.glob("*_B[234].TIF"))
    np.testing.assert_array_equal(gm.predict(as_list).values, gm.predict(str(stack)).values)
    info = gm.predict_to_geotiff(str(stack), tmp_path / "labels.tif")
    assert info["files"] == {"label": str(tmp_path / "labels.tif")}
    with rasterio.open(tmp_path / "labels.tif") as src:
        assert src.crs == CRS and src.transform == TRANSFORM
        written = src.read(1)
    _valid(written, border)
    np.testing.assert_array_equal(written, gm.predict(str(stack)).values)
    assert (written[missing_b3] >= 0).all()  # two bands observed: labelled


def test_band_stacks_that_do_not_line_up_are_one_line(truth, stack, tmp_path, capsys):
    _, pixels, _ = truth
    shifted = tmp_path / "shifted.tif"
    profile = dict(driver="GTiff", height=H, width=W, count=1, dtype="uint16", crs=CRS,
                   transform=from_origin(500_010.0, 4_000_000.0, 10.0, 10.0))  # fmt: skip
    with rasterio.open(shifted, "w", **profile) as dst:
        dst.write(pixels[None, :, :, 0])
    with pytest.raises(ValueError, match=r"Band file .*shifted.tif' is on another grid than"):
        open_input([str(stack / "LC08_B2.TIF"), str(shifted)])
    with pytest.raises(FileNotFoundError, match=r"No raster file matches .*\*_B9.TIF"):
        open_input(str(stack), bands=["*_B2.TIF", "*_B9.TIF"])
    with pytest.raises(ValueError, match=r"LC08_QA.TIF' cannot be read"):
        open_input(str(stack), bands=["*_QA.TIF"])
    status, err = _refused(capsys, "fit", stack, "--bands", "*_B2.TIF,*_B7.TIF", "-k", 2,
                           "-o", tmp_path / "m.zarr")  # fmt: skip
    assert status == 2 and "No raster file matches" in err, err
    assert len(err.strip().splitlines()) == 1


def test_netcdf_input_and_a_georeferenced_zarr_output(truth, scene, tmp_path):
    """A NetCDF variable (its _FillValue decoded to NaN) fits as the GeoTIFF does; the
    Zarr output keeps the grid in a spatial_ref variable that rioxarray reads."""
    _, _, border = truth
    image = rioxarray.open_rasterio(scene).astype(np.float32)
    image = image.where(image != 0).rename("reflectance")
    image.attrs = {k: v for k, v in image.attrs.items() if k != "_FillValue"}
    image.encoding = {"_FillValue": -9999.0}
    path = tmp_path / "scene.nc"
    image.to_dataset().to_netcdf(path, engine="h5netcdf")
    gm = GaussianMixture(3, missing="marginalize", random_state=0, feature_dim="band")
    gm.fit(str(path))
    reference = GaussianMixture(3, missing="marginalize", random_state=0).fit(str(scene))
    np.testing.assert_allclose(np.sort(gm.means_, axis=0), np.sort(reference.means_, axis=0),
                               rtol=1e-5)  # float32 against float64 data  # fmt: skip
    gm.predict_to_geotiff(str(path), tmp_path / "labels.tif")
    with rasterio.open(tmp_path / "labels.tif") as src:
        assert src.crs == CRS and src.transform == TRANSFORM
        written = src.read(1)
    _valid(written, border)
    np.testing.assert_array_equal(written, gm.predict(str(path)).values)
    gm.predict_to_zarr(str(path), tmp_path / "labels.zarr")
    labels = xr.open_zarr(tmp_path / "labels.zarr")["label"]
    assert labels.rio.crs == CRS and labels.rio.transform() == TRANSFORM
    np.testing.assert_array_equal(labels.fillna(-1).values.astype(int), written)


def test_geotiff_outputs_never_replace_what_is_not_theirs(scene, tmp_path, capsys):
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(str(scene))
    foreign = tmp_path / "labels.tif"
    foreign.write_bytes(b"someone's map")
    model = tmp_path / "m.zarr"
    gm.save(model)
    status, err = _refused(capsys, "predict", model, scene, "-o", foreign, "--overwrite")
    assert status == 3 and "is not a daskgmm output" in err, err
    assert foreign.read_bytes() == b"someone's map"
    out = tmp_path / "mine.tif"
    litter = ["mine.tif.0123abcd.tmp", "mine.tif.0123abcd.cog.ovr.tmp"]  # GDAL's, in a COG
    for name in litter:
        (tmp_path / name).write_bytes(b"litter of a killed run")
    assert gm.predict_to_geotiff(str(scene), out)["blocks"] > 0
    assert not any((tmp_path / name).exists() for name in litter)
    assert gm.predict_to_geotiff(str(scene), out)["blocks"] == 0  # this job's: reused
    other = GaussianMixture(2, missing="marginalize", random_state=0).fit(str(scene))
    with pytest.raises(ValueError, match="for another model or other data; pass --overwrite"):
        other.predict_to_geotiff(str(scene), out)
    other.predict_to_geotiff(str(scene), out, overwrite=True)
    with rasterio.open(out) as src:
        assert set(np.unique(src.read(1))) == {-1, 0, 1}
    with pytest.raises(ValueError, match="A GeoTIFF output needs an image input"):
        gm.predict_to_geotiff(np.ones((10, 4)), tmp_path / "flat.tif")


def test_anomalies_as_a_geotiff_mask(truth, scene, tmp_path):
    _, _, border = truth
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(str(scene))
    info = gm.predict_to_geotiff(str(scene), tmp_path / "odd.tif", anomaly_quantile=0.01)
    with rasterio.open(tmp_path / "odd.tif") as src:
        mask = src.read(1)
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
    assert np.array_equal(mask == 255, border)
    density = gm.score_samples(str(scene)).values
    np.testing.assert_array_equal(mask[~border] == 1, density[~border] < info["threshold"])
    assert 0.005 < (mask == 1).sum() / (~border).sum() < 0.015
    assert os.path.exists(tmp_path / "odd.log_density.tif")


def _png_size(path):
    from PIL import Image

    assert path.stat().st_size > 10_000  # a picture, not an empty frame
    with Image.open(path) as image:
        return image.size, image.info.get("Software", "")


def test_plot_draws_components_weights_and_the_label_map(scene, tmp_path, capsys):
    """The plot command's pictures: right pixel sizes, daskgmm's mark, each class of a
    three-band image in its mean colour; a foreign file in the folder is never replaced."""
    from PIL import Image

    three = tmp_path / "rgb.tif"
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 3}
        with rasterio.open(three, "w", **profile) as dst:
            dst.write(src.read([1, 2, 3]))
    model, out = tmp_path / "m.zarr", tmp_path / "plots"
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(str(three))
    gm.save(model)
    r = _run("plot", model, three, "-o", out, "--sample", 5000, "--max-pixels", 8000,
             "--cluster", "local:1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _png_size(out / "components.png") == ((770, 660), "daskgmm components")
    assert _png_size(out / "weights.png") == ((440, 385), "daskgmm weights")
    size, mark = _png_size(out / "labels.png")
    assert size == (880, 1056) and mark == "daskgmm label map"
    with Image.open(out / "labels.png") as image:
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20) or []}
    from daskgmm._plots import class_colours

    expected = np.round(255 * class_colours(gm.means_, [0, 1, 2])).astype(int)
    for rgb in expected:  # each class's mean colour is painted (within rounding)
        assert any(np.abs(np.array(c) - rgb).max() <= 1 for c in colours), rgb
    (out / "weights.png").write_bytes(b"my own picture")
    status, err = _refused(capsys, "plot", model, three, "-o", out)
    assert status == 3 and "is not a picture daskgmm drew" in err, err
    assert (out / "weights.png").read_bytes() == b"my own picture"


def test_plot_of_a_table_on_two_named_features_with_a_selection_curve(tmp_path, capsys):
    import pandas as pd

    rng = np.random.RandomState(0)
    table = pd.DataFrame(np.vstack([rng.normal(0, 1, (2000, 3)), rng.normal(5, 1, (2000, 3))]),
                         columns=["spend", "visits", "tenure"])  # fmt: skip
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    model, out = tmp_path / "m.zarr", tmp_path / "plots"
    GaussianMixture(2, random_state=0).fit(table).save(model)
    rows = [{"covariance_type": "full", "n_components": k, "bic": 10.0 - k, "aic": 9.0 - k}
            for k in (1, 2, 3)]  # fmt: skip
    (tmp_path / "sel.json").write_text(
        '{"format": "daskgmm-selection", "rows": ' + str(rows).replace("'", '"') + "}"
    )
    r = _run("plot", model, path, "-o", out, "--features", "visits,spend",
             "--selection", tmp_path / "sel.json", "--cluster", "local:1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["components.png", "selection.png",
                                                      "weights.png"]  # fmt: skip
    assert _png_size(out / "selection.png") == ((770, 495), "daskgmm model selection")
    for bad, message in (
        (["--features", "visits,age"], "'age' is not one of the features"),
        (["--selection", path], "is not JSON written by daskgmm select"),
    ):
        status, err = _refused(capsys, "plot", model, path, "-o", tmp_path / "p2", *bad)
        assert status == 2 and message in err, err
        assert not (tmp_path / "p2").exists()


def test_the_label_map_reads_a_cogs_overview_not_its_pixels(tmp_path):
    """A picture of a COG reads its overview: the decimated image equals the file's
    averaged overview (not every 4th pixel), nodata still NaN."""
    from rasterio.enums import Resampling

    rng = np.random.RandomState(0)
    values = rng.randint(1, 1000, (2, 512, 512)).astype(np.uint16)
    values[:, :8] = 0
    path = tmp_path / "cog.tif"
    with rasterio.open(path, "w", driver="GTiff", height=512, width=512, count=2,
                       dtype="uint16", crs=CRS, transform=TRANSFORM, nodata=0, tiled=True,
                       blockxsize=128, blockysize=128) as dst:  # fmt: skip
        dst.write(values)
        dst.build_overviews([2, 4], Resampling.average)
    image, step = open_input(str(path)).raster.decimated(128 * 128)
    assert step == 4 and image.shape == (128, 128, 2)
    with rasterio.open(path, overview_level=1) as overview:  # the 4x overview
        expected = overview.read().transpose(1, 2, 0).astype(np.float32)
    expected[expected == 0] = np.nan
    np.testing.assert_array_equal(image, expected)
    assert not np.array_equal(image[4:], values[:, 16::4, ::4].transpose(1, 2, 0))


def test_a_geotiff_url_reads_as_the_file_does(scene, tmp_path):
    """A COG by URL (an HTTP server with range requests on 127.0.0.1, in a process of
    its own: GDAL holds the GIL while it waits) fits and predicts as the file does."""
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                               "range_server.py"), str(scene.parent)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/{scene.name}"
        remote = GaussianMixture(3, missing="marginalize", random_state=0).fit(url)
        local = GaussianMixture(3, missing="marginalize", random_state=0).fit(str(scene))
        np.testing.assert_allclose(remote.means_, local.means_, rtol=1e-12)
        remote.predict_to_geotiff(url, tmp_path / "labels.tif")
    finally:
        server.kill()
        server.wait()
    with rasterio.open(tmp_path / "labels.tif") as src:
        assert src.crs == CRS and src.transform == TRANSFORM
        np.testing.assert_array_equal(src.read(1), local.predict(str(scene)).values)


def test_a_geotiff_output_interrupted_is_completed_by_a_rerun(scene, tmp_path):
    """Blocks written and flushed are marked; a run that stops after three blocks leaves
    the partial file and the marks (the target untouched), and the next run writes only
    the other blocks and gives the same files. Another job's partial file is discarded."""
    import dask

    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(str(scene))
    reference = tmp_path / "reference.tif"
    config = {"daskgmm.chunk-bytes": TILE * W * 4 * 4, "daskgmm.geotiff-flush-seconds": 0}
    with dask.config.set(config):
        gm.predict_to_geotiff(str(scene), reference, proba=True)

        def stop_after_three(done, total):
            if done == 3:
                raise KeyboardInterrupt

        out = tmp_path / "labels.tif"
        with pytest.raises(KeyboardInterrupt):
            gm.predict_to_geotiff(str(scene), out, proba=True, progress=stop_after_three)
        assert not out.exists()
        assert sorted(os.listdir(tmp_path / "labels.tif.daskgmm-progress")) == ["0", "1", "2"]
        info = gm.predict_to_geotiff(str(scene), out, proba=True)
    assert (info["blocks"], info["skipped"]) == (0, 3)  # the three marked, none left
    for name in ("labels.tif", "labels.probability.tif"):
        with rasterio.open(tmp_path / name) as got:
            expected = tmp_path / name.replace("labels", "reference")
            with rasterio.open(expected) as want:
                np.testing.assert_array_equal(got.read(), want.read())
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["labels.tif", "labels.probability.tif", "reference.tif", "reference.probability.tif"]
    )
    # killed after its renames, before removing its partial files: the re-run removes them
    (tmp_path / "labels.tif.daskgmm-partial").write_bytes((tmp_path / "labels.tif").read_bytes())
    (tmp_path / "labels.tif.daskgmm-progress").mkdir()
    with dask.config.set(config):
        assert gm.predict_to_geotiff(str(scene), out, proba=True)["blocks"] == 0
    assert not [p for p in os.listdir(tmp_path) if "daskgmm" in p]
    # a marks folder holding what daskgmm did not write is refused, never removed
    (tmp_path / "labels.tif.daskgmm-progress").mkdir()
    (tmp_path / "labels.tif.daskgmm-progress" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds what daskgmm did not write; refusing"):
        gm.predict_to_geotiff(str(scene), out, proba=True)
    assert (tmp_path / "labels.tif.daskgmm-progress" / "notes.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "labels.tif.daskgmm-progress")
    other = GaussianMixture(2, missing="marginalize", random_state=0).fit(str(scene))
    with dask.config.set(config), pytest.raises(KeyboardInterrupt):
        gm.predict_to_geotiff(str(scene), tmp_path / "b.tif", progress=stop_after_three)
    with dask.config.set(config):
        info = other.predict_to_geotiff(str(scene), tmp_path / "b.tif")
    assert info["skipped"] == 0 and not (tmp_path / "b.tif.daskgmm-partial").exists()
    with rasterio.open(tmp_path / "b.tif") as got:
        np.testing.assert_array_equal(got.read(1), other.predict(str(scene)).values)


def test_a_geotiff_predict_killed_at_any_moment_is_completed_by_a_rerun(truth, tmp_path):
    """SIGKILL of `predict -o labels.tif` once a block is marked written, and once all
    are (before the COG): each re-run writes only the unmarked blocks, completes the
    files (labels and log-density those of the model) and leaves no partial file."""
    import signal
    import subprocess
    import sys
    import time

    from .test_cli import ENV

    _, pixels, _ = truth
    tall = tmp_path / "tall.tif"  # 24 blocks of 64 rows
    _write(tall, [np.tile(pixels[:, :, b], (8, 1)) for b in range(4)], 0)
    model = tmp_path / "m.zarr"
    GaussianMixture(3, missing="marginalize", random_state=0).fit(str(tall)).save(model)
    env = {**ENV, "DASK_DASKGMM__CHUNK_BYTES": str(TILE * W * 4 * 4),
           "DASK_DASKGMM__GEOTIFF_FLUSH_SECONDS": "0"}  # fmt: skip
    args = ["predict", model, tall, "--score", "--cluster", "local:1"]
    gm = load(model)
    expected = {
        "": gm.predict(str(tall)).values,
        ".log_density": gm.score_samples(str(tall)).values,
    }
    for marked in (1, 24):  # among the block writes; after them, before the COG
        out = tmp_path / f"out-{marked}.tif"
        marks = tmp_path / f"out-{marked}.tif.daskgmm-progress"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        proc = subprocess.Popen([sys.executable, "-m", "daskgmm", *map(str, args), "-o", out],
                                env=env, **quiet)  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (marks.is_dir() and len(os.listdir(marks)) >= marked):
            assert time.monotonic() < deadline, "no block was marked"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        r = _run(*args, "-o", out, env=env)
        assert r.returncode == 0, (marked, r.stderr)
        written, skipped = map(
            int, re.search(r"(\d+) blocks written, (\d+) already", r.stdout).groups()
        )
        assert skipped >= marked and written + skipped == 24, r.stdout
        for suffix, values in expected.items():
            with rasterio.open(tmp_path / f"out-{marked}{suffix}.tif") as got:
                np.testing.assert_array_equal(got.read(1), values)
    assert not [p for p in os.listdir(tmp_path) if "daskgmm-" in p or p.endswith(".tmp")]
