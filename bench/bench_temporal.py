"""Speed of temporal feedback: frames per second through integrate + restore + detect.

Side by side in one run, on 1-megapixel (1024 x 1024 px, 75 µm) and 4-megapixel
(2048 x 2048 px, 75 µm, twice the distance: the same rings) simulated powder frames:

* ``pyfai``: pyFAI's ``integrate1d`` alone (the reference: the facility's integrator, with
  the same method and bins the pipeline uses);
* ``pipeline``: :meth:`asirp.diffraction.TemporalAnalyzer.process` (integration, restoration
  of I(q), scoring) with and without restoration;
* ``latency``: from a frame's event document handed to an in-process
  :class:`callbacks.temporal.TemporalMonitor` to its score reaching a listener (the worker
  thread's queue included).

Medians over ``--frames`` frames after a warm-up, in ms per frame and frames per second, with the
ratio pipeline / pyFAI. With ``--json`` it prints one JSON object. On a GPU machine nothing
changes: pyFAI's CPU engines are used (no OpenCL here).

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_temporal.py --frames 30
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from asirp.diffraction import (
    DetectorGeometry,
    PatternIntegrator,
    TemporalAnalyzer,
    TemporalSettings,
    fit_instrument_profile,
)
from sim.diffraction import PowderFrameModel, calibrant_frame, random_sequence

WARMUP_FRAMES = 12


def geometries() -> dict[str, DetectorGeometry]:
    """The 1- and 4-megapixel detectors."""
    one = DetectorGeometry()
    four = DetectorGeometry(shape_px=(2048, 2048), distance_mm=400.0, poni_px=(1024.0, 1024.0))
    return {"1mpx": one, "4mpx": four}


def _median_ms(times: list[float]) -> float:
    return 1e3 * float(np.median(times))


def _latency_ms(geometry, profile, frames, settings) -> float:
    """Median event-to-listener time through an in-process TemporalMonitor."""
    from event_model import compose_run

    from callbacks.temporal import TemporalMonitor

    monitor = TemporalMonitor(geometry, settings, profile=profile)
    arrived = threading.Event()
    monitor.add_listener(lambda update: arrived.set())
    bundle = compose_run()
    monitor("start", bundle.start_doc)
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={
            "xrd_image": {"source": "sim", "dtype": "array", "shape": list(frames[0].shape)},
            "temperature_readback": {"source": "sim", "dtype": "number", "shape": []},
        },
    )
    monitor("descriptor", descriptor.descriptor_doc)
    latencies = []
    for i, frame in enumerate(frames):
        event = descriptor.compose_event(
            data={"xrd_image": frame, "temperature_readback": 300.0 + 0.5 * i},
            timestamps={"xrd_image": time.time(), "temperature_readback": time.time()},
        )
        arrived.clear()
        start = time.perf_counter()
        monitor("event", event)
        if not arrived.wait(60):
            raise RuntimeError("no score within 60 s")
        latencies.append(time.perf_counter() - start)
    monitor("stop", bundle.compose_stop())
    monitor.close(30)
    return _median_ms(latencies[WARMUP_FRAMES:])


def measure(name: str, geometry: DetectorGeometry, n_frames: int) -> dict[str, float]:
    """Every figure for one detector size."""
    model = PowderFrameModel(geometry, random_sequence(0, "none"))
    rng = np.random.default_rng(0)
    frames = [model.frame(300.0 + 0.5 * i, rng=rng) for i in range(n_frames + WARMUP_FRAMES)]
    settings = TemporalSettings()
    integrator = PatternIntegrator(geometry, n_bins=settings.n_bins)
    profile = fit_instrument_profile(integrator(calibrant_frame(geometry, rng=rng)))
    figures: dict[str, float] = {}
    pyfai = geometry.make_integrator()  # pyFAI itself, the method and bins the pipeline uses
    pyfai_times = []
    for frame in frames:
        start = time.perf_counter()
        pyfai.integrate1d(
            frame,
            settings.n_bins,
            unit="q_A^-1",
            method=settings.integration_method,
            error_model="poisson",
        )
        pyfai_times.append(time.perf_counter() - start)
    figures["pyfai_ms"] = _median_ms(pyfai_times[WARMUP_FRAMES:])
    for label, restore in (("pipeline_restored", True), ("pipeline_raw", False)):
        analyzer = TemporalAnalyzer(geometry, TemporalSettings(restore=restore), profile=profile)
        times = []
        for i, frame in enumerate(frames):
            start = time.perf_counter()
            analyzer.process(frame, time_s=float(i), temperature_K=300.0 + 0.5 * i)
            times.append(time.perf_counter() - start)
        figures[f"{label}_ms"] = _median_ms(times[WARMUP_FRAMES:])
    figures["latency_ms"] = _latency_ms(geometry, profile, frames, settings)
    figures["pipeline_frames_per_s"] = 1e3 / figures["pipeline_restored_ms"]
    figures["pyfai_frames_per_s"] = 1e3 / figures["pyfai_ms"]
    figures["pipeline_over_pyfai"] = figures["pipeline_restored_ms"] / figures["pyfai_ms"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {name: measure(name, g, args.frames) for name, g in geometries().items()}
    if args.json:
        print(json.dumps(results))
        return
    for name, figures in results.items():
        print(
            f"{name}: pyFAI {figures['pyfai_ms']:.1f} ms ({figures['pyfai_frames_per_s']:.1f}/s); "
            f"pipeline restored {figures['pipeline_restored_ms']:.1f} ms "
            f"({figures['pipeline_frames_per_s']:.1f}/s, {figures['pipeline_over_pyfai']:.2f}x "
            f"pyFAI), raw {figures['pipeline_raw_ms']:.1f} ms; frame-to-score latency "
            f"{figures['latency_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
