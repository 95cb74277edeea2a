"""Which scheduler runs a pass, and how many BLAS threads a task may use.

Kept apart from the graph builder (:mod:`daskgmm._reduction`): the data layer,
the estimator and the output writer ask these questions too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import dask

__all__ = ["active_client", "blas_threads_guard", "one_blas_thread"]


def active_client() -> Any | None:
    """The ``distributed.Client`` that ``dask.compute`` would use now, or None."""
    owner = getattr(dask.base.get_scheduler(), "__self__", None)
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    return owner if isinstance(owner, Client) else None


def blas_threads_guard(*collections: Any) -> contextlib.AbstractContextManager:
    """One BLAS thread per task while the local threaded scheduler runs several tasks.

    Dask's threads and BLAS's threads would otherwise oversubscribe the cores
    (see benchmarks/README.md, scheduling measurements). Pass the collections about
    to be computed: with no scheduler configured, they pick the threaded one.
    Distributed workers get their thread limits from the nanny's environment.
    """
    import dask.threaded

    if dask.base.get_scheduler(collections=list(collections) or None) is not dask.threaded.get:
        return contextlib.nullcontext()
    if (dask.config.get("num_workers", None) or os.cpu_count() or 1) <= 1:
        return contextlib.nullcontext()
    return one_blas_thread()


def one_blas_thread() -> contextlib.AbstractContextManager:
    """Limit this process's BLAS to one thread for the duration of the context.

    Besides :func:`blas_threads_guard`, the driver's own linear algebra between
    passes (M-step, E-step constants) runs under it: its matrices are tiny, but a
    multithreaded BLAS call there left OpenBLAS's threads spinning into the
    next pass, taking a core from its tasks on the same machine.

    Looking the BLAS libraries up costs a ctypes callback per loaded shared
    library, three times per EM iteration, so the lookup is kept until
    ``sys.modules`` changes: a BLAS loaded later comes with an import
    (see benchmarks/README.md, scheduling measurements).
    """
    global _blas_controller
    from threadpoolctl import ThreadpoolController

    key = len(sys.modules)
    cached = _blas_controller
    if cached is None or cached[0] != key:
        cached = _blas_controller = (key, ThreadpoolController())
    return cached[1].limit(limits=1, user_api="blas")


_blas_controller: tuple[int, Any] | None = None
