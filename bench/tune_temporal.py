"""Tuning figures of the temporal-feedback detector on simulated ramps (seeds 0-99 only).

A standalone script (not a test). For every seed and kind (``splitting``, ``new_phase``,
``none``) it renders the ramp with :mod:`sim.diffraction` (ring current decaying by a few % with
random top-up jumps), integrates every frame once with pyFAI (patterns cached in memory), and
runs :class:`asirp.diffraction.TemporalAnalyzer` on the raw and on the restored patterns. It
prints, for raw and restored:

* detection: share of event sequences with an alarm at or after the true onset frame;
* delay: median (and 90th percentile) of ``alarm frame - true onset frame``, frames;
* early alarms on event sequences (before the onset) and false alarms on ``none`` sequences,
  per 10,000 frames (armed frames only, the warm-up cannot alarm);
* the score's in-control mean and standard deviation (should be about 0 and 1).

Seeds >= 5000 are reserved for the final evaluation: this script refuses them.

``--speed`` instead times, on 1024² frames with 1000 bins, pyFAI integration (without and
with pixel splitting), Richardson-Lucy alone, and the detector's step from a pattern (raw, and
restored: restoration, fit, score, rolling bootstrap), in ms per frame.

How to run
----------
From the repository root::

    .venv/bin/python bench/tune_temporal.py --seeds 0-99 --size 256 --bins 500
    .venv/bin/python bench/tune_temporal.py --seeds 0-19 --kinds none --repeat-null 5
    .venv/bin/python bench/tune_temporal.py --seeds 0-99 --kinds none --reactive
    .venv/bin/python bench/tune_temporal.py --speed

``--reactive`` renders every ramp with the irregular temperature schedule of a reacting plan
(holds and quarter steps at random places, :func:`reactive_temperatures`), so that the null
false-alarm rate is measured under them too.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from asirp.diffraction import (
    PatternIntegrator,
    TemporalAnalyzer,
    TemporalSettings,
    fit_instrument_profile,
)
from asirp.diffraction.geometry import DetectorGeometry
from asirp.diffraction.profile import CEO2_D_SPACINGS_A
from sim.diffraction import PowderFrameModel, calibrant_frame, random_sequence, small_geometry

RESERVED_SEED = 5000


def parse_seeds(text: str) -> list[int]:
    """``"0-99"`` or ``"1,2,5"`` to a list of seeds, refusing reserved ones."""
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-"))
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    if any(s >= RESERVED_SEED or s < 0 for s in seeds):
        raise SystemExit(f"seeds must be in [0, {RESERVED_SEED}): the rest are reserved")
    return seeds


def flux_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ring current relative to full: slow decay with top-up jumps back to ~1."""
    flux = np.empty(n)
    level = rng.uniform(0.9, 1.0)
    for i in range(n):
        if rng.random() < 0.05:
            level = rng.uniform(0.97, 1.0)  # top-up injection
        flux[i] = level
        level *= 1.0 - rng.uniform(0.0005, 0.002)
    return flux


def reactive_temperatures(
    rng: np.random.Generator, start: float, stop: float, n: int
) -> np.ndarray:
    """Frame temperatures of a ramp as a reacting plan takes it (``bluesky_plans/ramp.py``).

    The normal step ``(stop - start) / (n - 1)``, and, at random places (where a plan would have
    reacted to an alarm, every 12-40 frames), a hold of 1-3 frames at one temperature, then
    quarter steps over 4 normal steps' worth, then the normal step again, up to ``stop``.
    """
    step = (stop - start) / (n - 1)
    direction = 1.0 if step > 0 else -1.0
    temperatures = [start]
    next_reaction = int(rng.integers(8, 30))
    while (stop - temperatures[-1]) * direction > 1e-9:
        if len(temperatures) >= next_reaction:
            temperatures.extend([temperatures[-1]] * int(rng.integers(1, 4)))
            for _ in range(16):
                temperatures.append(temperatures[-1] + step / 4)
            next_reaction = len(temperatures) + int(rng.integers(12, 40))
        temperatures.append(temperatures[-1] + step)
    values = np.array(temperatures)
    return np.minimum(values, stop) if direction > 0 else np.maximum(values, stop)


