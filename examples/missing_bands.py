"""Segment a scene whose near-infrared band is missing on part of the pixels.

The 4-band scene of ``image_segmentation.py`` loses its NIR band on a quarter
of its rows (sensor stripes), marked -9999 and declared by a ``nodata``
attribute, as rasters carry it. Two ways to segment it:

- complete cases: fit on the pixels with every band and label only those
  (the striped pixels get no label);
- ``missing="marginalize"``: fit on every observed value, and label every
  pixel from the bands it has.

Both label maps are written to a PNG side by side.

    python examples/missing_bands.py [OUTDIR]
"""

import os
import sys

import numpy as np

from daskgmm import GaussianMixture

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_segmentation import make_scene, new_output_folder


def main(outdir: str = "missing-bands-output") -> None:
    from sklearn.metrics import adjusted_rand_score

    new_output_folder(outdir)
    scene, truth = make_scene()
    reflectance = scene["reflectance"]
    stripes = (np.arange(reflectance.sizes["y"]) // 25) % 4 == 1  # a quarter of the rows
    nir = reflectance.sel(band="nir").values
    nir[stripes] = -9999.0
    reflectance.loc[{"band": "nir"}] = nir
    reflectance.attrs["nodata"] = -9999.0
    store = os.path.join(outdir, "scene.zarr")
    scene.chunk({"y": 100}).to_zarr(store, mode="w", consolidated=False)

    common = dict(n_components=5, variable="reflectance", feature_dim="band", random_state=0)
    # every observed value, every pixel labelled (the store declares its nodata)
    marginal = GaussianMixture(missing="marginalize", **common).fit(store)
    labels = marginal.predict(store).values

    # complete cases: the striped pixels are dropped from the fit and get no label
    pixels = scene["reflectance"].transpose("y", "x", "band").values.reshape(-1, 4)
    complete = ~(pixels == -9999.0).any(axis=1)
    dropped = GaussianMixture(n_components=5, random_state=0).fit(pixels[complete])
    complete_labels = np.full(len(pixels), -1)
    complete_labels[complete] = dropped.predict(pixels[complete])
    complete_labels = complete_labels.reshape(labels.shape)

    striped = np.broadcast_to(stripes[:, None], labels.shape)
    print(f"pixels without NIR: {striped.mean():.0%}")
    print(
        f"marginalize: {np.mean(labels >= 0):.0%} of the pixels labelled; ARI against the "
        f"true classes {adjusted_rand_score(truth.ravel(), labels.ravel()):.4f} (all pixels), "
        f"{adjusted_rand_score(truth[striped], labels[striped]):.4f} (pixels without NIR), "
        f"{adjusted_rand_score(truth[~striped], labels[~striped]):.4f} (the others)"
    )
    print(
        f"complete cases: {np.mean(complete_labels >= 0):.0%} of the pixels labelled; ARI "
        f"{adjusted_rand_score(truth[~striped], complete_labels[~striped]):.4f} on them"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    shown = np.ma.masked_less(complete_labels, 0)
    axes[0].imshow(shown, cmap="tab10", interpolation="nearest", vmin=0, vmax=9)
    axes[0].set_title("complete cases: no label without NIR")
    axes[1].imshow(labels, cmap="tab10", interpolation="nearest", vmin=0, vmax=9)
    axes[1].set_title('missing="marginalize": every pixel')
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    png = os.path.join(outdir, "labels.png")
    fig.savefig(png, dpi=90)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
