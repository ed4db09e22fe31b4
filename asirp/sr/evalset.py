r"""A held-out super-resolution evaluation set from generators that training never uses.

The networks of ``fca_sr`` and ``rrdb_sr`` are trained on :func:`asirp.sr.data.random_structure`
maps measured by :func:`asirp.sr.data.make_pairs` (isotropic Gaussian beams of sigma 0.3-1.1
measured pixels, peaks of 20-5,000 counts, backgrounds of 0-0.2 of the peak). Their own held-out
set (:func:`asirp.sr.data.heldout_set`) is drawn from the same families. This module builds a set
that differs in all three respects, so that a gain measured on it is not a gain on the training
distribution:

- **content** from generators written here and nowhere in :mod:`asirp.sr.data` (Voronoi grains,
  a foam of thin cell walls, curved fibres, a dot array of varying pitch, a Fresnel zone plate),
  from standard test images shipped with scikit-image (public domain or CC0; each case records its
  source and licence), and from **real measured data**: the absorption sinogram of TomoPy's
  tooth (``tests/data/real/tomopy/tooth.h5``, so a source checkout is needed), whose original is
  the reference (the repository's real µ-XRF maps, 11 x 11 px at APS 2-ID-E and 2 x 2 at
  Diamond I18, are too small to be degraded by 4);
- **beams** outside the training range (sigma 0.2, 0.25, 1.3, 1.4 measured pixels) and
  anisotropic ones (``(sigma_y, sigma_x)``, which training never saw);
- **noise**: peaks from 10 to 12,000 counts (outside 20-5,000 at both ends) and backgrounds up to
  0.5 of the peak.

Each case's fine-grid map ``f`` (in [0, 1]) becomes the truth ``peak (background + f)`` in counts
(the same intensity scale as the measurement, as in :mod:`asirp.sr.degrade`), and the measurement
is

.. math:: y = \mathrm{Poisson}\big(D_s (g_{s \sigma_y, s \sigma_x} * \mathrm{truth})\big)

with :math:`g` the pixel-integrated Gaussian beam of :func:`asirp.psf.gaussian_psf` on the fine
grid (mirror boundaries) and :math:`D_s` the mean over ``s x s`` blocks: for an isotropic beam,
exactly :func:`asirp.sr.degrade.degrade`.

How methods are told the beam: ``asirp.restore(measured, method, psf_sigma_px=case.psf_sigma_px)``
where :attr:`EvalCase.psf_sigma_px` is a float for isotropic beams and ``(sigma_y, sigma_x)`` for
anisotropic ones (:func:`asirp.psf.resolve_psf` accepts both). Deconvolution methods and
``rl_sr`` use the anisotropic beam as given (:func:`asirp.sr.degrade.sigma_axes_from_psf`); the
networks and zssr describe any PSF by one isotropic Gaussian
(:func:`asirp.sr.degrade.sigma_from_psf`: the geometric mean of the two axes, which
:attr:`EvalCase.beam_sigma_px` gives), so on the anisotropic cases they work with a model beam
that is not the true one. That is part of what the set tests.

Kept out of training: nothing here is imported by :mod:`asirp.sr.data` or :mod:`asirp.sr.train`,
the generators are this module's own (``tests/asirp/sr/test_evalset.py`` checks both), and the
seeds (:data:`CONTENT_SEED`, :data:`NOISE_SEED`) differ from those training and the old held-out
set use (0, 7 and 20240607).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from asirp.psf import gaussian_psf

CONTENT_SEED = 31_415_926
"""Seed of the synthetic content (each case adds its index)."""

NOISE_SEED = 27_182_818
"""Default seed of the Poisson noise (each case and scale adds its own offset)."""

SIZE = 256
"""Side of the fine-grid maps, px (the text is 168 x 256 and the sinogram 180 x 256)."""

SCALES = (2, 4)
"""Upscaling factors the set is built for (fine sides are multiples of 4)."""

TOOTH_H5 = Path(__file__).resolve().parents[2] / "tests" / "data" / "real" / "tomopy" / "tooth.h5"
"""TomoPy's tooth tomography in the repository's test data (the real case)."""


@dataclass(frozen=True)
class EvalCase:
    """One map of the evaluation set at one scale.

    Attributes
    ----------
    name : str
        Short name (``"grains"``, ``"tooth_sinogram"``, ...).
    source : str
        Where the content came from and under which licence.
    scale : int
        Upscaling factor ``s``.
    truth : numpy.ndarray
        ``(s H, s W)`` float64 noise-free counts on the fine grid.
    measured : numpy.ndarray
        ``(H, W)`` float32 Poisson counts.
    sigma_px : (float, float)
        Beam standard deviation ``(sigma_y, sigma_x)`` in measured pixels.
    peak_counts : float
        Counts of the brightest structure above the background (fine-grid truth scale).
    background : float
        Uniform background as a fraction of ``peak_counts``.
    seed : int
        Seed of this case's Poisson noise.
    """

    name: str
    source: str
    scale: int
    truth: np.ndarray
    measured: np.ndarray
    sigma_px: tuple[float, float]
    peak_counts: float
    background: float
    seed: int

    @property
    def anisotropic(self) -> bool:
        """Whether the beam differs between rows and columns."""
        return self.sigma_px[0] != self.sigma_px[1]

    @property
    def psf_sigma_px(self) -> float | tuple[float, float]:
        """What to pass as ``psf_sigma_px`` to :func:`asirp.restore`: a float or (sy, sx)."""
        return self.sigma_px if self.anisotropic else self.sigma_px[0]

    @property
    def beam_sigma_px(self) -> float:
        """The isotropic sigma the SR methods model the beam with (geometric mean), px."""
        return math.sqrt(self.sigma_px[0] * self.sigma_px[1])


@dataclass(frozen=True)
class CaseSpec:
    """How one case is made: its content generator, beam and count levels.

    Attributes
    ----------
    name, source : str
        As in :class:`EvalCase`.
    content : callable
        ``content(rng) -> (H, W)`` float64 map in [0, 1] on the fine grid.
    sigma_px : (float, float)
        Beam sigma ``(sigma_y, sigma_x)`` in measured pixels.
    peak_counts, background : float
        Peak counts and background fraction.
    """

    name: str
    source: str
    content: Callable[[np.random.Generator], np.ndarray]
    sigma_px: tuple[float, float]
    peak_counts: float
    background: float


def _normalise(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    image = image - image.min()
    return image / max(float(image.max()), 1e-12)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    trimmed = image[: rows * factor, : cols * factor]
    return trimmed.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def _fine_coordinates(shape: tuple[int, int], factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres of a ``factor``-times supersampled grid, in fine pixels."""
    y = (np.arange(shape[0] * factor) + 0.5) / factor
    x = (np.arange(shape[1] * factor) + 0.5) / factor
    return np.meshgrid(y, x, indexing="ij")


