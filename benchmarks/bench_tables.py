"""A 10-million-row Parquet customer table through the command line, end to end.

Generates the table (``--rows``, default 10 million: an id, five numeric
columns on very different scales and a string column, in 8 files of 128k-row
groups) in a temporary folder, starts a real ``dask scheduler`` and two
single-threaded ``dask worker`` processes (``--memory-limit`` each) on
127.0.0.1, and runs::

    daskgmm fit TABLE --columns ... -k 5 --standardize -o model.zarr
    daskgmm predict model.zarr TABLE --id customer_id --proba -o segments/

Prints the seconds and the peak memory of all processes (scheduler, workers,
the command, this script) during each command, against the table's size, then
checks every row: the output holds each id once, and its label equals
``model.predict`` of the same row (joined by id), file by file.

    python benchmarks/bench_tables.py [--rows 10000000] [--memory-limit 2GB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from _util import PeakMemory, fmt_bytes
from customer_segmentation import COLUMNS, write_customers

from daskgmm._table_output import check_table_target

DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def start_cluster(folder: str, memory_limit: str) -> tuple[str, list[subprocess.Popen]]:
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    sched_file = os.path.join(folder, "scheduler.json")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                sched_file,
            ],
            **quiet,
        )
    ]
    deadline = time.monotonic() + 60
    while not os.path.exists(sched_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    "--scheduler-file",
                    sched_file,
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    memory_limit,
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                **quiet,
            )
        )
    return sched_file, procs


def daskgmm(*args: str) -> float:
    tic = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "daskgmm", *args, "-q"], capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"daskgmm {args[0]} failed: {out.stderr}")
    return time.perf_counter() - tic


def check_every_row(table: str, segments: str, model: str) -> int:
    """Each id once in the output, and its label that of model.predict, file by file."""
    import pandas as pd
    import pyarrow.parquet as pq

    from daskgmm import load

    gm = load(model)
    written = pd.read_parquet(segments, columns=["customer_id", "label"])
    if not written["customer_id"].is_unique:
        raise SystemExit("an id is written twice")
    written = written.set_index("customer_id")["label"]
    checked = 0
    for name in sorted(os.listdir(table)):
        part = pq.read_table(os.path.join(table, name), columns=["customer_id", *COLUMNS])
        frame = part.to_pandas()
        expected = gm.predict(frame[COLUMNS])  # by column name
        got = written.reindex(frame["customer_id"]).to_numpy()
        if np.any(got != expected):
            raise SystemExit(f"{name}: {int(np.sum(got != expected))} labels differ")
        checked += len(frame)
    if checked != len(written):
        raise SystemExit(f"{len(written)} rows written for {checked} in the table")
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--memory-limit", default="2GB", help="per worker")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args()

    folder = args.keep or tempfile.mkdtemp(prefix="daskgmm-bench-tables-")
    table = os.path.join(folder, "customers")
    if not os.path.exists(table):
        tic = time.perf_counter()
        write_customers(table, args.rows, files=8)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - tic:.1f} s")
    on_disk = sum(os.path.getsize(os.path.join(table, f)) for f in os.listdir(table))
    features = args.rows * len(COLUMNS) * 8
    model, segments = os.path.join(folder, "model.zarr"), os.path.join(folder, "segments")
    sched_file, procs = start_cluster(folder, args.memory_limit)
    try:
        with PeakMemory() as idle:
            time.sleep(2)
        with PeakMemory() as fit_mem:
            fit_s = daskgmm("fit", table, "--columns", ",".join(COLUMNS), "-k", "5",
                            "--standardize", "-o", model, "--overwrite",
                            "--scheduler-file", sched_file)  # fmt: skip
        if check_table_target(segments) is not None:  # refuses a folder daskgmm did not write
            shutil.rmtree(segments)  # an earlier run's output (--keep): timed writes anew
        with PeakMemory() as predict_mem:
            predict_s = daskgmm("predict", model, table, "--id", "customer_id", "--proba",
                                "-o", segments, "--scheduler-file", sched_file)  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    rows = check_every_row(table, segments, model)
    print(
        f"table: {args.rows:,} rows, {fmt_bytes(on_disk)} of Parquet on disk, "
        f"{fmt_bytes(features)} of float64 features; 2 workers x 1 thread, "
        f"--memory-limit {args.memory_limit} each; all processes idle: {fmt_bytes(idle.peak)}"
    )
    print(f"fit (--standardize, K=5): {fit_s:.1f} s, peak memory {fmt_bytes(fit_mem.peak)}")
    print(
        f"predict (--id, --proba, Parquet out): {predict_s:.1f} s, "
        f"peak memory {fmt_bytes(predict_mem.peak)}"
    )
    print(f"checked: all {rows:,} rows written once, labels equal model.predict by id")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
