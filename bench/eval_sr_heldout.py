"""Super-resolution on a held-out set from a different generator than training.

A standalone script (not a test). The set is :func:`asirp.sr.evalset.evaluation_set`: 11 maps
whose content, beams and count levels training never drew (Voronoi grains and foam, curved
fibres, a dot array of varying pitch, a zone plate, five scikit-image test images, and TomoPy's
real tooth sinogram degraded further), each at x2 and x4. For every case and scale it measures,
against the fine-grid truth, the PSNR (dB) and SSIM of:

- ``bicubic``: bicubic interpolation of the measured counts;
- ``rl+bicubic``: ASIRP's ``richardson_lucy`` with the true (possibly anisotropic) PSF and its
  default stop, then bicubic interpolation;
- every registered super-resolution method that accepts the scale (``beam_sr``, ``fca_sr``,
  ``rrdb_sr``, ``zssr``, ``rl_sr``; ``--methods`` chooses), given the true beam
  (``psf_sigma_px`` = the case's sigma, ``(sigma_y, sigma_x)`` when anisotropic; ``beam_sr`` and
  ``rl_sr`` use both axes, the others the geometric mean). ``zssr`` is capped at
  ``--zssr-iterations`` training iterations (default 1,000, against its own default of 2,000) to
  keep the run short; ``--variant`` runs a method with other parameters (a self-ensemble, a
  prior) under its own label.

It prints one table per scale (PSNR, gain over bicubic, the method's consistency flag) and the
acceptance summary per method: the fraction of cases with a gain of at least 1.5 dB over bicubic,
the worst gain (acceptable when >= -0.1 dB), the mean gains over bicubic and over RL+bicubic, and
how many results passed their consistency check (``metrics["consistent"]``).

How to run, from the repository root::

    .venv/bin/python bench/eval_sr_heldout.py --scales 2 4 --json bench/results/sr_heldout.json
    .venv/bin/python bench/eval_sr_heldout.py --scales 2 --methods fca_sr rl_sr --cases dots cell
    .venv/bin/python bench/eval_sr_heldout.py --scales 2 --content-seed 1 --cases grains foam
    .venv/bin/python bench/eval_sr_heldout.py --methods rl_sr \
        --variant rl_sr+tv=rl_sr:tv_weight=0.02 --variant rl_sr+prior=rl_sr:prior_weight=1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import asirp
from asirp.metrics import psnr, ssim
from asirp.registry import get_method
from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.evalset import CONTENT_SEED, NOISE_SEED, EvalCase, case_names, evaluation_set
from asirp.threads import fixed_threads

try:  # reuse the existing SR bench's bicubic (the same upsampling as the networks' skip path)
    from bench_sr import bicubic
except ImportError:  # run from elsewhere: bench/ not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_sr import bicubic

GAIN_TARGET_DB = 1.5
"""A case counts as a win when the method beats bicubic by at least this much."""

WORST_GAIN_FLOOR_DB = -0.1
"""The worst gain over bicubic a method may have on any case."""

BASELINES = ("bicubic", "rl+bicubic")
AUTO = "auto"
"""``--methods ... auto``: the selector at the case's scale (thorough mode, every SR candidate
and bicubic itself as "identity"), then its choice; slow (zssr trains on the split parts)."""


def sr_methods(scale: int, wanted: list[str] | None) -> tuple[list[str], list[str]]:
    """Registered super-resolution methods that accept ``scale``, and the wanted ones missing."""
    registered = asirp.available_methods("super-resolution")
    names = registered if wanted is None else [name for name in wanted if name in registered]
    missing = [] if wanted is None else [n for n in wanted if n not in registered and n != AUTO]
    usable = []
    for name in names:
        spec = get_method(name)
        scale_param = next((p for p in spec.parameters if p.name == "scale"), None)
        if scale_param is None:
            accepts = spec.scale == scale
        else:
            low = scale_param.minimum if scale_param.minimum is not None else 1
            high = scale_param.maximum if scale_param.maximum is not None else scale
            accepts = low <= scale <= high
        if accepts:
            usable.append(name)
    if wanted is not None and AUTO in wanted:
        usable.append(AUTO)
    return usable, missing


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``LABEL=METHOD:NAME=VALUE[,NAME=VALUE...]`` -> ``(label, method, params)``.

    Values are read as JSON where they parse (numbers, true/false), else kept as strings.
    """
    label, _, rest = text.partition("=")
    method, _, settings = rest.partition(":")
    if not label or not method:
        raise argparse.ArgumentTypeError(f"expected LABEL=METHOD:NAME=VALUE,..., got {text!r}")
    params: dict[str, Any] = {}
    for pair in filter(None, settings.split(",")):
        name, _, value = pair.partition("=")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return label, method, params


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {}
"""``--variant`` labels: the method and the parameters each runs with."""