# --- synthetic content (none of it exists in asirp.sr.data) ------------------------------------


def voronoi_grains(
    rng: np.random.Generator, shape: tuple[int, int] = (SIZE, SIZE), count: int = 60
) -> np.ndarray:
    """A polycrystal: Voronoi cells of random levels with sharp boundaries (4x anti-aliased)."""
    seeds = rng.uniform(0, 1, (count, 2)) * shape
    levels = rng.uniform(0.1, 1.0, count)
    y, x = _fine_coordinates(shape, 4)
    _, nearest = cKDTree(seeds).query(np.stack([y.ravel(), x.ravel()], axis=1))
    return _normalise(_block_mean(levels[nearest].reshape(y.shape), 4))


def voronoi_foam(
    rng: np.random.Generator, shape: tuple[int, int] = (SIZE, SIZE), count: int = 45
) -> np.ndarray:
    """A foam: thin walls (1-3 fine px) between Voronoi cells, brighter at the junctions."""
    seeds = rng.uniform(0, 1, (count, 2)) * shape
    y, x = _fine_coordinates(shape, 4)
    distances, _ = cKDTree(seeds).query(np.stack([y.ravel(), x.ravel()], axis=1), k=3)
    # the distance to the bisector of the two nearest seeds is about half their distance gap
    wall = 0.5 * (distances[:, 1] - distances[:, 0])
    junction = 0.5 * (distances[:, 2] - distances[:, 0])
    width = rng.uniform(0.5, 1.5)
    image = np.where(wall < width, 1.0, 0.0) + 0.5 * np.exp(-((junction / (3 * width)) ** 2))
    return _normalise(_block_mean(image.reshape(y.shape), 4))


