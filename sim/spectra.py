r"""XRF spectra of the simulated beamline: line templates, scatter, detector response, counting.

The expected spectrum of one point is linear in the amounts of the sample's components:

.. math::

    \\bar s_d(c) = N_\\gamma \\, w_d \\sum_k a_k T_k(c)

with ``N_gamma`` incident photons (flux x dwell), ``w_d`` the share of detector element ``d``
in the total solid angle, ``a_k`` the amount of component ``k`` under the beam (areal density
in µg/cm² for elements and the matrix; 1 for the air path) and ``T_k`` its template: expected
counts per channel per incident photon and unit amount, for the whole detector. Templates are
built once (thin-sample approximation, no matrix absorption or secondary fluorescence):

* fluorescence lines of each element (K and L lines excited at the beam energy, each with its
  own energy and production cross section from xraylib: ``CS_FluorLine_Kissel_Cascade``);
* elastic (Rayleigh) and Compton scatter of every component (xraylib cross sections times a
  polarisation factor: the detector sits at 90° in the polarisation plane where scatter is
  suppressed); the Compton peak sits at the Compton energy for the scattering angle and is
  Doppler broadened;
* the air path: Ar K lines (argon is 1.3 % of air by mass) and air scatter;
* the detector: solid angle, Be window and air transmission, silicon absorption efficiency,
  Gaussian energy resolution ``FWHM(E)^2 = noise^2 + 2.3548^2 * 3.85 eV * F * E``
  (:class:`asirp.xrf.lines.DetectorResolution`) and a small flat low-energy shelf
  (incomplete charge collection).

Counting is Poisson, independently in every detector element and channel (or ROI). Dead time
is non-paralysable: an element with input count rate ``ICR`` is live a fraction
``1 / (1 + ICR * tau)`` of the dwell, which scales its expected counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf

from asirp.xrf.lines import (
    ChannelROI,
    DetectorResolution,
    EnergyCalibration,
    argon_roi,
    element_roi,
)

AIR = "Air, Dry (near sea level)"
"""xraylib NIST compound name of air."""

AIR_DENSITY_G_CM3 = 1.205e-3
ARGON_MASS_FRACTION = 0.012827

_LINE_MACROS = (
    "KL2_LINE",
    "KL3_LINE",
    "KM2_LINE",
    "KM3_LINE",
    "KN2_LINE",
    "KN3_LINE",
    "L3M4_LINE",
    "L3M5_LINE",
    "L3M1_LINE",
    "L3N5_LINE",
    "L2M4_LINE",
    "L2N4_LINE",
    "L1M2_LINE",
    "L1M3_LINE",
)


def _default_calibration() -> EnergyCalibration:
    return EnergyCalibration(offset_kev=0.0, gain_kev_per_channel=0.01)


def _default_resolution() -> DetectorResolution:
    return DetectorResolution(noise_kev=0.07, fano=0.114)


@dataclass(frozen=True)
class DetectorModel:
    """A multi-element silicon drift detector.

    Parameters
    ----------
    n_elements : int
        Number of detector elements (independent channels), e.g. 4.
    n_channels : int
        Channels per spectrum.
    calibration : EnergyCalibration
        Channel-to-energy calibration (all elements calibrated alike).
    resolution : DetectorResolution
        Energy resolution; the default (70 eV noise, Fano 0.114) gives about 136 eV FWHM at
        Mn K-alpha.
    solid_angle_sr : float
        Total solid angle of all elements, sr.
    element_weights : tuple of float, optional
        Relative solid angles of the elements (normalised to sum 1); by default within ±6 %
        of equal, as for a real detector head.
    be_window_um : float
        Beryllium window thickness, µm.
    si_thickness_um : float
        Sensor thickness, µm (efficiency at high energy).
    air_gap_cm : float
        Air between sample and detector, cm (attenuates low-energy lines).
    dead_time_s : float
        Non-paralysable dead time per event, s.
    shelf_fraction : float
        Fraction of each peak's counts spread flat below it (incomplete charge collection).
    """

    n_elements: int = 4
    n_channels: int = 4096
    calibration: EnergyCalibration = field(default_factory=_default_calibration)
    resolution: DetectorResolution = field(default_factory=_default_resolution)
    solid_angle_sr: float = 0.12
    element_weights: tuple[float, ...] | None = None
    be_window_um: float = 12.5
    si_thickness_um: float = 450.0
    air_gap_cm: float = 1.0
    dead_time_s: float = 1.0e-6
    shelf_fraction: float = 0.005

    def __post_init__(self) -> None:
        for name in ("n_elements", "n_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in (
            "solid_angle_sr",
            "be_window_um",
            "si_thickness_um",
            "air_gap_cm",
            "dead_time_s",
            "shelf_fraction",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.solid_angle_sr < 4 * math.pi:
            raise ValueError(f"solid_angle_sr must be in (0, 4 pi), got {self.solid_angle_sr}")
        if self.element_weights is not None:
            weights = np.asarray(self.element_weights, dtype=float)
            if weights.shape != (self.n_elements,) or np.any(weights <= 0):
                raise ValueError(
                    f"element_weights must be {self.n_elements} positive numbers, got "
                    f"{self.element_weights!r}"
                )

    @property
    def weights(self) -> np.ndarray:
        """Share of each element in the total solid angle ``(n_elements,)``, sum 1."""
        if self.element_weights is not None:
            weights = np.asarray(self.element_weights, dtype=float)
        else:
            weights = 1.0 + 0.06 * np.sin(1.0 + 2.4 * np.arange(self.n_elements))
        return weights / weights.sum()

    @property
    def energies_kev(self) -> np.ndarray:
        """Channel-centre energies ``(n_channels,)``, keV."""
        return np.asarray(self.calibration.energy_kev(np.arange(self.n_channels)))

    def fwhm_kev(self, energy_kev: float) -> float:
        """Peak FWHM at an energy, keV."""
        return self.resolution.fwhm_kev(energy_kev)

    def efficiency(self, energy_kev: float) -> float:
        """Fraction of photons of this energy reaching the sensor and absorbed in it."""
        import xraylib

        if energy_kev <= 0.1:
            return 0.0
        window = math.exp(-xraylib.CS_Total(4, energy_kev) * 1.848 * self.be_window_um * 1e-4)
        air = math.exp(-xraylib.CS_Total_CP(AIR, energy_kev) * AIR_DENSITY_G_CM3 * self.air_gap_cm)
        absorbed = 1.0 - math.exp(
            -xraylib.CS_Total(14, energy_kev) * 2.33 * self.si_thickness_um * 1e-4
        )
        return window * air * absorbed

    def roi(self, element: str) -> ChannelROI:
        """Channel ROI (±1 FWHM) of an element's main line, or of ``"Ar"``.

        The main line is K-alpha, or L-alpha for elements whose K edge is above 40 keV.
        """
        import xraylib

        if element == "Ar":
            return argon_roi(
                self.calibration, resolution=self.resolution, n_channels=self.n_channels
            )
        z = xraylib.SymbolToAtomicNumber(element)
        line = "Ka" if xraylib.EdgeEnergy(z, xraylib.K_SHELL) < 40.0 else "La"
        return element_roi(
            element, self.calibration, line, resolution=self.resolution, n_channels=self.n_channels
        )


def emission_lines(element: str, incident_energy_kev: float) -> list[tuple[float, float]]:
    """K and L fluorescence lines an element emits at a beam energy.

    Parameters
    ----------
    element : str
        Chemical symbol.
    incident_energy_kev : float
        Beam energy, keV.

    Returns
    -------
    list of (float, float)
        ``(energy_kev, cross_section_cm2_g)`` of every line with a non-zero production cross
        section (xraylib ``CS_FluorLine_Kissel_Cascade``), strongest first.
    """
    import xraylib

    try:
        z = xraylib.SymbolToAtomicNumber(str(element))
    except ValueError:
        raise ValueError(f"unknown element symbol {element!r}") from None
    lines = []
    for macro in _LINE_MACROS:
        line = getattr(xraylib, macro)
        try:
            cross_section = xraylib.CS_FluorLine_Kissel_Cascade(z, line, incident_energy_kev)
            energy = xraylib.LineEnergy(z, line)
        except ValueError:
            continue
        if cross_section > 0 and energy > 0:
            lines.append((float(energy), float(cross_section)))
    return sorted(lines, key=lambda item: -item[1])


def compton_energy_kev(incident_energy_kev: float, angle_deg: float) -> float:
    """Energy of photons Compton-scattered by ``angle_deg``, keV."""
    cosine = math.cos(math.radians(angle_deg))
    return incident_energy_kev / (1.0 + incident_energy_kev / 510.99895 * (1.0 - cosine))


class SpectralModel:
    """Per-component spectral templates for a beam energy and a detector.

    Parameters
    ----------
    elements : sequence of str
        Fluorescing elements of the sample (chemical symbols).
    incident_energy_kev : float
        Beam energy, keV.
    detector : DetectorModel
        The detector.
    matrix_formula : str
        Chemical formula of the light matrix (xraylib syntax), for its scatter.
    scatter_angle_deg : float
        Scattering angle to the detector, degrees.
    polarisation_factor : float
        Fraction of the unpolarised scatter cross sections reaching the detector (small in the
        polarisation plane at 90°).
    compton_broadening_kev : float
        Extra FWHM of the Compton peak (Doppler broadening and the detector's opening), keV.
    air_path_cm : float
        Length of beam path in air seen by the detector, cm (Ar fluorescence, air scatter).

    Attributes
    ----------
    components : tuple of str
        The elements, then ``"matrix"`` and ``"air"``.
    templates : numpy.ndarray
        ``(n_components, n_channels)`` expected counts per channel per incident photon and
        unit amount (µg/cm² for elements and matrix, 1 for air), all detector elements.
    """

    def __init__(
        self,
        elements: Sequence[str],
        *,
        incident_energy_kev: float = 13.0,
        detector: DetectorModel | None = None,
        matrix_formula: str = "C6H10O5",
        scatter_angle_deg: float = 90.0,
        polarisation_factor: float = 0.1,
        compton_broadening_kev: float = 0.25,
        air_path_cm: float = 1.0,
    ) -> None:
        import xraylib

        if not (isinstance(incident_energy_kev, int | float) and 1.0 < incident_energy_kev < 100):
            raise ValueError(
                f"incident_energy_kev must be in (1, 100) keV, got {incident_energy_kev!r}"
            )
        self.elements = tuple(str(e) for e in elements)
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements are repeated: {self.elements}")
        self.detector = detector or DetectorModel()
        self.incident_energy_kev = float(incident_energy_kev)
        self.matrix_formula = matrix_formula
        self.components = (*self.elements, "matrix", "air")
        det = self.detector
        omega = det.solid_angle_sr / (4.0 * math.pi)
        edges = np.asarray(det.calibration.energy_kev(np.arange(det.n_channels + 1) - 0.5))
        self._edges = edges
        e0 = self.incident_energy_kev
        e_compton = compton_energy_kev(e0, scatter_angle_deg)
        eff0, eff_c = det.efficiency(e0), det.efficiency(e_compton)
        compton_fwhm = math.hypot(det.fwhm_kev(e_compton), compton_broadening_kev)
        templates = np.zeros((len(self.components), det.n_channels))
        self.lines: dict[str, list[tuple[float, float]]] = {}

        def scatter(row: np.ndarray, rayleigh: float, compton: float, grams: float) -> None:
            self._add_peak(
                row, e0, det.fwhm_kev(e0), omega * eff0 * polarisation_factor * rayleigh * grams
            )
            self._add_peak(
                row, e_compton, compton_fwhm, omega * eff_c * polarisation_factor * compton * grams
            )

        for k, element in enumerate(self.elements):
            lines = emission_lines(element, e0)
            if not lines:
                raise ValueError(
                    f"{element} emits no K or L line at {e0} keV; raise the beam energy"
                )
            self.lines[element] = lines
            for energy, cross_section in lines:
                counts = omega * det.efficiency(energy) * cross_section * 1e-6
                self._add_peak(templates[k], energy, det.fwhm_kev(energy), counts)
            z = xraylib.SymbolToAtomicNumber(element)
            scatter(templates[k], xraylib.CS_Rayl(z, e0), xraylib.CS_Compt(z, e0), 1e-6)
        m = len(self.elements)
        scatter(
            templates[m],
            xraylib.CS_Rayl_CP(matrix_formula, e0),
            xraylib.CS_Compt_CP(matrix_formula, e0),
            1e-6,
        )
        # Air path: Ar fluorescence and air scatter, per incident photon.
        air_g_cm2 = AIR_DENSITY_G_CM3 * air_path_cm
        argon = emission_lines("Ar", e0)
        self.lines["Ar"] = argon
        for energy, cross_section in argon:
            counts = (
                omega * det.efficiency(energy) * cross_section * air_g_cm2 * ARGON_MASS_FRACTION
            )
            self._add_peak(templates[m + 1], energy, det.fwhm_kev(energy), counts)
        scatter(
            templates[m + 1], xraylib.CS_Rayl_CP(AIR, e0), xraylib.CS_Compt_CP(AIR, e0), air_g_cm2
        )
        self.templates = templates
        self.totals = templates.sum(axis=1)

    def _add_peak(self, row: np.ndarray, energy: float, fwhm: float, counts: float) -> None:
        """Add a Gaussian peak (pixel-integrated) plus its low-energy shelf to a template."""
        if counts <= 0:
            return
        sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        cdf = 0.5 * (1.0 + erf((self._edges - energy) / (math.sqrt(2.0) * sigma)))
        shelf = self.detector.shelf_fraction
        row += (1.0 - shelf) * counts * np.diff(cdf)
        if shelf > 0 and energy > 0:
            low = np.clip(self._edges, 0.0, energy)
            row += shelf * counts * np.diff(low) / energy

    @property
    def n_components(self) -> int:
        """Number of components (elements, matrix, air)."""
        return len(self.components)

    def roi_matrix(self, rois: Sequence[ChannelROI]) -> np.ndarray:
        """Expected ROI counts per incident photon and unit amount ``(n_components, n_rois)``."""
        return np.stack([self.templates[:, roi.slice].sum(axis=1) for roi in rois], axis=1)

    def expected_spectrum(self, amounts: np.ndarray, photons: np.ndarray | float) -> np.ndarray:
        """Expected spectrum summed over the detector elements, without dead time.

        Parameters
        ----------
        amounts : numpy.ndarray
            ``(..., n_components)`` amounts (µg/cm²; 1 for air).
        photons : float or numpy.ndarray
            Incident photons, broadcast against ``amounts[..., 0]``.

        Returns
        -------
        numpy.ndarray
            ``(..., n_channels)`` expected counts.
        """
        amounts = np.asarray(amounts, dtype=np.float64)
        return np.asarray(photons)[..., None] * (amounts @ self.templates)

    def amounts(
        self, composition: Mapping[str, float], *, matrix_ug_cm2: float = 0.0, air: float = 1.0
    ) -> np.ndarray:
        """Amount vector ``(n_components,)`` from a dict of element areal densities (µg/cm²)."""
        unknown = set(composition) - set(self.elements)
        if unknown:
            raise ValueError(f"elements {sorted(unknown)} are not in the model {self.elements}")
        vector = np.zeros(self.n_components)
        for k, element in enumerate(self.elements):
            vector[k] = float(composition.get(element, 0.0))
        vector[-2], vector[-1] = matrix_ug_cm2, air
        return vector


def simulate_spectrum(
    composition: Mapping[str, float],
    *,
    photons: float,
    incident_energy_kev: float = 13.0,
    detector: DetectorModel | None = None,
    matrix_ug_cm2: float = 0.0,
    matrix_formula: str = "C6H10O5",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Spectrum of a homogeneous sample, summed over the detector elements.

    Parameters
    ----------
    composition : mapping of str to float
        Element areal densities, µg/cm².
    photons : float
        Incident photons (flux x live time).
    incident_energy_kev : float
        Beam energy, keV.
    detector : DetectorModel, optional
        Detector (default 4 elements, 4096 channels of 10 eV).
    matrix_ug_cm2 : float
        Areal density of the light matrix, µg/cm².
    matrix_formula : str
        Matrix formula (xraylib syntax).
    rng : numpy.random.Generator, optional
        When given, each detector element is Poisson-sampled independently and the counts
        summed; otherwise the expected spectrum is returned.

    Returns
    -------
    numpy.ndarray
        ``(n_channels,)``: float64 expected counts, or int64 counts when ``rng`` is given.
    """
    model = SpectralModel(
        tuple(composition),
        incident_energy_kev=incident_energy_kev,
        detector=detector,
        matrix_formula=matrix_formula,
    )
    expected = model.expected_spectrum(
        model.amounts(composition, matrix_ug_cm2=matrix_ug_cm2), photons
    )
    if rng is None:
        return expected
    weights = model.detector.weights
    return rng.poisson(weights[:, None] * expected[None, :]).sum(axis=0)
