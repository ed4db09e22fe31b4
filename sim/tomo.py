r"""Tomography projection source: a 3-D ellipsoid phantom, projections, flats and darks.

Parallel-beam projections are blurred by the detector PSF, counted with noise and written like
Data Exchange HDF5 (``exchange/data``, ``data_white``, ``data_dark``, ``theta``).

Geometry: the rotation axis is vertical (detector rows, ``z``); at angle ``theta`` a detector
column ``u`` sees the line ``u (cos t, sin t, 0) + z e_z + s (-sin t, cos t, 0)``. Line
integrals through ellipsoids are exact (chord lengths of a quadric), averaged over
``supersample**2`` points per detector pixel. The measured frames are

.. math::

    d = \\mathrm{Poisson}\\big(g \\cdot (h * (F e^{-P}))\\big) + D + \\epsilon

with flat-field beam profile ``F`` (counts), pixel gains ``g``, detector PSF ``h`` (scintillator
and optics blur), dark level ``D`` and Gaussian read noise ``epsilon``. Flats are the same
without sample; darks are ``D + epsilon``. ``-log((d - dark) / (flat - dark))`` recovers the
blurred line integrals.

:class:`ProjectionDetector` (:func:`make_projection_detector`) is the same detector physics one
frame at a time, for the simulated camera of :mod:`sim.tomo_devices`; :func:`simulate_tomo` uses
it for whole scans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import convolve

from asirp import nexus
from asirp.psf import beam_sigma_px, gaussian_psf
from asirp.safe_files import atomic_write


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid of uniform attenuation (values add where ellipsoids overlap).

    Attributes
    ----------
    centre_um : (float, float, float)
        Centre ``(z, y, x)``, µm (origin on the rotation axis, mid-height).
    semi_axes_um : (float, float, float)
        Semi-axes along ``(z, y', x')``, µm (``x'``, ``y'`` rotated by ``angle_deg``).
    angle_deg : float
        Rotation about the vertical axis, degrees.
    mu_per_mm : float
        Linear attenuation coefficient added inside, 1/mm (negative values carve holes).
    """

    centre_um: tuple[float, float, float]
    semi_axes_um: tuple[float, float, float]
    angle_deg: float
    mu_per_mm: float

    def quadric(self) -> np.ndarray:
        """Matrix ``M`` (3x3, in (z, y, x) order) with ``q^T M q <= 1`` inside, 1/µm²."""
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
        scale = np.diag([1.0 / a**2 for a in self.semi_axes_um])
        return rotation.T @ scale @ rotation


def phantom_3d(
    *,
    width_um: float = 640.0,
    height_um: float = 320.0,
    n_inclusions: int = 8,
    rng: np.random.Generator | int | None = 0,
) -> list[Ellipsoid]:
    """A small 3-D phantom: a cylinder-like body with a shell, dense grains and pores.

    Parameters
    ----------
    width_um : float
        Detector field width, µm (the body fills about 70 % of it).
    height_um : float
        Detector field height, µm.
    n_inclusions : int
        Number of random inclusions (grains and pores).
    rng : numpy.random.Generator or int or None
        Random generator or seed of the inclusions.

    Returns
    -------
    list of Ellipsoid
    """
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if isinstance(n_inclusions, bool) or not isinstance(n_inclusions, int) or n_inclusions < 0:
        raise ValueError(f"n_inclusions must be an integer >= 0, got {n_inclusions!r}")
    if not (width_um > 0 and height_um > 0):
        raise ValueError("width_um and height_um must be > 0")
    r = 0.35 * width_um
    h = 0.45 * height_um
    # Values in 1/mm: about 2 in the body, so that the longest chords reach exp(-1.5).
    parts = [
        Ellipsoid((0.0, 0.0, 0.0), (2.0 * h, r, 0.9 * r), 10.0, 2.0),
        Ellipsoid((0.0, 0.0, 0.0), (2.0 * h, 0.85 * r, 0.75 * r), 10.0, -0.8),
    ]
    for _ in range(n_inclusions):
        radius = generator.uniform(0.05, 0.15) * r
        rho = generator.uniform(0.0, 0.55) * r
        phi = generator.uniform(0, 2 * math.pi)
        z = generator.uniform(-0.7, 0.7) * h
        semi = (radius * generator.uniform(0.7, 1.3), radius, radius * generator.uniform(0.6, 1.0))
        mu = float(generator.choice([-1.0, 1.0]) * generator.uniform(0.8, 4.0))
        parts.append(
            Ellipsoid(
                (z, rho * math.sin(phi), rho * math.cos(phi)),
                semi,
                float(generator.uniform(0, 180)),
                mu,
            )
        )
    return parts


