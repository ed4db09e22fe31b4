"""Projections per second of the stack engine: one process, then 1 and 2 dask workers.

A standalone script (not a test). A stack of ``--projections`` Poisson-noised ``--size``²
projections is restored by :func:`asirp.stacks.restore_chunk` (Richardson-Lucy, ``--iterations``
fixed iterations, Gaussian PSF of sigma 1.5 px), one projection per chunk, from an HDF5 file
into a zarr store, both in a temporary folder:

* ``single_process``: :func:`asirp.stacks.process_stack_local` in this process;
* ``workers_1``, ``workers_2``: :func:`asirp.stacks.process_stack` on a
  :func:`asirp.stacks.cluster.local_cluster` of 1 and 2 worker processes (one thread each),
  started once per count; a first, untimed run warms the workers up (imports, first torch call),
  so the figures are steady-state throughput, cluster start-up excluded.

Each figure is the median of ``--repeats`` runs, all in the same process, one thread per
worker (and in the single process). Scaling efficiency is ``rate(2) / (2 * rate(1))``: 1 when
two workers do twice the work of one. Every run's output is checked equal, bit for bit, to the
single-process one.

How to run, from the repository root (on an otherwise idle machine: the header prints the load)::

    .venv/bin/python bench/bench_stacks.py                       # 16 projections of 2048²
    .venv/bin/python bench/bench_stacks.py --size 512 --repeats 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from asirp.stacks import ChunkStore, StackSource, process_stack, process_stack_local, restore_chunk
from asirp.stacks.cluster import local_cluster


def make_stack(count: int, size: int, seed: int = 3) -> np.ndarray:
    """Poisson counts of smooth projections, ``(count, size, size)`` float32."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    stack = np.empty((count, size, size), dtype=np.float32)
    for index in range(count):
        pattern = 60 + 40 * np.sin(2 * np.pi * (x * (3 + index % 5) + y)) ** 2
        stack[index] = rng.poisson(pattern)
    return stack


def timed(run, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``run()``, s."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="projection side, px")
    parser.add_argument("--projections", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    arguments = parser.parse_args()
    stack = make_stack(arguments.projections, arguments.size)
    folder = Path(tempfile.mkdtemp(prefix="bench_stacks_"))
    # an HDF5 file, as at the beamline: each worker reads its own chunk (an in-memory source
    # would ship every chunk through the scheduler)
    with h5py.File(folder / "stack.h5", "w") as file:
        file["data"] = stack
    source = StackSource(folder / "stack.h5", "data", stack.shape, stack.dtype)
    kwargs = {"method": "richardson_lucy", "psf_sigma_px": 1.5, "iterations": arguments.iterations}
    count = arguments.projections
    if not arguments.json:
        print(f"load average {os.getloadavg()}; {count} projections of {arguments.size}²")

    def local() -> None:
        process_stack_local(
            restore_chunk,
            source,
            folder / "local.zarr",
            chunk_len=1,
            function_kwargs=kwargs,
            overwrite=True,
            resume=False,
        )

    local()  # warm-up: first torch and kernel calls, as in the workers
    rates = {"single_process_per_s": count / timed(local, arguments.repeats)}
    expected = ChunkStore(folder / "local.zarr", stack.shape, 1).read()
    for workers in (1, 2):
        with local_cluster(workers, 1) as cluster:
            output = folder / f"workers_{workers}.zarr"

            def distributed(address: str = cluster.scheduler_address, path: Path = output) -> None:
                process_stack(
                    restore_chunk,
                    source,
                    path,
                    chunk_len=1,
                    function_kwargs=kwargs,
                    scheduler=address,
                    overwrite=True,
                    resume=False,
                )

            distributed()  # warm-up: imports and first calls in the workers
            rates[f"workers_{workers}_per_s"] = count / timed(distributed, arguments.repeats)
            if not np.array_equal(ChunkStore(output, stack.shape, 1).read(), expected):
                raise SystemExit(f"{workers} worker(s) gave another result than one process")
    shutil.rmtree(folder)
    figures = {
        "size": arguments.size,
        "projections": count,
        **{name: round(rate, 3) for name, rate in rates.items()},
        "scaling_efficiency": round(rates["workers_2_per_s"] / (2 * rates["workers_1_per_s"]), 3),
    }
    if arguments.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>22}: {value}")


if __name__ == "__main__":
    main()
