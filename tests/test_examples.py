"""Every script in examples/ runs (each in under a minute) and produces its outputs."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _run(script, cwd, *args):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_quickstart(tmp_path):
    out = _run("quickstart.py", tmp_path)
    assert "weights:" in out and "BIC" in out


def test_image_segmentation(tmp_path):
    out = _run("image_segmentation.py", tmp_path, "seg")
    assert float(re.search(r"ARI against the true classes: ([0-9.]+)", out).group(1)) > 0.99
    assert (tmp_path / "seg" / "labels.zarr").exists()
    assert (tmp_path / "seg" / "labels.png").read_bytes()[:4] == b"\x89PNG"


def test_anomaly_detection(tmp_path):
    out = _run("anomaly_detection.py", tmp_path)
    assert re.search(r"1500 readings flagged, (9\d|100)% of the injected faults", out)


def test_bic_selection(tmp_path):
    out = _run("bic_selection.py", tmp_path, "bic.png")
    assert "n_components=4" in out
    assert (tmp_path / "bic.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_bands(tmp_path):
    out = _run("missing_bands.py", tmp_path, "mb")
    assert "marginalize: 100% of the pixels labelled" in out
    ari = re.search(r"ARI against the true classes ([0-9.]+) \(all pixels\)", out)
    assert float(ari.group(1)) > 0.98
    assert "complete cases: 75% of the pixels labelled" in out
    assert (tmp_path / "mb" / "labels.png").read_bytes()[:4] == b"\x89PNG"


def test_dirichlet_process(tmp_path):
    out = _run("dirichlet_process.py", tmp_path, "dp.png")
    assert re.search(r"BIC sweep over K=1\.\.8: K=5 in", out)
    assert re.search(r"Dirichlet process, K=12: 5 components carry weight", out)
    assert (tmp_path / "dp.png").read_bytes()[:4] == b"\x89PNG"


def test_customer_segmentation(tmp_path):
    out = _run("customer_segmentation.py", tmp_path, "cs", "--rows", "200000")
    raw = float(re.search(r"raw: .* true segments ([0-9.]+)", out).group(1))
    scaled = float(re.search(r"standardized: .* true segments ([0-9.]+)", out).group(1))
    assert scaled > 0.99 and raw < scaled - 0.1
    assert "200,000 segments written" in out and "annual_spend" in out
    assert (tmp_path / "cs" / "segments.png").read_bytes()[:4] == b"\x89PNG"


def test_examples_never_replace_what_is_there(tmp_path):
    """A folder with something in it, or an existing picture, is refused and left alone."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "scene.zarr").write_text("my own data")
    (tmp_path / "mine.png").write_text("my own picture")
    for script, args in (
        ("missing_bands.py", ["mine"]),
        ("image_segmentation.py", ["mine"]),
        ("dirichlet_process.py", ["mine.png"]),
        ("bic_selection.py", ["mine.png"]),
        ("customer_segmentation.py", ["mine"]),
        ("raster_scene.py", ["mine"]),
    ):
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / script), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 1 and "give a new" in out.stderr, (script, out.stderr)
    assert (tmp_path / "mine" / "scene.zarr").read_text() == "my own data"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["scene.zarr"]
    assert (tmp_path / "mine.png").read_text() == "my own picture"


def test_raster_scene(tmp_path):
    pytest.importorskip("rioxarray")
    out = _run("raster_scene.py", tmp_path, "scene")
    assert "same grid as the bands: True" in out
    assert "nodata exactly outside the footprint: True" in out
    assert float(re.search(r"ARI against the true covers: ([0-9.]+)", out).group(1)) > 0.99
    plots = tmp_path / "scene" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["components.png", "labels.png",
                                                       "weights.png"]  # fmt: skip
