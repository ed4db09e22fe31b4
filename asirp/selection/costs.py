"""What each candidate costs: measured run times, cached per method, setting, size and device.

Every run the selector makes (scoring a candidate on the two parts) and every restoration
:func:`asirp.restore` makes after an automatic choice is timed and recorded here, per image, by
candidate, number of pixels per map and device. An estimate for another size scales the nearest
measurement by the pixel count. A candidate never measured gets a prior: a rough count of FFT
passes from its method's spec (:class:`asirp.registry.CostPrior`, :func:`prior_passes`) times
the measured time of one forward and inverse FFT of that size on that device (a calibration of
about a millisecond, cached).

The cache lives for the process (:data:`COSTS`); :meth:`CostModel.to_dict` and
:meth:`CostModel.update` let a policy file (:mod:`asirp.policy`) keep it between sessions.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import torch

from asirp.backend import fast_fft_shape
from asirp.registry import get_method
from asirp.selection.candidates import IDENTITY, Candidate

OVERHEAD = Candidate("(restore overhead)")
"""Pseudo-candidate under which the work :func:`asirp.restore` does around a method (checks,
quality figures) is timed."""

IDENTITY_PASSES = 0.05
"""Prior cost of the identity candidate (a copy, or a bicubic upsampling), in FFT pairs."""
OVERHEAD_PASSES = 8.0
"""Prior cost of the work around a method (:data:`OVERHEAD`), in FFT pairs."""
UNKNOWN_METHOD_PASSES = 300.0
"""Prior for a method whose spec brings no cost prior (networks, new methods): conservative."""
ASSUMED_ADAPTIVE_ITERATIONS = 40
"""Iterations assumed for an automatic stop before any measurement."""


def prior_passes(candidate: Candidate) -> float:
    """Prior cost of a candidate in FFT pairs of the map's size.

    From the method's :class:`~asirp.registry.CostPrior` (``MethodSpec.cost_prior``), with the
    method's own defaults for the parameters the candidate does not set; an iterative method
    with an adaptive ``stop`` is priced at most :data:`ASSUMED_ADAPTIVE_ITERATIONS` iterations.
    """
    if candidate.method == IDENTITY:
        return IDENTITY_PASSES
    if candidate.method == OVERHEAD.method:
        return OVERHEAD_PASSES
    try:
        spec = get_method(candidate.method)
    except ValueError:  # not registered (any more): a name from a saved cost cache
        return UNKNOWN_METHOD_PASSES
    prior = spec.cost_prior
    if prior is None:
        return UNKNOWN_METHOD_PASSES
    if not prior.per_iteration:
        return prior.passes
    params = {parameter.name: parameter.default for parameter in spec.parameters}
    params.update(candidate.params)
    iterations = int(params["iterations"])
    if params.get("stop", "fixed") != "fixed":
        iterations = min(iterations, ASSUMED_ADAPTIVE_ITERATIONS)
    factor = 1.0
    for name, slower in prior.slower_with:
        if params.get(name):
            factor *= slower
    return prior.passes + factor * prior.per_iteration * iterations


class CostModel:
    """Measured run times (ms per image) with estimates for sizes not yet measured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._measured: dict[tuple[str, str, str], dict[int, float]] = {}
        self._fft_ms: dict[tuple[int, str], float] = {}

    @staticmethod
    def _key(candidate: Candidate, device: torch.device | str) -> tuple[str, str, str]:
        return candidate.method, candidate.settings, str(device)

    def record(
        self, candidate: Candidate, pixels: int, ms_per_image: float, device: torch.device | str
    ) -> None:
        """Store a measured time (a later measurement of the same size is averaged in)."""
        if not math.isfinite(ms_per_image) or ms_per_image < 0:
            return
        with self._lock:
            sizes = self._measured.setdefault(self._key(candidate, device), {})
            previous = sizes.get(int(pixels))
            value = ms_per_image if previous is None else 0.5 * (previous + ms_per_image)
            sizes[int(pixels)] = value

    def fft_pair_ms(self, pixels: int, device: torch.device) -> float:
        """Measured time of one ``rfft2`` + ``irfft2`` of a square map of ``pixels``, ms."""
        # the padded grid of a square map, at a fast FFT length as the blur operators use
        (side,) = fast_fft_shape((max(8, math.ceil(math.sqrt(pixels) * 1.15)),))
        key = (side, str(device))
        with self._lock:
            if key in self._fft_ms:
                return self._fft_ms[key]
        probe = torch.rand((1, side, side), device=device)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            torch.fft.irfft2(torch.fft.rfft2(probe), s=(side, side))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(1e3 * (time.perf_counter() - start))
        value = sorted(times)[1]
        with self._lock:
            self._fft_ms[key] = value
        return value

    def estimate(
        self, candidate: Candidate, pixels: int, device: torch.device
    ) -> tuple[float, str]:
        """Estimated time of one image of ``pixels`` pixels, ms, and where it comes from.

        Returns
        -------
        ms : float
            The estimate.
        source : {"measured", "scaled", "prior"}
            A measurement at this size, one at another size scaled by the pixel count, or the
            prior (:func:`prior_passes` times :meth:`fft_pair_ms`).
        """
        with self._lock:
            sizes = dict(self._measured.get(self._key(candidate, device), {}))
        if pixels in sizes:
            return sizes[pixels], "measured"
        if sizes:
            nearest = min(sizes, key=lambda size: abs(math.log(size / pixels)))
            return sizes[nearest] * pixels / nearest, "scaled"
        return prior_passes(candidate) * self.fft_pair_ms(pixels, device), "prior"

    def to_dict(self) -> dict[str, Any]:
        """The measurements as JSON-serialisable data (``{"method|settings|device": {px: ms}}``)."""
        with self._lock:
            return {
                "|".join(key): {str(size): round(ms, 4) for size, ms in sizes.items()}
                for key, sizes in self._measured.items()
            }

    def update(self, data: dict[str, Any]) -> None:
        """Merge measurements saved by :meth:`to_dict` (entries that do not parse are ignored)."""
        for name, sizes in data.items():
            parts = str(name).split("|")
            if len(parts) != 3 or not isinstance(sizes, dict):
                continue
            candidate = Candidate(parts[0], parts[1])
            for size, ms in sizes.items():
                try:
                    self.record(candidate, int(size), float(ms), parts[2])
                except (TypeError, ValueError):
                    continue

    def clear(self) -> None:
        """Forget every measurement (for benchmarks of the cold start)."""
        with self._lock:
            self._measured.clear()
            self._fft_ms.clear()


COSTS = CostModel()
"""The process-wide cost cache."""
