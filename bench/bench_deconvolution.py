"""Benchmark of ASIRP's Richardson-Lucy deconvolution on the CPU, against scikit-image.

A standalone script (not a test) that times the engine and prints a results table. Every time is
the median of ``--repeats`` runs (default 5) after one warm-up run, taken with
:func:`time.perf_counter` in one process; the cases of a section run interleaved (one run of each
case per round), so that load from other work on the machine falls on all of them alike. The
inputs are Poisson-noisy, blurred random-blob phantoms made from a seeded generator; the PSF is
``asirp.psf.gaussian_psf(3.0)`` (sigma 3 px, 25 x 25, separable).

What is measured
----------------
0. Compilation: the direct (separable) blur and the metrics run in numba kernels compiled on
   first use and cached on disk (``cache=True``). A fresh process with an empty cache
   (``NUMBA_CACHE_DIR`` set to a new folder) times its first RL call (compilation), a second
   fresh process with that cache times its first call (loading), each against a later call.
1. Richardson-Lucy (RL) on a 1024 x 1024 float32 map, 10 iterations, ``stop="fixed"``, against
   :func:`skimage.restoration.richardson_lucy` (``clip=False``, no acceleration, single
   threaded) on the same input. For ASIRP: the public call ``asirp.restore(image,
   "richardson_lucy", psf=psf, iterations=10, stop="fixed")`` (Biggs-Andrews acceleration on, the
   default), the like-for-like call with ``acceleration=False``, the boundaries ``"zero"`` and
   ``"periodic"``, one torch thread, one iteration (the non-iterative overhead: checks, PSF,
   set-up, metrics), and the RL kernel alone (``richardson_lucy.run`` on a tensor, no
   :func:`asirp.restore` wrapper) on the direct path and on the FFT path. ``stop="fixed"`` is the
   like-for-like case: the default discrepancy stop adds one log per pixel and iteration.
2. The FFT floor: 10 iterations' worth of the FFTs an FFT-based RL needs (2 ``rfft2`` + 2
   ``irfft2`` per iteration), alone, on the padded grid of ``BlurOperator(...).fft_shape`` for
   the ``"extend"`` boundary; and one forward + adjoint blur of the operator on its direct and
   FFT paths.
3. Blind RL against non-blind RL (no acceleration) on a 512 x 512 map: each timed at 10 and 30
   iterations; the cost per iteration is ``(t30 - t10) / 20``. Blind RL updates a per-image PSF
   every iteration (the default free PSF), so it runs on the FFT path; with
   ``psf_model="gaussian"`` the PSF stays the searched Gaussian and the refinement is non-blind
   RL on the direct path. The table gives their costs relative to non-blind RL
   on the direct path (what a user gets) and on the FFT path (the same transforms).
4. A stack of 64 maps of 512 x 512, RL 10 iterations in one call: time per map, against
   scikit-image's RL on 4 of the maps (per map); and the per-map time for several CPU chunk sizes
   (``CPU_CHUNK_PIXELS`` of :mod:`asirp.restore`).

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_deconvolution.py              # full run, a few minutes
    .venv/bin/python bench/bench_deconvolution.py --quick      # small sizes, a few seconds
    .venv/bin/python bench/bench_deconvolution.py --repeats 9 --threads 1

scikit-image's RL runs single-threaded (``scipy.signal.convolve``); torch and the numba kernels
use ``torch.get_num_threads()`` threads (set with ``--threads``), which the header prints, so
the table also gives ASIRP with one thread. The header and footer print the load average: the
machine should be otherwise idle, since other work on the same cores makes multi-threaded code
much slower (its threads wait for each other).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy
import scipy.ndimage
import scipy.signal
import skimage
import skimage.restoration
import torch

import asirp
import asirp.methods.richardson_lucy as richardson_lucy
from asirp.blur import BlurOperator
from asirp.psf import gaussian_psf
from asirp.registry import Problem, get_method

RESTORE_MODULE = importlib.import_module("asirp.restore")  # (asirp.restore is the function)
PSF_SIGMA_PX = 3.0
SEED = 20240521
TARGET_SPEED_RATIO = 5.0
"""Issue 2: RL at least this many times faster than scikit-image's."""
BLIND_LIMIT = 3.0
"""Issue 2: blind RL at most this many times the cost per iteration of non-blind RL."""


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
    chunk_pixels : tuple of int
        CPU chunk sizes (pixels) tried on the stack (section 4).
    """

    large: int = 1024
    medium: int = 512
    stack: int = 64
    skimage_maps: int = 4
    iterations: int = 10
    long_iterations: int = 30
    chunk_pixels: tuple[int, ...] = (1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 23)


FULL = Sizes()
QUICK = Sizes(large=256, medium=128, stack=8, skimage_maps=2, chunk_pixels=(1 << 14, 1 << 16))


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


def time_interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Time ``repeats`` rounds of every case (one call each per round) after one warm-up round."""
    for function in cases.values():
        function()
    times: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(repeats):
        for key, function in cases.items():
            started = time.perf_counter()
            function()
            times[key].append(time.perf_counter() - started)
    return {
        key: Timing(statistics.median(values), min(values), max(values))
        for key, values in times.items()
    }


