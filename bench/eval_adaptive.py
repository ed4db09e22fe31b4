"""Adaptive ROI rescans on the simulated seed-like sample: hotspot recall and beam time.

For several sample seeds (never used to tune the defaults) the coarse map of the seed-like sample
is scanned with a 50 µm beam, restored in-process (Richardson-Lucy), and regions are detected on
the restored map and on the raw map with the same rules; recall of the relevant hotspots and
regions without any hotspot are printed for both. The full adaptive scan (coarse + rescans within
a third of a full fine scan) runs for the first seeds and its beam time is printed next to the
full fine scan's.

Run: ``.venv/bin/python bench/eval_adaptive.py [--seeds 10 11 12 ...] [--adaptive 2]``
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from bluesky import RunEngine
from bluesky.plans import grid_scan

import sim
from bluesky_plans.adaptive import AdaptiveReport, adaptive_roi_scan
from bluesky_plans.budget import StageTiming, fine_step_um, grid_scan_time_s
from bluesky_plans.maps import LiveMaps
from bluesky_plans.roi import detect_rois
from callbacks import LiveRestorer
from control_room.evaluation import score_regions

BEAM_UM = 50.0
FIELD_UM = 800.0
HALF_UM = FIELD_UM / 2 - BEAM_UM
ELEMENT = "Se"
CRITERIA = {"min_radius_um": 15.0, "min_concentration": 3.0}


def coarse_maps(seed: int, step_um: float):
    beamline = sim.make_beamline("seed", beam_fwhm_um=BEAM_UM, seed=seed, field_um=FIELD_UM)
    engine = RunEngine({})
    restorer = LiveRestorer(
        element=ELEMENT, normalize="i0", method="richardson_lucy", every_rows=None
    )
    engine.subscribe(restorer)
    n = round(2 * HALF_UM / step_um) + 1
    (uid,) = engine(
        grid_scan(
            beamline.detectors,
            beamline.y,
            -HALF_UM,
            HALF_UM,
            n,
            beamline.x,
            -HALF_UM,
            HALF_UM,
            n,
            snake_axes=True,
            md={"beam_fwhm_um": BEAM_UM},
        )
    )
    restorer.wait(120)
    result = restorer.latest_for(uid)
    restorer.close(10)
    axis = -HALF_UM + step_um * np.arange(n)
    return beamline, result.raw_map, result.restored_map, axis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14, 15])
    parser.add_argument("--steps", type=float, nargs="+", default=[50.0, 25.0])
    parser.add_argument("--adaptive", type=int, default=2, help="full adaptive runs (first seeds)")
    parser.add_argument("--strategy", default="hotspots", help="ROI strategy (hotspots)")
    args = parser.parse_args()
    area = (-HALF_UM, HALF_UM, -HALF_UM, HALF_UM)
    print(
        f"{ELEMENT} hotspots with radius >= {CRITERIA['min_radius_um']} µm and peak >= "
        f"{CRITERIA['min_concentration']} µg/cm²; beam {BEAM_UM} µm; field {2 * HALF_UM} µm"
    )
    print(
        f"{'step':>5} {'seed':>5} | {'restored: recall':>17} {'false':>6} {'regions':>8} | "
        f"{'raw: recall':>12} {'false':>6} {'regions':>8}"
    )
    for step in args.steps:
        totals = {"restored": [0, 0, 0], "raw": [0, 0, 0]}
        for seed in args.seeds:
            beamline, raw, restored, axis = coarse_maps(seed, step)
            rules = {
                "margin_um": BEAM_UM / 2,
                "min_size_um": 2 * BEAM_UM,
                "max_count": 12,
                "bounds_um": area,
            }
            raw_filled = np.where(np.isfinite(raw), raw, np.nanmin(raw))
            found = {}
            for name, image in (("restored", restored), ("raw", raw_filled)):
                regions = detect_rois(image, axis, axis, args.strategy, **rules)
                score = score_regions(
                    regions, beamline.truth.hotspots, element=ELEMENT, area_um=area, **CRITERIA
                )
                found[name] = score
                totals[name][0] += score.found
                totals[name][1] += score.relevant
                totals[name][2] += score.false_regions
            r, w = found["restored"], found["raw"]
            print(
                f"{step:5.0f} {seed:5d} | {r.found:>7}/{r.relevant:<2} ({r.recall:4.0%}) "
                f"{r.false_regions:6d} {r.regions:8d} | {w.found:>3}/{w.relevant:<2} "
                f"({w.recall:4.0%}) {w.false_regions:6d} {w.regions:8d}"
            )
        for name, (hit, relevant, false) in totals.items():
            print(
                f"step {step:g} µm, ROIs on the {name} map: recall {hit}/{relevant} = "
                f"{hit / max(relevant, 1):.0%}, regions without a hotspot {false}"
            )

    print("\nfull adaptive scans (coarse 50 µm, target 20 µm -> fine 10 µm, budget 1/3):")
    fractions = []
    for seed in args.seeds[: args.adaptive]:
        beamline = sim.make_beamline("seed", beam_fwhm_um=BEAM_UM, seed=seed, field_um=FIELD_UM)
        engine = RunEngine({})
        restorer = LiveRestorer(
            element=ELEMENT, normalize="i0", method="richardson_lucy", every_rows=4
        )
        engine.subscribe(restorer)
        timing = StageTiming(dwell_s=beamline.xrf.dwell_time.get(), velocity_um_s=1000.0)
        fine = fine_step_um(BEAM_UM, 20.0, 50.0)
        full = grid_scan_time_s(2 * HALF_UM, 2 * HALF_UM, fine, timing)
        coarse = grid_scan_time_s(2 * HALF_UM, 2 * HALF_UM, 50.0, timing)
        report = AdaptiveReport()
        clock = beamline.clock.now
        engine(
            adaptive_roi_scan(
                beamline.detectors,
                beamline.x,
                beamline.y,
                (-HALF_UM, HALF_UM),
                (-HALF_UM, HALF_UM),
                50.0,
                maps=LiveMaps(restorer),
                beam_fwhm_um=BEAM_UM,
                target_resolution_um=20.0,
                timing=timing,
                max_rois=12,
                strategy=args.strategy,
                max_size_um=4 * BEAM_UM,
                budget_s=full / 3 - coarse,
                report=report,
            )
        )
        simulated = beamline.clock.now - clock
        restorer.close(30)
        score = score_regions(
            report.regions, beamline.truth.hotspots, element=ELEMENT, area_um=area, **CRITERIA
        )
        used = coarse + report.estimated_fine_s
        fractions.append(used / full)
        print(
            f"seed {seed}: recall {score.found}/{score.relevant}, {len(report.regions)} regions; "
            f"beam time estimate {used:.0f} s vs full fine scan {full:.0f} s "
            f"({used / full:.0%}); simulated clock {simulated:.0f} s"
        )
    if fractions:
        print(f"median fraction of a full fine scan: {statistics.median(fractions):.0%}")


if __name__ == "__main__":
    main()
