"""Synthetic 1-D powder patterns of a cubic phase on a temperature ramp (seeded, no simulator)."""

from __future__ import annotations

import numpy as np

from asirp.diffraction import Pattern

Q_A = np.linspace(0.8, 3.2, 480)
"""q grid of the synthetic patterns, 1/Å (bin 0.005 1/Å)."""
SIGMA_Q_A = 0.006
"""Gaussian width of every peak, 1/Å."""
PIXELS = 200.0
"""Pixels per bin."""
HKL = {(1, 0, 0): 0.3, (1, 1, 0): 1.0, (1, 1, 1): 0.4, (2, 0, 0): 0.35, (2, 1, 0): 0.1,
       (2, 1, 1): 0.3, (2, 2, 0): 0.15}  # fmt: skip


def lines(a_A: float, split: float = 0.0, fraction: float = 0.0) -> tuple[list, list]:
    """Peak positions (1/Å) and intensities of a cubic phase, a fraction of it tetragonal.

    The tetragonal part (c/a = 1 + split) splits (h00) into (h00)/(00h), 2:1, and (hh0) into
    (hh0)/(h0h), 1:2; (hhh) stays single.
    """
    qs, heights = [], []
    for (h, k, l_), value in HKL.items():
        n = h * h + k * k + l_ * l_
        qs.append(2 * np.pi * np.sqrt(n) / a_A)
        heights.append(value * (1 - fraction))
        if fraction > 0:
            c_A = a_A * (1 + split) ** (2 / 3)
            a_t = a_A * (1 + split) ** (-1 / 3)
            # two variants: l along c (one third of the multiplicity) or not
            variants = {(h, k, l_), (l_, h, k), (k, l_, h)}
            for hh, kk, ll in variants:
                q = 2 * np.pi * np.sqrt((hh * hh + kk * kk) / a_t**2 + ll * ll / c_A**2)
                qs.append(q)
                heights.append(value * fraction / len(variants))
    return qs, heights


def expected(a_A: float, *, flux: float = 1.0, split: float = 0.0, fraction: float = 0.0,
             extra_peak: tuple[float, float] | None = None) -> np.ndarray:  # fmt: skip
    """Mean counts per pixel on :data:`Q_A`: peaks of height ~3000 on a background of ~100."""
    qs, heights = lines(a_A, split, fraction)
    if extra_peak is not None:
        qs.append(extra_peak[0])
        heights.append(extra_peak[1])
    y = 80.0 + 40.0 * np.exp(-0.5 * ((Q_A - 1.9) / 0.5) ** 2)
    for q0, height in zip(qs, heights, strict=True):
        y = y + 3000.0 * height * np.exp(-0.5 * ((Q_A - q0) / SIGMA_Q_A) ** 2)
    return flux * y


def counted(mean: np.ndarray, rng: np.random.Generator) -> Pattern:
    """A Poisson-counted pattern around ``mean`` counts per pixel."""
    counts = rng.poisson(mean * PIXELS).astype(np.float64)
    pixels = np.full(Q_A.size, PIXELS)
    sigma = np.sqrt(np.maximum(counts, 1.0)) / pixels
    return Pattern(Q_A, counts / pixels, sigma, counts, pixels)


def ramp(n: int, *, seed: int, onset: int | None = None, kind: str = "splitting",
         width: int = 2) -> list[Pattern]:  # fmt: skip
    """``n`` patterns heated 1 K a frame (alpha 1.2e-5 /K), ring current decaying with a top-up.

    From frame ``onset`` a splitting (c/a = 1.004) or a new peak (2 % of the strongest, between
    two main peaks) grows in over ``width`` frames.
    """
    rng = np.random.default_rng(seed)
    patterns = []
    for i in range(n):
        a_A = 4.0 * (1 + 1.2e-5 * i)
        flux = 0.95 * 0.999**i + (0.04 if i % 90 > 60 else 0.0)
        fraction = 0.0 if onset is None else float(np.clip((i - onset + 1) / width, 0, 1))
        if kind == "splitting":
            mean = expected(a_A, flux=flux, split=0.004, fraction=fraction)
        else:
            mean = expected(a_A, flux=flux, extra_peak=(1.83, 0.02 * fraction))
        patterns.append(counted(mean, rng))
    return patterns
