"""Pictures of what a model found (matplotlib, the ``plot`` extra): NumPy in, PNG bytes out.

- :func:`components_png`: each component's 1- and 2-sigma ellipses over a 2-D
  histogram of a sample of the data, on two chosen features or on the sample's
  first two principal components;
- :func:`label_map_png`: a label map with a legend, each class in its mean
  colour for RGB inputs;
- :func:`weights_png`: the components' weights as bars;
- :func:`selection_png`: BIC and AIC against the number of components.

Every picture carries the PNG text ``Software: daskgmm <kind>``, by which a
re-run recognises (and may replace) its own file and nothing else. Reading the
data (bounded samples) is :mod:`daskgmm.cli`'s; nothing here touches Dask.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MARK",
    "components_png",
    "label_map_png",
    "projection",
    "selection_png",
    "weights_png",
]

Float = NDArray[np.floating]

#: The PNG ``Software`` text of every picture daskgmm draws (a kind follows).
MARK = "daskgmm"
#: Sigma levels of the ellipses, with their line styles.
LEVELS = ((1.0, "-"), (2.0, "--"))


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("Plots need matplotlib: pip install 'daskgmm[plot]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, kind: str, dpi: int = 110) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": f"{MARK} {kind}"})
    plt.close(fig)
    return buffer.getvalue()


def projection(
    sample: Float, features: Sequence[int] | None, names: Sequence[str]
) -> tuple[Float, Float, list[str]]:
    """The 2-D view: ``(P, centre, axis labels)`` with ``P`` of shape (2, n_features),
    either two chosen features or the sample's first two principal components
    (centred at ``centre``; for chosen features ``centre`` is 0)."""
    n_features = sample.shape[1]
    if features is not None:
        P = np.zeros((2, n_features))
        P[0, features[0]] = P[1, features[1]] = 1.0
        return P, np.zeros(n_features), [names[features[0]], names[features[1]]]
    centre = np.nanmean(sample, axis=0)
    complete = sample[~np.isnan(sample).any(axis=1)] - centre
    _, s, vt = np.linalg.svd(complete, full_matrices=False)
    share = s[:2] ** 2 / max(float(np.sum(s**2)), np.finfo(float).tiny)
    return vt[:2], centre, [f"PC{i + 1} ({100 * r:.0f} %)" for i, r in enumerate(share)]


def _ellipse(mean: Float, cov: Float, level: float, n: int = 100) -> Float:
    """The points at Mahalanobis distance ``level`` from ``mean`` in 2-D."""
    values, vectors = np.linalg.eigh(cov)
    t = np.linspace(0.0, 2.0 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (vectors * np.sqrt(np.maximum(values, 0.0)) * level) @ circle + mean[:, None]


def components_png(
    sample: Float,
    means: Float,
    covariances: Float,
    weights: Float,
    *,
    features: Sequence[int] | None = None,
    names: Sequence[str],
    title: str,
) -> bytes:
    """Components as 1- and 2-sigma ellipses over a 2-D histogram of ``sample``.

    ``means`` (K, D) and dense ``covariances`` (K, D, D) are in the sample's
    units; they are projected exactly (``P mu``, ``P Sigma P^T``).
    """
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    P, centre, labels = projection(sample, features, names)
    seen = sample[~np.isnan(sample @ P.T).any(axis=1)]
    xy = (seen - centre) @ P.T
    fig, ax = plt.subplots(figsize=(7, 6))
    if len(xy):
        lo, hi = np.percentile(xy, [0.5, 99.5], axis=0)
        pad = 0.1 * (hi - lo + 1e-12)
        window = [[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]]
        ax.hist2d(xy[:, 0], xy[:, 1], bins=120, range=window, cmap="Greys", norm=LogNorm(),
                  cmin=1)  # fmt: skip
    colours = plt.get_cmap("tab10" if len(means) <= 10 else "tab20")
    for k in np.argsort(weights)[::-1]:
        mean2 = P @ (means[k] - centre)
        cov2 = P @ covariances[k] @ P.T
        colour = colours(k % colours.N)
        for level, style in LEVELS:
            line = _ellipse(mean2, cov2, level)
            ax.plot(line[0], line[1], style, color=colour, lw=1.6,
                    label=f"{k}: weight {weights[k]:.3f}" if level == 1.0 else None)  # fmt: skip
        ax.plot(*mean2, "o", color=colour, ms=5)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{title}\n1-sigma (solid) and 2-sigma (dashed) ellipses over {len(xy):,} samples")
    ax.legend(fontsize=8, loc="best", title="component")
    fig.tight_layout()
    return _png(fig, "components")


def class_colours(means: Float, rgb: Sequence[int] | None) -> Float:
    """One RGB colour per class: its mean in the ``rgb`` bands, each band stretched
    from the darkest class mean to the brightest and brightened (gamma 1/2), so that
    dark covers stay apart; without ``rgb``, a qualitative palette."""
    K = len(means)
    if rgb is None:
        plt = _pyplot()
        palette = plt.get_cmap("tab10" if K <= 10 else "tab20")
        return np.array([palette(k % palette.N)[:3] for k in range(K)])
    bands = means[:, list(rgb)]
    lo, hi = bands.min(axis=0), bands.max(axis=0)
    return np.sqrt(np.clip((bands - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0))


def label_map_png(
    labels: NDArray[np.integer],
    colours: Float,
    weights: Float,
    *,
    title: str,
    extent: tuple[float, float, float, float] | None = None,
) -> bytes:
    """A (rows, cols) label map with a legend; -1 (no band observed) hatched."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    K = len(colours)
    cmap = ListedColormap(colours)
    height, width = labels.shape
    fig, ax = plt.subplots(figsize=(8, max(3.0, 8 * height / max(width, 1))))
    ax.patch.set_facecolor("white")
    ax.patch.set_hatch("////")
    ax.patch.set_edgecolor("0.75")
    ax.imshow(np.ma.masked_less(labels, 0), cmap=cmap, vmin=-0.5, vmax=K - 0.5,
              interpolation="nearest", extent=extent)  # fmt: skip
    handles = [Patch(facecolor=colours[k], edgecolor="0.6", label=f"{k}: weight {weights[k]:.3f}")
               for k in range(K)]  # fmt: skip
    if (labels == -1).any():
        handles.append(Patch(facecolor="white", edgecolor="0.6", hatch="////", label="no data"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="class")  # fmt: skip
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig, "label map")


def weights_png(weights: Float, *, title: str) -> bytes:
    plt = _pyplot()
    order = np.argsort(weights)[::-1]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(weights) + 2), 3.5))
    ax.bar(range(len(order)), weights[order], color="tab:blue")
    ax.set_xticks(range(len(order)), [str(k) for k in order])
    ax.set_xlabel("component (heaviest first)")
    ax.set_ylabel("weight")
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig, "weights")


def selection_png(rows: Sequence[dict[str, Any]], types: Sequence[str]) -> bytes:
    """BIC (solid) and AIC (dashed) of each covariance type against the component count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ct in types:
        sub = [r for r in rows if r["covariance_type"] == ct]
        ks = [r["n_components"] for r in sub]
        ax.plot(ks, [r["bic"] for r in sub], marker="o", label=f"BIC {ct}")
        ax.plot(ks, [r["aic"] for r in sub], marker="s", linestyle="--", label=f"AIC {ct}")
    ax.set_xlabel("number of components")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title("daskgmm model selection")
    ax.legend()
    fig.tight_layout()
    return _png(fig, "model selection")
