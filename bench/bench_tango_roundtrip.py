"""Benchmark of the Tango round trip through the ASIRP device against the core engine.

A standalone script (not a test). It starts the embedded deployment of ``asirp serve`` (pytango's
sqlite database on a free loopback port, in a temporary folder, the device registered in it and
the ``ASIRP`` server in its own process) and times, over ``--repeats`` rounds after one warm-up:

core
    :func:`asirp.restore` in this process on the same map with the same settings:
    Richardson-Lucy, ``--iterations`` iterations (10; ``stop="fixed"``, so exactly that many),
    Gaussian PSF from a 50 µm beam at 10 µm steps; called in the main thread, and in a fresh
    worker thread as the device runs it.
round trip
    what a client does: write ``input_image`` (float32 ``--size`` x ``--size``, 1024 by
    default), call ``Restore`` (it returns at once), wait for the ``State`` change event that
    follows ``RUNNING`` with ``ON``, read ``restored_image``. Each step is timed too, and the
    device's own ``last_duration_ms`` (its worker's wall time) is read after each round,
    outside the timing.

Each round runs the two core calls, then the round trip, so that all see the same machine
load. Every figure is the median over the rounds (min and max in brackets), taken with
:func:`time.perf_counter`; the overhead is median(round trip) - median(core). The restored map
of the device is checked to be identical to the core's. The client waits idle while the server
computes (and the server idles while the core runs), so the two processes do not compete for
the cores; the header and footer print the load average, which should be low.

Note: ``asirp serve`` (and so this script) starts the server with ``OMP_WAIT_POLICY=PASSIVE``
unless the environment sets a policy (see ``asirp_device.embedded.SERVER_OMP_WAIT_POLICY``):
with other work on the same cores, torch's spinning OpenMP threads otherwise slow it down many
times. So that the core runs under the same policy, the script restarts itself with that
setting when ``OMP_WAIT_POLICY`` is not set; the header prints the policy in use.

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_tango_roundtrip.py               # 1024 x 1024, 7 rounds
    .venv/bin/python bench/bench_tango_roundtrip.py --quick       # 256 x 256, 3 rounds
    .venv/bin/python bench/bench_tango_roundtrip.py --size 2048 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import tango
import torch

import asirp
from asirp_device.embedded import (
    SERVER_OMP_WAIT_POLICY,
    EmbeddedDatabase,
    ServerProcess,
    register_device,
)

DEVICE = "bench/asirp/roundtrip"
BEAM_FWHM_UM = 50.0
PIXEL_UM = 10.0
SEED = 20240607


def blob_map(side: int, rng: np.random.Generator, peak_counts: float = 200.0) -> np.ndarray:
    """Poisson counts of blurred random blobs on a background, float32 ``(side, side)``."""
    impulses = np.zeros((side, side))
    count = max(8, side * side // 2000)
    rows, cols = rng.integers(0, side, size=(2, count))
    impulses[rows, cols] = rng.uniform(0.2, 1.0, size=count)
    objects = scipy.ndimage.gaussian_filter(impulses, 4.0) * 16.0
    objects = peak_counts * objects / objects.max() + 0.05 * peak_counts
    sigma_px = BEAM_FWHM_UM / PIXEL_UM / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    return rng.poisson(scipy.ndimage.gaussian_filter(objects, sigma_px)).astype(np.float32)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


class StateWatcher:
    """Sets an event when a ``State`` change event ``ON`` follows a ``RUNNING`` one."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._running_seen = False
        self.errors: list[str] = []

    def arm(self) -> None:
        """Forget what was seen; wait for a new RUNNING -> ON."""
        self._running_seen = False
        self.done.clear()

    def __call__(self, event: tango.EventData) -> None:
        """Event callback (omniORB thread)."""
        if event.err:
            self.errors.append(str(event.errors))
            return
        state = event.attr_value.value
        if state == tango.DevState.RUNNING:
            self._running_seen = True
        elif self._running_seen and state != tango.DevState.RUNNING:
            self.done.set()


def summary(values: list[float]) -> str:
    """``median [min, max]`` in ms."""
    return (
        f"{1000 * statistics.median(values):9.1f} ms "
        f"[{1000 * min(values):.1f}, {1000 * max(values):.1f}]"
    )


