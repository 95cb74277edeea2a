"""What a kill, a full disk, a lost scheduler or a second job must never break.

Real processes throughout: `daskgmm` commands in subprocesses against a real
`dask scheduler` and `dask worker`s on 127.0.0.1, killed with SIGKILL at many
moments (bounded in number and time), then re-run to completion.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

from daskgmm import GaussianMixture, load
from daskgmm._checkpoint import Checkpoint, FitState
from daskgmm._state import EMResult

from .conftest import RandomData
from .test_cli import ENV, _run, scheduler_address  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def _popen(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "daskgmm", *map(str, args)],
        env=env or ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _litter(folder):
    """What a finished job must not leave: temporaries, locks, aside copies."""
    return sorted(
        os.path.relpath(os.path.join(top, name), folder)
        for top, dirs, files in os.walk(folder)
        for name in files + dirs
        if re.search(r"\.(tmp|old|stale|daskgmm-lock)$|\.daskgmm-progress$", name)
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """1.2e5 x 8 float64 in 4000-row chunks: 30 blocks for predict, a few seconds of EM."""
    tmp = tmp_path_factory.mktemp("crash")
    data = RandomData(np.random.RandomState(5), n_samples=120_000, n_components=4, n_features=8)
    z = zarr.create_array(str(tmp / "x.zarr"), shape=(120_000, 8), chunks=(4000, 8), dtype="f8")
    z[:] = data.X["full"]
    GaussianMixture(4, random_state=0).fit(data.X["full"][::20]).save(tmp / "m.zarr")
    return tmp


CHUNKS = {**ENV, "DASK_DASKGMM__CHUNK_BYTES": str(4000 * 8 * 8)}  # one block per chunk


def test_predict_killed_at_any_moment_is_completed_by_a_rerun(scheduler_address, store, tmp_path):  # noqa: F811
    args = ["predict", store / "m.zarr", store / "x.zarr", "--proba", "--score",
            "--scheduler", scheduler_address]  # fmt: skip
    ref = _run(*args, "-o", tmp_path / "ref.zarr", env=CHUNKS)
    assert ref.returncode == 0, ref.stderr
    reference = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    # from before the output exists, through its creation, into the block writes
    for delay in (0.0, 1.0, 2.0, 3.2):
        out = tmp_path / f"out-{delay}.zarr"
        proc = _popen(*args, "-o", out, env=CHUNKS)
        time.sleep(delay)
        _kill(proc)
        rerun = _run(*args, "-o", out, env=CHUNKS)
        assert rerun.returncode == 0, (delay, rerun.stderr)
        got = zarr.open_group(str(out), mode="r")
        for name in ("label", "probability", "log_density"):
            np.testing.assert_array_equal(got[name][:], reference[name][:], err_msg=name)
        assert got.attrs["daskgmm"]["complete"] is True
    assert _litter(tmp_path) == []


def test_fit_killed_at_any_moment_resumes_to_the_same_model(scheduler_address, store, tmp_path):  # noqa: F811
    args = ["fit", store / "x.zarr", "-k", 4, "--tol", 0, "--max-iter", 25, "--random-state", 2,
            "--cache", "false", "--scheduler", scheduler_address]  # fmt: skip
    ref = _run(*args, "-o", tmp_path / "ref.zarr")
    assert ref.returncode == 0, ref.stderr
    reference = load(tmp_path / "ref.zarr")
    for delay in (0.0, 2.0, 4.5):
        work = tmp_path / f"run-{delay}"
        work.mkdir()
        proc = _popen(*args, "-o", work / "m.zarr", "--checkpoint", work / "ckpt")
        time.sleep(delay)
        _kill(proc)
        rerun = _run(*args, "-o", work / "m.zarr", "--checkpoint", work / "ckpt")
        assert rerun.returncode == 0, (delay, rerun.stderr)
        model = load(work / "m.zarr")
        np.testing.assert_allclose(model.means_, reference.means_, rtol=1e-10, err_msg=delay)
        assert model.lower_bounds_ == pytest.approx(reference.lower_bounds_, rel=1e-10)
        states = [p for p in os.listdir(work / "ckpt") if p.startswith("state-")]
        assert states == [json.loads((work / "ckpt" / "LATEST").read_text())["state"]]
    assert _litter(tmp_path) == []


SAVER = """
import sys, numpy as np
from daskgmm import GaussianMixture
X = np.random.RandomState(0).normal(size=(400, 3))
models = [GaussianMixture(k, random_state=0, max_iter=5).fit(X) for k in (2, 3)]
print("READY", flush=True)
i = 0
while True:
    models[i % 2].save(sys.argv[1], overwrite=True)
    i += 1
