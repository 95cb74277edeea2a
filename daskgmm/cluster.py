"""Connecting to, or starting, the Dask cluster a job runs on.

The library itself never builds cluster machinery: it runs on whatever
scheduler is active. This module is for the command line and scripts:

- ``--scheduler tcp://host:8786`` (or ``$DASK_SCHEDULER_ADDRESS``, which the Dask
  Kubernetes operator sets in a ``DaskJob``'s runner pod) connects to a running
  scheduler;
- ``--cluster local[:N]`` starts a ``LocalCluster`` of N single-threaded worker
  processes (default: one per core);
- ``--cluster slurm[:N]`` / ``pbs[:N]`` start N batch jobs of workers with
  dask-jobqueue, configured the standard way (``~/.config/dask/jobqueue.yaml``,
  see ``deploy/slurm``), ``pip install 'daskgmm[slurm]'`` / ``[pbs]``;
- ``--cluster kubernetes[:N]`` creates a ``DaskCluster`` of N workers through the
  Dask Kubernetes operator (``pip install 'daskgmm[kubernetes]'``); its image and
  resources come from the ``kubernetes`` section of the Dask config.

The optional packages are imported only when their kind is used.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import dask
from distributed import Client, LocalCluster

__all__ = ["LOCAL_CLUSTER_CONFIG", "ClusterError", "connect", "parse_cluster", "tls_security"]

logger = logging.getLogger(__name__)


def parse_cluster(spec: str) -> tuple[str, int | None]:
    """Split ``'kind[:N]'`` into its kind and optional worker count.

    Raises
    ------
    ValueError
        For an unknown kind or a worker count that is not a positive integer.
    """
    kind, _, count = spec.partition(":")
    kinds = ("local", "slurm", "pbs", "kubernetes")
    if kind not in kinds:
        raise ValueError(f"Unknown cluster {spec!r}; expected one of {', '.join(kinds)} [:N].")
    if not count:
        return kind, None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"Worker count in {spec!r} must be a positive integer.")
    return kind, int(count)


#: Dask settings of the ``LocalCluster`` that :func:`connect` starts: no
#: statistical profiler in the workers (it samples every thread's stack every
#: 10 ms, and this cluster has no dashboard to show it), and the event loops'
#: health check and the system monitor at a tenth and a quarter of their
#: default rates: on 2 cores the cluster's processes share them with the
#: compute (see benchmarks/README.md, scheduling measurements). The memory monitor keeps its
#: default: it is what pauses or restarts a worker running out of memory.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
}


class ClusterError(RuntimeError):
    """The cluster did not come up (no scheduler, no worker in time) or went away."""


def _client(target: Any, what: str, **kw: Any) -> Client:
    try:
        return Client(target, **kw)
    except (OSError, TimeoutError, TypeError, ValueError) as err:  # TLS mismatches: the latter
        raise ClusterError(f"cannot connect to {what}: {str(err).splitlines()[0]}") from None


def tls_security(ca_file: str, cert: str, key: str) -> Any:
    """Dask ``Security`` for mutual TLS with one CA, certificate and key for every role
    (scheduler, workers, client), encryption required."""
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=ca_file,
        **{f"tls_{role}_{part}": path for role in ("client", "scheduler", "worker")
           for part, path in (("cert", cert), ("key", key))},
    )  # fmt: skip


def _wait_for_workers(client: Client, timeout: float, what: str) -> None:
    """Wait until a worker has joined: a batch queue that never starts the workers (a
    failed submission) must end the job with one line, not hang it."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(
            f"no Dask worker joined {what} within {timeout:g} s (--worker-timeout); check that "
            "the worker jobs were submitted and started (queue, logs)"
        ) from None


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    cluster: str = "local",
    *,
    scheduler_file: str | None = None,
    worker_timeout: float = 600.0,
    dashboard: bool = False,
    quiet_workers: bool = True,
    security: Any = None,
) -> Iterator[Client]:
    """A ``distributed.Client`` for the job, closed (with any cluster it started) on exit.

    It returns once at least one worker has joined, so that decisions taken from
    the cluster's size (``cache='auto'``, blocks per worker) see real workers.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler; defaults to ``$DASK_SCHEDULER_ADDRESS``.
    cluster : str, default='local'
        Cluster to start when no scheduler is given: ``local[:N]`` (with
        :data:`LOCAL_CLUSTER_CONFIG`), ``slurm[:N]``, ``pbs[:N]`` or
        ``kubernetes[:N]``.
    scheduler_file : str, optional
        The JSON file a running scheduler wrote (``dask scheduler --scheduler-file``).
    worker_timeout : float, default=600
        Seconds to wait for the first worker before raising :class:`ClusterError`.
    dashboard : bool, default=False
        Serve the dashboard of a local cluster (on 127.0.0.1, a free port).
    quiet_workers : bool, default=True
        Local workers log errors only: a task's failure is reported once, by
        the command, not as a worker's traceback too.
    security : distributed.security.Security, optional
        TLS for every connection (:func:`tls_security`): the client's, and a
        started cluster's scheduler and workers. Without it, Dask's own
        configuration applies (``distributed.comm.tls.*``), which by default is
        plain ``tcp://``: any local user can then submit work to the cluster.

    Raises
    ------
    ClusterError
        No scheduler at the address, or no worker within ``worker_timeout``.
    """
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if scheduler_file and not address:
        if not os.path.isfile(scheduler_file):
            raise ValueError(f"scheduler file {scheduler_file!r} does not exist")
        logger.info("Connecting to the scheduler of %s", scheduler_file)
        with _client(
            None, scheduler_file, scheduler_file=scheduler_file, security=security
        ) as client:
            _wait_for_workers(client, worker_timeout, f"the scheduler of {scheduler_file}")
            yield client
        return
    if address:
        logger.info("Connecting to the scheduler at %s", address)
        with _client(address, f"the scheduler at {address}", security=security) as client:
            _wait_for_workers(client, worker_timeout, f"the scheduler at {address}")
            yield client
        return
    kind, n_workers = parse_cluster(cluster)
    if kind != "local":
        with (
            _batch_cluster(kind, n_workers, security) as batch,
            Client(batch, security=security) as client,
        ):
            _wait_for_workers(client, worker_timeout, f"the {kind} cluster")
            yield client
        return
    n_workers = n_workers or os.cpu_count() or 1
    logger.info("Starting a LocalCluster of %d single-threaded worker processes", n_workers)
    # The scheduler and the nannies read the settings as they start; the
    # workers get theirs from their nanny, which otherwise would hand a
    # restarted worker the settings of the moment (after this block: the defaults).
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        local = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
            config=LOCAL_CLUSTER_CONFIG,
            silence_logs=logging.CRITICAL if quiet_workers else logging.WARNING,
            **({} if security is None else {"security": security, "protocol": "tls://"}),
        )
    with local, Client(local, security=security) as client:
        _wait_for_workers(client, worker_timeout, "the local cluster")
        yield client


