"""Benchmark of ASIRP's Richardson-Lucy deconvolution on the CPU.

A standalone script (not a test) that times the engine and prints a results table. Every time is
the median of ``--repeats`` runs (default 5) after one warm-up run, taken with
:func:`time.perf_counter` in one process. The inputs are Poisson-noisy, blurred random-blob
phantoms made from a seeded generator; the PSF is ``asirp.psf.gaussian_psf(3.0)`` (sigma 3 px,
25 x 25).

What is measured
----------------
1. Richardson-Lucy (RL) on a 1024 x 1024 float32 map, 10 iterations, ``stop="fixed"``, no
   acceleration, on the CPU: :func:`asirp.restore` with the boundaries ``"extend"`` (default),
   ``"periodic"`` and ``"zero"``, with one torch thread, and with one iteration (whose time, less
   one iteration's cost, is the non-iterative overhead of :func:`asirp.restore`: checks, PSF,
   set-up FFTs, quality metrics); and the RL kernel alone
   (``asirp.methods.richardson_lucy.run`` on a tensor, without the :func:`asirp.restore`
   wrapper). It is compared with :func:`skimage.restoration.richardson_lucy` (``clip=False``) on
   the same input, as the ratio skimage / asirp.
2. The FFT floor: 10 iterations' worth of the FFTs RL needs (2 ``rfft2`` + 2 ``irfft2`` per
   iteration) alone, in torch, on the padded grid of ``BlurOperator(...).fft_shape`` for the
   ``"extend"`` boundary, and RL's time relative to it.
3. Blind RL against non-blind RL (no acceleration) on a 512 x 512 map: each timed at 10 and 30
   iterations; the cost per iteration is ``(t30 - t10) / 20`` and the table gives its ratio.
4. A stack of 64 maps of 512 x 512, RL with 10 iterations in one call: total time and time per
   map, against scikit-image's RL on 4 of the maps (time per map).

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_deconvolution.py              # full run, a few minutes
    .venv/bin/python bench/bench_deconvolution.py --quick      # small sizes, a few seconds
    .venv/bin/python bench/bench_deconvolution.py --repeats 9 --threads 1

scikit-image's RL runs single-threaded (``scipy.signal.convolve``); torch uses
``torch.get_num_threads()`` threads (set with ``--threads``), which the header prints, so the
table also gives asirp with one thread for a like-for-like comparison. The header and footer
print the load average: the machine should be otherwise idle, since other work on the same cores
makes multi-threaded torch much slower (its threads wait for each other at every operation).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy
import scipy.ndimage
import scipy.signal
import skimage
import skimage.restoration
import torch

import asirp
from asirp.blur import BlurOperator
from asirp.psf import gaussian_psf
from asirp.registry import Problem, get_method

PSF_SIGMA_PX = 3.0
SEED = 20240521


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one benchmark run.

    Attributes
    ----------
    large : int
        Side of the single large map (sections 1 and 2).
    medium : int
        Side of the maps of sections 3 and 4.
    stack : int
        Number of maps in the stack (section 4).
    skimage_maps : int
        Number of maps of the stack given to scikit-image (section 4).
    iterations : int
        RL iterations of sections 1, 2 and 4, and the shorter run of section 3.
    long_iterations : int
        The longer run of section 3.
    """

    large: int = 1024
    medium: int = 512
    stack: int = 64
    skimage_maps: int = 4
    iterations: int = 10
    long_iterations: int = 30


FULL = Sizes()
QUICK = Sizes(large=256, medium=128, stack=8, skimage_maps=2)


# --- inputs -------------------------------------------------------------------------------------