def curved_fibres(
    rng: np.random.Generator, shape: tuple[int, int] = (SIZE, SIZE), count: int = 14
) -> np.ndarray:
    """Curved filaments (quadratic Bezier paths) with Gaussian cross-sections 0.5-2.5 px wide."""
    factor = 2
    rows, cols = shape[0] * factor, shape[1] * factor
    image = np.zeros((rows, cols))
    t = np.linspace(0.0, 1.0, 4 * (rows + cols))[:, None]
    for _ in range(count):
        points = rng.uniform(-0.1, 1.1, (3, 2)) * (rows, cols)
        path = (1 - t) ** 2 * points[0] + 2 * t * (1 - t) * points[1] + t**2 * points[2]
        inside = (path[:, 0] >= 0) & (path[:, 0] < rows) & (path[:, 1] >= 0) & (path[:, 1] < cols)
        if not inside.any():
            continue
        line = np.ones((rows, cols), dtype=bool)
        line[path[inside, 0].astype(int), path[inside, 1].astype(int)] = False
        distance = ndimage.distance_transform_edt(line) / factor
        sigma = rng.uniform(0.5, 2.5) / 2.355
        image += rng.uniform(0.4, 1.0) * np.exp(-0.5 * (distance / sigma) ** 2)
    return _normalise(_block_mean(1.0 - np.exp(-1.5 * image), factor))  # overlaps saturate


def dot_array(
    rng: np.random.Generator, shape: tuple[int, int] = (SIZE, SIZE), pitch: tuple = (3.0, 12.0)
) -> np.ndarray:
    """Discs on a grid whose pitch grows from 3 to 12 fine px across the columns (rows alike).

    The disc diameter is 45 % of the local pitch; the array is shifted by a random sub-pixel
    offset, so the discs do not sit on the pixel grid.
    """
    factor = 4
    y, x = _fine_coordinates(shape, factor)
    offset = rng.uniform(0, 1, 2)

    def warp(u: np.ndarray, size: int) -> np.ndarray:
        # the position in "dot units" whose derivative is 1 / pitch(u): pitch linear in u
        low, high = pitch
        rate = (high - low) / size
        return np.log1p(rate * u / low) / rate

    uy, ux = warp(y, shape[0]) + offset[0], warp(x, shape[1]) + offset[1]
    dy, dx = uy - np.round(uy), ux - np.round(ux)  # distance to the nearest dot, in pitches
    image = ((dy**2 + dx**2) <= 0.225**2).astype(float)
    return _normalise(_block_mean(image, factor))


