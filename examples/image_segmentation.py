"""Segment a multi-band image stored as Zarr; write the label map (Zarr) and a PNG of it.

A synthetic 4-band "satellite scene" (band, y, x) with five land-cover classes
is written as an xarray Zarr dataset, fitted with ``feature_dim="band"``
(every pixel is a sample), and the (y, x) label map comes back as a lazy
xarray.DataArray with the image's coordinates.

    python examples/image_segmentation.py [OUTDIR]
"""

import os
import sys

import numpy as np
import xarray as xr

from daskgmm import GaussianMixture


def make_scene(ny: int = 600, nx: int = 800, seed: int = 0) -> tuple[xr.Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    classes = np.zeros((ny, nx), dtype=int)  # 0: water
    classes[(xx + 0.5 * yy) > 300] = 1  # 1: forest
    classes[(xx - 500) ** 2 + (yy - 250) ** 2 < 120**2] = 2  # 2: town
    classes[(yy > 420) & (xx > 150)] = 3  # 3: fields
    classes[(np.sin(xx / 40.0) + np.cos(yy / 30.0)) > 1.6] = 4  # 4: bare soil
    spectra = np.array(
        [
            [0.05, 0.04, 0.02, 0.01],
            [0.03, 0.08, 0.04, 0.40],
            [0.20, 0.18, 0.17, 0.25],
            [0.08, 0.12, 0.07, 0.30],
            [0.25, 0.22, 0.20, 0.28],
        ]
    )
    pixels = spectra[classes] + rng.normal(scale=0.012, size=(ny, nx, 4))
    ds = xr.Dataset(
        {"reflectance": (("band", "y", "x"), pixels.transpose(2, 0, 1).astype("float32"))},
        coords={
            "band": ["blue", "green", "red", "nir"],
            "y": 5_000_000.0 - 10.0 * np.arange(ny),
            "x": 400_000.0 + 10.0 * np.arange(nx),
        },
        attrs={"crs": "EPSG:32633"},
    )
    return ds, classes


def new_output_folder(outdir: str) -> None:
    """Create ``outdir``, or accept it empty: an example never replaces what is there."""
    if os.path.exists(outdir) and (not os.path.isdir(outdir) or os.listdir(outdir)):
        sys.exit(f"{outdir} exists and is not an empty folder: give a new one")
    os.makedirs(outdir, exist_ok=True)


def main(outdir: str = "segmentation-output") -> None:
    from sklearn.metrics import adjusted_rand_score

    new_output_folder(outdir)
    scene, truth = make_scene()
    store = os.path.join(outdir, "scene.zarr")
    scene.chunk({"y": 100}).to_zarr(store, mode="w", consolidated=False)

    gm = GaussianMixture(
        n_components=5,
        covariance_type="full",
        variable="reflectance",
        feature_dim="band",
        random_state=0,
    )
    gm.fit(store)
    labels = gm.predict(store)  # lazy xarray.DataArray (y, x)
    labels.to_dataset(name="label").to_zarr(
        os.path.join(outdir, "labels.zarr"), mode="w", consolidated=False
    )
    label_map = labels.values
    print(
        f"label map {labels.dims} {labels.shape}; ARI against the true classes: "
        f"{adjusted_rand_score(truth.ravel(), label_map.ravel()):.4f}"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rgb = scene["reflectance"].sel(band=["red", "green", "blue"]).transpose("y", "x", "band")
    axes[0].imshow(np.clip(rgb.values / 0.25, 0, 1))
    axes[0].set_title("scene (RGB)")
    axes[1].imshow(label_map, cmap="tab10", interpolation="nearest", vmin=0, vmax=9)
    axes[1].set_title("daskgmm labels (5 components)")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    png = os.path.join(outdir, "labels.png")
    fig.savefig(png, dpi=90)
    print(f"wrote {outdir}/labels.zarr and {png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