def line_integrals(
    phantom: Sequence[Ellipsoid],
    theta_deg: np.ndarray,
    shape: tuple[int, int],
    pixel_um: float,
    *,
    supersample: int = 2,
) -> np.ndarray:
    """Exact parallel-beam line integrals of the attenuation, ``(n_angles, rows, columns)``.

    Parameters
    ----------
    phantom : sequence of Ellipsoid
        The object.
    theta_deg : numpy.ndarray
        Projection angles, degrees.
    shape : (int, int)
        Detector ``(rows, columns)``.
    pixel_um : float
        Detector pixel, µm.
    supersample : int
        Sub-pixels per pixel and axis.

    Returns
    -------
    numpy.ndarray
        float64, dimensionless (``mu * length``).
    """
    theta = np.radians(np.asarray(theta_deg, dtype=np.float64))
    rows, cols = shape
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    z = ((np.arange(rows)[:, None] + offsets).ravel() - (rows - 1) / 2.0) * pixel_um
    u = ((np.arange(cols)[:, None] + offsets).ravel() - (cols - 1) / 2.0) * pixel_um
    cos_t, sin_t = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    zz = z[None, :, None]
    uu = u[None, None, :]
    # Points on the lines at s = 0 and the direction, in (z, y, x).
    p = (np.broadcast_to(zz, (theta.size, z.size, u.size)), uu * sin_t, uu * cos_t)
    d = (0.0, cos_t, -sin_t)
    total = np.zeros((theta.size, z.size, u.size))
    for part in phantom:
        m = part.quadric()
        q = [p[i] - part.centre_um[i] for i in range(3)]
        md = [sum(m[i, j] * d[j] for j in range(3)) for i in range(3)]
        a = sum(d[i] * md[i] for i in range(3))
        b = sum(q[i] * md[i] for i in range(3))
        mq = [sum(m[i, j] * q[j] for j in range(3)) for i in range(3)]
        c = sum(q[i] * mq[i] for i in range(3)) - 1.0
        disc = np.clip(b * b - a * c, 0.0, None)
        total += part.mu_per_mm * 1e-3 * 2.0 * np.sqrt(disc) / a
    total = total.reshape(theta.size, rows, supersample, cols, supersample).mean(axis=(2, 4))
    return np.clip(total, 0.0, None)


