"""Evaluation of ``method="auto"`` (the measured selector) on a held-out synthetic set.

A standalone script (not a test). It builds a set of simulated maps with known truth from a seed
that was never used to tune the selector (:data:`EVAL_SEED`; the score's band floor and the
candidate grids were fixed on other seeds, other PSF widths and 96 x 96 maps), restores every map
with every candidate the thorough selector considers (in hindsight, with the truth) and with
``asirp.restore(..., method="auto")``, and prints:

1. one row per case: input PSNR, the best candidate in hindsight, auto's choice (thorough and
   cheap modes) and its PSNR, and the shortfall;
2. the mean PSNR of every fixed candidate (each method setting, and the old rule-based ``auto``),
   against auto's and the best-in-hindsight mean;
3. the share of cases where auto is within 0.5 dB of the best candidate, and whether it ever
   returned something worse than the input;
4. the Spearman rank correlation between the no-reference score and the true PSNR across the
   candidates of each case, averaged per sample type;
5. the latency check: ``asirp.restore(map, "auto", budget_ms=200)`` on a 256 x 256 map, the
   first (cold) call, then the median of repeated calls after
   :func:`asirp.selection.measure_costs` has timed the candidates.

The set: 4 sample types (a copper mesh of random pitch and angle, seed-like tissue with
hotspots, a Siemens star with a random number of spokes, random blobs and lines) x 3 count
levels (peak 10, 100, 1000 counts per pixel above a 5 % background) x 2 Gaussian beams
(sigma 1.2 and 2.5 px), 128 x 128 px by default, Poisson noise.

How to run
----------
From the repository root::

    .venv/bin/python bench/eval_selector.py               # held-out set + timing (minutes)
    .venv/bin/python bench/eval_selector.py --size 96 --no-timing
    .venv/bin/python bench/eval_selector.py --timing-only --repeats 9

Times depend on the machine's load: the header prints the load average and torch's thread count.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch

import asirp
from asirp.metrics import blur, psnr
from asirp.phantoms import copper_mesh, hotspot_tissue, siemens_star
from asirp.psf import gaussian_psf
from asirp.selection import COSTS, Candidate
from asirp.selection.candidates import fitting_candidates
from asirp.selection.prior import choose_method

EVAL_SEED = 20250611
"""Seed of the held-out set (never used while tuning the selector)."""
KINDS = ("mesh", "tissue", "star", "blobs_lines")
PEAKS = (10.0, 100.0, 1000.0)
SIGMAS_PX = (1.2, 2.5)


def blobs_and_lines(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random Gaussian blobs and thin straight lines, supersampled; values in [0, 1]."""
    factor = 4
    rows, cols = shape[0] * factor, shape[1] * factor
    y, x = np.mgrid[:rows, :cols] / factor
    image = np.zeros((rows, cols))
    for _ in range(int(rng.integers(15, 30))):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        sigma = rng.uniform(0.8, 6.0)
        image += rng.uniform(0.2, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    for _ in range(int(rng.integers(4, 9))):
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        distance = np.abs((y - cy) * np.cos(angle) - (x - cx) * np.sin(angle))
        image += rng.uniform(0.3, 1.0) * (distance < rng.uniform(0.3, 1.0))
    image = image.reshape(shape[0], factor, shape[1], factor).mean(axis=(1, 3))
    return image / image.max()


def phantom(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One held-out sample of ``kind``, fraction in [0, 1] (about)."""
    if kind == "mesh":
        return copper_mesh(
            shape,
            10.0,
            hole_um=float(rng.uniform(45.0, 90.0)),
            bar_um=float(rng.uniform(18.0, 35.0)),
            angle_deg=float(rng.uniform(0.0, 25.0)),
        )
    if kind == "tissue":
        image = hotspot_tissue(shape, 10.0, seed=int(rng.integers(1_000_000)))
        return image / image.max()
    if kind == "star":
        return siemens_star(shape, spokes=int(rng.integers(14, 36)))
    return blobs_and_lines(shape, rng)


@dataclass
class Case:
    """One held-out map: its type, peak counts, beam sigma (px), truth and measurement."""

    kind: str
    peak: float
    sigma: float
    truth: np.ndarray
    measured: np.ndarray


def held_out_set(size: int, seed: int) -> list[Case]:
    """Every (kind, peak, sigma) case, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    cases = []
    for kind, peak, sigma in itertools.product(KINDS, PEAKS, SIGMAS_PX):
        truth = peak * (phantom(kind, (size, size), rng) + 0.05)
        measured = rng.poisson(blur(truth, gaussian_psf(sigma))).astype(np.float32)
        cases.append(Case(kind, peak, sigma, truth, measured))
    return cases


def run_case(case: Case, seed: int) -> dict:
    """PSNR of every candidate and of auto (both modes), and the scores, for one case."""
    candidates, _ = fitting_candidates(
        scale=1, has_psf=True, psf_known=True, mode="thorough", fixed={}
    )
    truth_psnr = {}
    for candidate in candidates:
        if candidate.method == "identity":
            truth_psnr[candidate.label] = psnr(case.truth, case.measured)
            continue
        result = asirp.restore(
            case.measured, candidate.method, psf_sigma_px=case.sigma, seed=seed, **candidate.params
        )
        truth_psnr[candidate.label] = psnr(case.truth, result.image)
    rule = choose_method(case.measured[None], True)
    rule_result = asirp.restore(case.measured, rule.method, psf_sigma_px=case.sigma, **rule.params)
    row = {"psnr": truth_psnr, "rule_psnr": psnr(case.truth, rule_result.image)}
    for mode in ("thorough", "cheap"):
        started = time.perf_counter()
        result = asirp.restore(
            case.measured,
            "auto",
            psf_sigma_px=case.sigma,
            reference=case.truth,
            seed=seed,
            mode=mode,
        )
        selection = result.params["selection"]
        label = Candidate.make(result.method, selection["params"]).label
        row[mode] = {
            "label": label,
            "psnr": result.metrics["psnr"],
            "seconds": time.perf_counter() - started,
            "scores": {
                entry["label"]: entry["score"]
                for entry in selection["candidates"]
                if entry["score"] is not None
            },
        }
    return row


def spearman(scores: dict[str, float], truth: dict[str, float]) -> float:
    """Rank correlation of -score with the true PSNR over the scored candidates."""
    labels = [label for label in scores if label in truth]
    return float(
        scipy.stats.spearmanr([-scores[x] for x in labels], [truth[x] for x in labels]).statistic
    )


def evaluate(size: int, seed: int) -> dict:
    cases = held_out_set(size, seed)
    rows = []
    print(
        f"{'case':24s} {'input':>6s} {'best (hindsight)':>44s} {'auto':>6s} {'short':>5s} "
        f"{'auto choice':40s} {'cheap':>6s} {'rho':>5s} {'s':>5s}"
    )
    for case in cases:
        row = run_case(case, seed)
        truth = row["psnr"]
        best_label = max(truth, key=truth.get)
        auto = row["thorough"]
        cheap = row["cheap"]
        rho = spearman(auto["scores"], truth)
        rows.append({"case": case, "row": row, "best": truth[best_label], "rho": rho})
        name = f"{case.kind} p{case.peak:g} s{case.sigma:g}"
        print(
            f"{name:24s} {truth['identity']:6.2f} {best_label[:36]:>36s} {truth[best_label]:7.2f} "
            f"{auto['psnr']:6.2f} {truth[best_label] - auto['psnr']:5.2f} "
            f"{auto['label'][:40]:40s} {cheap['psnr']:6.2f} {rho:5.2f} {auto['seconds']:5.1f}",
            flush=True,
        )
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    labels = list(rows[0]["row"]["psnr"])
    fixed = {label: float(np.mean([r["row"]["psnr"][label] for r in rows])) for label in labels}
    fixed["rule-based auto (before)"] = float(np.mean([r["row"]["rule_psnr"] for r in rows]))
    auto = np.array([r["row"]["thorough"]["psnr"] for r in rows])
    cheap = np.array([r["row"]["cheap"]["psnr"] for r in rows])
    best = np.array([r["best"] for r in rows])
    inputs = np.array([r["row"]["psnr"]["identity"] for r in rows])
    print("\nMean PSNR over the held-out set (dB)")
    print(f"  {'best candidate in hindsight':48s} {best.mean():6.2f}")
    print(f"  {'auto (thorough)':48s} {auto.mean():6.2f}")
    print(f"  {'auto (cheap)':48s} {cheap.mean():6.2f}")
    for label, value in sorted(fixed.items(), key=lambda item: -item[1]):
        print(f"  {'fixed: ' + label:48s} {value:6.2f}")
    summary = {
        "cases": len(rows),
        "within_0.5dB_thorough": float(np.mean(best - auto <= 0.5)),
        "within_0.5dB_cheap": float(np.mean(best - cheap <= 0.5)),
        "never_worse_than_input_thorough": bool(np.all(auto >= inputs)),
        "never_worse_than_input_cheap": bool(np.all(cheap >= inputs)),
        "auto_mean": float(auto.mean()),
        "cheap_mean": float(cheap.mean()),
        "best_mean": float(best.mean()),
        "best_fixed": max(fixed, key=fixed.get),
        "best_fixed_mean": max(fixed.values()),
        "beats_every_fixed_method": bool(auto.mean() > max(fixed.values())),
        "mean_shortfall_db": float(np.mean(best - auto)),
        "max_shortfall_db": float(np.max(best - auto)),
    }
    share = 100 * summary["within_0.5dB_thorough"]
    print(
        f"\nauto within 0.5 dB of the best candidate: {share:.0f} %"
        f" of {len(rows)} cases (cheap mode: {100 * summary['within_0.5dB_cheap']:.0f} %); "
        f"mean shortfall {summary['mean_shortfall_db']:.2f} dB, "
        f"largest {summary['max_shortfall_db']:.2f} dB"
    )
    print(
        "never worse than the input: "
        f"thorough {summary['never_worse_than_input_thorough']}, "
        f"cheap {summary['never_worse_than_input_cheap']}"
    )
    print(
        f"auto beats every fixed method's mean: {summary['beats_every_fixed_method']} "
        f"(best fixed: {summary['best_fixed']}, {summary['best_fixed_mean']:.2f} dB)"
    )
    print("\nSpearman rank correlation of the score with the true PSNR, across candidates")
    per_kind = {}
    for kind in KINDS:
        values = [r["rho"] for r in rows if r["case"].kind == kind]
        per_kind[kind] = float(np.mean(values))
        print(
            f"  {kind:12s} mean {np.mean(values):5.2f}  min {np.min(values):5.2f}  "
            f"({len(values)} cases)"
        )
    print(f"  {'all':12s} mean {np.mean([r['rho'] for r in rows]):5.2f}")
    summary["spearman_per_kind"] = per_kind
    return summary


def timing(repeats: int, budget_ms: float, seed: int) -> dict:
    """``restore(..., "auto", budget_ms=...)`` on a 256 x 256 mesh map: cold, then warmed up.

    The cold call starts from an empty cost cache: :func:`asirp.restore` then times the
    candidates at this size first (``metrics["cost_measurement_s"]``, outside the budget); then
    :func:`asirp.selection.measure_costs` times the cheap mode's candidates at this size (what a
    beamline does once before live scans) and ``repeats`` calls are timed.
    """
    from asirp.selection import measure_costs

    rng = np.random.default_rng(seed + 1)
    truth = 100.0 * (copper_mesh((256, 256), 10.0) + 0.05)
    measured = rng.poisson(blur(truth, gaussian_psf(2.12))).astype(np.float32)
    beam = {"beam_fwhm_um": 50.0, "pixel_um": 10.0}
    COSTS.clear()

    def call() -> tuple[float, str, int, float]:
        started = time.perf_counter()
        result = asirp.restore(measured, "auto", **beam, budget_ms=budget_ms, seed=seed)
        elapsed = 1e3 * (time.perf_counter() - started)
        selection = result.params["selection"]
        label = Candidate.make(result.method, selection["params"]).label
        scored = sum(1 for c in selection["candidates"] if c["score"] is not None)
        return elapsed, label, scored, psnr(truth, result.image)

    cold = call()
    started = time.perf_counter()
    measure_costs((256, 256), **beam, mode="cheap")
    warm_up_s = time.perf_counter() - started
    runs = [call() for _ in range(repeats)]
    times = [run[0] for run in runs]
    print(
        f"\nbudget {budget_ms:.0f} ms, 256x256 mesh map, beam 50 µm FWHM at 10 µm steps, "
        f"input PSNR {psnr(truth, measured):.2f} dB"
    )
    print(
        f"  cold call (empty cost cache, measured first): {cold[0]:.0f} ms, {cold[1]}, "
        f"{cold[2]} scored"
    )
    print(f"  measure_costs warm-up: {warm_up_s:.1f} s")
    print(
        f"  {repeats} calls after it: median {statistics.median(times):.0f} ms, "
        f"max {max(times):.0f} ms, {sum(t <= budget_ms for t in times)}/{repeats} within budget"
    )
    for label in sorted({run[1] for run in runs}):
        chosen = [run for run in runs if run[1] == label]
        print(
            f"    chose {label} {len(chosen)}x ({chosen[0][2]} scored, PSNR {chosen[0][3]:.2f} dB)"
        )
    return {
        "budget_ms": budget_ms,
        "cold_ms": cold[0],
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "within_budget": sum(t <= budget_ms for t in times),
        "repeats": repeats,
        "choices": sorted({run[1] for run in runs}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="map side, px")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the held-out set")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls after the cold one")
    parser.add_argument("--budget-ms", type=float, default=200.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--json", help="write the summary to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"asirp {asirp.__version__}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, load average {os.getloadavg()[0]:.2f}, seed {args.seed}"
    )
    summary: dict = {}
    if not args.timing_only:
        summary["held_out"] = evaluate(args.size, args.seed)
    if not args.no_timing:
        summary["timing"] = timing(args.repeats, args.budget_ms, args.seed)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(summary, stream, indent=2)


if __name__ == "__main__":
    main()
