r"""Simulated powder diffraction during a temperature ramp: ground truth and detector frames.

A perovskite-like cubic sample (``a`` ≈ 4.0 Å) is heated (or cooled) along a ramp. Its
reflections shift continuously with thermal expansion, :math:`d(T) = d(T_0)(1 + \alpha (T -
T_0))`, which is *not* an event. At a hidden onset temperature one of these events may start:

``"splitting"``
    First-order cubic → tetragonal transition with two-phase coexistence: a fraction
    :math:`f(T) = \mathrm{clip}((T - T_\mathrm{onset}) / w, 0, 1)` of the sample is tetragonal
    with :math:`c/a = 1 + \delta` (volume kept), so that a cubic ``(h00)`` splits into
    ``(h00)``/``(00h)`` with intensities 2:1 and ``(hh0)`` into ``(hh0)``/``(h0h)`` 1:2, while
    ``(hhh)`` stays single. :math:`\delta` is a few 0.1 %.
``"new_phase"``
    A minor rutile-like phase, whose strongest reflections fall between the main ones, grows
    from volume fraction 0 at the onset to ``magnitude`` (a few %) over the width.
``"none"``
    Nothing happens: expansion only.

(The fraction grows in the direction of the ramp: with temperature on heating, against it on
cooling.)

Frames are Debye-Scherrer rings on the area detector of a
:class:`~asirp.diffraction.geometry.DetectorGeometry`. The 1-D profile :math:`I(q)` is a sum of
pseudo-Voigt peaks of unit area times the line intensities, on a smooth background (a constant
and an amorphous hump). The peak FWHM in :math:`q` adds in quadrature

* the instrument: a constant FWHM in :math:`2\theta` (``instrument_fwhm_deg``, 0.03° by
  default), i.e. :math:`\Gamma_\mathrm{inst} = (2\pi/\lambda)\cos\theta\,\Delta(2\theta)`;
* the sample: crystallite size :math:`L`, :math:`\Gamma_\mathrm{size} = 2\pi K / L` with
  :math:`K = 0.9`, and microstrain, :math:`\Gamma_\mathrm{strain} = \epsilon\, q` (``epsilon``
  is the FWHM of :math:`\Delta d / d`);
* the detector (frames only): the pixel, a box whose radial projection has variance
  :math:`p^2/12` whatever the azimuth (:math:`p` the pixel pitch in :math:`q` at that
  radius), and the Gaussian point-spread function of ``psf_sigma_px`` (45 µm by default),
  variance :math:`\sigma^2 p^2`.

The PSF is applied along the radius, in the 1-D profile, rather than as a 2-D filter of the
image: on rings whose radius is much larger than the PSF (tens of px against a fraction of
one) the two are the same, and the 1-D form keeps the line widths exactly those of
:meth:`PowderFrameModel.fwhm_q_A` (a sampled 2-D Gaussian below one pixel loses its
variance) at no cost. The rendered frame is ``Poisson(I_det(q(pixel)) * pixel_factor *
flux_scale * exposure)`` where ``I_det`` is the profile widened by the detector and
``pixel_factor`` holds the pixel's solid angle (relative to a 75 µm pixel at 200 mm at normal
incidence) and the polarization (horizontal, factor 0.99).

Intensities are the mean counts per second of that reference pixel at full flux
(``flux_scale = 1``): on the default 1024² detector (75 µm at 200 mm, 0.5 Å) the strongest
ring, (110), peaks at about 2000 counts per pixel per second over a background of about 55
(16 times as much per 300 µm pixel of :func:`small_geometry`).

The 1-D profile is evaluated on a fine ``q`` grid and interpolated to the pixels with cached
indices and weights, so the mean of a 1024² frame takes about 20 ms and that of a 256² frame
(:func:`small_geometry`) about 1-2 ms; exact Poisson counting adds 60-80 ns a pixel (see
``approximate_noise`` of :meth:`PowderFrameModel.frame` for bulk simulations).

Everything random takes an explicit, seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from asirp.diffraction.geometry import DetectorGeometry

KINDS = ("splitting", "new_phase", "none")
"""Kinds of :class:`TransitionEvent`."""

REFERENCE_PIXEL_UM = 75.0
"""Pixel pitch whose solid angle defines the intensity unit, µm."""
REFERENCE_DISTANCE_MM = 200.0
"""Distance at which the reference pixel is seen at normal incidence, mm."""
GAUSSIAN_NOISE_FROM = 100.0
"""Mean counts from which ``approximate_noise`` draws a rounded normal instead of Poisson."""
PSF_SIGMA_UM = 45.0
"""Default detector blur (Gaussian standard deviation), µm: 0.6 px of 75 µm."""
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SCHERRER_K = 0.9

# Cubic perovskite (BaTiO3/SrTiO3-like, Pm-3m) observed relative intensities; (221) and (300)
# share a d-spacing in the cubic phase but split differently when tetragonal, hence two entries.
PEROVSKITE_HKL: dict[tuple[int, int, int], float] = {
    (1, 0, 0): 25.0,
    (1, 1, 0): 100.0,
    (1, 1, 1): 40.0,
    (2, 0, 0): 35.0,
    (2, 1, 0): 8.0,
    (2, 1, 1): 30.0,
    (2, 2, 0): 15.0,
    (2, 2, 1): 3.0,
    (3, 0, 0): 2.0,
    (3, 1, 0): 12.0,
    (3, 1, 1): 4.0,
    (2, 2, 2): 7.0,
}
"""Perovskite reflections ``(h, k, l) -> relative intensity`` (strongest 100)."""

# Rutile TiO2 (P4_2/mnm, a = 4.594 Å, c = 2.959 Å): its (110) and (101) fall between the
# perovskite (100)/(110)/(111), so a few % of it is visible but never hidden under a main peak.
RUTILE_HKL: dict[tuple[int, int, int], float] = {
    (1, 1, 0): 100.0,
    (1, 0, 1): 50.0,
    (2, 0, 0): 8.0,
    (1, 1, 1): 25.0,
    (2, 1, 0): 10.0,
    (2, 1, 1): 60.0,
    (2, 2, 0): 20.0,
    (0, 0, 2): 10.0,
    (3, 1, 0): 10.0,
    (3, 0, 1): 20.0,
}
"""Rutile reflections ``(h, k, l) -> relative intensity`` (strongest 100)."""
RUTILE_A_A = 4.594
"""Rutile lattice parameter a, Å."""
RUTILE_C_A = 2.959
"""Rutile lattice parameter c, Å."""

# CeO2 (fluorite) relative intensities by h² + k² + l² (ICDD 34-394 order of magnitude); higher
# rings fall off smoothly.
_CEO2_INTENSITY_BY_N = {
    3: 100.0,
    4: 30.0,
    8: 52.0,
    11: 42.0,
    12: 8.0,
    16: 8.0,
    19: 15.0,
    20: 8.0,
    24: 12.0,
    27: 9.0,
    32: 4.0,
    35: 9.0,
    36: 3.0,
    40: 5.0,
    43: 4.0,
}


def _number(name: str, value: Any) -> float:
    """``value`` as a finite float; TypeError for non-numbers (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    number = _number(name, value)
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    return number


@dataclass(frozen=True)
class Phase:
    """A crystalline phase as a list of reflections.

    Parameters
    ----------
    name : str
        Label.
    d_A : tuple of float
        d-spacings ``(n,)``, Å (any order; equal values are separate lines).
    intensity : tuple of float
        Relative integrated intensities ``(n,)`` (the strongest is usually 1).
    hkl : tuple of (int, int, int), optional
        Miller indices ``(n,)`` (labels only).
    """

    name: str
    d_A: tuple[float, ...]
    intensity: tuple[float, ...]
    hkl: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        d = tuple(_positive("d_A", v) for v in self.d_A)
        intensity = tuple(_positive("intensity", v, allow_zero=True) for v in self.intensity)
        if not d or len(d) != len(intensity):
            raise ValueError("d_A and intensity must be non-empty and of the same length")
        if self.hkl is not None:
            hkl = tuple(tuple(int(i) for i in h) for h in self.hkl)
            if len(hkl) != len(d) or any(len(h) != 3 for h in hkl):
                raise ValueError("hkl must hold one (h, k, l) per line")
            object.__setattr__(self, "hkl", hkl)
        object.__setattr__(self, "d_A", d)
        object.__setattr__(self, "intensity", intensity)

    @property
    def q_A(self) -> np.ndarray:
        """Line positions ``2π/d`` ``(n,)``, 1/Å."""
        return 2.0 * np.pi / np.asarray(self.d_A)

    def scaled(self, factor: float) -> Phase:
        """The same phase with every d-spacing multiplied by ``factor`` (expansion)."""
        factor = _positive("factor", factor)
        return replace(self, d_A=tuple(d * factor for d in self.d_A))


def _check_hkl(hkl_intensities: Mapping[tuple[int, int, int], float]) -> list:
    if not isinstance(hkl_intensities, Mapping) or not hkl_intensities:
        raise TypeError("hkl_intensities must be a non-empty mapping (h, k, l) -> intensity")
    items = []
    for hkl, intensity in hkl_intensities.items():
        if len(hkl) != 3 or not all(isinstance(i, int | np.integer) for i in hkl):
            raise TypeError(f"Miller indices must be three integers, got {hkl!r}")
        if not any(hkl):
            raise ValueError("(0, 0, 0) is not a reflection")
        items.append((tuple(int(i) for i in hkl), _positive("intensity", intensity)))
    return items


def cubic_phase(
    name: str, a_A: float, hkl_intensities: Mapping[tuple[int, int, int], float]
) -> Phase:
    """A cubic phase, ``d = a / sqrt(h² + k² + l²)``.

    Parameters
    ----------
    name : str
        Label.
    a_A : float
        Lattice parameter, Å.
    hkl_intensities : mapping
        ``(h, k, l) -> relative intensity`` (normalised so that the strongest is 1).

    Returns
    -------
    Phase
    """
    return tetragonal_phase(name, a_A, a_A, hkl_intensities)


def tetragonal_phase(
    name: str, a_A: float, c_A: float, hkl_intensities: Mapping[tuple[int, int, int], float]
) -> Phase:
    """A tetragonal phase, ``1/d² = (h² + k²)/a² + l²/c²``.

    Parameters
    ----------
    name : str
        Label.
    a_A, c_A : float
        Lattice parameters, Å.
    hkl_intensities : mapping
        ``(h, k, l) -> relative intensity`` (normalised so that the strongest is 1).

    Returns
    -------
    Phase
    """
    a, c = _positive("a_A", a_A), _positive("c_A", c_A)
    items = _check_hkl(hkl_intensities)
    top = max(i for _, i in items)
    d = [1.0 / math.sqrt((h * h + k * k) / a**2 + m * m / c**2) for (h, k, m), _ in items]
    return Phase(name, tuple(d), tuple(i / top for _, i in items), tuple(h for h, _ in items))


def tetragonal_split(
    name: str, a_A: float, hkl_intensities: Mapping[tuple[int, int, int], float], distortion: float
) -> Phase:
    """The cubic phase ``(a_A, hkl_intensities)`` distorted to tetragonal ``c/a = 1 + distortion``.

    The cell volume is kept (``a_t = a (1+δ)^(-1/3)``, ``c_t = a_t (1+δ)``). Each cubic family
    ``{hkl}`` splits into its distinct tetragonal d-values, sharing its intensity by
    multiplicity: the signed permutations of ``(h, k, l)`` are grouped by ``(h² + k², l²)``, so
    ``(200)`` → ``(200)``:``(002)`` = 2:1, ``(110)`` → ``(110)``:``(101)`` = 1:2 and ``(111)``
    stays single.

    Parameters
    ----------
    name : str
        Label.
    a_A : float
        Cubic lattice parameter, Å.
    hkl_intensities : mapping
        Cubic ``(h, k, l) -> relative intensity``.
    distortion : float
        δ = c/a - 1 (dimensionless, e.g. 0.004); 0 gives the cubic lines back.

    Returns
    -------
    Phase
        Lines labelled with their tetragonal ``(h, k, l)`` (``l`` along c), strongest cubic
        family 1.
    """
    a = _positive("a_A", a_A)
    delta = _number("distortion", distortion)
    if not -0.2 < delta < 0.2:
        raise ValueError(f"distortion must be within (-0.2, 0.2), got {distortion!r}")
    a_t = a * (1.0 + delta) ** (-1.0 / 3.0)
    c_t = a_t * (1.0 + delta)
    items = _check_hkl(hkl_intensities)
    top = max(i for _, i in items)
    d_out: list[float] = []
    i_out: list[float] = []
    hkl_out: list[tuple[int, int, int]] = []
    for hkl, intensity in items:
        family = set()
        for perm in set(itertools.permutations(abs(i) for i in hkl)):
            for signs in itertools.product((1, -1), repeat=3):
                family.add(tuple(s * p for s, p in zip(signs, perm, strict=True)))
        groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for h, k, l in family:  # noqa: E741 (Miller index)
            groups.setdefault((h * h + k * k, l * l), []).append((h, k, l))
        for (hk2, l2), members in sorted(groups.items(), key=lambda g: -g[0][1]):
            d_out.append(1.0 / math.sqrt(hk2 / a_t**2 + l2 / c_t**2))
            i_out.append(intensity / top * len(members) / len(family))
            label = max(members)  # e.g. (2, 0, 0) or (0, 0, 2): a positive representative
            hkl_out.append(label)
    return Phase(name, tuple(d_out), tuple(i_out), tuple(hkl_out))


def ceo2_phase(*, n_rings: int = 15) -> Phase:
    """CeO2 calibrant: pyFAI's d-spacings (first ``n_rings``) with plausible intensities.

    Parameters
    ----------
    n_rings : int
        Number of rings kept (largest d first).

    Returns
    -------
    Phase
        Strongest (111) = 1.
    """
    if isinstance(n_rings, bool) or not isinstance(n_rings, int) or n_rings < 1:
        raise ValueError(f"n_rings must be a positive integer, got {n_rings!r}")
    return _ceo2(n_rings)


@functools.cache
def _ceo2(n_rings: int) -> Phase:
    from pyFAI.calibrant import get_calibrant  # lazy: pyFAI loads in ~0.5 s

    d = [float(x) for x in get_calibrant("CeO2").dspacing[:n_rings]]
    a = d[0] * math.sqrt(3.0)  # (111) is the first ring of a fluorite
    intensity = []
    for value in d:
        n = round((a / value) ** 2)
        # beyond the table: a smooth fall-off
        intensity.append(_CEO2_INTENSITY_BY_N.get(n, 100.0 * math.exp(-n / 12.0)) / 100.0)
    return Phase("CeO2", tuple(d), tuple(intensity))


def __getattr__(name: str) -> Any:
    # ``CEO2`` is a lazy constant: building it imports pyFAI, which ``import sim`` should not.
    if name == "CEO2":
        return _ceo2(15)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class TransitionEvent:
    """A hidden structural event of the ramp.

    Parameters
    ----------
    kind : {"splitting", "new_phase", "none"}
        What happens.
    onset_K : float or None
        True onset temperature, K (None for ``"none"``).
    width_K : float
        Temperature span over which the transformed fraction grows from 0 to full, K.
    magnitude : float
        ``"splitting"``: tetragonal distortion δ = c/a - 1 (0 < δ <= 0.05);
        ``"new_phase"``: final volume fraction of the minor phase (0 < x <= 0.5);
        ``"none"``: 0.
    """

    kind: str
    onset_K: float | None = None
    width_K: float = 1.0
    magnitude: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str):
            raise TypeError(f"kind must be a str, got {self.kind!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "width_K", _positive("width_K", self.width_K))
        magnitude = _number("magnitude", self.magnitude)
        if self.kind == "none":
            if self.onset_K is not None or magnitude != 0:
                raise ValueError("a 'none' event has no onset_K and magnitude 0")
        else:
            object.__setattr__(self, "onset_K", _positive("onset_K", self.onset_K))
            high = 0.05 if self.kind == "splitting" else 0.5
            if not 0 < magnitude <= high:
                raise ValueError(f"{self.kind} magnitude must be in (0, {high}], got {magnitude!r}")
        object.__setattr__(self, "magnitude", magnitude)

    def fraction(self, T_K: float, *, direction: float = 1.0) -> float:
        """Transformed fraction at ``T_K`` (0 to 1), growing along ``direction`` (+1 heating)."""
        if self.onset_K is None:
            return 0.0
        progress = (T_K - self.onset_K) * (1.0 if direction >= 0 else -1.0) / self.width_K
        return float(np.clip(progress, 0.0, 1.0))


@dataclass(frozen=True)
class Background:
    """Smooth background of the 1-D profile, in the profile's units (see :mod:`sim.diffraction`).

    Parameters
    ----------
    constant : float
        Flat level, counts/s per reference pixel.
    hump : float
        Height of the amorphous hump (Gaussian in q), counts/s per reference pixel.
    hump_q_A : float
        Centre of the hump, 1/Å.
    hump_sigma_A : float
        Standard deviation of the hump, 1/Å.
    """

    constant: float = 30.0
    hump: float = 40.0
    hump_q_A: float = 1.9
    hump_sigma_A: float = 0.55

    def __post_init__(self) -> None:
        for name in ("constant", "hump"):
            object.__setattr__(self, name, _positive(name, getattr(self, name), allow_zero=True))
        object.__setattr__(self, "hump_q_A", _number("hump_q_A", self.hump_q_A))
        object.__setattr__(self, "hump_sigma_A", _positive("hump_sigma_A", self.hump_sigma_A))

    def __call__(self, q_A: np.ndarray) -> np.ndarray:
        """Background at ``q_A`` (any shape, 1/Å), counts/s per reference pixel."""
        z = (np.asarray(q_A, dtype=np.float64) - self.hump_q_A) / self.hump_sigma_A
        return self.constant + self.hump * np.exp(-0.5 * z * z)


@dataclass(frozen=True)
class PowderSequence:
    """Ground truth of one temperature ramp (use :func:`make_sequence` or :func:`random_sequence`).

    Parameters
    ----------
    cubic : Phase
        Main phase at ``reference_K``.
    tetragonal : Phase or None
        Distorted main phase at ``reference_K`` (``"splitting"`` only).
    minor : Phase or None
        Minor phase at ``reference_K`` (``"new_phase"`` only).
    event : TransitionEvent
        The hidden event.
    alpha_per_K : float
        Linear thermal-expansion coefficient (all phases), 1/K.
    reference_K : float
        Temperature of the d-spacings given, K.
    ramp_K : (float, float)
        Start and stop temperature of the ramp, K (stop < start is a cooling ramp).
    n_frames : int
        Frames along the ramp, evenly spaced in temperature.
    background : Background
        Smooth background.
    size_nm : float or None
        Crystallite size, nm (None: no size broadening).
    strain_fwhm : float
        Microstrain broadening: FWHM of Δd/d (dimensionless).
    """

    cubic: Phase
    tetragonal: Phase | None
    minor: Phase | None
    event: TransitionEvent
    alpha_per_K: float
    reference_K: float
    ramp_K: tuple[float, float]
    n_frames: int
    background: Background = field(default_factory=Background)
    size_nm: float | None = 200.0
    strain_fwhm: float = 3e-4

    def __post_init__(self) -> None:
        if self.event.kind == "splitting" and self.tetragonal is None:
            raise ValueError("a splitting sequence needs its tetragonal phase")
        if self.event.kind == "new_phase" and self.minor is None:
            raise ValueError("a new_phase sequence needs its minor phase")
        object.__setattr__(self, "alpha_per_K", _number("alpha_per_K", self.alpha_per_K))
        object.__setattr__(self, "reference_K", _positive("reference_K", self.reference_K))
        start, stop = (_positive("ramp_K", t) for t in self.ramp_K)
        if start == stop:
            raise ValueError("ramp_K must have different start and stop")
        object.__setattr__(self, "ramp_K", (start, stop))
        if isinstance(self.n_frames, bool) or not isinstance(self.n_frames, int):
            raise TypeError(f"n_frames must be an int, got {self.n_frames!r}")
        if self.n_frames < 2:
            raise ValueError(f"n_frames must be >= 2, got {self.n_frames}")
        if self.size_nm is not None:
            object.__setattr__(self, "size_nm", _positive("size_nm", self.size_nm))
        object.__setattr__(
            self, "strain_fwhm", _positive("strain_fwhm", self.strain_fwhm, allow_zero=True)
        )

    @property
    def direction(self) -> float:
        """+1 on a heating ramp, -1 on a cooling ramp."""
        return 1.0 if self.ramp_K[1] > self.ramp_K[0] else -1.0

    @property
    def onset_K(self) -> float | None:
        """True onset temperature, K (None when nothing happens). Truth for evaluation only."""
        return self.event.onset_K

    def temperatures(self) -> np.ndarray:
        """Frame temperatures ``(n_frames,)``, K, evenly spaced from start to stop."""
        return np.linspace(self.ramp_K[0], self.ramp_K[1], self.n_frames)

    @property
    def onset_frame(self) -> int | None:
        """Index of the first frame at or past the onset (None when nothing happens)."""
        if self.onset_K is None:
            return None
        past = (self.temperatures() - self.onset_K) * self.direction >= 0
        return int(np.argmax(past)) if past.any() else None

    def expansion(self, T_K: float) -> float:
        """``d(T) / d(reference_K)`` (dimensionless)."""
        return 1.0 + self.alpha_per_K * (_number("temperature", T_K) - self.reference_K)

    def fractions(self, T_K: float) -> tuple[float, float, float]:
        """Volume fractions ``(cubic, tetragonal, minor)`` at ``T_K``, summing to 1."""
        T = _number("temperature", T_K)
        if T <= 0:
            raise ValueError(f"temperature must be > 0 K, got {T_K!r}")
        f = self.event.fraction(T, direction=self.direction)
        if self.event.kind == "splitting":
            return (1.0 - f, f, 0.0)
        if self.event.kind == "new_phase":
            x = f * self.event.magnitude
            return (1.0 - x, 0.0, x)
        return (1.0, 0.0, 0.0)

    def lines_at(self, T_K: float) -> tuple[np.ndarray, np.ndarray]:
        """Every reflection present at ``T_K``.

        Returns
        -------
        d_A : numpy.ndarray
            ``(n,)`` d-spacings, Å, decreasing.
        intensity : numpy.ndarray
            ``(n,)`` relative intensities (phase intensity times volume fraction).
        """
        scale = self.expansion(T_K)
        parts_d, parts_i = [], []
        for phase, weight in zip(
            (self.cubic, self.tetragonal, self.minor), self.fractions(T_K), strict=True
        ):
            if phase is not None and weight > 0:
                parts_d.append(np.asarray(phase.d_A) * scale)
                parts_i.append(np.asarray(phase.intensity) * weight)
        d = np.concatenate(parts_d)
        intensity = np.concatenate(parts_i)
        order = np.argsort(-d, kind="stable")
        return d[order], intensity[order]


def make_sequence(
    event: TransitionEvent,
    *,
    a_A: float = 4.0,
    alpha_per_K: float = 1.0e-5,
    ramp_K: tuple[float, float] = (300.0, 420.0),
    n_frames: int = 121,
    reference_K: float | None = None,
    background: Background | None = None,
    size_nm: float | None = 200.0,
    strain_fwhm: float = 3e-4,
    minor_scale: float = 1.0,
) -> PowderSequence:
    """A perovskite ramp with a given event (deterministic; see :func:`random_sequence`).

    Parameters
    ----------
    event : TransitionEvent
        The event (its magnitude is the distortion or the minor fraction).
    a_A : float
        Cubic lattice parameter at ``reference_K``, Å.
    alpha_per_K : float
        Thermal expansion, 1/K.
    ramp_K : (float, float)
        Start and stop, K.
    n_frames : int
        Frames along the ramp.
    reference_K : float, optional
        Temperature of ``a_A``, K (default: the ramp start).
    background : Background, optional
        Background (default :class:`Background()`).
    size_nm : float or None
        Crystallite size, nm.
    strain_fwhm : float
        FWHM of Δd/d from microstrain.
    minor_scale : float
        Factor on the rutile lattice of the minor phase.

    Returns
    -------
    PowderSequence
    """
    if not isinstance(event, TransitionEvent):
        raise TypeError(f"event must be a TransitionEvent, got {type(event).__name__}")
    cubic = cubic_phase("perovskite (cubic)", a_A, PEROVSKITE_HKL)
    tetragonal = minor = None
    if event.kind == "splitting":
        tetragonal = tetragonal_split(
            "perovskite (tetragonal)", a_A, PEROVSKITE_HKL, event.magnitude
        )
    elif event.kind == "new_phase":
        s = _positive("minor_scale", minor_scale)
        minor = tetragonal_phase("rutile-like", RUTILE_A_A * s, RUTILE_C_A * s, RUTILE_HKL)
    return PowderSequence(
        cubic=cubic,
        tetragonal=tetragonal,
        minor=minor,
        event=event,
        alpha_per_K=alpha_per_K,
        reference_K=float(ramp_K[0]) if reference_K is None else reference_K,
        ramp_K=tuple(ramp_K),
        n_frames=n_frames,
        background=Background() if background is None else background,
        size_nm=size_nm,
        strain_fwhm=strain_fwhm,
    )


def random_sequence(
    seed: int,
    kind: str,
    *,
    n_frames: int = 121,
    ramp_K: tuple[float, float] = (300.0, 420.0),
    min_before: float = 0.3,
    min_after: int = 15,
) -> PowderSequence:
    """A seeded random ramp: hidden onset, width, magnitude, lattice, expansion, background.

    The same ``seed`` gives the same draws for every kind (only the event differs), and the
    same ``(seed, kind)`` always the same truth. Draws: ``a`` in [3.98, 4.03] Å, α in [0.8,
    1.5]·1e-5 /K, background ×[0.7, 1.3] with the hump at [1.6, 2.2] 1/Å, size in [150, 400]
    nm, strain FWHM in [1, 5]·1e-4, width in [1, 4] K, distortion δ in [0.002, 0.006], minor
    fraction in [0.02, 0.05]. The onset is uniform over the temperatures that leave at least
    ``min_before`` of the frames before it and ``min_after`` frames at or after it.

    Parameters
    ----------
    seed : int
        Non-negative seed.
    kind : {"splitting", "new_phase", "none"}
        Event kind.
    n_frames : int
        Frames along the ramp (>= 25).
    ramp_K : (float, float)
        Start and stop, K.
    min_before : float
        Smallest fraction of the frames strictly before the onset.
    min_after : int
        Fewest frames at or after the onset.

    Returns
    -------
    PowderSequence
        ``.onset_K`` is the hidden truth (for evaluation only).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {kind!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, int):
        raise TypeError(f"n_frames must be an int, got {n_frames!r}")
    first = math.ceil(_positive("min_before", min_before, allow_zero=True) * n_frames)
    last = n_frames - int(min_after)
    if not (0 < first < last <= n_frames - 1):
        raise ValueError(
            f"n_frames={n_frames} leaves no room for an onset with {min_before:.0%} of the frames "
            f"before it and {min_after} after it"
        )
    rng = np.random.default_rng(int(seed))
    # One fixed order of draws whatever the kind, so kinds of one seed share everything else.
    a_A = rng.uniform(3.98, 4.03)
    alpha = rng.uniform(0.8e-5, 1.5e-5)
    bg_scale = rng.uniform(0.7, 1.3)
    hump_q = rng.uniform(1.6, 2.2)
    hump_sigma = rng.uniform(0.45, 0.7)
    size_nm = rng.uniform(150.0, 400.0)
    strain = rng.uniform(1e-4, 5e-4)
    position = 1.0 - rng.random()  # (0, 1]
    width = rng.uniform(1.0, 4.0)
    distortion = rng.uniform(0.002, 0.006)
    minor_fraction = rng.uniform(0.02, 0.05)
    minor_scale = 1.0 + rng.uniform(-0.003, 0.003)

    temperatures = np.linspace(float(ramp_K[0]), float(ramp_K[1]), n_frames)
    # frames 0..first-1 lie strictly before an onset above temperatures[first - 1]; frames
    # last..n-1 lie at or after an onset at or below temperatures[last]
    low, high = temperatures[first - 1], temperatures[last]
    onset = float(low + position * (high - low))
    if kind == "none":
        event = TransitionEvent("none")
    else:
        magnitude = distortion if kind == "splitting" else minor_fraction
        event = TransitionEvent(kind, onset, width, magnitude)
    base = Background()
    background = Background(
        constant=base.constant * bg_scale,
        hump=base.hump * bg_scale,
        hump_q_A=hump_q,
        hump_sigma_A=hump_sigma,
    )
    return make_sequence(
        event,
        a_A=a_A,
        alpha_per_K=alpha,
        ramp_K=(float(ramp_K[0]), float(ramp_K[1])),
        n_frames=n_frames,
        background=background,
        size_nm=size_nm,
        strain_fwhm=strain,
        minor_scale=minor_scale,
    )


def small_geometry(
    geometry: DetectorGeometry | None = None, *, factor: int = 4
) -> DetectorGeometry:
    """A binned copy of ``geometry`` that sees the same q range with ``factor``² fewer pixels.

    Parameters
    ----------
    geometry : DetectorGeometry, optional
        Full detector (default: 1024² of 75 µm at 200 mm, 0.5 Å → 256² of 300 µm).
    factor : int
        Binning factor (must divide both sides).

    Returns
    -------
    DetectorGeometry
    """
    full = DetectorGeometry() if geometry is None else geometry
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    rows, cols = full.shape_px
    if rows % factor or cols % factor:
        raise ValueError(f"factor {factor} does not divide the detector {full.shape_px}")
    return replace(
        full,
        shape_px=(rows // factor, cols // factor),
        pixel_um=full.pixel_um * factor,
        poni_px=(full.poni_px[0] / factor, full.poni_px[1] / factor),
    )


@dataclass(frozen=True)
class _PixelMap:
    """Per-pixel quantities of one geometry, computed once with pyFAI."""

    q_A: np.ndarray  # (rows, cols) float64, 1/Å
    factor: np.ndarray  # (rows, cols) float32: relative solid angle × polarization
    grid_A: np.ndarray  # (m,) fine q grid, 1/Å
    index: np.ndarray  # (rows*cols,) int32: left grid point of each pixel
    weight: np.ndarray  # (rows*cols,) float32: interpolation weight of the right point


@functools.lru_cache(maxsize=4)
def _pixel_map(geometry: DetectorGeometry, polarization_factor: float) -> _PixelMap:
    ai = geometry.make_integrator()
    q = np.asarray(ai.center_array(unit="q_A^-1"), dtype=np.float64)
    tth = np.asarray(ai.center_array(unit="2th_rad"), dtype=np.float64)
    chi = np.asarray(ai.center_array(unit="chi_rad"), dtype=np.float64)
    # pyFAI's own polarization() is slow (numexpr compilation, ~1 s); same formula, numpy
    polarization = 0.5 * (
        1.0 + np.cos(tth) ** 2 - polarization_factor * np.cos(2.0 * chi) * np.sin(tth) ** 2
    )
    solid = np.asarray(ai.solidAngleArray(), dtype=np.float64)  # cos³ of incidence, 1 at PONI
    area = (geometry.pixel_um / REFERENCE_PIXEL_UM) ** 2 * (
        REFERENCE_DISTANCE_MM / geometry.distance_mm
    ) ** 2
    factor = (solid * polarization * area).astype(np.float32)
    # grid finer than a tenth of the pixel pitch in q at the beam centre (the largest pitch)
    pitch = 2.0 * np.pi / geometry.wavelength_A * geometry.pixel_um / (geometry.distance_mm * 1e3)
    step = pitch / 12.0
    low = max(float(q.min()) - 10 * pitch, 1e-4)
    high = float(q.max()) + 10 * pitch
    grid = low + step * np.arange(math.ceil((high - low) / step) + 2)
    flat = q.ravel()
    index = np.clip(((flat - low) / step).astype(np.int64), 0, grid.size - 2)
    weight = ((flat - grid[index]) / step).astype(np.float32)
    return _PixelMap(q, factor, grid, index.astype(np.int32), weight)


class PowderFrameModel:
    """Renders the frames of a :class:`PowderSequence` on a detector.

    Parameters
    ----------
    geometry : DetectorGeometry
        Detector.
    sequence : PowderSequence
        Ground truth.
    instrument_fwhm_deg : float
        Instrumental FWHM, constant in 2θ, degrees.
    eta : float
        Lorentzian fraction of the pseudo-Voigt peaks (0: Gaussian).
    psf_sigma_px : float, optional
        Detector point-spread function (Gaussian), standard deviation, px (0: none). Default:
        :data:`PSF_SIGMA_UM` over the pixel pitch (0.6 px of 75 µm, 0.15 px of a 300 µm
        binned pixel: binning keeps the physical blur).
    intensity_scale : float
        Counts per second of the reference pixel at full flux per unit of line intensity per
        1/Å of profile (the strongest ring, intensity 1, peaks at ~2000 counts/s by default).
    polarization_factor : float
        Horizontal linear polarization factor of pyFAI (0.99 at a synchrotron).

    Notes
    -----
    Defaults at the default geometry (75 µm at 200 mm, 0.5 Å): the instrument alone gives
    FWHM 0.0066 1/Å at q = 2.2 1/Å (0.03° 2θ); with the sample (200 nm, ε = 3e-4), the 75 µm
    pixel and the PSF (0.6 px) a line of a frame has FWHM ≈ 0.010 1/Å at (110). A tetragonal
    distortion δ = 0.004 splits (110) by δ·q = 0.0089 1/Å: below the FWHM, a shoulder and a
    broadening rather than two peaks. On :func:`small_geometry` (300 µm pixels) the FWHM is
    ≈ 0.016 1/Å there. Use :meth:`fwhm_q_A` for the exact numbers; a pyFAI integration adds its
    bins and, with pixel splitting, the pixel box once more.
    """

    def __init__(
        self,
        geometry: DetectorGeometry,
        sequence: PowderSequence,
        *,
        instrument_fwhm_deg: float = 0.03,
        eta: float = 0.3,
        psf_sigma_px: float | None = None,
        intensity_scale: float = 25.0,
        polarization_factor: float = 0.99,
    ) -> None:
        if not isinstance(geometry, DetectorGeometry):
            raise TypeError(f"geometry must be a DetectorGeometry, got {type(geometry).__name__}")
        if not isinstance(sequence, PowderSequence):
            raise TypeError(f"sequence must be a PowderSequence, got {type(sequence).__name__}")
        self.geometry = geometry
        self.sequence = sequence
        self.instrument_fwhm_deg = _positive("instrument_fwhm_deg", instrument_fwhm_deg)
        self.eta = _number("eta", eta)
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if psf_sigma_px is None:
            psf_sigma_px = PSF_SIGMA_UM / geometry.pixel_um
        self.psf_sigma_px = _positive("psf_sigma_px", psf_sigma_px, allow_zero=True)
        self.intensity_scale = _positive("intensity_scale", intensity_scale)
        self.polarization_factor = _number("polarization_factor", polarization_factor)
        if not -1 <= self.polarization_factor <= 1:
            raise ValueError(f"polarization_factor must be in [-1, 1], got {polarization_factor}")
        self._pixels = _pixel_map(geometry, self.polarization_factor)
        # radial variance added by the detector, px²: the pixel box and the PSF
        self._detector_sigma_px2 = 1.0 / 12.0 + self.psf_sigma_px**2
        self._background_grid = sequence.background(self._pixels.grid_A)

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape ``(rows, cols)``, px."""
        return self.geometry.shape_px

    @property
    def q_pixels_A(self) -> np.ndarray:
        """Momentum transfer at each pixel centre ``(rows, cols)``, 1/Å (read-only view, cached)."""
        view = self._pixels.q_A.view()
        view.flags.writeable = False
        return view

    def _theta(self, q_A: np.ndarray) -> np.ndarray:
        s = np.clip(q_A * self.geometry.wavelength_A / (4.0 * np.pi), 0.0, 1.0)
        return np.arcsin(s)

    def fwhm_q_A(
        self, q_A: np.ndarray | float, *, sample: bool = True, detector: bool = False
    ) -> np.ndarray:
        """Peak FWHM at ``q_A``, 1/Å: the instrument, plus the sample and/or the detector.

        Parameters
        ----------
        q_A : array_like
            Positions, 1/Å (any shape).
        sample : bool
            Include size and strain broadening of the sequence.
        detector : bool
            Include the pixel (box, variance p²/12) and the PSF, as seen in a frame (integrated
            profiles add their own bins on top, and the pixel box again with pixel splitting).

        Returns
        -------
        numpy.ndarray
            FWHM, 1/Å, shape of ``q_A``.
        """
        q = np.asarray(q_A, dtype=np.float64)
        theta = self._theta(q)
        dq_dtth = 2.0 * np.pi / self.geometry.wavelength_A * np.cos(theta)  # 1/Å per rad of 2θ
        variance = (dq_dtth * math.radians(self.instrument_fwhm_deg)) ** 2
        if sample:
            seq = self.sequence
            if seq.size_nm is not None:
                variance = variance + (2.0 * np.pi * _SCHERRER_K / (seq.size_nm * 10.0)) ** 2
            variance = variance + (seq.strain_fwhm * q) ** 2
        if detector:
            sigma2 = self._pixel_pitch_q(q) ** 2 * self._detector_sigma_px2
            variance = variance + _FWHM_PER_SIGMA**2 * sigma2
        return np.sqrt(variance)

    def _pixel_pitch_q(self, q: np.ndarray) -> np.ndarray:
        """Radial pitch of one pixel in q at ``q`` (flat detector, no tilt), 1/Å."""
        theta = self._theta(q)
        dq_dtth = 2.0 * np.pi / self.geometry.wavelength_A * np.cos(theta)
        # d(2θ)/dr = cos²(2θ) / D on a flat detector
        pitch_rad = (
            np.cos(2.0 * theta) ** 2 * self.geometry.pixel_um / (self.geometry.distance_mm * 1e3)
        )
        return dq_dtth * pitch_rad

    def _peaks(self, q: np.ndarray, T_K: float, *, detector_sigma_px2: float) -> np.ndarray:
        """Sum of the lines at ``T_K`` on ``q`` (m,), widened by ``detector_sigma_px2`` px²."""
        d, intensity = self.sequence.lines_at(T_K)
        centres = 2.0 * np.pi / d
        gamma = np.sqrt(
            self.fwhm_q_A(centres) ** 2
            + _FWHM_PER_SIGMA**2 * detector_sigma_px2 * self._pixel_pitch_q(centres) ** 2
        )
        # lines far outside the evaluated range add nothing but their remote Lorentzian tails
        keep = (centres > q.min() - 50 * gamma) & (centres < q.max() + 50 * gamma)
        centres, gamma, intensity = centres[keep], gamma[keep], intensity[keep]
        x2 = ((q[None, :] - centres[:, None]) / gamma[:, None]) ** 2
        gauss = np.exp(-4.0 * math.log(2.0) * x2) * (2.0 * math.sqrt(math.log(2.0) / math.pi))
        lorentz = (2.0 / math.pi) / (1.0 + 4.0 * x2)
        shapes = ((1.0 - self.eta) * gauss + self.eta * lorentz) / gamma[:, None]
        return self.intensity_scale * (intensity @ shapes)

    def expected_profile(
        self, q_A: np.ndarray, T_K: float, *, detector: bool = False
    ) -> np.ndarray:
        """Mean 1-D profile at ``T_K``, counts/s of the reference pixel at full flux.

        Parameters
        ----------
        q_A : array_like
            ``(m,)`` positions, 1/Å.
        T_K : float
            Sample temperature, K.
        detector : bool
            Widen the lines by the pixel and the PSF exactly as in a frame (then
            ``profile * pixel_factor`` is the frame at each pixel); False: sample and
            instrument only.

        Returns
        -------
        numpy.ndarray
            ``(m,)`` float64, background included.
        """
        q = np.atleast_1d(np.asarray(q_A, dtype=np.float64))
        if q.ndim != 1 or not np.all(np.isfinite(q)):
            raise ValueError("q_A must be a finite 1-D array")
        extra = self._detector_sigma_px2 if detector else 0.0
        return self._peaks(q, T_K, detector_sigma_px2=extra) + self.sequence.background(q)

    def expected_frame(
        self, T_K: float, flux_scale: float = 1.0, exposure_s: float = 1.0
    ) -> np.ndarray:
        """Mean counts of every pixel at ``T_K``.

        Parameters
        ----------
        T_K : float
            Sample temperature, K.
        flux_scale : float
            Flux relative to full (ring current / top current), >= 0.
        exposure_s : float
            Exposure, s (> 0).

        Returns
        -------
        numpy.ndarray
            ``(rows, cols)`` float32, counts.
        """
        T = _number("temperature", T_K)
        if T <= 0:
            raise ValueError(f"temperature must be > 0 K, got {T_K!r}")
        scale = _positive("flux_scale", flux_scale, allow_zero=True) * _positive(
            "exposure_s", exposure_s
        )
        pixels = self._pixels
        peaks = self._peaks(pixels.grid_A, T, detector_sigma_px2=self._detector_sigma_px2)
        grid = (peaks + self._background_grid).astype(np.float32)
        left = grid[pixels.index]
        values = left + pixels.weight * (grid[pixels.index + 1] - left)
        image = values.reshape(self.shape)
        image *= pixels.factor
        image *= np.float32(scale)
        return image

    def frame(
        self,
        T_K: float,
        *,
        rng: np.random.Generator,
        flux_scale: float = 1.0,
        exposure_s: float = 1.0,
        approximate_noise: bool = False,
    ) -> np.ndarray:
        """A counted frame: Poisson counts around :meth:`expected_frame`.

        Parameters
        ----------
        T_K : float
            Sample temperature, K.
        rng : numpy.random.Generator
            Random generator of the counts.
        flux_scale : float
            Flux relative to full, >= 0.
        exposure_s : float
            Exposure, s (> 0).
        approximate_noise : bool
            Draw pixels whose mean is at least :data:`GAUSSIAN_NOISE_FROM` from a rounded
            normal of the same mean and variance (3-4 times faster; skewness 1/sqrt(mean) is
            lost), the rest exactly. False (default): exact Poisson everywhere.

        Returns
        -------
        numpy.ndarray
            ``(rows, cols)`` uint32, counts.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        mean = self.expected_frame(T_K, flux_scale, exposure_s)
        if not approximate_noise:
            return rng.poisson(mean).astype(np.uint32)
        high = mean >= GAUSSIAN_NOISE_FROM
        counts = np.empty(mean.shape, dtype=np.uint32)
        counts[~high] = rng.poisson(mean[~high])
        bright = mean[high]
        noisy = bright + np.sqrt(bright) * rng.standard_normal(bright.shape, dtype=np.float32)
        counts[high] = np.rint(np.maximum(noisy, 0.0))
        return counts


CALIBRANT_SIZE_NM = None
"""The calibrant has no size broadening (well-crystallised standard)."""


def calibrant_sequence(*, n_rings: int = 15) -> PowderSequence:
    """CeO2 at room temperature, no event, no sample broadening, a low flat background."""
    phase = ceo2_phase(n_rings=n_rings)
    return PowderSequence(
        cubic=phase,
        tetragonal=None,
        minor=None,
        event=TransitionEvent("none"),
        alpha_per_K=0.0,
        reference_K=295.0,
        ramp_K=(295.0, 296.0),
        n_frames=2,
        background=Background(constant=15.0, hump=5.0),
        size_nm=CALIBRANT_SIZE_NM,
        strain_fwhm=0.0,
    )


def calibrant_model(geometry: DetectorGeometry, **instrument: Any) -> PowderFrameModel:
    """The frame model of the CeO2 calibrant on ``geometry`` with the given instrument.

    Parameters
    ----------
    geometry : DetectorGeometry
        Detector.
    **instrument
        :class:`PowderFrameModel` options (``instrument_fwhm_deg``, ``eta``, ...).

    Returns
    -------
    PowderFrameModel
        ``fwhm_q_A(q, sample=False)`` is the true instrumental FWHM (no sample broadening:
        the calibrant has none); ``fwhm_q_A(q, detector=True)`` adds pixel and PSF.
    """
    return PowderFrameModel(geometry, calibrant_sequence(), **instrument)


def calibrant_frame(
    geometry: DetectorGeometry,
    *,
    rng: np.random.Generator,
    exposure_s: float = 1.0,
    flux_scale: float = 1.0,
    **instrument: Any,
) -> np.ndarray:
    """A counted CeO2 frame on ``geometry`` with the same instrument as the sample frames.

    The rings' true widths are :meth:`PowderFrameModel.fwhm_q_A` of
    :func:`calibrant_model` ``(geometry, **instrument)`` with ``sample=False``: the instrument
    alone (0.03° 2θ by default), ``detector=True`` with pixel and PSF.

    Parameters
    ----------
    geometry : DetectorGeometry
        Detector.
    rng : numpy.random.Generator
        Random generator of the counts.
    exposure_s : float
        Exposure, s.
    flux_scale : float
        Flux relative to full.
    **instrument
        :class:`PowderFrameModel` options.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` uint32, counts.
    """
    model = calibrant_model(geometry, **instrument)
    return model.frame(295.0, rng=rng, flux_scale=flux_scale, exposure_s=exposure_s)
