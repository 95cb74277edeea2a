"""The command line, run as a user would: in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "daskgmm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_runs_end_to_end_on_a_local_cluster():
    out = _run("demo", "--n-samples", "30000", "--chunk-rows", "4000", "--cluster", "local:2")
    assert out.returncode == 0, out.stderr
    assert "Dask cluster: 2 workers at tcp://127.0.0.1:" in out.stdout
    ari = float(
        re.search(r"Adjusted Rand index against the true labels: ([0-9.]+)", out.stdout).group(1)
    )
    assert ari >= 0.95
    assert "GaussianMixture(n_components=5, covariance_type='full'): converged=True" in out.stdout


def test_bad_option_is_one_line_and_nonzero():
    out = _run("demo", "--cluster", "mainframe")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "daskgmm: error: Unknown cluster 'mainframe'; expected one of local, slurm, pbs, "
        "kubernetes [:N]."
    )
    assert "Traceback" not in out.stderr
