"""Super-resolution benchmark: held-out quality, real tomography data, and speed.

A standalone script (not a test). Three parts, each optional:

``--table`` (quality, x2 and/or x4)
    The held-out synthetic set of :func:`asirp.sr.data.heldout_set` (an AG300 copper mesh, a
    seed-like tissue, a Siemens star and a tomography projection of an ellipsoid phantom, each
    256 x 256 fine pixels, blurred by a Gaussian beam of sigma 0.75 measured pixels, area-sampled
    and Poisson-noised at 200 counts, the projection at 400). For every map: PSNR and SSIM against
    the fine-grid truth of bicubic interpolation, Richardson-Lucy deconvolution (ASIRP's default:
    stopped at the Poisson discrepancy, true PSF) followed by bicubic interpolation, ``zssr``
    (default parameters, true PSF), ``fca_sr`` and ``rrdb_sr`` (shipped weights), and the
    consistency residual of the three networks (:mod:`asirp.sr.consistency`).
``--tooth`` (real data)
    The tooth tomography of ``tests/data/real/tomopy/tooth.h5`` (TomoPy's; 181 projections of 2
    rows x 640 px), flat/dark corrected; a 2-row projection is too small to super-resolve in 2-D,
    so its two sinograms (181 x 640) go through every method at x2, and the consistency
    residuals are printed. No PSF is given: the beam is estimated from the data.
``--timing`` (speed)
    x2 of one 1024 x 1024 single-channel map per method: median of ``--repeats`` runs after a
    warm-up (``zssr``: one run, dominated by its training) of :func:`asirp.restore` on the
    CPU with ``--threads`` torch threads, and on a CUDA GPU when one is present (float16,
    synchronised).

How to run, from the repository root::

    .venv/bin/python bench/bench_sr.py                       # all three parts
    .venv/bin/python bench/bench_sr.py --timing --repeats 5 --threads 2
    .venv/bin/python bench/bench_sr.py --timing --methods fca_sr beam_sr rrdb_sr rl_sr
    .venv/bin/python bench/bench_sr.py --table --scales 2 4 --json out/bench_sr.json

The header prints the load average: other work on the same cores slows multi-threaded torch a
lot, so compare timings taken on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import asirp
from asirp.metrics import psnr, ssim
from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.data import heldout_set
from asirp.sr.models import bicubic_upsample

TOOTH = Path(__file__).resolve().parents[1] / "tests" / "data" / "real" / "tomopy" / "tooth.h5"
NETWORKS = ("zssr", "fca_sr", "rrdb_sr")


def bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return bicubic_upsample(tensor, scale)[0, 0].numpy()


def quiet_restore(image: np.ndarray, method: str, **kwargs: Any) -> asirp.Restoration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        return asirp.restore(image, method, **kwargs)


def quality_table(scale: int) -> list[dict[str, Any]]:
    rows = []
    for image in heldout_set(scale):
        row: dict[str, Any] = {"image": image.name}
        row["bicubic"] = bicubic(image.measured, scale)
        deconvolved = asirp.restore(
            image.measured, "richardson_lucy", psf_sigma_px=image.sigma_px, device="cpu"
        )
        row["rl_iterations"] = deconvolved.params.get("iterations_run")
        row["rl+bicubic"] = bicubic(deconvolved.image, scale)
        for method in NETWORKS:
            result = quiet_restore(
                image.measured, method, psf_sigma_px=image.sigma_px, scale=scale, device="cpu"
            )
            row[method] = result.image
            row[f"{method}_rho"] = result.metrics["consistency_residual"]
            if method == "zssr":
                row["zssr_iterations"] = result.params["iterations_run"]
                row["zssr_stopped_by"] = result.params["stopped_by"]
        for name in ("bicubic", "rl+bicubic", *NETWORKS):
            fine = row.pop(name)
            row[f"{name}_psnr"] = psnr(image.truth, fine)
            row[f"{name}_ssim"] = ssim(image.truth, fine)
        rows.append(row)
        print(
            f"  {image.name:10s} zssr {row['zssr_iterations']} iterations "
            f"({row['zssr_stopped_by']}); "
            + " ".join(
                f"{name} {row[f'{name}_psnr']:.2f}" for name in ("bicubic", "rl+bicubic", *NETWORKS)
            ),
            flush=True,
        )
    return rows


def print_table(scale: int, rows: list[dict[str, Any]]) -> None:
    names = ("bicubic", "rl+bicubic", *NETWORKS)
    print(f"\nHeld-out set, x{scale}: PSNR dB (SSIM)")
    print("| image | " + " | ".join(names) + " | consistency residual zssr / fca_sr / rrdb_sr |")
    print("|---" * (len(names) + 2) + "|")
    for row in rows:
        cells = [f"{row[f'{n}_psnr']:.2f} ({row[f'{n}_ssim']:.3f})" for n in names]
        rho = " / ".join(f"{row[f'{n}_rho']:.2f}" for n in NETWORKS)
        print(f"| {row['image']} | " + " | ".join(cells) + f" | {rho} |")
    means = [np.mean([row[f"{n}_psnr"] for row in rows]) for n in names]
    print("| mean | " + " | ".join(f"{m:.2f}" for m in means) + " | |")
    fca_gain = np.mean([row["fca_sr_psnr"] - row["bicubic_psnr"] for row in rows])
    zssr_gain = np.mean([row["zssr_psnr"] - row["bicubic_psnr"] for row in rows])
    wins = sum(row["fca_sr_psnr"] > row["rl+bicubic_psnr"] for row in rows)
    print(
        f"fca_sr - bicubic: {fca_gain:+.2f} dB (mean); zssr - bicubic: {zssr_gain:+.2f} dB; "
        f"fca_sr beats RL+bicubic on {wins} of {len(rows)}"
    )


def tooth_sinograms() -> np.ndarray:
    import h5py

    with h5py.File(TOOTH, "r") as handle:
        data = handle["exchange/data"][()].astype(np.float64)
        white = handle["exchange/data_white"][()].astype(np.float64).mean(axis=0)
        dark = handle["exchange/data_dark"][()].astype(np.float64).mean(axis=0)
    transmission = (data - dark) / np.maximum(white - dark, 1e-6)  # (181, 2, 640)
    return np.ascontiguousarray(transmission.transpose(1, 0, 2), dtype=np.float32)  # (2, 181, 640)


def tooth_report() -> list[dict[str, Any]]:
    sinograms = tooth_sinograms()
    print(f"\ntooth.h5: sinograms {sinograms.shape} (transmission), x2, beam estimated")
    rows = []
    for method in NETWORKS:
        started = time.perf_counter()
        result = quiet_restore(sinograms, method, scale=2, device="cpu")
        row = {
            "method": method,
            "shape": list(result.image.shape),
            "consistency_residual": result.metrics["consistency_residual"],
            "consistency_relative": result.metrics["consistency_relative"],
            "consistent": result.metrics["consistent"],
            "beam_sigma_px": result.params["beam_sigma_px"],
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(
            f"  {method:8s} -> {tuple(row['shape'])}: residual {row['consistency_residual']:.2f} "
            f"noise sigmas (relative {row['consistency_relative']:.4f}), consistent "
            f"{row['consistent']}, beam {row['beam_sigma_px']} px, {row['seconds']:.1f} s"
        )
    return rows


TIMED_METHODS = ("fca_sr", "beam_sr", "rrdb_sr", "rl_sr", "zssr")


def timing(
    size: int, repeats: int, methods: tuple[str, ...] = TIMED_METHODS
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    image = rng.poisson(200.0 * np.clip(rng.random((size, size)), 0.1, 1.0)).astype(np.float32)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"\nx2 of one {size} x {size} map (median of {repeats} after a warm-up)")
    for device in devices:
        for method in methods:
            runs = 1 if method == "zssr" else repeats
            params = {"scale": 2, "device": device, "psf_sigma_px": 0.75}
            if method != "zssr":
                quiet_restore(image, method, **params)  # warm-up: weights, kernels
            times = []
            for _ in range(runs):
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                result = quiet_restore(image, method, **params)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
            row = {"device": device, "method": method, "median_s": statistics.median(times)}
            row["times_s"] = times
            if method == "zssr":
                row["training_s"] = result.params["training_s"]
                row["iterations_run"] = result.params["iterations_run"]
            rows.append(row)
            extra = (
                f" (training {row['training_s']:.1f} s, {row['iterations_run']} iterations)"
                if method == "zssr"
                else ""
            )
            print(f"  {device:5s} {method:8s} {row['median_s']:.3f} s{extra}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="held-out quality table")
    parser.add_argument("--tooth", action="store_true", help="real tooth.h5 sinograms")
    parser.add_argument("--timing", action="store_true", help="1024 x 1024 timings")
    parser.add_argument("--scales", type=int, nargs="+", default=[2], help="table scales")
    parser.add_argument("--size", type=int, default=1024, help="timing map side, px")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=TIMED_METHODS,
        default=list(TIMED_METHODS),
        help="methods to time (default: all; zssr trains on the 1024² map: minutes)",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    every = not (args.table or args.tooth or args.timing)
    torch.set_num_threads(args.threads)
    print(
        f"asirp {asirp.__version__}, torch {torch.__version__}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, CUDA "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    report: dict[str, Any] = {}
    if args.table or every:
        for scale in args.scales:
            rows = quality_table(scale)
            print_table(scale, rows)
            report[f"heldout_x{scale}"] = rows
    if args.tooth or every:
        report["tooth"] = tooth_report()
    if args.timing or every:
        report["timing"] = timing(args.size, args.repeats, tuple(args.methods))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
