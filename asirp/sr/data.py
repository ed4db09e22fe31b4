"""Synthetic X-ray-like training data and the held-out evaluation set for super-resolution.

Fine-grid (ground-truth) maps come from :mod:`asirp.phantoms` (copper meshes, seed-like tissue with
hotspots, Siemens stars) and from random structures made here: polygons, blobs, lines and line
pairs, smooth textures, and tomography projections of random ellipsoid phantoms (as absorption
images or as transmitted intensity). Each is a float64 map with values in about [0, 1].

They are turned into measured counts by :func:`make_pairs`: the map is scaled to a peak count
level drawn log-uniformly (plus a background), blurred by a Gaussian beam whose sigma is drawn
uniformly in :data:`SIGMA_RANGE_LR` measured pixels (``scale`` times that in fine pixels), area
sampled by the scale (:mod:`asirp.sr.degrade`) and given Poisson noise. For the beam-conditioned
``beam_sr`` (``anisotropic=True``) the family is wider: beams with different sigmas along the rows
and the columns (:data:`BEAM_FAMILY_SIGMA_RANGE`, :data:`BEAM_FAMILY_MAX_ANISOTROPY`), peaks in
:data:`BEAM_FAMILY_PEAK_RANGE` and backgrounds up to :data:`BEAM_FAMILY_MAX_BACKGROUND`.

The held-out set (:func:`heldout_set`) is four fixed maps that training never draws (their
parameters and seeds are fixed here, and training draws from its own seeded stream): an AG300
copper mesh, a seed-like tissue, a Siemens-star resolution target, and a tomography projection of
an ellipsoid phantom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from asirp.phantoms import copper_mesh, hotspot_tissue, siemens_star
from asirp.sr.degrade import area_downsample, gaussian_blur

SIGMA_RANGE_LR = (0.3, 1.1)
"""Beam standard deviations drawn for training, in measured pixels (FWHM 0.7 to 2.6 steps)."""

PEAK_COUNTS_RANGE = (20.0, 5000.0)
"""Peak count levels drawn (log-uniformly) for training."""

BEAM_FAMILY_SIGMA_RANGE = (0.15, 1.6)
"""``beam_sr`` training: range of the beam's geometric-mean sigma (log-uniform), measured px."""

BEAM_FAMILY_MAX_ANISOTROPY = 2.5
"""``beam_sr`` training: largest ratio of the two axes' sigmas (log-uniform, either way)."""

BEAM_FAMILY_PEAK_RANGE = (5.0, 20000.0)
"""``beam_sr`` training: peak count levels (log-uniform)."""

BEAM_FAMILY_MAX_BACKGROUND = 0.5
"""``beam_sr`` training: largest background, as a fraction of the peak (uniform from 0)."""

HELDOUT_SIGMA_LR = 0.75
"""Beam standard deviation of the held-out set, in measured pixels (FWHM 1.8 steps)."""

HELDOUT_PEAK_COUNTS = 200.0
"""Peak count level of the held-out set."""

HELDOUT_SIZE = 256
"""Side of the held-out fine-grid maps, px."""


