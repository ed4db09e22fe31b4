"""Benchmark of live restoration from Bluesky documents (:class:`callbacks.LiveRestorer`).

A standalone script (not a test) that prints a results table; every figure is the median of
``--repeats`` runs (default 3), the cases of a section interleaved round by round so that load
from other work on the machine falls on all of them alike. The header and footer print the load
average: the machine should be otherwise idle.

What is measured
----------------
1. Ingestion, 512 x 512 map (262 144 points): pre-built documents of a snaking grid scan (motor
   positions ``y``, ``x``, a detector ``det`` and a monitor ``i0``, as ``grid_scan`` records
   them) are fed to a ``LiveRestorer("det", normalize="i0")`` as fast as it takes them:
   ``event`` documents with restoration off (the document path alone: routing, reading,
   position to pixel, storing), the same with a restoration requested every 16 rows running in
   the worker meanwhile (RL, 10 iterations, the worker competing for the cores), and one
   ``event_page`` per line (fly scans). Rate = points / wall time from the start document to
   the last event.
2. Final latency, 512 x 512: from the stop document to the final restored map in the
   listener (Richardson-Lucy with its defaults: discrepancy stop, at most 100 iterations).
3. RunEngine overhead: ``bluesky.plans.grid_scan`` of ``--re-rows`` x 512 points (default 8
   rows of the 512 x 512 scan; ``--re-rows 512`` for all of it) on ophyd's simulated devices
   (two ``SynAxis``, two ``SynSignal``), wall time of ``RE(plan)`` without a callback, with the
   LiveRestorer (restoration off), and with the LiveRestorer restoring every 2 rows (RL, 10
   iterations, from 4 rows on). The overhead is the ratio of medians minus 1; since other load
   on the machine makes wall times scatter by more than the floor, the time the RunEngine spends
   inside the LiveRestorer (a timing wrapper around it) is also given, as a fraction of the
   rest of the scan: the direct cost of the callback, without the worker's indirect share of
   the CPU.
4. Row latency, in that last RunEngine case: for each row whose completion requested a
   restoration, the time from its last event (seen by a subscriber right after the restorer)
   to the first restored map that includes it (in the listener).

Floors: at least 5,000 events/s ingested (section 1, event documents), at most 5 % RunEngine
overhead (section 3); the footer says whether they hold.

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_live.py                 # 512 x 512 ingestion, 8-row RE scans
    .venv/bin/python bench/bench_live.py --quick         # 128 x 128, 8-row RE scans
    .venv/bin/python bench/bench_live.py --repeats 5 --re-rows 32
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bluesky import RunEngine
from bluesky.plans import grid_scan
from event_model import compose_run
from ophyd.sim import SynAxis, SynSignal

import asirp
from callbacks.live import LiveRestorer, LiveResult

ROWS_RL = {"iterations": 10, "stop": "fixed"}
INGEST_FLOOR = 5000.0
OVERHEAD_FLOOR = 0.05


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _truth(rows: int, cols: int) -> np.ndarray:
    y, x = np.indices((rows, cols))
    return 50.0 + 100.0 * (((y // 16) + (x // 16)) % 2)


class ScanDocuments:
    """Documents of one snaking grid scan, built once; each replay gets a fresh start uid."""

    def __init__(self, rows: int, cols: int, pages: bool) -> None:
        self.rows, self.cols = rows, cols
        rng = np.random.default_rng(0)
        truth = _truth(rows, cols)
        counts = rng.poisson(truth).astype(float)
        i0 = rng.normal(1000.0, 10.0, size=(rows, cols))
        self.descriptor_uid = str(uuid.uuid4())
        self.data_keys = {
            key: {"source": "bench", "dtype": "number", "shape": []}
            for key in ("y", "x", "det", "i0")
        }
        now = time.time()
        self.events: list[tuple[str, dict[str, Any]]] = []
        seq = 0
        for row in range(rows):
            order = range(cols - 1, -1, -1) if row % 2 else range(cols)
            if pages:
                columns = list(order)
                n = len(columns)
                data = {
                    "y": [float(row)] * n,
                    "x": [float(c) for c in columns],
                    "det": counts[row, columns].tolist(),
                    "i0": i0[row, columns].tolist(),
                }
                page = {
                    "descriptor": self.descriptor_uid,
                    "uid": [str(uuid.uuid4()) for _ in columns],
                    "time": [now] * n,
                    "seq_num": list(range(seq + 1, seq + n + 1)),
                    "data": data,
                    "timestamps": {k: [now] * n for k in data},
                    "filled": {},
                }
                seq += n
                self.events.append(("event_page", page))
                continue
            for col in order:
                seq += 1
                data = {
                    "y": float(row),
                    "x": float(col),
                    "det": float(counts[row, col]),
                    "i0": float(i0[row, col]),
                }
                self.events.append(
                    (
                        "event",
                        {
                            "descriptor": self.descriptor_uid,
                            "uid": str(uuid.uuid4()),
                            "time": now,
                            "seq_num": seq,
                            "data": data,
                            "timestamps": dict.fromkeys(data, now),
                            "filled": {},
                        },
                    )
                )

    def head(self) -> tuple[dict[str, Any], dict[str, Any], Callable[..., dict[str, Any]]]:
        """A fresh start document, the descriptor (same uid), and the stop composer."""
        bundle = compose_run(
            metadata={
                "plan_name": "grid_scan",
                "shape": [self.rows, self.cols],
                "extents": [[0, self.rows - 1], [0, self.cols - 1]],
                "snaking": [False, True],
                "motors": ["y", "x"],
                "hints": {"dimensions": [[["y"], "primary"], [["x"], "primary"]]},
            }
        )
        descriptor = bundle.compose_descriptor(name="primary", data_keys=self.data_keys)
        doc = dict(descriptor.descriptor_doc)
        doc["uid"] = self.descriptor_uid  # the pre-built events point at this uid
        return bundle.start_doc, doc, bundle.compose_stop


def ingest(
    scan: ScanDocuments, every_rows: int | None, final_defaults: bool
) -> tuple[float, float]:
    """Points per second fed, and the final latency (stop -> final result), s.

    Restorations use RL with 10 iterations, or RL's defaults with ``final_defaults`` (and no
    partial restorations).
    """
    restorer = LiveRestorer(
        "det",
        "richardson_lucy",
        {} if final_defaults else ROWS_RL,
        normalize="i0",
        psf_sigma_px=2.0,
        every_rows=every_rows,
        min_rows=16,
    )
    done = threading.Event()
    restorer.subscribe(lambda result: done.set() if result.final else None)
    start, descriptor, compose_stop = scan.head()
    began = time.perf_counter()
    restorer("start", start)
    restorer("descriptor", descriptor)
    for name, doc in scan.events:
        restorer(name, doc)
    fed = time.perf_counter() - began
    stop = compose_stop(exit_status="success")
    stopped = time.perf_counter()
    restorer("stop", stop)
    if not done.wait(600):
        raise RuntimeError("the final restoration did not arrive")
    latency = time.perf_counter() - stopped
    final = restorer.latest
    if not (final.ok and np.isfinite(final.raw_map).all()):
        raise RuntimeError(f"the benchmark map was not assembled: {final.error}")
    restorer.close(60)
    return scan.rows * scan.cols / fed, latency


class RowClock:
    """Times of row completions (seen right after the restorer) and of restored results."""

    def __init__(self, cols: int) -> None:
        self.cols = cols
        self.row_done: dict[int, float] = {}
        self.results: list[tuple[int, float]] = []

    def document(self, name: str, doc: dict[str, Any]) -> None:
        """RunEngine subscriber: note when a row's last event arrives."""
        if name == "event" and doc["seq_num"] % self.cols == 0:
            self.row_done[doc["seq_num"] // self.cols] = time.perf_counter()

    def result(self, result: LiveResult) -> None:
        """LiveRestorer listener: note when a restored map arrives."""
        self.results.append((result.rows_restored, time.perf_counter()))

    def latencies(self, requested_rows: list[int]) -> list[float]:
        """Per requested row: first restored map including it minus its completion, s."""
        out = []
        for rows in requested_rows:
            later = [t for r, t in self.results if r >= rows]
            if later and rows in self.row_done:
                out.append(min(later) - self.row_done[rows])
        return out


class Timed:
    """A callback wrapper that adds up the wall time the RunEngine spends inside it."""

    def __init__(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        self.callback = callback
        self.seconds = 0.0

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Call the wrapped callback, timing it."""
        began = time.perf_counter()
        self.callback(name, doc)
        self.seconds += time.perf_counter() - began


def run_engine_case(case: str, rows: int, cols: int) -> tuple[float, float, list[float]]:
    """One RunEngine scan: its wall time, the time inside the restorer and the row latencies.

    Times in s; latencies only for the restoring case.
    """
    y, x = SynAxis(name="y"), SynAxis(name="x")
    truth = _truth(rows, cols)

    def reading() -> float:
        return float(truth[int(y.readback.get()), int(x.readback.get())])

    det = SynSignal(func=reading, name="det")
    i0 = SynSignal(func=lambda: 1000.0, name="i0")
    engine = RunEngine({})
    restorer = None
    clock = RowClock(cols)
    if case != "none":
        every = 2 if case == "restoring" else None
        restorer = LiveRestorer(
            "det",
            "richardson_lucy",
            ROWS_RL,
            normalize="i0",
            psf_sigma_px=2.0,
            every_rows=every,
            min_rows=4,
        )
        restorer.subscribe(clock.result)
        timed = Timed(restorer)
        engine.subscribe(timed)
        engine.subscribe(clock.document)
    plan = grid_scan([det, i0], y, 0, rows - 1, rows, x, 0, cols - 1, cols, snake_axes=True)
    began = time.perf_counter()
    engine(plan)
    wall = time.perf_counter() - began
    latencies: list[float] = []
    inside = 0.0
    if restorer is not None:
        restorer.wait(600)
        restorer.close(60)
        requested = list(range(4, rows, 2)) if case == "restoring" else []
        latencies = clock.latencies(requested)
        inside = timed.seconds
    return wall, inside, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="map side for ingestion (512)")
    parser.add_argument("--re-rows", type=int, default=8, help="rows of the RunEngine scans (8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (3)")
    parser.add_argument("--quick", action="store_true", help="128 x 128, 8-row RE scans")
    args = parser.parse_args()
    size = 128 if args.quick else args.size
    re_rows = 8 if args.quick else args.re_rows
    cols = size

    print(
        f"bench_live: asirp {asirp.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {_load()}"
    )
    print(f"building the documents of a {size} x {size} scan ...", flush=True)
    event_scan = ScanDocuments(size, size, pages=False)
    page_scan = ScanDocuments(size, size, pages=True)

    cases: dict[str, list[float]] = {"events": [], "events+restoring": [], "pages": []}
    latency_final: list[float] = []
    for _ in range(args.repeats):
        rate, _ = ingest(event_scan, None, final_defaults=False)
        cases["events"].append(rate)
        rate, _ = ingest(event_scan, 16, final_defaults=False)
        cases["events+restoring"].append(rate)
        rate, latency = ingest(page_scan, None, final_defaults=True)
        cases["pages"].append(rate)
        latency_final.append(latency)
    print(f"\n1. ingestion, {size} x {size} = {size * size} points (median of {args.repeats})")
    print(
        f"   event documents, restoration off     {statistics.median(cases['events']):>12,.0f} /s"
    )
    print(
        f"   event documents, RL every 16 rows     "
        f"{statistics.median(cases['events+restoring']):>12,.0f} /s"
    )
    print(
        f"   event pages (one per line)            {statistics.median(cases['pages']):>12,.0f} /s"
    )
    print(f"\n2. final latency, stop -> restored {size} x {size} map (RL, defaults)")
    print(f"   {statistics.median(latency_final):.2f} s")

    walls: dict[str, list[float]] = {"none": [], "live": [], "restoring": []}
    inside: dict[str, list[float]] = {"none": [], "live": [], "restoring": []}
    row_latencies: list[float] = []
    for _ in range(args.repeats):
        for case in walls:
            wall, seconds, latencies = run_engine_case(case, re_rows, cols)
            walls[case].append(wall)
            inside[case].append(seconds / (wall - seconds))
            row_latencies.extend(latencies)
    base = statistics.median(walls["none"])
    print(
        f"\n3. RunEngine wall time, grid_scan {re_rows} x {cols} on ophyd.sim "
        f"(median of {args.repeats}, [min, max])"
    )
    overheads = {}
    for case, label in (
        ("none", "no callback"),
        ("live", "LiveRestorer, restoration off"),
        ("restoring", "LiveRestorer, RL every 2 rows"),
    ):
        median = statistics.median(walls[case])
        overheads[case] = median / base - 1.0
        print(
            f"   {label:<30} {median:7.2f} s [{min(walls[case]):.2f}, {max(walls[case]):.2f}]"
            f"  {1e3 * median / (re_rows * cols):.2f} ms/point"
            + (
                ""
                if case == "none"
                else f", wall-time overhead {100 * overheads[case]:+.1f} %, "
                f"time inside the callback {100 * statistics.median(inside[case]):.2f} %"
            )
        )
    print("\n4. row latency: last event of a row -> restored map including it")
    if row_latencies:
        print(
            f"   median {statistics.median(row_latencies):.3f} s, max {max(row_latencies):.3f} s "
            f"over {len(row_latencies)} rows ({re_rows} x {cols} maps, RL 10 iterations)"
        )
    else:
        print("   (no partial restoration: use more --re-rows)")

    ingest_ok = statistics.median(cases["events"]) >= INGEST_FLOOR
    wall_ok = max(overheads["live"], overheads["restoring"]) <= OVERHEAD_FLOOR
    inside_ok = max(statistics.median(inside[c]) for c in ("live", "restoring")) <= OVERHEAD_FLOOR
    print(
        f"\nfloors: ingestion >= {INGEST_FLOOR:,.0f} events/s: {'yes' if ingest_ok else 'NO'}; "
        f"RunEngine overhead <= {100 * OVERHEAD_FLOOR:.0f} %: wall time "
        f"{'yes' if wall_ok else 'NO'}, time inside the callback {'yes' if inside_ok else 'NO'}"
    )
    print(f"load average at the end: {_load()}")


if __name__ == "__main__":
    main()