_EXTRAS = {
    "slurm": ("dask_jobqueue", "slurm"),
    "pbs": ("dask_jobqueue", "pbs"),
    "kubernetes": ("dask_kubernetes", "kubernetes"),
}


def _import_for(kind: str):
    module, extra = _EXTRAS[kind]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"--cluster {kind} needs the {module.replace('_', '-')} package: "
            f"pip install 'daskgmm[{extra}]'"
        ) from None


@contextlib.contextmanager
def _batch_cluster(kind: str, n: int | None, security: Any = None) -> Iterator[Any]:
    """A dask-jobqueue or Dask-operator cluster, closed on exit.

    With ``security``, dask-jobqueue's scheduler and workers use it (the files must
    be on a file system the compute nodes see). The Dask operator takes TLS from
    its manifests instead (``deploy/kubernetes/daskjob-tls.yaml``).
    """
    _import_for(kind)
    if kind in ("slurm", "pbs"):
        from dask_jobqueue import PBSCluster, SLURMCluster

        cls = SLURMCluster if kind == "slurm" else PBSCluster
        logger.info("Submitting %d %s job(s) of Dask workers (dask-jobqueue config)", n or 1, kind)
        with cls(**({} if security is None else {"security": security})) as cluster:
            cluster.scale(jobs=n or 1)
            yield cluster
        return
    from dask_kubernetes.operator import KubeCluster

    logger.info("Creating a DaskCluster of %d workers through the Dask operator", n or 2)
    with KubeCluster(name="daskgmm", n_workers=n or 2) as cluster:
        yield cluster
