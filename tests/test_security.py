"""TLS: a job on a cluster that speaks only mutual TLS works with the job's certificates,
and a plaintext or certificate-less client is refused (certificates made in the test)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from daskgmm import GaussianMixture, load

from .conftest import RandomData
from .test_cli import ENV, _run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
FAST = {**ENV, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"}


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, and one certificate for 127.0.0.1 signed by it (scheduler, workers, client)."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=daskgmm-test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sign = ["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key"]
    _openssl(*sign, "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf",
             cwd=d)  # fmt: skip
    return {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


@pytest.fixture(scope="module")
def tls_cluster(certs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls-cluster")
    sched_file = tmp / "scheduler.json"
    tls = ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    procs = [subprocess.Popen([DASK, "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(sched_file), *tls], **quiet)]  # fmt: skip
    for _ in range(300):
        if sched_file.exists() and sched_file.stat().st_size:
            break
        time.sleep(0.1)
    worker = [DASK, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1"]
    procs.append(subprocess.Popen([*worker, "--no-dashboard", *tls], **quiet))
    yield sched_file, json.loads(sched_file.read_text())["address"]
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)  # SIGINT: ~8 s to close
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _options(certs):
    return ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cert"], "--tls-key", certs["key"]]


def test_a_job_runs_over_tls_and_plaintext_or_certificateless_clients_are_refused(
    certs, tls_cluster, tmp_path
):
    sched_file, address = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    X = RandomData(np.random.RandomState(0), n_samples=4000, n_components=3, n_features=3).X["full"]
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(1000, 3), dtype="f8")
    z[:] = X
    fit = _run("fit", tmp_path / "x.zarr", "-k", 3, "-o", tmp_path / "m.zarr",
               "--scheduler-file", sched_file, *_options(certs), env=FAST)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    np.testing.assert_array_equal(
        load(tmp_path / "m.zarr").means_,
        GaussianMixture(3, random_state=0).fit(str(tmp_path / "x.zarr")).means_,
    )
    predict = _run("predict", tmp_path / "m.zarr", tmp_path / "x.zarr", "-o",
                   tmp_path / "labels.zarr", "--scheduler", address, *_options(certs),
                   env=FAST)  # fmt: skip
    assert predict.returncode == 0, predict.stderr

    # no certificates, or plain tcp:// to the TLS port: refused, one line, exit 4
    plain = address.replace("tls://", "tcp://")
    for how in (["--scheduler-file", sched_file], ["--scheduler", address], ["--scheduler", plain]):
        res = _run("fit", tmp_path / "x.zarr", "-k", 3, "-o", tmp_path / "other.zarr", *how,
                   env=FAST)  # fmt: skip
        assert res.returncode == 4, res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("daskgmm: cluster error: cannot")
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "other.zarr").exists()

    # a client that trusts the CA but shows no certificate of its own: the scheduler
    # ends the handshake (mutual TLS)
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=certs["ca"])
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(raw, server_hostname=host) as conn:
                conn.sendall(b"\0" * 8)
                conn.recv(1)  # TLS 1.3 reports the refused client certificate here


def test_tls_options_come_together_and_a_local_cluster_uses_them(certs, tmp_path):
    X = RandomData(np.random.RandomState(1), n_samples=2000, n_components=2, n_features=2).X["full"]
    np.save(tmp_path / "x.npy", X)
    res = _run("fit", tmp_path / "x.npy", "-k", 2, "-o", tmp_path / "m.zarr",
               "--tls-ca-file", certs["ca"], "--scheduler", "tcp://127.0.0.1:9")  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "daskgmm: error: TLS needs --tls-ca-file, --tls-cert and --tls-key; missing "
        "--tls-cert, --tls-key"
    )
    res = _run("fit", tmp_path / "x.npy", "-k", 2, "-o", tmp_path / "m.zarr", "--cluster",
               "local:1", "-v", *_options(certs))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "tls://127.0.0.1:" in res.stderr  # the started cluster speaks TLS
