"""Samples of the simulated µ-XRF beamline, in physical units.

A :class:`Sample` is a set of per-element areal-density maps (µg/cm²) on a fine square grid
centred on the stage origin, plus a light scattering matrix (for example dried tissue) and,
where the sample has them, the ground-truth hotspots. Stage coordinates are ``(y, x)`` in µm;
pixel ``(i, j)`` of a map has its centre at ``(y_um[i], x_um[j])``.

Samples
-------
``"ag300"``, ``"ag175"`` (:func:`copper_mesh`)
    Square copper TEM grids, slightly rotated: AG300 has 58 µm holes and 25 µm bars,
    AG175 108 µm holes and 37 µm bars.
``"seed"`` (:func:`seed_tissue`)
    Smooth tissue (cellulose-like matrix with trace Fe, Zn, Se) with element hotspots of
    varied sizes; the hotspots are returned as :class:`Hotspot` records.
``"tissue"`` (:func:`clustered_tissue`)
    The seed-like tissue with the hotspot layouts that a beam hides, as real tissue has them:
    sub-beam hotspots, close pairs (centres 30-60 µm apart) and weak spots next to strong ones.
``"siemens"``, ``"line_pairs"`` (:func:`resolution_target`)
    Gold resolution targets: a Siemens star, or groups of bars of decreasing period.
``"foil"`` (:func:`uniform_foil`)
    A homogeneous thin film (a flat region for noise and normalisation checks).

All maps are area fractions computed by supersampling (sharp edges are anti-aliased), so a
coarser scan of the same sample sees the same object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.phantoms import copper_mesh as _mesh_fraction

MESHES: dict[str, tuple[float, float]] = {
    "ag300": (58.0, 25.0),
    "ag175": (108.0, 37.0),
}
"""Hole and bar widths (µm) of the copper grids, by name (AG300: 300 lines per inch)."""

SAMPLE_NAMES = ("ag300", "ag175", "seed", "tissue", "siemens", "line_pairs", "foil")
"""Names accepted by :func:`make_sample`."""

COPPER_DENSITY_G_CM3 = 8.96

PAIR_DISTANCE_UM = (30.0, 60.0)
"""Centre distance of a close pair, µm: 0.6-1.2 times a 50 µm beam, which merges them."""
PAIR_RADIUS_UM = (8.0, 25.0)
"""Radius (at half maximum) of each hotspot of a close pair, µm."""
PAIR_CONCENTRATION = (2.0, 15.0)
"""Peak areal density of each hotspot of a close pair, µg/cm²."""
SATELLITE_DISTANCE_UM = (40.0, 70.0)
"""Distance of a weak hotspot from the strong one it sits next to, µm."""
STRONG_RADIUS_UM = (20.0, 40.0)
"""Radius of the strong hotspot of a strong/weak group, µm."""
STRONG_CONCENTRATION = (8.0, 20.0)
"""Peak areal density of the strong hotspot, µg/cm²."""
WEAK_RADIUS_UM = (8.0, 15.0)
"""Radius of the weak hotspot next to a strong one, µm."""
WEAK_CONCENTRATION = (2.0, 5.0)
"""Peak areal density of the weak hotspot, µg/cm²."""


@dataclass(frozen=True)
class Hotspot:
    """One ground-truth element hotspot of a seed-like sample.

    Attributes
    ----------
    centre_um : (float, float)
        Centre ``(y, x)`` on the stage, µm.
    radius_um : float
        Radius at half maximum (half the FWHM of the Gaussian profile), µm.
    element : str
        Chemical symbol.
    concentration : float
        Peak areal density added on top of the tissue, µg/cm².
    """

    centre_um: tuple[float, float]
    radius_um: float
    element: str
    concentration: float


@dataclass
class Sample:
    """A sample: element areal-density maps on a fine grid centred on the stage origin.

    Attributes
    ----------
    name : str
        Sample name (one of :data:`SAMPLE_NAMES` for the built-in ones).
    maps : dict of str to numpy.ndarray
        Element symbol -> areal density ``(ny, nx)``, float64, µg/cm².
    pixel_um : float
        Fine-grid pixel size, µm.
    matrix : numpy.ndarray or None
        Areal density of the light matrix ``(ny, nx)``, µg/cm² (scatters, does not fluoresce
        in the detected range), or None when there is none.
    matrix_formula : str
        Chemical formula of the matrix (xraylib syntax), used for its scatter cross sections.
    hotspots : tuple of Hotspot
        Ground-truth hotspots (empty for samples without).
    description : dict
        JSON-serialisable facts (geometry, thicknesses, recommended flux).
    """

    name: str
    maps: dict[str, np.ndarray]
    pixel_um: float
    matrix: np.ndarray | None = None
    matrix_formula: str = "C6H10O5"
    hotspots: tuple[Hotspot, ...] = ()
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.maps:
            raise ValueError("a sample needs at least one element map")
        shapes = {np.shape(m) for m in self.maps.values()}
        if self.matrix is not None:
            shapes.add(np.shape(self.matrix))
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"all sample maps must be 2-D with one shape, got {sorted(shapes)}")
        if not (math.isfinite(self.pixel_um) and self.pixel_um > 0):
            raise ValueError(f"pixel_um must be finite and > 0, got {self.pixel_um!r}")

    @property
    def elements(self) -> tuple[str, ...]:
        """Element symbols, in map order."""
        return tuple(self.maps)

    @property
    def shape(self) -> tuple[int, int]:
        """Fine-grid shape ``(ny, nx)``."""
        return tuple(np.shape(next(iter(self.maps.values()))))  # type: ignore[return-value]

    @property
    def y_um(self) -> np.ndarray:
        """Row-centre coordinates ``(ny,)``, µm."""
        return _centres(self.shape[0], self.pixel_um)

    @property
    def x_um(self) -> np.ndarray:
        """Column-centre coordinates ``(nx,)``, µm."""
        return _centres(self.shape[1], self.pixel_um)

    @property
    def extent_um(self) -> tuple[float, float]:
        """Field of view ``(height, width)``, µm."""
        return self.shape[0] * self.pixel_um, self.shape[1] * self.pixel_um


def _centres(n: int, pixel_um: float) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * pixel_um


def _grid_shape(field_um: float | Sequence[float], pixel_um: float) -> tuple[int, int]:
    if not (isinstance(pixel_um, int | float) and math.isfinite(pixel_um) and pixel_um > 0):
        raise ValueError(f"pixel_um must be a finite number > 0, got {pixel_um!r}")
    values = np.atleast_1d(np.asarray(field_um, dtype=float))
    if values.size not in (1, 2) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"field_um must be > 0, as a number or (height, width), got {field_um!r}")
    height, width = (values[0], values[0]) if values.size == 1 else (values[0], values[1])
    shape = (round(height / pixel_um), round(width / pixel_um))
    if min(shape) < 8:
        raise ValueError(
            f"field_um {field_um!r} at pixel_um {pixel_um} gives a {shape} grid; it needs at "
            "least 8 pixels per side"
        )
    return shape


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {rng!r}")


def saturated_areal_density_ug_cm2(
    element: str,
    thickness_um: float,
    density_g_cm3: float,
    incident_energy_kev: float,
    *,
    angle_in_deg: float = 45.0,
    angle_out_deg: float = 45.0,
) -> float:
    """Areal density of a thin film giving the same K-alpha yield as a thick pure-element foil.

    Self-absorption of the incident beam and of the fluorescence limits the depth that
    contributes: the effective areal density is
    ``(1 - exp(-chi * rho * t)) / chi`` with
    ``chi = mu(E0) / sin(angle_in) + mu(E_Ka) / sin(angle_out)`` (mass attenuation
    coefficients from xraylib, cm²/g).

    Parameters
    ----------
    element : str
        Chemical symbol of the pure foil or bar.
    thickness_um : float
        Thickness, µm.
    density_g_cm3 : float
        Density, g/cm³.
    incident_energy_kev : float
        Beam energy, keV.
    angle_in_deg, angle_out_deg : float
        Angles of the beam and of the detector to the sample surface, degrees.

    Returns
    -------
    float
        Effective areal density, µg/cm².
    """
    import xraylib

    z = xraylib.SymbolToAtomicNumber(element)
    mu_in = xraylib.CS_Total(z, incident_energy_kev)
    mu_out = xraylib.CS_Total(z, xraylib.LineEnergy(z, xraylib.KA_LINE))
    chi = mu_in / math.sin(math.radians(angle_in_deg)) + mu_out / math.sin(
        math.radians(angle_out_deg)
    )
    rho_t = density_g_cm3 * thickness_um * 1e-4
    return 1e6 * (1.0 - math.exp(-chi * rho_t)) / chi


def copper_mesh(
    kind: str = "ag300",
    *,
    field_um: float | Sequence[float] = 1000.0,
    pixel_um: float = 2.0,
    angle_deg: float = 3.0,
    thickness_um: float = 20.0,
    incident_energy_kev: float = 13.0,
    supersample: int = 4,
) -> Sample:
    """Copper TEM grid (AG300 or AG175), slightly rotated.

    The bars are pure copper ``thickness_um`` thick; their map holds the self-absorption
    limited (effective) areal density of :func:`saturated_areal_density_ug_cm2`, so the
    thin-film spectral model gives the yield of the thick bar. Holes are empty.

    Parameters
    ----------
    kind : {"ag300", "ag175"}
        Grid type: AG300 has 58 µm holes and 25 µm bars, AG175 108 µm holes and 37 µm bars.
    field_um : float or (float, float)
        Field of view (height, width), µm.
    pixel_um : float
        Fine-grid pixel, µm.
    angle_deg : float
        Rotation of the grid, degrees.
    thickness_um : float
        Bar thickness, µm.
    incident_energy_kev : float
        Beam energy, keV (for the self-absorption).
    supersample : int
        Sub-pixels per pixel and axis for the bar fraction.

    Returns
    -------
    Sample
        One map, ``"Cu"``.
    """
    key = str(kind).lower()
    if key not in MESHES:
        raise ValueError(f"unknown mesh {kind!r}; use one of {', '.join(MESHES)}")
    hole_um, bar_um = MESHES[key]
    shape = _grid_shape(field_um, pixel_um)
    fraction = _mesh_fraction(
        shape,
        pixel_um,
        hole_um=hole_um,
        bar_um=bar_um,
        angle_deg=angle_deg,
        supersample=supersample,
    )
    density = saturated_areal_density_ug_cm2(
        "Cu", thickness_um, COPPER_DENSITY_G_CM3, incident_energy_kev
    )
    return Sample(
        name=key,
        maps={"Cu": density * fraction},
        pixel_um=float(pixel_um),
        matrix=None,
        description={
            "kind": "copper_mesh",
            "hole_um": hole_um,
            "bar_um": bar_um,
            "period_um": hole_um + bar_um,
            "angle_deg": float(angle_deg),
            "thickness_um": float(thickness_um),
            "effective_areal_density_ug_cm2": density,
            "recommended_flux_ph_s": 1.0e8,
        },
    )


def seed_tissue(
    *,
    field_um: float | Sequence[float] = 1000.0,
    pixel_um: float = 2.0,
    elements: Sequence[str] = ("Se", "Zn", "Fe"),
    n_hotspots: int = 16,
    radius_range_um: tuple[float, float] = (6.0, 60.0),
    concentration_range: tuple[float, float] = (1.0, 20.0),
    close_pairs: int = 0,
    satellites: int = 0,
    rng: np.random.Generator | int | None = 0,
) -> Sample:
    """Seed-like tissue: a smooth body of trace elements with element hotspots.

    The body is an ellipse filling 85 % of the field with a soft edge, a cellulose-like
    matrix of 5 mg/cm² with a smooth texture, and trace levels of each element (0.02-0.2
    µg/cm²). Hotspots are Gaussian blobs inside the body with a log-uniform radius (at half
    maximum) and a log-uniform peak concentration.

    Parameters
    ----------
    field_um : float or (float, float)
        Field of view, µm.
    pixel_um : float
        Fine-grid pixel, µm.
    elements : sequence of str
        Elements of the tissue and of the hotspots (chemical symbols).
    n_hotspots : int
        Number of hotspots (each of a random element).
    radius_range_um : (float, float)
        Range of hotspot radii at half maximum, µm.
    concentration_range : (float, float)
        Range of hotspot peak areal densities, µg/cm².
    close_pairs : int
        Extra pairs of hotspots of one element whose centres are :data:`PAIR_DISTANCE_UM`
        apart, each of radius :data:`PAIR_RADIUS_UM` (drawn after the single hotspots, so
        the single ones do not change).
    satellites : int
        Extra groups of a strong hotspot (:data:`STRONG_RADIUS_UM`,
        :data:`STRONG_CONCENTRATION`) with a weak one of the same element
        (:data:`WEAK_RADIUS_UM`, :data:`WEAK_CONCENTRATION`) :data:`SATELLITE_DISTANCE_UM`
        from its centre: the weak one sits in the strong one's tail under a wide beam.
    rng : numpy.random.Generator or int or None
        Random generator or seed of the layout.

    Returns
    -------
    Sample
        One map per element, the matrix, and the hotspots (singles, then pairs, then
        strong/weak groups).
    """
    generator = _rng(rng)
    elements = tuple(str(e) for e in elements)
    if not elements:
        raise ValueError("elements must name at least one element")
    for name, count in (
        ("n_hotspots", n_hotspots),
        ("close_pairs", close_pairs),
        ("satellites", satellites),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {count!r}")
    r_lo, r_hi = (float(v) for v in radius_range_um)
    c_lo, c_hi = (float(v) for v in concentration_range)
    if not 0 < r_lo <= r_hi or not 0 < c_lo <= c_hi:
        raise ValueError("radius_range_um and concentration_range need 0 < low <= high")
    shape = _grid_shape(field_um, pixel_um)
    y = _centres(shape[0], pixel_um)[:, None]
    x = _centres(shape[1], pixel_um)[None, :]
    half_y, half_x = 0.425 * shape[0] * pixel_um, 0.425 * shape[1] * pixel_um
    rho = np.sqrt((y / half_y) ** 2 + (x / half_x) ** 2)
    edge_um = 15.0
    body = 0.5 * (1.0 - np.tanh((rho - 1.0) * min(half_x, half_y) / edge_um))
    texture = _smooth_noise(shape, 60.0 / pixel_um, generator)
    matrix = 5000.0 * body * (1.0 + 0.15 * texture)
    trace = {"Fe": 0.2, "Zn": 0.1, "Se": 0.02, "Cu": 0.05, "Mn": 0.03}
    maps: dict[str, np.ndarray] = {}
    for element in elements:
        level = trace.get(element, 0.05)
        maps[element] = (
            level * body * (1.0 + 0.3 * _smooth_noise(shape, 40.0 / pixel_um, generator))
        )
    hotspots: list[Hotspot] = []

    def add(centre: tuple[float, float], radius: float, element: str, peak: float) -> None:
        sigma = radius / math.sqrt(2.0 * math.log(2.0))
        maps[element] = maps[element] + peak * np.exp(
            -((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2.0 * sigma**2)
        )
        hotspots.append(Hotspot(centre, float(radius), element, float(peak)))

    def inside_body(inset: float = 0.8) -> tuple[float, float]:
        # Inside the body, well away from its edge.
        while True:
            cy, cx = generator.uniform(-inset, inset, size=2)
            if math.hypot(cy, cx) < inset:
                return float(cy * half_y), float(cx * half_x)

    def log_uniform(low: float, high: float) -> float:
        return math.exp(generator.uniform(math.log(low), math.log(high)))

    for _ in range(n_hotspots):
        radius = log_uniform(r_lo, r_hi)
        centre = inside_body()
        element = elements[int(generator.integers(len(elements)))]
        add(centre, radius, element, log_uniform(c_lo, c_hi))
    for kind, count in (("pair", close_pairs), ("satellite", satellites)):
        for _ in range(count):
            element = elements[int(generator.integers(len(elements)))]
            centre = inside_body(0.7)
            angle = generator.uniform(0.0, 2.0 * math.pi)
            if kind == "pair":
                distance = generator.uniform(*PAIR_DISTANCE_UM)
                radii = (generator.uniform(*PAIR_RADIUS_UM), generator.uniform(*PAIR_RADIUS_UM))
                peaks = (log_uniform(*PAIR_CONCENTRATION), log_uniform(*PAIR_CONCENTRATION))
            else:
                distance = generator.uniform(*SATELLITE_DISTANCE_UM)
                radii = (generator.uniform(*STRONG_RADIUS_UM), generator.uniform(*WEAK_RADIUS_UM))
                peaks = (
                    log_uniform(*STRONG_CONCENTRATION),
                    log_uniform(*WEAK_CONCENTRATION),
                )
            other = (
                centre[0] + distance * math.sin(angle),
                centre[1] + distance * math.cos(angle),
            )
            add(centre, radii[0], element, peaks[0])
            add(other, radii[1], element, peaks[1])
    for element in maps:
        np.clip(maps[element], 0.0, None, out=maps[element])
    return Sample(
        name="seed",
        maps=maps,
        pixel_um=float(pixel_um),
        matrix=np.clip(matrix, 0.0, None),
        matrix_formula="C6H10O5",
        hotspots=tuple(hotspots),
        description={
            "kind": "seed_tissue",
            "matrix_ug_cm2": 5000.0,
            "trace_ug_cm2": {e: trace.get(e, 0.05) for e in elements},
            "n_hotspots": n_hotspots,
            "close_pairs": close_pairs,
            "satellites": satellites,
            "recommended_flux_ph_s": 5.0e9,
        },
    )


def clustered_tissue(
    *,
    field_um: float | Sequence[float] = 1000.0,
    pixel_um: float = 2.0,
    elements: Sequence[str] = ("Se", "Zn", "Fe"),
    n_hotspots: int = 12,
    close_pairs: int = 3,
    satellites: int = 3,
    radius_range_um: tuple[float, float] = (5.0, 60.0),
    concentration_range: tuple[float, float] = (1.0, 20.0),
    rng: np.random.Generator | int | None = 0,
) -> Sample:
    """The seed-like tissue with clustered hotspots (the ``"tissue"`` sample).

    :func:`seed_tissue` with sub-beam singles (radii from 5 µm), ``close_pairs`` close pairs
    and ``satellites`` weak hotspots next to strong ones, each of a random element: the
    layouts where a 50 µm beam hides what a scientist wants to rescan. Parameters as
    :func:`seed_tissue`.

    Returns
    -------
    Sample
        Named ``"tissue"``.
    """
    sample = seed_tissue(
        field_um=field_um,
        pixel_um=pixel_um,
        elements=elements,
        n_hotspots=n_hotspots,
        radius_range_um=radius_range_um,
        concentration_range=concentration_range,
        close_pairs=close_pairs,
        satellites=satellites,
        rng=rng,
    )
    sample.name = "tissue"
    sample.description["kind"] = "clustered_tissue"
    return sample


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise of unit standard deviation ``shape``."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return noise / max(float(noise.std()), 1e-12)


def resolution_target(
    kind: str = "siemens",
    *,
    field_um: float | Sequence[float] = 1000.0,
    pixel_um: float = 2.0,
    element: str = "Au",
    areal_density_ug_cm2: float = 200.0,
    spokes: int = 36,
    periods_um: Sequence[float] = (160.0, 120.0, 80.0, 60.0, 40.0, 30.0, 20.0),
    supersample: int = 4,
) -> Sample:
    """Resolution target: a Siemens star or groups of line pairs, in one element.

    Parameters
    ----------
    kind : {"siemens", "line_pairs"}
        A star of ``spokes`` bright/dark pairs filling 90 % of the field, or one group of
        five bars per period in ``periods_um`` (bar width half the period), left to right.
    field_um : float or (float, float)
        Field of view, µm.
    pixel_um : float
        Fine-grid pixel, µm.
    element : str
        Element of the pattern (gold by default; its L lines are excited below 14.35 keV).
    areal_density_ug_cm2 : float
        Areal density of the pattern, µg/cm².
    spokes : int
        Spoke pairs of the star.
    periods_um : sequence of float
        Line-pair periods, µm.
    supersample : int
        Sub-pixels per pixel and axis.

    Returns
    -------
    Sample
        One map, ``element``.
    """
    shape = _grid_shape(field_um, pixel_um)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    ys = (np.arange(shape[0])[:, None] + offsets).ravel() - (shape[0] - 1) / 2.0
    xs = (np.arange(shape[1])[:, None] + offsets).ravel() - (shape[1] - 1) / 2.0
    y, x = np.meshgrid(ys * pixel_um, xs * pixel_um, indexing="ij")
    key = str(kind).lower()
    if key == "siemens":
        radius = np.hypot(y, x)
        outer = 0.45 * min(shape) * pixel_um
        pattern = (np.sin(spokes * np.arctan2(y, x)) > 0) & (radius < outer)
        info: dict[str, Any] = {"spokes": int(spokes), "radius_um": outer}
    elif key == "line_pairs":
        periods = [float(p) for p in periods_um]
        if not periods or min(periods) <= 0:
            raise ValueError(f"periods_um must be positive, got {periods_um!r}")
        pattern = np.zeros_like(y, dtype=bool)
        gap = 0.5 * max(periods)
        total = sum(5.0 * p for p in periods) + gap * (len(periods) - 1)
        start = -total / 2.0
        height = 0.5 * shape[0] * pixel_um
        for period in periods:
            local = x - start
            inside = (local >= 0) & (local < 5.0 * period) & (np.abs(y) < height / 2.0)
            pattern |= inside & (np.mod(local, period) < period / 2.0)
            start += 5.0 * period + gap
        info = {"periods_um": periods}
    else:
        raise ValueError(f"unknown resolution target {kind!r}; use 'siemens' or 'line_pairs'")
    fraction = pattern.reshape(shape[0], supersample, shape[1], supersample).mean(axis=(1, 3))
    return Sample(
        name=key,
        maps={element: areal_density_ug_cm2 * fraction},
        pixel_um=float(pixel_um),
        matrix=None,
        description={
            "kind": "resolution_target",
            "pattern": key,
            "areal_density_ug_cm2": float(areal_density_ug_cm2),
            "recommended_flux_ph_s": 1.0e9,
            **info,
        },
    )


def uniform_foil(
    element: str = "Cu",
    *,
    field_um: float | Sequence[float] = 1000.0,
    pixel_um: float = 5.0,
    areal_density_ug_cm2: float = 50.0,
) -> Sample:
    """A homogeneous thin film of one element covering the whole field.

    Parameters
    ----------
    element : str
        Chemical symbol.
    field_um : float or (float, float)
        Field of view, µm.
    pixel_um : float
        Fine-grid pixel, µm.
    areal_density_ug_cm2 : float
        Areal density, µg/cm².

    Returns
    -------
    Sample
    """
    shape = _grid_shape(field_um, pixel_um)
    return Sample(
        name="foil",
        maps={element: np.full(shape, float(areal_density_ug_cm2))},
        pixel_um=float(pixel_um),
        matrix=None,
        description={
            "kind": "uniform_foil",
            "areal_density_ug_cm2": float(areal_density_ug_cm2),
            "recommended_flux_ph_s": 1.0e9,
        },
    )


def make_sample(
    name: str,
    *,
    field_um: float | Sequence[float] = 1000.0,
    pixel_um: float = 2.0,
    rng: np.random.Generator | int | None = 0,
    **options: Any,
) -> Sample:
    """Build a built-in sample by name.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLE_NAMES`.
    field_um : float or (float, float)
        Field of view, µm.
    pixel_um : float
        Fine-grid pixel, µm.
    rng : numpy.random.Generator or int or None
        Random generator or seed (used by the seed sample).
    **options
        Passed to the sample's function (for example ``angle_deg`` for a mesh or
        ``n_hotspots`` for the seed).

    Returns
    -------
    Sample
    """
    if not isinstance(name, str):
        raise TypeError(f"sample name must be a string, got {name!r}")
    key = name.lower()
    if key in MESHES:
        return copper_mesh(key, field_um=field_um, pixel_um=pixel_um, **options)
    if key == "seed":
        return seed_tissue(field_um=field_um, pixel_um=pixel_um, rng=rng, **options)
    if key == "tissue":
        return clustered_tissue(field_um=field_um, pixel_um=pixel_um, rng=rng, **options)
    if key in ("siemens", "line_pairs"):
        return resolution_target(key, field_um=field_um, pixel_um=pixel_um, **options)
    if key == "foil":
        return uniform_foil(field_um=field_um, pixel_um=pixel_um, **options)
    raise ValueError(f"unknown sample {name!r}; use one of {', '.join(SAMPLE_NAMES)}")
