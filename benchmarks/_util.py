"""Shared helpers of the benchmarks: peak memory of a process tree, GEMM rates, medians."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import psutil


class PeakMemory:
    """Samples the summed RSS of this process and all its children (workers, nannies)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        me = psutil.Process(os.getpid())
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def gemm_rate(n: int, k: int, m: int, dtype, repeats: int = 15) -> float:
    """Measured FLOP/s of an (n, k) @ (k, m) product in ``dtype`` (fastest of repeats).

    The machine's limit, so the fastest repeat, not the median: one product takes
    milliseconds, and a median of five once read 3 GFLOP/s instead of ~30 when
    the machine was busy for a moment (fourth session's N=1e6 grid).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal((k, m)).astype(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - tic)
    return 2.0 * n * k * m / min(times)


def full_iteration_flops(n_samples: int, n_components: int, n_features: int) -> float:
    """GEMM flops of one full-covariance EM iteration: E-step plus second moments."""
    return 2 * 2.0 * n_samples * n_components * n_features**2


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