@dataclass
class TomoData:
    """A simulated tomography data set (Data Exchange-like) with its ground truth.

    Attributes
    ----------
    data : numpy.ndarray
        Projections ``(n_angles, rows, columns)``, float32 counts.
    data_white : numpy.ndarray
        Flat fields ``(n_flats, rows, columns)``, float32 counts.
    data_dark : numpy.ndarray
        Dark fields ``(n_darks, rows, columns)``, float32 counts.
    theta_deg : numpy.ndarray
        Angles ``(n_angles,)``, degrees.
    line_integrals : numpy.ndarray
        Noise-free, unblurred ``mu * length`` ``(n_angles, rows, columns)``, float64.
    expected : numpy.ndarray
        Noise-free, unblurred transmitted counts ``F * g * exp(-P)`` (what a perfect detector
        would see on average), float64, same shape.
    psf : numpy.ndarray
        Detector PSF ``(h, w)``, float32, sum 1.
    pixel_um : float
        Detector pixel, µm.
    dark_level : float
        Mean dark counts.
    phantom : list of Ellipsoid
        The object.
    metadata : dict
        JSON-serialisable description.
    """

    data: np.ndarray
    data_white: np.ndarray
    data_dark: np.ndarray
    theta_deg: np.ndarray
    line_integrals: np.ndarray
    expected: np.ndarray
    psf: np.ndarray
    pixel_um: float
    dark_level: float
    phantom: list[Ellipsoid]
    metadata: dict = field(default_factory=dict)

    def normalized(self) -> np.ndarray:
        """Flat- and dark-corrected transmission ``(data - dark) / (white - dark)``, float32."""
        dark = self.data_dark.mean(axis=0)
        white = self.data_white.mean(axis=0) - dark
        return ((self.data - dark) / np.clip(white, 1e-6, None)).astype(np.float32)

    def write(
        self,
        path: str | Path,
        *,
        title: str = "asirp simulated tomography",
        overwrite: bool = False,
    ) -> Path:
        """Write Data Exchange HDF5 (``exchange/data``, ``data_white``, ``data_dark``, ``theta``).

        Parameters
        ----------
        path : str or pathlib.Path
            Output file, written atomically; an existing file is kept unless ``overwrite``.
        title : str
            ``exchange/title``.
        overwrite : bool
            Replace an existing file at ``path``.

        Returns
        -------
        pathlib.Path
        """
        import json

        with (
            atomic_write(path, overwrite=overwrite) as output,
            h5py.File(output.file, "w") as handle,
        ):
            handle["implements"] = "exchange:measurement"
            exchange = handle.create_group("exchange")
            for name, array, axes in (
                ("data", self.data, "theta:y:x"),
                ("data_white", self.data_white, "theta_white:y:x"),
                ("data_dark", self.data_dark, "theta_dark:y:x"),
            ):
                dataset = exchange.create_dataset(name, data=array.astype(np.float32))
                dataset.attrs.update(axes=axes, units="counts")
            exchange["data"].attrs["description"] = "transmission"
            exchange.create_dataset("theta", data=self.theta_deg).attrs["units"] = "degrees"
            exchange["title"] = title
            sample = handle.create_group("measurement/sample")
            sample["name"] = "asirp ellipsoid phantom"
            handle.create_group("measurement/instrument/detector").create_dataset(
                "x_pixel_size", data=self.pixel_um
            ).attrs["units"] = "um"
            handle["measurement"].attrs["asirp_simulation"] = json.dumps(self.metadata)
            # A NeXus view of the same datasets (hard links), so NeXus viewers (silx) open the
            # projections with their angles and µm axes; the Data Exchange layout is unchanged.
            entry = nexus.create_entry(handle, title=title)
            y, x = nexus.pixel_axes(self.data.shape, self.pixel_um)
            theta = nexus.Axis("theta", exchange["theta"], "degrees", "theta (degrees)")
            nexus.write_nxdata(entry, "projections", exchange["data"], [theta, y, x], default=True)
        return Path(path)