"""


def test_a_save_killed_at_any_moment_leaves_a_whole_model(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    path = tmp_path / "m.zarr"
    rng = np.random.RandomState(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(5):
            proc = subprocess.Popen([sys.executable, str(script), str(path)],
                                    stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
            assert proc.stdout.readline().strip() == "READY"
            time.sleep(rng.uniform(0.05, 0.6))
            _kill(proc)
            assert load(path).n_components in (2, 3)  # old or new, never half
        GaussianMixture(2, random_state=0, max_iter=5).fit(
            np.random.RandomState(0).normal(size=(400, 3))
        ).save(path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["m.zarr", "saver.py"]  # litter cleaned


def test_a_full_disk_during_a_checkpoint_save_keeps_the_last_state(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    try:
        X = np.random.RandomState(0).normal(size=(300, 20))
        params = GaussianMixture(6, random_state=0, max_iter=2).fit(X)._params
        rng = np.random.RandomState(0).get_state()

        def state(n):
            return FitState((EMResult(params, n, -1.0, (-1.0,) * n, False, 0),), rng)

        ckpt = Checkpoint(disk / "ckpt")
        ckpt.save(state(1), {"data": {}})
        filler = disk / "filler"
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
        try:  # fill the disk, then leave less room than one state takes
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(filler, os.path.getsize(filler) - 8192)
        with pytest.raises(OSError, match="No space left"):
            ckpt.save(state(2), {"data": {}})
        assert sorted(os.listdir(disk / "ckpt")) == ["LATEST", _latest(disk / "ckpt")]
        assert ckpt.load()[0].restarts[0].n_iter == 1  # the last whole state
        os.remove(filler)
        ckpt.save(state(3), {"data": {}})  # once there is room again
        assert ckpt.load()[0].restarts[0].n_iter == 3
        assert sorted(os.listdir(disk / "ckpt")) == ["LATEST", _latest(disk / "ckpt")]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _latest(ckpt):
    return json.loads((ckpt / "LATEST").read_text())["state"]


# ------------------------------------------------------------ two jobs at once
def _wait_for(path, timeout=60):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_job_on_one_checkpoint_or_output_is_refused(scheduler_address, store, tmp_path):  # noqa: F811
    fit = ["fit", store / "x.zarr", "-k", 4, "--tol", 0, "--max-iter", 400, "--cache", "false",
           "-o", tmp_path / "m.zarr", "--checkpoint", tmp_path / "ckpt",
           "--scheduler", scheduler_address]  # fmt: skip
    first = _popen(*fit)
    try:
        _wait_for(f"{tmp_path / 'ckpt'}.daskgmm-lock")
        first.send_signal(signal.SIGSTOP)  # holds the lock, alive, going nowhere
        second = _run(*fit)
        assert second.returncode == 3, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("daskgmm: refused: Checkpoint ") and "is in use by another" in line
        assert f"pid {first.pid}" in line
    finally:
        _kill(first)
    # the killed holder's lock is taken over by the next run, which resumes
    lock = json.loads(open(f"{tmp_path / 'ckpt'}.daskgmm-lock").read())
    assert lock["pid"] == first.pid
    third = _popen(*fit)
    try:
        deadline = time.time() + 60
        while _lock_pid(f"{tmp_path / 'ckpt'}.daskgmm-lock") != third.pid:
            assert third.poll() is None, third.stderr.read()
            assert time.time() < deadline, "the killed job's lock was not taken over"
            time.sleep(0.05)
    finally:
        _kill(third)

    predict = ["predict", store / "m.zarr", store / "x.zarr", "--proba", "--score",
               "-o", tmp_path / "out.zarr", "--scheduler", scheduler_address]  # fmt: skip
    slow = CHUNKS
    first = _popen(*predict, env=slow)
    try:
        _wait_for(f"{tmp_path / 'out.zarr'}.daskgmm-lock")
        first.send_signal(signal.SIGSTOP)
        second = _run(*predict, env=slow)
        assert second.returncode == 3 and "Output " in second.stderr
        assert "is in use by another daskgmm job" in second.stderr
    finally:
        _kill(first)
    done = _run(*predict, env=slow)
    assert done.returncode == 0, done.stderr
    assert "Taking over the lock" in done.stderr
    assert not os.path.exists(f"{tmp_path / 'out.zarr'}.daskgmm-lock")


def _lock_pid(path):
    try:
        return json.loads(open(path).read())["pid"]
    except (OSError, ValueError):  # being replaced
        return None


# ------------------------------------------------------------- a lost scheduler
def test_a_lost_scheduler_ends_the_job_with_one_line(store, tmp_path):
    sched_file = tmp_path / "scheduler.json"
    scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(sched_file)]  # fmt: skip
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    procs = [subprocess.Popen(scheduler, **quiet)]
    try:
        _wait_for(sched_file)
        time.sleep(0.5)
        worker = [DASK, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                  "--no-dashboard"]  # fmt: skip
        procs.append(subprocess.Popen(worker, **quiet))
        fit = subprocess.Popen(
            [sys.executable, "-m", "daskgmm", "fit", str(store / "x.zarr"), "-k", "4", "--tol",
             "0", "--max-iter", "1000", "--cache", "false", "-o", str(tmp_path / "m.zarr"),
             "--scheduler-file", str(sched_file)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for line in fit.stderr:
            if "iteration 3:" in line:
                break
        procs[0].send_signal(signal.SIGKILL)
        rest = fit.stderr.read()
        assert fit.wait(timeout=120) == 4, rest
        assert rest.strip().splitlines()[-1] == (
            "daskgmm: cluster error: lost the connection to the Dask scheduler; re-run the job "
            "(a fit with --checkpoint resumes, predict completes what was written)"
        )
        assert "Traceback" not in rest
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