def render_patterns(
    geometry, integrator, seed: int, kind: str, repeat: int = 0, reactive: bool = False
):
    """Integrated patterns of one ramp, its temperatures and its true onset frame."""
    sequence = random_sequence(seed, kind)
    model = PowderFrameModel(geometry, sequence)
    rng = np.random.default_rng([seed, repeat, 7])
    temperatures = sequence.temperatures()
    onset = sequence.onset_frame
    if reactive:
        temperatures = reactive_temperatures(
            np.random.default_rng([seed, repeat, 11]), *sequence.ramp_K, temperatures.size
        )
        if sequence.onset_K is not None:
            past = (temperatures - sequence.onset_K) * sequence.direction >= 0
            onset = int(np.argmax(past)) if past.any() else None
    flux = flux_series(rng, temperatures.size)
    patterns = [
        integrator(model.frame(float(t), rng=rng, flux_scale=float(f)))
        for t, f in zip(temperatures, flux, strict=True)
    ]
    return patterns, temperatures, onset


def run(analyzer: TemporalAnalyzer, patterns, temperatures, time_trend: bool = False):
    """Alarm frames, armed-frame count and in-control scores of one sequence."""
    analyzer.reset()
    alarms, scores, armed = [], [], 0
    for i, (pattern, t) in enumerate(zip(patterns, temperatures, strict=True)):
        # without a temperature the detector's trend is in the frame index
        temperature = None if time_trend else float(t)
        result = analyzer.process_pattern(pattern, time_s=float(i), temperature_K=temperature)
        if result.armed:
            armed += 1
            scores.append(result.score)
        if result.alarm is not None:
            alarms.append(result.alarm)
    return alarms, armed, scores