def run(size: int, repeats: int, iterations: int) -> None:
    rng = np.random.default_rng(SEED)
    image = blob_map(size, rng)
    settings = {
        "iterations": iterations,
        "stop": "fixed",
        "beam_fwhm_um": BEAM_FWHM_UM,
        "pixel_um": PIXEL_UM,
    }

    def core() -> np.ndarray:
        return asirp.restore(image, "richardson_lucy", **settings).image

    def core_in_thread() -> None:
        worker = threading.Thread(target=core, name="core-worker")
        worker.start()
        worker.join()

    print(
        f"# ASIRP Tango round trip vs core engine: {platform.platform()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), pytango {tango.__version__}, CPU count "
        f"{os.cpu_count()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"load average {load_average()}"
    )
    print(
        f"# map {size} x {size} float32, Richardson-Lucy {iterations} iterations (fixed), "
        f"beam {BEAM_FWHM_UM} µm at {PIXEL_UM} µm steps; {repeats} rounds after 1 warm-up"
    )
    with tempfile.TemporaryDirectory(prefix="asirp-bench-") as folder:
        database = EmbeddedDatabase(Path(folder) / "tango.db", "127.0.0.1", 0)
        server = ServerProcess("", "bench", "127.0.0.1")
        try:
            tango_host = database.start()
            register_device(tango_host, DEVICE, "bench", {"DataRoot": folder})
            server.tango_host = tango_host
            server.start(DEVICE)
            proxy = tango.DeviceProxy(f"tango://{tango_host}/{DEVICE}")
            proxy.set_timeout_millis(30_000)
            proxy.method = "richardson_lucy"
            proxy.iterations = iterations
            proxy.parameters_json = '{"stop": "fixed"}'
            proxy.beam_fwhm_um = BEAM_FWHM_UM
            proxy.pixel_um = PIXEL_UM
            watcher = StateWatcher()
            subscription = proxy.subscribe_event("State", tango.EventType.CHANGE_EVENT, watcher)
            steps: dict[str, list[float]] = {
                "write input_image": [],
                "Restore call": [],
                "wait for ON event": [],
                "read restored_image": [],
            }
            totals: list[float] = []
            server_ms: list[float] = []
            core_times: dict[str, list[float]] = {"main thread": [], "worker thread": []}
            restored = np.empty(0)
            for round_index in range(repeats + 1):
                started = time.perf_counter()
                expected = core()
                core_main = time.perf_counter() - started
                started = time.perf_counter()
                core_in_thread()
                core_worker = time.perf_counter() - started
                watcher.arm()
                t0 = time.perf_counter()
                proxy.write_attribute("input_image", image)
                t1 = time.perf_counter()
                proxy.Restore()
                t2 = time.perf_counter()
                if not watcher.done.wait(600):
                    raise RuntimeError(f"no ON event: {proxy.status()} {watcher.errors}")
                t3 = time.perf_counter()
                restored = proxy.read_attribute("restored_image").value
                t4 = time.perf_counter()
                if round_index == 0:
                    continue  # warm-up
                core_times["main thread"].append(core_main)
                core_times["worker thread"].append(core_worker)
                for name, start, end in zip(steps, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
                    steps[name].append(end - start)
                totals.append(t4 - t0)
                server_ms.append(proxy.last_duration_ms / 1000.0)
            proxy.unsubscribe_event(subscription)
            if proxy.state() != tango.DevState.ON:
                raise RuntimeError(f"device not ON: {proxy.status()}")
        finally:
            server.stop()
            database.stop()
    identical = np.array_equal(restored, expected)

    print(f"{'case':<38} {'median [min, max]':>30}")
    for where, values in core_times.items():
        print(f"{'core asirp.restore, ' + where:<38} {summary(values)}")
    print(f"{'Tango round trip (total)':<38} {summary(totals)}")
    for name, values in steps.items():
        print(f"{'  ' + name:<38} {summary(values)}")
    print(f"{'  (device worker, last_duration_ms)':<38} {summary(server_ms)}")
    waits = steps["wait for ON event"]
    latency = [wait - worker for wait, worker in zip(waits, server_ms, strict=True)]
    print(f"{'  (wait - worker: start + events)':<38} {summary(latency)}")
    moved = [steps[name] for name in steps if "wait" not in name]
    transport = [sum(values) for values in zip(*moved, strict=True)]
    print(f"{'  (write + Restore call + read)':<38} {summary(transport)}")
    for where, values in core_times.items():
        overhead = statistics.median(totals) - statistics.median(values)
        print(
            f"overhead vs core in the {where}: {1000 * overhead:.1f} ms "
            f"({100 * overhead / statistics.median(values):.0f} % of that core time)"
        )
    print(f"device result identical to the core's: {identical}")
    print(f"# load average at the end: {load_average()}")
    if not identical:
        raise SystemExit("the device's restored map differs from the core engine's")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="map side, px (1024)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (7)")
    parser.add_argument("--iterations", type=int, default=10, help="RL iterations (10)")
    parser.add_argument("--quick", action="store_true", help="256 x 256, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats = 256, 3
    run(args.size, args.repeats, args.iterations)


if __name__ == "__main__":
    if "OMP_WAIT_POLICY" not in os.environ:  # run the core under the server's policy
        os.environ["OMP_WAIT_POLICY"] = SERVER_OMP_WAIT_POLICY
        os.execv(sys.executable, [sys.executable, *sys.argv])
    main()