@dataclass
class ProjectionDetector:
    """The physics of one tomography detector looking at one object, frame by frame.

    What :func:`simulate_tomo` does to a whole scan, for one frame at a time (the simulated
    area detector of :mod:`sim.tomo_devices` renders each frame at the stage's current angle):
    ``Poisson(g * (h * (F e^{-P}))) + D + epsilon``, with the symbols of this module's
    docstring. Use :func:`make_projection_detector`.

    Attributes
    ----------
    phantom : list of Ellipsoid
        The object.
    shape : (int, int)
        Detector ``(rows, columns)``.
    pixel_um : float
        Detector pixel, µm.
    psf_fwhm_um : (float, float)
        Detector blur FWHM (vertical, horizontal), µm.
    psf : numpy.ndarray
        Detector PSF ``(h, w)``, float32, sum 1.
    profile : numpy.ndarray
        Open-beam profile ``F`` ``(rows, columns)``, float64 counts.
    gains : numpy.ndarray
        Pixel gains ``g`` ``(rows, columns)``, float64, about 1.
    dark_level : float
        Mean dark counts ``D``.
    read_noise : float
        Standard deviation of the Gaussian read noise, counts.
    """

    phantom: list[Ellipsoid]
    shape: tuple[int, int]
    pixel_um: float
    psf_fwhm_um: tuple[float, float]
    psf: np.ndarray
    profile: np.ndarray
    gains: np.ndarray
    dark_level: float
    read_noise: float

    def line_integrals(self, theta_deg: np.ndarray) -> np.ndarray:
        """Unblurred ``mu * length`` at ``theta_deg`` (degrees): ``(n, rows, columns)`` float64."""
        return line_integrals(self.phantom, np.atleast_1d(theta_deg), self.shape, self.pixel_um)

    def transmitted(self, theta_deg: np.ndarray) -> np.ndarray:
        """Noise-free open beam through the object ``F e^{-P}``, ``(n, rows, columns)`` counts."""
        return self.profile[None] * np.exp(-self.line_integrals(theta_deg))

    def detect(self, intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Blur, gains, Poisson counts, dark level and read noise of ``intensity``.

        Parameters
        ----------
        intensity : numpy.ndarray
            ``(rows, columns)`` or ``(n, rows, columns)`` counts reaching the scintillator.
        rng : numpy.random.Generator
            Random generator of the counts and the read noise.

        Returns
        -------
        numpy.ndarray
            Same shape, float32 counts.
        """
        kernel = self.psf.astype(np.float64)
        if intensity.ndim == 3:
            kernel = kernel[None]
        blurred = np.clip(convolve(intensity, kernel, mode="reflect"), 0, None)
        counts = rng.poisson(self.gains * blurred).astype(np.float64)
        noise = self.read_noise * rng.standard_normal(counts.shape)
        return (counts + self.dark_level + noise).astype(np.float32)

    def darks(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` dark frames (shutter closed): ``(count, rows, columns)`` float32 counts."""
        noise = self.read_noise * rng.standard_normal((count, *self.shape))
        return (self.dark_level + noise).astype(np.float32)

    def projection(self, theta_deg: float, rng: np.random.Generator) -> np.ndarray:
        """One projection at ``theta_deg`` degrees: ``(rows, columns)`` float32 counts."""
        return self.detect(self.transmitted(np.array([float(theta_deg)]))[0], rng)

    def flat(self, rng: np.random.Generator) -> np.ndarray:
        """One open-beam frame (no sample): ``(rows, columns)`` float32 counts."""
        return self.detect(self.profile, rng)

    def dark(self, rng: np.random.Generator) -> np.ndarray:
        """One dark frame (shutter closed): ``(rows, columns)`` float32 counts."""
        return self.darks(1, rng)[0]


def make_projection_detector(
    *,
    shape: tuple[int, int] = (16, 64),
    pixel_um: float = 10.0,
    psf_fwhm_um: float | Sequence[float] = 25.0,
    flat_counts: float = 5000.0,
    dark_level: float = 100.0,
    read_noise: float = 3.0,
    gain_spread: float = 0.02,
    phantom: Sequence[Ellipsoid] | None = None,
    rng: np.random.Generator | int | None = 0,
) -> ProjectionDetector:
    """The detector physics of :func:`simulate_tomo`, to render frames one at a time.

    The random draws (the phantom, when none is given, then the pixel gains) are the ones
    :func:`simulate_tomo` makes first: with the same ``rng`` the object and gains are the same.

    Parameters
    ----------
    shape : (int, int)
        Detector ``(rows, columns)`` (rows >= 1, columns >= 8).
    pixel_um : float
        Detector pixel, µm.
    psf_fwhm_um : float or (float, float)
        Detector blur FWHM, µm (Gaussian), isotropic or (vertical, horizontal).
    flat_counts : float
        Mean counts of the open beam per pixel.
    dark_level : float
        Mean dark counts.
    read_noise : float
        Gaussian read-noise standard deviation, counts.
    gain_spread : float
        Relative standard deviation of the per-pixel gains.
    phantom : sequence of Ellipsoid, optional
        The object (default :func:`phantom_3d` for the detector field).
    rng : numpy.random.Generator or int or None
        Random generator or seed of the phantom and the gains.

    Returns
    -------
    ProjectionDetector
    """
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    rows, cols = (int(v) for v in shape)
    if rows < 1 or cols < 8:
        raise ValueError(f"shape must be (rows >= 1, columns >= 8), got {shape!r}")
    if not (flat_counts > 0 and dark_level >= 0 and read_noise >= 0 and gain_spread >= 0):
        raise ValueError("flat_counts must be > 0; dark_level, read_noise, gain_spread >= 0")
    parts = (
        list(phantom)
        if phantom is not None
        else phantom_3d(width_um=cols * pixel_um, height_um=rows * pixel_um, rng=generator)
    )
    sigma = beam_sigma_px(psf_fwhm_um, pixel_um)
    psf = gaussian_psf(sigma, max_shape=(rows, cols))
    u = np.linspace(-1.0, 1.0, cols)
    profile = flat_counts * (1.0 - 0.15 * u**2)[None, :] * np.ones((rows, 1))
    gains = 1.0 + gain_spread * generator.standard_normal((rows, cols))
    fwhm = np.broadcast_to(np.asarray(psf_fwhm_um, float), (2,))
    return ProjectionDetector(
        phantom=parts,
        shape=(rows, cols),
        pixel_um=float(pixel_um),
        psf_fwhm_um=(float(fwhm[0]), float(fwhm[1])),
        psf=psf,
        profile=profile,
        gains=gains,
        dark_level=float(dark_level),
        read_noise=float(read_noise),
    )


def simulate_tomo(
    *,
    shape: tuple[int, int] = (16, 64),
    n_angles: int = 90,
    theta_range_deg: tuple[float, float] = (0.0, 180.0),
    pixel_um: float = 10.0,
    psf_fwhm_um: float | Sequence[float] = 25.0,
    flat_counts: float = 5000.0,
    n_flats: int = 10,
    n_darks: int = 10,
    dark_level: float = 100.0,
    read_noise: float = 3.0,
    gain_spread: float = 0.02,
    phantom: Sequence[Ellipsoid] | None = None,
    rng: np.random.Generator | int | None = 0,
) -> TomoData:
    """Simulate projections, flats and darks of a 3-D phantom.

    Parameters
    ----------
    shape : (int, int)
        Detector ``(rows, columns)``.
    n_angles : int
        Number of projections, evenly spaced over ``theta_range_deg`` (end excluded).
    theta_range_deg : (float, float)
        First angle and end of the range, degrees.
    pixel_um : float
        Detector pixel, µm.
    psf_fwhm_um : float or (float, float)
        Detector blur FWHM, µm (Gaussian), isotropic or (vertical, horizontal).
    flat_counts : float
        Mean counts of the open beam per pixel.
    n_flats, n_darks : int
        Number of flat and dark frames.
    dark_level : float
        Mean dark counts.
    read_noise : float
        Gaussian read-noise standard deviation, counts.
    gain_spread : float
        Relative standard deviation of the per-pixel gains (ring artefacts if not flat-fielded).
    phantom : sequence of Ellipsoid, optional
        The object (default :func:`phantom_3d` for the detector field).
    rng : numpy.random.Generator or int or None
        Random generator or seed (phantom, gains and noise).

    Returns
    -------
    TomoData
    """
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    rows, cols = (int(v) for v in shape)
    if rows < 1 or cols < 8:
        raise ValueError(f"shape must be (rows >= 1, columns >= 8), got {shape!r}")
    for name, value in (("n_angles", n_angles), ("n_flats", n_flats), ("n_darks", n_darks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not (flat_counts > 0 and dark_level >= 0 and read_noise >= 0 and gain_spread >= 0):
        raise ValueError("flat_counts must be > 0; dark_level, read_noise, gain_spread >= 0")
    theta = np.linspace(theta_range_deg[0], theta_range_deg[1], n_angles, endpoint=False)
    detector = make_projection_detector(
        shape=(rows, cols),
        pixel_um=pixel_um,
        psf_fwhm_um=psf_fwhm_um,
        flat_counts=flat_counts,
        dark_level=dark_level,
        read_noise=read_noise,
        gain_spread=gain_spread,
        phantom=phantom,
        rng=generator,
    )
    parts, psf, profile, gains = detector.phantom, detector.psf, detector.profile, detector.gains
    integrals = detector.line_integrals(theta)
    transmitted = profile[None] * np.exp(-integrals)
    data = detector.detect(transmitted, generator)
    white = detector.detect(np.broadcast_to(profile, (n_flats, rows, cols)), generator)
    dark = detector.darks(n_darks, generator)
    return TomoData(
        data=data,
        data_white=white,
        data_dark=dark,
        theta_deg=theta,
        line_integrals=integrals,
        expected=gains * transmitted,
        psf=psf,
        pixel_um=float(pixel_um),
        dark_level=float(dark_level),
        phantom=parts,
        metadata={
            "shape": [rows, cols],
            "n_angles": n_angles,
            "pixel_um": float(pixel_um),
            "psf_fwhm_um": list(np.broadcast_to(np.asarray(psf_fwhm_um, float), (2,))),
            "flat_counts": float(flat_counts),
            "dark_level": float(dark_level),
            "read_noise": float(read_noise),
            "gain_spread": float(gain_spread),
        },
    )
