"""A GeoTIFF several times larger than a worker's memory limit, predicted to a GeoTIFF.

Writes a 4-band uint16 tiled GeoTIFF (``--size`` pixels square, default 16,000:
2.0 GiB on disk, 3.8 GiB as the float32 pixels the model reads) with a nodata
border in a temporary folder (from a process of its own), fits a model on a
200,000-pixel sample, starts a ``LocalCluster`` of two single-threaded worker
processes with a ``--memory-limit`` each (default 1 GiB, so the raster is 3.8x
one worker's limit and 1.9x both), and runs ``predict_to_geotiff`` on it. A
block is one 512-row tile row of the full width (131 MiB of float32 pixels at
16,000 columns), so a worker needs about its idle memory plus four blocks: 512
MiB workers are too small for this width. Meanwhile every
process's resident memory is sampled every 50 ms: the peak of each worker is
printed against its limit, with the driver's (which writes the file) and the
seconds. Then the label map is checked: its grid is the input's, nodata -1
exactly on the border, and 64 random windows of 256 x 256 pixels equal
``model.predict`` of the same pixels.

    python benchmarks/bench_raster.py [--size 16000] [--memory-limit 1GiB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

CENTRES = np.array([[300, 900, 500, 2000], [1200, 400, 800, 900], [700, 700, 2500, 300],
                    [2000, 1800, 1500, 1200]])  # fmt: skip
BORDER = 100  # pixels of nodata around the scene


def write_raster(path: str, size: int, seed: int = 0) -> None:
    """Four bands of four covers in 250-pixel patches, nodata (0) on a border; written
    in strips of tile rows, so memory stays small."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", height=size, width=size, count=4, dtype="uint16",
                   crs="EPSG:32633", transform=from_origin(300_000.0, 5_000_000.0, 10.0, 10.0),
                   nodata=0, tiled=True, blockxsize=512, blockysize=512, bigtiff="yes")  # fmt: skip
    cols = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 512):
            rows = np.arange(top, min(top + 512, size))
            cover = (np.add.outer(rows // 250, cols // 250) * 7 % 4).astype(int)
            pixels = CENTRES[cover] + rng.normal(0, 60, (len(rows), size, 4))
            pixels = np.clip(pixels, 1, 65535).astype(np.uint16)
            edge = (rows[:, None] < BORDER) | (rows[:, None] >= size - BORDER)
            edge = edge | (cols[None, :] < BORDER) | (cols[None, :] >= size - BORDER)
            pixels[edge] = 0
            dst.write(pixels.transpose(2, 0, 1), window=((top, top + len(rows)), (0, size)))


class ProcessPeaks:
    """Peak resident memory of this process and of each of its descendants."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peaks = interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        for proc in [me, *me.children(recursive=True)]:
            try:
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), proc.memory_info().rss)
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> ProcessPeaks:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16_000)
    parser.add_argument("--memory-limit", default="1GiB")
    parser.add_argument("--keep", help="keep the files in this (new) folder")
    args = parser.parse_args()

    import dask
    import rasterio
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    from daskgmm import GaussianMixture
    from daskgmm.cluster import LOCAL_CLUSTER_CONFIG

    folder = args.keep or tempfile.mkdtemp(prefix="daskgmm-bench-raster-")
    os.makedirs(folder, exist_ok=True)
    try:
        scene = os.path.join(folder, "scene.tif")
        tic = time.perf_counter()
        import multiprocessing

        writer = multiprocessing.get_context("spawn").Process(
            target=write_raster, args=(scene, args.size)
        )  # in a process of its own: this one's memory is measured later
        writer.start()
        writer.join()
        limit = parse_bytes(args.memory_limit)
        pixels = args.size**2
        print(f"raster: {args.size} x {args.size} x 4 uint16, {os.path.getsize(scene) / 2**30:.2f}"
              f" GiB on disk, {pixels * 16 / 2**30:.2f} GiB as float32 pixels; written in "
              f"{time.perf_counter() - tic:.1f} s")  # fmt: skip
        rng = np.random.default_rng(1)
        with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(scene) as src:
            rows = rng.integers(BORDER, args.size - BORDER, 400)
            sample = np.concatenate([src.read(window=((r, r + 1), (BORDER, args.size - BORDER)))
                                     [:, 0].T for r in rows[:40]]).astype(np.float32)  # fmt: skip
        gm = GaussianMixture(4, covariance_type="full", missing="marginalize", random_state=0)
        gm.fit(sample[rng.permutation(len(sample))[:200_000]])
        labels_path = os.path.join(folder, "labels.tif")
        with (
            dask.config.set(LOCAL_CLUSTER_CONFIG),
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         memory_limit=args.memory_limit, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            workers = client.run(os.getpid)
            idle = client.run(lambda: psutil.Process().memory_info().rss)
            before = psutil.Process().memory_info().rss
            with ProcessPeaks() as peaks:
                tic = time.perf_counter()
                info = gm.predict_to_geotiff(scene, labels_path)
                seconds = time.perf_counter() - tic
            alive = client.run(os.getpid)
        print(f"predict_to_geotiff: {info['blocks']} blocks in {seconds:.1f} s "
              f"({pixels / seconds / 1e6:.1f} Mpixel/s)")  # fmt: skip
        for address, pid in sorted(workers.items()):
            peak = peaks.peaks.get(pid, 0)
            print(f"worker {address}: idle {idle[address] / 2**20:.0f} MiB, peak "
                  f"{peak / 2**20:.0f} MiB of its "
                  f"{limit / 2**20:.0f} MiB limit ({peak / limit:.0%}); "
                  f"raster / limit = {pixels * 16 / limit:.1f}x")  # fmt: skip
        print(f"workers restarted: {sorted(alive.values()) != sorted(workers.values())}")
        print(f"driver (writes the file, runs the scheduler): {before / 2**20:.0f} MiB before, "
              f"peak {peaks.peaks[os.getpid()] / 2**20:.0f} MiB")  # fmt: skip
        with rasterio.open(scene) as src, rasterio.open(labels_path) as out:
            assert out.crs == src.crs and out.transform == src.transform
            assert (out.width, out.height, out.nodata) == (src.width, src.height, -1)
            n = args.size
            edge = out.read(1, window=((0, BORDER + 2), (0, n)))
            assert (edge[:BORDER] == -1).all() and (edge[BORDER:, BORDER : n - BORDER] >= 0).all()
            for _ in range(64):
                r, c = rng.integers(0, n - 256, 2)
                window = ((r, r + 256), (c, c + 256))
                values = src.read(window=window).astype(np.float32)
                values = np.where(values == 0, np.nan, values).transpose(1, 2, 0).reshape(-1, 4)
                expected = gm.predict(values).reshape(256, 256)
                np.testing.assert_array_equal(out.read(1, window=window), expected)
        print("checked: the input's grid, -1 exactly on the border, 64 windows equal "
              "model.predict")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(folder)


if __name__ == "__main__":
    sys.exit(main())
