"""Peak memory of a fit on in-memory data, against the size of the data.

Each case runs in a fresh process that loads the data from a .npy file (so the
data are in memory exactly once) and fits ``max_iter`` EM iterations with the
threaded scheduler; the process's peak resident set size (``ru_maxrss``) is
compared with the target ``1.5 x data + 200 MB`` (issue 5). The baseline of an
idle interpreter with daskgmm imported is printed too.

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import resource, sys, warnings
import numpy as np
from daskgmm import GaussianMixture
X = np.load(sys.argv[1])
k, ct = int(sys.argv[2]), sys.argv[3]
if k:
    rng = np.random.default_rng(0)
    kw = dict(weights_init=np.full(k, 1 / k), means_init=X[rng.choice(len(X), k)],
              precisions_init={"full": np.array([np.eye(X.shape[1])] * k),
                               "diag": np.ones((k, X.shape[1]))}[ct])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(k, covariance_type=ct, tol=0, max_iter=3, **kw).fit(X)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def main() -> None:
    cases = [
        (1_000_000, 16, 8, "diag"),
        (1_000_000, 16, 8, "full"),
        (1_000_000, 64, 8, "full"),
        (4_000_000, 16, 8, "full"),
    ]
    print(
        f"{'N':>9} {'D':>3} {'K':>3} {'cov':>5} {'data':>9} {'peak RSS':>9} "
        f"{'target':>9} {'extra over data':>15}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n, d, k, ct in cases:
            path = os.path.join(tmp, "x.npy")
            rng = np.random.default_rng(0)
            np.save(path, rng.standard_normal((n, d)))
            data = n * d * 8
            base = int(
                subprocess.run(
                    [sys.executable, "-c", CHILD, path, "0", ct],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            peak = int(
                subprocess.run(
                    [sys.executable, "-c", CHILD, path, str(k), ct],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            target = 1.5 * data + 200e6
            print(
                f"{n:>9.0e} {d:>3} {k:>3} {ct:>5} {data / 2**20:>7.0f}Mi {peak / 2**20:>7.0f}Mi "
                f"{target / 2**20:>7.0f}Mi {(peak - base) / 2**20:>13.0f}Mi "
                f"{'met' if peak <= target else 'MISSED'} (loaded data alone: "
                f"{base / 2**20:.0f} MiB)"
            )


if __name__ == "__main__":
    main()