def blob_phantoms(
    count: int, side: int, psf: np.ndarray, rng: np.random.Generator, peak_counts: float = 200.0
) -> np.ndarray:
    """Poisson counts of ``count`` blurred random-blob maps, ``(count, side, side)`` float32.

    Each map is random point sources spread into Gaussian blobs of two sizes (sigma 2 and 6 px)
    on a flat background, scaled to about ``peak_counts`` at the brightest blob, blurred by
    ``psf`` and drawn from a Poisson distribution.
    """
    shape = (count, side, side)
    objects = np.zeros(shape)
    blobs_per_map = max(4, side * side // 2000)
    for sigma in (2.0, 6.0):
        impulses = np.zeros(shape)
        index = rng.integers(0, side, size=(count, blobs_per_map, 2))
        which = np.repeat(np.arange(count), blobs_per_map)
        impulses[which, index[..., 0].ravel(), index[..., 1].ravel()] = rng.uniform(
            0.2, 1.0, size=count * blobs_per_map
        )
        objects += scipy.ndimage.gaussian_filter(impulses, sigma=(0, sigma, sigma)) * sigma**2
    objects *= peak_counts / objects.max()
    objects += 0.05 * peak_counts
    blurred = scipy.signal.fftconvolve(objects, psf[None], mode="same", axes=(-2, -1))
    return rng.poisson(np.clip(blurred, 0.0, None)).astype(np.float32)


# --- timing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall times (s) of repeated calls of one case.

    Attributes
    ----------
    median, fastest, slowest : float
        Median, minimum and maximum over the timed calls.
    """

    median: float
    fastest: float
    slowest: float


def time_calls(function: Callable[[], object], repeats: int) -> Timing:
    """Time ``repeats`` calls of ``function`` after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return Timing(statistics.median(times), min(times), max(times))


def asirp_rl(image: np.ndarray, psf: np.ndarray, iterations: int, **params) -> Callable[[], None]:
    """Return a call of :func:`asirp.restore` (RL, fixed count, no acceleration, CPU) to time."""

    def call() -> None:
        result = asirp.restore(
            image,
            "richardson_lucy",
            psf=psf,
            iterations=iterations,
            stop="fixed",
            acceleration=False,
            device="cpu",
            **params,
        )
        check_iterations(result.params["iterations_run"], iterations)

    return call


def rl_kernel(image: np.ndarray, psf: np.ndarray, iterations: int) -> Callable[[], None]:
    """Return a call of the RL kernel alone on a tensor (no checks, metrics or copies back)."""
    spec = get_method("richardson_lucy")
    params = spec.resolve_params({"iterations": iterations, "stop": "fixed", "acceleration": False})
    problem = Problem(
        data=torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)),
        psf=torch.from_numpy(psf),
        device=torch.device("cpu"),
    )

    def call() -> None:
        check_iterations(spec.run(problem, params).info["iterations_run"], iterations)

    return call


def asirp_blind_rl(image: np.ndarray, psf: np.ndarray, iterations: int) -> Callable[[], None]:
    """Return a call of :func:`asirp.restore` (blind RL, fixed count, CPU) to time."""

    def call() -> None:
        result = asirp.restore(
            image,
            "blind_richardson_lucy",
            psf=psf,
            iterations=iterations,
            stop="fixed",
            device="cpu",
        )
        check_iterations(result.params["iterations_run"], iterations)

    return call


def check_iterations(iterations_run: int | list[int], expected: int) -> None:
    """Fail loudly if a run did not make the iterations it was timed for."""
    counts = iterations_run if isinstance(iterations_run, list) else [iterations_run]
    if any(count != expected for count in counts):
        raise RuntimeError(f"expected {expected} iterations per map, got {iterations_run}")


def skimage_rl(images: np.ndarray, psf: np.ndarray, iterations: int) -> Callable[[], None]:
    """Return scikit-image's RL on each map of ``images`` ``(B, H, W)`` in turn, to time."""

    def call() -> None:
        for image in images:
            skimage.restoration.richardson_lucy(image, psf, num_iter=iterations, clip=False)

    return call


def fft_floor(fft_shape: tuple[int, int], iterations: int) -> Callable[[], None]:
    """Return the FFTs alone of ``iterations`` RL iterations (2 rfft2 + 2 irfft2 each)."""
    grid = torch.rand((1, *fft_shape), dtype=torch.float32)
    spectrum = torch.fft.rfft2(grid)

    def call() -> None:
        for _ in range(iterations):
            for _ in range(2):
                torch.fft.rfft2(grid)
                torch.fft.irfft2(spectrum, s=fft_shape)

    return call


def with_threads(threads: int, function: Callable[[], None]) -> Callable[[], None]:
    """Wrap ``function`` to run with ``threads`` torch threads (then restore the count)."""

    def call() -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            function()
        finally:
            torch.set_num_threads(previous)

    return call


