"""Anomaly detection with a density model: flag the 0.5 % least likely sensor readings.

Normal operation of a machine is a mixture of a few regimes; faults are
readings that none of the regimes explains. The threshold is a quantile of the
log-density computed on the data with a distributed histogram (nothing is
sorted on the driver).

    python examples/anomaly_detection.py
"""

import dask.array as da
import numpy as np

from daskgmm import GaussianMixture
from daskgmm._output import quantile_threshold


def main() -> None:
    rng = np.random.default_rng(1)
    n = 300_000
    regimes = np.array([[20.0, 1.0, 50.0], [60.0, 3.0, 70.0], [90.0, 5.0, 85.0]])
    which = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    readings = regimes[which] + rng.normal(size=(n, 3)) * [2.0, 0.2, 1.5]
    faults = rng.choice(n, size=300, replace=False)
    readings[faults] += rng.normal(scale=15.0, size=(300, 3))
    X = da.from_array(readings, chunks=(50_000, 3))

    gm = GaussianMixture(n_components=3, random_state=0).fit(X)
    density = gm.score_samples(X)  # lazy log-density
    threshold = quantile_threshold(density, 0.005)
    flagged = (density < threshold).compute()
    caught = np.isin(faults, np.flatnonzero(flagged)).mean()
    print(
        f"threshold {threshold:.3f}: {flagged.sum()} readings flagged, "
        f"{caught:.0%} of the injected faults among them"
    )


if __name__ == "__main__":
    main()
