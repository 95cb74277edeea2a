"""Connecting to, or starting, the Dask cluster a job runs on.

The library itself never builds cluster machinery: it runs on whatever
scheduler is active. This module is for the command line and scripts:
``--scheduler tcp://host:8786`` (or ``DASK_SCHEDULER_ADDRESS``) connects to a
running scheduler; ``--cluster local[:N]`` starts a ``LocalCluster`` of N
single-threaded worker processes (default: one per core).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from distributed import Client, LocalCluster

__all__ = ["connect", "parse_cluster"]

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


@contextlib.contextmanager
def connect(scheduler: str | None = None, cluster: str = "local") -> Iterator[Client]:
    """A ``distributed.Client`` for the job, closed (with any cluster it started) on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler; defaults to ``$DASK_SCHEDULER_ADDRESS``.
    cluster : str, default='local'
        Cluster to start when no scheduler is given: ``local[:N]``.
    """
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        logger.info("Connecting to the scheduler at %s", address)
        with Client(address) as client:
            yield client
        return
    kind, n_workers = parse_cluster(cluster)
    if kind != "local":
        raise ValueError(f"Cluster kind {kind!r} is not supported yet; use local[:N].")
    n_workers = n_workers or os.cpu_count() or 1
    logger.info("Starting a LocalCluster of %d single-threaded worker processes", n_workers)
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        Client(local) as client,
    ):
        yield client