# --- output -------------------------------------------------------------------------------------


def print_header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'case':<52} {'median':>11}   {'min - max (ms)':>17}")


def print_row(case: str, timing: Timing | float) -> None:
    if isinstance(timing, Timing):
        spread = f"{timing.fastest * 1e3:8.1f} - {timing.slowest * 1e3:.1f}"
        print(f"  {case:<52} {timing.median * 1e3:>8.1f} ms   {spread}")
    else:
        print(f"  {case:<52} {timing * 1e3:>8.1f} ms")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a" where the system has none."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def print_figure(label: str, value: str) -> None:
    print(f"  -> {label:<49} {value:>11}")


def print_environment(repeats: int, quick: bool) -> None:
    print("ASIRP deconvolution benchmark" + (" (--quick sizes)" if quick else ""))
    print(
        f"  asirp {asirp.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, scikit-image {skimage.__version__}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"  device cpu, torch.get_num_threads() = {torch.get_num_threads()}, "
        f"CPU count = {os.cpu_count()}, load average {load_average()}"
    )
    print(f"  each time: median of {repeats} runs after 1 warm-up, time.perf_counter")


# --- sections -----------------------------------------------------------------------------------


def bench_rl_vs_skimage(image: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int) -> dict:
    """Section 1: asirp RL (three boundaries, one thread, one iteration) against scikit-image."""
    n = sizes.iterations
    side = image.shape[-1]
    print_header(
        f"[1] Richardson-Lucy, {side}x{side} float32, Gaussian PSF sigma {PSF_SIGMA_PX:g} px "
        f"({psf.shape[0]}x{psf.shape[1]}), {n} iterations, no acceleration"
    )
    cases = {
        "extend": ("asirp restore, boundary=extend", asirp_rl(image, psf, n)),
        "periodic": (
            "asirp restore, boundary=periodic",
            asirp_rl(image, psf, n, boundary="periodic"),
        ),
        "zero": ("asirp restore, boundary=zero", asirp_rl(image, psf, n, boundary="zero")),
        "one_thread": (
            "asirp restore, boundary=extend, 1 torch thread",
            with_threads(1, asirp_rl(image, psf, n)),
        ),
        "one_iteration": ("asirp restore, boundary=extend, 1 iteration", asirp_rl(image, psf, 1)),
        "kernel": ("asirp RL kernel alone (richardson_lucy.run), extend", rl_kernel(image, psf, n)),
        "skimage": (
            "skimage richardson_lucy (clip=False, 1 thread)",
            skimage_rl(image[None], psf, n),
        ),
    }
    times = {}
    for key, (case, call) in cases.items():
        timing = time_calls(call, repeats)
        print_row(case, timing)
        times[key] = timing.median

    per_iteration = (times["extend"] - times["one_iteration"]) / (n - 1)
    overhead = times["one_iteration"] - per_iteration
    print_figure(
        "speed ratio skimage / asirp (extend)", f"{times['skimage'] / times['extend']:.2f}x"
    )
    print_figure(
        "speed ratio skimage / asirp (extend, 1 thread)",
        f"{times['skimage'] / times['one_thread']:.2f}x",
    )
    print_figure(
        "speed ratio skimage / asirp (zero, same boundary)",
        f"{times['skimage'] / times['zero']:.2f}x",
    )
    print_figure(
        "speed ratio skimage / asirp RL kernel alone", f"{times['skimage'] / times['kernel']:.2f}x"
    )
    print_figure(f"asirp per iteration, (t{n} - t1) / {n - 1}", f"{per_iteration * 1e3:.1f} ms")
    print_figure(f"skimage per iteration, t{n} / {n}", f"{times['skimage'] / n * 1e3:.1f} ms")
    print_figure("asirp restore overhead, t1 - per iteration", f"{overhead * 1e3:.1f} ms")
    print_figure(
        "  of which outside the kernel, restore - kernel",
        f"{(times['extend'] - times['kernel']) * 1e3:.1f} ms",
    )
    return {"rl": times["extend"], "kernel": times["kernel"], "per_iteration": per_iteration}


