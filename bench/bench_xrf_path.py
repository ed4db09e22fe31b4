"""Benchmark of the µ-XRF data path: raw HDF5 scan -> element map -> Richardson-Lucy.

A standalone script (not a test). It synthesises one raw scan of 182 x 162 points (raster),
4 detector elements x 4096 channels (483 M channel counts; uint32 as detectors deliver them,
1.8 GiB in memory) with :func:`asirp.xrf.synthetic.synthetic_scan` (a Cu mesh, Fe and Zn maps,
Ar from air, elastic and Compton scatter, a flat background: about 1 400 counts per point and
element, mean 0.33 counts per channel, most channels 0 or 1), writes it once with
:func:`asirp.xrf.write_raw_scan` (default layout: counts narrowed to uint16, chunks of
2048 points x 4 elements x 64 channels, no compression, no checksum; 0.9 GiB) into a temporary
folder, then times, as the median of ``--repeats`` runs (default 5) after one warm-up:

1. ``open + per-point``: opening the file, checking the layout, reading positions, I0, live and
   real time (:class:`asirp.xrf.RawScanFile`, :meth:`~asirp.xrf.RawScanFile.read_points`);
2. ``ROI read + channel-adding``: the Cu K-alpha and Ar K-alpha sums per point and element,
   reading only the chunks that hold those channels
   (:meth:`~asirp.xrf.RawScanFile.roi_sums`: raw chunk reads and one reduction per chunk);
   for information also the same slabs read through an HDF5 selection
   (:meth:`~asirp.xrf.RawScanFile.read_spectra`) and then summed in memory;
3. ``normalise + grid``: dead-time correction, normalisation by I0, sum over elements, grid
   inference and map assembly (:func:`asirp.xrf.maps.build_map` on the ROI sums);
4. ``RL x10``: ``asirp.restore(map, "richardson_lucy", iterations=10, stop="fixed",
   beam_fwhm_um=50, pixel_um=10, device="cpu")`` with torch's default threads, and with one
   thread (on a busy machine two threads on two cores wait for each other);

then the total, and ``build_map(path, "Cu", normalize_by="i0", dead_time=True)`` end to end.
The header prints the load average: other work on the same cores slows every stage.

**Page cache.** The file has just been written, so the timed reads find it in the operating
system's page cache ("warm"): that is the case of a map made right after its scan. With
``--cold``, before every repeat the script asks the kernel to drop the file's cached pages
(``posix_fadvise(POSIX_FADV_DONTNEED)``, this file only) and reports those times too; they
depend on the disk.

``--layouts`` also compares spectra layouts (stored dtype, chunk channels, compression,
checksum): file size, write time and the ROI read time, warm and cold.

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_xrf_path.py                 # about a minute (synthesis)
    .venv/bin/python bench/bench_xrf_path.py --cold --layouts
    .venv/bin/python bench/bench_xrf_path.py --quick         # 46 x 41 points, a few seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import asirp
from asirp.phantoms import copper_mesh
from asirp.xrf import RawScanFile, argon_roi, element_roi, write_raw_scan
from asirp.xrf.maps import build_map
from asirp.xrf.raw import ROISums
from asirp.xrf.synthetic import synthetic_scan


def _median_s(function: Callable[[], object], repeats: int, before: Callable[[], None]) -> float:
    before()
    function()  # warm-up
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _drop_cache(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a 46 x 41 point scan")
    parser.add_argument("--cold", action="store_true", help="also time with the file uncached")
    parser.add_argument("--layouts", action="store_true", help="compare HDF5 layouts")
    parser.add_argument("--keep", metavar="FILE", help="also copy the raw file here")
    args = parser.parse_args()

    shape = (46, 41) if args.quick else (182, 162)
    step_um, beam_fwhm_um = 10.0, 50.0
    rng = np.random.default_rng(1)
    mesh = copper_mesh(shape, step_um)
    maps = {
        "Cu": 250.0 * mesh + 5.0,
        "Fe": 60.0 + 20.0 * rng.random(shape),
        "Zn": 30.0 * (1.0 - mesh) + 2.0,
    }
    print(
        f"asirp {asirp.__version__}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    start = time.perf_counter()
    scan = synthetic_scan(
        maps,
        step_um=step_um,
        kind="raster",
        n_detectors=4,
        n_channels=4096,
        seed=0,
        metadata={"beam_fwhm_um": beam_fwhm_um},
    )
    print(
        f"synthesised {shape[0]} x {shape[1]} points x {scan.n_detectors} elements x "
        f"{scan.n_channels} channels ({scan.spectra.size / 1e6:.0f} M counts, "
        f"{scan.spectra.nbytes / 2**30:.2f} GiB {scan.spectra.dtype}, mean "
        f"{scan.spectra.mean():.3f} counts/channel) in {time.perf_counter() - start:.1f} s"
    )
    cu = element_roi("Cu", scan.calibration, n_channels=scan.n_channels)
    ar = argon_roi(scan.calibration, n_channels=scan.n_channels)
    print(
        f"ROIs: {cu.name} channels {cu.first_channel}..{cu.last_channel}, "
        f"{ar.name} channels {ar.first_channel}..{ar.last_channel}"
    )

    with tempfile.TemporaryDirectory(prefix="asirp-bench-xrf-") as folder:
        path = Path(folder) / "raw.h5"
        start = time.perf_counter()
        write_raw_scan(path, scan)
        write_s = time.perf_counter() - start
        with RawScanFile(path) as raw:
            chunks, stored = raw.chunks, raw.read_spectra((0, 0)).dtype
        print(
            f"written with the default layout ({stored}, chunks {chunks}, no compression, no "
            "checksum) "
            f"in {write_s:.1f} s: {path.stat().st_size / 2**30:.2f} GiB"
        )
        if args.keep:
            import shutil

            shutil.copyfile(path, args.keep)

        def per_point() -> dict:
            with RawScanFile(path) as raw:
                return raw.read_points()

        def roi_sums() -> np.ndarray:
            with RawScanFile(path) as raw:
                return raw.roi_sums([cu, ar])

        def roi_read() -> list[np.ndarray]:
            with RawScanFile(path) as raw:
                return [raw.read_spectra(cu), raw.read_spectra(ar)]

        slabs = roi_read()
        points = per_point()

        def channel_adding() -> np.ndarray:
            return np.stack([s.sum(axis=2, dtype=np.int64) for s in slabs], axis=2)

        np.testing.assert_array_equal(roi_sums(), channel_adding())
        sums = ROISums(
            counts=roi_sums(),
            rois=(cu, ar),
            calibration=scan.calibration,
            metadata=scan.metadata,
            n_channels=scan.n_channels,
            **points,
        )

        def normalise_grid():
            return build_map(sums, "Cu", normalize_by="i0", dead_time=True)

        xrf_map = normalise_grid()

        def rl():
            return asirp.restore(
                xrf_map.data,
                "richardson_lucy",
                beam_fwhm_um=beam_fwhm_um,
                pixel_um=xrf_map.pixel_um,
                iterations=10,
                stop="fixed",
                device="cpu",
            )

        def rl_one_thread():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return rl()
            finally:
                torch.set_num_threads(threads)

        def end_to_end():
            return build_map(path, "Cu", normalize_by="i0", dead_time=True)

        np.testing.assert_allclose(end_to_end().data, xrf_map.data)
        caches = [("warm", lambda: None)]
        if args.cold:
            caches.append(("cold", lambda: _drop_cache(path)))
        for cache, before in caches:
            stages = [
                ("open + per-point", _median_s(per_point, args.repeats, before)),
                ("ROI read + channel-adding (Cu, Ar)", _median_s(roi_sums, args.repeats, before)),
                (
                    "normalise (I0) + dead time + grid",
                    _median_s(normalise_grid, args.repeats, lambda: None),
                ),
                (
                    f"RL x10 (stop=fixed), {torch.get_num_threads()} threads",
                    _median_s(rl, args.repeats, lambda: None),
                ),
            ]
            rl_one = _median_s(rl_one_thread, args.repeats, lambda: None)
            selection = _median_s(roi_read, args.repeats, before)
            adding = _median_s(channel_adding, args.repeats, lambda: None)
            total = sum(t for _, t in stages)
            print(f"\n{cache} page cache, median of {args.repeats}:")
            for name, seconds in stages:
                print(f"  {name:<36} {1e3 * seconds:8.1f} ms")
            print(f"  {'total':<36} {1e3 * total:8.1f} ms")
            print(
                f"  {'RL x10 with 1 torch thread':<36} {1e3 * rl_one:8.1f} ms "
                f"(total with it {1e3 * (total - stages[-1][1] + rl_one):.1f} ms)"
            )
            print(
                f"  (for information: HDF5 selection read of the same slabs {1e3 * selection:.1f}"
                f" ms, then channel-adding in memory {1e3 * adding:.1f} ms)"
            )
            e2e = _median_s(end_to_end, args.repeats, before)
            print(
                f"  {'build_map(path) end to end':<36} {1e3 * e2e:8.1f} ms "
                "(open, ROI sums, normalise, grid; no RL)"
            )
        print(f"map {xrf_map.shape}, step {xrf_map.pixel_um} µm, {xrf_map.units}")

        if args.layouts:
            print("\nlayouts (ROI sums of Cu Ka + Ar Ka, RawScanFile.roi_sums, median ms):")
            print(
                f"  {'dtype':>6} {'chunk channels':>14} {'compression':>11} {'checksum':>8} "
                f"{'GiB':>6} {'write s':>7} {'warm':>7} {'cold':>7}"
            )
            for dtype, chunk_channels, compression, checksum in [
                ("uint16", 64, None, False),  # the default
                ("uint16", 32, None, False),
                ("uint16", 128, None, False),
                ("uint16", 64, None, True),
                ("uint16", 64, "lzf", False),
                ("uint16", 64, "gzip", False),
                ("uint32", 64, None, False),
                ("uint32", 64, None, True),
            ]:
                other = Path(folder) / "layout.h5"
                start = time.perf_counter()
                write_raw_scan(
                    other,
                    scan,
                    compression=compression,
                    checksum=checksum,
                    narrow=dtype == "uint16",
                    chunk_channels=chunk_channels,
                    overwrite=True,  # the bench's own scratch file, one layout after another
                )
                seconds = time.perf_counter() - start

                def read(target: Path = other) -> None:
                    with RawScanFile(target) as raw:
                        raw.roi_sums([cu, ar])

                warm = _median_s(read, args.repeats, lambda: None)
                cold = _median_s(read, args.repeats, lambda target=other: _drop_cache(target))
                print(
                    f"  {dtype:>6} {chunk_channels:>14} {compression!s:>11} {checksum!s:>8} "
                    f"{other.stat().st_size / 2**30:6.2f} {seconds:7.1f} {1e3 * warm:7.1f} "
                    f"{1e3 * cold:7.1f}"
                )
                other.unlink()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