def run_method(case: EvalCase, method: str, zssr_iterations: int) -> dict[str, Any]:
    """One SR method on one case: its image, consistency figures and time, or its error."""
    extra: dict[str, Any] = {"iterations": zssr_iterations} if method == "zssr" else {}
    label = method
    if label in VARIANTS:
        method, params = VARIANTS[label]
        extra = {**extra, **params}
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConsistencyWarning)
            result = asirp.restore(
                case.measured,
                method,
                psf_sigma_px=case.psf_sigma_px,
                scale=case.scale,
                device="cpu",
                **extra,
            )
    except Exception as error:  # a failing method is reported, never ends the bench
        return {"error": f"{type(error).__name__}: {error}"}
    consistent = result.metrics.get("consistent")  # None: the method reports no check
    out: dict[str, Any] = {
        "image": result.image,
        "seconds": time.perf_counter() - started,
        "consistent": None if consistent is None else bool(consistent),
        "consistency_residual": result.metrics.get("consistency_residual"),
    }
    for key in ("iterations_run", "stopped_by"):
        if key in result.params:
            out[key] = result.params[key]
    if method == AUTO:
        out["chose"] = result.method
        out["reason"] = result.params.get("auto_reason", "")
        if "auto_fallback" in result.params:  # the choice learned nothing; the runner-up ran
            out["fallback"] = result.params["auto_fallback"]
    return out


def evaluate_case(case: EvalCase, methods: list[str], zssr_iterations: int) -> dict[str, Any]:
    """PSNR/SSIM of the baselines and of every method on one case."""
    row: dict[str, Any] = {"case": case.name, "results": {}}
    results = row["results"]
    started = time.perf_counter()
    results["bicubic"] = {"image": bicubic(case.measured, case.scale)}
    deconvolved = asirp.restore(
        case.measured, "richardson_lucy", psf_sigma_px=case.psf_sigma_px, device="cpu"
    )
    results["rl+bicubic"] = {
        "image": bicubic(deconvolved.image, case.scale),
        "iterations_run": deconvolved.params.get("iterations_run"),
        "seconds": time.perf_counter() - started,
    }
    for method in methods:
        results[method] = run_method(case, method, zssr_iterations)
    reference = {}
    for name, result in results.items():
        image = result.pop("image", None)
        if image is None:
            continue
        result["psnr"] = psnr(case.truth, image)
        result["ssim"] = ssim(case.truth, image)
        reference[name] = result["psnr"]
    for result in results.values():
        if "psnr" in result:
            result["gain_db"] = result["psnr"] - reference["bicubic"]
            result["gain_over_rl_db"] = result["psnr"] - reference["rl+bicubic"]
    return row


def summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Acceptance figures per method over the cases."""
    summary = {}
    for name in names:
        pairs = [(row["case"], row["results"].get(name, {})) for row in rows]
        done = [result for _, result in pairs if "psnr" in result]
        done_cases = [case for case, result in pairs if "psnr" in result]
        failed = sum(1 for row in rows if "error" in row["results"].get(name, {}))
        if not done:
            summary[name] = {"cases": 0, "failed": failed}
            continue
        gains = np.array([r["gain_db"] for r in done])
        entry: dict[str, Any] = {
            "cases": len(done),
            "failed": failed,
            "mean_psnr": float(np.mean([r["psnr"] for r in done])),
            "mean_ssim": float(np.mean([r["ssim"] for r in done])),
            "fraction_gain_ge_1_5_db": float(np.mean(gains >= GAIN_TARGET_DB)),
            "worst_gain_db": float(gains.min()),
            "worst_case": done_cases[int(np.argmin(gains))],
            "worst_gain_ok": bool(gains.min() >= WORST_GAIN_FLOOR_DB),
            "mean_gain_db": float(gains.mean()),
            "mean_gain_over_rl_db": float(np.mean([r["gain_over_rl_db"] for r in done])),
        }
        if name not in BASELINES:
            entry["consistent"] = sum(r.get("consistent") is True for r in done)
            entry["checked"] = sum(r.get("consistent") is not None for r in done)
        summary[name] = entry
    return summary


def print_scale(scale: int, rows: list[dict[str, Any]], names: list[str], summary: dict) -> None:
    print(f"\nHeld-out set (asirp.sr.evalset), x{scale}: PSNR dB (gain over bicubic; * = flagged)")
    print("| case | beam sigma px | peak / bg | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 3) + "|")
    for row in rows:
        case = row["case_info"]
        beam = "x".join(f"{s:g}" for s in case["sigma_px"])
        cells = []
        for name in names:
            result = row["results"].get(name, {})
            if "psnr" not in result:
                cells.append("error" if "error" in result else "-")
                continue
            flag = "*" if result.get("consistent") is False else ""
            gain = "" if name == "bicubic" else f" ({result['gain_db']:+.2f})"
            cells.append(f"{result['psnr']:.2f}{gain}{flag}")
        peak = f"{case['peak_counts']:g} / {case['background']:g}"
        print(f"| {row['case']} | {beam} | {peak} | " + " | ".join(cells) + " |")
    print(
        f"\nAcceptance, x{scale} (win: gain >= {GAIN_TARGET_DB} dB; worst gain must be >= "
        f"{WORST_GAIN_FLOOR_DB} dB)"
    )
    print(
        "| method | cases | mean PSNR | wins (gain >= 1.5 dB) | worst gain (case) | "
        "mean gain | mean gain over RL+bicubic | consistent |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        entry = summary[name]
        if not entry["cases"]:
            print(f"| {name} | 0 ({entry['failed']} failed) | | | | | | |")
            continue
        worst = f"{entry['worst_gain_db']:+.2f} ({entry['worst_case']})"
        if not entry["worst_gain_ok"]:
            worst += " FAIL"
        consistent = f"{entry['consistent']}/{entry['checked']}" if entry.get("checked") else ""
        print(
            f"| {name} | {entry['cases']} | {entry['mean_psnr']:.2f} | "
            f"{entry['fraction_gain_ge_1_5_db']:.0%} | {worst} | {entry['mean_gain_db']:+.2f} | "
            f"{entry['mean_gain_over_rl_db']:+.2f} | {consistent} |"
        )


def describe(case: EvalCase) -> dict[str, Any]:
    return {
        "name": case.name,
        "source": case.source,
        "fine_shape": list(case.truth.shape),
        "measured_shape": list(case.measured.shape),
        "sigma_px": list(case.sigma_px),
        "peak_counts": case.peak_counts,
        "background": case.background,
        "noise_seed": case.seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], choices=(2, 4))
    parser.add_argument("--methods", nargs="+", help="SR methods (default: all registered)")
    parser.add_argument("--cases", nargs="+", choices=case_names(), help="default: all")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        metavar="LABEL=METHOD:NAME=VALUE,...",
        help="also run a method with parameters, reported as LABEL "
        "(e.g. rl_sr+prior=rl_sr:prior_weight=1)",
    )
    parser.add_argument(
        "--noise-seed",
        type=int,
        default=NOISE_SEED,
        help=f"base seed of the Poisson noise (default {NOISE_SEED}, the reported set; "
        "another gives a second noise draw of the same content)",
    )
    parser.add_argument(
        "--content-seed",
        type=int,
        default=CONTENT_SEED,
        help=f"base seed of the synthetic content (default {CONTENT_SEED}, the reported set; "
        "another draws fresh grains, foam, fibres, dots and zone plate)",
    )
    parser.add_argument("--zssr-iterations", type=int, default=1000, help="zssr training cap")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args()
    if args.json and args.json.exists() and not args.overwrite:
        parser.error(f"{args.json} exists; give --overwrite to replace it")
    torch.set_num_threads(args.threads)
    print(
        f"asirp {asirp.__version__}, torch {torch.__version__}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    report: dict[str, Any] = {
        "meta": {
            "asirp": asirp.__version__,
            "torch": torch.__version__,
            "threads": args.threads,
            "cores": os.cpu_count(),
            "zssr_iterations": args.zssr_iterations,
            "noise_seed": args.noise_seed,
            "content_seed": args.content_seed,
            "load_average_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "registered_sr_methods": asirp.available_methods("super-resolution"),
        }
    }
    # a pinned thread count: the engine would adapt it to the load, which changes the last
    # bits of zssr and the selector, so two runs of the bench would differ
    with fixed_threads(args.threads):
        for scale in args.scales:
            methods, missing = sr_methods(scale, args.methods)
            for label, method, params in args.variant:
                VARIANTS[label] = (method, params)
                methods.append(label)
            if missing:
                print(f"x{scale}: not registered, skipped: {', '.join(missing)}")
            names = [*BASELINES, *methods]
            started = time.perf_counter()
            rows = []
            cases = evaluation_set(
                scale, seed=args.noise_seed, names=args.cases, content_seed=args.content_seed
            )
            for case in cases:
                row = evaluate_case(case, methods, args.zssr_iterations)
                row["case_info"] = describe(case)
                rows.append(row)
                line = " ".join(
                    f"{name} {row['results'][name]['psnr']:.2f}"
                    if "psnr" in row["results"][name]
                    else f"{name} error"
                    for name in names
                )
                print(f"  x{scale} {case.name:15s} {line}", flush=True)
                for name in names:
                    if "error" in row["results"][name]:
                        print(f"    {name}: {row['results'][name]['error']}")
            summary = summarise(rows, names)
            seconds = time.perf_counter() - started
            print_scale(scale, rows, names, summary)
            print(f"x{scale}: {seconds:.0f} s for {len(rows)} cases and {len(names)} methods")
            report[f"x{scale}"] = {
                "methods": names,
                "missing": missing,
                "seconds": seconds,
                "rows": rows,
                "summary": summary,
            }
    report["meta"]["load_average_end"] = os.getloadavg()[0]
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