def asirp_rl(image: np.ndarray, psf: np.ndarray, iterations: int, **params) -> Callable[[], None]:
    """Return a call of :func:`asirp.restore` (RL, fixed count, CPU) to time."""

    def call() -> None:
        result = asirp.restore(
            image, "richardson_lucy", psf=psf, iterations=iterations, stop="fixed", **params
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


@contextlib.contextmanager
def fft_path_only() -> Iterator[None]:
    """Make Richardson-Lucy build its blur operator with ``path="fft"`` (the FFT path)."""
    original = richardson_lucy.BlurOperator
    richardson_lucy.BlurOperator = functools.partial(BlurOperator, path="fft")
    try:
        yield
    finally:
        richardson_lucy.BlurOperator = original


def on_fft_path(function: Callable[[], None]) -> Callable[[], None]:
    """Wrap ``function`` to run with RL on the FFT path."""

    def call() -> None:
        with fft_path_only():
            function()

    return call


def asirp_blind_rl(
    image: np.ndarray, psf: np.ndarray, iterations: int, **params: Any
) -> Callable[[], None]:
    """Return a call of :func:`asirp.restore` (blind RL, fixed count, CPU) to time."""

    def call() -> None:
        result = asirp.restore(
            image,
            "blind_richardson_lucy",
            psf=psf,
            iterations=iterations,
            stop="fixed",
            device="cpu",
            **params,
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


def blur_pair(operator: BlurOperator, iterations: int) -> Callable[[], None]:
    """Return ``iterations`` forward + adjoint blurs of ``operator`` on random data."""
    obj = torch.rand((1, *operator.object_shape), dtype=torch.float32)

    def call() -> None:
        for _ in range(iterations):
            operator.adjoint(operator.forward(obj))

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


def with_chunk_pixels(pixels: int, function: Callable[[], None]) -> Callable[[], None]:
    """Wrap ``function`` to run with ``asirp.restore``'s ``CPU_CHUNK_PIXELS = pixels``."""

    def call() -> None:
        previous = RESTORE_MODULE.CPU_CHUNK_PIXELS
        RESTORE_MODULE.CPU_CHUNK_PIXELS = pixels
        try:
            function()
        finally:
            RESTORE_MODULE.CPU_CHUNK_PIXELS = previous

    return call


# --- output -------------------------------------------------------------------------------------


def print_header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'case':<58} {'median':>11}   {'min - max (ms)':>17}")


def print_row(case: str, timing: Timing | float) -> None:
    if isinstance(timing, Timing):
        spread = f"{timing.fastest * 1e3:8.1f} - {timing.slowest * 1e3:.1f}"
        print(f"  {case:<58} {timing.median * 1e3:>8.1f} ms   {spread}")
    else:
        print(f"  {case:<58} {timing * 1e3:>8.1f} ms")


def print_figure(label: str, value: str) -> None:
    print(f"  -> {label:<55} {value:>11}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a" where the system has none."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def print_environment(repeats: int, quick: bool) -> None:
    print("ASIRP deconvolution benchmark" + (" (--quick sizes)" if quick else ""))
    print(
        f"  asirp {asirp.__version__}, torch {torch.__version__}, numba {numba.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-image {skimage.__version__}, Python {platform.python_version()}"
    )
    print(
        f"  device cpu, torch.get_num_threads() = {torch.get_num_threads()} (numba kernels "
        f"follow it), CPU count = {os.cpu_count()}, load average {load_average()}"
    )
    print(f"  each time: median of {repeats} interleaved runs after 1 warm-up, time.perf_counter")


# --- sections -----------------------------------------------------------------------------------

_COMPILE_PROBE = """
import json, time
started = time.perf_counter()
import numpy as np, asirp
from asirp.psf import gaussian_psf
imported = time.perf_counter()
image = np.random.default_rng(0).poisson(50.0, (256, 256)).astype(np.float32)
def call():
    asirp.restore(image, "richardson_lucy", psf=gaussian_psf(3.0), iterations=10, stop="fixed",
                  device="cpu")
began = time.perf_counter(); call(); first = time.perf_counter() - began
began = time.perf_counter(); call(); second = time.perf_counter() - began
print(json.dumps({"import": imported - started, "first": first, "second": second}))
"""


def run_probe(cache_dir: str) -> dict[str, float]:
    """Run the compile probe in a fresh Python process with ``NUMBA_CACHE_DIR=cache_dir``."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    output = subprocess.run(
        [sys.executable, "-c", _COMPILE_PROBE],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_compile() -> None:
    """Section 0: first-call compile time (empty cache) and cache load time of the kernels."""
    print_header(
        "[0] Compilation of the numba kernels (fresh processes, RL 256x256, 10 iterations)"
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = run_probe(cache_dir)
        warm = run_probe(cache_dir)
    print_row("import asirp (fresh process)", cold["import"])
    print_row("first RL call, empty cache (compiles the kernels)", cold["first"])
    print_row("first RL call, kernels from the on-disk cache", warm["first"])
    print_row("second RL call in the same process", warm["second"])
    print_figure(
        "compile cost, first call - second call", f"{cold['first'] - cold['second']:.2f} s"
    )
    print_figure(
        "cache-load cost, first call - second call", f"{warm['first'] - warm['second']:.2f} s"
    )


def bench_rl_vs_skimage(image: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int) -> dict:
    """Section 1: asirp RL (public call, like-for-like, boundaries, kernel) against skimage."""
    n = sizes.iterations
    side = image.shape[-1]
    print_header(
        f"[1] Richardson-Lucy, {side}x{side} float32, Gaussian PSF sigma {PSF_SIGMA_PX:g} px "
        f"({psf.shape[0]}x{psf.shape[1]}), {n} iterations, stop='fixed'"
    )
    plain = {"acceleration": False, "device": "cpu"}
    cases = {
        "skimage": (
            "skimage richardson_lucy (clip=False, 1 thread)",
            skimage_rl(image[None], psf, n),
        ),
        "public": ("asirp restore, defaults (acceleration on, extend)", asirp_rl(image, psf, n)),
        "extend": (
            "asirp restore, acceleration=False (like-for-like)",
            asirp_rl(image, psf, n, **plain),
        ),
        "zero": (
            "asirp restore, acceleration=False, boundary=zero",
            asirp_rl(image, psf, n, boundary="zero", **plain),
        ),
        "periodic": (
            "asirp restore, acceleration=False, boundary=periodic",
            asirp_rl(image, psf, n, boundary="periodic", **plain),
        ),
        "one_thread": (
            "asirp restore, acceleration=False, 1 thread",
            with_threads(1, asirp_rl(image, psf, n, **plain)),
        ),
        "one_iteration": (
            "asirp restore, acceleration=False, 1 iteration",
            asirp_rl(image, psf, 1, **plain),
        ),
        "kernel": ("RL kernel alone (richardson_lucy.run), direct path", rl_kernel(image, psf, n)),
        "kernel_fft": (
            "RL kernel alone (richardson_lucy.run), FFT path",
            on_fft_path(rl_kernel(image, psf, n)),
        ),
    }
    timings = time_interleaved({key: call for key, (_, call) in cases.items()}, repeats)
    for key, (case, _) in cases.items():
        print_row(case, timings[key])
    times = {key: timing.median for key, timing in timings.items()}

    skimage_time = times["skimage"]
    per_iteration = (times["extend"] - times["one_iteration"]) / (n - 1)
    overhead = times["one_iteration"] - per_iteration
    for key, label in (
        ("public", "public call (acceleration on)"),
        ("extend", "acceleration=False (like-for-like)"),
        ("zero", "acceleration=False, zero (skimage's boundary)"),
        ("one_thread", "acceleration=False, 1 thread"),
        ("kernel", "RL kernel alone, direct path"),
        ("kernel_fft", "RL kernel alone, FFT path"),
    ):
        print_figure(f"speed ratio skimage / asirp, {label}", f"{skimage_time / times[key]:.2f}x")
    verdict = "yes" if skimage_time / times["extend"] >= TARGET_SPEED_RATIO else "NO"
    print_figure(f"at least {TARGET_SPEED_RATIO:g}x faster (like-for-like)?", verdict)
    print_figure(f"asirp per iteration, (t{n} - t1) / {n - 1}", f"{per_iteration * 1e3:.1f} ms")
    print_figure(f"skimage per iteration, t{n} / {n}", f"{skimage_time / n * 1e3:.1f} ms")
    print_figure("asirp restore overhead, t1 - per iteration", f"{overhead * 1e3:.1f} ms")
    print_figure(
        "  of which outside the kernel, restore - kernel",
        f"{(times['extend'] - times['kernel']) * 1e3:.1f} ms",
    )
    return {"rl": times["extend"], "kernel": times["kernel"], "kernel_fft": times["kernel_fft"]}


def bench_fft_floor(
    image: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int, rl: dict
) -> None:
    """Section 2: the FFTs an FFT-based RL needs, alone; one blur pair on each path."""
    n = sizes.iterations
    shape = tuple(image.shape[-2:])
    direct = BlurOperator(torch.from_numpy(psf), shape, "extend")
    fft = BlurOperator(torch.from_numpy(psf), shape, "extend", path="fft")
    grid = fft.fft_shape
    print_header(
        f"[2] FFT floor ({n} x (2 rfft2 + 2 irfft2) on the extend grid {grid[0]}x{grid[1]}) "
        f"and {n} blur pairs"
    )
    timings = time_interleaved(
        {
            "floor": fft_floor(grid, n),
            "direct": blur_pair(direct, n),
            "fft": blur_pair(fft, n),
        },
        repeats,
    )
    print_row(f"FFTs alone ({4 * n} transforms)", timings["floor"])
    print_row(f"{n} x (forward + adjoint), direct path ({direct.path})", timings["direct"])
    print_row(f"{n} x (forward + adjoint), FFT path", timings["fft"])
    floor = timings["floor"].median
    print_figure(
        "blur pair, FFT path / direct path",
        f"{timings['fft'].median / timings['direct'].median:.2f}x",
    )
    print_figure("RL (asirp restore, like-for-like) / FFT floor", f"{rl['rl'] / floor:.2f}x")
    print_figure("RL kernel alone, direct path / FFT floor", f"{rl['kernel'] / floor:.2f}x")
    print_figure("RL kernel alone, FFT path / FFT floor", f"{rl['kernel_fft'] / floor:.2f}x")


def bench_blind(image: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int) -> float:
    """Section 3: per-iteration cost of blind RL relative to non-blind RL."""
    short, long = sizes.iterations, sizes.long_iterations
    side = image.shape[-1]
    print_header(f"[3] Blind vs non-blind RL, {side}x{side}, {short} and {long} iterations")
    plain = {"acceleration": False, "device": "cpu"}
    makers = {
        "richardson_lucy": lambda count: asirp_rl(image, psf, count, **plain),
        "richardson_lucy, FFT path": lambda count: on_fft_path(
            asirp_rl(image, psf, count, **plain)
        ),
        "blind_richardson_lucy": lambda count: asirp_blind_rl(image, psf, count),
        "blind_richardson_lucy, psf_model=gaussian": lambda count: asirp_blind_rl(
            image, psf, count, psf_model="gaussian"
        ),
    }
    cases = {}
    for name, make in makers.items():
        cases[(name, short)] = make(short)
        cases[(name, long)] = make(long)
    timings = time_interleaved(cases, repeats)
    per_iteration = {}
    for name in makers:
        print_row(f"{name}, {short} iterations", timings[(name, short)])
        print_row(f"{name}, {long} iterations", timings[(name, long)])
        span = timings[(name, long)].median - timings[(name, short)].median
        per_iteration[name] = span / (long - short)
        print_figure(f"{name} per iteration", f"{per_iteration[name] * 1e3:.2f} ms")
    for blind_name in ("blind_richardson_lucy", "blind_richardson_lucy, psf_model=gaussian"):
        blind = per_iteration[blind_name]
        for name in ("richardson_lucy", "richardson_lucy, FFT path"):
            ratio = blind / per_iteration[name]
            flag = "" if ratio <= BLIND_LIMIT else f" (> {BLIND_LIMIT:g}x)"
            print_figure(f"per iteration {blind_name} / {name}", f"{ratio:.2f}x{flag}")
    return timings[("richardson_lucy", short)].median


def bench_stack(
    stack: np.ndarray, psf: np.ndarray, sizes: Sizes, repeats: int, single_rl: float
) -> None:
    """Section 4: a stack of maps in one call against scikit-image map by map; chunk sizes."""
    n = sizes.iterations
    count, side = stack.shape[0], stack.shape[-1]
    subset = stack[: sizes.skimage_maps]
    default_chunk = RESTORE_MODULE.CPU_CHUNK_PIXELS
    print_header(
        f"[4] Stack of {count} x {side}x{side} float32, RL {n} iterations, acceleration=False; "
        f"CPU chunks of {default_chunk} px ({max(1, default_chunk // side**2)} maps)"
    )
    cases: dict[str, Callable[[], None]] = {
        "stack": asirp_rl(stack, psf, n, acceleration=False, device="cpu"),
        "skimage": skimage_rl(subset, psf, n),
    }
    for pixels in sizes.chunk_pixels:
        if pixels != default_chunk:
            cases[f"chunk {pixels}"] = with_chunk_pixels(
                pixels, asirp_rl(stack, psf, n, acceleration=False, device="cpu")
            )
    timings = time_interleaved(cases, repeats)
    per_map = timings["stack"].median / count
    skimage_per_map = timings["skimage"].median / len(subset)
    print_row(f"asirp restore, whole stack ({count} maps)", timings["stack"])
    print_row("asirp restore, per map", per_map)
    print_row(f"asirp restore, one {side}x{side} map alone (from [3])", single_rl)
    print_row(f"skimage richardson_lucy, {len(subset)} maps, per map", skimage_per_map)
    for pixels in sizes.chunk_pixels:
        key = "stack" if pixels == default_chunk else f"chunk {pixels}"
        maps = max(1, pixels // side**2)
        print_row(
            f"  per map with chunks of {pixels} px ({maps} maps)", timings[key].median / count
        )
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
    parser.add_argument(
        "--skip-compile", action="store_true", help="leave out section 0 (two fresh processes)"
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
    if not args.skip_compile:
        bench_compile()
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