def _supersampled(
    shape: tuple[int, int], factor: int, draw: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    rows, cols = shape
    y = (np.arange(rows * factor) + 0.5) / factor
    x = (np.arange(cols * factor) + 0.5) / factor
    fine = draw(*np.meshgrid(y, x, indexing="ij"))
    return fine.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def random_polygons(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Overlapping filled polygons (3 to 9 vertices) of random levels, anti-aliased."""
    from skimage.draw import polygon

    factor = 4
    rows, cols = shape[0] * factor, shape[1] * factor
    canvas = np.zeros((rows, cols))
    for _ in range(rng.integers(2, 9)):
        count = int(rng.integers(3, 10))
        centre = rng.uniform(0, 1, 2) * (rows, cols)
        radius = rng.uniform(0.05, 0.4) * min(rows, cols)
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        radii = radius * rng.uniform(0.4, 1.0, count)
        rr, cc = polygon(
            centre[0] + radii * np.sin(angles), centre[1] + radii * np.cos(angles), (rows, cols)
        )
        level = rng.uniform(0.2, 1.0)
        if rng.random() < 0.5:
            canvas[rr, cc] = level
        else:
            canvas[rr, cc] += level
    canvas = canvas.reshape(shape[0], factor, shape[1], factor).mean(axis=(1, 3))
    return canvas / max(canvas.max(), 1e-9)


def random_lines(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Line segments (0.7 to 5 px wide) and groups of line pairs, like fibres and targets."""
    segments = []
    for _ in range(rng.integers(3, 15)):
        start = rng.uniform(0, 1, 2) * shape
        angle = rng.uniform(0, math.pi)
        length = rng.uniform(0.2, 1.0) * max(shape)
        segments.append((start, angle, length, rng.uniform(0.7, 5.0), rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:  # a line-pair group of a given period
        period = rng.uniform(2.0, 8.0)
        angle = rng.uniform(0, math.pi)
        origin = rng.uniform(0.2, 0.6, 2) * shape
        normal = np.array([math.cos(angle), -math.sin(angle)])
        for index in range(int(rng.integers(3, 7))):
            start = origin + index * period * normal
            segments.append((start, angle, 0.3 * max(shape), period / 2, 1.0))

    def draw(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        image = np.zeros_like(y)
        for (y0, x0), angle, length, width, level in segments:
            dy, dx = math.sin(angle), math.cos(angle)
            along = (y - y0) * dy + (x - x0) * dx
            across = np.abs(-(y - y0) * dx + (x - x0) * dy)
            inside = (across <= width / 2) & (along >= 0) & (along <= length)
            image = np.maximum(image, level * inside)
        return image

    return _supersampled(shape, 4, draw)


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Gaussian random field with a power-law spectrum ``f^-exponent``, scaled to [0, 1]."""
    noise = np.fft.rfft2(rng.standard_normal(shape))
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    radius[0, 0] = 1.0
    field = np.fft.irfft2(noise * radius ** (-exponent / 2), s=shape)
    field -= field.min()
    return field / max(field.max(), 1e-9)


def random_blobs(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Thresholded smooth field: particles and pores with soft or sharp edges."""
    field = smooth_field(shape, rng, rng.uniform(2.5, 4.0))
    threshold = rng.uniform(0.4, 0.7)
    sharpness = rng.uniform(20, 200)
    return 1.0 / (1.0 + np.exp(-sharpness * (field - threshold)))


def ellipsoid_projection(
    shape: tuple[int, int], rng: np.random.Generator, count: int | None = None
) -> np.ndarray:
    """Line integrals through a phantom of random ellipsoids (a tomography projection).

    The phantom is an outer ellipsoid with inner ellipsoids of other densities (a Shepp-Logan-like
    body); the projection along the beam of an ellipsoid with semi-axes ``a, b`` in the detector
    plane and ``c`` along the beam is ``2 c sqrt(1 - u^2/a^2 - v^2/b^2)``.

    Returns
    -------
    numpy.ndarray
        ``shape``, path length times density, scaled to a maximum of 1.
    """
    rows, cols = shape
    size = min(rows, cols)
    ellipsoids = [((rows / 2, cols / 2), 0.45 * rows, 0.4 * cols, 0.4 * size, 0.0, 1.0)]
    for _ in range(count if count is not None else int(rng.integers(4, 14))):
        centre = (rng.uniform(0.25, 0.75) * rows, rng.uniform(0.25, 0.75) * cols)
        semi = rng.uniform(0.01, 0.18, 3) * size
        density = rng.uniform(-0.8, 1.5)
        ellipsoids.append((centre, semi[0], semi[1], semi[2], rng.uniform(0, math.pi), density))

    def draw(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        total = np.zeros_like(y)
        for (cy, cx), a, b, c, angle, density in ellipsoids:
            u = (y - cy) * math.cos(angle) + (x - cx) * math.sin(angle)
            v = -(y - cy) * math.sin(angle) + (x - cx) * math.cos(angle)
            inside = 1.0 - (u / a) ** 2 - (v / b) ** 2
            total += density * 2.0 * c * np.sqrt(np.clip(inside, 0.0, None))
        return np.clip(total, 0.0, None)

    projection = _supersampled(shape, 2, draw)
    return projection / max(projection.max(), 1e-9)


def _mesh(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    pixel = rng.uniform(2.0, 8.0)
    return copper_mesh(
        shape,
        pixel,
        hole_um=rng.uniform(25.0, 110.0),
        bar_um=rng.uniform(1.5, 8.0) * pixel,
        angle_deg=rng.uniform(0.0, 90.0),
        supersample=4,
    )


def _tissue(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    image = hotspot_tissue(
        shape,
        rng.uniform(2.0, 8.0),
        n_hotspots=int(rng.integers(4, 25)),
        seed=int(rng.integers(2**31)),
    )
    return image / max(image.max(), 1e-9)


def _star(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    zoom = rng.uniform(1.0, 2.5)
    big = (int(shape[0] * zoom), int(shape[1] * zoom))
    star = siemens_star(big, spokes=int(rng.integers(8, 64)), supersample=4)
    top = int(rng.integers(0, big[0] - shape[0] + 1))
    left = int(rng.integers(0, big[1] - shape[1] + 1))
    return star[top : top + shape[0], left : left + shape[1]]


def _projection(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    line_integral = ellipsoid_projection(shape, rng)
    if rng.random() < 0.5:
        return line_integral
    return np.exp(-rng.uniform(0.5, 3.0) * line_integral)  # transmitted intensity


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return smooth_field(shape, rng, rng.uniform(1.5, 3.5))


GENERATORS: dict[str, Callable[[tuple[int, int], np.random.Generator], np.ndarray]] = {
    "mesh": _mesh,
    "tissue": _tissue,
    "star": _star,
    "polygons": random_polygons,
    "lines": random_lines,
    "blobs": random_blobs,
    "projection": _projection,
    "texture": _texture,
}
"""Structure generators used for training, by name."""


def random_structure(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One random fine-grid map in about [0, 1]: a structure, sometimes two combined.

    Parameters
    ----------
    shape : (int, int)
        Map size (fine pixels).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``shape``, float64, values in [0, 1].
    """
    names = list(GENERATORS)
    image = GENERATORS[names[int(rng.integers(len(names)))]](shape, rng)
    if rng.random() < 0.3:
        other = GENERATORS[names[int(rng.integers(len(names)))]](shape, rng)
        weight = rng.uniform(0.2, 0.8)
        image = (1 - weight) * image + weight * other
    if rng.random() < 0.5:
        image = 1.0 - image  # absorption vs emission contrast
    image -= image.min()
    return image / max(image.max(), 1e-9)


@dataclass
class Pairs:
    """Training or evaluation pairs.

    Attributes
    ----------
    measured : torch.Tensor
        ``(B, H, W)`` noisy counts on the measured grid.
    truth : torch.Tensor
        ``(B, s H, s W)`` noise-free counts on the fine grid (same intensity scale).
    sigma_px : torch.Tensor
        ``(B,)`` beam sigma in measured pixels (the geometric mean of the axes when anisotropic).
    sigma_axes_px : torch.Tensor
        ``(B, 2)`` beam sigma along the rows and along the columns, measured pixels.
    """

    measured: torch.Tensor
    truth: torch.Tensor
    sigma_px: torch.Tensor
    sigma_axes_px: torch.Tensor


def make_pairs(
    structures: torch.Tensor,
    scale: int,
    generator: torch.Generator,
    *,
    sigma_px: float | None = None,
    peak_counts: float | None = None,
    background: float | None = None,
    anisotropic: bool = False,
) -> Pairs:
    """Turn fine-grid structures into (measured, truth) count pairs with the forward model.

    Parameters
    ----------
    structures : torch.Tensor
        ``(B, s H, s W)`` maps in about [0, 1].
    scale : int
        Upscaling factor ``s``.
    generator : torch.Generator
        Source of randomness (on the structures' device).
    sigma_px, peak_counts, background : float, optional
        Fixed beam sigma (measured pixels), peak count level and background (fraction of the
        peak); drawn per map when not given (sigma uniform in :data:`SIGMA_RANGE_LR`, peak
        log-uniform in :data:`PEAK_COUNTS_RANGE`, background uniform in [0, 0.2]).
    anisotropic : bool
        Draw from ``beam_sr``'s wider family instead (see the module notes): each map's beam has
        its own sigma along the rows and the columns. ``sigma_px`` is then ignored.

    Returns
    -------
    Pairs
        The measured counts, the fine-grid truth in counts, and the sigmas.
    """
    batch, device = structures.shape[0], structures.device

    def draw(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator, device=device)

    # the draws keep their order (beam, peak, background, noise): the shipped weights'
    # training commands reproduce them
    if anisotropic:
        mean = torch.exp(draw(*(math.log(v) for v in BEAM_FAMILY_SIGMA_RANGE)))
        half_log_ratio = 0.5 * draw(-1.0, 1.0) * math.log(BEAM_FAMILY_MAX_ANISOTROPY)
        rows, cols = mean * torch.exp(half_log_ratio), mean * torch.exp(-half_log_ratio)
        peak_range, max_background = BEAM_FAMILY_PEAK_RANGE, BEAM_FAMILY_MAX_BACKGROUND
    else:
        mean = torch.full((batch,), sigma_px, device=device) if sigma_px else draw(*SIGMA_RANGE_LR)
        rows = cols = mean
        peak_range, max_background = PEAK_COUNTS_RANGE, 0.2
    if peak_counts is None:
        peak = torch.exp(draw(*(math.log(v) for v in peak_range)))
    else:
        peak = torch.full((batch,), peak_counts, device=device)
    level = (
        draw(0.0, max_background)
        if background is None
        else torch.full((batch,), background, device=device)
    )
    truth = peak.view(-1, 1, 1) * (level.view(-1, 1, 1) + structures)
    blurred = gaussian_blur(truth, (rows * scale).cpu(), (cols * scale).cpu())
    measured = torch.poisson(area_downsample(blurred, scale).clamp_min(0.0), generator=generator)
    return Pairs(measured, truth, mean, torch.stack([rows, cols], dim=1))


@dataclass
class HeldOutImage:
    """One map of the held-out evaluation set.

    Attributes
    ----------
    name : str
        ``"mesh"``, ``"seed"``, ``"star"`` or ``"projection"``.
    truth : numpy.ndarray
        ``(s H, s W)`` noise-free counts on the fine grid.
    measured : numpy.ndarray
        ``(H, W)`` Poisson counts.
    sigma_px : float
        Beam sigma in measured pixels.
    """

    name: str
    truth: np.ndarray
    measured: np.ndarray
    sigma_px: float


def heldout_structures(size: int = HELDOUT_SIZE) -> dict[str, np.ndarray]:
    """The four fixed fine-grid maps of the held-out set, in [0, 1] (5 µm fine pixels)."""
    shape = (size, size)
    projection = ellipsoid_projection(shape, np.random.default_rng(20240607), count=10)
    return {
        "mesh": copper_mesh(shape, 5.0, hole_um=58.0, bar_um=25.0, angle_deg=7.0),
        "seed": hotspot_tissue(shape, 5.0, n_hotspots=16, seed=20240607),
        "star": siemens_star(shape, spokes=24),
        "projection": np.exp(-1.5 * projection),
    }


def heldout_set(scale: int = 2, size: int = HELDOUT_SIZE, seed: int = 7) -> list[HeldOutImage]:
    """The held-out evaluation maps, measured at :data:`HELDOUT_PEAK_COUNTS` counts.

    Each fine map ``f`` becomes counts ``200 (0.05 + f)`` (the projection: ``400 f``, a
    transmission image), blurred with sigma :data:`HELDOUT_SIGMA_LR` measured pixels, area sampled
    by ``scale`` and Poisson-noised from a generator seeded with ``seed``.

    Parameters
    ----------
    scale : int
        Upscaling factor (the measured maps are ``size / scale`` pixels wide).
    size : int
        Side of the fine maps.
    seed : int
        Seed of the Poisson noise.

    Returns
    -------
    list of HeldOutImage
        Mesh, seed-like tissue, Siemens star, tomography projection.
    """
    generator = torch.Generator().manual_seed(seed)
    images = []
    for name, structure in heldout_structures(size).items():
        fine = torch.from_numpy(structure).float()[None]
        if name == "projection":
            pairs = make_pairs(
                fine, scale, generator, sigma_px=HELDOUT_SIGMA_LR, peak_counts=400.0, background=0.0
            )
        else:
            pairs = make_pairs(
                fine,
                scale,
                generator,
                sigma_px=HELDOUT_SIGMA_LR,
                peak_counts=HELDOUT_PEAK_COUNTS,
                background=0.05,
            )
        images.append(
            HeldOutImage(name, pairs.truth[0].numpy(), pairs.measured[0].numpy(), HELDOUT_SIGMA_LR)
        )
    return images