def bench_fft_floor(
    image: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int, rl: dict
) -> None:
    """Section 2: the FFTs RL needs, alone, against RL's measured time."""
    n = sizes.iterations
    operator = BlurOperator(torch.from_numpy(psf), tuple(image.shape[-2:]), "extend")
    shape = operator.fft_shape
    print_header(
        f"[2] FFT floor: {n} x (2 rfft2 + 2 irfft2) on the extend grid "
        f"{shape[0]}x{shape[1]}, torch cpu"
    )
    timing = time_calls(fft_floor(shape, n), repeats)
    floor = timing.median
    print_row(f"FFTs alone ({4 * n} transforms)", timing)
    print_figure("RL (asirp restore, extend) / floor", f"{rl['rl'] / floor:.2f}x")
    print_figure("RL kernel alone / floor", f"{rl['kernel'] / floor:.2f}x")
    print_figure(
        "RL per iteration / floor per iteration", f"{rl['per_iteration'] * n / floor:.2f}x"
    )


def bench_blind(image: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int) -> float:
    """Section 3: per-iteration cost of blind RL relative to non-blind RL."""
    short, long = sizes.iterations, sizes.long_iterations
    side = image.shape[-1]
    print_header(f"[3] Blind vs non-blind RL, {side}x{side}, {short} and {long} iterations")
    per_iteration = {}
    short_rl = 0.0
    for name, make in (
        ("richardson_lucy", lambda count: asirp_rl(image, psf, count)),
        ("blind_richardson_lucy", lambda count: asirp_blind_rl(image, psf, count)),
    ):
        short_timing = time_calls(make(short), repeats)
        long_timing = time_calls(make(long), repeats)
        print_row(f"{name}, {short} iterations", short_timing)
        print_row(f"{name}, {long} iterations", long_timing)
        t_short, t_long = short_timing.median, long_timing.median
        per_iteration[name] = (t_long - t_short) / (long - short)
        print_figure(f"{name} per iteration", f"{per_iteration[name] * 1e3:.2f} ms")
        if name == "richardson_lucy":
            short_rl = t_short
    ratio = per_iteration["blind_richardson_lucy"] / per_iteration["richardson_lucy"]
    print_figure("per-iteration cost blind / non-blind", f"{ratio:.2f}x")
    return short_rl


def bench_stack(
    stack: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int, single_rl: float
) -> None:
    """Section 4: a stack of maps in one call against scikit-image map by map."""
    n = sizes.iterations
    count, side = stack.shape[0], stack.shape[-1]
    subset = stack[: sizes.skimage_maps]
    print_header(f"[4] Stack of {count} x {side}x{side} float32, RL {n} iterations")
    timing = time_calls(asirp_rl(stack, psf, n), repeats)
    per_map = timing.median / count
    print_row(f"asirp restore, whole stack ({count} maps)", timing)
    print_row("asirp restore, per map", per_map)
    print_row(f"asirp restore, one {side}x{side} map alone (from [3])", single_rl)
    skimage_per_map = time_calls(skimage_rl(subset, psf, n), repeats).median / len(subset)
    print_row(f"skimage richardson_lucy, {len(subset)} maps, per map", skimage_per_map)
    print_figure("speed ratio skimage / asirp, per map", f"{skimage_per_map / per_map:.2f}x")
    print_figure("batching gain, single map / per map in stack", f"{single_rl / per_map:.2f}x")


# --- entry point --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per case; the median is reported"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, to check the script runs in seconds"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    rng = np.random.default_rng(SEED)
    psf = gaussian_psf(PSF_SIGMA_PX)
    large = blob_phantoms(1, sizes.large, psf, rng)[0]
    medium = blob_phantoms(1, sizes.medium, psf, rng)[0]
    stack = blob_phantoms(sizes.stack, sizes.medium, psf, rng)

    started = time.perf_counter()
    print_environment(args.repeats, args.quick)
    rl = bench_rl_vs_skimage(large, psf, sizes, args.repeats)
    bench_fft_floor(large, psf, sizes, args.repeats, rl)
    single_rl = bench_blind(medium, psf, sizes, args.repeats)
    bench_stack(stack, psf, sizes, args.repeats, single_rl)
    print(
        f"\nbenchmark wall time {time.perf_counter() - started:.1f} s, "
        f"load average {load_average()}"
    )


if __name__ == "__main__":
    main()