def zone_plate(rng: np.random.Generator, shape: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """A Fresnel zone plate (chirped rings, 0 to 0.35 cycles per fine px), centre off the middle."""
    y, x = _fine_coordinates(shape, 4)
    centre = rng.uniform(0.4, 0.6, 2) * shape
    radius_sq = (y - centre[0]) ** 2 + (x - centre[1]) ** 2
    # local frequency r / (2 L) cycles per px: 0.35 at r = 0.7 L
    image = 0.5 + 0.5 * np.cos(math.pi * radius_sq / (2 * max(shape)))
    return _normalise(_block_mean(image, 4))


# --- standard test images shipped with scikit-image (no download) -------------------------------


def _gray(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray

    image = getattr(skimage.data, name)()
    return rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)


def skimage_cell(rng: np.random.Generator) -> np.ndarray:
    """``skimage.data.cell`` (quantitative phase, 0.107 µm px), rows 250-506, columns 285-541.

    The crop is centred on the cell (about 90 px across) and keeps the background's banding.
    """
    return _normalise(_gray("cell")[250 : 250 + SIZE, 285 : 285 + SIZE])


def skimage_coins(rng: np.random.Generator) -> np.ndarray:
    """``skimage.data.coins`` (Greek coins from Pompeii), rows 24-280, columns 64-320."""
    return _normalise(_gray("coins")[24 : 24 + SIZE, 64 : 64 + SIZE])


def skimage_hubble(rng: np.random.Generator) -> np.ndarray:
    """``skimage.data.hubble_deep_field`` in grey, a 256 x 256 crop: point and extended sources."""
    return _normalise(_gray("hubble_deep_field")[300 : 300 + SIZE, 400 : 400 + SIZE])


def skimage_text(rng: np.random.Generator) -> np.ndarray:
    """``skimage.data.text``, rows 2-170, columns 96-352 (168 x 256): strokes on a shaded page."""
    return _normalise(_gray("text")[2:170, 96:352])


def skimage_gravel(rng: np.random.Generator) -> np.ndarray:
    """``skimage.data.gravel`` 2x2-binned to 256 x 256: a granular texture."""
    return _normalise(_block_mean(_gray("gravel"), 2))


# --- real data -----------------------------------------------------------------------------------


def _read_exchange_frames(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Projections, flats and darks of a Data Exchange file, checked before and after reading.

    Opened by descriptor (:func:`asirp.io.open_input_file`); the datasets are found without
    following links out of the file, their declared sizes are checked against the input limit
    before anything is read, and the values must be finite. (:mod:`asirp.tomo` has the full
    reader, but the layers of the core keep :mod:`asirp.sr` below it.)
    """
    import h5py

    from asirp.io import InputFileError, check_declared_size, hdf5_dataset, open_input_file

    frames = {}
    with open_input_file(path, "tomography file") as stream:
        try:
            handle = h5py.File(stream, "r")
        except OSError:
            raise InputFileError(f"{path} is not an HDF5 file") from None
        with handle:
            for key in ("data", "data_white", "data_dark"):
                dataset = hdf5_dataset(handle, f"exchange/{key}", str(path))
                if dataset.ndim != 3 or 0 in dataset.shape:
                    raise InputFileError(f"{path}::exchange/{key} is not 3-D: {dataset.shape}")
                check_declared_size(dataset.shape, dataset.dtype, f"{path}::exchange/{key}")
                values = np.asarray(dataset[()], dtype=np.float64)
                if not np.isfinite(values).all():
                    raise InputFileError(f"{path}::exchange/{key} holds NaN or Inf values")
                frames[key] = values
    return frames


def tooth_sinogram(path: str | os.PathLike | None = None) -> np.ndarray:
    """The absorption sinogram of TomoPy's tooth, 180 angles x 256 px, in [0, 1].

    The scan (181 projections of 2 rows x 640 px, 10 flats, 10 darks) is flat/dark corrected,
    its two rows averaged (less noise in the reference), turned into line integrals ``-log T``
    and cropped to the first 180 angles and columns 160-416 (the tooth spans about 124-423).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The Data Exchange file (default: :data:`TOOTH_H5`).

    Returns
    -------
    numpy.ndarray
        ``(180, 256)`` float64, scaled to [0, 1].

    Raises
    ------
    asirp.io.InputFileError
        When the file is missing, not Data Exchange, too large, or too small for the crop.
    """
    from asirp.io import InputFileError

    source = TOOTH_H5 if path is None else path
    frames = _read_exchange_frames(source)
    projections = frames["data"]
    if projections.shape[0] < 180 or projections.shape[2] < 416:
        raise InputFileError(
            f"{source}: projections of shape {projections.shape}; at least (180, R, 416) needed"
        )
    dark = frames["data_dark"].mean(axis=0)
    white = frames["data_white"].mean(axis=0)
    if white.shape != projections.shape[1:] or dark.shape != projections.shape[1:]:
        raise InputFileError(f"{source}: flats, darks and projections differ in frame shape")
    transmission = (projections - dark) / np.maximum(white - dark, 1e-6)
    sinogram = transmission.mean(axis=1)[:180, 160:416]
    return _normalise(-np.log(np.clip(sinogram, 1e-3, None)))


def real_tooth(rng: np.random.Generator) -> np.ndarray:
    """:func:`tooth_sinogram` from :data:`TOOTH_H5` (``rng`` is unused: real data)."""
    return tooth_sinogram()


CASES: tuple[CaseSpec, ...] = (
    CaseSpec(
        "grains",
        "synthetic Voronoi polycrystal (asirp.sr.evalset.voronoi_grains)",
        voronoi_grains,
        (0.5, 1.0),
        300.0,
        0.3,
    ),
    CaseSpec(
        "foam",
        "synthetic Voronoi foam walls (asirp.sr.evalset.voronoi_foam)",
        voronoi_foam,
        (1.3, 1.3),
        1000.0,
        0.05,
    ),
    CaseSpec(
        "fibres",
        "synthetic curved filaments (asirp.sr.evalset.curved_fibres)",
        curved_fibres,
        (1.0, 0.6),
        40.0,
        0.0,
    ),
    CaseSpec(
        "dots",
        "synthetic dot array of varying pitch (asirp.sr.evalset.dot_array)",
        dot_array,
        (0.2, 0.2),
        50.0,
        0.02,
    ),
    CaseSpec(
        "zone_plate",
        "synthetic Fresnel zone plate (asirp.sr.evalset.zone_plate)",
        zone_plate,
        (0.45, 0.45),
        12000.0,
        0.0,
    ),
    CaseSpec(
        "cell",
        "skimage.data.cell: quantitative phase image of a cell (P. Müller et al., "
        "Opt. Express 26, 10729 (2018)); CC0",
        skimage_cell,
        (0.9, 0.9),
        8000.0,
        0.1,
    ),
    CaseSpec(
        "coins",
        "skimage.data.coins: Greek coins from Pompeii, Brooklyn Museum; no known "
        "copyright restrictions (public domain)",
        skimage_coins,
        (1.2, 0.7),
        150.0,
        0.0,
    ),
    CaseSpec(
        "hubble",
        "skimage.data.hubble_deep_field: Hubble eXtreme Deep Field, NASA; public domain",
        skimage_hubble,
        (0.6, 0.6),
        10.0,
        0.5,
    ),
    CaseSpec(
        "text",
        "skimage.data.text: Wikipedia File:Corner.png; public domain",
        skimage_text,
        (1.4, 1.4),
        500.0,
        0.1,
    ),
    CaseSpec(
        "gravel",
        "skimage.data.gravel: CC0Textures Gravel04; CC0",
        skimage_gravel,
        (0.25, 0.25),
        2500.0,
        0.25,
    ),
    CaseSpec(
        "tooth_sinogram",
        "real: TomoPy tooth.h5 (tests/data/real/tomopy), absorption "
        "sinogram; BSD-style licence (UChicago Argonne)",
        real_tooth,
        (0.7, 0.7),
        800.0,
        0.05,
    ),
)
"""The cases, in order: name, source, content, beam sigma (measured px), peak, background."""


def blur_area_sample(fine: np.ndarray, sigma_px: tuple[float, float], scale: int) -> np.ndarray:
    """The noise-free forward model with a possibly anisotropic Gaussian beam.

    Parameters
    ----------
    fine : numpy.ndarray
        ``(s H, s W)`` fine-grid map (counts).
    sigma_px : (float, float)
        Beam sigma ``(sigma_y, sigma_x)`` in **measured** pixels (``scale`` times that on the
        fine grid).
    scale : int
        Upscaling factor ``s``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float64: the pixel-integrated Gaussian of :func:`asirp.psf.gaussian_psf` with
        mirror boundaries (as :func:`asirp.sr.degrade.gaussian_blur`), then ``s x s`` block means.
    """
    kernel = gaussian_psf((sigma_px[0] * scale, sigma_px[1] * scale)).astype(np.float64)
    blurred = np.asarray(fine, dtype=np.float64)
    for axis, profile in enumerate((kernel.sum(axis=1), kernel.sum(axis=0))):
        if profile.size // 2 >= blurred.shape[axis]:
            raise ValueError(f"beam too wide for a map of {blurred.shape} px")
        blurred = ndimage.correlate1d(blurred, profile / profile.sum(), axis=axis, mode="mirror")
    return _block_mean(blurred, scale)


def case_names() -> list[str]:
    """Names of the cases, in order."""
    return [spec.name for spec in CASES]


def make_case(
    spec: CaseSpec,
    index: int,
    scale: int,
    seed: int = NOISE_SEED,
    content_seed: int = CONTENT_SEED,
) -> EvalCase:
    """Build one case at one scale (synthetic content seeded by ``content_seed + index``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    content = spec.content(np.random.default_rng(content_seed + index))
    if content.shape[0] % 4 or content.shape[1] % 4:
        raise ValueError(f"case {spec.name!r}: fine shape {content.shape} is not a multiple of 4")
    truth = spec.peak_counts * (spec.background + content)
    noise_seed = seed + 1000 * scale + index
    clean = blur_area_sample(truth, spec.sigma_px, scale)
    measured = np.random.default_rng(noise_seed).poisson(np.clip(clean, 0.0, None))
    return EvalCase(
        name=spec.name,
        source=spec.source,
        scale=scale,
        truth=truth,
        measured=measured.astype(np.float32),
        sigma_px=(float(spec.sigma_px[0]), float(spec.sigma_px[1])),
        peak_counts=float(spec.peak_counts),
        background=float(spec.background),
        seed=noise_seed,
    )


def evaluation_set(
    scale: int,
    seed: int = NOISE_SEED,
    names: list[str] | None = None,
    content_seed: int = CONTENT_SEED,
) -> list[EvalCase]:
    """The held-out evaluation set at one scale.

    Parameters
    ----------
    scale : int
        Upscaling factor, 2 or 4 (the measured maps are the fine maps / ``scale``: 128 x 128 or
        64 x 64 for the 256 x 256 cases).
    seed : int
        Base seed of the Poisson noise (case ``i`` at scale ``s`` uses ``seed + 1000 s + i``);
        the content does not depend on it.
    names : list of str, optional
        Only these cases (default: all 11 of :data:`CASES`).
    content_seed : int
        Base seed of the synthetic content (grains, foam, fibres, dots, zone plate; case ``i``
        uses ``content_seed + i``); another seed draws fresh instances of the same generators,
        for a check on content nobody has looked at. The real images do not depend on it.

    Returns
    -------
    list of EvalCase
        In the order of :data:`CASES`.

    Raises
    ------
    ValueError
        For a scale other than 2 or 4, or an unknown case name.
    """
    wanted = case_names() if names is None else list(names)
    unknown = sorted(set(wanted) - set(case_names()))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(case_names())}")
    return [
        make_case(spec, index, scale, seed, content_seed)
        for index, spec in enumerate(CASES)
        if spec.name in wanted
    ]
