"""Failures on real processes: a worker killed mid-fit, the driver killed mid-fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import dask
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

from daskgmm import GaussianMixture
from daskgmm._checkpoint import Checkpoint

from .conftest import RandomData

pytestmark = pytest.mark.slow


def test_worker_killed_mid_fit_gives_the_same_parameters():
    from daskgmm.cluster import connect

    data = RandomData(
        np.random.RandomState(0), n_samples=200_000, n_components=4, n_features=6, scale=10
    )
    X = data.X["full"]
    kw = dict(n_components=4, random_state=0, tol=0, max_iter=40)
    # the command line's own local cluster: 2 nanny-supervised single-threaded workers
    with connect(cluster="local:2") as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            undisturbed = GaussianMixture(**kw).fit(X)
            pids = client.run(os.getpid)
            victim = sorted(pids)[0]
            started = threading.Event()

            def kill_later():
                started.wait()
                time.sleep(1.0)
                os.kill(pids[victim], signal.SIGKILL)

            killer = threading.Thread(target=kill_later)
            killer.start()
            started.set()
            tic = time.perf_counter()
            disturbed = GaussianMixture(**kw).fit(X)
            seconds = time.perf_counter() - tic
            killer.join()
        assert seconds > 1.0, "the fit ended before the worker was killed"
        client.wait_for_workers(2, timeout=30)
        assert pids[victim] not in client.run(os.getpid).values(), "no worker was killed"
        # the restarted worker too runs with connect()'s turned-down diagnostics
        settings = client.run(
            lambda dask_worker: (
                "profile" in dask_worker.periodic_callbacks,
                dask_worker._tick_interval,
            )
        )
        assert sorted(settings.values()) == [(False, 0.2), (False, 0.2)]
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval) == 0.2
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(disturbed, name), getattr(undisturbed, name), rtol=1e-10, err_msg=name
        )
    assert disturbed.lower_bounds_ == pytest.approx(undisturbed.lower_bounds_, rel=1e-12)


DRIVER = """
import sys, warnings
from daskgmm import GaussianMixture
warnings.simplefilter("ignore")
gm = GaussianMixture(4, random_state=0, tol=0, max_iter=int(sys.argv[4]), verbose=2,
                     verbose_interval=1)
gm.fit(sys.argv[1], checkpoint=sys.argv[2])
gm.save(sys.argv[3])
print("DONE", flush=True)
"""


def test_driver_killed_mid_fit_resumes_from_the_checkpoint(tmp_path):
    data = RandomData(
        np.random.RandomState(1), n_samples=300_000, n_components=4, n_features=8, scale=6
    )
    store = str(tmp_path / "data.zarr")
    z = zarr.create_array(store, shape=data.X["full"].shape, chunks=(25_000, 8), dtype="f8")
    z[:] = data.X["full"]
    ckpt, model = str(tmp_path / "ckpt"), str(tmp_path / "model.zarr")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    max_iter = 40
    cmd = [sys.executable, str(script), store, ckpt, model, str(max_iter)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip().startswith("Iteration 4\t"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    state, _ = Checkpoint(ckpt).load()
    done = state.restarts[0].n_iter
    assert 3 <= done < max_iter

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    iterations = [
        int(line.split()[1])
        for line in rerun.stdout.splitlines()
        if line.strip().startswith("Iteration")
    ]
    assert iterations[0] == done + 1, "the re-run started over"
    assert iterations[-1] == max_iter and "DONE" in rerun.stdout

    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = GaussianMixture(4, random_state=0, tol=0, max_iter=max_iter).fit(store)
    from daskgmm import load

    resumed = load(model)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(resumed, name), getattr(reference, name), rtol=1e-10, err_msg=name
        )
    assert resumed.lower_bounds_ == pytest.approx(reference.lower_bounds_, rel=1e-12)
