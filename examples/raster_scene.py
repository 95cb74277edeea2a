"""Segment a Landsat-like scene held as one GeoTIFF per band, through the command line.

No multispectral scene small enough to ship is redistributable inside a package,
so the scene is generated with a realistic structure: six surface-reflectance
bands (blue, green, red, NIR, SWIR 1, SWIR 2) as Landsat 8 Collection 2
Level-2 files store them (uint16, scale 2.75e-5, offset -0.2, nodata 0),
patchy land cover from smoothed random fields (water, forest, crops, bare
soil, town, cloud), band-correlated noise, UTM 33N at 30 m, and the tilted
footprint of a real path/row scene, outside which every band is nodata.

Then, as a scheduled job would:

    daskgmm fit   SCENE/ --bands '*_B[2-7].TIF' -k 6 --missing marginalize -o model.zarr
    daskgmm predict model.zarr SCENE/ -o labels.tif       # a georeferenced COG
    daskgmm plot    model.zarr SCENE/ -o plots --rgb 2,1,0  # red, green, blue

and the label map is checked against the truth and the scene's grid.

    python examples/raster_scene.py [OUTDIR]
"""

import os
import subprocess
import sys

import numpy as np

BANDS = ["B2", "B3", "B4", "B5", "B6", "B7"]  # blue, green, red, nir, swir1, swir2
#: Surface reflectance of each cover in the six bands.
SPECTRA = np.array(
    [
        [0.04, 0.05, 0.03, 0.02, 0.01, 0.01],  # water
        [0.02, 0.05, 0.03, 0.35, 0.17, 0.07],  # forest
        [0.04, 0.08, 0.06, 0.42, 0.25, 0.12],  # crops
        [0.10, 0.14, 0.19, 0.26, 0.33, 0.27],  # bare soil
        [0.11, 0.12, 0.13, 0.18, 0.20, 0.18],  # town
        [0.55, 0.55, 0.56, 0.58, 0.40, 0.30],  # cloud
    ]
)
SCALE, OFFSET = 2.75e-5, -0.2


def make_scene(folder: str, ny: int = 480, nx: int = 560, seed: int = 0) -> tuple:
    """Write the six band files into ``folder``; return the true covers (-1 outside the
    footprint) and the grid (CRS, transform)."""
    import rasterio
    from rasterio.transform import from_origin
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = lambda sigma: gaussian_filter(rng.normal(size=(ny, nx)), sigma)  # noqa: E731
    terrain, wetness, clouds = field(40), field(25), field(12)
    cover = np.where(terrain > 0.004, 1, 2)  # forest on the hills, crops below
    cover[wetness > 0.012] = 0  # lakes
    cover[(terrain < -0.006) & (wetness < -0.004)] = 3  # bare soil
    yy, xx = np.mgrid[0:ny, 0:nx]
    cover[(xx - 0.65 * nx) ** 2 + (yy - 0.35 * ny) ** 2 < (0.12 * nx) ** 2] = 4  # a town
    cover[clouds > 0.03] = 5  # clouds
    # the footprint of a scene tilted by 12 degrees, as a path/row scene lies in its UTM grid
    angle = np.deg2rad(12.0)
    u = (xx - nx / 2) * np.cos(angle) + (yy - ny / 2) * np.sin(angle)
    v = -(xx - nx / 2) * np.sin(angle) + (yy - ny / 2) * np.cos(angle)
    inside = (np.abs(u) < 0.42 * nx) & (np.abs(v) < 0.42 * ny)
    shared = rng.normal(scale=0.006, size=(ny, nx, 1))  # illumination: all bands together
    reflectance = SPECTRA[cover] * (1 + 8 * shared) + rng.normal(scale=0.004, size=(ny, nx, 6))
    dn = np.clip(np.round((reflectance - OFFSET) / SCALE), 1, 65535).astype(np.uint16)
    dn[~inside] = 0
    transform = from_origin(399_960.0, 5_000_040.0, 30.0, 30.0)
    profile = dict(driver="GTiff", height=ny, width=nx, count=1, dtype="uint16",
                   crs="EPSG:32633", transform=transform, nodata=0, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")  # fmt: skip
    for b, name in enumerate(BANDS):
        path = os.path.join(folder, f"LC08_L2SP_189026_20260704_SR_{name}.TIF")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(dn[:, :, b], 1)
            dst.set_band_description(1, name)
    with open(os.path.join(folder, "LC08_L2SP_189026_20260704_MTL.txt"), "w") as f:
        f.write("GROUP = LANDSAT_METADATA_FILE\n")  # what a real scene folder holds too
    return np.where(inside, cover, -1), ("EPSG:32633", transform)


def new_output_folder(outdir: str) -> None:
    """Create ``outdir``, or accept it empty: an example never replaces what is there."""
    if os.path.exists(outdir) and (not os.path.isdir(outdir) or os.listdir(outdir)):
        sys.exit(f"{outdir} exists and is not an empty folder: give a new one")
    os.makedirs(outdir, exist_ok=True)


def daskgmm(*args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "daskgmm", *args, "--cluster", "local:2"],
                         capture_output=True, text=True)  # fmt: skip
    if run.returncode:
        sys.exit(run.stderr)
    return run.stdout


def main(outdir: str = "raster-scene-output") -> None:
    import rasterio
    from sklearn.metrics import adjusted_rand_score

    new_output_folder(outdir)
    scene = os.path.join(outdir, "scene")
    os.makedirs(scene)
    truth, (crs, transform) = make_scene(scene)
    model = os.path.join(outdir, "model.zarr")
    labels_tif = os.path.join(outdir, "labels.tif")
    bands = ",".join(f"*_{b}.TIF" for b in BANDS)
    daskgmm("fit", scene, "--bands", bands, "-k", "6", "--missing", "marginalize", "-o", model)
    daskgmm("predict", model, scene, "-o", labels_tif)
    print(daskgmm("plot", model, scene, "-o", os.path.join(outdir, "plots"), "--rgb", "2,1,0")
          .strip())  # fmt: skip
    with rasterio.open(labels_tif) as src:
        labels = src.read(1)
        same_grid = src.crs == crs and src.transform == transform
        print(f"labels.tif: {src.width} x {src.height} pixels, {src.crs}, same grid as "
              f"the bands: {same_grid}, nodata {src.nodata:g}, "
              f"overviews {src.overviews(1)}")  # fmt: skip
    outside = truth == -1
    print(f"nodata exactly outside the footprint: {np.array_equal(labels == -1, outside)}")
    ari = adjusted_rand_score(truth[~outside], labels[~outside])
    print(f"ARI against the true covers: {ari:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