def speed(n_frames: int = 40) -> None:
    """Print ms per frame of each stage at 1024² (medians over ``n_frames`` frames)."""
    geometry = DetectorGeometry()
    model = PowderFrameModel(geometry, random_sequence(0, "none"))
    rng = np.random.default_rng(0)
    frames = [model.frame(300.0 + i, rng=rng) for i in range(n_frames)]

    def timed(function, items) -> float:
        times = []
        for item in items:
            start = time.perf_counter()
            function(item)
            times.append(time.perf_counter() - start)
        return 1e3 * float(np.median(times))

    for method in (("no", "csr", "cython"), ("bbox", "csr", "cython")):
        integrator = PatternIntegrator(geometry, n_bins=1000, method=method)
        integrator(frames[0])  # builds the engine
        print(f"integrate {method}: {timed(integrator, frames):.1f} ms")
    integrator = PatternIntegrator(geometry, n_bins=1000, method=("no", "csr", "cython"))
    patterns = [integrator(f) for f in frames]
    profile = fit_instrument_profile(integrator(calibrant_frame(geometry, rng=rng)))
    restore = TemporalAnalyzer(geometry, TemporalSettings(), profile=profile)._transform(
        patterns[0].q_A
    )
    print(
        f"Richardson-Lucy, 20 iterations: {timed(lambda p: restore(p.intensity), patterns):.2f} ms"
    )
    for name, flag in (("raw", False), ("restored", True)):
        analyzer = TemporalAnalyzer(geometry, TemporalSettings(restore=flag), profile=profile)
        warm = 12
        for p in patterns[:warm]:
            analyzer.process_pattern(p, time_s=0.0)
        ms = timed(lambda p, a=analyzer: a.process_pattern(p, time_s=0.0), patterns[warm:])
        print(f"detector step from a pattern ({name}): {ms:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0-99")
    parser.add_argument("--kinds", default="splitting,new_phase,none")
    parser.add_argument("--size", type=int, default=256, choices=(256, 512, 1024))
    parser.add_argument("--bins", type=int, default=500)
    parser.add_argument("--repeat-null", type=int, default=1, help="noise draws per none seed")
    parser.add_argument("--drift", type=float, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--n-iter", type=int, default=20)
    parser.add_argument("--speed", action="store_true", help="time the stages at 1024²")
    parser.add_argument(
        "--reactive",
        action="store_true",
        help="irregular temperature schedules: holds and quarter steps at random places",
    )
    parser.add_argument(
        "--time-trend", action="store_true", help="withhold temperatures: the trend in time"
    )
    args = parser.parse_args()
    if args.speed:
        speed()
        return
    seeds = parse_seeds(args.seeds)
    kinds = args.kinds.split(",")
    geometry = small_geometry(factor=1024 // args.size) if args.size != 1024 else DetectorGeometry()
    integrator = PatternIntegrator(geometry, n_bins=args.bins, method=("no", "csr", "cython"))
    calibrant = integrator(calibrant_frame(geometry, rng=np.random.default_rng(12345)))
    profile = fit_instrument_profile(calibrant, CEO2_D_SPACINGS_A)
    print(f"geometry {geometry.shape_px}, {args.bins} bins; profile {profile.as_dict()}")
    extra = {}
    if args.drift is not None:
        extra["cusum_drift"] = args.drift
    if args.window is not None:
        extra["window_bins"] = args.window
    analyzers = {
        name: TemporalAnalyzer(
            geometry,
            TemporalSettings(n_bins=args.bins, restore=restore, n_iter=args.n_iter, **extra),
            profile=profile,
        )
        for name, restore in (("raw", False), ("restored", True))
    }
    figures = {
        name: {"delays": {}, "missed": {}, "early": 0, "false": 0, "armed": 0, "null_armed": 0,
               "scores": []}
        for name in analyzers
    }  # fmt: skip
    started = time.perf_counter()
    for kind in kinds:
        for seed in seeds:
            for repeat in range(args.repeat_null if kind == "none" else 1):
                patterns, temperatures, onset = render_patterns(
                    geometry, integrator, seed, kind, repeat, args.reactive
                )
                for name, analyzer in analyzers.items():
                    alarms, armed, scores = run(analyzer, patterns, temperatures, args.time_trend)
                    fig = figures[name]
                    if kind == "none":
                        fig["false"] += len(alarms)
                        fig["null_armed"] += armed
                        fig["scores"].extend(scores)
                        continue
                    before = [a for a in alarms if a.frame_index < onset]
                    after = [a for a in alarms if a.frame_index >= onset]
                    fig["early"] += len(before)
                    fig["armed"] += armed
                    if after:
                        fig["delays"].setdefault(kind, []).append(after[0].frame_index - onset)
                    else:
                        fig["missed"].setdefault(kind, []).append(seed)
        print(f"{kind}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    for name, fig in figures.items():
        print(f"\n== {name} ==")
        for kind in kinds:
            if kind == "none":
                continue
            delays = np.array(fig["delays"].get(kind, []))
            missed = fig["missed"].get(kind, [])
            n = delays.size + len(missed)
            if n == 0:
                continue
            text = f"{kind}: detected {delays.size}/{n}"
            if delays.size:
                text += (
                    f", delay median {np.median(delays):.1f} frames, "
                    f"90% {np.percentile(delays, 90):.1f}, max {delays.max()}"
                )
            if missed:
                text += f", missed seeds {missed[:10]}"
            print(text)
        if fig["armed"]:
            print(f"early alarms (before onset) on event sequences: {fig['early']}")
        if fig["null_armed"]:
            rate = 1e4 * fig["false"] / fig["null_armed"]
            scores = np.array(fig["scores"])
            print(
                f"none: {fig['false']} false alarms in {fig['null_armed']} armed frames "
                f"({rate:.2f} per 10,000); score mean {scores.mean():.2f}, sd {scores.std():.2f}, "
                f"99.9% {np.percentile(scores, 99.9):.2f}"
            )


if __name__ == "__main__":
    main()
